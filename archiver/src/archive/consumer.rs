//! The Kafka consumer: its settings, the rebalance callback that assigns partitions at the
//! offsets read from the tables (I2), the group events the loop handles, watermark reads
//! (retried), the consumer-lag gauge and the informational Kafka offset commits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::offsets::{OffsetResolver, PartState, StartOffsets};
use super::{ArchiveConfig, Archiver, LOG_TARGET};
use crate::error::ArchiveError;

/// What the rebalance callback (served inside `poll`) leaves for the loop.
pub(super) enum GroupEvent {
    Assigned(Vec<((String, i32), StartOffsets)>),
    Revoked,
    Failed(String),
}

pub(super) struct ArchiverContext {
    pub(super) resolver: OffsetResolver,
    events: Mutex<Vec<GroupEvent>>,
    /// (low, high) watermarks per (topic, partition), from librdkafka's statistics: the source
    /// of the consumer-lag gauge (high − W).
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
    /// librdkafka's log lines and errors, one per kind per 30 s ([`crate::kafka_log`]).
    pub(super) kafka_log: crate::kafka_log::Limiter,
}

impl ArchiverContext {
    fn push(&self, e: GroupEvent) {
        match self.events.lock() {
            Ok(mut g) => g.push(e),
            Err(p) => p.into_inner().push(e),
        }
    }
    pub(super) fn take(&self) -> Vec<GroupEvent> {
        match self.events.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
    /// Whether group events wait for the loop (a poisoned lock counts as yes).
    fn has_events(&self) -> bool {
        self.events.lock().map(|e| !e.is_empty()).unwrap_or(true)
    }
    /// The last (low, high) watermarks from the statistics.
    pub(super) fn watermarks(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, i32), (i64, i64)>> {
        match self.watermarks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl ClientContext for ArchiverContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka_log::log(&self.kafka_log, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka_log::error(&self.kafka_log, &error, reason);
    }

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
        self.watermarks().extend(fresh);
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

pub(super) fn kafka_err(context: &str) -> impl FnOnce(KafkaError) -> ArchiveError + '_ {
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

/// The archiver's consumer: [`consumer_config`], statistics for the lag gauge, the client id,
/// static membership and the `-X` properties, subscribed to every table's topics.
pub(super) fn create_consumer(
    cfg: &ArchiveConfig,
    resolver: OffsetResolver,
    topics: &[&str],
) -> Result<BaseConsumer<ArchiverContext>, ArchiveError> {
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
        kafka_log: crate::kafka_log::Limiter::default(),
    };
    let consumer: BaseConsumer<ArchiverContext> = cc
        .create_with_context(context)
        .map_err(kafka_err("creating consumer"))?;
    consumer.subscribe(topics).map_err(kafka_err("subscribe"))?;
    Ok(consumer)
}

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
                tracing::warn!(target: LOG_TARGET, topic, partition, attempt, error = %e, "reading watermarks failed; retrying");
                std::thread::sleep(pause);
                attempt += 1;
            }
        }
    }
}

/// One poll batch: messages until `max_records` or `max_bytes` of payload and key, 200 ms, or
/// the first poll after which group events wait (a rebalance is served inside `poll`).
pub(super) fn poll_batch(
    consumer: &BaseConsumer<ArchiverContext>,
    max_records: usize,
    max_bytes: u64,
) -> Vec<BorrowedMessage<'_>> {
    let mut batch: Vec<BorrowedMessage<'_>> = Vec::new();
    let mut batch_bytes = 0u64;
    let poll_until = Instant::now() + Duration::from_millis(200);
    while batch.len() < max_records && batch_bytes < max_bytes {
        let wait = poll_until.saturating_duration_since(Instant::now());
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                batch_bytes += (m.payload_len() + m.key_len()) as u64;
                batch.push(m);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                // every poll repeats a broker outage's error: one line per kind per window
                let limiter = &consumer.context().kafka_log;
                let text = e.to_string();
                let kind = crate::kafka_log::kind_of("consumer", &text);
                if let crate::kafka_log::Admit::Log { held_back } =
                    limiter.admit(&kind, &text, Instant::now())
                {
                    let more = crate::kafka_log::suffix(held_back, limiter.window());
                    tracing::warn!(target: LOG_TARGET, error = %e, "Kafka consumer error{more}");
                }
                break;
            }
            None => break,
        }
        if consumer.context().has_events() {
            break;
        }
    }
    batch
}

impl Archiver {
    pub(super) fn handle_events(&mut self, events: Vec<GroupEvent>) -> Result<(), ArchiveError> {
        for e in events {
            match e {
                GroupEvent::Revoked => {
                    self.report.rebalances += 1;
                    self.cfg.metrics.rebalances.inc();
                    tracing::info!(target: LOG_TARGET, "partitions revoked: dropping uncommitted buffers");
                    self.reset()?;
                    self.parts.clear();
                    self.cfg.metrics.clear_lag();
                }
                GroupEvent::Assigned(list) => self.assigned(list)?,
                GroupEvent::Failed(msg) => return Err(ArchiveError::Rebalance(msg)),
            }
        }
        Ok(())
    }

    /// A new assignment: each partition starts at the offsets read from the tables, within the
    /// broker's watermarks (an `--until-end` run freezes its end at the high one).
    fn assigned(&mut self, list: Vec<((String, i32), StartOffsets)>) -> Result<(), ArchiveError> {
        self.report.rebalances += 1;
        self.assigned_once = true;
        if list.is_empty() {
            tracing::warn!(
                target: LOG_TARGET,
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
            let (low, high) =
                fetch_watermarks_retrying(&self.consumer, &topic, p, self.cfg.watermark_timeout)?;
            let next = start.seek().unwrap_or(low).max(low);
            let end = self.cfg.until_end.then_some(high);
            tracing::info!(target: LOG_TARGET, topic = %topic, partition = p, start = ?start, low, high, "assigned");
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
        self.load_route_offsets()
    }

    /// The consumer-lag gauge of each assigned partition: records on the broker not yet
    /// committed to the table, high watermark − W (from the last statistics, see
    /// [`ArchiverContext::stats`]; partitions without statistics yet are left out).
    pub(super) fn update_lag(&self) {
        let wm = self.consumer.context().watermarks();
        for (k, s) in &self.parts {
            if let Some(&(low, high)) = wm.get(k) {
                let done = s.start.committed.unwrap_or(low).max(low);
                self.cfg.metrics.set_lag(&k.0, k.1, (high - done).max(0));
            }
        }
    }

    /// Kafka's committed offsets are for lag dashboards only (the tables are the truth).
    pub(super) fn commit_kafka_offsets(&self) {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), s) in &self.parts {
            if let Some(w) = s.start.committed {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(w));
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(target: LOG_TARGET, error = %e, "committing Kafka offsets (informational) failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
