//! The offsets model (module docs of [`super`]): W, R and D per (topic, partition) as read from
//! the tables' `txn` actions, the per-partition read state, and what happens when another
//! writer moved them (I3).

use std::collections::HashMap;
use std::time::Duration;

use loglake_lake::read_offsets;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::Offset;
use tokio::runtime::Handle;
use url::Url;

use super::consumer::kafka_err;
use super::{ArchiveConfig, Archiver, LOG_TARGET, name_from_url};
use crate::error::ArchiveError;

/// A table's URL and the partitions to read offsets for.
type TablePartitions<'a> = (&'a Url, Vec<(String, i32)>);

/// Start positions of one (topic, partition), read from the tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOffsets {
    /// W: records below are committed.
    pub committed: Option<i64>,
    /// R: where to seek (≤ W).
    pub resume: Option<i64>,
    /// D: dead letters below are committed.
    pub dead_letters: Option<i64>,
}

/// I4: the dead-letter offset D that a commit records for a partition read up to `next`. It
/// never goes back: after a crash between the dead-letter commit and the table commit, D is
/// ahead of W, and a run that re-reads from W commits (rows, and dead letters of other
/// partitions) before it is back at D. Recording `next` there would let that run write the bad
/// records between `next` and the old D a second time.
pub fn dead_letter_end(start: &StartOffsets, next: i64) -> i64 {
    start.dead_letters.map_or(next, |d| d.max(next))
}

impl StartOffsets {
    pub fn seek(&self) -> Option<i64> {
        match (self.resume, self.committed) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (None, w) => w,
            (r, None) => r,
        }
    }
}

/// Reads the start offsets of partitions from the tables (and the dead-letter table).
pub(super) struct OffsetResolver {
    handle: Handle,
    storage_options: HashMap<String, String>,
    /// topic → (table name, url)
    tables: HashMap<String, (String, Url)>,
    dlq: Option<(String, Url)>,
}

impl OffsetResolver {
    pub(super) fn new(cfg: &ArchiveConfig, handle: Handle) -> Self {
        OffsetResolver {
            handle,
            storage_options: cfg.storage_options.clone(),
            tables: cfg
                .tables
                .iter()
                .flat_map(|t| {
                    t.topics
                        .iter()
                        .map(move |topic| (topic.clone(), (t.name.clone(), t.url.clone())))
                })
                .collect(),
            dlq: cfg.dlq.as_ref().map(|u| (name_from_url(u), u.clone())),
        }
    }

    // I2: offsets come from the tables, never from Kafka's committed offsets.
    pub(super) fn resolve(
        &self,
        parts: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), StartOffsets>, ArchiveError> {
        self.handle.block_on(async {
            let mut out: HashMap<(String, i32), StartOffsets> = HashMap::new();
            let mut by_table: HashMap<&str, TablePartitions<'_>> = HashMap::new();
            for (t, p) in parts {
                if let Some((name, url)) = self.tables.get(t) {
                    by_table
                        .entry(name.as_str())
                        .or_insert((url, Vec::new()))
                        .1
                        .push((t.clone(), *p));
                }
            }
            for (name, (url, ps)) in by_table {
                let versions = read_offsets(name, url, &self.storage_options, &ps, true).await?;
                for (k, (w, r)) in versions {
                    let e = out.entry(k).or_default();
                    e.committed = w;
                    e.resume = r;
                }
            }
            if let Some((name, url)) = &self.dlq {
                let versions = read_offsets(name, url, &self.storage_options, parts, false).await?;
                for (k, (d, _)) in versions {
                    out.entry(k).or_default().dead_letters = d;
                }
            }
            Ok(out)
        })
    }
}

/// One assigned (topic, partition): its table, its start offsets and how far it was read.
#[derive(Debug, Clone)]
pub(super) struct PartState {
    pub(super) table: usize,
    pub(super) start: StartOffsets,
    /// Next offset to read (position).
    pub(super) next: i64,
    /// Frozen end for `--until-end` (high watermark at assignment).
    pub(super) end: Option<i64>,
}

impl PartState {
    /// W: rows below it are in the table.
    pub(super) fn floor(&self) -> i64 {
        self.start.committed.unwrap_or(i64::MIN)
    }
    /// max(W, D): bad records below it are in the dead-letter table.
    pub(super) fn dlq_floor(&self) -> i64 {
        self.floor()
            .max(self.start.dead_letters.unwrap_or(i64::MIN))
    }
    pub(super) fn done(&self) -> bool {
        matches!(self.end, Some(e) if self.next >= e)
    }
    /// New records since the partition's last commit.
    pub(super) fn advanced(&self) -> bool {
        self.start.committed.is_none_or(|w| self.next > w)
    }
}

