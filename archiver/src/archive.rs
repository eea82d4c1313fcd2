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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use loglake_lake::{CommitOutcome, DeltaSink, OffsetAdvance, read_offsets, resume_app_id};
use loglake_schemas::{
    DecoderOptions, RawRecord, RecordError, TableKind, decoder_for, table_schema,
};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use url::Url;

use crate::error::ArchiveError;
use crate::etl::{Etl, EtlSpec, filtered_info, moved_info};
use crate::metrics::ArchiverMetrics;
use crate::watch::{PartView, PartitionWait, StallWatch};
use crate::writer::{ClosedFile, PartitionKey, RollPolicy, WriterSet, budget_victims};

/// A record that failed to decode, its raw payload and Kafka timestamp (ms).
type DeadLetter = (RecordError, Option<Vec<u8>>, Option<i64>);
/// Kafka headers of one record, borrowed.
type HeaderList<'a> = Vec<(&'a str, Option<&'a [u8]>)>;
/// A table's URL and the partitions to read offsets for.
type TablePartitions<'a> = (&'a Url, Vec<(String, i32)>);

/// One table the archiver writes.
#[derive(Debug, Clone)]
pub struct TableTarget {
    pub name: String,
    pub url: Url,
    pub topics: Vec<String>,
    pub decoder: String,
    pub partition_by: Vec<String>,
    pub bloom_filter_columns: Vec<String>,
    /// Roll this table's files at this size instead of the run's `--target-file-size` (the
    /// table definition's `target_file_size_bytes`; see `RollPolicy::for_table`).
    pub target_file_bytes: Option<u64>,
    /// Copy the fields of JSON messages into `attrs` too (the table option of that name).
    pub json_message_attrs: bool,
    /// Archive-time filter, derived columns and redactions ([`crate::etl`]).
    pub etl: EtlSpec,
    /// The table definition's file (for errors), if any.
    pub definition: Option<std::path::PathBuf>,
    /// The URL of each `[[route]]` table, in the definition's order (in the lake, next to it).
    pub route_urls: Vec<Url>,
}

impl TableTarget {
    /// A decoder for this table: the archiver's decoder options with the table's own.
    pub fn decoder(
        &self,
        options: &DecoderOptions,
    ) -> Result<Box<dyn loglake_schemas::Decoder>, ArchiveError> {
        let options = DecoderOptions {
            json_message_attrs: self.json_message_attrs,
            ..options.clone()
        };
        Ok(decoder_for(&self.decoder, &options)?)
    }

    /// The table's compiled ETL (None without one); a definition that cannot work is a
    /// configuration error naming the table, the key and the reason.
    pub fn compile_etl(&self, options: &DecoderOptions) -> Result<Option<Arc<Etl>>, ArchiveError> {
        if self.etl.is_empty() {
            return Ok(None);
        }
        let schema = self.decoder(options)?.schema();
        Etl::compile(
            &self.name,
            self.definition.as_deref(),
            &self.etl,
            schema,
            &self.partition_by,
        )
        .map(|e| Some(Arc::new(e)))
        .map_err(|e| ArchiveError::Config(e.to_string()))
    }
}

/// Everything `loglake archive` needs, resolved from flags, environment and file.
#[derive(Clone)]
pub struct ArchiveConfig {
    pub brokers: String,
    pub group: String,
    /// Passed through to librdkafka (`-X key=value`).
    pub kafka_properties: Vec<(String, String)>,
    pub tables: Vec<TableTarget>,
    pub dlq: Option<Url>,
    pub until_end: bool,
    pub storage_options: HashMap<String, String>,
    pub decoder_options: DecoderOptions,
    pub policy: RollPolicy,
    /// Decode and write at most this many records at a time.
    pub batch_records: usize,
    /// … and at most this many payload bytes ([`default_poll_batch_bytes`]).
    pub batch_bytes: u64,
    /// Set to stop (SIGTERM): flush and commit, then return.
    pub shutdown: Arc<AtomicBool>,
    /// Static group membership (`group.instance.id`): a restarted member with the same id
    /// takes its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// No progress for this long: `--until-end` fails ([`ArchiveError::Stalled`]), continuous
    /// mode turns `/healthz` unhealthy ([`crate::watch`]).
    pub stall_timeout: Duration,
    /// How long a partition's watermark read may keep failing (retried) before the run fails.
    pub watermark_timeout: Duration,
    /// A row is *late* when its record reached Kafka more than this after the row's event time
    /// ([`count_late`]); late rows still go to their event-time partition and are counted.
    pub late_after: Duration,
    /// After SIGTERM/SIGINT, how long the flush and commit may take before the process exits
    /// without them (`loglake archive` only; see `run` in lib.rs).
    pub shutdown_timeout: Duration,
    pub metrics: Arc<ArchiverMetrics>,
}

