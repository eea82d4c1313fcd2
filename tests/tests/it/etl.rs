//! Archive-time ETL (issue 24): filter, derived columns and redaction through the real binary,
//! against the real broker and S3 server; exactly-once with filtered offsets counted by the
//! audit; clear startup errors for bad definitions.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use loglake_tests::{Proc, announce, kafka, loglake_cmd, s3, unique_name};

use crate::archiver::{
    KillAt, audit_json, kill_incarnation, next_rng, produce_with, run_archive_blocking,
};

const NAMESPACES: [&str; 3] = ["shop-eu", "kube-system", "pay-us"];
const LEVELS: [&str; 5] = ["DEBUG", "INFO", "WARN", "ERROR", "DEBUG"];
const FILTER: &str = "NOT (level = 'debug' AND namespace = 'kube-system')";
const SERVICE: &str = "coalesce(labels['app.kubernetes.io/name'], labels['app'], container)";
const TENANT: &str = "split_part(namespace, '-', 1)";

/// Secrets the records carry; none may reach a Parquet file.
const SECRET_MARKERS: [&str; 3] = ["@example.com", "SECRETxyz", "eyJhbGciOiJIUzI1NiJ9"];

/// Record `i`: a Fluent Bit record whose message is `LEVEL req i …`, with an e-mail address
/// (i % 4 == 0), a bearer token (1) or a JWT (2) in it; every 97th (from 5) is malformed when
/// `malformed`.
fn etl_record(i: usize, malformed: bool) -> Vec<u8> {
    if malformed && i % 97 == 5 {
        return format!("{{\"log\": \"truncated {i}").into_bytes();
    }
    let ns = NAMESPACES[i % 3];
    let level = LEVELS[i % 5];
    let extra = match i % 4 {
        0 => format!("user u{i}@example.com logged in"),
        1 => format!("auth Bearer tok{i}SECRETxyz ok"),
        2 => format!("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1{i}In0.sig{i} used"),
        _ => "plain".to_string(),
    };
    let labels = if i.is_multiple_of(2) {
        format!(
            ",\"labels\":{{\"app.kubernetes.io/name\":\"svc-{}\",\"app\":\"a{}\"}}",
            i % 5,
            i % 3
        )
    } else if i.is_multiple_of(3) {
        ",\"labels\":{\"app\":\"a0\"}".to_string()
    } else {
        String::new()
    };
    format!(
        concat!(
            "{{\"date\":{}.5,\"stream\":\"stdout\",\"log\":\"{} req {} {}\\n\",",
            "\"kubernetes\":{{\"pod_name\":\"p-{}\",\"namespace_name\":\"{}\",",
            "\"container_name\":\"ctr-{}\",\"host\":\"node-1\"{}}}}}"
        ),
        1_795_000_000 + i,
        level,
        i,
        extra,
        i % 7,
        ns,
        i % 2,
        labels
    )
    .into_bytes()
}

/// Whether record `i` is copied to the `errors` route table (kept, level ERROR).
fn copied(i: usize) -> bool {
    kept(i) && LEVELS[i % 5] == "ERROR"
}

/// Whether record `i` moves to the `pay_warn` route table (kept, pay-us, WARN).
fn moved(i: usize) -> bool {
    kept(i) && NAMESPACES[i % 3] == "pay-us" && LEVELS[i % 5] == "WARN"
}

/// Whether the filter keeps record `i`.
fn kept(i: usize) -> bool {
    !(LEVELS[i % 5] == "DEBUG" && NAMESPACES[i % 3] == "kube-system")
}

/// The expected `service` of record `i` (the derive expression, computed here).
fn service_of(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("svc-{}", i % 5)
    } else if i.is_multiple_of(3) {
        "a0".to_string()
    } else {
        format!("ctr-{}", i % 2)
    }
}

