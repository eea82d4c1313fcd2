//! Progress of an `--until-end` run for operators: a line per table every
//! [`LOG_EVERY`] (records remaining to the frozen ends, partitions done), and a progress bar
//! instead when stderr is a terminal. The records-remaining gauge is set in both modes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::ArchiverMetrics;
use crate::watch::{PartView, progress};

/// How often an `--until-end` run logs its progress when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Reporter {
    until_end: bool,
    tables: Vec<String>,
    last_log: Option<Instant>,
    bar: Option<ProgressBar>,
    /// Position of each partition when the reporter first saw it (the bar counts from there).
    first: HashMap<(String, i32), i64>,
}

impl Reporter {
    pub fn new(until_end: bool, tables: Vec<String>) -> Self {
        let bar = (until_end && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} archiving [{bar:30}] {human_pos}/{human_len} records ({per_sec}, eta {eta}) {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Reporter {
            until_end,
            tables,
            last_log: None,
            bar,
            first: HashMap::new(),
        }
    }

    fn table_name(&self, i: usize) -> &str {
        self.tables.get(i).map_or("?", String::as_str)
    }

    /// Updates the gauge, the bar, and logs a line per table when [`LOG_EVERY`] has passed.
    pub fn tick(&mut self, now: Instant, views: &[PartView], metrics: &ArchiverMetrics) {
        let per_table = progress(views);
        for (i, p) in &per_table {
            metrics.set_records_remaining(self.table_name(*i), p.remaining);
        }
        if !self.until_end {
            return;
        }
        for v in views {
            self.first
                .entry((v.topic.clone(), v.partition))
                .or_insert(v.next);
        }
        if let Some(bar) = &self.bar {
            let done: u64 = views
                .iter()
                .map(|v| {
                    let from = self.first.get(&(v.topic.clone(), v.partition));
                    (v.next - from.copied().unwrap_or(v.next)).max(0) as u64
                })
                .sum();
            let remaining: u64 = per_table.values().map(|p| p.remaining).sum();
            bar.set_length(done + remaining);
            bar.set_position(done);
            let parts: usize = per_table.values().map(|p| p.partitions).sum();
            let parts_done: usize = per_table.values().map(|p| p.partitions_done).sum();
            bar.set_message(format!("{parts_done}/{parts} partitions done"));
            return;
        }
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            return;
        }
        self.last_log = Some(now);
        if per_table.is_empty() {
            tracing::info!("progress: no partition assigned yet");
        }
        for (i, p) in &per_table {
            tracing::info!(
                table = self.table_name(*i),
                records_remaining = p.remaining,
                partitions_done = p.partitions_done,
                partitions = p.partitions,
                "progress to the frozen ends"
            );
        }
    }

    /// Clears the bar at the end of the run.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
