//! The archiver against the real broker and S3 server, through the real `loglake` binary.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use rdkafka::producer::{FutureProducer, FutureRecord};
use url::Url;

use loglake_tests::archive::Archive;
use loglake_tests::{announce, kafka, loglake_cmd, s3, unique_name};

/// A Fluent Bit record (after its kubernetes filter) for message `i`; every 100th record is
/// malformed JSON when `malformed` is set.
pub(crate) fn fluentbit_record(i: usize, malformed: bool) -> Vec<u8> {
    if malformed && i % 100 == 37 {
        return format!("{{\"log\": \"truncated record {i}").into_bytes();
    }
    let ns = ["shop", "payments", "kube-system"][i % 3];
    let level = ["INFO", "WARN", "ERROR", "INFO"][i % 4];
    format!(
        concat!(
            "{{\"date\":{}.25,\"time\":\"2026-11-23T{:02}:{:02}:{:02}.{:06}Z\",\"stream\":\"stdout\",",
            "\"log\":\"{} request {} served in {}ms\\n\",",
            "\"kubernetes\":{{\"pod_name\":\"{}-{}\",\"namespace_name\":\"{}\",\"container_name\":\"app\",",
            "\"host\":\"node-{}\",\"labels\":{{\"app\":\"{}\"}}}}}}"
        ),
        1_795_000_000 + i,
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        i % 1_000_000,
        level,
        i,
        i % 250,
        ns,
        i % 7,
        ns,
        i % 4,
        ns
    )
    .into_bytes()
}

/// Produces records `first..first+n` to `topic` keyed by pod; returns per-partition counts.
pub(crate) async fn produce(
    topic: &str,
    first: usize,
    n: usize,
    malformed: bool,
) -> BTreeMap<i32, u64> {
    produce_with(topic, first, n, move |i| fluentbit_record(i, malformed)).await
}

/// Produces `record(i)` for `i` in `first..first+n` to `topic`, keyed by pod (`i % 11`); returns
/// per-partition counts.
pub(crate) async fn produce_with(
    topic: &str,
    first: usize,
    n: usize,
    record: impl Fn(usize) -> Vec<u8> + Copy,
) -> BTreeMap<i32, u64> {
    let producer = kafka().idempotent_producer(&[("compression.type", "zstd")]);
    let mut counts = BTreeMap::new();
    for chunk_start in (first..first + n).step_by(5000) {
        let chunk_end = (chunk_start + 5000).min(first + n);
        for p in send_all(&producer, topic, chunk_start..chunk_end, record).await {
            *counts.entry(p).or_insert(0u64) += 1;
        }
    }
    counts
}

/// Sends records `range` (keyed by pod, as [`produce_with`]) through `producer` concurrently and
/// waits for every acknowledgement; the partition of each.
pub(crate) async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<usize>,
    record: impl Fn(usize) -> Vec<u8> + Copy,
) -> Vec<i32> {
    let sends = range.map(|i| async move {
        let payload = record(i);
        let key = format!("pod-{}", i % 11);
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map(|d| d.partition)
            .unwrap_or_else(|(e, _)| panic!("producing record {i}: {e}"))
    });
    futures::future::join_all(sends).await
}

pub(crate) fn write_table_defs(dir: &std::path::Path, defs: &[(&str, &str)]) {
    for (name, topic) in defs {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\ntopics = [\"{topic}\"]\ndecoder = \"fluentbit\"\npartition_by = [\"dt\", \"hour\"]\nsort_by = [\"namespace\", \"pod\", \"ts\"]\nbloom_filter_columns = [\"trace_id\"]\nretention_days = 30\n"
            ),
        )
        .expect("write table def");
    }
}

#[derive(Debug, Default, serde::Deserialize, PartialEq)]
pub(crate) struct Audit {
    pub(crate) expected: u64,
    pub(crate) rows: u64,
    pub(crate) dead_letters: u64,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    /// Offsets `loglake delete` removed (absent when none).
    #[serde(default)]
    pub(crate) deleted: u64,
    /// `[partition, offset]` of the first missing offsets (absent when none).
    #[serde(default)]
    pub(crate) missing_examples: Vec<(i32, i64)>,
    /// `[partition, offset, copies]` of the first duplicated offsets (absent when none).
    #[serde(default)]
    pub(crate) duplicate_examples: Vec<(i32, i64, u32)>,
}