/// The expected message of record `i` after redaction.
fn message_of(i: usize) -> String {
    let extra = match i % 4 {
        0 => "user <email> logged in".to_string(),
        1 => "auth Bearer <token> ok".to_string(),
        2 => "jwt <jwt> used".to_string(),
        _ => "plain".to_string(),
    };
    format!("{} req {i} {extra}", LEVELS[i % 5])
}

fn table_def(name: &str, topic: &str) -> String {
    format!(
        "name = \"{name}\"\ntopics = [\"{topic}\"]\ndecoder = \"fluentbit\"\n\
         partition_by = [\"dt\", \"tenant\"]\n\
         filter = \"{FILTER}\"\n\
         redact = [\"email\", \"bearer\", \"jwt\"]\n\
         [derive]\nservice = \"{}\"\ntenant = \"{TENANT}\"\n\
         [[route]]\nwhen = \"level = 'error'\"\ntable = \"{name}_errors\"\n\
         [[route]]\nwhen = \"tenant = 'pay' AND level = 'warn'\"\ntable = \"{name}_pay_warn\"\nmode = \"move\"\n",
        SERVICE.replace('"', "\\\"")
    )
}

/// The record index `i` in a message `LEVEL req i …`.
fn index_of(message: Option<&str>) -> usize {
    message
        .and_then(|m| m.split(' ').nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no index in {message:?}"))
}

/// Every row of `sql` on the Delta table at `url`, each column cast to a string.
async fn query_strings(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let batches = crate::archiver::query_batches(url, sql).await;
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).expect("cast"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        s.is_valid(r).then(|| s.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    out
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Reads every Parquet file under `prefix` of the test bucket (not through Delta or SQL): its
/// raw bytes and every string value of every column must hold none of `markers`. Returns the
/// number of files and string values read.
async fn assert_no_secret_in_parquet(url: &str, markers: &[&str]) -> (usize, usize) {
    use object_store::ObjectStoreExt;
    let prefix = url
        .strip_prefix(&format!("s3://{}/", s3().bucket))
        .expect("a test-bucket url");
    let store = s3().object_store().expect("store");
    let keys = s3().list(prefix).await.expect("list");
    let (mut files, mut values) = (0, 0);
    for k in keys.iter().filter(|k| k.ends_with(".parquet")) {
        let bytes = store
            .get(&object_store::path::Path::from(k.as_str()))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        for m in markers {
            assert!(
                !bytes.windows(m.len()).any(|w| w == m.as_bytes()),
                "{m} in the bytes of {k}"
            );
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            let b: RecordBatch = b.expect("batch");
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                let Ok(s) = arrow::compute::cast(c, &DataType::Utf8) else {
                    continue; // maps: their strings are checked in the raw bytes
                };
                for v in s.as_string::<i32>().iter().flatten() {
                    values += 1;
                    for m in markers {
                        assert!(!v.contains(m), "{m} in column {} of {k}: {v}", f.name());
                    }
                }
            }
        }
        files += 1;
    }
    (files, values)
}

/// A topic with known content through a table definition that filters, derives (a new
/// partition column and an overwritten one) and redacts: exact row counts, derived values equal
/// to the expressions computed here, no secret left in any Parquet file, and an audit with 0
/// missing and 0 duplicates that counts the filtered offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_derive_and_redact_at_archive_time_exactly_once() {
    let topic = unique_name("etl");
    kafka().create_topic(&topic, 3).await.expect("topic");
    let n = 3000;
    produce_with(&topic, 0, n, |i| etl_record(i, false)).await;
    let lake = s3().unique_url("etl-lake");
    let defs = tempfile::tempdir().expect("tmp");
    std::fs::write(defs.path().join("web.toml"), table_def("web", &topic)).expect("def");
    let table = format!("{lake}/web");
    let dlq = format!("{lake}/dead_letters");
    let out = run_archive_blocking(
        [
            "--brokers",
            &kafka().brokers,
            "--group",
            &unique_name("g"),
            "--lake",
            &lake,
            "--tables-dir",
            &defs.path().to_string_lossy(),
            "--dlq-table",
            &dlq,
            "--until-end",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    let kept_n = (0..n).filter(|&i| kept(i)).count() as u64;
    let filtered_n = n as u64 - kept_n;
    let copied_n = (0..n).filter(|&i| copied(i)).count() as u64;
    let moved_n = (0..n).filter(|&i| moved(i)).count() as u64;
    assert!(filtered_n > 0 && copied_n > 0 && moved_n > 0);
    let main_n = kept_n - moved_n;
    assert_eq!(u(&report, "rows_written"), main_n, "{report}");
    assert_eq!(
        report["rows_routed"],
        serde_json::json!({"web/web_errors": copied_n, "web/web_pay_warn": moved_n}),
        "{report}"
    );
    assert_eq!(u(&report, "rows_filtered"), filtered_n, "{report}");
    assert_eq!(u(&report, "dead_letters"), 0, "{report}");
    let redactions = |m: usize| (0..n).filter(|&i| kept(i) && i % 4 == m).count() as u64;
    assert_eq!(
        report["redactions"],
        serde_json::json!({
            "web/email": redactions(0),
            "web/bearer": redactions(1),
            "web/jwt": redactions(2),
        })
    );

    // the audit counts the filtered and moved offsets from the commit infos: nothing missing
    let (a, ok) = audit_json(&topic, &table, &dlq);
    assert_eq!(
        (
            u(&a, "expected"),
            u(&a, "rows"),
            u(&a, "filtered"),
            u(&a, "moved"),
            u(&a, "missing"),
            u(&a, "duplicates")
        ),
        (n as u64, main_n, filtered_n, moved_n, 0, 0),
        "{a}"
    );
    assert!(ok, "{a}");

    // every row: the derived columns and the redacted message, computed here
    let rows = query_strings(&table, "SELECT message, service, tenant, namespace FROM t").await;
    assert_eq!(rows.len() as u64, main_n);
    let mut seen = vec![false; n];
    for r in &rows {
        let i = index_of(r[0].as_deref());
        let msg = r[0].clone().expect("message");
        assert!(
            kept(i) && !moved(i) && !seen[i],
            "row {i} twice, filtered or moved: {msg}"
        );
        seen[i] = true;
        assert_eq!(msg, message_of(i));
        assert_eq!(r[1].as_deref(), Some(service_of(i).as_str()), "{i}");
        let ns = NAMESPACES[i % 3];
        assert_eq!(r[3].as_deref(), Some(ns));
        assert_eq!(r[2].as_deref(), ns.split('-').next(), "{i}");
    }
    // routed rows keep their Kafka coordinates: copies are in both tables, moved rows only in
    // their route table
    let coords = |rows: &[Vec<Option<String>>]| -> std::collections::BTreeSet<(String, String)> {
        rows.iter()
            .map(|r| {
                (
                    r[0].clone().unwrap_or_default(),
                    r[1].clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let sql = "SELECT kafka_partition, kafka_offset, message FROM t";
    let main_coords = coords(&query_strings(&table, sql).await);
    let errors = query_strings(&format!("{lake}/web_errors"), sql).await;
    let pay_warn = query_strings(&format!("{lake}/web_pay_warn"), sql).await;
    assert_eq!(
        (errors.len() as u64, pay_warn.len() as u64),
        (copied_n, moved_n)
    );
    assert!(errors.iter().all(|r| copied(index_of(r[2].as_deref()))));
    assert!(pay_warn.iter().all(|r| moved(index_of(r[2].as_deref()))));
    assert_eq!(coords(&errors).len() as u64, copied_n, "no copy twice");
    assert_eq!(coords(&pay_warn).len() as u64, moved_n, "no move twice");
    assert!(coords(&errors).is_subset(&main_coords));
    assert!(coords(&pay_warn).is_disjoint(&main_coords));
    // the derived column partitions the table
    let keys = s3()
        .list(
            table
                .strip_prefix(&format!("s3://{}/", s3().bucket))
                .expect("prefix"),
        )
        .await
        .expect("list");
    for tenant in ["shop", "kube", "pay"] {
        assert!(
            keys.iter()
                .any(|k| k.contains(&format!("/tenant={tenant}/"))),
            "no tenant={tenant} partition in {keys:?}"
        );
    }
    // no secret in any Parquet file of the lake (table and dead letters), read byte-wise
    let (files, values) = assert_no_secret_in_parquet(&lake, &SECRET_MARKERS).await;
    assert!(
        files > 0 && values as u64 >= kept_n,
        "{files} files, {values} values"
    );
    announce(&format!(
        "etl: {kept_n} rows, {filtered_n} filtered, {files} Parquet files scanned"
    ));
}

/// An expression that fails on some records at run time (a cast) sends exactly those records
/// to the dead-letter table, naming the expression; the single-table form's flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expression_failing_on_a_record_sends_it_to_the_dead_letters() {
    let topic = unique_name("etl-fail");
    kafka().create_topic(&topic, 2).await.expect("topic");
    let n = 400;
    // `code` is a number except in every 10th record
    let record = |i: usize| {
        let code = if i % 10 == 3 {
            "abc".to_string()
        } else {
            (i * 7).to_string()
        };
        format!(
            "{{\"date\":{}.5,\"log\":\"INFO {code} req {i}\\n\",\"kubernetes\":{{\"pod_name\":\"p\",\"namespace_name\":\"shop\",\"container_name\":\"c\"}}}}",
            1_795_000_000 + i
        )
        .into_bytes()
    };
    produce_with(&topic, 0, n, record).await;
    let table = s3().unique_url("etl-fail");
    let dlq = format!("{table}-dlq");
    let mut args = crate::archiver::archive_args(&topic, &unique_name("g"), &table, &dlq);
    args.extend([
        "--derive".to_string(),
        "code=CAST(split_part(message, ' ', 2) AS BIGINT)".to_string(),
    ]);
    let out = run_archive_blocking(args).await;
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    let bad = (0..n).filter(|i| i % 10 == 3).count() as u64;
    assert_eq!(u(&report, "dead_letters"), bad, "{report}");
    assert_eq!(u(&report, "etl_failures"), bad, "{report}");
    assert_eq!(u(&report, "rows_written"), n as u64 - bad, "{report}");
    let errors = query_strings(&dlq, "SELECT error, CAST(raw AS VARCHAR) FROM t").await;
    assert_eq!(errors.len() as u64, bad);
    for e in &errors {
        let why = e[0].clone().unwrap_or_default();
        assert!(
            why.contains("derive.code") && why.contains("CAST(split_part"),
            "{why}"
        );
        assert!(
            e[1].as_deref().unwrap_or_default().contains("INFO abc"),
            "{e:?}"
        );
    }
    // the derived column holds the number of every other record
    let sums = crate::archiver::query_i64(&table, "SELECT CAST(sum(code) AS BIGINT) FROM t").await;
    let want: i64 = (0..n).filter(|i| i % 10 != 3).map(|i| (i * 7) as i64).sum();
    assert_eq!(sums, vec![want]);
    let (a, ok) = audit_json(&topic, &table, &dlq);
    assert_eq!(
        (u(&a, "missing"), u(&a, "duplicates"), u(&a, "dead_letters")),
        (0, 0, bad),
        "{a}"
    );
    assert!(ok);
}

/// The archiver SIGKILLed at least 10 times while a producer writes, with a filter, a derived
/// column and redactions on: the audit, counting the filtered offsets, finds every record
/// exactly once (row, dead letter or filtered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_with_etl_loses_and_duplicates_nothing() {
    let topic = unique_name("etl-crash");
    kafka().create_topic(&topic, 3).await.expect("topic");
    let lake = s3().unique_url("etl-crash");
    let defs = tempfile::tempdir().expect("tmp");
    std::fs::write(defs.path().join("web.toml"), table_def("web", &topic)).expect("def");
    let table = format!("{lake}/web");
    let dlq = format!("{lake}/dead_letters");
    let group = unique_name("g");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (topic, stop) = (topic.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                produce_with(&topic, i, 100, |i| etl_record(i, true)).await;
                i += 100;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            i
        })
    };
    // the multi-table form: filter, derived columns, redactions, a copy and a move route
    let args = |group: &str| -> Vec<String> {
        [
            "--brokers",
            &kafka().brokers,
            "--group",
            group,
            "--lake",
            &lake,
            "--tables-dir",
            &defs.path().to_string_lossy(),
            "--dlq-table",
            &dlq,
            "--instance-id",
            "archiver-0",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let kills = 10;
    for kill in 0..kills {
        let before = crate::archiver::table_version(&table).await;
        let mut child = loglake_cmd()
            .arg("archive")
            .args(args(&group))
            .args(["--roll-interval", "300ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn archiver");
        // a static member is assigned ~6.5 s after its start on tansu, reads its watermarks,
        // then commits every 300 ms (a commit round over four tables on moto takes seconds):
        // odd incarnations die 7–13 s after their start, before, during or after commit rounds;
        // even ones 0–1.5 s after their first commit, so the loop exercises recovery from
        // committed state however long a start takes on a loaded machine
        let when = if kill % 2 == 0 {
            KillAt::AfterCommit {
                before,
                then: Duration::from_millis(next_rng(&mut rng) % 1_500),
            }
        } else {
            KillAt::After(Duration::from_millis(7_000 + next_rng(&mut rng) % 6_000))
        };
        kill_incarnation(&mut child, &table, kill, when).await;
    }
    let version = crate::archiver::table_version(&table).await;
    stop.store(true, Ordering::Relaxed);
    let produced = producer.await.expect("producer");
    assert!(
        version >= 3,
        "only {version} commits in {kills} incarnations of the crash loop"
    );
    announce(&format!(
        "etl crash loop: {kills} SIGKILLs, {produced} records, table version {version} before the final run"
    ));
    // the final run, same ETL, as the same static member (tansu may keep the group's assignment
    // empty after kills in a rebalance: then a fresh group, as restart::finish_after_kills)
    let final_run = |group: String| {
        let mut c = loglake_cmd();
        c.arg("archive")
            .args(args(&group))
            .args(["--until-end", "--stall-timeout", "60s"]);
        c
    };
    let mut p = Proc::spawn(final_run(group.clone())).expect("spawn");
    let done = p
        .wait_within(Duration::from_secs(600))
        .await
        .expect("wait")
        .expect("final run still running after 10 min");
    if done.status.code() == Some(4) {
        announce("etl crash loop: the final run stalled as tansu does; finishing in a fresh group");
        let mut p = Proc::spawn(final_run(unique_name("g-fresh"))).expect("spawn");
        let done = p
            .wait_within(Duration::from_secs(600))
            .await
            .expect("wait")
            .expect("running");
        assert!(done.status.success(), "{}", done.stderr_text());
    } else {
        assert!(done.status.success(), "{}", done.stderr_text());
    }
    let (a, ok) = audit_json(&topic, &table, &dlq);
    let malformed = (0..produced).filter(|i| i % 97 == 5).count() as u64;
    let count =
        |f: &dyn Fn(usize) -> bool| (0..produced).filter(|&i| i % 97 != 5 && f(i)).count() as u64;
    let filtered = count(&|i| !kept(i));
    let (copies, moves) = (count(&copied), count(&moved));
    let rows = produced as u64 - malformed - filtered - moves;
    assert_eq!(
        (
            u(&a, "expected"),
            u(&a, "missing"),
            u(&a, "duplicates"),
            u(&a, "filtered"),
            u(&a, "moved"),
            u(&a, "dead_letters"),
            u(&a, "rows")
        ),
        (produced as u64, 0, 0, filtered, moves, malformed, rows),
        "after {kills} SIGKILLs: {a}"
    );
    assert!(ok);
    // the route tables hold each routed record exactly once
    for (route, want) in [("web_errors", copies), ("web_pay_warn", moves)] {
        let n = crate::archiver::query_i64(
            &format!("{lake}/{route}"),
            "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM t",
        )
        .await;
        assert_eq!(n, vec![want as i64, want as i64], "{route}");
    }
    assert_no_secret_in_parquet(&lake, &SECRET_MARKERS[1..]).await;
}

/// Bad definitions fail the start with exit code 2 and an error naming the table, its file, the
/// key and the reason — before Kafka or the store is contacted.
#[test]
fn bad_definitions_fail_the_start_with_clear_errors() {
    let cases: [(&str, &str, &[&str]); 5] = [
        ("filter = \"lvl = 'debug'\"\n", "`filter`", &["lvl"]),
        (
            "filter = \"namespace\"\n",
            "`filter`",
            &["not a boolean condition"],
        ),
        (
            "[derive]\nsize = \"namespace * 2\"\n",
            "`derive.size`",
            &["namespace * 2"],
        ),
        (
            "[[redact]]\npattern = \"(unclosed\"\n",
            "`redact[0]`",
            &["bad regex"],
        ),
        (
            "redact = [\"email\", \"phone\"]\n",
            "`redact[1]`",
            &["unknown pattern `phone`", "credit_card"],
        ),
    ];
    for (extra, key, want) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("web.toml");
        std::fs::write(
            &file,
            format!("name = \"web\"\ntopics = [\"t\"]\ndecoder = \"fluentbit\"\n{extra}"),
        )
        .expect("def");
        let out = loglake_cmd()
            .args([
                "archive",
                "--brokers",
                "127.0.0.1:1",
                "--lake",
                &dir.path().join("lake").to_string_lossy(),
                "--tables-dir",
                &dir.path().to_string_lossy(),
            ])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(
            err.contains("table `web`") && err.contains("web.toml") && err.contains(key),
            "{extra}: {err}"
        );
        for w in want {
            assert!(err.contains(w), "{extra}: no {w:?} in {err}");
        }
    }
}

/// `--explain-etl` shows before and after for sample lines, without Kafka or a store.
#[test]
fn explain_etl_prints_before_and_after_for_sample_records() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("web.toml"), table_def("web", "logs")).expect("def");
    let sample = dir.path().join("sample.jsonl");
    // records 1 (kept, bearer), 8 (kept, e-mail), 10 (DEBUG in kube-system: filtered)
    let lines: Vec<String> = [1usize, 8, 10]
        .iter()
        .map(|&i| String::from_utf8(etl_record(i, false)).expect("utf8"))
        .collect();
    std::fs::write(&sample, lines.join("\n")).expect("sample");
    let out = loglake_cmd()
        .args([
            "archive",
            "--lake",
            &dir.path().join("lake").to_string_lossy(),
            "--tables-dir",
            &dir.path().to_string_lossy(),
            "--explain-etl",
            &sample.to_string_lossy(),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let by_line: BTreeMap<u64, &serde_json::Value> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap_or(0), l))
        .collect();
    let first = by_line[&1];
    assert_eq!(first["table"], "web");
    assert_eq!(first["after"][0]["message"], message_of(1));
    assert_eq!(
        first["before"][0]["message"]
            .as_str()
            .map(|m| m.contains("tok1SECRETxyz")),
        Some(true)
    );
    assert_eq!(first["changed"][0]["tenant"], "kube");
    assert_eq!(first["redactions"]["bearer"], 1);
    let second = by_line[&2];
    assert_eq!(second["after"][0]["message"], message_of(8));
    assert_eq!(second["after"][0]["service"], service_of(8));
    assert_eq!(second["redactions"]["email"], 1);
    let third = by_line[&3];
    assert_eq!(third["filtered_rows"], 1, "{third}");
    assert_eq!(third["after"], serde_json::json!([]));
}
