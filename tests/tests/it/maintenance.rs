//! `loglake vacuum` and `loglake retention` against the real broker and S3 server, through the
//! real binary: what goes, what must stay (time travel inside the retention, an upload not yet
//! committed, the rows of namespaces kept longer), beside a live archiver.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::Value;

use crate::archiver::{
    archive_args, audit, produce, produce_with, query_i64, run_archive_blocking,
};
use crate::compactor::{
    active_files, compact, compact_cmd, data_objects, key_prefix, open, reports, small_file_table,
    strings,
};
use loglake_tests::{Proc, announce, kafka, loglake_cmd, s3, unique_name};

/// Runs `loglake SUBCOMMAND ARGS` to the end (off the async runtime).
async fn run(sub: &'static str, args: Vec<String>) -> loglake_tests::Finished {
    let out = tokio::task::spawn_blocking(move || {
        loglake_cmd()
            .arg(sub)
            .args(&args)
            .env("LOGLAKE_LOG", "warn,loglake_compactor=info")
            .output()
            .expect("run loglake")
    })
    .await
    .expect("join");
    loglake_tests::Finished {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Runs `loglake SUBCOMMAND ARGS`, which must succeed with one table report.
async fn report(sub: &'static str, args: Vec<String>) -> Value {
    let done = run(sub, args).await;
    assert!(
        done.status.success(),
        "loglake failed: {}\n{}",
        done.status,
        done.stderr_text()
    );
    let mut r = reports(&done.stdout);
    assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(&done.stdout));
    r.remove(0)
}

/// Rows of the table at `version`, read from its files (`Err`: they cannot be read, e.g. they are
/// gone).
async fn count_at(url: &str, version: u64) -> Result<i64, String> {
    let mut t = open(url).await;
    t.load_version(version).await.map_err(|e| e.to_string())?;
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())
        .map_err(|e| e.to_string())?;
    ctx.register_table("t", t.table_provider().await.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let batches = ctx
        // a filter on a column, so that the files are read (a bare count(*) is answered from
        // the log's statistics)
        .sql("SELECT count(*) FROM t WHERE length(message) >= 0")
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    use arrow::array::AsArray;
    Ok(batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0))
}

/// The vacuum retention of the test: what compaction 1 and the killed runs removed or left is
/// older than it at the vacuum; what compaction 2 removed and the pending upload are younger (the
/// steps from compaction 2 to the vacuum take a few seconds; 30 leaves room on a loaded machine).
const RETENTION: Duration = Duration::from_secs(30);

fn vacuum_args(table: &str, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&[
        "--table",
        table,
        "--retention",
        "30s",
        "--unsafe-short-retention",
        "--wait-lease",
        "30s",
    ]);
    v.extend(strings(extra));
    v
}

