//! Log levels: normalising a level name and detecting one in a message's text.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
