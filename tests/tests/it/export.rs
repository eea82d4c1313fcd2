//! `loglake export hive` and `loglake export ml` through the real binary, on lakes that `loglake
//! gen` + `loglake archive --until-end` filled through the broker. The exports are read back
//! by other engines: Spark with a Derby Hive metastore (the emitted DDL), pyarrow, the `tfrecord`
//! reader from PyPI with CRCs checked by `crc32c`; and compared with `loglake query` on the Delta
//! table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use loglake_tests::archive::Archive;
use loglake_tests::{Proc, announce, kafka, loglake_cmd, loglake_ok, s3, unique_name};

const DAY: &str = "2024-05-01";

fn python() -> PathBuf {
    Path::new(
        &std::env::var("LOGLAKE_TEST_VENV")
            .expect("LOGLAKE_TEST_VENV (eval \"$(scripts/install-test-deps.sh)\")"),
    )
    .join("bin/python")
}

/// Runs an embedded Python script with `args`; its stdout parsed as JSON.
async fn run_python(script: &'static str, args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg("-c")
            .arg(script)
            .args(&args)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("python JSON {e}: {stdout}"))
}

/// `loglake gen` of `records` container logs from `start` (1 per second of event time) into a
/// new topic; the topic.
async fn gen_topic(records: u64, start: &str, seed: u64) -> String {
    let topic = unique_name("export");
    kafka().create_topic(&topic, 3).await.expect("topic");
    gen_into(&topic, records, start, seed).await;
    topic
}

