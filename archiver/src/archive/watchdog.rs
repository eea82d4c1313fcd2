//! How far the run is, for the no-progress watchdog ([`crate::watch`]), the progress reporter
//! and `--until-end`'s end: the partition views, the watchdog tick, the stall error, and the
//! check of the partitions other members hold.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use super::consumer::DEFAULT_SESSION_TIMEOUT_MS;
use super::{Archiver, LOG_TARGET};
use crate::error::ArchiveError;
use crate::watch::{PartView, PartitionWait};

/// How often the loop looks at its progress ([`Archiver::watch_tick`]); the stall timeout is at
/// least a second.
pub(super) const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How often a `--until-end` run whose own partitions are done checks the others' (a metadata
/// request and a read of the tables' offsets).
pub(super) const OTHERS_CHECK_EVERY: Duration = Duration::from_secs(2);

impl Archiver {
    /// The partitions of `topic` that this member does not hold (`Err`: the metadata request
    /// failed, named by topic).
    fn unheld_partitions(&self, topic: &str) -> Result<Vec<(String, i32)>, String> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| format!("{topic}: {e}"))?;
        let mut out = Vec::new();
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let key = (topic.to_string(), p.id());
                if !self.parts.contains_key(&key) {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    /// The partitions of the topics that this member does not hold (`Err`: the metadata request
    /// failed, named by topic).
    fn unassigned_partitions(&self) -> Result<Vec<(String, i32)>, String> {
        let mut out = Vec::new();
        for topic in self.topic_table.keys() {
            out.extend(self.unheld_partitions(topic)?);
        }
        out.sort();
        Ok(out)
    }

    /// `--until-end` is done only when every partition of the topics is archived to its end:
    /// those this member does not hold too (I2: the tables say how far, W). Their ends are the
    /// high watermarks when this run first looked. A member holding nothing waits for the
    /// others' commits; the stall watch sees their W move ([`Archiver::part_views`]), and names
    /// them if it does not.
    pub(super) fn others_done(&mut self) -> bool {
        let Ok(unassigned) = self.unassigned_partitions() else {
            return false;
        };
        for (t, p) in &unassigned {
            let key = (t.clone(), *p);
            if !self.others.contains_key(&key) {
                match self
                    .consumer
                    .fetch_watermarks(t, *p, Duration::from_secs(5))
                {
                    Ok((_, high)) => {
                        self.others.insert(key, (i64::MIN, high));
                    }
                    Err(_) => return false,
                }
            }
        }
        self.others.retain(|k, _| unassigned.contains(k));
        let Ok(starts) = self.consumer.context().resolver.resolve(&unassigned) else {
            return false;
        };
        for (k, (w, _)) in self.others.iter_mut() {
            *w = starts.get(k).and_then(|s| s.committed).unwrap_or(0);
        }
        self.others.values().all(|(w, end)| w >= end)
    }

    /// The assigned partitions as the watchdog and the progress reporter see them.
    fn part_views(&self) -> Vec<PartView> {
        let wm = self.consumer.context().watermarks();
        let mut views: Vec<PartView> = self
            .parts
            .iter()
            .map(|((t, p), s)| PartView {
                topic: t.clone(),
                partition: *p,
                table: s.table,
                next: s.next,
                end: s.end,
                high: wm.get(&(t.clone(), *p)).map(|w| w.1),
            })
            .collect();
        // Partitions of other members that an --until-end run waits for: their table's W.
        for ((t, p), (w, end)) in &self.others {
            if *w == i64::MIN || self.parts.contains_key(&(t.clone(), *p)) {
                continue;
            }
            views.push(PartView {
                topic: t.clone(),
                partition: *p,
                table: self.topic_table.get(t).copied().unwrap_or(0),
                next: *w,
                end: Some(*end),
                high: None,
            });
        }
        views
    }

    /// One look of the no-progress watchdog ([`crate::watch`]) and the progress reporter.
    /// At most once per [`WATCH_EVERY`]: the loop turns every poll batch, and the views clone
    /// a key per assigned partition (thousands with a wide fan-out).
    pub(super) fn watch_tick(&mut self) -> Result<(), ArchiveError> {
        let now = Instant::now();
        if now.saturating_duration_since(self.last_watch) < WATCH_EVERY {
            return Ok(());
        }
        self.last_watch = now;
        let views = self.part_views();
        self.progress.tick(now, &views, &self.cfg.metrics);
        let waited = self.watch.observe(now, self.cfg.until_end, &views);
        let stalled = self.watch.is_stalled(waited);
        if self.cfg.until_end {
            if stalled {
                return Err(self.stall_error(&views, waited.unwrap_or_default()));
            }
            return Ok(());
        }
        let reason = stalled.then(|| {
            let lagging: Vec<String> = views
                .iter()
                .filter(|v| v.behind())
                .map(|v| wait_line(v).to_string())
                .collect();
            format!(
                "no partition progressed for {} while behind: {}",
                humantime::format_duration(self.watch.timeout()),
                lagging.join("; ")
            )
        });
        if reason.is_some() != self.stalled.is_some() {
            match &reason {
                Some(r) => {
                    tracing::error!(target: LOG_TARGET, group = %self.cfg.group, "stalled: {r}")
                }
                None => {
                    tracing::info!(target: LOG_TARGET, group = %self.cfg.group, "progressing again")
                }
            }
            self.cfg.metrics.set_stalled(reason.is_some());
            match &reason {
                Some(r) => self
                    .cfg
                    .metrics
                    .health()
                    .set_unhealthy(format!("stalled: {r}")),
                None => self.cfg.metrics.health().set_healthy(),
            }
        }
        self.stalled = reason;
        Ok(())
    }

    /// The `--until-end` stall error: every partition of the topics, where it is, whether this
    /// member holds it.
    fn stall_error(&self, views: &[PartView], waited: Duration) -> ArchiveError {
        let mut lines: Vec<PartitionWait> = views
            .iter()
            .filter(|v| v.behind() && self.parts.contains_key(&(v.topic.clone(), v.partition)))
            .map(wait_line)
            .collect();
        let mut unassigned: Vec<(String, i32)> = Vec::new();
        let mut metadata_error = None;
        for topic in self.topic_table.keys() {
            match self.unheld_partitions(topic) {
                Ok(unheld) => unassigned.extend(unheld),
                Err(e) => metadata_error = Some(e),
            }
        }
        unassigned.sort();
        let committed = self
            .consumer
            .context()
            .resolver
            .resolve(&unassigned)
            .unwrap_or_default();
        let mut waiting_elsewhere = 0usize;
        let mut done_elsewhere = 0usize;
        for (t, p) in &unassigned {
            let high = self
                .consumer
                .fetch_watermarks(t, *p, Duration::from_secs(2))
                .ok()
                .map(|w| w.1);
            let committed = committed.get(&(t.clone(), *p)).and_then(|s| s.committed);
            // Archived to the broker's end by whoever held it: nothing to wait for.
            if matches!((committed, high), (Some(c), Some(h)) if c >= h) {
                done_elsewhere += 1;
                continue;
            }
            waiting_elsewhere += 1;
            lines.push(PartitionWait::Unassigned {
                topic: t.clone(),
                partition: *p,
                committed,
                high,
            });
        }
        let hint = stall_hint(
            &self.cfg.group,
            done_elsewhere,
            waiting_elsewhere,
            metadata_error,
            lines.is_empty(),
        );
        ArchiveError::Stalled {
            group: self.cfg.group.clone(),
            waited,
            partitions: lines
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            hint,
        }
    }
}

