//! The archive loop: Kafka → decode → partitioned Parquet → Delta commit with offsets.
//!
//! Runs on one dedicated (non-runtime) thread: polling, decoding and Parquet encoding are
//! blocking/CPU work; object-store I/O is driven through a tokio [`Handle`]. See DESIGN.md
//! (I2–I4) for the invariants; the code that enforces them is marked `// I2`, `// I3`, `// I4`.
//!
//! Offsets (per table, topic, partition), all kept as Delta `txn` actions:
//! - `W` (app id [`app_id`](loglake_lake::app_id)): every record with offset < W has been committed (as a row of the
//!   table or a dead letter). A record is written to the table only if its offset ≥ W.
//! - `R` (app id + `:resume`): where to seek on start, ≤ W; below W only when a CRI/docker partial
//!   line was still buffered at commit time, so its fragments are read again to rebuild it.
//! - `D` (dead-letter table, app id for the same topic/partition): bad records with offset
//!   ≥ max(W, D) go to the dead-letter table, which is committed *before* the table, so every
//!   bad record below W is already there.
//!
//! Where the parts are: [`settings`] (what a run is given and reports), [`consumer`] (Kafka:
//! settings, the rebalance callback, group events, watermarks, lag), [`offsets`] (W, R and D,
//! per-partition state, conflicts), [`ingest`] (poll batch → decoded, filtered rows),
//! [`output`] (the tables being written and the memory budget), [`commit`] (the commit round),
//! [`dead_letters`], [`late`] (late-row counting), [`watchdog`] (stall watch, `--until-end`).

mod commit;
mod consumer;
mod dead_letters;
mod ingest;
mod late;
mod offsets;
mod output;
mod settings;
mod watchdog;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::runtime::Handle;

pub use consumer::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_MAX_POLL_INTERVAL_MS, DEFAULT_SESSION_TIMEOUT_MS,
    DEFAULT_WATERMARK_TIMEOUT, consumer_config, watermark_retry_fits, watermark_retry_pause,
};
pub use late::{DEFAULT_LATE_AFTER, count_late};
pub use offsets::{StartOffsets, dead_letter_end};
pub use settings::{
    ArchiveConfig, ArchiveReport, DEFAULT_SHUTDOWN_TIMEOUT, POLL_BATCH_BYTES_CAP, TableTarget,
    default_poll_batch_bytes, name_from_url,
};

use crate::error::ArchiveError;
use crate::watch::StallWatch;
use consumer::{ArchiverContext, create_consumer, poll_batch};
use offsets::{OffsetResolver, PartState};
use output::{Output, TableState, open_dead_letters};
use watchdog::{OTHERS_CHECK_EVERY, WATCH_EVERY};

/// The target of the archive loop's log lines (`loglake_archiver::archive: committed …`), the
/// same in every part of this module: operators' filters and the tests read it.
const LOG_TARGET: &str = "loglake_archiver::archive";

pub struct Archiver {
    cfg: ArchiveConfig,
    handle: Handle,
    consumer: Arc<BaseConsumer<ArchiverContext>>,
    tables: Vec<TableState>,
    dlq: Option<Output>,
    topic_table: HashMap<String, usize>,
    parts: BTreeMap<(String, i32), PartState>,
    report: ArchiveReport,
    last_commit: Instant,
    assigned_once: bool,
    watch: StallWatch,
    /// `--until-end`: partitions other members hold → (their table's W, the end this run waits
    /// for); see [`Archiver::others_done`].
    others: BTreeMap<(String, i32), (i64, i64)>,
    last_others_check: Instant,
    last_watch: Instant,
    progress: crate::progress::Reporter,
    /// The reason `/healthz` is unhealthy (continuous mode), as last reported.
    stalled: Option<String>,
}

/// Creates the folders of the local tables this run writes (tables, route tables, dead
/// letters); `resolve` only names them, so that a run stopped by a configuration or broker
/// check creates nothing.
fn create_local_folders(cfg: &ArchiveConfig) -> Result<(), ArchiveError> {
    let urls = cfg
        .tables
        .iter()
        .flat_map(|t| std::iter::once(&t.url).chain(t.route_urls.iter()))
        .chain(cfg.dlq.iter());
    for url in urls.filter(|u| u.scheme() == "file") {
        let Ok(path) = url.to_file_path() else {
            continue;
        };
        std::fs::create_dir_all(&path).map_err(|e| {
            ArchiveError::Lake(loglake_lake::LakeError::Location {
                location: path.display().to_string(),
                reason: format!("creating it: {e}"),
            })
        })?;
    }
    Ok(())
}

