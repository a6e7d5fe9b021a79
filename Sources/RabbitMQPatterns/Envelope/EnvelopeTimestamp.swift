import Foundation

/// The envelope's timestamp format: written as ISO-8601 in UTC with milliseconds
/// (`2024-05-17T12:30:00.123Z`), read in every form other languages write (``parse(_:)``).
enum EnvelopeTimestamp {
    /// Formats `date` with exactly three fractional digits, computed from whole
    /// milliseconds: formatting the `Double` directly can print .122 for .123. The calendar
    /// arithmetic is the proleptic Gregorian calendar of ISO-8601 (Foundation's formatter
    /// switches to the Julian calendar before 1582), the same as ``parse(_:)`` uses.
    static func format(_ date: Date) -> String {
        let milliseconds = millisecondsSinceEpoch(date)
        let (days, millisecondOfDay) = floorDivision(milliseconds, 86_400_000)
        let (year, month, day) = civil(daysSinceEpoch: Int(days))
        let second = millisecondOfDay / 1000
        func pad(_ value: some BinaryInteger, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(second / 3600, 2)):\(pad(second / 60 % 60, 2)):"
            + "\(pad(second % 60, 2)).\(pad(millisecondOfDay % 1000, 3))Z"
    }

    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let (quotient, remainder) = value.quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    /// The date of the proleptic Gregorian calendar that is `days` after 1970-01-01 (Howard
    /// Hinnant's civil_from_days).
    static func civil(daysSinceEpoch days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let dayOfEra = z - era * 146097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// Parses an RFC 3339 / ISO-8601 date-time as other languages write it:
    /// `YYYY-MM-DD`, then `T`, `t` or a space (Python's `str(datetime)`), `HH:MM:SS`, an
    /// optional fraction of 1 to 9 digits (Python writes 6; kept to the millisecond), and
    /// an optional zone: `Z`, `z`, `+HH:MM`, `+HHMM` or `+HH` (and `-`). Without a zone the
    /// time is read as UTC: a naive Python `datetime` (`datetime.utcnow()`, pydantic's dump of
    /// one) carries none and is UTC by convention. Returns nil for anything else, including
    /// a date or time out of range (February 30, 24:00, a leap second).
    static func parse(_ text: String) -> Date? {
        var scanner = Scanner(Array(text.utf8))
        guard let year = scanner.digits(4), scanner.take("-"), let month = scanner.digits(2), scanner.take("-"),
            let day = scanner.digits(2), scanner.take(oneOf: "Tt "),
            let hour = scanner.digits(2), scanner.take(":"), let minute = scanner.digits(2), scanner.take(":"),
            let second = scanner.digits(2)
        else { return nil }
        guard (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day),
            hour < 24, minute < 60, second < 60
        else { return nil }
        var nanoseconds = 0
        if scanner.take(".") {
            var count = 0
            while let digit = scanner.digit() {
                count += 1
                if count <= 9 { nanoseconds = nanoseconds * 10 + digit }
            }
            guard (1...9).contains(count) else { return nil }
            for _ in count..<9 { nanoseconds *= 10 }
        }
        var offset = 0
        if scanner.take(oneOf: "Zz") {
        } else if let sign = scanner.sign() {
            guard let hours = scanner.digits(2), hours < 24 else { return nil }
            var minutes = 0
            if scanner.atEnd {
            } else {
                _ = scanner.take(":")
                guard let value = scanner.digits(2), value < 60 else { return nil }
                minutes = value
            }
            offset = sign * (hours * 3600 + minutes * 60)
        }
        guard scanner.atEnd else { return nil }
        let days = daysSinceEpoch(year: year, month: month, day: day)
        let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
        // Whole milliseconds in integers, rounded half up, as normalized(_:) keeps them.
        let milliseconds = Int64(seconds) * 1000 + Int64((nanoseconds + 500_000) / 1_000_000)
        return Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// Whether ``format(_:)`` writes `date` in a form ``parse(_:)`` reads: years 1 to 9999.
    static func isEncodable(_ date: Date) -> Bool {
        guard date.timeIntervalSince1970.isFinite else { return false }
        let milliseconds = millisecondsSinceEpoch(date)
        let first = Int64(daysSinceEpoch(year: 1, month: 1, day: 1)) * 86_400_000
        let last = Int64(daysSinceEpoch(year: 10000, month: 1, day: 1)) * 86_400_000
        return milliseconds >= first && milliseconds < last
    }

    /// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard
    /// Hinnant's days_from_civil).
    static func daysSinceEpoch(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146097 + dayOfEra - 719468
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Reads ASCII bytes left to right.
    private struct Scanner {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var atEnd: Bool { index == bytes.count }

        mutating func take(_ character: Unicode.Scalar) -> Bool { take(oneOf: [character]) }

        mutating func take(oneOf characters: String) -> Bool { take(oneOf: Array(characters.unicodeScalars)) }

        mutating func take(oneOf characters: [Unicode.Scalar]) -> Bool {
            guard index < bytes.count, characters.contains(Unicode.Scalar(bytes[index])) else { return false }
            index += 1
            return true
        }

        mutating func digit() -> Int? {
            guard index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) else { return nil }
            index += 1
            return Int(bytes[index - 1] - UInt8(ascii: "0"))
        }

        mutating func digits(_ count: Int) -> Int? {
            var value = 0
            for _ in 0..<count {
                guard let digit = digit() else { return nil }
                value = value * 10 + digit
            }
            return value
        }

        mutating func sign() -> Int? {
            if take("+") { return 1 }
            if take("-") { return -1 }
            return nil
        }
    }

    /// `date` at the precision the envelope keeps, whole milliseconds, so that a decoded
    /// envelope equals the one that was encoded. Rounds to the nearest millisecond, which
    /// (unlike rounding down) is stable when applied again to its own result.
    static func normalized(_ date: Date) -> Date {
        // Not a number stays so, for encoding to refuse (rather than become 1970).
        guard date.timeIntervalSince1970.isFinite else { return date }
        return Date(timeIntervalSince1970: Double(millisecondsSinceEpoch(date)) / 1000)
    }

    /// Whole milliseconds since 1970, rounded; clamped to about ±292 million years (and 0 for
    /// a date that is not a number), so that no date traps: those outside years 1 to 9999
    /// are refused by ``isEncodable(_:)`` all the same.
    static func millisecondsSinceEpoch(_ date: Date) -> Int64 {
        let milliseconds = (date.timeIntervalSince1970 * 1000).rounded()
        guard milliseconds.isFinite else { return milliseconds.isNaN ? 0 : (milliseconds < 0 ? .min : .max) }
        // 2^63 as a Double: the first value Int64 cannot hold.
        if milliseconds >= 9_223_372_036_854_775_808.0 { return .max }
        if milliseconds < -9_223_372_036_854_775_808.0 { return .min }
        return Int64(milliseconds)
    }
}
