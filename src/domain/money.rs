//! Money: integer minor units and ISO 4217 currencies with their minor-unit exponent.
//! Amounts are never floating point; formatting is exact decimal text.

use std::fmt;

/// An ISO 4217 currency known to this service, with its number of minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// ISO 4217 list one (as published 2026-01-01), sorted by code for binary search: every
/// currency and fund code with its minor-unit digits. Precious metals, units of account,
/// testing and "no currency" codes (XAU, XDR, XAD, XTS, XXX…) have no minor unit and are not
/// money this service books, so they are absent.
/// ANG (replaced by XCG in 2025) and BGN (euro since 2026-01-01) were withdrawn recently but
/// stay: entries of periods before the switch still carry them.
static CURRENCIES: &[([u8; 3], u8)] = &[
    (*b"AED", 2),
    (*b"AFN", 2),
    (*b"ALL", 2),
    (*b"AMD", 2),
    (*b"ANG", 2),
    (*b"AOA", 2),
    (*b"ARS", 2),
    (*b"AUD", 2),
    (*b"AWG", 2),
    (*b"AZN", 2),
    (*b"BAM", 2),
    (*b"BBD", 2),
    (*b"BDT", 2),
    (*b"BGN", 2),
    (*b"BHD", 3),
    (*b"BIF", 0),
    (*b"BMD", 2),
    (*b"BND", 2),
    (*b"BOB", 2),
    (*b"BOV", 2),
    (*b"BRL", 2),
    (*b"BSD", 2),
    (*b"BTN", 2),
    (*b"BWP", 2),
    (*b"BYN", 2),
    (*b"BZD", 2),
    (*b"CAD", 2),
    (*b"CDF", 2),
    (*b"CHE", 2),
    (*b"CHF", 2),
    (*b"CHW", 2),
    (*b"CLF", 4),
    (*b"CLP", 0),
    (*b"CNY", 2),
    (*b"COP", 2),
    (*b"COU", 2),
    (*b"CRC", 2),
    (*b"CUP", 2),
    (*b"CVE", 2),
    (*b"CZK", 2),
    (*b"DJF", 0),
    (*b"DKK", 2),
    (*b"DOP", 2),
    (*b"DZD", 2),
    (*b"EGP", 2),
    (*b"ERN", 2),
    (*b"ETB", 2),
    (*b"EUR", 2),
    (*b"FJD", 2),
    (*b"FKP", 2),
    (*b"GBP", 2),
    (*b"GEL", 2),
    (*b"GHS", 2),
    (*b"GIP", 2),
    (*b"GMD", 2),
    (*b"GNF", 0),
    (*b"GTQ", 2),
    (*b"GYD", 2),
    (*b"HKD", 2),
    (*b"HNL", 2),
    (*b"HTG", 2),
    (*b"HUF", 2),
    (*b"IDR", 2),
    (*b"ILS", 2),
    (*b"INR", 2),
    (*b"IQD", 3),
    (*b"IRR", 2),
    (*b"ISK", 0),
    (*b"JMD", 2),
    (*b"JOD", 3),
    (*b"JPY", 0),
    (*b"KES", 2),
    (*b"KGS", 2),
    (*b"KHR", 2),
    (*b"KMF", 0),
    (*b"KPW", 2),
    (*b"KRW", 0),
    (*b"KWD", 3),
    (*b"KYD", 2),
    (*b"KZT", 2),
    (*b"LAK", 2),
    (*b"LBP", 2),
    (*b"LKR", 2),
    (*b"LRD", 2),
    (*b"LSL", 2),
    (*b"LYD", 3),
    (*b"MAD", 2),
    (*b"MDL", 2),
    (*b"MGA", 2),
    (*b"MKD", 2),
    (*b"MMK", 2),
    (*b"MNT", 2),
    (*b"MOP", 2),
    (*b"MRU", 2),
    (*b"MUR", 2),
    (*b"MVR", 2),
    (*b"MWK", 2),
    (*b"MXN", 2),
    (*b"MXV", 2),
    (*b"MYR", 2),
    (*b"MZN", 2),
    (*b"NAD", 2),
    (*b"NGN", 2),
    (*b"NIO", 2),
    (*b"NOK", 2),
    (*b"NPR", 2),
    (*b"NZD", 2),
    (*b"OMR", 3),
    (*b"PAB", 2),
    (*b"PEN", 2),
    (*b"PGK", 2),
    (*b"PHP", 2),
    (*b"PKR", 2),
    (*b"PLN", 2),
    (*b"PYG", 0),
    (*b"QAR", 2),
    (*b"RON", 2),
    (*b"RSD", 2),
    (*b"RUB", 2),
    (*b"RWF", 0),
    (*b"SAR", 2),
    (*b"SBD", 2),
    (*b"SCR", 2),
    (*b"SDG", 2),
    (*b"SEK", 2),
    (*b"SGD", 2),
    (*b"SHP", 2),
    (*b"SLE", 2),
    (*b"SOS", 2),
    (*b"SRD", 2),
    (*b"SSP", 2),
    (*b"STN", 2),
    (*b"SVC", 2),
    (*b"SYP", 2),
    (*b"SZL", 2),
    (*b"THB", 2),
    (*b"TJS", 2),
    (*b"TMT", 2),
    (*b"TND", 3),
    (*b"TOP", 2),
    (*b"TRY", 2),
    (*b"TTD", 2),
    (*b"TWD", 2),
    (*b"TZS", 2),
    (*b"UAH", 2),
    (*b"UGX", 0),
    (*b"USD", 2),
    (*b"USN", 2),
    (*b"UYI", 0),
    (*b"UYU", 2),
    (*b"UYW", 4),
    (*b"UZS", 2),
    (*b"VED", 2),
    (*b"VES", 2),
    (*b"VND", 0),
    (*b"VUV", 0),
    (*b"WST", 2),
    (*b"XAF", 0),
    (*b"XCD", 2),
    (*b"XCG", 2),
    (*b"XOF", 0),
    (*b"XPF", 0),
    (*b"YER", 2),
    (*b"ZAR", 2),
    (*b"ZMW", 2),
    (*b"ZWG", 2),
];