async fn gen_into(topic: &str, records: u64, start: &str, seed: u64) {
    let args: Vec<String> = [
        "gen",
        "--brokers",
        &kafka().brokers,
        "--topic",
        topic,
        "--records",
        &records.to_string(),
        "--namespaces",
        "4",
        "--seed",
        &seed.to_string(),
        "--start",
        start,
        "--records-per-second",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || loglake_cmd().args(&args).output())
        .await
        .expect("join")
        .expect("run loglake gen");
    assert!(
        out.status.success(),
        "loglake gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Archives `topic` into `<lake>/containers` (+ dead letters); rows written.
async fn archive(topic: &str, lake: &str) -> u64 {
    let out = Archive::topic(topic, &format!("{lake}/containers"))
        .fresh_group()
        .dlq(&format!("{lake}/dead_letters"))
        .until_end()
        .run_blocking()
        .await;
    let report: Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("archive report");
    report["rows_written"].as_u64().expect("rows")
}

fn export_cmd(args: &[String]) -> Command {
    let mut c = loglake_cmd();
    c.arg("export").args(args);
    c
}

/// Runs `loglake export ARGS` to the end.
async fn export(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || export_cmd(&args).output())
        .await
        .expect("join")
        .expect("run loglake export")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "loglake export failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.trim_ascii()).expect("export summary JSON")
}

/// `loglake query --lake LAKE -c SQL --format json`: the rows.
async fn query(lake: &str, sql: &str) -> Vec<Value> {
    let out = loglake_ok(&["query", "--lake", lake, "-c", sql, "--format", "json"]).await;
    let v: Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("query JSON");
    v.as_array().expect("rows").clone()
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Every file below `dir`, relative, `/`-separated.
fn files_below(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("below");
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

/// The day's files of a local Hive export, as the manifest lists them, when `_SUCCESS` exists;
/// checks that then the day holds exactly those files and the manifest's rows equal `rows`.
fn check_complete_day(root: &Path, rows: u64) -> Option<Value> {
    let day = root.join(format!("dt={DAY}"));
    if !day.join("_SUCCESS").exists() {
        return None;
    }
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(day.join("_manifest.json")).expect("a _SUCCESS day has its manifest"),
    )
    .expect("manifest JSON");
    let listed: BTreeSet<String> = manifest["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["files"].as_array().expect("files").iter())
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect();
    let present: BTreeSet<String> = files_below(&day)
        .into_iter()
        .map(|f| format!("dt={DAY}/{f}"))
        .filter(|f| !f.ends_with("/_SUCCESS") && !f.ends_with("/_manifest.json"))
        .collect();
    assert_eq!(
        present, listed,
        "a day with _SUCCESS holds exactly the manifest's files"
    );
    assert_eq!(manifest["rows"].as_u64(), Some(rows), "{manifest}");
    Some(manifest)
}

/// Reads the Hive layout with pyarrow (every data file, hidden ones skipped as Spark does):
/// rows per (dt, hour) and the sum of kafka_offset.
const PYARROW_HIVE: &str = r#"
import json, sys
import pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
t = d.to_table(columns=["kafka_offset", "dt", "hour"])
out = {}
for dt, hour, off in zip(t["dt"].to_pylist(), t["hour"].to_pylist(), t["kafka_offset"].to_pylist()):
    k = f"{dt}/{hour}"
    n, s = out.get(k, (0, 0))
    out[k] = (n + 1, s + off)
print(json.dumps({k: {"n": n, "offsets": s} for k, (n, s) in out.items()}))
"#;

/// Spark with a local Derby Hive metastore: runs the export's DDL, then per partition the
/// aggregates loglake computes, and the types Spark reads.
const SPARK_HIVE: &str = r#"
import json, sys
from pyspark.sql import SparkSession
create, parts, meta, warehouse = sys.argv[1:5]
spark = (
    SparkSession.builder.master("local[1]")
    .appName("loglake-export-hive")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.sql.warehouse.dir", warehouse)
    .config("spark.hadoop.javax.jdo.option.ConnectionURL", f"jdbc:derby:;databaseName={meta};create=true")
    .enableHiveSupport()
    .getOrCreate()
)
try:
    for path in (create, parts):
        for stmt in open(path).read().split(";\n"):
            if stmt.strip():
                spark.sql(stmt)
    rows = spark.sql(
        "SELECT CAST(dt AS STRING) AS dt, CAST(hour AS BIGINT) AS hour, count(*) AS n, "
        "sum(kafka_offset) AS offsets, count(DISTINCT trace_id) AS traces, "
        "sum(octet_length(message)) AS message_bytes, unix_micros(min(ts)) AS min_us, "
        "unix_micros(max(ts)) AS max_us, sum(unix_micros(ts)) AS ts_sum, "
        "sum(size(labels)) AS labels, sum(size(attrs)) AS attrs "
        "FROM loglake_it.containers GROUP BY 1, 2 ORDER BY 1, 2"
    ).collect()
    t = spark.table("loglake_it.containers")
    out = {
        "partitions": [r.asDict() for r in rows],
        "types": {f.name: f.dataType.simpleString() for f in t.schema.fields},
        "hive_partitions": [r[0] for r in spark.sql("SHOW PARTITIONS loglake_it.containers").collect()],
    }
    print(json.dumps(out, default=str))
finally:
    spark.stop()
"#;

/// loglake's answers per partition of the day (the reference for Spark).
async fn reference(lake: &str) -> Vec<Value> {
    query(
        lake,
        &format!(
            "SELECT CAST(hour AS BIGINT) AS hour, count(*) AS n, CAST(sum(kafka_offset) AS BIGINT) AS offsets, \
             count(DISTINCT trace_id) AS traces, CAST(sum(octet_length(message)) AS BIGINT) AS message_bytes, \
             CAST(min(ts) AS BIGINT) AS min_us, CAST(max(ts) AS BIGINT) AS max_us, \
             CAST(sum(CAST(ts AS BIGINT)) AS BIGINT) AS ts_sum, \
             CAST(sum(cardinality(labels)) AS BIGINT) AS labels, CAST(sum(cardinality(attrs)) AS BIGINT) AS attrs \
             FROM containers WHERE dt = DATE '{DAY}' GROUP BY 1 ORDER BY 1"
        ),
    )
    .await
}

/// A local lake: 6,000 records from 22:30 at one per second (2024-05-01 22h and 23h, and 00h
/// of the next day, which a day's export must leave out); (tempdir, lake path, rows of DAY).
async fn local_lake(seed: u64) -> (tempfile::TempDir, String, String, u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake").display().to_string();
    let topic = gen_topic(6_000, "2024-05-01T22:30:00Z", seed).await;
    let rows = archive(&topic, &lake).await;
    assert_eq!(rows, 6_000);
    let day_rows = int(&query(
        &lake,
        &format!("SELECT count(*) AS n FROM containers WHERE dt = DATE '{DAY}'"),
    )
    .await[0]["n"]) as u64;
    assert_eq!(day_rows, 5_400, "22:30 to midnight at one per second");
    (dir, lake, topic, day_rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_export_survives_kills_and_spark_reads_each_row_once() {
    let (dir, lake, _topic, day_rows) = local_lake(7).await;
    let root = dir.path().join("export");
    let root_s = root.display().to_string();
    // small files, so that an export writes many and a kill lands between them
    let args: Vec<String> = [
        "hive",
        "--lake",
        &lake,
        "--table",
        "containers",
        "--date",
        DAY,
        "--to",
        &root_s,
        "--hive-db",
        "loglake_it",
        "--target-file-size",
        "48KiB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // a complete export
    let first = ok_json(&export(&args.iter().map(String::as_str).collect::<Vec<_>>()).await);
    assert_eq!(first["rows"].as_u64(), Some(day_rows), "{first}");
    assert_eq!(first["partitions"].as_u64(), Some(2), "{first}");
    let files = first["files"].as_u64().expect("files");
    assert!(files >= 6, "{first}");
    check_complete_day(&root, day_rows).expect("complete after the first export");

    // re-exports (--force) killed while they write: after the k-th new data file appears
    // (k = 1, 2, 3, 4, 5), and one once all are written (clean-up, manifest, markers). After
    // each kill a day with _SUCCESS must be exactly its manifest's files.
    let day_dir = root.join(format!("dt={DAY}"));
    let data_files = |d: &Path| -> BTreeSet<String> {
        files_below(d)
            .into_iter()
            .filter(|f| {
                f.ends_with(".parquet") && !f.rsplit('/').next().unwrap_or("").starts_with('.')
            })
            .collect()
    };
    let mut killed_running = 0;
    let mut leftovers = 0;
    for k in [1, 2, 3, 4, 5, files as usize] {
        let before = data_files(&day_dir);
        let mut a = args.clone();
        a.push("--force".into());
        let mut p = Proc::spawn(export_cmd(&a)).expect("spawn export");
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.running() && Instant::now() < deadline {
            if data_files(&day_dir).difference(&before).count() >= k {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if p.running() {
            p.signal(libc::SIGKILL).expect("kill");
            killed_running += 1;
        }
        let end = p
            .wait_within(Duration::from_secs(120))
            .await
            .expect("wait")
            .expect("ended");
        let complete = check_complete_day(&root, day_rows).is_some();
        let stale = data_files(&day_dir).len();
        leftovers = leftovers.max(stale);
        announce(&format!(
            "export killed after {k} new files: {}, day complete: {complete}, data files now {stale}",
            end.status
        ));
    }
    assert!(
        killed_running >= 5,
        "only {killed_running} of 6 kills hit a running export"
    );
    assert!(
        leftovers as u64 > files,
        "a killed attempt left files beside the previous one's ({leftovers})"
    );

    // the run after the kills: exactly one copy of every row, leftovers gone
    let last = ok_json(&export(&args.iter().map(String::as_str).collect::<Vec<_>>()).await);
    assert_eq!(last["skipped"], Value::Bool(false), "{last}");
    assert!(last["stale_files_removed"].as_u64() > Some(0), "{last}");
    assert_eq!(last["rows"].as_u64(), Some(day_rows), "{last}");
    let manifest = check_complete_day(&root, day_rows).expect("complete");
    announce(&format!(
        "after {killed_running} kills: {} stale files removed",
        last["stale_files_removed"]
    ));
    // the same table version again: nothing to do
    let again = ok_json(&export(&args.iter().map(String::as_str).collect::<Vec<_>>()).await);
    assert_eq!(again["skipped"], Value::Bool(true), "{again}");
    assert_eq!(again["attempt"], manifest["attempt"], "{again}");
    // no data file outside the day's partition folders; the day after is not exported
    for f in files_below(&root) {
        assert!(
            f.starts_with(&format!("dt={DAY}/hour=")) || f.starts_with('_') || f.contains("/_"),
            "unexpected file {f}"
        );
    }

    // pyarrow over the layout (every visible file): each row once
    let pa = run_python(PYARROW_HIVE, vec![root_s.clone()]).await;
    let ours = reference(&lake).await;
    assert_eq!(pa.as_object().expect("object").len(), ours.len(), "{pa}");
    for r in &ours {
        let k = format!("{DAY}/{}", int(&r["hour"]));
        assert_eq!(pa[&k]["n"].as_i64(), Some(int(&r["n"])), "{k}: {pa}");
        assert_eq!(pa[&k]["offsets"].as_i64(), Some(int(&r["offsets"])), "{k}");
    }

    // Spark: the DDL, the partitions, then per partition the same answers as loglake
    let meta = dir.path().join("metastore_db");
    let warehouse = dir.path().join("warehouse");
    let spark = run_python(
        SPARK_HIVE,
        vec![
            root.join("_ddl/create_table.sql").display().to_string(),
            root.join(format!("_ddl/partitions-{DAY}.sql"))
                .display()
                .to_string(),
            meta.display().to_string(),
            warehouse.display().to_string(),
        ],
    )
    .await;
    let parts = spark["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), ours.len(), "{spark}");
    for (s, o) in parts.iter().zip(&ours) {
        assert_eq!(s["dt"], DAY, "{s}");
        for k in [
            "hour",
            "n",
            "offsets",
            "traces",
            "message_bytes",
            "min_us",
            "max_us",
            "ts_sum",
            "labels",
            "attrs",
        ] {
            assert_eq!(
                int(&s[k]),
                int(&o[k]),
                "Spark {k} = {}, loglake {}",
                s[k],
                o[k]
            );
        }
    }
    let types = &spark["types"];
    assert_eq!(types["ts"], "timestamp", "{types}");
    assert_eq!(types["labels"], "map<string,string>", "{types}");
    assert_eq!(types["dt"], "date", "{types}");
    assert_eq!(types["hour"], "int", "{types}");
    assert_eq!(
        spark["hive_partitions"],
        serde_json::json!([format!("dt={DAY}/hour=22"), format!("dt={DAY}/hour=23")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_export_on_s3_adds_late_rows_replaces_a_changed_day_and_refuses_foreign_targets() {
    let lake = s3().unique_url("export-lake");
    let topic = gen_topic(4_000, "2024-05-01T22:30:00Z", 11).await;
    assert_eq!(archive(&topic, &lake).await, 4_000);
    let to = format!("{lake}/_export/hive/containers");
    let args = [
        "hive",
        "--lake",
        &lake,
        "--table",
        "containers",
        "--date",
        DAY,
        "--target-file-size",
        "64KiB",
    ];
    let first = ok_json(&export(&args).await);
    assert_eq!(first["target"].as_str(), Some(format!("{to}/").as_str()));
    let day_rows = 4_000; // 22:30 to 23:36:40, one per second
    assert_eq!(first["rows"].as_u64(), Some(day_rows), "{first}");
    let prefix = to
        .strip_prefix(&format!("s3://{}/", s3().bucket))
        .expect("bucket")
        .to_string();
    let keys = s3().list(&prefix).await.expect("list");
    let day_files = |keys: &[String]| -> BTreeSet<String> {
        keys.iter()
            .filter(|k| k.ends_with(".parquet"))
            .map(|k| k[prefix.len() + 1..].to_string())
            .collect()
    };
    let manifest_files = |m: &Value| -> BTreeSet<String> {
        m["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .flat_map(|p| p["files"].as_array().expect("files").iter())
            .map(|f| f["path"].as_str().expect("path").to_string())
            .collect()
    };
    let get_json = |rel: String| async move {
        use object_store::ObjectStoreExt;
        let store = s3().object_store().expect("s3");
        let b = store
            .get(&object_store::path::Path::from(rel))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        serde_json::from_slice::<Value>(&b).expect("json")
    };
    let m1 = get_json(format!("{prefix}/dt={DAY}/_manifest.json")).await;
    assert_eq!(day_files(&keys), manifest_files(&m1));
    assert!(
        keys.contains(&format!("{prefix}/dt={DAY}/_SUCCESS")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("{prefix}/_ddl/create_table.sql")),
        "{keys:?}"
    );
    // rows in the files (their footers) equal the manifest's
    let mut footer_rows = 0i64;
    for rel in day_files(&keys) {
        use object_store::ObjectStoreExt;
        let store = s3().object_store().expect("s3");
        let b = store
            .get(&object_store::path::Path::from(format!("{prefix}/{rel}")))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let r = parquet::file::reader::SerializedFileReader::new(b).expect("parquet");
        use parquet::file::reader::FileReader;
        footer_rows += r.metadata().file_metadata().num_rows();
        // partition columns live in the path only
        let names: Vec<String> = r
            .metadata()
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        assert!(!names.iter().any(|n| n == "dt" || n == "hour"), "{names:?}");
        assert!(
            names.iter().any(|n| n == "labels.key_value.key"),
            "{names:?}"
        );
    }
    assert_eq!(footer_rows as u64, day_rows);

    // late rows: --from-version adds only what the later versions added
    let v1 = m1["source_version"].as_i64().expect("version");
    gen_into(&topic, 500, "2024-05-01T23:50:00Z", 12).await;
    assert_eq!(archive(&topic, &lake).await, 500);
    let from = |v: i64| {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(["--from-version".to_string(), v.to_string()]);
        a
    };
    let run = |a: Vec<String>| async move {
        tokio::task::spawn_blocking(move || export_cmd(&a).output())
            .await
            .expect("join")
            .expect("run export")
    };
    let out = run(from(v1 - 1)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("was exported at version {v1}")),
        "{stderr}"
    );
    let inc = ok_json(&run(from(v1)).await);
    assert_eq!(inc["rows_written"].as_u64(), Some(500), "{inc}");
    assert_eq!(inc["rows"].as_u64(), Some(day_rows + 500), "{inc}");
    let keys = s3().list(&prefix).await.expect("list");
    let m_inc = get_json(format!("{prefix}/dt={DAY}/_manifest.json")).await;
    assert_eq!(day_files(&keys), manifest_files(&m_inc));
    assert!(manifest_files(&m1).is_subset(&manifest_files(&m_inc)));
    assert!(
        keys.contains(&format!("{prefix}/dt={DAY}/_SUCCESS")),
        "{keys:?}"
    );
    let mut footer_rows = 0i64;
    for rel in day_files(&keys) {
        use object_store::ObjectStoreExt;
        use parquet::file::reader::FileReader;
        let b = s3()
            .object_store()
            .expect("s3")
            .get(&object_store::path::Path::from(format!("{prefix}/{rel}")))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let r = parquet::file::reader::SerializedFileReader::new(b).expect("parquet");
        footer_rows += r.metadata().file_metadata().num_rows();
    }
    assert_eq!(footer_rows as u64, day_rows + 500, "each row once");
    let day_rows = day_rows + 500;
    let m1 = m_inc;

    // a GDPR delete changes the day: an increment is refused, the re-export replaces every file
    let out = tokio::task::spawn_blocking({
        let table = format!("{lake}/containers");
        move || {
            loglake_cmd()
                .args([
                    "delete",
                    "--table",
                    &table,
                    "--where",
                    "namespace = 'team-1'",
                ])
                .output()
                .expect("delete")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = int(&query(
        &lake,
        &format!("SELECT count(*) AS n FROM containers WHERE dt = DATE '{DAY}'"),
    )
    .await[0]["n"]) as u64;
    assert!(left < day_rows, "the delete removed rows of the day");
    let out = run(from(m1["source_version"].as_i64().expect("version"))).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("are gone at version"), "{stderr}");
    let second = ok_json(&export(&args).await);
    assert_eq!(second["skipped"], Value::Bool(false), "{second}");
    assert_eq!(second["rows"].as_u64(), Some(left), "{second}");
    assert_eq!(
        second["stale_files_removed"].as_u64(),
        Some(manifest_files(&m1).len() as u64),
        "the old files: {second}"
    );
    let keys = s3().list(&prefix).await.expect("list");
    let m2 = get_json(format!("{prefix}/dt={DAY}/_manifest.json")).await;
    assert_eq!(day_files(&keys), manifest_files(&m2));
    assert!(manifest_files(&m1).is_disjoint(&manifest_files(&m2)));
    assert!(m2["source_version"].as_i64() > m1["source_version"].as_i64());
    // unchanged: skipped
    let third = ok_json(&export(&args).await);
    assert_eq!(third["skipped"], Value::Bool(true), "{third}");

    // an ML export to S3: shards renamed into data/, nothing left under _tmp/, the manifest's
    // sizes and rows are the objects'
    let ml_to = s3().unique_url("export-ml");
    let ml = ok_json(
        &export(&[
            "ml",
            "--lake",
            &lake,
            "--table",
            "containers",
            "--date",
            DAY,
            "--to",
            &ml_to,
            "--shards",
            "2",
            "--split",
            "train=0.5,validation=0.5",
            "--split-by",
            "pod",
        ])
        .await,
    );
    assert_eq!(ml["rows"].as_u64(), Some(left), "{ml}");
    let ml_prefix = ml_to
        .strip_prefix(&format!("s3://{}/", s3().bucket))
        .expect("bucket")
        .to_string();
    let ml_keys: Vec<String> = s3()
        .list(&ml_prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|k| k[ml_prefix.len() + 1..].to_string())
        .collect();
    assert_eq!(
        ml_keys,
        [
            "README.md",
            "_loglake_export.json",
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/validation-00000-of-00002.parquet",
            "data/validation-00001-of-00002.parquet",
            "manifest.json",
        ]
    );
    let mm = get_json(format!("{ml_prefix}/manifest.json")).await;
    let mut ml_rows = 0;
    for split in mm["splits"].as_array().expect("splits") {
        for shard in split["shards"].as_array().expect("shards") {
            use object_store::ObjectStoreExt;
            use parquet::file::reader::FileReader;
            let b = s3()
                .object_store()
                .expect("s3")
                .get(&object_store::path::Path::from(format!(
                    "{ml_prefix}/{}",
                    shard["path"].as_str().expect("path")
                )))
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes");
            assert_eq!(Some(b.len() as u64), shard["bytes"].as_u64(), "{shard}");
            let r = parquet::file::reader::SerializedFileReader::new(b).expect("parquet");
            let n = r.metadata().file_metadata().num_rows() as u64;
            assert_eq!(Some(n), shard["rows"].as_u64(), "{shard}");
            ml_rows += n;
        }
    }
    assert_eq!(ml_rows, left);

    // a target that holds other objects is refused, and nothing is written there
    let foreign = format!("{}/foreign", s3().unique_url("export-foreign"));
    {
        use object_store::ObjectStoreExt;
        let p = foreign
            .strip_prefix(&format!("s3://{}/", s3().bucket))
            .expect("bucket");
        s3().object_store()
            .expect("s3")
            .put(
                &object_store::path::Path::from(format!("{p}/data.csv")),
                object_store::PutPayload::from_static(b"a,b\n"),
            )
            .await
            .expect("put");
    }
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--to", &foreign]);
    let out = export(&a).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a loglake hive export"), "{stderr}");
    assert!(stderr.contains("data.csv"), "{stderr}");
    let p = foreign
        .strip_prefix(&format!("s3://{}/", s3().bucket))
        .expect("bucket");
    assert_eq!(s3().list(p).await.expect("list").len(), 1);
    // an unknown table: usage error naming the lake's tables
    let out = export(&["hive", "--lake", &lake, "--table", "nope", "--date", DAY]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no table \"nope\"") && stderr.contains("containers"),
        "{stderr}"
    );
}

/// Reads an ML export: Parquet shards with pyarrow, TFRecord shards with the `tfrecord`
/// package (examples parsed with TensorFlow's example.proto), both CRCs of every record checked
/// with `crc32c`; per split: rows, the distinct keys, the SHA-256 of each shard, and each key's
/// split recomputed from the documented hash.
const ML_READ: &str = r#"
import glob, hashlib, json, os, struct, sys
root, fmt, key, splits = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
weights = [(s.split("=")[0], float(s.split("=")[1])) for s in splits.split(",")]
total = sum(w for _, w in weights)
def split_of(k):
    u = (int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") >> 11) / 2**53
    cum = 0.0
    for name, w in weights:
        cum += w / total
        if u < cum:
            return name
    return weights[-1][0]
def masked(data):
    import crc32c
    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
out = {"splits": {}, "sha256": {}}
for path in sorted(glob.glob(os.path.join(root, "data", "*"))):
    name = os.path.basename(path)
    split = name.split("-")[0]
    data = open(path, "rb").read()
    out["sha256"]["data/" + name] = hashlib.sha256(data).hexdigest()
    keys = []
    if fmt == "parquet":
        import pyarrow.parquet as pq
        t = pq.read_table(path)
        keys = [str(k) for k in t[key].to_pylist()]
        out.setdefault("columns", t.schema.names)
        out.setdefault("types", {f.name: str(f.type) for f in t.schema})
    else:
        at, n = 0, 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            (lcrc,) = struct.unpack("<I", data[at + 8:at + 12])
            assert lcrc == masked(data[at:at + 8]), f"{name}: length CRC of record {n}"
            payload = data[at + 12:at + 12 + length]
            (pcrc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
            assert pcrc == masked(payload), f"{name}: payload CRC of record {n}"
            at += 16 + length
            n += 1
        from tfrecord.reader import tfrecord_loader
        for ex in tfrecord_loader(path, None):
            keys.append(bytes(ex[key]).decode())
            out.setdefault("features", sorted(ex.keys()))
        assert len(keys) == n, (len(keys), n)
    s = out["splits"].setdefault(split, {"rows": 0, "keys": set(), "wrong_split": 0})
    s["rows"] += len(keys)
    s["keys"].update(keys)
    s["wrong_split"] += sum(1 for k in keys if split_of(k) != split)
for s in out["splits"].values():
    s["keys"] = sorted(s["keys"])
print(json.dumps(out))
"#;

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
        .expect("manifest JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_export_is_reproducible_split_by_key_and_rebuilds_by_time_travel() {
    let (dir, lake, topic, day_rows) = local_lake(23).await;
    let split = "train=0.75,validation=0.25";
    let ml = |to: &Path, format: &str| -> Vec<String> {
        [
            "ml",
            "--lake",
            &lake,
            "--table",
            "containers",
            "--date",
            DAY,
            "--to",
            &to.display().to_string(),
            "--format",
            format,
            "--shards",
            "3",
            "--split",
            split,
            "--split-by",
            "pod",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || export_cmd(&args).output())
            .await
            .expect("join")
            .expect("run export")
    };

    // Parquet, twice into two folders: byte-identical shards
    let (a, b) = (dir.path().join("ml-a"), dir.path().join("ml-b"));
    let sa = ok_json(&run(ml(&a, "parquet")).await);
    let sb = ok_json(&run(ml(&b, "parquet")).await);
    assert_eq!(sa["rows"].as_u64(), Some(day_rows), "{sa}");
    let (ma, mb) = (manifest(&a), manifest(&b));
    assert_eq!(ma, mb, "two runs, one manifest (shard SHA-256s included)");
    assert_eq!(sb["rows"], sa["rows"]);
    let version = ma["tables"]["containers"]["version"]
        .as_i64()
        .expect("table version in the manifest");
    let ra = run_python(
        ML_READ,
        vec![
            a.display().to_string(),
            "parquet".into(),
            "pod".into(),
            split.into(),
        ],
    )
    .await;
    let rb = run_python(
        ML_READ,
        vec![
            b.display().to_string(),
            "parquet".into(),
            "pod".into(),
            split.into(),
        ],
    )
    .await;
    assert_eq!(ra["sha256"], rb["sha256"], "byte-identical shards");
    check_ml(&ma, &ra, day_rows);
    assert_eq!(
        ra["types"]["ts"], "timestamp[us, tz=UTC]",
        "{}",
        ra["types"]
    );
    // (pyarrow names a map's entries after the column when it reads Parquet)
    assert!(
        ra["types"]["labels"]
            .as_str()
            .is_some_and(|t| t.starts_with("map<string, string")),
        "{}",
        ra["types"]
    );
    assert!(
        std::fs::read_to_string(a.join("README.md"))
            .expect("card")
            .contains("- split: validation\n    path: data/validation-*.parquet")
    );
    // a re-export into the same folder replaces it with the same bytes
    let again = ok_json(&run(ml(&a, "parquet")).await);
    assert_eq!(again["rows"], sa["rows"]);
    assert_eq!(manifest(&a), ma);
    assert!(!a.join("_tmp").exists() || files_below(&a.join("_tmp")).is_empty());

    // TFRecord: read by the `tfrecord` package, CRCs checked with crc32c
    let t = dir.path().join("ml-tf");
    ok_json(&run(ml(&t, "tfrecord")).await);
    let mt = manifest(&t);
    let rt = run_python(
        ML_READ,
        vec![
            t.display().to_string(),
            "tfrecord".into(),
            "pod".into(),
            split.into(),
        ],
    )
    .await;
    check_ml(&mt, &rt, day_rows);
    assert_eq!(rt["splits"]["train"]["keys"], ra["splits"]["train"]["keys"]);
    let features = rt["features"].as_array().expect("features");
    assert!(
        features.contains(&Value::from("message")) && features.contains(&Value::from("labels"))
    );

    // the manifest's version rebuilds the same rows after the table moved on
    gen_into(&topic, 600, "2024-05-01T23:30:00Z", 99).await;
    assert_eq!(archive(&topic, &lake).await, 600);
    let now = int(&query(
        &lake,
        &format!("SELECT count(*) AS n FROM containers WHERE dt = DATE '{DAY}'"),
    )
    .await[0]["n"]) as u64;
    assert_eq!(now, day_rows + 600);
    let then = query(
        &lake,
        &format!(
            "SELECT count(*) AS n, count(DISTINCT pod) AS pods FROM containers VERSION AS OF {version} \
             WHERE dt = DATE '{DAY}'"
        ),
    )
    .await;
    assert_eq!(int(&then[0]["n"]) as u64, day_rows);
    let pods: usize = ["train", "validation"]
        .iter()
        .map(|s| ra["splits"][s]["keys"].as_array().expect("keys").len())
        .sum();
    assert_eq!(int(&then[0]["pods"]) as usize, pods);

    // a query source with the LogHub view
    let lh = dir.path().join("ml-loghub");
    let out = export(&[
        "ml",
        "--lake",
        &lake,
        "--query",
        &format!("SELECT * FROM containers WHERE dt = DATE '{DAY}' AND hour = 23"),
        "--to",
        &lh.display().to_string(),
        "--view",
        "loghub",
        "--shards",
        "1",
    ])
    .await;
    let s = ok_json(&out);
    assert_eq!(s["rows"].as_u64(), Some(3_600 + 600), "{s}");
    let m = manifest(&lh);
    let cols: Vec<&str> = m["schema"]
        .as_array()
        .expect("schema")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        cols,
        [
            "LineId",
            "Timestamp",
            "Level",
            "Component",
            "Content",
            "EventId",
            "EventTemplate"
        ]
    );
    assert!(m["tables"]["containers"]["version"].as_i64() > Some(version));

    // bad input: clear errors, exit 2, nothing written
    let bad = dir.path().join("ml-bad");
    let mut args = ml(&bad, "parquet");
    let at = args.iter().position(|a| a == "pod").expect("pod");
    args[at] = "no_such_column".into();
    let out = run(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--split-by no_such_column: no such column"),
        "{stderr}"
    );
    assert!(stderr.contains("pod"), "the columns are listed: {stderr}");
    assert!(files_below(&bad).is_empty());
    let out = export(&[
        "ml",
        "--lake",
        &lake,
        "--query",
        "SELECT nope FROM containers",
        "--to",
        &bad.display().to_string(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SELECT nope FROM containers") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(files_below(&bad).is_empty());
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(bad.join("notes.txt"), "mine").expect("write");
    let out = run(ml(&bad, "parquet")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a loglake ml export"), "{stderr}");
    assert_eq!(files_below(&bad), BTreeSet::from(["notes.txt".to_string()]));
}

/// Checks what the readers saw against the manifest: rows per split and shard count, SHA-256
/// of every shard, no key in two splits, every key in the split its hash gives.
fn check_ml(m: &Value, seen: &Value, day_rows: u64) {
    let mut total = 0;
    let mut shas = BTreeMap::new();
    for s in m["splits"].as_array().expect("splits") {
        let name = s["name"].as_str().expect("name");
        let rows = s["rows"].as_u64().expect("rows");
        total += rows;
        assert_eq!(seen["splits"][name]["rows"].as_u64(), Some(rows), "{name}");
        assert_eq!(
            seen["splits"][name]["wrong_split"].as_u64(),
            Some(0),
            "{name}"
        );
        let shards = s["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), 3, "{name}: 3 shards");
        for f in shards {
            assert!(
                f["path"]
                    .as_str()
                    .expect("path")
                    .starts_with(&format!("data/{name}-0000")),
                "{f}"
            );
            assert!(
                f["path"].as_str().expect("path").contains("-of-00003."),
                "{f}"
            );
            shas.insert(
                f["path"].as_str().expect("path").to_string(),
                f["sha256"].clone(),
            );
        }
    }
    assert_eq!(total, day_rows);
    let seen_shas: BTreeMap<String, Value> = seen["sha256"]
        .as_object()
        .expect("sha256")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(seen_shas, shas, "the manifest's SHA-256 of every shard");
    let train: BTreeSet<&str> = seen["splits"]["train"]["keys"]
        .as_array()
        .expect("train keys")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let validation: BTreeSet<&str> = seen["splits"]["validation"]["keys"]
        .as_array()
        .expect("validation keys")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!train.is_empty() && !validation.is_empty());
    assert!(train.is_disjoint(&validation), "a pod in two splits");
}
