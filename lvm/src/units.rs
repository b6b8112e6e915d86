//! Sizes as lvm2 takes and prints them (`lib/display/display.c`).
//!
//! Arguments (`-L 2G`, `-L +50M`): a number with an optional unit
//! `bBsSkKmMgGtTpPeE` (binary in either case), MiB when none.
//! Output: `--units h` (default) picks the largest unit that keeps the
//! value at least 1 and marks an inexact value with `<`; other units are
//! fixed (`b` bytes, `s` sectors, `k`..`e` binary, `K`..`E` decimal, `H`
//! human decimal); `--nosuffix` drops the unit letter.

/// How sizes are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    /// The unit letter (`h`, `H`, `b`, `s`, `k`, `m`, ... `E`).
    pub unit: char,
    /// Append the unit's letter.
    pub suffix: bool,
}

impl Default for Units {
    fn default() -> Self {
        Units {
            unit: 'h',
            suffix: true,
        }
    }
}

const LETTERS: &str = "kmgtpe";

fn unit_bytes(c: char) -> Option<u64> {
    let lower = c.to_ascii_lowercase();
    let pos = LETTERS.find(lower)? as u32 + 1;
    let base: u64 = if c.is_ascii_uppercase() { 1000 } else { 1024 };
    Some(base.pow(pos))
}

impl Units {
    /// Parses `--units`.
    pub fn parse(s: &str, suffix: bool) -> Result<Units, String> {
        let mut cs = s.chars();
        let (Some(c), None) = (cs.next(), cs.next()) else {
            return Err(format!("invalid units specification {s:?}"));
        };
        if !"hHbBsS".contains(c) && unit_bytes(c).is_none() {
            return Err(format!("invalid units specification {s:?}"));
        }
        Ok(Units { unit: c, suffix })
    }

    /// Formats `bytes` for a report column.
    pub fn format(&self, bytes: u64) -> String {
        match self.unit {
            'b' | 'B' => self.with(bytes.to_string(), 'B'),
            's' | 'S' => self.with((bytes / 512).to_string(), 'S'),
            'h' | 'H' => self.human(bytes, self.unit == 'H', false),
            c => {
                let u = unit_bytes(c).expect("checked unit");
                self.with(format!("{:.2}", bytes as f64 / u as f64), c)
            }
        }
    }

    fn with(&self, n: String, letter: char) -> String {
        if self.suffix {
            format!("{n}{letter}")
        } else {
            n
        }
    }

    fn human(&self, bytes: u64, decimal: bool, long: bool) -> String {
        if bytes == 0 {
            return if long { "0   ".into() } else { "0 ".into() };
        }
        let base: u64 = if decimal { 1000 } else { 1024 };
        let mut unit = 1u64;
        let mut idx = 0;
        while idx < LETTERS.len() && bytes >= unit * base {
            unit *= base;
            idx += 1;
        }
        if idx == 0 {
            return self.with(bytes.to_string(), 'B');
        }
        let letter = LETTERS.as_bytes()[idx - 1] as char;
        let letter = if decimal {
            letter.to_ascii_uppercase()
        } else {
            letter
        };
        let hundredths = bytes as u128 * 100;
        let exact = hundredths / unit as u128 * unit as u128 == hundredths;
        let shown = hundredths.div_ceil(unit as u128);
        let n = format!(
            "{}{}.{:02}",
            if exact { "" } else { "<" },
            shown / 100,
            shown % 100
        );
        if long {
            let name = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"][idx - 1];
            format!("{n} {name}")
        } else {
            self.with(n, letter)
        }
    }
}

/// The long human form of displays and messages: `60.00 MiB`, `<95.37 MiB`.
pub fn display_size(bytes: u64) -> String {
    Units::default().human(bytes, false, true)
}

/// A size argument: `(sign, bytes)` where sign is `+`, `-` or none.
pub fn parse_size(s: &str) -> Result<(Option<char>, u64), String> {
    let bad = || format!("Invalid argument for --size: {s}");
    let (sign, rest) = match s.chars().next() {
        Some(c @ ('+' | '-')) => (Some(c), &s[1..]),
        _ => (None, s),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, unit) = rest.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" => 1 << 20,
        "b" | "B" => 1,
        "s" | "S" => 512,
        u if u.len() == 1 => {
            unit_bytes(u.chars().next().expect("one").to_ascii_lowercase()).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if n < 0.0 || !n.is_finite() {
        return Err(bad());
    }
    Ok((sign, (n * mult as f64).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_lvm2_prints() {
        // Values Debian's lvm2 2.03.16 printed for these sizes.
        let h = Units::default();
        assert_eq!(h.format(62_914_560), "60.00m");
        assert_eq!(h.format(99_999_744), "<95.37m");
        assert_eq!(h.format(0), "0 ");
        let u = |c, s| Units { unit: c, suffix: s };
        assert_eq!(u('b', true).format(62_914_560), "62914560B");
        assert_eq!(u('s', false).format(62_914_560), "122880");
        assert_eq!(u('k', true).format(99_999_744), "97656.00k");
        assert_eq!(u('M', true).format(99_999_744), "100.00M");
        assert_eq!(display_size(99_999_744), "<95.37 MiB");
        assert_eq!(display_size(64 << 20), "64.00 MiB");
    }

    #[test]
    fn size_arguments() {
        assert_eq!(parse_size("2G").unwrap(), (None, 2 << 30));
        assert_eq!(parse_size("+50M").unwrap(), (Some('+'), 50 << 20));
        assert_eq!(parse_size("8").unwrap(), (None, 8 << 20));
        assert_eq!(parse_size("1.5k").unwrap(), (None, 1536));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5q").is_err());
    }
}
