//! Sizes and durations on the command line: `--max-upload-size 4G`, `--upload-ttl 24h`.

use std::time::Duration;

/// Parses a byte count with an optional binary suffix, as the client's `--chunk-size` does:
/// `1048576`, `512K`, `1M`, `1MiB`, `4G`, `2T` (any case, `B` allowed, blanks before the
/// suffix; K = 1,024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    const UNITS: &[(&[&str], u64)] = &[
        (&["", "b"], 1),
        (&["k", "kb", "kib"], 1 << 10),
        (&["m", "mb", "mib"], 1 << 20),
        (&["g", "gb", "gib"], 1 << 30),
        (&["t", "tb", "tib"], 1 << 40),
    ];
    scaled(text, UNITS, u64::MAX).map_err(|e| match e {
        Bad::Number => {
            format!("'{text}' is not a size; write a number of bytes, optionally with K, M, G or T")
        }
        Bad::Unit(u) => format!("unknown size suffix '{u}' in '{text}'; use K, M, G or T"),
        Bad::TooLarge => format!("'{text}' is too large"),
    })
}

/// Parses a duration: plain seconds (`3600`) or a number with a unit, `s`, `m`, `h` or `d`
/// (`90s`, `30m`, `24h`, `7d`), at most 100 years. Zero is refused: it would expire uploads
/// while they run.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &[(&[&str], u64)] = &[
        (&["", "s", "sec", "secs"], 1),
        (&["m", "min", "mins"], 60),
        (&["h", "hour", "hours"], 3600),
        (&["d", "day", "days"], 86_400),
    ];
    let secs = scaled(text, UNITS, 100 * 365 * 86_400).map_err(|e| match e {
        Bad::Number => format!(
            "'{text}' is not a duration; write seconds, or a number with s, m, h or d (24h)"
        ),
        Bad::Unit(u) => format!("unknown unit '{u}' in '{text}'; use s, m, h or d"),
        Bad::TooLarge => format!("'{text}' is too long (at most 100 years)"),
    })?;
    if secs == 0 {
        return Err("the duration must be longer than zero".into());
    }
    Ok(Duration::from_secs(secs))
}

/// What is wrong with a number with a unit.
enum Bad {
    Number,
    Unit(String),
    TooLarge,
}

/// `"24h"` with `h` = 3600 → 86,400: digits, optional blanks, a unit (any case) from `units`;
/// the result at most `max`.
fn scaled(text: &str, units: &[(&[&str], u64)], max: u64) -> Result<u64, Bad> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(Bad::Number);
    }
    let unit = unit.trim().to_ascii_lowercase();
    let scale = units
        .iter()
        .find(|(names, _)| names.contains(&unit.as_str()))
        .map(|(_, scale)| *scale)
        .ok_or(Bad::Unit(unit))?;
    let value: u64 = digits.parse().map_err(|_| Bad::TooLarge)?;
    value
        .checked_mul(scale)
        .filter(|v| *v <= max)
        .ok_or(Bad::TooLarge)
}

/// A byte count for people: `1048576 bytes (1.0 MiB)`.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes ({value:.1} {})", UNITS[unit])
}

/// A duration for people: `24 h`, `90 min`, `45 s`.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        _ if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        _ if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        _ => format!("{s} s"),
    }
}

/// How long a transfer took, for its log line: `2.35 s` from a second up, `1.42 ms` from a
/// millisecond, `42 µs` below.
pub fn seconds_text(secs: f64) -> String {
    // The boundaries sit where the shorter unit would round up to 1000.
    if secs >= 0.999_995 {
        format!("{secs:.2} s")
    } else if secs >= 0.999_5e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.0} µs", secs * 1e6)
    }
}

/// Transfers that take at least this long (seconds) log their rate.
const RATE_FROM: f64 = 0.01;

/// The rate of a transfer for its log line, ` (163.7 MB/s)`; nothing for one shorter than
/// [`RATE_FROM`], whose rate would say nothing (a 4 KiB file of a tree takes tens of
/// microseconds, clock noise much of it).
pub fn rate_text(bytes: u64, secs: f64) -> String {
    if secs < RATE_FROM {
        String::new()
    } else {
        format!(" ({:.1} MB/s)", bytes as f64 / 1e6 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_times() {
        assert_eq!(seconds_text(2.345), "2.35 s");
        assert_eq!(seconds_text(0.001_42), "1.42 ms");
        assert_eq!(seconds_text(0.000_042_4), "42 µs");
        assert_eq!(seconds_text(0.000_999_6), "1.00 ms");
        assert_eq!(seconds_text(0.999_999), "1.00 s");
        assert_eq!(rate_text(67_108_864, 0.41), " (163.7 MB/s)");
        assert_eq!(rate_text(4096, 0.000_042), "");
        assert_eq!(seconds_text(0.5), "500.00 ms");
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("1048576", 1 << 20),
            ("1M", 1 << 20),
            ("1MiB", 1 << 20),
            ("1 mb", 1 << 20),
            ("512k", 512 << 10),
            ("4G", 4 << 30),
            ("2TiB", 2 << 40),
            ("0", 0),
            ("100B", 100),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "M",
            "1.5G",
            "-1",
            "1X",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("3600", 3600),
            ("90s", 90),
            ("30m", 1800),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2 hours", 7200),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "0", "0h", "h", "1w", "-5", "1.5h", "999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn for_people() {
        assert_eq!(bytes_text(1000), "1000 bytes");
        assert_eq!(bytes_text(1 << 20), "1048576 bytes (1.0 MiB)");
        assert_eq!(bytes_text(3 << 29), "1610612736 bytes (1.5 GiB)");
        assert_eq!(duration_text(Duration::from_secs(86_400)), "1 d");
        assert_eq!(duration_text(Duration::from_secs(7200)), "2 h");
        assert_eq!(duration_text(Duration::from_secs(90)), "90 s");
        assert_eq!(duration_text(Duration::from_secs(600)), "10 min");
    }
}
