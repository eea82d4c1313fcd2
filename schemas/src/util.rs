//! Timestamps, levels and Kubernetes file-name helpers shared by the decoders.

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

/// Normalises a level name: `trace`, `debug`, `info`, `warn`, `error`, `fatal`; anything else is
/// kept, lower-cased.
pub fn normalize_level(l: &str) -> Option<&'static str> {
    let l = l.trim();
    let canon = |x: &str| -> Option<&'static str> {
        Some(match x {
            "trace" | "trc" | "finest" | "finer" | "t" => "trace",
            "debug" | "dbg" | "fine" | "d" | "debug1" | "debug2" | "debug3" | "debug4"
            | "debug5" => "debug",
            "info" | "inf" | "information" | "informational" | "notice" | "i" => "info",
            "warn" | "warning" | "wrn" | "w" => "warn",
            "error" | "err" | "eror" | "e" | "severe" => "error",
            "fatal" | "crit" | "critical" | "panic" | "alert" | "emerg" | "emergency"
            | "dpanic" | "f" => "fatal",
            _ => return None,
        })
    };
    if l.len() > 16 {
        return None;
    }
    if l.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        canon(l)
    } else {
        canon(&l.to_ascii_lowercase())
    }
}

/// Detects a level from the first bytes of a free-text message: a whole word such as `ERROR`,
/// `WARN`, `info`, `level=debug`, `[E]`, or a glog/klog prefix like `E0401 12:00:00.000000`.
pub fn detect_level(msg: &str) -> Option<&'static str> {
    let b = msg.as_bytes();
    // klog / glog: `I0401 17:58:33.598656       1 main.go:12] ...`
    if b.len() > 6
        && matches!(b[0], b'I' | b'W' | b'E' | b'F')
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' '
    {
        return Some(match b[0] {
            b'I' => "info",
            b'W' => "warn",
            b'E' => "error",
            _ => "fatal",
        });
    }
    let head = &b[..b.len().min(160)];
    let mut i = 0;
    while i < head.len() {
        if !head[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < head.len() && head[i].is_ascii_alphabetic() {
            i += 1;
        }
        let word = &head[start..i];
        if (3..=8).contains(&word.len()) {
            // words only count when they are not embedded in a longer token (`errors.go`,
            // `information_schema` still match on purpose only when standalone)
            let before_ok =
                start == 0 || !head[start - 1].is_ascii_alphanumeric() && head[start - 1] != b'_';
            let after_ok = i == head.len()
                || !head[i].is_ascii_alphanumeric() && head[i] != b'_' && head[i] != b'.';
            if before_ok && after_ok {
                let mut buf = [0u8; 8];
                for (d, s) in buf.iter_mut().zip(word) {
                    *d = s.to_ascii_lowercase();
                }
                let w = &buf[..word.len()];
                let lvl = match w {
                    b"trace" => Some("trace"),
                    b"debug" => Some("debug"),
                    b"info" => Some("info"),
                    b"notice" => Some("info"),
                    b"warn" | b"warning" => Some("warn"),
                    b"error" | b"err" => Some("error"),
                    b"fatal" | b"critical" | b"crit" | b"panic" | b"emerg" => Some("fatal"),
                    _ => None,
                };
                // lower-case words only count in `level=x`-like positions or as the first word
                let upper = word[0].is_ascii_uppercase();
                let keyed = start >= 1 && matches!(head[start - 1], b'=' | b':' | b'[' | b'"')
                    || start == 0;
                if lvl.is_some() && (upper || keyed) {
                    return lvl;
                }
            }
        }
    }
    None
}

/// Kubernetes metadata carried by a kubelet log path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMeta<'a> {
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    pub container: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

/// Parses `/var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log` and
/// `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
pub fn parse_k8s_log_path(path: &str) -> Option<PathMeta<'_>> {
    let path = path.trim();
    if let Some(rest) = path.split("/pods/").nth(1) {
        let mut parts = rest.split('/');
        let (Some(dir), Some(container), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !file.ends_with(".log") && !file.contains(".log.") {
            return None;
        }
        let mut it = dir.splitn(3, '_');
        let (Some(ns), Some(pod), Some(uid)) = (it.next(), it.next(), it.next()) else {
            return None;
        };
        return Some(PathMeta {
            namespace: Some(ns),
            pod: Some(pod),
            container: Some(container),
            container_id: None,
            pod_uid: Some(uid),
        });
    }
    let file = path.rsplit('/').next()?;
    let stem = file.strip_suffix(".log")?;
    // pod names and namespaces cannot contain '_'; container names cannot either
    let mut it = stem.splitn(3, '_');
    let (Some(pod), Some(ns), Some(rest)) = (it.next(), it.next(), it.next()) else {
        return None;
    };
    let (container, id) = match rest.rsplit_once('-') {
        Some((c, id)) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (c, Some(id))
        }
        _ => (rest, None),
    };
    if pod.is_empty() || ns.is_empty() || container.is_empty() {
        return None;
    }
    Some(PathMeta {
        namespace: Some(ns),
        pod: Some(pod),
        container: Some(container),
        container_id: id,
        pod_uid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn levels() {
        assert_eq!(
            detect_level("2015-03-12T23:16:52.071:INFO:com.root:Response :"),
            Some("info")
        );
        assert_eq!(
            detect_level("E0401 12:00:00.000000 1 x.go:1] boom"),
            Some("error")
        );
        assert_eq!(detect_level("time=x level=warning msg=y"), Some("warn"));
        assert_eq!(detect_level("no errors.go here, information only"), None);
        assert_eq!(detect_level("Simple text"), None);
        assert_eq!(normalize_level("WARNING"), Some("warn"));
        assert_eq!(normalize_level("DEBUG5"), Some("debug"));
    }

    #[test]
    fn kubelet_paths() {
        let id = "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16";
        let p = format!("/var/log/containers/base_core_fluent-bit-{id}.log");
        let m = parse_k8s_log_path(&p).unwrap();
        assert_eq!(
            (m.pod, m.namespace, m.container, m.container_id),
            (Some("base"), Some("core"), Some("fluent-bit"), Some(id))
        );
        let m = parse_k8s_log_path("/var/log/pods/ns1_web-0_1234-abcd/nginx/0.log").unwrap();
        assert_eq!(
            (m.namespace, m.pod, m.container),
            (Some("ns1"), Some("web-0"), Some("nginx"))
        );
        assert_eq!(parse_k8s_log_path("/var/log/syslog"), None);
    }
}