/// How the stall error and `/healthz` show one assigned partition.
fn wait_line(v: &PartView) -> PartitionWait {
    PartitionWait::Assigned {
        topic: v.topic.clone(),
        partition: v.partition,
        next: v.next,
        end: v.end,
        high: v.high,
    }
}

/// The hint of the `--until-end` stall error: partitions others archived already, why others
/// may hold the rest, a metadata request that failed, topics without partitions.
fn stall_hint(
    group: &str,
    done_elsewhere: usize,
    waiting_elsewhere: usize,
    metadata_error: Option<String>,
    no_partition: bool,
) -> String {
    let mut hint = String::new();
    if done_elsewhere > 0 {
        hint.push_str(&format!(
            "{done_elsewhere} partition(s) not assigned to this member are archived to their end already. "
        ));
    }
    if waiting_elsewhere > 0 {
        hint.push_str(&format!(
            "A member killed without leaving the group holds its partitions until its session times out \
             (session.timeout.ms, {} ms by default); another live member of group {} may hold them. \
             A static member (--instance-id) takes its own back at once when it restarts.",
            DEFAULT_SESSION_TIMEOUT_MS, group
        ));
    }
    if let Some(e) = metadata_error {
        hint.push_str(&format!(
            " The broker did not answer a metadata request: {e}."
        ));
    }
    if no_partition {
        hint.push_str(" No partition of the topics is known (do they exist?).");
    }
    hint.trim().to_string()
}
