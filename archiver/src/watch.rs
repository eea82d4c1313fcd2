//! The no-progress watchdog and the progress accounting of a run.
//!
//! Both are pure: the archive loop hands them what it knows (the assigned partitions, their
//! positions, frozen ends and broker high watermarks) and the time, and acts on the answer —
//! `--until-end` ends with [`crate::ArchiveError::Stalled`] (exit code 4), continuous mode turns
//! `/healthz` unhealthy so Kubernetes restarts the pod.
//!
//! *Progress* is a position moving forward, or a partition appearing that the watch had not seen
//! (a new assignment gets a full window). A run *waits* when
//! - `--until-end`: it has no partition, or one of its partitions is short of its frozen end;
//! - continuous: one of its partitions is behind the broker's high watermark (lag > 0). A member
//!   with no partition is not stalled in continuous mode: a Deployment may run more archivers
//!   than partitions.
//!
//! A run that waits without progress for the stall timeout is stalled. Nothing else counts: a
//! rebalance that hands back the same partitions at the same positions is no progress, so a
//! group that rebalances for ever is reported too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default of `--stall-timeout`: longer than a same-group restart takes to get its partitions
/// back (the session timeout, [`crate::archive::DEFAULT_SESSION_TIMEOUT_MS`]) and than a slow
/// broker's watermark retries (1 + 2 + 4 + 8 + 16 s), short enough for a nightly job.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// One assigned partition as the watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartView {
    pub topic: String,
    pub partition: i32,
    /// Index of the partition's table in the run.
    pub table: usize,
    /// Next offset to read.
    pub next: i64,
    /// Frozen end (`--until-end`).
    pub end: Option<i64>,
    /// The broker's high watermark from the last statistics, if known.
    pub high: Option<i64>,
}

impl PartView {
    /// Whether this partition still has records to read: below its frozen end in batch mode,
    /// below the broker's high watermark in continuous mode.
    pub fn behind(&self) -> bool {
        match (self.end, self.high) {
            (Some(end), _) => self.next < end,
            (None, Some(high)) => self.next < high,
            (None, None) => false,
        }
    }
}

/// Whether a run with these partitions waits for records (see the module doc).
pub fn waiting(until_end: bool, parts: &[PartView]) -> bool {
    if until_end && parts.is_empty() {
        return true;
    }
    parts.iter().any(PartView::behind)
}

/// The no-progress watchdog.
#[derive(Debug, Clone)]
pub struct StallWatch {
    timeout: Duration,
    /// Since when the run has waited without progress (`None`: it does not wait).
    since: Option<Instant>,
    seen: HashMap<(String, i32), i64>,
}

impl StallWatch {
    pub fn new(timeout: Duration) -> Self {
        StallWatch {
            timeout,
            since: None,
            seen: HashMap::new(),
        }
    }

    /// Takes one observation; returns how long the run has been stalled past the timeout's
    /// start (`Some(d)` with `d >= timeout` when stalled, `None` when it does not wait).
    pub fn observe(
        &mut self,
        now: Instant,
        until_end: bool,
        parts: &[PartView],
    ) -> Option<Duration> {
        let mut moved = false;
        for p in parts {
            let key = (p.topic.clone(), p.partition);
            match self.seen.insert(key, p.next) {
                Some(before) if before >= p.next => {}
                _ => moved = true,
            }
        }
        if !waiting(until_end, parts) {
            self.since = None;
            return None;
        }
        if moved || self.since.is_none() {
            self.since = Some(now);
        }
        self.since.map(|s| now.saturating_duration_since(s))
    }

    /// Work that moves no position but is progress (a commit that took long): restarts the
    /// window.
    pub fn progressed(&mut self, now: Instant) {
        if self.since.is_some() {
            self.since = Some(now);
        }
    }

    /// Whether an observation's answer means stalled.
    pub fn is_stalled(&self, waited: Option<Duration>) -> bool {
        waited.is_some_and(|w| w >= self.timeout)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Records left to read per table: the sum of (frozen end or high watermark − next) over the
/// table's assigned partitions; `partitions_done` counts those with nothing left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableProgress {
    pub remaining: u64,
    pub partitions: usize,
    pub partitions_done: usize,
}

/// Progress per table index, for the tables that have assigned partitions.
pub fn progress(parts: &[PartView]) -> std::collections::BTreeMap<usize, TableProgress> {
    let mut out: std::collections::BTreeMap<usize, TableProgress> = Default::default();
    for p in parts {
        let e = out.entry(p.table).or_default();
        e.partitions += 1;
        let target = p.end.or(p.high);
        let left = target.map_or(0, |t| (t - p.next).max(0) as u64);
        e.remaining += left;
        if left == 0 {
            e.partitions_done += 1;
        }
    }
    out
}

/// How an operator reads one partition in the stall error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionWait {
    /// Assigned to this member: its position and frozen end (or high watermark).
    Assigned {
        topic: String,
        partition: i32,
        next: i64,
        end: Option<i64>,
        high: Option<i64>,
    },
    /// Not assigned to this member: what the table holds and what the broker has, if known.
    Unassigned {
        topic: String,
        partition: i32,
        committed: Option<i64>,
        high: Option<i64>,
    },
}

