/// A non-negative decimal held exactly as `units / 10^18`, plus a sticky flag that records
/// nonzero digits beyond that precision. TTL arithmetic uses it so that `"0.1s"` is exactly
/// 100 ms and `"1.0000000000000000000001ms"` still rounds up to 2 ms, which `Double` gets wrong.
struct FixedPointDecimal: Equatable {
    static let scaleDigits = 18
    static let scale: UInt128 = 1_000_000_000_000_000_000

    var units: UInt128
    var sticky: Bool

    static let zero = FixedPointDecimal(units: 0, sticky: false)

    init(units: UInt128, sticky: Bool) {
        self.units = units
        self.sticky = sticky
    }

    /// Builds the number whose decimal digits are `digits` (each 0...9) with the decimal point
    /// after `pointPosition` of them (negative or past the end is fine: zeros are implied).
    /// Returns nil when the integer part is above `maxInteger`.
    init?(digits: [UInt8], pointPosition: Int, maxInteger: UInt128) {
        func digit(_ index: Int) -> UInt128 {
            index >= 0 && index < digits.count ? UInt128(digits[index]) : 0
        }
        var integer: UInt128 = 0
        if pointPosition > 0 {
            for i in 0..<pointPosition {
                integer = integer * 10 + digit(i)
                if integer > maxInteger { return nil }
            }
        }
        var fraction: UInt128 = 0
        for j in 0..<Self.scaleDigits {
            fraction = fraction * 10 + digit(pointPosition + j)
        }
        var sticky = false
        let firstBeyond = max(0, pointPosition + Self.scaleDigits)
        if firstBeyond < digits.count {
            sticky = digits[firstBeyond...].contains { $0 != 0 }
        }
        self.init(units: integer * Self.scale + fraction, sticky: sticky)
    }

    var integerPart: UInt128 { units / Self.scale }

    /// `self * factor`; the caller bounds the result (see `TTL`).
    func multiplied(by factor: UInt128) -> FixedPointDecimal {
        FixedPointDecimal(units: units * factor, sticky: sticky)
    }

    static func + (lhs: FixedPointDecimal, rhs: FixedPointDecimal) -> FixedPointDecimal {
        FixedPointDecimal(units: lhs.units + rhs.units, sticky: lhs.sticky || rhs.sticky)
    }

    /// The smallest whole number not below this value.
    var roundedUp: UInt128 {
        let whole = units / Self.scale
        return (units % Self.scale != 0 || sticky) ? whole + 1 : whole
    }

    var isZero: Bool { units == 0 && !sticky }
}
