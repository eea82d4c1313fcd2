//! The ETL offsets ledger (issue 24): the offsets an archive-time filter dropped outlive the
//! commit files that list them. Through the real binary against tansu and moto: archive with
//! `--filter`, `loglake checkpoint --log-retention 0s` removes the commit files (checked in the
//! bucket), and `loglake audit` still counts every filtered offset exactly once — from the
//! ledger for the folded versions, from the commit infos of the later ones; commit files cleaned
//! by someone else before any fold are reported as unverifiable versions.

use std::collections::HashMap;

use loglake_tests::{announce, kafka, loglake_ok, s3, unique_name};
use serde_json::Value;

use crate::archiver::{archive_args, produce_with, run_archive_blocking};
use crate::compactor::reports;

/// Record `i`: every fourth a DEBUG line (dropped by the filter).
fn record(i: usize) -> Vec<u8> {
    let level = if i.is_multiple_of(4) { "DEBUG" } else { "INFO" };
    format!(
        "{{\"date\":{}.5,\"log\":\"{level} req {i}\\n\",\"kubernetes\":{{\"pod_name\":\"p-{}\",\
         \"namespace_name\":\"shop\",\"container_name\":\"c\"}}}}",
        1_795_000_000 + i,
        i % 5
    )
    .into_bytes()
}