impl std::fmt::Display for PartitionWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |o: &Option<i64>| o.map_or_else(|| "unknown".to_string(), |v| v.to_string());
        match self {
            PartitionWait::Assigned {
                topic,
                partition,
                next,
                end: Some(end),
                ..
            } => write!(
                f,
                "{topic}[{partition}] assigned, at offset {next} of frozen end {end} ({} to go)",
                (end - next).max(0)
            ),
            PartitionWait::Assigned {
                topic,
                partition,
                next,
                end: None,
                high,
            } => write!(
                f,
                "{topic}[{partition}] assigned, at offset {next}, broker high watermark {}",
                opt(high)
            ),
            PartitionWait::Unassigned {
                topic,
                partition,
                committed,
                high,
            } => write!(
                f,
                "{topic}[{partition}] not assigned to this member (table committed to {}, broker high watermark {})",
                opt(committed),
                opt(high)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(p: i32, next: i64, end: Option<i64>, high: Option<i64>) -> PartView {
        PartView {
            topic: "t".into(),
            partition: p,
            table: 0,
            next,
            end,
            high,
        }
    }

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn batch_run_without_partitions_stalls_after_the_timeout() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(T);
        assert_eq!(w.observe(t0, true, &[]), Some(Duration::ZERO));
        let waited = w.observe(t0 + Duration::from_secs(59), true, &[]);
        assert!(!w.is_stalled(waited));
        let waited = w.observe(t0 + Duration::from_secs(60), true, &[]);
        assert!(w.is_stalled(waited));
    }

    #[test]
    fn a_continuous_member_without_partitions_or_lag_never_stalls() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(T);
        assert_eq!(w.observe(t0 + Duration::from_secs(3600), false, &[]), None);
        let caught_up = [part(0, 10, None, Some(10))];
        assert_eq!(
            w.observe(t0 + Duration::from_secs(7200), false, &caught_up),
            None
        );
    }

    #[test]
    fn continuous_lag_without_progress_stalls() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(T);
        let lagging = [part(0, 10, None, Some(50))];
        w.observe(t0, false, &lagging);
        assert!(
            !w.is_stalled(
                w.clone()
                    .observe(t0 + Duration::from_secs(30), false, &lagging)
            )
        );
        let waited = w.observe(t0 + Duration::from_secs(61), false, &lagging);
        assert!(w.is_stalled(waited));
        // a step forward resets it
        let moved = [part(0, 11, None, Some(50))];
        let waited = w.observe(t0 + Duration::from_secs(62), false, &moved);
        assert_eq!(waited, Some(Duration::ZERO));
    }

    #[test]
    fn the_same_assignment_handed_back_is_no_progress() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(T);
        let parts = [part(0, 5, Some(9), None)];
        w.observe(t0, true, &parts);
        w.observe(t0 + Duration::from_secs(30), true, &[]);
        let waited = w.observe(t0 + Duration::from_secs(61), true, &parts);
        assert!(w.is_stalled(waited), "{waited:?}");
    }

    #[test]
    fn progress_counts_remaining_records_and_done_partitions_per_table() {
        let mut a = part(0, 5, Some(9), None);
        a.table = 1;
        let b = part(1, 9, Some(9), None);
        let c = part(2, 3, None, Some(10));
        let p = progress(&[a, b, c]);
        assert_eq!(
            p[&0],
            TableProgress {
                remaining: 7,
                partitions: 2,
                partitions_done: 1
            }
        );
        assert_eq!(p[&1].remaining, 4);
    }

    #[test]
    fn wait_lines_say_where_each_partition_is() {
        let a = PartitionWait::Assigned {
            topic: "logs".into(),
            partition: 2,
            next: 40,
            end: Some(100),
            high: None,
        };
        assert_eq!(
            a.to_string(),
            "logs[2] assigned, at offset 40 of frozen end 100 (60 to go)"
        );
        let u = PartitionWait::Unassigned {
            topic: "logs".into(),
            partition: 3,
            committed: Some(7),
            high: None,
        };
        assert_eq!(
            u.to_string(),
            "logs[3] not assigned to this member (table committed to 7, broker high watermark unknown)"
        );
    }

    proptest! {
        /// A run whose positions move at least once per timeout window is never stalled, and
        /// one that waits without moving for the timeout always is.
        #[test]
        fn stalled_exactly_when_nothing_moved_for_the_timeout(
            steps in proptest::collection::vec((0u64..40, any::<bool>()), 1..60)
        ) {
            let t0 = Instant::now();
            let mut w = StallWatch::new(T);
            let mut now = t0;
            let mut next = 0i64;
            let end = Some(1_000_000);
            let mut last_move = t0;
            w.observe(now, true, &[part(0, next, end, None)]);
            for (secs, moves) in steps {
                now += Duration::from_secs(secs);
                if moves {
                    next += 1;
                    last_move = now;
                }
                let waited = w.observe(now, true, &[part(0, next, end, None)]);
                prop_assert_eq!(w.is_stalled(waited), now - last_move >= T);
            }
        }
    }
}
