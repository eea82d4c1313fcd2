//! The readers data teams use see exactly what the archiver wrote. `loglake gen` (with malformed
//! records) goes through the broker, `loglake archive --until-end` writes a container table and
//! its dead letters to the S3 server, and `tests/python/readers.py` reads them with delta-rs's
//! Python package and polars (from S3), DuckDB's delta extension (Delta Kernel) and PySpark (a
//! local copy; Spark reads the Parquet files, its Delta jars are not installable here). Every
//! reader must give the same aggregates as loglake's own DataFusion reading, and the row and dead-
//! letter offsets must add up to every offset the broker holds. Then `loglake compact` sorts the
//! table (bloom filters on `trace_id`) and every reader must give the same answers again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::archiver::query_i64;
use loglake_tests::archive::Archive;
use loglake_tests::{kafka, loglake_ok, retry, s3, unique_name};

/// The aggregates each reader computes (tests/python/readers.py's `AGG`, in loglake's dialect).
const AGG: &str = "SELECT count(*), count(DISTINCT pod), count(DISTINCT namespace), \
     sum(kafka_offset), CAST(min(ts) AS BIGINT), CAST(max(ts) AS BIGINT), \
     sum(CASE WHEN level = 'error' THEN 1 ELSE 0 END), count(DISTINCT trace_id), \
     CAST(sum(octet_length(message)) AS BIGINT) FROM t";
/// `traces` and `message_bytes` read the `DELTA_LENGTH_BYTE_ARRAY` columns (`trace_id`,
/// `message`): every reader must decode that encoding.
const AGG_NAMES: [&str; 9] = [
    "n",
    "pods",
    "namespaces",
    "offset_sum",
    "min_us",
    "max_us",
    "errors",
    "traces",
    "message_bytes",
];
const RECORDS: u64 = 6_000;
const NAMESPACES: u64 = 4;