fn filtered_in(range: std::ops::Range<usize>) -> u64 {
    range.filter(|i| i.is_multiple_of(4)).count() as u64
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Archives records `first..first + n` of `topic` into `table` with the filter; returns the
/// report's filtered row count.
async fn archive(topic: &str, table: &str, dlq: &str, first: usize, n: usize) -> u64 {
    produce_with(topic, first, n, record).await;
    let mut args = archive_args(topic, &unique_name("g"), table, dlq);
    args.extend(["--filter".to_string(), "level <> 'debug'".to_string()]);
    let out = run_archive_blocking(args).await;
    assert!(
        out.status.success(),
        "archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("report");
    u(&report, "rows_filtered")
}

/// `loglake checkpoint --log-retention 0s` on `table`: its one report.
async fn checkpoint(table: &str) -> Value {
    let out = loglake_ok(&["checkpoint", "--table", table, "--log-retention", "0s"]).await;
    let mut r = reports(&out.stdout);
    assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(&out.stdout));
    r.remove(0)
}

/// `loglake audit` as JSON, and whether it exited 0 (off the async runtime).
async fn audit(topic: &str, table: &str, dlq: &str) -> (Value, bool) {
    let (t, tb, d) = (topic.to_string(), table.to_string(), dlq.to_string());
    tokio::task::spawn_blocking(move || crate::archiver::audit_json(&t, &tb, &d))
        .await
        .expect("join")
}

/// The versions of the commit files under `table`'s `_delta_log/`, and the ledger objects.
async fn log_and_ledger(table: &str) -> (Vec<u64>, Vec<String>) {
    let prefix = table
        .strip_prefix(&format!("s3://{}/", s3().bucket))
        .expect("a test-bucket url");
    let commits = s3()
        .list(&format!("{prefix}/_delta_log"))
        .await
        .expect("list")
        .iter()
        .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
        .collect();
    let ledger = s3()
        .list(&format!("{prefix}/_loglake/etl_offsets"))
        .await
        .expect("list")
        .iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .collect();
    (commits, ledger)
}

/// (expected, rows, filtered, missing, duplicates, unverifiable versions) of an audit.
fn counts(a: &Value) -> [u64; 6] {
    [
        u(a, "expected"),
        u(a, "rows"),
        u(a, "filtered"),
        u(a, "missing"),
        u(a, "duplicates"),
        u(a, "unverifiable_versions"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_offsets_survive_log_cleanup_through_the_etl_ledger() {
    let topic = unique_name("ledger");
    kafka().create_topic(&topic, 2).await.expect("topic");
    let table = s3().unique_url("ledger");
    let dlq = format!("{table}-dlq");

    // two archive runs, so that the checkpoint's version is past the first run's commits
    assert_eq!(
        archive(&topic, &table, &dlq, 0, 300).await,
        filtered_in(0..300)
    );
    assert_eq!(
        archive(&topic, &table, &dlq, 300, 300).await,
        filtered_in(300..600)
    );
    let (before, _) = log_and_ledger(&table).await;
    let v1 = *before.last().expect("commits");
    assert!(v1 >= 2, "{before:?}");

    let c = checkpoint(&table).await;
    assert_eq!(u(&c, "version"), v1, "{c}");
    assert_eq!(u(&c, "etl_versions_folded"), v1 + 1, "{c}");
    assert!(u(&c, "etl_ranges_folded") > 0, "{c}");
    assert_eq!(u(&c, "etl_unverifiable_versions"), 0, "{c}");
    assert_eq!(u(&c, "log_files_removed"), v1, "{c}");
    let (after, ledger) = log_and_ledger(&table).await;
    assert_eq!(
        after,
        vec![v1],
        "every commit file below the checkpoint is gone"
    );
    assert_eq!(ledger, vec![format!("{:020}.json", 0)]);

    // everything from the ledger: nothing missing, nothing counted twice
    let (a, ok) = audit(&topic, &table, &dlq).await;
    let f600 = filtered_in(0..600);
    assert_eq!(counts(&a), [600, 600 - f600, f600, 0, 0, 0], "{a}");
    assert!(ok, "{a}");

    // more commits after the fold: the ledger up to v1, the log after it, each once
    assert_eq!(
        archive(&topic, &table, &dlq, 600, 200).await,
        filtered_in(600..800)
    );
    let f800 = filtered_in(0..800);
    let (a, ok) = audit(&topic, &table, &dlq).await;
    assert_eq!(counts(&a), [800, 800 - f800, f800, 0, 0, 0], "{a}");
    assert!(ok, "{a}");
    let c = checkpoint(&table).await;
    let v2 = u(&c, "version");
    assert!(v2 > v1, "{c}");
    assert_eq!(u(&c, "etl_versions_folded"), v2 - v1, "{c}");
    let (after, ledger) = log_and_ledger(&table).await;
    assert_eq!(after, vec![v2]);
    assert_eq!(
        ledger,
        vec![format!("{:020}.json", 0), format!("{:020}.json", v1 + 1)]
    );
    let (a, ok) = audit(&topic, &table, &dlq).await;
    assert_eq!(counts(&a), [800, 800 - f800, f800, 0, 0, 0], "{a}");
    assert!(ok, "{a}");

    // another tool cleans the log without folding (a commit of its own, a checkpoint and a
    // cleanup at once): the versions it cleaned are unverifiable, and the offsets they filtered
    // are missing — said, not hidden
    assert_eq!(
        archive(&topic, &table, &dlq, 800, 100).await,
        filtered_in(800..900)
    );
    let vf = foreign_cleanup(&table).await;
    assert!(vf >= v2 + 2, "{vf} after {v2}");
    let (after, _) = log_and_ledger(&table).await;
    assert_eq!(after, vec![vf]);
    let lost = filtered_in(800..900);
    let (a, ok) = audit(&topic, &table, &dlq).await;
    assert_eq!(
        counts(&a),
        [900, 900 - f800 - lost, f800, lost, 0, vf - v2 - 1],
        "{a}"
    );
    assert_eq!(
        a["unverifiable_version_ranges"],
        serde_json::json!([[v2 + 1, vf - 1]]),
        "{a}"
    );
    assert!(!ok, "missing offsets fail the audit: {a}");
    // the next fold records the gap too
    let c = checkpoint(&table).await;
    assert_eq!(u(&c, "etl_unverifiable_versions"), vf - v2 - 1, "{c}");
    announce(&format!(
        "etl ledger: {f800} filtered offsets counted once after two cleanups; {} versions \
         cleaned by another tool reported",
        vf - v2 - 1
    ));
}

/// A table-property commit by deltalake itself, then deltalake's checkpoint and cleanup of every
/// older commit file (no ETL ledger fold): returns the new version.
async fn foreign_cleanup(table: &str) -> u64 {
    use deltalake::DeltaTable;
    deltalake::aws::register_handlers(None);
    let t = DeltaTable::try_from_url_with_storage_options(
        url::Url::parse(table).expect("url"),
        s3().storage_options(),
    )
    .await
    .expect("open table");
    let t = t
        .set_tbl_properties()
        .with_properties(HashMap::from([(
            "delta.logRetentionDuration".to_string(),
            "interval 30 days".to_string(),
        )]))
        .await
        .expect("set a property");
    let version = t.version().expect("version");
    deltalake::checkpoints::create_checkpoint(&t, None)
        .await
        .expect("checkpoint");
    let now = chrono::Utc::now().timestamp_millis();
    deltalake::checkpoints::cleanup_expired_logs_for(version, t.log_store().as_ref(), now, None)
        .await
        .expect("cleanup");
    version
}
