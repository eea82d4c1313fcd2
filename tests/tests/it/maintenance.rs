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
/// Copies a live data file of `table` (key prefix `prefix`) to `part-00000-<tag>.zstd.parquet`
/// in its directory, a name no commit knows: what a writer that crashed after its upload, or
/// one about to commit, leaves. Its path relative to the table.
async fn copy_under_new_name(
    store: &object_store::aws::AmazonS3,
    prefix: &str,
    table: &str,
    tag: &str,
) -> String {
    let live = active_files(table).await;
    let any = live.keys().next().expect("a file").clone();
    let bytes = store
        .get(&format!("{prefix}/{any}").into())
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let dir = any.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let path = format!("{dir}/part-00000-{tag}.zstd.parquet");
    store
        .put(&format!("{prefix}/{path}").into(), PutPayload::from(bytes))
        .await
        .expect("put");
    path
}

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
    // A kill lands between a compaction's upload and its commit only sometimes: an upload that
    // a crashed writer left behind is also made by hand (a copy of a live file under a name no
    // commit knows).
    let store = s3().object_store().expect("s3");
    let prefix = key_prefix(&table);
    let crashed = copy_under_new_name(&store, &prefix, &table, "crashed-writer").await;
    announce(&format!(
        "vacuum test: {} uploads of killed compactions",
        orphans.len()
    ));
    orphans.push(crashed);
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
    let pending = copy_under_new_name(&store, &prefix, &table, "pending-upload").await;

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
        "vacuum: {} files ({} bytes) deleted, {} of them uploads no commit knows",
        expected.len(),
        vac["bytes_deleted"],
        orphans.len()
    ));
}

/// A container record of `namespace` at `ts` (RFC 3339, UTC), Fluent Bit JSON.
pub(crate) fn record_at(i: usize, namespace: &str, ts: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
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

/// `--where` of the records `first..first+100` of `crate::archiver::fluentbit_record` ("… request
/// 1200 served …"): 100 rows, all in the first hour of the data.
fn hundred(first: usize) -> String {
    assert_eq!(first % 100, 0);
    format!("message LIKE '% request {}__ served %'", first / 100)
}

fn delete_args(table: &str, predicate: &str, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&[
        "--table",
        table,
        "--where",
        predicate,
        "--wait-lease",
        "60s",
    ]);
    v.extend(strings(extra));
    v
}

async fn count_where(table: &str, predicate: &str) -> i64 {
    query_i64(table, &format!("SELECT count(*) FROM t WHERE {predicate}")).await[0]
}

/// `delete` removes exactly the matching rows, leaves the files without matches as they are,
/// and raced against `compact` in both orders (each waits for the other's lease) no deleted row
/// comes back and none is duplicated; the audit counts the deleted offsets as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_rewrites_only_matching_files_and_races_with_compaction_lose_nothing() {
    const N: usize = 9_000;
    let (table, dlq, topic) = small_file_table("delete", N).await;
    let mut deleted = 0i64;

    // The dry run counts the matches per file and changes nothing.
    let p1 = hundred(1200);
    let v0 = open(&table).await.version().expect("version");
    let dry = report("delete", delete_args(&table, &p1, &["--dry-run"])).await;
    let matched: i64 = dry["matches"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["rows"].as_i64()).sum())
        .unwrap_or(0);
    assert_eq!(matched, 100, "{dry}");
    assert_eq!(open(&table).await.version(), Some(v0));

    // Files without matches keep their paths; the rest are rewritten without the rows.
    let before = active_files(&table).await;
    let d = report("delete", delete_args(&table, &p1, &[])).await;
    deleted += 100;
    assert_eq!(d["rows_deleted"].as_i64(), Some(100), "{d}");
    let matched_files: HashSet<String> = dry["matches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        d["files_matched"].as_u64(),
        Some(matched_files.len() as u64),
        "{d}"
    );
    let after = active_files(&table).await;
    for p in before.keys() {
        assert_eq!(after.contains_key(p), !matched_files.contains(p), "{p}");
    }
    assert_eq!(
        after.len(),
        before.len() - d["files_removed"].as_u64().unwrap_or(0) as usize,
        "{d}"
    );
    assert_eq!(count_where(&table, &p1).await, 0);
    assert_eq!(
        count_and_distinct_offsets(&table).await,
        (N as i64 - deleted, N as i64 - deleted)
    );

    // Races: delete and compaction started together, in both orders, twice.
    for (round, first) in [2200usize, 3300, 4400, 5500].into_iter().enumerate() {
        let p = hundred(first);
        let keys = ["pod,ts", "namespace,pod,ts", "ts", "container,ts"][round];
        let c_args = strings(&[
            "--table",
            &table,
            "--sort-by",
            keys,
            "--settle",
            "0s",
            "--wait-lease",
            "60s",
        ]);
        let d_args = delete_args(&table, &p, &[]);
        let (c, d) = if round % 2 == 0 {
            let c = Proc::spawn(compact_cmd(&c_args)).expect("compact");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut cmd = loglake_cmd();
            cmd.arg("delete").args(&d_args);
            (c, Proc::spawn(cmd).expect("delete"))
        } else {
            let mut cmd = loglake_cmd();
            cmd.arg("delete").args(&d_args);
            let d = Proc::spawn(cmd).expect("delete");
            tokio::time::sleep(Duration::from_millis(100)).await;
            (Proc::spawn(compact_cmd(&c_args)).expect("compact"), d)
        };
        let mut outs = Vec::new();
        for mut proc in [c, d] {
            let done = proc
                .wait_within(Duration::from_secs(300))
                .await
                .expect("wait")
                .expect("still running after 5 min");
            assert!(done.status.success(), "{}", done.stderr_text());
            outs.push(reports(&done.stdout));
        }
        deleted += 100;
        assert_eq!(
            outs[1][0]["rows_deleted"].as_i64(),
            Some(100),
            "round {round}: {outs:?}"
        );
        assert_eq!(count_where(&table, &p).await, 0, "round {round}");
        assert_eq!(
            count_and_distinct_offsets(&table).await,
            (N as i64 - deleted, N as i64 - deleted),
            "round {round}: {outs:?}"
        );
    }
    // every earlier predicate still matches nothing (no deleted row came back)
    for first in [1200usize, 2200, 3300, 4400, 5500] {
        assert_eq!(count_where(&table, &hundred(first)).await, 0, "{first}");
    }
    let (au, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (au.expected, au.rows, au.missing, au.duplicates, au.deleted),
        (N as u64, (N as i64 - deleted) as u64, 0, 0, deleted as u64),
        "{au:?}"
    );
    assert!(ok);
}