impl std::fmt::Debug for ArchiveConfig {
    // Storage options and Kafka properties may hold credentials: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("instance_id", &self.instance_id)
            .field("tables", &self.tables)
            .field("dlq", &self.dlq)
            .field("until_end", &self.until_end)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ArchiveReport {
    pub records_in: u64,
    pub bytes_in: u64,
    pub rows_written: u64,
    /// Rows whose record reached Kafka more than `--late-after` after their event time.
    pub late_rows: u64,
    pub dead_letters: u64,
    /// Rows the archive-time filters dropped (committed: their offsets advanced).
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_filtered: u64,
    /// Redactions applied, per `table/pattern` (left out when none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redactions: BTreeMap<String, u64>,
    /// Records an archive-time expression failed on (also counted in `dead_letters`).
    #[serde(skip_serializing_if = "is_zero")]
    pub etl_failures: u64,
    /// Rows committed to route tables, per `table/route_table` (left out when none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rows_routed: BTreeMap<String, u64>,
    pub files: u64,
    pub commits: u64,
    pub conflicts: u64,
    pub rebalances: u64,
    /// (table, topic, partition) → next offset committed.
    pub offsets: BTreeMap<String, i64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// ------------------------------------------------------------------------------------------------
// Offsets from the tables, for the rebalance callback
// ------------------------------------------------------------------------------------------------

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

/// The default payload bytes of one poll batch for a memory budget. A poll batch, its decoded
/// rows and their per-partition copies (≈ 3× its payload) are outside the budget, so they are
/// bounded in bytes too, not only in records (DESIGN.md, "Memory").
pub fn default_poll_batch_bytes(memory_budget: u64) -> u64 {
    (memory_budget / 8).clamp(1 << 20, POLL_BATCH_BYTES_CAP)
}

/// Upper end of [`default_poll_batch_bytes`].
pub const POLL_BATCH_BYTES_CAP: u64 = 32 << 20;

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

struct OffsetResolver {
    handle: Handle,
    storage_options: HashMap<String, String>,
    /// topic → (table name, url)
    tables: HashMap<String, (String, Url)>,
    dlq: Option<(String, Url)>,
}

impl OffsetResolver {
    // I2: offsets come from the tables, never from Kafka's committed offsets.
    fn resolve(
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

// ------------------------------------------------------------------------------------------------
// Consumer context: assignment with offsets from the tables
// ------------------------------------------------------------------------------------------------

enum GroupEvent {
    Assigned(Vec<((String, i32), StartOffsets)>),
    Revoked,
    Failed(String),
}

struct ArchiverContext {
    resolver: OffsetResolver,
    events: Mutex<Vec<GroupEvent>>,
    /// (low, high) watermarks per (topic, partition), from librdkafka's statistics: the source
    /// of the consumer-lag gauge (high − W).
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
}

impl ArchiverContext {
    fn push(&self, e: GroupEvent) {
        match self.events.lock() {
            Ok(mut g) => g.push(e),
            Err(p) => p.into_inner().push(e),
        }
    }
    fn take(&self) -> Vec<GroupEvent> {
        match self.events.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl ClientContext for ArchiverContext {
    // Served inside `poll` every `statistics.interval.ms`; only the watermarks are kept.
    fn stats(&self, stats: Statistics) {
        let mut fresh = Vec::new();
        for (topic, t) in stats.topics {
            for (p, s) in t.partitions {
                // librdkafka lists an internal partition -1 and reports -1 until it knows.
                if p >= 0 && s.hi_offset >= 0 {
                    fresh.push(((topic.clone(), p), (s.lo_offset.max(0), s.hi_offset)));
                }
            }
        }
        let mut g = match self.watermarks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.extend(fresh);
    }
}

impl ConsumerContext for ArchiverContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                match self.resolver.resolve(&parts) {
                    Ok(starts) => {
                        let mut assigned = Vec::new();
                        for (t, p) in &parts {
                            let s = starts.get(&(t.clone(), *p)).copied().unwrap_or_default();
                            let offset = match s.seek() {
                                Some(o) => Offset::Offset(o),
                                None => Offset::Beginning,
                            };
                            if let Err(e) = tpl.set_partition_offset(t, *p, offset) {
                                self.push(GroupEvent::Failed(format!(
                                    "setting offset of {t}[{p}]: {e}"
                                )));
                            }
                            assigned.push(((t.clone(), *p), s));
                        }
                        if let Err(e) = consumer.assign(tpl) {
                            self.push(GroupEvent::Failed(format!("assign: {e}")));
                        }
                        self.push(GroupEvent::Assigned(assigned));
                    }
                    Err(e) => {
                        // Do not consume from positions we could not read: leave the
                        // partitions unassigned and stop.
                        let _ = consumer.assign(&TopicPartitionList::new());
                        self.push(GroupEvent::Failed(format!(
                            "reading offsets from the tables: {e}"
                        )));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let _ = consumer.unassign();
                self.push(GroupEvent::Revoked);
            }
            other => {
                let _ = consumer.unassign();
                self.push(GroupEvent::Failed(format!("rebalance error: {other:?}")));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct PartState {
    table: usize,
    start: StartOffsets,
    /// Next offset to read (position).
    next: i64,
    /// Frozen end for `--until-end` (high watermark at assignment).
    end: Option<i64>,
}

impl PartState {
    fn floor(&self) -> i64 {
        self.start.committed.unwrap_or(i64::MIN)
    }
    fn dlq_floor(&self) -> i64 {
        self.floor()
            .max(self.start.dead_letters.unwrap_or(i64::MIN))
    }
    fn done(&self) -> bool {
        matches!(self.end, Some(e) if self.next >= e)
    }
}

struct TableState {
    target: TableTarget,
    decoder: Box<dyn loglake_schemas::Decoder>,
    etl: Option<Arc<Etl>>,
    writers: WriterSet,
    sink: DeltaSink,
    pending: Vec<Add>,
    pending_rows: u64,
    /// Offsets the filter left without a row since the last commit, per (topic, partition):
    /// recorded in the next commit's info ([`filtered_info`]).
    pending_filtered: BTreeMap<(String, i32), Vec<i64>>,
    pending_filtered_rows: u64,
    /// Offsets whose rows all moved to route tables since the last commit (commit info, too).
    pending_moved: BTreeMap<(String, i32), Vec<i64>>,
    routes: Vec<RouteState>,
}

/// A `[[route]]` table of one source table: its own writers, and its own W per source
/// partition (txn actions in the route table), committed before the source table, like the
/// dead letters' D (DESIGN.md, "Archive-time ETL").
struct RouteState {
    name: String,
    writers: WriterSet,
    sink: DeltaSink,
    pending: Vec<Add>,
    pending_rows: u64,
    /// W of the route table per source (topic, partition): routed rows below are in it.
    committed: HashMap<(String, i32), Option<i64>>,
}

impl RouteState {
    fn floor(&self, topic: &str, partition: i32) -> i64 {
        self.committed
            .get(&(topic.to_string(), partition))
            .copied()
            .flatten()
            .unwrap_or(i64::MIN)
    }
}

struct DlqState {
    writers: WriterSet,
    sink: DeltaSink,
    pending: Vec<Add>,
    pending_rows: u64,
}

pub struct Archiver {
    cfg: ArchiveConfig,
    handle: Handle,
    consumer: Arc<BaseConsumer<ArchiverContext>>,
    tables: Vec<TableState>,
    dlq: Option<DlqState>,
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

fn kafka_err(context: &str) -> impl FnOnce(KafkaError) -> ArchiveError + '_ {
    move |source| ArchiveError::Kafka {
        context: context.to_string(),
        source,
    }
}

/// Timeout of one watermark request (`ListOffsets`); the whole read may take up to
/// [`ArchiveConfig::watermark_timeout`], retried.
const WATERMARK_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `session.timeout.ms`: a member killed without leaving the group (SIGKILL, OOM kill, a lost
/// node) holds its partitions until the coordinator has not heard from it for this long; then
/// the group rebalances and a restarted archiver gets them. librdkafka's default is 45 s; 15 s
/// bounds a same-group restart (README, "Operations") and is within every broker's default
/// `group.min/max.session.timeout.ms` (6 s .. 30 min).
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 15_000;
/// `heartbeat.interval.ms`: a third of the session timeout, as Kafka recommends.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 3_000;
/// `max.poll.interval.ms`: the archive loop polls at least every 200 ms except while a commit
/// uploads and commits (bounded by the store's retries); 5 min, librdkafka's default.
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u32 = 300_000;

/// The archiver's fetch settings for librdkafka (before `-X` properties, which override them):
/// offsets only from the tables (no auto commit), a bounded prefetch, and the group timeouts
/// above. The archive bench's fetch-only stage uses them too, so it measures the fetch the
/// archiver does.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("session.timeout.ms", DEFAULT_SESSION_TIMEOUT_MS.to_string())
        .set(
            "heartbeat.interval.ms",
            DEFAULT_HEARTBEAT_INTERVAL_MS.to_string(),
        )
        .set(
            "max.poll.interval.ms",
            DEFAULT_MAX_POLL_INTERVAL_MS.to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Bounded prefetch: part of the archiver's fixed memory overhead (DESIGN.md).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.message.max.bytes", "1048576");
    cc
}

/// How often the loop looks at its progress ([`Archiver::watch_tick`]); the stall timeout is at
/// least a second.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How often a `--until-end` run whose own partitions are done checks the others' (a metadata
/// request and a read of the tables' offsets).
const OTHERS_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Default of `--late-after`: an hour, the partition grain of the log tables — a row later than
/// that lands in an hour partition that was already complete when its record arrived.
pub const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(3600);

/// Kafka timestamp (ms) of each (topic, partition, offset).
type KafkaTimes<'a> = HashMap<(&'a str, i32, i64), Option<i64>>;

/// How many rows of `batch` are late: their record (found in `records` by topic, partition and
/// offset) reached Kafka more than `late_after_us` after the row's event time `ts`. `batch`'s
/// rows are a subsequence of `records`, in order (a record may give several rows, or none);
/// rows without a Kafka timestamp, or of a batch without `ts` and the Kafka columns, are not
/// counted.
pub fn count_late(batch: &RecordBatch, records: &[RawRecord<'_>], late_after_us: i64) -> u64 {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
    let schema = batch.schema();
    let (Ok(tsi), Ok(ti), Ok(pi), Ok(oi)) = (
        schema.index_of("ts"),
        schema.index_of("kafka_topic"),
        schema.index_of("kafka_partition"),
        schema.index_of("kafka_offset"),
    ) else {
        return 0;
    };
    let (Some(ts), Some(topics), Some(parts), Some(offs)) = (
        batch
            .column(tsi)
            .as_primitive_opt::<TimestampMicrosecondType>(),
        batch.column(ti).as_string_opt::<i32>(),
        batch.column(pi).as_primitive_opt::<Int32Type>(),
        batch.column(oi).as_primitive_opt::<Int64Type>(),
    ) else {
        return 0;
    };
    let mut late = 0;
    // Rows follow their records, so one forward walk finds each; a row of a record outside
    // `records` (a CRI/docker line completed from an earlier batch's fragment) switches to a
    // lookup table for the rest of the batch.
    let mut j = 0;
    let mut index: Option<KafkaTimes<'_>> = None;
    for r in 0..batch.num_rows() {
        let (t, p, o) = (topics.value(r), parts.value(r), offs.value(r));
        let kafka_ms = match &mut index {
            Some(idx) => idx.get(&(t, p, o)).copied().flatten(),
            None => {
                while j < records.len()
                    && (records[j].offset != o
                        || records[j].partition != p
                        || records[j].topic != t)
                {
                    j += 1;
                }
                match records.get(j) {
                    Some(rec) => rec.timestamp_ms,
                    None => index
                        .insert(
                            records
                                .iter()
                                .map(|x| ((x.topic, x.partition, x.offset), x.timestamp_ms))
                                .collect(),
                        )
                        .get(&(t, p, o))
                        .copied()
                        .flatten(),
                }
            }
        };
        if ts.is_valid(r)
            && let Some(kafka_us) = kafka_ms.and_then(|ms| ms.checked_mul(1000))
            && kafka_us.saturating_sub(ts.value(r)) > late_after_us
        {
            late += 1;
        }
    }
    late
}

/// Default of `--shutdown-timeout`: below Kubernetes' default 30 s grace period, so the archiver
/// says why it stops before the kubelet's SIGKILL would.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// Default of `--watermark-timeout`: how long a partition's watermark read may keep failing
/// before the run fails. A broker busy with a large produce (tansu, right after 2 GB) answered
/// nothing for minutes; a nightly run should wait for it rather than fail.
pub const DEFAULT_WATERMARK_TIMEOUT: Duration = Duration::from_secs(300);

/// Pause after failed attempt `attempt` (1-based) of a watermark read: 1, 2, 4, 8, then 16 s.
pub fn watermark_retry_pause(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.saturating_sub(1).min(4))
}

/// Whether another attempt fits: one started after `pause` must begin before the deadline.
pub fn watermark_retry_fits(elapsed: Duration, pause: Duration, deadline: Duration) -> bool {
    elapsed + pause < deadline
}

/// A partition's (low, high) watermarks, retried with a growing pause
/// ([`watermark_retry_pause`]) for up to `deadline`; the last error is returned, naming topic,
/// partition, attempts and time waited.
fn fetch_watermarks_retrying<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    deadline: Duration,
) -> Result<(i64, i64), ArchiveError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        let request = left.clamp(Duration::from_secs(1), WATERMARK_REQUEST_TIMEOUT);
        match consumer.fetch_watermarks(topic, partition, request) {
            Ok(w) => return Ok(w),
            Err(e) => {
                let pause = watermark_retry_pause(attempt);
                if !watermark_retry_fits(started.elapsed(), pause, deadline) {
                    let context = format!(
                        "fetch_watermarks of {topic}/{partition} ({attempt} attempts in {:.0?}, --watermark-timeout {deadline:?})",
                        started.elapsed()
                    );
                    return Err(kafka_err(&context)(e));
                }
                tracing::warn!(topic, partition, attempt, error = %e, "reading watermarks failed; retrying");
                std::thread::sleep(pause);
                attempt += 1;
            }
        }
    }
}

impl Archiver {
    /// Opens (or creates) the tables and subscribes to the topics.
    pub fn new(cfg: ArchiveConfig, handle: Handle) -> Result<Self, ArchiveError> {
        if cfg.tables.is_empty() {
            return Err(ArchiveError::Config("no table to archive".into()));
        }
        let mut topic_table = HashMap::new();
        let mut tables = Vec::new();
        for (i, t) in cfg.tables.iter().enumerate() {
            let decoder = t.decoder(&cfg.decoder_options)?;
            let etl = t.compile_etl(&cfg.decoder_options)?;
            // Derived columns join the table's schema (additive evolution of an existing table).
            let schema = etl
                .as_ref()
                .map_or_else(|| decoder.schema(), |e| e.output_schema().clone());
            let writers = WriterSet::new(
                schema.clone(),
                &t.partition_by,
                cfg.policy.for_table(t),
                &t.bloom_filter_columns,
            )?;
            let sink = handle.block_on(DeltaSink::open_or_create(
                &t.name,
                &t.url,
                &cfg.storage_options,
                &schema,
                &t.partition_by,
                writers.file_schema().clone(),
            ))?;
            let mut routes = Vec::new();
            if let Some(etl) = &etl {
                for ((name, _), url) in etl.route_tables().into_iter().zip(&t.route_urls) {
                    let schema = etl.output_schema().clone();
                    let writers = WriterSet::new(
                        schema.clone(),
                        &t.partition_by,
                        cfg.policy.for_table(t),
                        &[],
                    )?;
                    let sink = handle.block_on(DeltaSink::open_or_create(
                        &name,
                        url,
                        &cfg.storage_options,
                        &schema,
                        &t.partition_by,
                        writers.file_schema().clone(),
                    ))?;
                    routes.push(RouteState {
                        name,
                        writers,
                        sink,
                        pending: Vec::new(),
                        pending_rows: 0,
                        committed: HashMap::new(),
                    });
                }
            }
            for topic in &t.topics {
                if topic_table.insert(topic.clone(), i).is_some() {
                    return Err(ArchiveError::Config(format!(
                        "topic {topic} is routed to two tables"
                    )));
                }
            }
            tables.push(TableState {
                target: t.clone(),
                decoder,
                etl,
                writers,
                sink,
                pending: Vec::new(),
                pending_rows: 0,
                pending_filtered: BTreeMap::new(),
                pending_filtered_rows: 0,
                pending_moved: BTreeMap::new(),
                routes,
            });
        }
        let dlq = match &cfg.dlq {
            Some(url) => {
                let schema = table_schema(TableKind::DeadLetter);
                let partition_by = vec!["dt".to_string(), "hour".to_string()];
                let writers =
                    WriterSet::new(schema.clone(), &partition_by, cfg.policy.clone(), &[])?;
                let name = name_from_url(url);
                let sink = handle.block_on(DeltaSink::open_or_create(
                    &name,
                    url,
                    &cfg.storage_options,
                    &schema,
                    &partition_by,
                    writers.file_schema().clone(),
                ))?;
                Some(DlqState {
                    writers,
                    sink,
                    pending: Vec::new(),
                    pending_rows: 0,
                })
            }
            None => None,
        };

        let resolver = OffsetResolver {
            handle: handle.clone(),
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
        };
        let mut cc = consumer_config(&cfg.brokers, &cfg.group);
        // Watermarks for the consumer-lag gauge (ArchiverContext::stats).
        cc.set("statistics.interval.ms", "1000").set(
            "client.id",
            format!("loglake-archiver-{}", env!("CARGO_PKG_VERSION")),
        );
        if let Some(id) = &cfg.instance_id {
            cc.set("group.instance.id", id);
        }
        for (k, v) in &cfg.kafka_properties {
            cc.set(k, v);
        }
        let context = ArchiverContext {
            resolver,
            events: Mutex::new(Vec::new()),
            watermarks: Mutex::new(HashMap::new()),
        };
        let consumer: BaseConsumer<ArchiverContext> = cc
            .create_with_context(context)
            .map_err(kafka_err("creating consumer"))?;
        let topics: Vec<&str> = topic_table.keys().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(kafka_err("subscribe"))?;
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
            let mut batch: Vec<BorrowedMessage<'_>> = Vec::new();
            let mut batch_bytes = 0u64;
            let poll_until = Instant::now() + Duration::from_millis(200);
            while batch.len() < self.cfg.batch_records && batch_bytes < max_batch_bytes {
                let wait = poll_until.saturating_duration_since(Instant::now());
                match consumer.poll(wait) {
                    Some(Ok(m)) => {
                        batch_bytes += (m.payload_len() + m.key_len()) as u64;
                        batch.push(m);
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        break;
                    }
                    None => break,
                }
                if consumer
                    .context()
                    .events
                    .lock()
                    .map(|e| !e.is_empty())
                    .unwrap_or(true)
                {
                    break;
                }
            }
            let events = consumer.context().take();
            if !events.is_empty() {
                // A rebalance is served inside `poll`, which then returns no message (rdkafka
                // returns `EventConsumed` for a finite timeout), and the loop above stops at the
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

    /// The partitions of the topics that this member does not hold (`Err`: the metadata request
    /// failed, named by topic).
    fn unassigned_partitions(&self) -> Result<Vec<(String, i32)>, String> {
        let mut out = Vec::new();
        for topic in self.topic_table.keys() {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map_err(|e| format!("{topic}: {e}"))?;
            for t in md.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    let key = (topic.clone(), p.id());
                    if !self.parts.contains_key(&key) {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// `--until-end` is done only when every partition of the topics is archived to its end:
    /// those this member does not hold too (I2: the tables say how far, W). Their ends are the
    /// high watermarks when this run first looked. A member holding nothing waits for the
    /// others' commits; the stall watch sees their W move ([`Archiver::part_views`]), and names
    /// them if it does not.
    fn others_done(&mut self) -> bool {
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
        let wm = match self.consumer.context().watermarks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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
    fn watch_tick(&mut self) -> Result<(), ArchiveError> {
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
                Some(r) => tracing::error!(group = %self.cfg.group, "stalled: {r}"),
                None => tracing::info!(group = %self.cfg.group, "progressing again"),
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
            match self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
            {
                Ok(md) => {
                    for t in md.topics().iter().filter(|t| t.name() == topic) {
                        for p in t.partitions() {
                            let key = (topic.clone(), p.id());
                            if !self.parts.contains_key(&key) {
                                unassigned.push(key);
                            }
                        }
                    }
                }
                Err(e) => metadata_error = Some(format!("{topic}: {e}")),
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
                DEFAULT_SESSION_TIMEOUT_MS, self.cfg.group
            ));
        }
        if let Some(e) = metadata_error {
            hint.push_str(&format!(
                " The broker did not answer a metadata request: {e}."
            ));
        }
        if lines.is_empty() {
            hint.push_str(" No partition of the topics is known (do they exist?).");
        }
        ArchiveError::Stalled {
            group: self.cfg.group.clone(),
            waited,
            partitions: lines
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            hint: hint.trim().to_string(),
        }
    }

    fn dirty(&self) -> bool {
        self.parts
            .values()
            .any(|p| p.start.committed.is_none_or(|w| p.next > w))
    }

    /// What the memory budget has left: writers start only within it (`WriterSet::write`).
    fn headroom(&self) -> u64 {
        self.cfg
            .policy
            .memory_budget_bytes
            .saturating_sub(self.buffered_bytes())
    }

    fn buffered_bytes(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.writers.memory() + t.routes.iter().map(|r| r.writers.memory()).sum::<u64>())
            .sum::<u64>()
            + self.dlq.as_ref().map(|d| d.writers.memory()).unwrap_or(0)
    }

    fn handle_events(&mut self, events: Vec<GroupEvent>) -> Result<(), ArchiveError> {
        for e in events {
            match e {
                GroupEvent::Revoked => {
                    self.report.rebalances += 1;
                    self.cfg.metrics.rebalances.inc();
                    tracing::info!("partitions revoked: dropping uncommitted buffers");
                    self.reset()?;
                    self.parts.clear();
                    self.cfg.metrics.clear_lag();
                }
                GroupEvent::Assigned(list) => {
                    self.report.rebalances += 1;
                    self.assigned_once = true;
                    if list.is_empty() {
                        tracing::warn!(
                            group = %self.cfg.group,
                            "the group assigned this member no partition: waiting for a rebalance \
                             (members killed without leaving hold theirs until their session times out)"
                        );
                    }
                    // An eager rebalance revokes everything first; drop anything left anyway.
                    self.reset()?;
                    self.parts.clear();
                    self.cfg.metrics.clear_lag();
                    for ((topic, p), start) in list {
                        let Some(&table) = self.topic_table.get(&topic) else {
                            continue;
                        };
                        let (low, high) = fetch_watermarks_retrying(
                            &self.consumer,
                            &topic,
                            p,
                            self.cfg.watermark_timeout,
                        )?;
                        let next = start.seek().unwrap_or(low).max(low);
                        let end = self.cfg.until_end.then_some(high);
                        tracing::info!(topic = %topic, partition = p, start = ?start, low, high, "assigned");
                        self.parts.insert(
                            (topic, p),
                            PartState {
                                table,
                                start,
                                next,
                                end,
                            },
                        );
                    }
                    self.load_route_offsets()?;
                }
                GroupEvent::Failed(msg) => return Err(ArchiveError::Other(msg)),
            }
        }
        Ok(())
    }

    /// Drops everything not yet committed (buffers, decoder state, uploaded files).
    fn reset(&mut self) -> Result<(), ArchiveError> {
        for t in &mut self.tables {
            t.writers.discard_all();
            t.decoder = t.target.decoder(&self.cfg.decoder_options)?;
            let pending = std::mem::take(&mut t.pending);
            self.handle.block_on(t.sink.delete_uncommitted(&pending));
            t.pending_rows = 0;
            t.pending_filtered.clear();
            t.pending_filtered_rows = 0;
            t.pending_moved.clear();
            for r in &mut t.routes {
                r.writers.discard_all();
                let pending = std::mem::take(&mut r.pending);
                self.handle.block_on(r.sink.delete_uncommitted(&pending));
                r.pending_rows = 0;
            }
        }
        if let Some(d) = &mut self.dlq {
            d.writers.discard_all();
            let pending = std::mem::take(&mut d.pending);
            self.handle.block_on(d.sink.delete_uncommitted(&pending));
            d.pending_rows = 0;
        }
        Ok(())
    }

    fn process(&mut self, batch: &[BorrowedMessage<'_>]) -> Result<(), ArchiveError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Group by table, keeping only records of assigned partitions that are new.
        let mut per_table: Vec<Vec<&BorrowedMessage<'_>>> = vec![Vec::new(); self.tables.len()];
        // Messages come in runs of one partition: reuse the lookup key rather than allocate one
        // per record.
        let mut key = (String::new(), -1);
        let bytes_before = self.report.bytes_in;
        for m in batch {
            if key.1 != m.partition() || key.0 != m.topic() {
                key = (m.topic().to_string(), m.partition());
            }
            let Some(ps) = self.parts.get_mut(&key) else {
                continue;
            };
            if let Some(end) = ps.end
                && m.offset() >= end
            {
                continue; // beyond the frozen end of this batch run
            }
            if m.offset() < ps.next {
                continue; // already seen (seek raced a fetch)
            }
            ps.next = m.offset() + 1;
            self.report.records_in += 1;
            self.report.bytes_in += m.payload_len() as u64;
            per_table[ps.table].push(m);
        }
        let accepted: usize = per_table.iter().map(Vec::len).sum();
        self.cfg.metrics.records_in.inc_by(accepted as u64);
        self.cfg
            .metrics
            .bytes_in
            .inc_by(self.report.bytes_in - bytes_before);
        for (ti, msgs) in per_table.into_iter().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            let headers: Vec<HeaderList<'_>> = msgs
                .iter()
                .map(|m| {
                    m.headers()
                        .map(|h| h.iter().map(|x| (x.key, x.value)).collect())
                        .unwrap_or_default()
                })
                .collect();
            let records: Vec<RawRecord<'_>> = msgs
                .iter()
                .zip(&headers)
                .map(|(m, h)| RawRecord {
                    payload: m.payload(),
                    key: m.key(),
                    headers: h.as_slice(),
                    timestamp_ms: m.timestamp().to_millis(),
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                })
                .collect();
            let out = self.tables[ti].decoder.decode(&records);
            self.write_decoded(ti, out.batch, out.errors, &records)?;
        }
        Ok(())
    }

    fn write_decoded(
        &mut self,
        ti: usize,
        batch: RecordBatch,
        errors: Vec<RecordError>,
        records: &[RawRecord<'_>],
    ) -> Result<(), ArchiveError> {
        // I2: rows at offsets below W are already in the table (re-read after a resume point).
        let batch = self.filter_committed(&batch)?;
        let mut errors = errors;
        let batch = match self.tables[ti].etl.clone() {
            Some(etl) => self.apply_etl(ti, &etl, &batch, records, &mut errors)?,
            None => batch,
        };
        let rows = batch.num_rows() as u64;
        let late = count_late(
            &batch,
            records,
            i64::try_from(self.cfg.late_after.as_micros()).unwrap_or(i64::MAX),
        );
        if late > 0 {
            self.report.late_rows += late;
            self.cfg.metrics.late_rows.inc_by(late);
        }
        let mut headroom = self.headroom();
        let closed = self.tables[ti].writers.write(&batch, &mut headroom)?;
        self.tables[ti].pending_rows += rows;
        self.upload_table(ti, closed)?;
        // I4: every record that did not become a row becomes a dead letter.
        if !errors.is_empty() {
            let mut bad = Vec::new();
            for e in errors {
                let key = (e.topic.clone(), e.partition);
                let floor = self
                    .parts
                    .get(&key)
                    .map(PartState::dlq_floor)
                    .unwrap_or(i64::MIN);
                if e.offset < floor {
                    continue;
                }
                let raw = records
                    .get(e.index)
                    .filter(|r| r.offset == e.offset)
                    .and_then(|r| r.payload);
                let ts = records.get(e.index).and_then(|r| r.timestamp_ms);
                tracing::debug!(topic = %e.topic, partition = e.partition, offset = e.offset, reason = %e.reason, "dead letter");
                bad.push((e, raw.map(<[u8]>::to_vec), ts));
            }
            self.write_dead_letters(&self.tables[ti].target.decoder.clone(), bad)?;
        }
        Ok(())
    }

    /// Filters, derives and redacts (the table's [`Etl`]): the filtered offsets are kept for the
    /// next commit's info, records an expression failed on join `errors` (the dead letters).
    fn apply_etl(
        &mut self,
        ti: usize,
        etl: &Etl,
        batch: &RecordBatch,
        records: &[RawRecord<'_>],
        errors: &mut Vec<RecordError>,
    ) -> Result<RecordBatch, ArchiveError> {
        let out = etl.apply(batch)?;
        let name = self.tables[ti].target.name.clone();
        let metrics = self.cfg.metrics.clone();
        if out.filtered_rows > 0 {
            metrics.add_etl_filtered(&name, out.filtered_rows);
        }
        for (label, n) in etl.redaction_labels().iter().zip(&out.redactions) {
            if *n > 0 {
                metrics.add_etl_redactions(&name, label, *n);
                *self
                    .report
                    .redactions
                    .entry(format!("{name}/{label}"))
                    .or_insert(0) += n;
            }
        }
        let t = &mut self.tables[ti];
        t.pending_filtered_rows += out.filtered_rows;
        for (topic, p, o) in out.filtered_offsets {
            t.pending_filtered.entry((topic, p)).or_default().push(o);
        }
        for (topic, p, o) in out.moved_offsets {
            t.pending_moved.entry((topic, p)).or_default().push(o);
        }
        for (ri, rows) in out.routed.into_iter().enumerate() {
            self.write_routed(ti, ri, &rows)?;
        }
        if !out.failed.is_empty() {
            metrics.add_etl_failures(&name, out.failed.len() as u64);
            self.report.etl_failures += out.failed.len() as u64;
        }
        for (topic, partition, offset, reason) in out.failed {
            let index = records
                .iter()
                .position(|r| r.offset == offset && r.partition == partition && r.topic == topic)
                .unwrap_or(usize::MAX);
            errors.push(RecordError {
                index,
                topic,
                partition,
                offset,
                reason,
            });
        }
        Ok(out.batch)
    }

    /// Buffers the rows route `ri` of table `ti` copies or moves, except those below the route
    /// table's W (already there: a crash between its commit and the source table's).
    fn write_routed(
        &mut self,
        ti: usize,
        ri: usize,
        rows: &RecordBatch,
    ) -> Result<(), ArchiveError> {
        use arrow::array::{AsArray, BooleanArray};
        use arrow::datatypes::{Int32Type, Int64Type};
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let r = &self.tables[ti].routes[ri];
        let (Some(t), Some(p), Some(o)) = (
            rows.column_by_name("kafka_topic")
                .and_then(|c| c.as_string_opt::<i32>()),
            rows.column_by_name("kafka_partition")
                .and_then(|c| c.as_primitive_opt::<Int32Type>()),
            rows.column_by_name("kafka_offset")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(ArchiveError::Other(format!(
                "route table {}: rows without Kafka coordinates",
                r.name
            )));
        };
        let keep: BooleanArray = (0..rows.num_rows())
            .map(|i| Some(o.value(i) >= r.floor(t.value(i), p.value(i))))
            .collect();
        let rows = filter_record_batch(rows, &keep)?;
        let mut headroom = self.headroom();
        let r = &mut self.tables[ti].routes[ri];
        let closed = r.writers.write(&rows, &mut headroom)?;
        r.pending_rows += rows.num_rows() as u64;
        for f in closed {
            let add = upload(&self.handle, &r.sink, f, &self.cfg.metrics)?;
            r.pending.push(add);
        }
        Ok(())
    }

    fn filter_committed(&self, batch: &RecordBatch) -> Result<RecordBatch, ArchiveError> {
        use arrow::array::{AsArray, BooleanArray};
        use arrow::datatypes::{Int32Type, Int64Type};
        let schema = batch.schema();
        let (Ok(ti), Ok(pi), Ok(oi)) = (
            schema.index_of("kafka_topic"),
            schema.index_of("kafka_partition"),
            schema.index_of("kafka_offset"),
        ) else {
            return Ok(batch.clone());
        };
        let topics = batch.column(ti).as_string::<i32>();
        let parts = batch.column(pi).as_primitive::<Int32Type>();
        let offs = batch.column(oi).as_primitive::<Int64Type>();
        let mut all = true;
        // Rows come in runs of one partition: look the floor up once per run.
        let mut last: Option<(&str, i32, i64)> = None;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|r| {
                let (t, p) = (topics.value(r), parts.value(r));
                let floor = match last {
                    Some((lt, lp, f)) if lp == p && lt == t => f,
                    _ => {
                        let f = self
                            .parts
                            .get(&(t.to_string(), p))
                            .map(PartState::floor)
                            .unwrap_or(i64::MIN);
                        last = Some((t, p, f));
                        f
                    }
                };
                let k = offs.value(r) >= floor;
                all &= k;
                Some(k)
            })
            .collect();
        if all {
            return Ok(batch.clone());
        }
        Ok(filter_record_batch(batch, &keep)?)
    }

    fn write_dead_letters(
        &mut self,
        decoder: &str,
        bad: Vec<DeadLetter>,
    ) -> Result<(), ArchiveError> {
        if bad.is_empty() {
            return Ok(());
        }
        self.report.dead_letters += bad.len() as u64;
        self.cfg.metrics.dead_letters.inc_by(bad.len() as u64);
        let mut headroom = self.headroom();
        let Some(dlq) = &mut self.dlq else {
            let (e, _, _) = &bad[0];
            return Err(ArchiveError::Other(format!(
                "{} record(s) could not be decoded and no --dlq-table is configured (first: {}[{}] offset {}: {}); refusing to drop them",
                bad.len(),
                e.topic,
                e.partition,
                e.offset,
                e.reason
            )));
        };
        let batch = dead_letter_batch(decoder, &bad)?;
        let closed = dlq.writers.write(&batch, &mut headroom)?;
        dlq.pending_rows += batch.num_rows() as u64;
        for f in closed {
            let add = upload(&self.handle, &dlq.sink, f, &self.cfg.metrics)?;
            dlq.pending.push(add);
        }
        Ok(())
    }

    fn upload_table(&mut self, ti: usize, closed: Vec<ClosedFile>) -> Result<(), ArchiveError> {
        for f in closed {
            let add = upload(&self.handle, &self.tables[ti].sink, f, &self.cfg.metrics)?;
            self.tables[ti].pending.push(add);
        }
        Ok(())
    }

    /// Closes the largest open files (across all tables and the dead letters) while over the
    /// byte budget, down to 3/4 of it: the choice is [`budget_victims`].
    fn enforce_budget(&mut self) -> Result<(), ArchiveError> {
        let budget = self.cfg.policy.memory_budget_bytes;
        if self.buffered_bytes() <= budget {
            return Ok(());
        }
        // Owner of each open writer: Some(table index), or None for the dead-letter table.
        let mut owners: Vec<(Option<usize>, PartitionKey)> = Vec::new();
        let mut sizes = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            for (k, size) in t.writers.sizes() {
                owners.push((Some(i), k));
                sizes.push(size);
            }
        }
        if let Some(d) = &self.dlq {
            for (k, size) in d.writers.sizes() {
                owners.push((None, k));
                sizes.push(size);
            }
        }
        // Route writers: closed here too (a route file is small; it is flushed whole).
        let mut route_owners: Vec<(usize, usize, PartitionKey)> = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            for (ri, r) in t.routes.iter().enumerate() {
                for (k, size) in r.writers.sizes() {
                    route_owners.push((i, ri, k));
                    sizes.push(size);
                }
            }
        }
        let plain = owners.len();
        for v in budget_victims(&sizes, budget, budget / 4 * 3) {
            if v >= plain {
                self.cfg.metrics.budget_flushes.inc();
                let (i, ri, key) = &route_owners[v - plain];
                let r = &mut self.tables[*i].routes[*ri];
                if let Some(f) = r.writers.close(key)? {
                    let add = upload(&self.handle, &r.sink, f, &self.cfg.metrics)?;
                    r.pending.push(add);
                }
                continue;
            }
            self.cfg.metrics.budget_flushes.inc();
            match &owners[v] {
                (Some(i), key) => {
                    if let Some(f) = self.tables[*i].writers.close(key)? {
                        self.upload_table(*i, vec![f])?;
                    }
                }
                (None, key) => {
                    if let Some(d) = &mut self.dlq
                        && let Some(f) = d.writers.close(key)?
                    {
                        let add = upload(&self.handle, &d.sink, f, &self.cfg.metrics)?;
                        d.pending.push(add);
                    }
                }
            }
        }
        Ok(())
    }

    /// Flushes everything and commits: dead letters first, then each table (I2, I4).
    fn commit_all(&mut self) -> Result<(), ArchiveError> {
        let flush_started = Instant::now();
        // Close all files; stateful decoders keep their partial lines (R handles them).
        for ti in 0..self.tables.len() {
            while let Some(f) = self.tables[ti].writers.close_next()? {
                self.upload_table(ti, vec![f])?;
            }
            for r in &mut self.tables[ti].routes {
                while let Some(f) = r.writers.close_next()? {
                    let add = upload(&self.handle, &r.sink, f, &self.cfg.metrics)?;
                    r.pending.push(add);
                }
            }
        }
        if let Some(d) = &mut self.dlq {
            while let Some(f) = d.writers.close_next()? {
                let add = upload(&self.handle, &d.sink, f, &self.cfg.metrics)?;
                d.pending.push(add);
            }
        }
        // Partitions with new records since their last commit.
        let advanced: Vec<((String, i32), PartState)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.start.committed.is_none_or(|w| p.next > w))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        if advanced.is_empty() {
            self.last_commit = Instant::now();
            return Ok(());
        }

        // Dead letters first.
        if let Some(d) = &mut self.dlq
            && !d.pending.is_empty()
        {
            let offsets: Vec<OffsetAdvance> = advanced
                .iter()
                .map(|((t, p), s)| OffsetAdvance {
                    topic: t.clone(),
                    partition: *p,
                    from: s.start.dead_letters,
                    to: dead_letter_end(&s.start, s.next),
                })
                .collect();
            let adds = std::mem::take(&mut d.pending);
            let outcome =
                self.handle
                    .block_on(d.sink.commit(adds.clone(), &offsets, Vec::new()))?;
            match outcome {
                CommitOutcome::Committed { version, .. } => {
                    self.report.commits += 1;
                    self.cfg.metrics.commits.inc();
                    self.cfg
                        .metrics
                        .dead_letters_committed
                        .inc_by(d.pending_rows);
                    tracing::info!(table = %d.sink.name(), version, rows = d.pending_rows, files = adds.len(), "committed dead letters");
                    d.pending_rows = 0;
                    for o in &offsets {
                        if let Some(ps) = self.parts.get_mut(&(o.topic.clone(), o.partition)) {
                            ps.start.dead_letters = Some(o.to);
                        }
                    }
                }
                CommitOutcome::Conflict { partitions } => {
                    self.handle.block_on(d.sink.delete_uncommitted(&adds));
                    let name = d.sink.name().to_string();
                    return self.on_conflict(name, partitions);
                }
            }
        }

        // Route tables next, before their source tables: a routed row below the source's W is
        // in its route table (their W never goes back, as D).
        for ti in 0..self.tables.len() {
            for ri in 0..self.tables[ti].routes.len() {
                if self.tables[ti].routes[ri].pending.is_empty() {
                    continue;
                }
                let source = self.tables[ti].target.name.clone();
                let r = &mut self.tables[ti].routes[ri];
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
                let adds = std::mem::take(&mut r.pending);
                let outcome =
                    self.handle
                        .block_on(r.sink.commit(adds.clone(), &offsets, Vec::new()))?;
                match outcome {
                    CommitOutcome::Committed { version, .. } => {
                        self.report.commits += 1;
                        self.cfg.metrics.commits.inc();
                        self.cfg
                            .metrics
                            .add_etl_routed(&source, &r.name, r.pending_rows);
                        *self
                            .report
                            .rows_routed
                            .entry(format!("{source}/{}", r.name))
                            .or_insert(0) += r.pending_rows;
                        tracing::info!(table = %r.name, source = %source, version, rows = r.pending_rows, files = adds.len(), "committed routed rows");
                        r.pending_rows = 0;
                        for o in &offsets {
                            r.committed
                                .insert((o.topic.clone(), o.partition), Some(o.to));
                        }
                    }
                    CommitOutcome::Conflict { partitions } => {
                        self.handle.block_on(r.sink.delete_uncommitted(&adds));
                        let name = r.name.clone();
                        return self.on_conflict(name, partitions);
                    }
                }
            }
        }

        for ti in 0..self.tables.len() {
            let mine: Vec<&((String, i32), PartState)> =
                advanced.iter().filter(|(_, s)| s.table == ti).collect();
            if mine.is_empty() {
                continue;
            }
            let name = self.tables[ti].target.name.clone();
            let mut offsets = Vec::new();
            let mut resumes = Vec::new();
            for ((t, p), s) in &mine {
                offsets.push(OffsetAdvance {
                    topic: t.clone(),
                    partition: *p,
                    from: s.start.committed,
                    to: s.next,
                });
                let pending = self.tables[ti].decoder.pending_min_offset(t, *p);
                let r = pending.map_or(s.next, |o| o.min(s.next));
                resumes.push((resume_app_id(&name, t, *p), r));
            }
            let adds = std::mem::take(&mut self.tables[ti].pending);
            let t = &mut self.tables[ti];
            // The offsets the filter dropped go into the same commit as the W they are below.
            let mut info = filtered_info(&t.pending_filtered, t.pending_filtered_rows);
            info.extend(moved_info(&t.pending_moved));
            let outcome = self.handle.block_on(t.sink.commit_with_info(
                adds.clone(),
                &offsets,
                resumes.clone(),
                info,
            ))?;
            match outcome {
                CommitOutcome::Committed { version, attempts } => {
                    self.report.commits += 1;
                    self.report.files += adds.len() as u64;
                    self.report.rows_written += t.pending_rows;
                    self.cfg.metrics.commits.inc();
                    self.cfg.metrics.rows_written.inc_by(t.pending_rows);
                    tracing::info!(table = %name, version, attempts, rows = t.pending_rows, filtered = t.pending_filtered_rows, files = adds.len(), "committed");
                    t.pending_rows = 0;
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
                CommitOutcome::Conflict { partitions } => {
                    self.handle.block_on(t.sink.delete_uncommitted(&adds));
                    return self.on_conflict(name, partitions);
                }
            }
        }
        self.commit_kafka_offsets();
        self.cfg.metrics.observe_flush(flush_started.elapsed());
        self.last_commit = Instant::now();
        Ok(())
    }

    /// I3: another writer advanced partitions we hold. Drop everything uncommitted and re-read
    /// every assigned partition's offsets from the tables; never write those records twice.
    fn on_conflict(
        &mut self,
        table: String,
        partitions: Vec<(String, i32, Option<i64>)>,
    ) -> Result<(), ArchiveError> {
        self.report.conflicts += 1;
        self.cfg.metrics.offset_conflicts.inc();
        tracing::warn!(table = %table, ?partitions, "offsets moved under us: another archiver owns these partitions; dropping buffers and re-reading offsets");
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
    fn load_route_offsets(&mut self) -> Result<(), ArchiveError> {
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
                    r.sink.url(),
                    &self.cfg.storage_options,
                    &parts,
                    false,
                ))?;
                r.committed = offsets.into_iter().map(|(k, (w, _))| (k, w)).collect();
            }
        }
        Ok(())
    }

    /// The consumer-lag gauge of each assigned partition: records on the broker not yet
    /// committed to the table, high watermark − W (from the last statistics, see
    /// [`ArchiverContext::stats`]; partitions without statistics yet are left out).
    fn update_lag(&self) {
        let wm = match self.consumer.context().watermarks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (k, s) in &self.parts {
            if let Some(&(low, high)) = wm.get(k) {
                let done = s.start.committed.unwrap_or(low).max(low);
                self.cfg.metrics.set_lag(&k.0, k.1, (high - done).max(0));
            }
        }
    }

    /// Kafka's committed offsets are for lag dashboards only (the tables are the truth).
    fn commit_kafka_offsets(&self) {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), s) in &self.parts {
            if let Some(w) = s.start.committed {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(w));
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(error = %e, "committing Kafka offsets (informational) failed");
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

/// A table's default name: the last segment of its URL.
pub fn name_from_url(url: &Url) -> String {
    url.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("dead_letters")
        .to_string()
}

fn upload(
    handle: &Handle,
    sink: &DeltaSink,
    f: ClosedFile,
    metrics: &ArchiverMetrics,
) -> Result<Add, ArchiveError> {
    let bytes = f.bytes.len() as u64;
    let add = handle.block_on(sink.upload(f))?;
    metrics.files_written.inc();
    metrics.bytes_written.inc_by(bytes);
    Ok(add)
}

/// Builds a dead-letter batch: raw bytes, error, decoder, Kafka coordinates and timestamp.
fn dead_letter_batch(decoder: &str, bad: &[DeadLetter]) -> Result<RecordBatch, ArchiveError> {
    let schema: SchemaRef = table_schema(TableKind::DeadLetter);
    let now = chrono::Utc::now();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let col: ArrayRef = match field.name().as_str() {
            "raw" => {
                let mut b = BinaryBuilder::new();
                for (_, raw, _) in bad {
                    match raw {
                        Some(r) => b.append_value(r),
                        None => b.append_null(),
                    }
                }
                std::sync::Arc::new(b.finish())
            }
            "error" | "decoder" | "kafka_topic" | "loglake_version" => {
                let mut b = StringBuilder::new();
                for (e, _, _) in bad {
                    match field.name().as_str() {
                        "error" => b.append_value(&e.reason),
                        "decoder" => b.append_value(decoder),
                        "kafka_topic" => b.append_value(&e.topic),
                        _ => b.append_value(env!("CARGO_PKG_VERSION")),
                    }
                }
                std::sync::Arc::new(b.finish())
            }
            "kafka_partition" | "hour" => {
                let mut b = Int32Builder::new();
                for (e, _, ts) in bad {
                    if field.name() == "kafka_partition" {
                        b.append_value(e.partition);
                    } else {
                        let t = ts
                            .and_then(chrono::DateTime::from_timestamp_millis)
                            .unwrap_or(now);
                        b.append_value(chrono::Timelike::hour(&t) as i32);
                    }
                }
                std::sync::Arc::new(b.finish())
            }
            "kafka_offset" => {
                let mut b = Int64Builder::new();
                for (e, _, _) in bad {
                    b.append_value(e.offset);
                }
                std::sync::Arc::new(b.finish())
            }
            "kafka_timestamp" | "ingest_ts" => {
                let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
                for (_, _, ts) in bad {
                    if field.name() == "ingest_ts" {
                        b.append_value(now.timestamp_micros());
                    } else {
                        match ts {
                            Some(ms) => b.append_value(ms * 1000),
                            None => b.append_null(),
                        }
                    }
                }
                std::sync::Arc::new(b.finish())
            }
            "dt" => {
                let mut b = Date32Builder::new();
                for (_, _, ts) in bad {
                    let t = ts
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .unwrap_or(now);
                    b.append_value(
                        (t.date_naive() - chrono::NaiveDate::default()).num_days() as i32
                    );
                }
                std::sync::Arc::new(b.finish())
            }
            other => {
                return Err(ArchiveError::Other(format!(
                    "unexpected dead-letter column {other}"
                )));
            }
        };
        cols.push(col);
    }
    Ok(RecordBatch::try_new(schema, cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tables_decoder_copies_json_message_fields_into_attrs_only_when_the_table_asks() {
        use arrow::array::{Array, AsArray};
        let payload = br#"{"time":"2026-11-23T10:00:00Z","log":"{\"level\":\"warn\",\"msg\":\"slow\",\"user\":7}\n"}"#;
        let attrs_keys = |json_message_attrs: bool| -> (Vec<String>, Option<String>) {
            let target = TableTarget {
                name: "t".into(),
                url: Url::parse("file:///tmp/t").expect("url"),
                topics: vec!["t".into()],
                decoder: "fluentbit".into(),
                partition_by: vec!["dt".into(), "hour".into()],
                bloom_filter_columns: Vec::new(),
                target_file_bytes: None,
                json_message_attrs,
                etl: EtlSpec::default(),
                definition: None,
                route_urls: Vec::new(),
            };
            let mut d = target.decoder(&DecoderOptions::default()).expect("decoder");
            let out = d.decode(&[RawRecord::new("t", 0, 0, payload)]);
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            let b = &out.batch;
            let attrs = b.column_by_name("attrs").expect("attrs").as_map();
            let keys = attrs.keys().as_string::<i32>();
            let level = b.column_by_name("level").expect("level").as_string::<i32>();
            (
                keys.iter().flatten().map(str::to_owned).collect(),
                level.is_valid(0).then(|| level.value(0).to_owned()),
            )
        };
        assert_eq!(attrs_keys(false), (vec![], Some("warn".into())));
        assert_eq!(
            attrs_keys(true),
            (
                vec!["level".into(), "msg".into(), "user".into()],
                Some("warn".into())
            )
        );
    }

    #[test]
    fn late_rows_reached_kafka_more_than_late_after_after_their_event_time() {
        use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let hour_us = 3_600_000_000i64;
        let kafka_ms = 100 * 3_600_000i64; // every record reached Kafka at 100 h
        let kafka_us = kafka_ms * 1000;
        let payload = b"{}";
        let mut records: Vec<RawRecord<'_>> = (10..16)
            .map(|o| RawRecord {
                timestamp_ms: Some(kafka_ms),
                ..RawRecord::new("t", 0, o, payload)
            })
            .collect();
        records[5].timestamp_ms = None; // offset 15: no Kafka timestamp
        // offset 11 gave no row (a dead letter), offset 13 gave two (one record, many logs)
        let rows: [(i64, i64); 7] = [
            (5, kafka_us - 10 * hour_us), // its record is not in this batch: not counted
            (10, kafka_us - 2 * hour_us), // late
            (12, kafka_us - hour_us),     // exactly late_after: not late
            (13, kafka_us - 3 * hour_us), // late
            (13, kafka_us),               // on time
            (14, kafka_us + hour_us),     // from the future: not late
            (15, kafka_us - 5 * hour_us), // no Kafka time to compare with
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("kafka_topic", DataType::Utf8, false),
            Field::new("kafka_partition", DataType::Int32, false),
            Field::new("kafka_offset", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["t"; rows.len()])),
                Arc::new(Int32Array::from(vec![0; rows.len()])),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            ],
        )
        .expect("batch");
        assert_eq!(count_late(&batch, &records, hour_us), 2);
        assert_eq!(count_late(&batch, &records, 0), 3);
        assert_eq!(count_late(&batch, &records, 10 * hour_us), 0);
        // rows are matched to their own records only
        assert_eq!(count_late(&batch, &records[..1], 0), 1);
        assert_eq!(count_late(&batch.slice(1, 6), &records, hour_us), 2);
        // a batch without the columns counts nothing
        assert_eq!(
            count_late(&batch.project(&[1, 2, 3]).expect("project"), &records, 0),
            0
        );
    }

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

    #[test]
    fn watermark_reads_back_off_up_to_16s_and_stop_at_the_deadline() {
        let pauses: Vec<u64> = (1..=7)
            .map(|a| watermark_retry_pause(a).as_secs())
            .collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 16, 16]);
        let s = Duration::from_secs;
        // With the default 5 minutes: attempts at 0, 1, 3, 7, 15, 31, 47, … s until 300 s.
        let mut elapsed = s(0);
        let mut attempts = 1;
        while watermark_retry_fits(
            elapsed,
            watermark_retry_pause(attempts),
            DEFAULT_WATERMARK_TIMEOUT,
        ) {
            elapsed += watermark_retry_pause(attempts);
            attempts += 1;
        }
        assert_eq!((attempts, elapsed), (22, s(287)));
        // A deadline shorter than the first pause: one attempt only.
        assert!(!watermark_retry_fits(s(0), s(1), s(1)));
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
