// The "Get HTTP headers" example of the Python asyncio streams documentation:
// sends `HEAD path HTTP/1.0` and prints each header line of the answer as
// `HTTP header> line`.
//
// As the original, https:// URLs use TLS with the system's trust roots and
// verify the server's certificate and name (`ssl=True`). Differences from the
// Python original: an explicit port in the URL is honoured (the original
// always uses 80 or 443), and reading stops at the blank line that ends the
// header (for a HEAD answer that is where the original's read-until-EOF ends
// too, so the output is the same).
import ArgumentParser
import UringStreams

struct HTTPHeadersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http-headers",
        abstract: "Print the HTTP header a server answers to a HEAD request.")

    @Argument(help: "An http:// or https:// URL, for example https://example.com/ or http://127.0.0.1:8000/index.html")
    var url: String

    func run() async throws {
        let target = try SplitURL(url)
        let port: Int
        let tls: TLSConfiguration?
        switch target.scheme {
        case "http":
            port = target.port ?? 80
            tls = nil
        case "https":
            port = target.port ?? 443
            tls = .client()
        default:
            throw UsageFailure("unsupported URL scheme '\(target.scheme)'; use an http:// or https:// URL")
        }

        let (reader, writer) = try await openConnection(host: target.hostname, port: port, tls: tls)

        let query =
            "HEAD \(target.path.isEmpty ? "/" : target.path) HTTP/1.0\r\n"
            + "Host: \(target.hostname)\r\n"
            + "\r\n"

        writer.write(try latin1Encoded(query))
        while true {
            let line = try await reader.readLine()
            if line.isEmpty {
                break
            }

            let text = latin1Decoded(line.droppingPythonWhitespaceSuffix())
            if text.isEmpty {
                break
            }
            print("HTTP header> \(text)")
        }

        // Ignore the body, close the socket
        writer.close()
        try await writer.waitClosed()
    }
}

/// The parts of `urllib.parse.urlsplit(url)` the example uses, with the same rules:
/// lower-cased scheme and host name, IPv6 brackets removed, path without query or fragment.
struct SplitURL {
    var scheme: String
    var hostname: String
    var port: Int?
    var path: String

    init(_ text: String) throws {
        guard let colon = text.firstIndex(of: ":"), text[..<colon].first?.isLetter == true else {
            throw UsageFailure("'\(text)' is not a URL; expected something like http://host:port/path")
        }
        scheme = text[..<colon].lowercased()
        var rest = text[text.index(after: colon)...]
        var netloc = Substring()
        if rest.hasPrefix("//") {
            rest = rest.dropFirst(2)
            let netlocEnd = rest.firstIndex(where: { "/?#".contains($0) }) ?? rest.endIndex
            netloc = rest[..<netlocEnd]
            rest = rest[netlocEnd...]
        }
        path = String(rest.prefix(while: { $0 != "?" && $0 != "#" }))

        let hostAndPort = netloc.split(separator: "@", omittingEmptySubsequences: false).last ?? ""
        let portText: Substring?
        if hostAndPort.hasPrefix("["), let close = hostAndPort.firstIndex(of: "]") {
            hostname = String(hostAndPort[hostAndPort.index(after: hostAndPort.startIndex)..<close])
            let afterBracket = hostAndPort[hostAndPort.index(after: close)...]
            portText = afterBracket.hasPrefix(":") ? afterBracket.dropFirst() : nil
        } else if let portColon = hostAndPort.firstIndex(of: ":") {
            hostname = String(hostAndPort[..<portColon])
            portText = hostAndPort[hostAndPort.index(after: portColon)...]
        } else {
            hostname = String(hostAndPort)
            portText = nil
        }
        hostname = hostname.lowercased()
        guard !hostname.isEmpty else {
            throw UsageFailure("'\(text)' has no host name")
        }

        if let portText, !portText.isEmpty {
            guard portText.allSatisfy(\.isASCII), let number = Int(portText), (0...65_535).contains(number) else {
                throw UsageFailure("'\(portText)' is not a valid port")
            }
            port = number
        } else {
            port = nil
        }
    }
}

/// An error whose description is the whole message ArgumentParser prints after "Error: ".
struct UsageFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `str.encode('latin-1')`: every scalar must fit in one byte.
func latin1Encoded(_ text: String) throws -> [UInt8] {
    try text.unicodeScalars.map { scalar in
        guard scalar.value <= 0xFF else {
            throw UsageFailure("the request contains \(scalar.escaped(asASCII: true)), which latin-1 cannot encode")
        }
        return UInt8(scalar.value)
    }
}

/// `bytes.decode('latin1')`: each byte is the scalar of the same value.
func latin1Decoded(_ bytes: some Sequence<UInt8>) -> String {
    var text = ""
    text.unicodeScalars.append(contentsOf: bytes.lazy.map { Unicode.Scalar($0) })
    return text
}

extension BidirectionalCollection<UInt8> {
    /// What `str.rstrip()` removes from latin-1 text: the scalars Python calls whitespace.
    func droppingPythonWhitespaceSuffix() -> SubSequence {
        var end = endIndex
        while end != startIndex {
            switch self[index(before: end)] {
            case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0: end = index(before: end)
            default: return self[..<end]
            }
        }
        return self[..<end]
    }
}

// Top-level code resolves `HTTPHeadersCommand.main()` to ParsableCommand's synchronous
// main, which refuses an async command; a generic context picks the async one.
func runAsync<Command: AsyncParsableCommand>(_: Command.Type) async { await Command.main() }
await runAsync(HTTPHeadersCommand.self)