/// (rows, distinct Kafka coordinates) of the table.
async fn count_and_distinct_offsets(table: &str) -> (i64, i64) {
    let v = query_i64(
        table,
        "SELECT count(*), count(DISTINCT CAST(kafka_partition AS BIGINT) * 1000000000 + kafka_offset) FROM t",
    )
    .await;
    (v[0], v[1])
}

/// `kill -9` of `delete` and `vacuum` at moments spread over their runs, ten times each; then
/// every delete once more: the table reads, exactly the deleted rows are gone, nothing else is
/// lost or duplicated, and the audit accounts for every offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_vacuum_killed_ten_times_lose_nothing_that_should_stay() {
    const N: usize = 9_000;
    let (table, dlq, topic) = small_file_table("delete-kill", N).await;
    // Ten kills of each, at moments spread over their runs: a run that finished before its kill
    // makes the next wait shorter. Every delete attempt has its own predicate.
    let mut firsts: Vec<usize> = Vec::new();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut delay: BTreeMap<&str, u64> = BTreeMap::from([("delete", 150), ("vacuum", 150)]);
    for attempt in 0..40usize {
        for sub in ["delete", "vacuum"] {
            if kills.get(sub).copied().unwrap_or(0) >= 10 {
                continue;
            }
            let args = if sub == "delete" {
                let first = 1000 + 300 * firsts.len();
                firsts.push(first);
                delete_args(&table, &hundred(first), &["--lease-ttl", "2s"])
            } else {
                strings(&[
                    "--table",
                    &table,
                    "--retention",
                    "0s",
                    "--unsafe-short-retention",
                    "--lease-ttl",
                    "2s",
                    "--wait-lease",
                    "30s",
                ])
            };
            let mut cmd = loglake_cmd();
            cmd.arg(sub).args(&args);
            let mut p = Proc::spawn(cmd).expect("spawn");
            let wait = delay[sub];
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let next = if p.running() {
                p.signal(libc::SIGKILL).expect("kill");
                *kills.entry(sub).or_default() += 1;
                (wait * 17 / 10) % 2000 + 100 + attempt as u64
            } else {
                (wait * 2 / 3).max(20)
            };
            delay.insert(sub, next);
            let _ = p.wait_within(Duration::from_secs(60)).await.expect("wait");
        }
        if kills.values().all(|k| *k >= 10) && kills.len() == 2 {
            break;
        }
    }
    announce(&format!(
        "delete/vacuum killed: {kills:?}, {} delete predicates",
        firsts.len()
    ));
    assert_eq!(kills.get("delete"), Some(&10), "{kills:?}");
    assert_eq!(kills.get("vacuum"), Some(&10), "{kills:?}");
    // the table reads; every delete once more (a killed one may or may not have committed)
    for first in firsts.iter().copied() {
        let d = report("delete", delete_args(&table, &hundred(first), &[])).await;
        assert_eq!(d["lease"], "acquired", "{d}");
        assert_eq!(count_where(&table, &hundred(first)).await, 0);
    }
    // predicates past the last record (i >= N) match nothing
    let gone = (firsts.iter().filter(|f| **f + 100 <= N).count() * 100) as i64;
    assert_eq!(
        count_and_distinct_offsets(&table).await,
        (N as i64 - gone, N as i64 - gone)
    );
    let (au, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (au.expected, au.rows, au.missing, au.duplicates, au.deleted),
        (N as u64, (N as i64 - gone) as u64, 0, 0, gone as u64),
        "{au:?}"
    );
    assert!(ok);
    // a last vacuum (retention 0) leaves only the files of the latest version
    report(
        "vacuum",
        strings(&[
            "--table",
            &table,
            "--retention",
            "0s",
            "--unsafe-short-retention",
            "--wait-lease",
            "30s",
        ]),
    )
    .await;
    let live: HashSet<String> = active_files(&table).await.into_keys().collect();
    let objects: HashSet<String> = data_objects(&table).await.into_iter().collect();
    assert_eq!(objects, live);
    assert_eq!(
        count_and_distinct_offsets(&table).await,
        (N as i64 - gone, N as i64 - gone)
    );
}
