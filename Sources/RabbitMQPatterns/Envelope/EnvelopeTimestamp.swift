import Foundation

/// The envelope's timestamp format: ISO-8601 in UTC with milliseconds
/// (`2024-05-17T12:30:00.123Z`).
enum EnvelopeTimestamp {
    /// Formats `date` with exactly three fractional digits, computed from whole
    /// milliseconds: formatting the `Double` directly can print .122 for .123.
    static func format(_ date: Date) -> String {
        let milliseconds = millisecondsSinceEpoch(date)
        let (seconds, fraction) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        let (wholeSeconds, millis) = fraction < 0 ? (seconds - 1, fraction + 1000) : (seconds, fraction)
        let base = Date(timeIntervalSince1970: TimeInterval(wholeSeconds))
            .formatted(Date.ISO8601FormatStyle())  // "2024-05-17T12:30:00Z"
        let digits = String(millis)
        return base.dropLast() + "." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"
    }

    /// Parses any ISO-8601 date-time with a zone offset (`Z`, `+02:00`) and any number of
    /// fractional digits. A time without a zone is read as UTC, because Python's
    /// `datetime.utcnow().isoformat()` writes exactly that. Returns nil for anything else.
    static func parse(_ text: String) -> Date? {
        guard let t = text.firstIndex(where: { $0 == "T" || $0 == "t" }) else { return nil }
        let time = text[text.index(after: t)...]
        let hasZone = time.contains { $0 == "Z" || $0 == "z" || $0 == "+" || $0 == "-" }
        let full = hasZone ? text : text + "Z"
        let date =
            (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(full))
            ?? (try? Date.ISO8601FormatStyle().parse(full))
        return date.map(normalized)
    }

    /// `date` at the precision the envelope keeps, whole milliseconds, so that a decoded
    /// envelope equals the one that was encoded. Rounds to the nearest millisecond, which
    /// (unlike rounding down) is stable when applied again to its own result.
    static func normalized(_ date: Date) -> Date {
        Date(timeIntervalSince1970: Double(millisecondsSinceEpoch(date)) / 1000)
    }

    static func millisecondsSinceEpoch(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }
}
