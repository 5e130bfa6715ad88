import ArgumentParser

/// A duration flag: seconds ("30", "0.5"), or with a unit ("500ms", "30s", "2m", "1h").
struct DurationArgument: ExpressibleByArgument, CustomStringConvertible {
    let milliseconds: Int

    init(milliseconds: Int) { self.milliseconds = milliseconds }

    init?(argument: String) {
        let s = argument.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        var factor = 1000.0
        var number = Substring(s)
        for (suffix, f) in units where s.hasSuffix(suffix) {
            factor = f
            number = s.dropLast(suffix.count)
            break
        }
        guard let value = Double(number), value >= 0, value.isFinite, value * factor < Double(Int32.max) else { return nil }
        milliseconds = Int((value * factor).rounded())
    }

    var description: String {
        milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// A byte-size flag: bytes ("1048576"), or with a binary unit ("64KiB", "1M", "16MiB").
struct ByteSizeArgument: ExpressibleByArgument, CustomStringConvertible {
    let bytes: Int

    init(bytes: Int) { self.bytes = bytes }

    init?(argument: String) {
        let s = argument.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [(String, Int)] = [
            ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30),
            ("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30),
            ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("b", 1),
        ]
        var factor = 1
        var number = Substring(s)
        for (suffix, f) in units where s.hasSuffix(suffix) {
            factor = f
            number = s.dropLast(suffix.count)
            break
        }
        guard let value = Int(number), value >= 0, value <= Int.max / factor else { return nil }
        bytes = value * factor
    }

    var description: String {
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20)MiB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10)KiB" }
        return "\(bytes)"
    }
}

extension String {
    func trimmingCharacters(in set: WhitespaceSet) -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

enum WhitespaceSet { case whitespaces }
