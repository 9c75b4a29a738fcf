import Glibc

/// Name resolution. `getaddrinfo` blocks, so it runs on the library's own threads
/// (``BlockingThreads``), never on a thread Swift's tasks need, and the awaiting task resumes on its
/// own executor (the loop) afterwards. A cancelled caller does not wait for it: the lookup finishes
/// in the background and its answer is dropped. Numeric hosts need no lookup.
package enum Resolver {
    /// The stream addresses for `host` and `port`, in the order `getaddrinfo` gives them.
    ///
    /// - Parameters:
    ///   - host: A name or numeric address; nil means the wildcard (with `passive`) or loopback.
    ///   - passive: Addresses to bind a server to (`AI_PASSIVE`).
    ///   - lookUp: The blocking lookup; `getaddrinfo` unless a test stands in for it.
    /// - Throws: ``StreamError/system(errno:operation:)`` with the resolver's message in `operation`;
    ///   `CancellationError` as soon as the calling task is cancelled.
    package static func resolve(
        host: String?, port: Int, family: AddressFamily, passive: Bool, lookUp: @escaping LookUp = systemLookUp
    ) async throws -> [SocketAddress] {
        guard (0...65535).contains(port) else { throw StreamError.invalidArgument("port must be 0-65535, not \(port)") }
        guard family != .unix else {
            throw StreamError.invalidArgument("family .unix has no host and port: use the Unix socket functions")
        }
        if let host, let numeric = try? SocketAddress(host: host, port: port) {
            guard family == .unspecified || family == numeric.family else {
                // getaddrinfo would only say "Address family for hostname not supported".
                throw StreamError.invalidArgument("'\(host)' is an .\(numeric.family) address but family is .\(family)")
            }
            return [numeric]
        }
        let pending = PendingLookUp()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                guard pending.wait(with: continuation) else { return }
                BlockingThreads.shared.run {
                    pending.finish(lookUp(host, port, family, passive))
                }
            }
        } onCancel: {
            pending.cancel()
        }
    }

    /// A blocking name lookup (host, port, family, passive): `getaddrinfo`, or a test's stand-in.
    package typealias LookUp = @Sendable (String?, Int, AddressFamily, Bool) -> Result<[SocketAddress], StreamError>

    /// Looks `host` up with `getaddrinfo`; blocks.
    package static func systemLookUp(
        _ host: String?, _ port: Int, _ family: AddressFamily, _ passive: Bool
    ) -> Result<[SocketAddress], StreamError> {
        var hints = addrinfo()
        hints.ai_family = family.rawValue
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            // Like Python's socket.gaierror: the resolver's own (negative) code; `errno` only
            // means something for EAI_SYSTEM.
            let code = status == EAI_SYSTEM ? errno : status
            return .failure(.system(errno: code, operation: "getaddrinfo(\(host ?? "nil"), \(port))"))
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var cursor = list
        while let entry = cursor {
            if let address = SocketAddress(storage: entry.pointee.ai_addr, length: entry.pointee.ai_addrlen),
                !addresses.contains(address)
            {
                addresses.append(address)
            }
            cursor = entry.pointee.ai_next
        }
        return .success(addresses)
    }
}

/// One lookup's caller: resumed once, by the lookup's answer or by the caller's cancellation,
/// whichever comes first.
private final class PendingLookUp: Sendable {
    private enum State {
        case starting
        case waiting(CheckedContinuation<[SocketAddress], any Error>)
        case ended
    }

    private let state = Locked(State.starting)

    /// Keeps `continuation` for the answer; false (after resuming it) when the caller was
    /// cancelled already, and the lookup need not start.
    func wait(with continuation: CheckedContinuation<[SocketAddress], any Error>) -> Bool {
        let cancelled = state.withLock { state -> Bool in
            guard case .starting = state else { return true }
            state = .waiting(continuation)
            return false
        }
        if cancelled { continuation.resume(throwing: CancellationError()) }
        return !cancelled
    }

    func finish(_ result: Result<[SocketAddress], StreamError>) {
        take()?.resume(with: result.mapError { $0 })
    }

    func cancel() {
        take()?.resume(throwing: CancellationError())
    }

    private func take() -> CheckedContinuation<[SocketAddress], any Error>? {
        state.withLock { state in
            defer { state = .ended }
            if case .waiting(let continuation) = state { return continuation }
            return nil
        }
    }
}