impl Currency {
    /// Looks up an active ISO 4217 code (upper case, e.g. `EUR`); `None` when unknown.
    pub fn parse(code: &str) -> Option<Currency> {
        let code: [u8; 3] = code.as_bytes().try_into().ok()?;
        CURRENCIES
            .binary_search_by(|(known, _)| known.cmp(&code))
            .ok()
            .map(|i| Currency {
                code,
                exponent: CURRENCIES[i].1,
            })
    }

    /// Every currency this service knows, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .map(|&(code, exponent)| Currency { code, exponent })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Minor-unit digits: 2 for EUR, 0 for JPY, 3 for KWD.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// `amount` minor units as plain decimal text (`-19.99`, `1999`, `1.999`).
    pub fn format(&self, amount: i64) -> String {
        format_minor(amount, self.exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Formats `amount` minor units with `exponent` decimals, exactly (works for `i64::MIN`).
pub fn format_minor(amount: i64, exponent: u8) -> String {
    let mut out = String::with_capacity(24);
    write_minor(&mut out, amount, exponent);
    out
}

/// Appends `amount` minor units with `exponent` decimals to `out`, exactly and without
/// allocating (renderers call this once or twice per entry).
pub fn write_minor(out: &mut String, amount: i64, exponent: u8) {
    // unsigned_abs, because -i64::MIN does not fit an i64.
    let mut n = amount.unsigned_abs();
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &buf[start..];
    // ASCII digits only, so every split below is on a char boundary.
    let text = std::str::from_utf8(digits).unwrap_or_default();
    if amount < 0 {
        out.push('-');
    }
    let exponent = usize::from(exponent);
    if exponent == 0 {
        out.push_str(text);
    } else if text.len() <= exponent {
        // At least one digit before the point: 5 at 2 digits is 0.05.
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', exponent - text.len()));
        out.push_str(text);
    } else {
        let (units, minor) = text.split_at(text.len() - exponent);
        out.push_str(units);
        out.push('.');
        out.push_str(minor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_exponents() {
        for (code, exponent) in [
            ("EUR", 2),
            ("USD", 2),
            ("GBP", 2),
            ("CHF", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("ISK", 0),
            ("CLP", 0),
            ("VND", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("OMR", 3),
            ("JOD", 3),
            ("TND", 3),
            ("LYD", 3),
            ("IQD", 3),
            ("CLF", 4),
            ("UYW", 4),
            ("UYI", 0),
            ("XOF", 0),
            ("XAF", 0),
            ("XPF", 0),
            ("XCD", 2),
            ("XCG", 2),
            ("UGX", 0),
            ("PYG", 0),
            ("MGA", 2),
            ("MRU", 2),
            ("ZWG", 2),
            ("SLE", 2),
            ("VES", 2),
            ("HUF", 2),
            ("IDR", 2),
        ] {
            let currency = Currency::parse(code).unwrap_or_else(|| panic!("{code} unknown"));
            assert_eq!(currency.exponent(), exponent, "{code}");
            assert_eq!(currency.code(), code);
            assert_eq!(currency.to_string(), code);
        }
    }

    #[test]
    fn table_is_sorted_unique_and_complete() {
        assert!(
            CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0),
            "table must stay sorted"
        );
        assert_eq!(CURRENCIES.len(), 166);
        for currency in Currency::all() {
            assert!(currency.code().bytes().all(|b| b.is_ascii_uppercase()));
            assert!(currency.exponent() <= 4);
            assert_eq!(Currency::parse(currency.code()), Some(currency));
        }
    }

    #[test]
    fn unknown_codes_are_refused() {
        for code in [
            "", "E", "EU", "EURO", "eur", "Eur", "EUr", " EUR", "EUR ", "XXX", "XTS", "XAU", "XDR",
            "XAG", "XAD", "XSU", "XUA", "XBA", "ABC", "ZZZ", "AAA", "123", "CUC", "ZWL", "SLL",
            "E\u{0}R", "ÉUR", "€", "DEM", "FRF", "HRK", "VEF",
        ] {
            assert_eq!(Currency::parse(code), None, "{code:?} accepted");
        }
    }

    #[test]
    fn formats_exact_decimals() {
        assert_eq!(format_minor(-1999, 2), "-19.99");
        assert_eq!(format_minor(1999, 2), "19.99");
        assert_eq!(format_minor(5, 2), "0.05");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(50, 2), "0.50");
        assert_eq!(format_minor(100, 2), "1.00");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(0, 0), "0");
        assert_eq!(format_minor(1999, 0), "1999");
        assert_eq!(format_minor(-1999, 0), "-1999");
        assert_eq!(format_minor(1999, 3), "1.999");
        assert_eq!(format_minor(-1, 3), "-0.001");
        assert_eq!(format_minor(12_345, 4), "1.2345");
        assert_eq!(format_minor(1, 4), "0.0001");
    }

    #[test]
    fn formats_the_extremes_without_overflow() {
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(format_minor(i64::MAX, 2), "92233720368547758.07");
        assert_eq!(format_minor(i64::MIN, 0), "-9223372036854775808");
        assert_eq!(format_minor(i64::MIN, 19), "-0.9223372036854775808");
        assert_eq!(format_minor(i64::MIN, 20), "-0.09223372036854775808");
        let wide = format_minor(-1, u8::MAX);
        assert_eq!(wide.len(), 3 + usize::from(u8::MAX));
        assert!(wide.starts_with("-0.000") && wide.ends_with('1'));
    }

    #[test]
    fn currency_format_uses_its_exponent() {
        let of = |code| Currency::parse(code).unwrap();
        assert_eq!(of("EUR").format(-1999), "-19.99");
        assert_eq!(of("JPY").format(1999), "1999");
        assert_eq!(of("KWD").format(1999), "1.999");
        assert_eq!(of("CLF").format(10_000), "1.0000");
    }
}
