//! A commit round (I2, I4): every open file is flushed, then the dead letters are committed,
//! then the route tables, then each table with its W and R — in that order, so that whatever a
//! table's W covers is already in the dead-letter and route tables.

use std::collections::HashMap;
use std::time::Instant;

use loglake_lake::{OffsetAdvance, resume_app_id};

use super::offsets::{PartState, dead_letter_end};
use super::output::{Committed, Conflict};
use super::settings::ArchiveReport;
use super::{Archiver, LOG_TARGET};
use crate::error::ArchiveError;
use crate::etl::{filtered_info, moved_info};
use crate::metrics::ArchiverMetrics;

/// The partitions with new records since their last commit.
type Advanced = [((String, i32), PartState)];

/// One step of a commit round.
type Step = fn(&mut Archiver, &Advanced) -> Result<Option<Conflict>, ArchiveError>;

/// Counts a commit that went through (every table, route and dead-letter commit is one).
fn count(
    round: Result<Committed, Conflict>,
    report: &mut ArchiveReport,
    metrics: &ArchiverMetrics,
) -> Result<Committed, Conflict> {
    if round.is_ok() {
        report.commits += 1;
        metrics.commits.inc();
    }
    round
}

impl Archiver {
    /// Flushes everything and commits: dead letters first, then the route tables, then each
    /// table (I2, I4).
    pub(super) fn commit_all(&mut self) -> Result<(), ArchiveError> {
        let flush_started = Instant::now();
        self.flush_all()?;
        let advanced: Vec<((String, i32), PartState)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.advanced())
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        if advanced.is_empty() {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let steps: [Step; 3] = [
            Self::commit_dead_letters,
            Self::commit_routes,
            Self::commit_tables,
        ];
        for step in steps {
            if let Some(Conflict { table, partitions }) = step(self, &advanced)? {
                return self.on_conflict(table, partitions);
            }
        }
        self.commit_kafka_offsets();
        self.cfg.metrics.observe_flush(flush_started.elapsed());
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Closes and uploads every open file; stateful decoders keep their partial lines (R
    /// handles them).
    fn flush_all(&mut self) -> Result<(), ArchiveError> {
        let (handle, metrics) = (&self.handle, &self.cfg.metrics);
        for t in &mut self.tables {
            t.out.flush(handle, metrics)?;
            for r in &mut t.routes {
                r.out.flush(handle, metrics)?;
            }
        }
        if let Some(d) = &mut self.dlq {
            d.flush(handle, metrics)?;
        }
        Ok(())
    }

    /// The dead letters, with D for every advanced partition ([`dead_letter_end`]).
    fn commit_dead_letters(
        &mut self,
        advanced: &Advanced,
    ) -> Result<Option<Conflict>, ArchiveError> {
        let Some(d) = &mut self.dlq else {
            return Ok(None);
        };
        if !d.has_pending() {
            return Ok(None);
        }
        let offsets: Vec<OffsetAdvance> = advanced
            .iter()
            .map(|((t, p), s)| OffsetAdvance {
                topic: t.clone(),
                partition: *p,
                from: s.start.dead_letters,
                to: dead_letter_end(&s.start, s.next),
            })
            .collect();
        let round = d.commit(&self.handle, &offsets, Vec::new(), HashMap::new())?;
        let c = match count(round, &mut self.report, &self.cfg.metrics) {
            Ok(c) => c,
            Err(conflict) => return Ok(Some(conflict)),
        };
        self.cfg.metrics.dead_letters_committed.inc_by(c.rows);
        tracing::info!(target: LOG_TARGET, table = %d.sink.name(), version = c.version, rows = c.rows, files = c.files, "committed dead letters");
        for o in &offsets {
            if let Some(ps) = self.parts.get_mut(&(o.topic.clone(), o.partition)) {
                ps.start.dead_letters = Some(o.to);
            }
        }
        Ok(None)
    }

    /// Route tables next, before their source tables: a routed row below the source's W is in
    /// its route table (their W never goes back, as D).
    fn commit_routes(&mut self, advanced: &Advanced) -> Result<Option<Conflict>, ArchiveError> {
        for ti in 0..self.tables.len() {
            let source = self.tables[ti].target.name.clone();
            for r in &mut self.tables[ti].routes {
                if !r.out.has_pending() {
                    continue;
                }
                let offsets: Vec<OffsetAdvance> = advanced
                    .iter()
                    .filter(|(_, s)| s.table == ti)
                    .map(|((t, p), s)| {
                        let from = r.committed.get(&(t.clone(), *p)).copied().flatten();
                        OffsetAdvance {
                            topic: t.clone(),
                            partition: *p,
                            from,
                            to: from.map_or(s.next, |w| w.max(s.next)),
                        }
                    })
                    .collect();
                let round = r
                    .out
                    .commit(&self.handle, &offsets, Vec::new(), HashMap::new())?;
                let c = match count(round, &mut self.report, &self.cfg.metrics) {
                    Ok(c) => c,
                    Err(conflict) => return Ok(Some(conflict)),
                };
                self.cfg.metrics.add_etl_routed(&source, &r.name, c.rows);
                *self
                    .report
                    .rows_routed
                    .entry(format!("{source}/{}", r.name))
                    .or_insert(0) += c.rows;
                tracing::info!(target: LOG_TARGET, table = %r.name, source = %source, version = c.version, rows = c.rows, files = c.files, "committed routed rows");
                for o in &offsets {
                    r.committed
                        .insert((o.topic.clone(), o.partition), Some(o.to));
                }
            }
        }
        Ok(None)
    }

    /// Each table with new records: its files, W and R per partition, and the offsets the
    /// filter dropped or routes moved (commit info), in one commit.
    fn commit_tables(&mut self, advanced: &Advanced) -> Result<Option<Conflict>, ArchiveError> {
        for ti in 0..self.tables.len() {
            let mine: Vec<&((String, i32), PartState)> =
                advanced.iter().filter(|(_, s)| s.table == ti).collect();
            if mine.is_empty() {
                continue;
            }
            let t = &mut self.tables[ti];
            let name = t.target.name.clone();
            let mut offsets = Vec::new();
            let mut resumes = Vec::new();
            for ((topic, p), s) in &mine {
                offsets.push(OffsetAdvance {
                    topic: topic.clone(),
                    partition: *p,
                    from: s.start.committed,
                    to: s.next,
                });
                let pending = t.decoder.pending_min_offset(topic, *p);
                let r = pending.map_or(s.next, |o| o.min(s.next));
                resumes.push((resume_app_id(&name, topic, *p), r));
            }
            // The offsets the filter dropped go into the same commit as the W they are below.
            let mut info = filtered_info(&t.pending_filtered, t.pending_filtered_rows);
            info.extend(moved_info(&t.pending_moved));
            let round = t
                .out
                .commit(&self.handle, &offsets, resumes.clone(), info)?;
            let c = match count(round, &mut self.report, &self.cfg.metrics) {
                Ok(c) => c,
                Err(conflict) => return Ok(Some(conflict)),
            };
            self.report.files += c.files as u64;
            self.report.rows_written += c.rows;
            self.cfg.metrics.rows_written.inc_by(c.rows);
            tracing::info!(target: LOG_TARGET, table = %name, version = c.version, attempts = c.attempts, rows = c.rows, filtered = t.pending_filtered_rows, files = c.files, "committed");
            self.report.rows_filtered += t.pending_filtered_rows;
            t.pending_filtered_rows = 0;
            t.pending_filtered.clear();
            t.pending_moved.clear();
            for (o, (_, r)) in offsets.iter().zip(&resumes) {
                if let Some(ps) = self.parts.get_mut(&(o.topic.clone(), o.partition)) {
                    ps.start.committed = Some(o.to);
                    ps.start.resume = Some(*r);
                }
                self.report
                    .offsets
                    .insert(format!("{name}/{}/{}", o.topic, o.partition), o.to);
            }
        }
        Ok(None)
    }
}
