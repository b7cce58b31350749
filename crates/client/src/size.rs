//! Byte sizes on the command line: `65536`, `64K`, `64KiB`, `1M`, `1MiB` (binary units).

use sfts_protocol::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// Parses a byte count with an optional binary suffix (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`, `B`;
/// any case, blanks allowed before the suffix).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{text}' is not a size; write a number of bytes, optionally with K, M, KiB or MiB"
        ));
    }
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size suffix '{other}' in '{text}'; use K, M, KiB or MiB"
            ))
        }
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses `--chunk-size`: a size within the range the protocol allows.
pub fn parse_chunk_size(text: &str) -> Result<u32, String> {
    let value = parse_size(text)?;
    if value < MIN_CHUNK_SIZE as u64 || value > MAX_CHUNK_SIZE as u64 {
        return Err(format!(
            "chunk size {value} is outside the allowed range {} KiB to {} MiB",
            MIN_CHUNK_SIZE >> 10,
            MAX_CHUNK_SIZE >> 20
        ));
    }
    // In range, so it fits.
    Ok(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_and_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2mib"), Ok(2 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn nonsense_is_rejected() {
        for bad in ["", "K", "1.5M", "-1", "1X", "1 M B", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("18446744073709551615K").is_err());
    }

    #[test]
    fn chunk_size_range() {
        assert_eq!(parse_chunk_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("4K"), Ok(MIN_CHUNK_SIZE));
        assert_eq!(parse_chunk_size("16M"), Ok(MAX_CHUNK_SIZE));
        assert!(parse_chunk_size("4095").is_err());
        assert!(parse_chunk_size("17M").is_err());
        assert!(parse_chunk_size("0").is_err());
    }
}
