//! Time arguments: RFC 3339 (`2025-01-31T06:00:00Z`), Unix seconds (`1738303200.5`), `now`,
//! or a duration before now (`-1h`, `-30m`, `-90s`, `-2d`).

use crate::{Result, TimeSnafu};

/// Parses a time argument relative to `now_ns`.
pub fn parse_time(text: &str, now_ns: i64) -> Result<i64> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_ns);
    }
    if let Some(ago) = text
        .strip_prefix('-')
        .filter(|t| t.ends_with(|c: char| c.is_ascii_alphabetic()))
    {
        let unit_at = ago
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(ago.len());
        let (number, unit) = ago.split_at(unit_at);
        let seconds = match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return TimeSnafu { text }.fail(),
        };
        let n: f64 = number.parse().map_err(|_| TimeSnafu { text }.build())?;
        return Ok(now_ns - (n * seconds * 1e9) as i64);
    }
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        return Ok((seconds * 1e9) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| TimeSnafu { text }.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-1h", now).unwrap(), now - 3_600_000_000_000);
        assert_eq!(parse_time("-90s", now).unwrap(), now - 90_000_000_000);
        assert_eq!(
            parse_time("1700000000.5", now).unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000_000_000
        );
        for bad in ["", "yesterday", "-1y", "-h", "2023-13-01T00:00:00Z"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