impl Archiver {
    /// I3: another writer advanced partitions we hold. Drop everything uncommitted and re-read
    /// every assigned partition's offsets from the tables; never write those records twice.
    pub(super) fn on_conflict(
        &mut self,
        table: String,
        partitions: Vec<(String, i32, Option<i64>)>,
    ) -> Result<(), ArchiveError> {
        self.report.conflicts += 1;
        self.cfg.metrics.offset_conflicts.inc();
        tracing::warn!(target: LOG_TARGET, table = %table, ?partitions, "offsets moved under us: another archiver owns these partitions; dropping buffers and re-reading offsets");
        self.reset()?;
        let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
        let starts = self.consumer.context().resolver.resolve(&keys)?;
        for (k, ps) in self.parts.iter_mut() {
            let s = starts.get(k).copied().unwrap_or_default();
            ps.start = s;
            let target = s.seek().unwrap_or(0);
            ps.next = target;
            let off = if s.seek().is_some() {
                Offset::Offset(target)
            } else {
                Offset::Beginning
            };
            self.consumer
                .seek(&k.0, k.1, off, Duration::from_secs(10))
                .map_err(kafka_err("seek after conflict"))?;
        }
        self.load_route_offsets()
    }

    /// Reads each route table's W for the assigned partitions of its source table (I2: from the
    /// tables).
    pub(super) fn load_route_offsets(&mut self) -> Result<(), ArchiveError> {
        for (ti, t) in self.tables.iter_mut().enumerate() {
            if t.routes.is_empty() {
                continue;
            }
            let parts: Vec<(String, i32)> = self
                .parts
                .iter()
                .filter(|(_, s)| s.table == ti)
                .map(|(k, _)| k.clone())
                .collect();
            for r in &mut t.routes {
                let offsets = self.handle.block_on(read_offsets(
                    &r.name,
                    r.out.sink.url(),
                    &self.cfg.storage_options,
                    &parts,
                    false,
                ))?;
                r.committed = offsets.into_iter().map(|(k, (w, _))| (k, w)).collect();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_dead_letter_offset_never_goes_back() {
        let s = |committed, dead_letters| StartOffsets {
            committed,
            resume: committed,
            dead_letters,
        };
        // After a crash between the two commits: D = 300 ahead of W = 100, read up to 150.
        assert_eq!(dead_letter_end(&s(Some(100), Some(300)), 150), 300);
        assert_eq!(dead_letter_end(&s(Some(100), Some(300)), 450), 450);
        assert_eq!(dead_letter_end(&s(None, None), 7), 7);
        assert_eq!(dead_letter_end(&s(None, Some(9)), 7), 9);
    }

    /// One partition's records through runs that commit dead letters, then the table, and may
    /// die anywhere (also between the two commits), with the floors and the D advance of the
    /// archiver: every offset ends up exactly once as a row or a dead letter.
    fn run_model(n: i64, bad_every: i64, steps: &[(i64, bool, u8)]) -> Vec<u32> {
        let mut copies = vec![0u32; n as usize];
        // Committed state: W and D (R = W: no partial lines here).
        let (mut w, mut d): (Option<i64>, Option<i64>) = (None, None);
        let mut steps = steps.iter();
        // Each run: start from the tables, read chunks, commit after each; a step's `u8`
        // says whether the run dies before (0), between (1) or after (2+) the two commits.
        'runs: loop {
            let mut ps = PartState {
                table: 0,
                start: StartOffsets {
                    committed: w,
                    resume: w,
                    dead_letters: d,
                },
                next: w.unwrap_or(0),
                end: None,
            };
            let (mut rows, mut dls): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
            loop {
                let (chunk, other_partition_has_dead_letters, fate) = match steps.next() {
                    Some(&s) => s,
                    // The final run: to the end, no crash.
                    None => (n, true, 2),
                };
                let to = (ps.next + chunk).min(n);
                for o in ps.next..to {
                    if o % bad_every == 0 {
                        if o >= ps.dlq_floor() {
                            dls.push(o);
                        }
                    } else if o >= ps.floor() {
                        rows.push(o);
                    }
                }
                ps.next = to;
                if fate == 0 {
                    continue 'runs; // killed: nothing of this run's buffers survives
                }
                let advanced = ps.start.committed.is_none_or(|c| ps.next > c);
                if advanced {
                    // Dead letters first (when any table partition has some).
                    if !dls.is_empty() || other_partition_has_dead_letters {
                        let end = dead_letter_end(&ps.start, ps.next);
                        d = Some(end);
                        ps.start.dead_letters = Some(end);
                        for o in dls.drain(..) {
                            copies[o as usize] += 1;
                        }
                    }
                    if fate == 1 {
                        continue 'runs; // killed between the two commits
                    }
                    w = Some(ps.next);
                    ps.start.committed = w;
                    ps.start.resume = w;
                    for o in rows.drain(..) {
                        copies[o as usize] += 1;
                    }
                }
                if ps.next >= n && steps.len() == 0 {
                    break 'runs;
                }
            }
        }
        copies
    }

    proptest! {
        #[test]
        fn every_offset_is_committed_once_however_the_runs_die(
            n in 1i64..400,
            bad_every in 1i64..12,
            steps in proptest::collection::vec((1i64..80, any::<bool>(), 0u8..4), 0..40),
        ) {
            let copies = run_model(n, bad_every, &steps);
            for (o, c) in copies.iter().enumerate() {
                prop_assert_eq!(*c, 1, "offset {} committed {} times", o, c);
            }
        }
    }
}
