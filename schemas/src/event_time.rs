//! Event times of log records: RFC 3339 / ISO 8601 and epoch timestamps to UTC microseconds
//! (with fast paths for what collectors write), nanoseconds within the microsecond, and a
//! timestamp's `dt` / `hour` partition.

use chrono::{DateTime, NaiveDateTime};

pub const US_PER_DAY: i64 = 86_400_000_000;
pub const US_PER_HOUR: i64 = 3_600_000_000;

/// `(dt as days since epoch, hour)` of a UTC microsecond timestamp.
pub fn dt_hour(ts_us: i64) -> (i32, i32) {
    let days = ts_us.div_euclid(US_PER_DAY);
    let hour = ts_us.rem_euclid(US_PER_DAY) / US_PER_HOUR;
    (
        i32::try_from(days).unwrap_or(if days < 0 { i32::MIN } else { i32::MAX }),
        hour as i32,
    )
}

/// Parses an RFC 3339 / ISO 8601 timestamp (`2019-04-01T17:58:33.598656444Z`,
/// `+00:00` offsets, a space instead of `T`, or no zone = UTC) into UTC microseconds.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 10 || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if let Some(us) = rfc3339_fast(s.as_bytes()) {
        return Some(us);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    // tolerated variants: space separator, missing zone (taken as UTC), `+0000` offsets
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.fZ",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    None
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Fast path of [`parse_rfc3339_us`] for what collectors write: `YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction of 1 to 9 digits, then `Z` or `±HH:MM`. Anything else (leap seconds, other
/// separators, longer fractions) returns `None` and goes to chrono; where both parse, the result
/// is the same (checked by a property test against chrono).
fn rfc3339_fast(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8], at: usize, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(at..at + n)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(b, 0, 4)?, num(b, 5, 2)?, num(b, 8, 2)?);
    let (h, mi, sec) = (num(b, 11, 2)?, num(b, 14, 2)?, num(b, 17, 2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > mdays[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac_us = 0i64;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let mut v = 0i64;
        for k in 0..6 {
            v = v * 10
                + if k < digits {
                    i64::from(b[i + 1 + k] - b'0')
                } else {
                    0
                };
        }
        frac_us = v;
        i += 1 + digits;
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let (oh, om) = (num(rest, 0, 2)?, num(rest, 3, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1_000_000 + frac_us)
}

/// Parses an epoch number: seconds (with fraction), or integer milli/micro/nanoseconds told
/// apart by magnitude.
pub fn parse_epoch_us(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(us) = epoch_secs_fast(s) {
        return Some(us);
    }
    if s.contains(['.', 'e', 'E']) {
        let f: f64 = s.parse().ok()?;
        if !f.is_finite() || f.abs() > 1e13 {
            return None;
        }
        return Some((f * 1e6).round() as i64);
    }
    let n: i64 = s.parse().ok()?;
    let a = n.unsigned_abs();
    Some(if a < 100_000_000_000 {
        n.checked_mul(1_000_000)?
    } else if a < 100_000_000_000_000 {
        n.checked_mul(1_000)?
    } else if a < 100_000_000_000_000_000 {
        n
    } else {
        n / 1_000
    })
}

/// Fast path of [`parse_epoch_us`] for `<digits>.<1 to 6 digits>` seconds below 2^31 (what
/// Fluent Bit writes): exact decimal arithmetic, which gives the same result as the `f64` path.
/// Why the same: the parsed `f64` is within 2^-23 s (half an ulp below 2^31) of the decimal
/// value, i.e. 0.12 µs; times 1e6 (a result below 2^51, ulp 0.25) adds at most 0.125 µs; the
/// exact value being a whole number of µs, `round()` lands on it.
fn epoch_secs_fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let dot = b.iter().position(|&c| c == b'.')?;
    let (int, frac) = (&b[..dot], &b[dot + 1..]);
    if int.is_empty() || int.len() > 10 || frac.is_empty() || frac.len() > 6 {
        return None;
    }
    let mut secs: i64 = 0;
    for &c in int {
        if !c.is_ascii_digit() {
            return None;
        }
        secs = secs * 10 + i64::from(c - b'0');
    }
    if secs >= 1 << 31 {
        return None;
    }
    let mut us: i64 = 0;
    for &c in frac {
        if !c.is_ascii_digit() {
            return None;
        }
        us = us * 10 + i64::from(c - b'0');
    }
    for _ in frac.len()..6 {
        us *= 10;
    }
    Some(secs * 1_000_000 + us)
}

/// Either an RFC 3339 string or an epoch number.
pub fn parse_any_ts_us(s: &str) -> Option<i64> {
    parse_rfc3339_us(s).or_else(|| parse_epoch_us(s))
}

/// An event time as loglake stores it: microseconds since the epoch (the `ts` column) and, when
/// the source wrote nanoseconds, the nanoseconds within that microsecond (`ts_nanos`, 0–999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    pub us: i64,
    pub sub_us_ns: Option<i16>,
}

impl EventTime {
    pub fn micros(us: i64) -> Self {
        EventTime {
            us,
            sub_us_ns: None,
        }
    }

    /// From nanoseconds since the epoch (OTLP's `time_unix_nano`).
    pub fn from_nanos(ns: i64) -> Self {
        EventTime {
            us: ns.div_euclid(1000),
            sub_us_ns: Some(ns.rem_euclid(1000) as i16),
        }
    }

    /// Whether `other` names the same instant to the precision both have: the same microsecond,
    /// and the same nanoseconds when both have them.
    pub fn same_instant(&self, other: &EventTime) -> bool {
        self.us == other.us
            && match (self.sub_us_ns, other.sub_us_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The nanoseconds within the microsecond written by an RFC 3339 text with more than six
/// fractional digits (`…:33.598656444Z` → 444; `…:33.5986564Z` → 400), else `None`.
fn sub_us_digits(s: &str) -> Option<i16> {
    let b = s.as_bytes();
    // the fraction follows the seconds: `YYYY-MM-DDTHH:MM:SS.`
    if b.get(19) != Some(&b'.') {
        return None;
    }
    let digits = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits <= 6 {
        return None;
    }
    let mut ns: i16 = 0;
    for i in 0..3 {
        let d = if i + 6 < digits {
            b[20 + 6 + i] - b'0'
        } else {
            0
        };
        ns = ns * 10 + i16::from(d);
    }
    Some(ns)
}

/// [`parse_rfc3339_us`], keeping the nanoseconds a text with more than six fractional digits has.
pub fn parse_rfc3339(s: &str) -> Option<EventTime> {
    let us = parse_rfc3339_us(s)?;
    Some(EventTime {
        us,
        sub_us_ns: sub_us_digits(s.trim()),
    })
}

/// [`parse_epoch_us`], keeping the nanoseconds of an integer nanosecond epoch.
pub fn parse_epoch(s: &str) -> Option<EventTime> {
    let us = parse_epoch_us(s)?;
    let t = s.trim();
    let sub_us_ns = match t.parse::<i64>() {
        Ok(n) if n >= 100_000_000_000_000_000 => Some((n % 1000) as i16),
        _ => None,
    };
    Some(EventTime { us, sub_us_ns })
}

/// Either an RFC 3339 string or an epoch number, to the nanosecond when the text has them.
pub fn parse_any_ts(s: &str) -> Option<EventTime> {
    parse_rfc3339(s).or_else(|| parse_epoch(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The fast path gives chrono's answer wherever it answers, and answers for the shapes
        /// collectors write.
        #[test]
        fn rfc3339_fast_path_agrees_with_chrono(
            y in 1900i64..2200, mo in 1i64..=12, d in 1i64..=31, h in 0i64..24, mi in 0i64..60,
            sec in 0i64..60, frac in proptest::option::of((1usize..=9, 0u64..1_000_000_000)),
            zone in 0usize..4, oh in 0i64..24, om in 0i64..60,
        ) {
            let mut s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}");
            if let Some((n, v)) = frac {
                let digits = format!("{v:09}");
                s.push('.');
                s.push_str(&digits[..n]);
            }
            match zone {
                0 => s.push('Z'),
                1 => s.push_str(&format!("+{oh:02}:{om:02}")),
                2 => s.push_str(&format!("-{oh:02}:{om:02}")),
                _ => s.push_str("+00:00"),
            }
            let chrono = DateTime::parse_from_rfc3339(&s).ok().map(|t| t.timestamp_micros());
            let fast = rfc3339_fast(s.as_bytes());
            proptest::prop_assert_eq!(fast, chrono, "{}", s);
        }
    }

    #[test]
    fn nanoseconds_within_the_microsecond() {
        let t = |us, ns| Some(EventTime { us, sub_us_ns: ns });
        assert_eq!(
            parse_rfc3339("2019-04-01T17:58:33.598656444Z"),
            t(1_554_141_513_598_656, Some(444))
        );
        // seven digits: 400 ns; nine digits ending in zeros are still nanoseconds
        assert_eq!(
            parse_rfc3339("2019-04-01T17:58:33.5986564Z"),
            t(1_554_141_513_598_656, Some(400))
        );
        assert_eq!(
            parse_rfc3339("2019-04-01T17:58:33.598656000+00:00"),
            t(1_554_141_513_598_656, Some(0))
        );
        // six digits or fewer: microsecond precision, no nanoseconds
        assert_eq!(
            parse_rfc3339("2019-04-01T17:58:33.598656Z"),
            t(1_554_141_513_598_656, None)
        );
        assert_eq!(
            parse_rfc3339("2019-04-01 17:58:33Z"),
            t(1_554_141_513_000_000, None)
        );
        assert_eq!(parse_rfc3339("2019-04-01T17:58"), None);
        // integer nanoseconds keep theirs; seconds with a fraction do not have any
        assert_eq!(
            parse_any_ts("1554141513598656444"),
            t(1_554_141_513_598_656, Some(444))
        );
        assert_eq!(
            parse_any_ts("1554141513.598656"),
            t(1_554_141_513_598_656, None)
        );
        assert_eq!(
            EventTime::from_nanos(1_554_141_513_598_656_444),
            EventTime {
                us: 1_554_141_513_598_656,
                sub_us_ns: Some(444)
            }
        );
        let a = EventTime::micros(5);
        assert!(a.same_instant(&EventTime::from_nanos(5_123)));
        assert!(!EventTime::from_nanos(5_124).same_instant(&EventTime::from_nanos(5_123)));
        assert!(!a.same_instant(&EventTime::micros(6)));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_rfc3339_us("2019-04-01T17:58:33.598656444Z"),
            Some(1_554_141_513_598_656)
        );
        assert_eq!(
            parse_rfc3339_us("2019-05-07T18:57:50.904275087+00:00"),
            Some(1_557_255_470_904_275)
        );
        assert_eq!(
            parse_rfc3339_us("2019-04-05T14:54:23.584269761"),
            Some(1_554_476_063_584_269)
        );
        assert_eq!(parse_rfc3339_us("qwerty"), None);
        assert_eq!(parse_rfc3339_us(""), None);
        assert_eq!(
            parse_epoch_us("1554141513.598656"),
            Some(1_554_141_513_598_656)
        );
        assert_eq!(parse_epoch_us("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_epoch_us("1700000000123"), Some(1_700_000_000_123_000));
        assert_eq!(dt_hour(1_554_141_513_598_656), (17_987, 17));
        assert_eq!(dt_hour(-1), (-1, 23));
    }

    /// The `f64` path of [`parse_epoch_us`], for comparison with its fast path.
    fn epoch_via_f64(s: &str) -> Option<i64> {
        let f: f64 = s.parse().ok()?;
        Some((f * 1e6).round() as i64)
    }

    #[test]
    fn epoch_fast_path_matches_the_f64_path() {
        let mut r = crate::r#gen::Rng::new(7);
        let mut n = 0;
        for i in 0..300_000u64 {
            let secs = match i % 4 {
                0 => r.below(1 << 31),
                1 => (1 << 31) - 1 - r.below(1000),
                2 => r.below(1000),
                _ => 1_700_000_000 + r.below(100_000_000),
            };
            let digits = 1 + (i % 6) as usize;
            let frac = r.below(10u64.pow(digits as u32));
            let s = format!("{secs}.{frac:0digits$}");
            let fast = epoch_secs_fast(&s);
            assert_eq!(fast, epoch_via_f64(&s), "{s}");
            n += usize::from(fast.is_some());
        }
        assert_eq!(n, 300_000);
        // outside the fast path: same answers as before
        for s in [
            "2147483648.5",
            "1554141513.5981",
            "1554141513.5986564",
            "-1.5",
            "+1.5",
            "1.",
            ".5",
            "1e3",
            "1.5e3",
            "00001.000001",
            "1.2.3",
        ] {
            assert_eq!(
                epoch_secs_fast(s).is_some(),
                s == "00001.000001" || s == "1554141513.5981",
                "{s}"
            );
            let f = epoch_via_f64(s).filter(|_| {
                s.parse::<f64>()
                    .is_ok_and(|f| f.is_finite() && f.abs() <= 1e13)
            });
            assert_eq!(parse_epoch_us(s), f, "{s}");
        }
        assert_eq!(
            parse_epoch_us(" 1714557600.000001 "),
            Some(1_714_557_600_000_001)
        );
        assert_eq!(parse_epoch_us("0.5"), Some(500_000));
    }
}
