// A target of its own, used by the tcp-echo-client and tcp-echo-server examples (no product
// exports it, so the library's users never see it).

/// Python's `repr()` of a `str`: the asyncio examples print messages with
/// `{message!r}`, and our output has to match theirs character for character.
///
/// Python quotes with `'` unless the text contains `'` and no `"`, escapes
/// the backslash, the chosen quote, `\n`, `\r` and `\t`, and writes every
/// other non-printable scalar as `\xhh`, `\uhhhh` or `\Uhhhhhhhh`.
public func pythonRepr(_ text: String) -> String {
    let quote: Unicode.Scalar = text.contains("'") && !text.contains("\"") ? "\"" : "'"
    var result = String(quote)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\", quote: result += "\\" + String(scalar)
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where isPythonPrintable(scalar): result.unicodeScalars.append(scalar)
        default:
            let (prefix, width) = scalar.value < 0x100 ? ("\\x", 2) : scalar.value < 0x1_0000 ? ("\\u", 4) : ("\\U", 8)
            let digits = String(scalar.value, radix: 16)
            result += prefix + String(repeating: "0", count: width - digits.count) + digits
        }
    }
    result.unicodeScalars.append(quote)
    return result
}

/// Python's `str.isprintable()` for one scalar: everything but the
/// "Other" and "Separator" categories, where the plain space still counts.
private func isPythonPrintable(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .control, .format, .surrogate, .privateUse, .unassigned,
        .lineSeparator, .paragraphSeparator:
        return false
    case .spaceSeparator:
        return scalar == " "
    default:
        return true
    }
}