/// Copies the objects under `prefix` (an `s3://bucket/prefix` URL's path) into `dir`: every one,
/// or (`skip`) all but those whose path relative to `prefix` is in `skip` — a compacted table's
/// removed files, which a reader of bare Parquet would count twice (vacuum deletes them later).
async fn download(prefix: &str, dir: &Path, skip: &BTreeSet<String>) -> usize {
    let store = s3().object_store().expect("s3 client");
    let p = object_store::path::Path::from(prefix);
    let metas: Vec<_> = store
        .list(Some(&p))
        .try_collect()
        .await
        .expect("list objects");
    for m in &metas {
        let rel = m
            .location
            .as_ref()
            .strip_prefix(p.as_ref())
            .expect("under prefix")
            .trim_start_matches('/');
        if skip.contains(rel) {
            continue;
        }
        let dest = dir.join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        let bytes = store
            .get(&m.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        std::fs::write(&dest, &bytes).expect("write");
    }
    metas.len() - skip.len()
}

/// Sum of every offset the broker holds for `topic` (partitions start at offset 0).
fn offsets_sum(topic: &str) -> (u64, u64) {
    let consumer: BaseConsumer = kafka().config().create().expect("client");
    let md = retry("metadata", || {
        consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
    });
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let (mut n, mut sum) = (0u64, 0u64);
    for p in parts {
        let (low, high) = retry("watermarks", || {
            consumer.fetch_watermarks(topic, p, std::time::Duration::from_secs(10))
        });
        assert_eq!(low, 0, "partition {p} starts at {low}");
        let high = high as u64;
        n += high;
        sum += high * high.saturating_sub(1) / 2;
    }
    (n, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_deltalake_duckdb_polars_and_spark_read_what_the_archiver_wrote() {
    let topic = unique_name("readers");
    kafka().create_topic(&topic, 3).await.expect("topic");
    loglake_ok(&[
        "gen",
        "--brokers",
        &kafka().brokers,
        "--topic",
        &topic,
        "--records",
        &RECORDS.to_string(),
        "--namespaces",
        &NAMESPACES.to_string(),
        "--malformed-per-mille",
        "20",
        "--start",
        "2024-05-01T22:00:00Z",
        "--records-per-second",
        "1",
    ])
    .await;

    let lake = s3().unique_url("readers");
    let (table, dlq) = (format!("{lake}/logs"), format!("{lake}/dead_letters"));
    let out = Archive::topic(&topic, &table)
        .fresh_group()
        .dlq(&dlq)
        .until_end()
        .run_blocking()
        .await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("archive report");
    let rows = report["rows_written"].as_u64().expect("rows");
    let dead = report["dead_letters"].as_u64().expect("dead letters");
    assert_eq!(rows + dead, RECORDS);
    assert!(dead > 0, "the run must have dead letters");

    // loglake's own reading (delta-rs + DataFusion) is the reference
    let ours: BTreeMap<&str, i64> = AGG_NAMES
        .iter()
        .copied()
        .zip(query_i64(&table, AGG).await)
        .collect();
    let (dlq_n, dlq_sum) = {
        let v = query_i64(
            &dlq,
            "SELECT count(*), CAST(sum(kafka_offset) AS BIGINT) FROM t",
        )
        .await;
        (v[0] as u64, v[1] as u64)
    };
    assert_eq!(ours["n"] as u64, rows);
    assert_eq!(dlq_n, dead);
    assert_eq!(ours["namespaces"] as u64, NAMESPACES);
    assert!(ours["traces"] > 0, "{ours:?}");
    assert!(ours["message_bytes"] > rows as i64 * 20, "{ours:?}");
    // rows + dead letters hold every offset of the topic, each once
    let (broker_n, broker_sum) = offsets_sum(&topic);
    assert_eq!(broker_n, RECORDS);
    assert_eq!(ours["offset_sum"] as u64 + dlq_sum, broker_sum);
    // 6,000 records at 1 per second of event time from 22:00: 100 minutes, across midnight
    assert!(ours["min_us"] >= 1_714_600_800_000_000, "{ours:?}");
    assert!(
        ours["max_us"] < 1_714_600_800_000_000 + 6_001_000_000,
        "{ours:?}"
    );

    let before = read_everywhere(&lake, &ours, dead, dlq_sum, &BTreeSet::new()).await;

    // The same table compacted (sorted by namespace, pod, ts; bloom filters on trace_id): every
    // reader sees the same answers. The 100 minutes of event time ended in 2024: all closed.
    let files_before = crate::compactor::active_files(&table).await;
    let report = crate::compactor::compact(crate::compactor::sort_args(&table, &[])).await;
    let files_after = crate::compactor::active_files(&table).await;
    assert_eq!(
        report["files_in"].as_u64(),
        Some(files_before.len() as u64),
        "{report}"
    );
    assert_eq!(
        report["files_out"].as_u64(),
        Some(files_after.len() as u64),
        "{report}"
    );
    assert!(files_after.len() <= files_before.len(), "{report}");
    assert!(
        files_after.keys().all(|p| !files_before.contains_key(p)),
        "{report}"
    );
    let again: BTreeMap<&str, i64> = AGG_NAMES
        .iter()
        .copied()
        .zip(query_i64(&table, AGG).await)
        .collect();
    assert_eq!(again, ours, "loglake's answers changed by compaction");
    let removed: BTreeSet<String> = files_before.keys().map(|p| format!("logs/{p}")).collect();
    let after = read_everywhere(&lake, &ours, dead, dlq_sum, &removed).await;
    assert_eq!(after["spark"]["n"], before["spark"]["n"]);
}

/// Runs tests/python/readers.py on the lake's `logs` and `dead_letters` tables (from S3, and local
/// copies without the objects in `skip`) and checks every reader against loglake's answers
/// `ours`, `dead` dead letters and their offset sum `dlq_sum`; what the readers printed.
async fn read_everywhere(
    lake: &str,
    ours: &BTreeMap<&str, i64>,
    dead: u64,
    dlq_sum: u64,
    skip: &BTreeSet<String>,
) -> serde_json::Value {
    let (table, dlq) = (format!("{lake}/logs"), format!("{lake}/dead_letters"));
    // local copies for the readers that take a directory (DuckDB's extension cannot load httpfs
    // offline; Spark has no S3A jars here)
    let local = tempfile::tempdir().expect("tmp");
    let prefix = lake
        .strip_prefix(&format!("s3://{}/", s3().bucket))
        .expect("bucket prefix")
        .to_string();
    let copied = download(&prefix, local.path(), skip).await;
    assert!(copied > 4, "{copied} objects under {lake}");
    let (local_table, local_dlq) = (local.path().join("logs"), local.path().join("dead_letters"));

    let python = Path::new(
        &std::env::var("LOGLAKE_TEST_VENV")
            .expect("LOGLAKE_TEST_VENV (eval \"$(scripts/install-test-deps.sh)\")"),
    )
    .join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/readers.py");
    let options = serde_json::to_string(&s3().storage_options()).expect("json");
    let (table2, dlq2) = (table.clone(), dlq.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .args([&table2, &dlq2])
            .arg(&local_table)
            .arg(&local_dlq)
            .env("LOGLAKE_READERS_STORAGE_OPTIONS", options)
            .output()
            .expect("run readers.py")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "readers.py failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("readers JSON");
    for reader in ["deltalake", "duckdb", "polars", "spark"] {
        let r = &seen[reader];
        assert!(r["error"].is_null(), "{reader}: {}", r);
        for name in AGG_NAMES {
            assert_eq!(
                r[name].as_i64(),
                Some(ours[name]),
                "{reader} sees {name} = {}, loglake {}",
                r[name],
                ours[name]
            );
        }
    }
    assert_eq!(seen["deltalake"]["protocol"], serde_json::json!([1, 2]));
    assert_eq!(seen["spark"]["ts_type"], "timestamp");
    for reader in ["deltalake", "duckdb"] {
        let d = &seen[reader]["dead_letters"];
        assert_eq!(d["n"].as_u64(), Some(dead), "{reader} dead letters {d}");
        assert_eq!(d["offset_sum"].as_u64(), Some(dlq_sum), "{reader} {d}");
    }
    seen
}
