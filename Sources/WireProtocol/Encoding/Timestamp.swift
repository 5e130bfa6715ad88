/// ISO 8601 UTC timestamps with milliseconds ("2025-01-01T00:00:00.000Z"), the spec's
/// `timestamp` format, written without Foundation or a time-zone database: UTC needs
/// only the proleptic Gregorian calendar (days-to-civil conversion).
public enum Timestamp {
    /// Bytes in a formatted timestamp.
    public static let length = 24

    /// Writes the timestamp for `milliseconds` since the Unix epoch at `out` (24 bytes).
    @inlinable
    public static func write(millisecondsSinceEpoch milliseconds: UInt64, into out: UnsafeMutableRawPointer) {
        let ms = Int(milliseconds % 1000)
        let secondsTotal = Int(milliseconds / 1000)
        let days = secondsTotal / 86_400
        let secondOfDay = secondsTotal % 86_400
        let (year, month, day) = civil(fromDays: days)
        @inline(__always) func put2(_ v: Int, _ at: Int) {
            out.storeBytes(of: UInt8(48 + v / 10), toByteOffset: at, as: UInt8.self)
            out.storeBytes(of: UInt8(48 + v % 10), toByteOffset: at + 1, as: UInt8.self)
        }
        put2(year / 100, 0)
        put2(year % 100, 2)
        out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 4, as: UInt8.self)
        put2(month, 5)
        out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 7, as: UInt8.self)
        put2(day, 8)
        out.storeBytes(of: UInt8(ascii: "T"), toByteOffset: 10, as: UInt8.self)
        put2(secondOfDay / 3600, 11)
        out.storeBytes(of: UInt8(ascii: ":"), toByteOffset: 13, as: UInt8.self)
        put2(secondOfDay / 60 % 60, 14)
        out.storeBytes(of: UInt8(ascii: ":"), toByteOffset: 16, as: UInt8.self)
        put2(secondOfDay % 60, 17)
        out.storeBytes(of: UInt8(ascii: "."), toByteOffset: 19, as: UInt8.self)
        out.storeBytes(of: UInt8(48 + ms / 100), toByteOffset: 20, as: UInt8.self)
        put2(ms % 100, 21)
        out.storeBytes(of: UInt8(ascii: "Z"), toByteOffset: 23, as: UInt8.self)
    }

    public static func string(millisecondsSinceEpoch milliseconds: UInt64) -> String {
        String(unsafeUninitializedCapacity: length) { buffer in
            write(millisecondsSinceEpoch: milliseconds, into: UnsafeMutableRawPointer(buffer.baseAddress!))
            return length
        }
    }

    /// Year, month (1-12) and day (1-31) of the day `days` after 1970-01-01, using
    /// 400-year eras of 146097 days (the Gregorian cycle).
    @inlinable
    public static func civil(fromDays days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468                       // days since 0000-03-01
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097                                      // [0, 146096]
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // [0, 365], from March 1
        let monthFromMarch = (5 * dayOfYear + 2) / 153                        // [0, 11]
        let day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        let month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    /// The IMF-fixdate of RFC 9110 §5.6.7 for HTTP `Date` headers ("Sun, 06 Nov 1994 08:49:37 GMT").
    public static func httpDate(secondsSinceEpoch seconds: UInt64) -> String {
        let days = Int(seconds / 86_400)
        let secondOfDay = Int(seconds % 86_400)
        let (year, month, day) = civil(fromDays: days)
        let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]   // 1970-01-01 was a Thursday
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(weekdays[days % 7]), \(two(day)) \(months[month - 1]) \(year) "
            + "\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) GMT"
    }
}
