//! loglake against an S3 that fails: the archiver, then the compactor, write through the test
//! kit's fault proxy (`loglake_tests::fault`), which refuses 3 of every 60 requests (5 %: 503
//! SlowDown, 500 InternalError, a connection closed without an answer), delays as many, and
//! loses the answer of every third Delta commit after the store wrote it (the retried
//! put-if-absent then finds the version taken — by the writer itself). A run that fails is run
//! again, as a CronJob's retry would; in the end every record is in the table exactly once,
//! every file the log references exists, and no log line carries the secret key.

use std::time::Duration;

use object_store::ObjectStoreExt;

use crate::archiver::{archive_args, audit, produce, query_i64};
use crate::compactor::{active_files, key_prefix};
use loglake_tests::fault::FaultProxy;
use loglake_tests::{Proc, announce, fault, kafka, loglake_cmd, s3, unique_name};

/// Runs `loglake <sub> <args>` against the store behind `proxy` until it exits 0 (at most 8
/// runs, each failure a retryable exit 1); the exit codes.
async fn until_done(proxy: &FaultProxy, sub: &str, args: &[String]) -> Vec<Option<i32>> {
    let mut runs = Vec::new();
    for attempt in 1..=8 {
        let mut cmd = loglake_cmd();
        cmd.arg(sub)
            .args(args)
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("LOGLAKE_LOG", "warn");
        let mut p = Proc::spawn(cmd).expect("spawn loglake");
        let done = p
            .wait_within(Duration::from_secs(300))
            .await
            .expect("wait")
            .unwrap_or_else(|| panic!("loglake {sub} still running after 5 min"));
        let stderr = done.stderr_text();
        assert!(
            !stderr.contains(&s3().secret_access_key),
            "the secret key in the log:\n{stderr}"
        );
        let code = done.status.code();
        runs.push(code);
        if code == Some(0) {
            return runs;
        }
        // retryable failures only (the store, not the configuration)
        assert_eq!(code, Some(1), "{sub} attempt {attempt}:\n{stderr}");
    }
    panic!("loglake {sub} did not succeed in 8 runs: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_through_an_s3_that_refuses_five_percent_of_requests_loses_and_duplicates_nothing()
 {
    const N: usize = 4_000;
    let topic = unique_name("faults");
    kafka().create_topic(&topic, 3).await.expect("topic");
    produce(&topic, 0, N, false).await;
    let table = s3().unique_url("faults");
    let dlq = format!("{table}-dlq");
    let proxy = fault::start(&s3().endpoint, 60, Duration::from_millis(1500), 42, true)
        .await
        .expect("fault proxy");
    let group = unique_name("g-faults");
    let mut args = archive_args(&topic, &group, &table, &dlq);
    // small files and frequent commits: many requests, so faults hit uploads and commits
    args.extend(
        ["--roll-interval", "1s", "--target-file-size", "64KiB"]
            .iter()
            .map(|s| s.to_string()),
    );
    let runs = until_done(&proxy, "archive", &args).await;
    // compaction through the same proxy: one sorted file per partition (settle 0 s, every
    // partition is closed), its commits' answers lost as the archiver's were
    let compact_args: Vec<String> = [
        "--table",
        &table,
        "--sort-by",
        "namespace,pod,ts",
        "--settle",
        "0s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let compactions = until_done(&proxy, "compact", &compact_args).await;
    let (requests, slow_down, internal, resets, delayed) = proxy.counts.snapshot();
    let lost = proxy.counts.lost.load(std::sync::atomic::Ordering::Relaxed);
    // at least 60 requests: each kind of fault happened
    assert!(
        requests >= 60 && slow_down > 0 && internal > 0 && resets > 0,
        "the proxy saw {requests} requests: {slow_down} x 503, {internal} x 500, {resets} resets"
    );
    drop(proxy);
    let (au, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (au.expected, au.rows, au.missing, au.duplicates),
        (N as u64, N as u64, 0, 0),
        "{au:?}"
    );
    assert!(ok);
    // every file the log references is there (a commit whose answer was lost was not taken for
    // another's, so its files were not deleted), and the partitions are compacted
    let files = active_files(&table).await;
    let store = s3().object_store().expect("s3");
    let prefix = key_prefix(&table);
    for f in files.keys() {
        store
            .head(&format!("{prefix}/{f}").into())
            .await
            .unwrap_or_else(|e| panic!("{f} is in the log but not in the store: {e}"));
    }
    assert!(files.keys().all(|f| f.contains("/compacted-")), "{files:?}");
    assert_eq!(
        query_i64(
            &table,
            "SELECT count(DISTINCT kafka_offset * 8 + kafka_partition) FROM t"
        )
        .await,
        vec![N as i64]
    );
    announce(&format!(
        "faults: {requests} S3 requests through the proxy: {slow_down} x 503, {internal} x 500, \
         {resets} resets, {delayed} delayed, {lost} answers lost; archive runs {runs:?}, \
         compact runs {compactions:?}"
    ));
}