/// Files removed longer ago than the retention and orphans of killed compactions go; the files
/// of a version inside the retention, an upload not committed yet and a live archiver's new
/// files stay; a short retention needs `--unsafe-short-retention`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_deletes_expired_removes_and_orphans_and_nothing_a_version_inside_the_retention_needs()
 {
    const N: usize = 9_000;
    let (table, dlq, topic) = small_file_table("vacuum", N).await;
    let v_archived = open(&table).await.version().expect("version");

    // Compaction 1 removes the archived files; killed compactions (other keys) leave orphans.
    let c1 = compact(strings(&[
        "--table",
        &table,
        "--sort-by",
        "namespace,pod,ts",
        "--settle",
        "0s",
    ]))
    .await;
    assert!(c1["groups_committed"].as_u64() > Some(0), "{c1}");
    let mut delay_ms = 200u64;
    let mut orphans = Vec::new();
    for round in 0..12 {
        let keys = if round % 2 == 0 {
            "pod,ts"
        } else {
            "namespace,ts"
        };
        let args = strings(&[
            "--table",
            &table,
            "--sort-by",
            keys,
            "--settle",
            "0s",
            "--lease-ttl",
            "2s",
            "--wait-lease",
            "30s",
        ]);
        let mut p = Proc::spawn(compact_cmd(&args)).expect("spawn");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if p.running() {
            p.signal(libc::SIGKILL).expect("kill");
        }
        let _ = p.wait_within(Duration::from_secs(30)).await.expect("wait");
        delay_ms = delay_ms * 3 / 2 % 2500 + 150;
        let known = crate::compactor::log_paths(&table).await;
        orphans = data_objects(&table)
            .await
            .into_iter()
            .filter(|k| !known.contains(k))
            .collect();
        if orphans.len() >= 2 && round >= 3 {
            break;
        }
    }
    assert!(
        !orphans.is_empty(),
        "no killed compaction left an upload behind"
    );
    tokio::time::sleep(RETENTION + Duration::from_secs(2)).await;

    // A short retention is refused without the flag (exit code 2, the flag named).
    let refused = run(
        "vacuum",
        strings(&["--table", &table, "--retention", "30s"]),
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr_text());
    assert!(
        refused.stderr_text().contains("--unsafe-short-retention"),
        "{}",
        refused.stderr_text()
    );

    // Compaction 2 (other keys): the files of the version before it are removed now, inside the
    // retention.
    let before_c2: HashSet<String> = active_files(&table).await.into_keys().collect();
    let v_before_c2 = open(&table).await.version().expect("version");
    let c2 = compact(strings(&[
        "--table",
        &table,
        "--sort-by",
        "container,pod,ts",
        "--settle",
        "0s",
        "--wait-lease",
        "30s",
    ]))
    .await;
    assert_eq!(c2["lease"], "acquired", "{c2}");
    let after_c2: HashSet<String> = active_files(&table).await.into_keys().collect();
    let c2_done = std::time::Instant::now();

    // An upload a writer has not committed yet: a copy of a live file under a fresh name.
    let store = s3().object_store().expect("s3");
    let any = after_c2.iter().next().expect("a file").clone();
    let prefix = key_prefix(&table);
    let bytes = store
        .get(&format!("{prefix}/{any}").into())
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let dir = any.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let pending = format!("{dir}/part-00000-pending-upload.zstd.parquet");
    store
        .put(
            &format!("{prefix}/{pending}").into(),
            PutPayload::from(bytes),
        )
        .await
        .expect("put");

    let listed: HashSet<String> = data_objects(&table).await.into_iter().collect();
    let expected: HashSet<String> = listed
        .iter()
        .filter(|p| !before_c2.contains(*p) && !after_c2.contains(*p) && **p != pending)
        .cloned()
        .collect();
    for o in &orphans {
        assert!(expected.contains(o), "orphan {o} not expected to go");
    }

    // The dry run lists exactly that, with sizes, and deletes nothing.
    let dry = report("vacuum", vacuum_args(&table, &["--dry-run"])).await;
    let listed_dry: HashSet<String> = dry["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(listed_dry, expected, "{dry}");
    assert!(dry["bytes_deleted"].as_u64() > Some(0), "{dry}");
    assert_eq!(data_objects(&table).await.len(), listed.len());

    // The vacuum, while an archiver appends more records to the table.
    const MORE: usize = 3_000;
    produce(&topic, N, MORE, false).await;
    let group = unique_name("g-more");
    let archiving = tokio::spawn({
        let (topic, table, dlq) = (topic.clone(), table.clone(), dlq.clone());
        async move { run_archive_blocking(archive_args(&topic, &group, &table, &dlq)).await }
    });
    let vac = report("vacuum", vacuum_args(&table, &[])).await;
    assert!(
        c2_done.elapsed() < RETENTION,
        "the steps from compaction 2 to the end of the vacuum took {:?}, more than the test's \
         retention: its expectations do not hold on a machine this loaded",
        c2_done.elapsed()
    );
    archiving.await.expect("archive");
    assert_eq!(vac["lease"], "acquired", "{vac}");
    assert_eq!(
        vac["files_deleted"].as_u64(),
        Some(expected.len() as u64),
        "{vac}"
    );
    assert_eq!(vac["bytes_deleted"], dry["bytes_deleted"], "{vac}");
    let left: HashSet<String> = data_objects(&table).await.into_iter().collect();
    assert!(
        left.is_disjoint(&expected),
        "{:?}",
        left.intersection(&expected).collect::<Vec<_>>()
    );
    assert!(left.contains(&pending), "the pending upload was deleted");
    assert!(before_c2.is_subset(&left) && after_c2.is_subset(&left));

    // Time travel: the version before compaction 2 (inside the retention) reads; the archived
    // version (its files removed by compaction 1, past the retention) no longer does.
    assert_eq!(count_at(&table, v_before_c2).await, Ok(N as i64));
    let gone = count_at(&table, v_archived).await;
    assert!(gone.is_err(), "version {v_archived} still reads: {gone:?}");
    // Nothing lost or duplicated, the live archiver's records included.
    let (au, ok) = audit(&topic, &table, &dlq);
    let total = (N + MORE) as u64;
    assert_eq!(
        (au.expected, au.rows, au.missing, au.duplicates),
        (total, total, 0, 0),
        "{au:?}"
    );
    assert!(ok);
    announce(&format!(
        "vacuum: {} files ({} bytes) deleted, {} of them orphans of killed compactions",
        expected.len(),
        vac["bytes_deleted"],
        orphans.len()
    ));
}

/// A container record of `namespace` at `ts` (RFC 3339, UTC), Fluent Bit JSON.
fn record_at(i: usize, namespace: &str, ts: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    format!(
        concat!(
            "{{\"date\":{}.0,\"time\":\"{}\",\"stream\":\"stdout\",\"log\":\"line {}\\n\",",
            "\"kubernetes\":{{\"pod_name\":\"{}-{}\",\"namespace_name\":\"{}\",",
            "\"container_name\":\"app\",\"host\":\"node-1\"}}}}"
        ),
        ts.timestamp(),
        ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        i,
        namespace,
        i % 5,
        namespace
    )
    .into_bytes()
}

const NAMESPACES: [&str; 3] = ["shop", "payments", "kube-system"];
/// Days before now of the records: i / 3 even → 45 days, odd → 5 days.
fn age_days(i: usize) -> i64 {
    if (i / 3).is_multiple_of(2) { 45 } else { 5 }
}

/// Rows per namespace.
async fn per_namespace(table: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (k, ns) in NAMESPACES.iter().enumerate() {
        let n = query_i64(
            table,
            &format!("SELECT count(*) FROM t WHERE namespace = '{ns}'"),
        )
        .await;
        out.insert(ns.to_string(), n[0]);
        let _ = k;
    }
    out
}

/// Retention removes exactly the files past their days (30 by default, payments 60,
/// kube-system 3) of a table partitioned by namespace, without rewriting any; a table whose
/// files mix namespaces keeps the files that may hold rows kept longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_exactly_the_files_past_their_days_per_namespace() {
    const N: usize = 6_000;
    let topic = unique_name("retention");
    kafka().create_topic(&topic, 2).await.expect("topic");
    let hour = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .expect("time")
        .and_utc();
    produce_with(&topic, 0, N, move |i| {
        let ts = hour - chrono::Duration::days(age_days(i))
            + chrono::Duration::seconds((i % 3000) as i64);
        record_at(i, NAMESPACES[i % 3], ts)
    })
    .await;
    let by_ns = s3().unique_url("retention-ns");
    let mixed = s3().unique_url("retention-mixed");
    for (table, extra) in [
        (&by_ns, vec!["--partition-by", "dt,hour,namespace"]),
        (&mixed, vec![]),
    ] {
        let mut args = archive_args(&topic, &unique_name("g"), table, &format!("{table}-dlq"));
        args.extend(strings(&extra));
        run_archive_blocking(args).await;
    }
    let flags = |table: &str, extra: &[&str]| {
        let mut v = strings(&[
            "--table",
            table,
            "--retention-days",
            "30",
            "--retention-by-namespace",
            "payments=60,kube-system=3",
        ]);
        v.extend(strings(extra));
        v
    };
    let per_ns_before = per_namespace(&by_ns).await;
    let per = |ns: &str, age: i64| {
        (0..N)
            .filter(|i| NAMESPACES[i % 3] == ns && age_days(*i) == age)
            .count() as i64
    };
    assert_eq!(per_ns_before["shop"], per("shop", 45) + per("shop", 5));

    let old_day = (hour - chrono::Duration::days(45)).date_naive();
    let files_before = active_files(&by_ns).await;
    let v0 = open(&by_ns).await.version().expect("version");
    // which files must go: shop and kube-system 45 days old, kube-system 5 days old
    let doomed: HashSet<String> = files_before
        .keys()
        .filter(|p| {
            let old = p.contains(&format!("dt={}", old_day));
            (p.contains("namespace=shop") && old) || p.contains("namespace=kube-system")
        })
        .cloned()
        .collect();
    assert!(
        !doomed.is_empty() && doomed.len() < files_before.len(),
        "{files_before:?}"
    );

    let dry = report("retention", flags(&by_ns, &["--dry-run"])).await;
    let listed: HashSet<String> = dry["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(listed, doomed, "{dry}");
    assert_eq!(open(&by_ns).await.version(), Some(v0));

    let r = report("retention", flags(&by_ns, &[])).await;
    assert_eq!(r["lease"], "acquired", "{r}");
    assert_eq!(
        r["files_removed"].as_u64(),
        Some(doomed.len() as u64),
        "{r}"
    );
    let expected_gone = per("shop", 45) + per("kube-system", 45) + per("kube-system", 5);
    assert_eq!(r["rows_removed"].as_i64(), Some(expected_gone), "{r}");
    let files_after = active_files(&by_ns).await;
    // nothing rewritten: the files left are exactly the ones that were there
    let kept: HashSet<String> = files_before
        .keys()
        .filter(|p| !doomed.contains(*p))
        .cloned()
        .collect();
    assert_eq!(files_after.keys().cloned().collect::<HashSet<_>>(), kept);
    let per_ns_after = per_namespace(&by_ns).await;
    assert_eq!(
        per_ns_after,
        BTreeMap::from([
            ("kube-system".to_string(), 0),
            (
                "payments".to_string(),
                per("payments", 45) + per("payments", 5)
            ),
            ("shop".to_string(), per("shop", 5)),
        ])
    );
    // A second run has nothing left to do.
    let again = report("retention", flags(&by_ns, &[])).await;
    assert_eq!(again["files_removed"].as_u64(), Some(0), "{again}");

    // Files mixing namespaces: every old file may hold payments rows (60 days): all stay.
    let mixed_before = active_files(&mixed).await;
    let m = report("retention", flags(&mixed, &[])).await;
    assert_eq!(m["files_removed"].as_u64(), Some(0), "{m}");
    assert_eq!(active_files(&mixed).await, mixed_before);
    // Without the payments override the old ones go (30 days), the recent ones stay.
    let m = report(
        "retention",
        strings(&["--table", &mixed, "--retention-days", "30"]),
    )
    .await;
    let old_files = mixed_before
        .keys()
        .filter(|p| p.contains(&format!("dt={}", old_day)))
        .count();
    assert_eq!(m["files_removed"].as_u64(), Some(old_files as u64), "{m}");
    let n_new = (0..N).filter(|i| age_days(*i) == 5).count() as i64;
    assert_eq!(
        query_i64(&mixed, "SELECT count(*) FROM t").await,
        vec![n_new]
    );
}