impl Archiver {
    /// Opens (or creates) the tables and subscribes to the topics.
    pub fn new(cfg: ArchiveConfig, handle: Handle) -> Result<Self, ArchiveError> {
        if cfg.tables.is_empty() {
            return Err(ArchiveError::Config("no table to archive".into()));
        }
        create_local_folders(&cfg)?;
        let mut topic_table = HashMap::new();
        let mut tables = Vec::new();
        for (i, t) in cfg.tables.iter().enumerate() {
            let table = TableState::open(t, &cfg, &handle)?;
            for topic in &t.topics {
                if topic_table.insert(topic.clone(), i).is_some() {
                    return Err(ArchiveError::Config(format!(
                        "topic {topic} is routed to two tables"
                    )));
                }
            }
            tables.push(table);
        }
        let dlq = match &cfg.dlq {
            Some(url) => Some(open_dead_letters(url, &cfg, &handle)?),
            None => None,
        };
        let resolver = OffsetResolver::new(&cfg, handle.clone());
        let topics: Vec<&str> = topic_table.keys().map(String::as_str).collect();
        let consumer = create_consumer(&cfg, resolver, &topics)?;
        let stall_timeout = cfg.stall_timeout;
        let until_end = cfg.until_end;
        let table_names = cfg.tables.iter().map(|t| t.name.clone()).collect();
        Ok(Archiver {
            cfg,
            handle,
            consumer: Arc::new(consumer),
            tables,
            dlq,
            topic_table,
            parts: BTreeMap::new(),
            report: ArchiveReport::default(),
            last_commit: Instant::now(),
            assigned_once: false,
            watch: StallWatch::new(stall_timeout),
            others: BTreeMap::new(),
            last_watch: Instant::now()
                .checked_sub(WATCH_EVERY)
                .unwrap_or_else(Instant::now),
            last_others_check: Instant::now()
                .checked_sub(OTHERS_CHECK_EVERY)
                .unwrap_or_else(Instant::now),
            progress: crate::progress::Reporter::new(until_end, table_names),
            stalled: None,
        })
    }

    /// Runs until `--until-end` is reached or shutdown is requested; commits before returning.
    pub fn run(mut self) -> Result<ArchiveReport, ArchiveError> {
        self.run_to_end()
    }

    /// Runs until `--until-end` is reached or shutdown is requested, leaving the consumer open:
    /// dropping the archiver afterwards closes it (leaves the group), which can block while
    /// the broker does not answer ([`crate::run_archiver`] bounds that wait).
    pub fn run_to_end(&mut self) -> Result<ArchiveReport, ArchiveError> {
        let result = self.run_loop();
        // what librdkafka repeated since its last line of each kind
        crate::kafka_log::summarise(&self.consumer.context().kafka_log);
        result.map(|_| self.report.clone())
    }

    fn run_loop(&mut self) -> Result<(), ArchiveError> {
        let max_batch_bytes = self.cfg.batch_bytes.max(1);
        loop {
            if self.cfg.shutdown.load(Ordering::Relaxed) {
                tracing::info!("shutdown requested: flushing and committing");
                self.commit_all()?;
                return Ok(());
            }
            // A local handle, so the borrowed messages do not borrow `self`.
            let consumer = self.consumer.clone();
            let mut batch = poll_batch(&consumer, self.cfg.batch_records, max_batch_bytes);
            let events = consumer.context().take();
            if !events.is_empty() {
                // A rebalance is served inside `poll`, which then returns no message (rdkafka
                // returns `EventConsumed` for a finite timeout), and `poll_batch` stops at the
                // first poll after which events are pending. So every message in `batch` was
                // fetched under the *old* assignment: drop them all; the new owner (possibly us)
                // re-reads them from the offsets in the tables, so nothing is lost.
                batch.clear();
                self.handle_events(events)?;
            }
            self.process(&batch)?;
            drop(batch);

            let age_due = self.last_commit.elapsed() >= self.cfg.policy.max_file_age;
            if age_due && self.dirty() {
                self.commit_all()?;
                self.watch.progressed(Instant::now());
            }
            self.enforce_budget()?;
            self.cfg.metrics.buffered_bytes.set(self.buffered_bytes());
            self.update_lag();

            if self.cfg.until_end
                && self.assigned_once
                && self.parts.values().all(PartState::done)
                && self.last_others_check.elapsed() >= OTHERS_CHECK_EVERY
            {
                self.commit_all()?;
                self.last_others_check = Instant::now();
                if self.others_done() {
                    self.progress.finish();
                    return Ok(());
                }
            }
            self.watch_tick()?;
        }
    }

    /// Whether any partition has records not yet committed.
    fn dirty(&self) -> bool {
        self.parts.values().any(PartState::advanced)
    }
}
