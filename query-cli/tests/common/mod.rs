//! Shared fixtures: a small lake of Delta tables written by the test itself.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use loglake_archiver::fixture::{FixtureOptions, generated_rows, write_container_table};

/// Repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// In-repo copies of the peer suites.
pub fn peer_suites() -> PathBuf {
    repo_root().join("tests/data/peer-suites")
}

fn ts(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_micros())
        .unwrap_or_else(|e| panic!("bad ts {s}: {e}"))
}

async fn write(dir: &Path, batch: RecordBatch, partition: &[&str]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let url = url::Url::from_directory_path(dir).expect("url");
    let t = deltalake::DeltaTable::try_from_url(url)
        .await
        .expect("open");
    let mut w = t.write(vec![batch]);
    if !partition.is_empty() {
        w = w.with_partition_columns(partition.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    w.await.expect("write delta");
}

/// The `logs` table's generator options: 3,000 Fluent Bit records of one namespace (`team-0`,
/// 18 pods), one per second from 2024-05-01T00:35:00Z (1,500 in hour 0, 1,500 in hour 1),
/// written in two commits over 12 Kafka partitions.
pub fn logs_options() -> FixtureOptions {
    FixtureOptions {
        namespaces: 1,
        start_unix_secs: 1_714_523_700,
        records_per_second: 1,
        commits: 2,
        ..FixtureOptions::new(3000).expect("fixture options")
    }
}

/// The rows of `logs`, decoded in memory from the same records (Kafka order), for tests that
/// compute their expected values without the engine.
pub fn logs_rows() -> RecordBatch {
    generated_rows(&logs_options()).expect("generated rows")
}

/// Build the fixture lake under `root`:
/// * `logs`: the generated container logs of [`logs_options`], written as `loglake archive`
///   writes the shipped `containers` table (archiver/src/fixture.rs): version 0 creates the
///   table, versions 1 and 2 add 1,500 rows each, one file per hour (2 files);
/// * `svc/app` (registered as `app`): 14 hand-written log lines of two pods;
/// * `k8s/events` (registered as `events`): 4 hand-written Kubernetes events.
pub async fn build_lake(root: &Path) {
    let report = write_container_table(root.join("logs").to_str().expect("utf8"), &logs_options())
        .await
        .expect("generate logs");
    assert_eq!((report.rows, report.files, report.version), (3000, 2, 2));

    let tsz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let app_schema = Arc::new(Schema::new(vec![
        Field::new("ts", tsz.clone(), false),
        Field::new("namespace", DataType::Utf8, false),
        Field::new("pod", DataType::Utf8, false),
        Field::new("container", DataType::Utf8, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("dt", DataType::Date32, false),
    ]));
    // pod a on node-1, pod b on node-2; one ERROR in each pod; trace t1 spans both pods
    let rows: &[(&str, &str, &str, &str, Option<&str>)] = &[
        (
            "2024-05-01T10:00:00Z",
            "a",
            "node-1",
            "INFO starting server on port 8080",
            None,
        ),
        (
            "2024-05-01T10:00:01Z",
            "a",
            "node-1",
            "INFO connected to db 10.0.0.5:5432",
            None,
        ),
        (
            "2024-05-01T10:00:02Z",
            "a",
            "node-1",
            "DEBUG cache warm 120 keys",
            None,
        ),
        (
            "2024-05-01T10:00:03Z",
            "a",
            "node-1",
            "INFO GET /api/v1/orders 200 12ms",
            Some("t1"),
        ),
        (
            "2024-05-01T10:00:04Z",
            "a",
            "node-1",
            "ERROR upstream timeout after 3000ms",
            Some("t1"),
        ),
        (
            "2024-05-01T10:00:05Z",
            "a",
            "node-1",
            "WARN retrying request 2 of 3",
            Some("t1"),
        ),
        (
            "2024-05-01T10:00:06Z",
            "a",
            "node-1",
            "INFO GET /api/v1/orders 200 15ms",
            None,
        ),
        (
            "2024-05-01T10:00:07Z",
            "a",
            "node-1",
            "INFO shutting down",
            None,
        ),
        (
            "2024-05-01T10:00:00Z",
            "b",
            "node-2",
            "INFO starting worker",
            None,
        ),
        (
            "2024-05-01T10:00:02Z",
            "b",
            "node-2",
            "{\"level\":\"info\",\"msg\":\"job\",\"latency_ms\":42}",
            Some("t1"),
        ),
        (
            "2024-05-01T10:00:10Z",
            "b",
            "node-2",
            "{\"level\":\"error\",\"msg\":\"oom\",\"latency_ms\":900}",
            Some("t2"),
        ),
        (
            "2024-05-01T10:00:20Z",
            "b",
            "node-2",
            "ERROR OOMKilled container app",
            None,
        ),
        (
            "2024-05-01T10:00:30Z",
            "b",
            "node-2",
            "INFO restarted",
            None,
        ),
        ("2024-05-01T10:00:40Z", "b", "node-2", "INFO ready", None),
    ];
    let day = 19844; // 2024-05-01
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| ts(r.0)).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec!["shop"; rows.len()])),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec!["app"; rows.len()])),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(vec![day; rows.len()])),
    ];
    write(
        &root.join("svc/app"),
        RecordBatch::try_new(app_schema, cols).expect("batch"),
        &["dt"],
    )
    .await;

    let ev_schema = Arc::new(Schema::new(vec![
        Field::new("ts", tsz, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("pod", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]));
    let ev: &[(&str, &str, &str, &str)] = &[
        ("2024-05-01T10:00:09Z", "node-1", "a", "Unhealthy"),
        ("2024-05-01T10:00:21Z", "node-2", "b", "OOMKilling"),
        ("2024-05-01T10:00:25Z", "node-2", "b", "BackOff"),
        ("2024-05-01T11:00:00Z", "node-2", "b", "Pulled"),
    ];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from(ev.iter().map(|r| ts(r.0)).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(
            ev.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            ev.iter().map(|r| r.2).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            ev.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
    ];
    write(
        &root.join("k8s/events"),
        RecordBatch::try_new(ev_schema, cols).expect("batch"),
        &[],
    )
    .await;
}
