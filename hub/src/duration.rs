//! Durations as dbprov manifests write them (`30s`, `1h30m`, `90d`).

use std::time::Duration;

/// Parses a duration in the one syntax every duration field's CRD pattern
/// ([`crate::api::common::DURATION`]) admits: one or more `<number><unit>` terms, the number
/// with an optional fraction, units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, `w` — `30s`,
/// `1h30m`, `1.5h`, `2w3d`, `250ms`. `None` for anything else or beyond `u64` seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    const UNITS: [(&str, u128); 10] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
        ("w", 604_800_000_000_000),
        ("", 0),
    ];
    let mut rest = s;
    let mut total_ns: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit())?;
        let (int, after) = rest.split_at(int_end);
        if int.is_empty() {
            return None;
        }
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let end = f.find(|c: char| !c.is_ascii_digit())?;
                if end == 0 {
                    return None;
                }
                f.split_at(end)
            }
            None => ("", after),
        };
        // Longest unit first: `ms` before `m`, `ns`/`us` before `s`.
        let (unit, per) = UNITS
            .iter()
            .filter(|(u, _)| !u.is_empty())
            .filter(|(u, _)| after.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        let whole: u128 = int.parse().ok()?;
        let mut ns = whole.checked_mul(*per)?;
        // The fraction, digit by digit, so `0.1h` is exact and long fractions cannot overflow.
        let mut scale = *per;
        for digit in frac.chars().filter_map(|c| c.to_digit(10)) {
            scale /= 10;
            ns = ns.checked_add(u128::from(digit) * scale)?;
        }
        total_ns = total_ns.checked_add(ns)?;
        rest = &after[unit.len()..];
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}