pub(crate) fn audit(topic: &str, table: &str, dlq: &str) -> (Audit, bool) {
    audit_at(&kafka().brokers, topic, table, dlq)
}

/// [`audit`] against the broker at `brokers`.
pub(crate) fn audit_at(brokers: &str, topic: &str, table: &str, dlq: &str) -> (Audit, bool) {
    let (v, ok) = audit_json_at(brokers, topic, table, dlq);
    let a = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("audit report {v} ({e})"));
    (a, ok)
}

/// `loglake audit` of `topic` as JSON (every field, also those [`Audit`] leaves out), and
/// whether it exited 0.
pub(crate) fn audit_json(topic: &str, table: &str, dlq: &str) -> (serde_json::Value, bool) {
    audit_json_at(&kafka().brokers, topic, table, dlq)
}

fn audit_json_at(brokers: &str, topic: &str, table: &str, dlq: &str) -> (serde_json::Value, bool) {
    let out = loglake_cmd()
        .args([
            "audit",
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--table",
            table,
            "--dlq-table",
            dlq,
        ])
        .output()
        .expect("run loglake audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "audit output {stdout:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.success())
}

pub(crate) async fn query_i64(table_url: &str, sql: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in query_batches(table_url, sql).await {
        for c in b.columns() {
            let a: &Int64Array = c.as_primitive::<Int64Type>();
            out.extend(a.values().iter().copied());
        }
    }
    out
}

/// The result of `sql` on the Delta table at `table_url`, registered as `t`.
pub(crate) async fn query_batches(
    table_url: &str,
    sql: &str,
) -> Vec<arrow::record_batch::RecordBatch> {
    deltalake::aws::register_handlers(None);
    let t = DeltaTable::try_from_url_with_storage_options(
        Url::parse(table_url).expect("url"),
        s3().storage_options(),
    )
    .await
    .expect("open table");
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state()).expect("session");
    ctx.register_table("t", t.table_provider().await.expect("provider"))
        .expect("register");
    ctx.sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("query")
}

