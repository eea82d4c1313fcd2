//! librdkafka's own log lines and errors, rate-limited: a broker that refuses connections makes
//! librdkafka report the same failure (an ERROR and a WARN) every retry, dozens of lines a
//! minute that bury everything else. Here each kind of message (its facility and text with the
//! numbers masked: `after 0ms` and `after 3ms` are one kind) is logged the first time, then at
//! most once per window, with how many were held back since.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;

/// Default window: one line per kind of message per 30 s.
pub const WINDOW: Duration = Duration::from_secs(30);

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `held_back` like it were dropped since the last one logged.
    Log { held_back: u64 },
    /// Drop it (counted for the next line of its kind).
    HoldBack,
}

#[derive(Debug)]
struct Kind {
    logged_at: Instant,
    held_back: u64,
    /// The newest text held back, for the summary.
    last: String,
}

/// Per-kind state; pure apart from the clock it is given.
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    kinds: Mutex<HashMap<String, Kind>>,
}

/// The kind of a message: its facility and its text with each run of digits replaced by `#`
/// and without librdkafka's own `, N identical error(s) suppressed` note.
pub fn kind_of(facility: &str, text: &str) -> String {
    let mut k = String::with_capacity(facility.len() + 1 + text.len());
    k.push_str(facility);
    k.push(' ');
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                k.push('#');
            }
            in_digits = true;
        } else {
            k.push(c);
            in_digits = false;
        }
    }
    k.replace(", # identical error(s) suppressed", "")
}

impl Limiter {
    pub fn new(window: Duration) -> Self {
        Limiter {
            window,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// The window: at most one line per kind in it.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a message of `kind` (text `text`) arriving at `now` is logged.
    pub fn admit(&self, kind: &str, text: &str, now: Instant) -> Admit {
        let mut kinds = match self.kinds.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match kinds.get_mut(kind) {
            Some(k) if now.saturating_duration_since(k.logged_at) < self.window => {
                k.held_back += 1;
                text.clone_into(&mut k.last);
                Admit::HoldBack
            }
            Some(k) => {
                let held_back = std::mem::take(&mut k.held_back);
                k.logged_at = now;
                Admit::Log { held_back }
            }
            None => {
                kinds.insert(
                    kind.to_string(),
                    Kind {
                        logged_at: now,
                        held_back: 0,
                        last: String::new(),
                    },
                );
                Admit::Log { held_back: 0 }
            }
        }
    }

    /// The newest text held back of each kind, and how many, emptied: for a last summary when
    /// the client is closed (a failure that stopped repeating is otherwise never summed up).
    pub fn drain(&self) -> Vec<(String, u64)> {
        let mut kinds = match self.kinds.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<(String, u64)> = kinds
            .iter_mut()
            .filter(|(_, k)| k.held_back > 0)
            .map(|(_, k)| (k.last.clone(), std::mem::take(&mut k.held_back)))
            .collect();
        out.sort();
        out
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(WINDOW)
    }
}

/// What a logged line adds when `held_back` like it were not shown.
pub fn suffix(held_back: u64, window: Duration) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(
            " ({held_back} more like it in the last {}s, not shown)",
            window.as_secs()
        )
    }
}

/// `ClientContext::log` through the limiter.
pub fn log(limiter: &Limiter, level: RDKafkaLogLevel, facility: &str, text: &str) {
    let Admit::Log { held_back } = limiter.admit(&kind_of(facility, text), text, Instant::now())
    else {
        return;
    };
    let more = suffix(held_back, limiter.window);
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "{facility}: {text}{more}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", "{facility}: {text}{more}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{facility}: {text}{more}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{facility}: {text}{more}"),
    }
}

/// `ClientContext::error` through the limiter.
pub fn error(limiter: &Limiter, error: &rdkafka::error::KafkaError, reason: &str) {
    let text = format!("{error}: {reason}");
    let Admit::Log { held_back } = limiter.admit(&kind_of("ERROR", &text), &text, Instant::now())
    else {
        return;
    };
    let more = suffix(held_back, limiter.window);
    tracing::error!(target: "librdkafka", "{text}{more}");
}

/// Logs one line per kind whose repeats were held back (at the end of a run).
pub fn summarise(limiter: &Limiter) {
    for (text, n) in limiter.drain() {
        tracing::warn!(target: "librdkafka", "{n} more like this were not shown, the last: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_do_not_make_a_new_kind() {
        assert_eq!(
            kind_of(
                "FAIL",
                "127.0.0.1:9092/bootstrap: Connect failed (after 0ms in state CONNECT)"
            ),
            kind_of(
                "FAIL",
                "127.0.0.1:9092/bootstrap: Connect failed (after 13ms in state CONNECT)"
            )
        );
        assert_ne!(kind_of("FAIL", "a"), kind_of("CONNECT", "a"));
        assert_eq!(
            kind_of("FAIL", "refused (after 0ms in state CONNECT)"),
            kind_of(
                "FAIL",
                "refused (after 0ms in state CONNECT, 1 identical error(s) suppressed)"
            )
        );
    }

    #[test]
    fn a_repeated_message_is_logged_once_per_window_with_a_count() {
        let l = Limiter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(l.admit("k", "k", at(0)), Admit::Log { held_back: 0 });
        for s in 1..30 {
            assert_eq!(l.admit("k", "k", at(s)), Admit::HoldBack);
        }
        // another kind is not held back by the first
        assert_eq!(
            l.admit("other", "other", at(5)),
            Admit::Log { held_back: 0 }
        );
        assert_eq!(l.admit("k", "k", at(30)), Admit::Log { held_back: 29 });
        assert_eq!(l.admit("k", "k", at(31)), Admit::HoldBack);
        assert_eq!(l.drain(), vec![("k".to_string(), 1)]);
        assert_eq!(l.drain(), vec![]);
    }

    proptest! {
        /// Every message is either logged or counted in exactly one later line or drain:
        /// nothing is lost from the count, and at most one line per kind per window.
        #[test]
        fn every_message_is_logged_or_counted_once(
            arrivals in proptest::collection::vec((0u8..3, 0u64..200), 1..200),
        ) {
            let window = Duration::from_secs(10);
            let l = Limiter::new(window);
            let t0 = Instant::now();
            let mut arrivals = arrivals;
            arrivals.sort_by_key(|a| a.1);
            let mut logged: HashMap<u8, Vec<u64>> = HashMap::new();
            let mut accounted = 0u64;
            for (k, s) in &arrivals {
                match l.admit(&k.to_string(), "", t0 + Duration::from_secs(*s)) {
                    Admit::Log { held_back } => {
                        accounted += 1 + held_back;
                        logged.entry(*k).or_default().push(*s);
                    }
                    Admit::HoldBack => {}
                }
            }
            accounted += l.drain().iter().map(|(_, n)| n).sum::<u64>();
            prop_assert_eq!(accounted, arrivals.len() as u64);
            for times in logged.values() {
                for w in times.windows(2) {
                    prop_assert!(w[1] - w[0] >= window.as_secs());
                }
            }
        }
    }
}