/// `loglake archive ARGS` off the async runtime, asserting it succeeded (see
/// [`loglake_tests::archive::Archive`] to build ARGS).
pub(crate) async fn run_archive_blocking(args: Vec<String>) -> std::process::Output {
    let mut all = vec!["archive".to_string()];
    all.extend(args);
    loglake_tests::loglake_ok(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_records_into_two_tables_exactly_once_with_dead_letters() {
    let (ta, tb) = (unique_name("logs-a"), unique_name("logs-b"));
    kafka().create_topic(&ta, 3).await.expect("topic a");
    kafka().create_topic(&tb, 3).await.expect("topic b");
    let (ca, cb) = tokio::join!(
        produce(&ta, 0, 100_000, true),
        produce(&tb, 100_000, 100_000, true)
    );
    assert_eq!(ca.values().sum::<u64>(), 100_000);
    assert_eq!(
        ca.len() + cb.len(),
        6,
        "records spread over all 6 partitions"
    );

    let lake = s3().unique_url("lake");
    let defs = tempfile::tempdir().expect("tmp");
    write_table_defs(defs.path(), &[("app_a", &ta), ("app_b", &tb)]);
    let dlq = format!("{lake}/dead_letters");
    // every run uses a fresh group: offsets come from the tables, never from the group
    let archive_all = || {
        Archive::lake(&lake, &defs.path().to_string_lossy())
            .fresh_group()
            .dlq(&dlq)
            .until_end()
            .run()
    };
    let out = archive_all();
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("archive prints a JSON report");
    assert_eq!(report["records_in"], 200_000);
    assert_eq!(report["dead_letters"], 2_000);
    assert_eq!(report["rows_written"], 198_000);

    for (topic, table) in [(&ta, "app_a"), (&tb, "app_b")] {
        let (a, ok) = audit(topic, &format!("{lake}/{table}"), &dlq);
        assert_eq!(
            a,
            Audit {
                expected: 100_000,
                rows: 99_000,
                dead_letters: 1_000,
                missing: 0,
                duplicates: 0,
                ..Default::default()
            }
        );
        assert!(ok, "audit exits 0 when nothing is missing or duplicated");
    }
    // Read back: exact counts, distinct offsets, and values derived from the payloads.
    let a_url = format!("{lake}/app_a");
    let v = query_i64(
        &a_url,
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), \
         CAST(sum(CASE WHEN level = 'error' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(count(DISTINCT namespace) AS BIGINT) FROM t",
    )
    .await;
    // levels cycle INFO, WARN, ERROR, INFO: i % 4 == 2 is an error; malformed ones (i % 100 == 37) are odd, never errors.
    assert_eq!(v, vec![99_000, 99_000, 25_000, 3]);
    let v = query_i64(&dlq, &format!("SELECT count(*) FROM t WHERE kafka_topic = '{ta}' AND error IS NOT NULL AND raw IS NOT NULL")).await;
    assert_eq!(v, vec![1_000]);

    // Running again with nothing new commits nothing and duplicates nothing.
    let out = archive_all();
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    assert_eq!(report["rows_written"], 0);
    let (a, _) = audit(&ta, &a_url, &dlq);
    assert_eq!((a.missing, a.duplicates, a.rows), (0, 0, 99_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_stops_at_the_frozen_end_while_the_producer_continues() {
    // The backlog at start: its archiving takes long enough (seconds) for the producer to get
    // records into the topic beyond the frozen end while the archiver still runs.
    const BACKLOG: u64 = 50_000;
    let topic = unique_name("batch");
    kafka().create_topic(&topic, 2).await.expect("topic");
    produce(&topic, 0, BACKLOG as usize, false).await;
    let table = s3().unique_url("batch-table");
    let dlq = format!("{table}-dlq");
    let group = unique_name("g");
    let args = |t: &str| archive_args(t, &group, &table, &dlq);
    // Keep producing, 50 records at a time through one producer, until the batch run has
    // exited. Each batch's acknowledgement is logged with its time, so the test can tell what
    // was in the topic while the archiver was still running.
    let t2 = topic.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = tokio::spawn(async move {
        let producer = kafka().idempotent_producer(&[("linger.ms", "5")]);
        let mut acked: Vec<(Instant, u64)> = Vec::new();
        let mut n = BACKLOG;
        while !stop2.load(Ordering::Relaxed) && n < 200_000 {
            send_all(&producer, &t2, n as usize..n as usize + 50, |i| {
                fluentbit_record(i, false)
            })
            .await;
            n += 50;
            acked.push((Instant::now(), n));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    });
    let out = run_archive_blocking(args(&topic)).await;
    let exited = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let acked = producer.await.expect("producer");
    let total = acked.last().map_or(BACKLOG, |&(_, n)| n);
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    let first_rows = report["rows_written"].as_u64().expect("rows");
    assert!(
        first_rows >= BACKLOG,
        "at least what was there at start: {first_rows}"
    );
    // The first run stopped at its frozen end: what it wrote equals its committed offsets.
    let committed: i64 = report["offsets"]
        .as_object()
        .expect("offsets")
        .values()
        .map(|v| v.as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committed as u64, first_rows);
    // ... while the topic already held more: records acknowledged before it exited.
    let in_topic_before_exit = acked
        .iter()
        .take_while(|&&(at, _)| at < exited)
        .last()
        .map_or(BACKLOG, |&(_, n)| n);
    assert!(
        in_topic_before_exit > first_rows,
        "the producer had {in_topic_before_exit} records in the topic before the archiver exited, \
         which archived {first_rows}: it did not stop short of records that were there"
    );
    announce(&format!(
        "batch mode: frozen end {first_rows}, {in_topic_before_exit} in the topic when it exited, \
         {total} produced in all"
    ));

    // The next run continues from there and gets exactly the rest.
    let out = run_archive_blocking(args(&topic)).await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    assert_eq!(report["rows_written"].as_u64(), Some(total - first_rows));
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        a,
        Audit {
            expected: total,
            rows: total,
            dead_letters: 0,
            missing: 0,
            duplicates: 0,
            ..Default::default()
        }
    );
    assert!(ok);
}

/// A Fluent Bit record whose only time is `date` (epoch seconds), so its event time is exactly
/// `epoch_s`.
fn dated_record(i: usize, epoch_s: f64) -> Vec<u8> {
    format!(
        concat!(
            "{{\"date\":{:.3},\"stream\":\"stdout\",\"log\":\"GET /item/{} 200\\n\",",
            "\"kubernetes\":{{\"pod_name\":\"web-{}\",\"namespace_name\":\"shop\",",
            "\"container_name\":\"app\",\"host\":\"node-1\"}}}}"
        ),
        epoch_s,
        i,
        i % 3
    )
    .into_bytes()
}

/// The arguments of `loglake archive --until-end` of `topic` into `table` (+ `dlq`), in `group`.
pub(crate) fn archive_args(topic: &str, group: &str, table: &str, dlq: &str) -> Vec<String> {
    Archive::topic(topic, table)
        .group(group)
        .dlq(dlq)
        .until_end()
        .to_args()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_go_to_their_event_time_partition_and_are_counted() {
    let topic = unique_name("late");
    kafka().create_topic(&topic, 2).await.expect("topic");
    // Event times, all reaching Kafka now: 300 records of 2024-05-01 03:00:00Z + i s (years
    // late), 100 of three hours ago (late by the default 1h), 100 of now (on time).
    produce_with(&topic, 0, 300, |i| {
        dated_record(i, 1_714_532_400.0 + i as f64)
    })
    .await;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    produce_with(&topic, 300, 100, move |i| {
        dated_record(i, now_s - 3.0 * 3600.0)
    })
    .await;
    produce_with(&topic, 400, 100, move |i| dated_record(i, now_s)).await;

    let run = |late_after: Option<&str>| {
        let table = s3().unique_url("late-table");
        let dlq = format!("{table}-dlq");
        let mut args = archive_args(&topic, &unique_name("g"), &table, &dlq);
        if let Some(d) = late_after {
            args.extend(["--late-after".to_string(), d.to_string()]);
        }
        async move {
            let out = run_archive_blocking(args).await;
            let report: serde_json::Value =
                serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
            assert_eq!(report["rows_written"], 500);
            (table, report["late_rows"].as_u64())
        }
    };
    let (table, late) = run(None).await;
    assert_eq!(late, Some(400));
    // The late rows are in their event-time partitions, not in the partition of their arrival.
    assert_eq!(
        query_i64(
            &table,
            "SELECT count(*) FROM t WHERE CAST(dt AS VARCHAR) = '2024-05-01' AND CAST(hour AS BIGINT) = 3"
        )
        .await,
        vec![300]
    );
    assert_eq!(
        query_i64(
            &table,
            "SELECT count(*) FROM t WHERE CAST(dt AS VARCHAR) = CAST(CAST(ts AS DATE) AS VARCHAR) \
             AND CAST(hour AS BIGINT) = CAST(date_part('hour', ts) AS BIGINT)"
        )
        .await,
        vec![500]
    );
    // The allowance is `--late-after`.
    assert_eq!(run(Some("7d")).await.1, Some(300));
    assert_eq!(run(Some("36500d")).await.1, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_fails_and_names_the_offsets_when_records_are_not_archived() {
    let topic = unique_name("audit");
    kafka().create_topic(&topic, 1).await.expect("topic");
    produce(&topic, 0, 1_000, false).await;
    let table = s3().unique_url("audit-table");
    let dlq = format!("{table}-dlq");
    let group = unique_name("g");
    run_archive_blocking(archive_args(&topic, &group, &table, &dlq)).await;
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (a.expected, a.rows, a.missing, a.duplicates),
        (1_000, 1_000, 0, 0)
    );
    assert!(ok, "a complete table audits clean (exit 0)");

    // 25 more records that no archiver has seen: the audit names them and exits non-zero.
    produce(&topic, 1_000, 25, false).await;
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        a,
        Audit {
            expected: 1_025,
            rows: 1_000,
            dead_letters: 0,
            missing: 25,
            duplicates: 0,
            missing_examples: (1_000..1_010).map(|o| (0, o)).collect(),
            ..Default::default()
        }
    );
    assert!(!ok, "missing records make `loglake audit` exit non-zero");

    // The next run archives exactly those and the audit is clean again.
    let out = run_archive_blocking(archive_args(&topic, &group, &table, &dlq)).await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    assert_eq!(report["rows_written"], 25);
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (a.expected, a.rows, a.missing, a.duplicates),
        (1_025, 1_025, 0, 0)
    );
    assert!(ok);
}

/// Records that cannot be decoded while no dead-letter table is configured: the run fails with
/// exit 1, naming the count and the first bad record (topic, partition, offset, reason), and
/// commits nothing at or past it; the next run in the same group with `--dlq-table` archives
/// every record exactly once, the bad ones as dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_without_a_dead_letter_table_stop_the_run_and_nothing_is_lost() {
    let topic = unique_name("nodlq");
    kafka().create_topic(&topic, 1).await.expect("topic");
    // 1,000 records, offsets 37, 137, … 937 malformed
    produce(&topic, 0, 1_000, true).await;
    let table = s3().unique_url("nodlq-table");
    let dlq = format!("{table}-dlq");
    let group = unique_name("g");
    let run = Archive::topic(&topic, &table).group(&group).until_end();
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run.output()
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not be decoded and no --dlq-table is configured")
            && stderr.contains(&format!("(first: {topic}[0] offset 37: "))
            && stderr.contains("refusing to drop them"),
        "{stderr}"
    );
    // nothing at or past the first bad record is in the table
    let (a, ok) = audit(&topic, &table, &dlq);
    assert!(!ok, "{a:?}");
    assert!(a.rows <= 37, "{a:?}");
    assert_eq!(
        (a.expected, a.missing, a.duplicates, a.dead_letters),
        (1_000, 1_000 - a.rows, 0, 0),
        "{a:?}"
    );

    // the same group again, now with a dead-letter table
    run.dlq(&dlq).run_blocking().await;
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (a.expected, a.rows, a.dead_letters, a.missing, a.duplicates),
        (1_000, 990, 10, 0, 0),
        "{a:?}"
    );
    assert!(ok);
}

/// xorshift64: the crash loops' reproducible random kill times.
pub(crate) fn next_rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// When a crash loop SIGKILLs an incarnation.
pub(crate) enum KillAt {
    /// This long after its start.
    After(Duration),
    /// `then` after its first commit: the table's version has moved past `before`, read before
    /// the incarnation started.
    AfterCommit { before: i64, then: Duration },
}

/// SIGKILLs incarnation `n` of a crash loop (no flush, no graceful anything) at `when`. Waits for
/// a commit at most 180 s, and fails if the incarnation exits by itself before.
pub(crate) async fn kill_incarnation(
    child: &mut std::process::Child,
    table: &str,
    n: u32,
    when: KillAt,
) {
    let delay = match when {
        KillAt::After(d) => d,
        KillAt::AfterCommit { before, then } => {
            let deadline = Instant::now() + Duration::from_secs(180);
            while table_version(table).await <= before {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("incarnation {n} of the crash loop exited by itself ({status})");
                }
                assert!(
                    Instant::now() < deadline,
                    "incarnation {n} of the crash loop made no commit to {table} in 180 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            then
        }
    };
    tokio::time::sleep(delay).await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The latest version of the table at `url`, -1 while it does not exist.
pub(crate) async fn table_version(url: &str) -> i64 {
    deltalake::aws::register_handlers(None);
    match DeltaTable::try_from_url_with_storage_options(
        Url::parse(url).expect("url"),
        s3().storage_options(),
    )
    .await
    {
        Ok(t) => t.version().map_or(-1, |v| v as i64),
        Err(_) => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_with_sigkill_loses_and_duplicates_nothing() {
    let topic = unique_name("crash");
    kafka().create_topic(&topic, 3).await.expect("topic");
    let table = s3().unique_url("crash-table");
    let dlq = format!("{table}-dlq");
    let group = unique_name("g");
    // A producer that keeps writing (1% malformed) during the whole crash loop.
    let t2 = topic.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = tokio::spawn(async move {
        let mut i = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            produce(&t2, i, 500, true).await;
            i += 500;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i
    });
    // Every incarnation and the final run use one group, as a restarted pod does. They are one
    // static member (`--instance-id`, as the pod name on Kubernetes): a restart takes the killed
    // incarnation's partitions back at once instead of waiting for its session to time out.
    let mut base_args = vec!["archive".to_string()];
    base_args.extend(Archive::topic(&topic, &table).dlq(&dlq).to_args());
    let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
    let kills = 20;
    let started = Instant::now();
    for kill in 0..kills {
        let before = table_version(&table).await;
        let mut child = loglake_cmd()
            .args(&base_args)
            .args([
                "--roll-interval",
                "300ms",
                "--group",
                &group,
                "--instance-id",
                "archiver-0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn archiver");
        // Odd incarnations die 1–11 s after their start (before, during or after their first
        // commits); even ones 0–1.5 s after their first commit: the loop exercises recovery from
        // committed state however long a start takes on a loaded machine.
        let when = if kill % 2 == 0 {
            KillAt::AfterCommit {
                before,
                then: Duration::from_millis(next_rng(&mut rng_state) % 1_500),
            }
        } else {
            KillAt::After(Duration::from_millis(
                1_000 + next_rng(&mut rng_state) % 10_000,
            ))
        };
        kill_incarnation(&mut child, &table, kill, when).await;
    }
    let versions_before_final = table_version(&table).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced = producer.await.expect("producer") as u64;
    // The killed incarnations did commit (the loop exercised recovery, not just startup).
    assert!(
        versions_before_final >= 5,
        "only {versions_before_final} commits in {kills} incarnations of the crash loop"
    );
    announce(&format!(
        "crash loop: {kills} SIGKILLs, table version {versions_before_final} before the final run"
    ));
    assert!(produced > 0);
    // A final batch run to the end, as the same static member.
    crate::restart::finish_after_kills(&topic, &group, &table, true).await;
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        a.expected, produced,
        "the broker holds every produced record"
    );
    assert_eq!(
        (a.missing, a.duplicates),
        (0, 0),
        "after {kills} SIGKILLs in {:?}: {a:?}",
        started.elapsed()
    );
    assert_eq!(a.rows + a.dead_letters, produced);
    assert!(a.dead_letters > 0 && a.rows > 0);
    assert!(ok);
}

/// Produces `record(i)` for `i` in `first..first+n` to one partition of `topic`.
async fn produce_to_partition(
    topic: &str,
    partition: i32,
    first: usize,
    n: usize,
    record: impl Fn(usize) -> Vec<u8>,
) {
    let producer = kafka().idempotent_producer(&[]);
    let mut sends = Vec::new();
    for i in first..first + n {
        let payload = record(i);
        let producer = producer.clone();
        let topic = topic.to_string();
        sends.push(async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload(&payload),
                    Duration::from_secs(60),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("producing record {i}: {e}"))
        });
    }
    futures::future::join_all(sends).await;
}

/// A crash between the dead-letter commit and the table commit leaves the dead-letter offset D
/// of a partition ahead of the table's W. The next run re-reads from W and must skip the bad
/// records below D — also after its first commits, which happen before it has read up to D
/// again. (A commit that set D back to where the run had read to made the run write those bad
/// records a second time: the duplicates the crash loop once saw under load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_dead_letter_and_the_table_commit_duplicates_nothing() {
    let topic = unique_name("dlq-ahead");
    kafka().create_topic(&topic, 2).await.expect("topic");
    // Partition 0: 10,000 records, 1 % malformed.
    produce_to_partition(&topic, 0, 0, 10_000, |i| fluentbit_record(i, true)).await;
    let table = s3().unique_url("dlq-ahead-table");
    let dlq = format!("{table}-dlq");
    let base = |group: &str| archive_args(&topic, group, &table, &dlq);
    // Run 1 commits dead letters (D = 10,000), then the table (W = 10,000) — one commit each.
    run_archive_blocking(base(&unique_name("g"))).await;
    let (a, _) = audit(&topic, &table, &dlq);
    assert_eq!((a.rows, a.dead_letters), (9_900, 100), "{a:?}");
    // Undo the table commit, as if the archiver had died between the two commits: the table is
    // back at its CREATE (no W), the dead-letter table keeps D = 10,000.
    let prefix = Url::parse(&table)
        .expect("url")
        .path()
        .trim_matches('/')
        .to_string();
    let log: Vec<String> = s3()
        .list(&format!("{prefix}/_delta_log/"))
        .await
        .expect("list")
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    assert_eq!(log.len(), 2, "CREATE + one append: {log:?}");
    let store = s3().object_store().expect("store");
    use object_store::ObjectStoreExt;
    store
        .delete(&object_store::path::Path::from(log[1].as_str()))
        .await
        .expect("delete the table's last commit");
    assert_eq!(table_version(&table).await, 0);
    // Partition 1: 2,000 records, all malformed, so every commit of run 2 that holds any of them
    // commits dead letters while partition 0 is still below its D.
    produce_to_partition(&topic, 1, 0, 2_000, |i| {
        format!("not json {i}").into_bytes()
    })
    .await;
    // Run 2 commits after every poll batch; fetches of at most 32 KiB per partition and 64 KiB in
    // all make the batches small and mix both partitions, so there are several commits before
    // partition 0 is back at 10,000.
    let mut args = base(&unique_name("g"));
    args.extend(
        [
            "--roll-interval",
            "1ms",
            "--memory-budget",
            "8MiB",
            "-X",
            "max.partition.fetch.bytes=32768",
            "-X",
            "fetch.max.bytes=65536",
            "-X",
            "message.max.bytes=65536",
        ]
        .map(String::from),
    );
    let out = run_archive_blocking(args).await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    assert!(
        report["commits"].as_u64().unwrap_or(0) >= 4,
        "run 2 committed in several steps: {report}"
    );
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        a,
        Audit {
            expected: 12_000,
            rows: 9_900,
            dead_letters: 2_100,
            missing: 0,
            duplicates: 0,
            ..Default::default()
        }
    );
    assert!(ok);
}

/// The single-table form with `--partition-by namespace`: the table is created partitioned by
/// dt, hour and namespace, every file sits under its rows' namespace, and the table refuses to
/// be opened with other partition columns afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_by_adds_a_partition_column_to_the_single_table_form() {
    const N: usize = 600;
    let topic = unique_name("pby");
    kafka().create_topic(&topic, 2).await.expect("topic");
    produce(&topic, 0, N, false).await;
    let table = s3().unique_url("pby-table");
    let dlq = format!("{table}-dlq");
    let group = unique_name("g");
    let mut args = archive_args(&topic, &group, &table, &dlq);
    args.extend(["--partition-by".to_string(), "namespace".to_string()]);
    let out = run_archive_blocking(args).await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    assert_eq!(report["rows_written"], N);

    deltalake::aws::register_handlers(None);
    let t = DeltaTable::try_from_url_with_storage_options(
        Url::parse(&table).expect("url"),
        s3().storage_options(),
    )
    .await
    .expect("open table");
    let snapshot = t.snapshot().expect("snapshot");
    assert_eq!(
        snapshot.metadata().partition_columns(),
        &["dt", "hour", "namespace"]
    );
    let mut namespaces = std::collections::BTreeSet::new();
    for f in snapshot.log_data().iter() {
        let pv = f.partition_values_map();
        let ns = pv
            .get("namespace")
            .cloned()
            .flatten()
            .expect("namespace value");
        let path = f.path().to_string();
        // the path's hour is zero-padded (`writer::partition_segment`), its value is not
        let hour: u32 = pv["hour"].as_deref().expect("hour").parse().expect("hour");
        assert!(
            path.starts_with(&format!(
                "dt={}/hour={hour:02}/namespace={ns}/part-",
                pv["dt"].clone().expect("dt"),
            )),
            "{path} does not match its partition values {pv:?}"
        );
        namespaces.insert(ns);
    }
    assert_eq!(
        namespaces.into_iter().collect::<Vec<_>>(),
        ["kube-system", "payments", "shop"]
    );
    // each namespace's rows are in its partition: 200 each (`fluentbit_record`: i % 3)
    let per_ns = query_i64(
        &table,
        "SELECT count(*) FROM t GROUP BY namespace ORDER BY namespace",
    )
    .await;
    assert_eq!(per_ns, [200, 200, 200]);
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!((a.rows, a.missing, a.duplicates), (N as u64, 0, 0));
    assert!(ok);

    // without the flag, the same table is refused, and nothing is written
    let out = loglake_cmd()
        .arg("archive")
        .args(archive_args(&topic, &unique_name("g"), &table, &dlq))
        .output()
        .expect("run loglake archive");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "opened with other partition columns");
    assert!(
        stderr.contains("partitioned by [dt, hour, namespace], not [dt, hour]"),
        "{stderr}"
    );
}
