//! `loglake compact` and `loglake checkpoint` against the real broker and S3 server, through the
//! real binary: beside live archivers, against each other, killed, and on a long log.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use serde_json::Value;
use url::Url;

use crate::archiver::{
    Audit, archive_args, audit, fluentbit_record, produce, produce_with, query_i64,
    run_archive_blocking,
};
use loglake_tests::archive::Archive;
use loglake_tests::{Proc, announce, kafka, loglake_cmd, loglake_ok, s3, unique_name};

const SORT_BY: [&str; 4] = ["namespace", "pod", "container", "ts"];

/// A table definition like the shipped `containers.toml`: sorted by namespace, pod, container,
/// ts; bloom filters on trace_id and pod.
fn write_def(dir: &std::path::Path, name: &str, topic: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\ntopics = [\"{topic}\"]\ndecoder = \"fluentbit\"\n\
             partition_by = [\"dt\", \"hour\"]\nsort_by = [\"namespace\", \"pod\", \"container\", \"ts\"]\n\
             bloom_filter_columns = [\"trace_id\", \"pod\"]\n"
        ),
    )
    .expect("write table def");
}

pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn compact_cmd(args: &[String]) -> Command {
    let mut c = loglake_cmd();
    c.arg("compact").args(args);
    c.env("LOGLAKE_LOG", "warn,loglake_compactor=info");
    c
}

/// The JSON objects a `compact`/`checkpoint` run printed, one per table.
pub(crate) fn reports(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Runs `loglake compact ARGS` to the end (off the async runtime); its one table report.
pub(crate) async fn compact(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || compact_cmd(&args).output().expect("compact"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "loglake compact failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = reports(&out.stdout);
    assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(&out.stdout));
    r.remove(0)
}

pub(crate) async fn open(url: &str) -> DeltaTable {
    deltalake::aws::register_handlers(None);
    DeltaTable::try_from_url_with_storage_options(
        Url::parse(url).expect("url"),
        s3().storage_options(),
    )
    .await
    .expect("open table")
}

/// The table's data files: path → (size, partition `dt/hour`).
pub(crate) async fn active_files(url: &str) -> BTreeMap<String, (u64, String)> {
    let t = open(url).await;
    let state = t.snapshot().expect("snapshot");
    state
        .log_data()
        .iter()
        .map(|v| {
            let pv = v.partition_values_map();
            let part = format!(
                "{}/{}",
                pv.get("dt").cloned().flatten().unwrap_or_default(),
                pv.get("hour").cloned().flatten().unwrap_or_default()
            );
            (v.path().to_string(), (v.size() as u64, part))
        })
        .collect()
}

/// The object key prefix of a table URL `s3://bucket/prefix`.
pub(crate) fn key_prefix(url: &str) -> String {
    let u = Url::parse(url).expect("url");
    u.path().trim_matches('/').to_string()
}

/// Reads one data file of the table at `url`: its batches and footer (bloom filters included).
async fn read_file(url: &str, path: &str) -> (Vec<RecordBatch>, Arc<ParquetMetaData>) {
    let store = s3().object_store().expect("store");
    let key = ObjPath::from(format!("{}/{path}", key_prefix(url)));
    let bytes = store
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("footer");
    let meta = builder.metadata().clone();
    let batches: Vec<RecordBatch> = builder
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("read");
    (batches, meta)
}

/// (namespace, pod, container, ts) of a row.
type SortKey = (Option<String>, Option<String>, Option<String>, Option<i64>);

/// The sort key of each row: (namespace, pod, container, ts), nulls first as the compactor sorts.
fn sort_keys(batches: &[RecordBatch]) -> Vec<SortKey> {
    let mut out = Vec::new();
    for b in batches {
        let s = |c: &str| b.column_by_name(c).expect(c).as_string::<i32>().clone();
        let (ns, pod, ctr) = (s("namespace"), s("pod"), s("container"));
        let ts = b
            .column_by_name("ts")
            .expect("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        for i in 0..b.num_rows() {
            let opt =
                |a: &arrow::array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            out.push((
                opt(&ns),
                opt(&pod),
                opt(&ctr),
                (!ts.is_null(i)).then(|| ts.value(i)),
            ));
        }
    }
    out
}

/// Every row group of the footer has a bloom filter on `column`.
fn has_bloom_filters(meta: &ParquetMetaData, column: &str) -> bool {
    meta.row_groups().iter().all(|rg| {
        rg.columns()
            .iter()
            .any(|c| c.column_path().string() == column && c.bloom_filter_offset().is_some())
    })
}

/// The SQL answers compared between a compacted table and an uncompacted copy of the same data.
const ANSWERS: &[&str] = &[
    "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM t",
    "SELECT count(*) FROM t WHERE namespace = 'shop' GROUP BY namespace",
    "SELECT count(*) FROM t WHERE pod = 'payments-4'",
    "SELECT sum(kafka_offset), sum(kafka_partition) FROM t",
    "SELECT CAST(min(ts) AS BIGINT), CAST(max(ts) AS BIGINT) FROM t",
    "SELECT count(*) FROM t GROUP BY dt, hour ORDER BY dt, hour",
    "SELECT count(*) FROM t WHERE message LIKE '%ERROR%'",
];

async fn answers(url: &str) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for sql in ANSWERS {
        out.push(query_i64(url, sql).await);
    }
    out
}

/// Two continuous archivers in one group write a table with a 1 s roll while `compact` runs
/// every two seconds; then a final archive to the end and a final compaction. The table holds
/// every record once (audit), one sorted file per partition with bloom filters, and answers a
/// fixed set of queries as an uncompacted copy of the same topic does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_beside_two_live_archivers_keeps_every_record_once_sorted_with_bloom_filters() {
    const RECORDS: usize = 24_000;
    let topic = unique_name("compact-live");
    kafka().create_topic(&topic, 6).await.expect("topic");
    let lake = s3().unique_url("compact-live");
    let name = "containers";
    let table = format!("{lake}/{name}");
    let dlq = format!("{table}-dlq");
    let defs = tempfile::tempdir().expect("tmp");
    write_def(defs.path(), name, &topic);
    let group = unique_name("g");
    let continuous = || {
        Archive::topic(&topic, &table)
            .group(&group)
            .dlq(&dlq)
            .flag("roll-interval", "1s")
            .spawn()
    };
    let mut a = continuous();
    let mut b = continuous();

    let t = topic.clone();
    let producer = tokio::spawn(async move {
        let mut n = 0;
        for chunk in 0..12 {
            n += produce(&t, chunk * 2000, 2000, true)
                .await
                .values()
                .sum::<u64>();
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        n
    });
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let committed = Arc::new(AtomicUsize::new(0));
    let compactor = {
        let args = strings(&[
            "--table",
            &table,
            "--tables-dir",
            &defs.path().to_string_lossy(),
            "--wait-lease",
            "30s",
        ]);
        let (stop, runs, committed) = (stop.clone(), runs.clone(), committed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // the table may not exist yet in the first second
                let args = args.clone();
                let out = tokio::task::spawn_blocking(move || compact_cmd(&args).output())
                    .await
                    .expect("join")
                    .expect("compact");
                if out.status.success() {
                    runs.fetch_add(1, Ordering::Relaxed);
                    for r in reports(&out.stdout) {
                        committed.fetch_add(
                            r["groups_committed"].as_u64().unwrap_or(0) as usize,
                            Ordering::Relaxed,
                        );
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    assert_eq!(producer.await.expect("producer"), RECORDS as u64);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (n, p) in [("a", &mut a), ("b", &mut b)] {
        p.signal(libc::SIGTERM).expect("sigterm");
        let done = p
            .wait_within(Duration::from_secs(60))
            .await
            .expect("wait")
            .unwrap_or_else(|| panic!("archiver {n} did not stop"));
        assert!(
            done.status.success(),
            "archiver {n}: {}",
            done.stderr_text()
        );
    }
    // the rest of the topic, in a fresh group (offsets come from the table)
    run_archive_blocking(archive_args(&topic, &unique_name("g-final"), &table, &dlq)).await;
    stop.store(true, Ordering::Relaxed);
    compactor.await.expect("compactor");
    let live_runs = runs.load(Ordering::Relaxed);
    let live_groups = committed.load(Ordering::Relaxed);
    assert!(
        live_runs >= 3,
        "compact ran {live_runs} times beside the archivers"
    );
    assert!(live_groups > 0, "no group compacted beside the archivers");

    // An uncompacted copy of the same topic.
    let copy = format!("{lake}/copy");
    let copy_dlq = format!("{copy}-dlq");
    run_archive_blocking(archive_args(
        &topic,
        &unique_name("g-copy"),
        &copy,
        &copy_dlq,
    ))
    .await;

    let before = active_files(&table).await;
    let last = compact(strings(&[
        "--table",
        &table,
        "--tables-dir",
        &defs.path().to_string_lossy(),
        "--log-retention",
        "0s",
    ]))
    .await;
    announce(&format!(
        "compact beside archivers: {live_runs} runs committed {live_groups} groups; final run {last}"
    ));
    assert_eq!(last["lease"], "acquired");
    assert_eq!(last["groups_conflicted"], 0);

    let (report, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        report,
        Audit {
            expected: RECORDS as u64,
            rows: RECORDS as u64 / 100 * 99,
            dead_letters: RECORDS as u64 / 100,
            missing: 0,
            duplicates: 0,
            ..Default::default()
        }
    );
    assert!(ok);
    assert_eq!(answers(&table).await, answers(&copy).await);

    // one compacted file per partition, sorted, with bloom filters
    let files = active_files(&table).await;
    let mut per_partition: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (path, (size, part)) in &files {
        per_partition
            .entry(part.clone())
            .or_default()
            .push((path.clone(), *size));
    }
    let partitions_before: HashSet<&String> = before.values().map(|(_, p)| p).collect();
    assert_eq!(per_partition.len(), partitions_before.len());
    assert!(per_partition.len() >= 6, "{per_partition:?}");
    let mut rows = 0;
    for (part, files) in &per_partition {
        assert_eq!(files.len(), 1, "partition {part}: {files:?}");
        let (path, _size) = &files[0];
        assert!(path.contains("/compacted-"), "{path}");
        let (batches, meta) = read_file(&table, path).await;
        let keys = sort_keys(&batches);
        rows += keys.len();
        assert!(
            keys.windows(2).all(|w| w[0] <= w[1]),
            "{path} is not sorted by {SORT_BY:?}"
        );
        for c in ["trace_id", "pod"] {
            assert!(
                has_bloom_filters(&meta, c),
                "{path}: no bloom filter on {c}"
            );
        }
        assert!(
            !has_bloom_filters(&meta, "namespace"),
            "{path}: bloom filter on namespace"
        );
    }
    assert_eq!(rows, RECORDS / 100 * 99);

    // a second run finds nothing to do and commits nothing
    let v = last["version_after"].as_u64().expect("version");
    let again = compact(strings(&[
        "--table",
        &table,
        "--tables-dir",
        &defs.path().to_string_lossy(),
    ]))
    .await;
    assert_eq!(again["groups_planned"], 0, "{again}");
    assert_eq!(again["version_after"].as_u64(), Some(v));
    assert_eq!(active_files(&table).await, files);
}

/// A table of `records` fluentbit records archived to the end in three runs (small files): (table URL, dead-letter URL, topic).
pub(crate) async fn small_file_table(prefix: &str, records: usize) -> (String, String, String) {
    let topic = unique_name(prefix);
    kafka().create_topic(&topic, 3).await.expect("topic");
    let table = s3().unique_url(prefix);
    let dlq = format!("{table}-dlq");
    let group = unique_name("g");
    // three nightly-style runs in one group, each after a third of the records: at least three
    // files in most partitions
    for round in 0..3 {
        // records 3j + round: every run spans every hour of the data
        produce_with(&topic, 0, records / 3, move |j| {
            fluentbit_record(j * 3 + round, false)
        })
        .await;
        run_archive_blocking(archive_args(&topic, &group, &table, &dlq)).await;
    }
    (table, dlq, topic)
}

pub(crate) fn sort_args(table: &str, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&[
        "--table",
        table,
        "--sort-by",
        "namespace,pod,ts",
        "--bloom-filter-columns",
        "trace_id",
        "--settle",
        "0s",
    ]);
    v.extend(strings(extra));
    v
}

/// Writes lease entry `n` of the table at `url` for `owner`, lapsing at `expires_ms`.
async fn put_lease(url: &str, n: u64, owner: &str, expires_ms: i64) {
    let store = s3().object_store().expect("store");
    let key = ObjPath::from(format!("{}/_loglake/lease/{n:020}.json", key_prefix(url)));
    let body = serde_json::json!({"owner": owner, "expires_ms": expires_ms}).to_string();
    store.put(&key, body.into()).await.expect("put lease");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) async fn count_and_distinct(url: &str) -> Vec<i64> {
    query_i64(
        url,
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM t",
    )
    .await
}

/// Two compactions of one table: started together, against a held lease, waiting for one,
/// taking over an expired one. Never a duplicated or lost row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactions_of_one_table_never_duplicate_a_row() {
    const N: usize = 12_000;
    let (table, _dlq, _topic) = small_file_table("compact-race", N).await;
    let files = active_files(&table).await;
    let partitions: HashSet<&String> = files.values().map(|(_, p)| p).collect();
    assert!(
        files.len() > 2 * partitions.len(),
        "{} files in {} partitions",
        files.len(),
        partitions.len()
    );
    let v0 = open(&table).await.version().expect("version");

    // A lease held by someone else: nothing is done, and the report says by whom.
    put_lease(&table, 1, "other-host:42:run", now_ms() + 600_000).await;
    let held = compact(sort_args(&table, &[])).await;
    assert_eq!(held["lease"], "held by other-host:42:run", "{held}");
    assert_eq!(open(&table).await.version(), Some(v0));

    // The plan is there to be done (a dry run takes no lease and changes nothing).
    let plan = compact(sort_args(&table, &["--dry-run"])).await;
    assert_eq!(plan["lease"], "not taken (dry run)");
    let planned = plan["groups_planned"].as_u64().unwrap_or(0);
    assert!(planned > 0, "{plan}");
    assert_eq!(open(&table).await.version(), Some(v0));

    // The same lease, expired: taken over, and the plan done; its metrics file says the same as
    // its report.
    put_lease(&table, 2, "other-host:42:run", now_ms() - 1).await;
    let metrics_dir = tempfile::tempdir().expect("tmp");
    let metrics_file = metrics_dir.path().join("compact.prom");
    let mf = metrics_file.to_string_lossy().to_string();
    let took = compact(sort_args(&table, &["--metrics-file", &mf])).await;
    assert_eq!(took["lease"], "acquired", "{took}");
    assert_eq!(took["groups_committed"].as_u64(), Some(planned), "{took}");
    let text = std::fs::read_to_string(&metrics_file).expect("metrics file");
    for (metric, field) in [
        ("files_in", "files_in"),
        ("files_out", "files_out"),
        ("bytes_in", "bytes_in"),
        ("rows", "rows"),
        ("commits", "commits"),
    ] {
        let line = format!(
            "loglake_compact_{metric}_total{{table={}}} {}",
            took["table"], took[field]
        );
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(count_and_distinct(&table).await, vec![N as i64, N as i64]);

    // Held for 3 more seconds: a run that waits up to 60 s gets it after about 3 (other sort
    // keys, so that it has work).
    put_lease(&table, 1000, "other-host:42:run", now_ms() + 3_000).await;
    let started = Instant::now();
    let mut args = strings(&["--table", &table, "--sort-by", "pod,ts", "--settle", "0s"]);
    args.extend(strings(&["--wait-lease", "60s"]));
    let waited = compact(args).await;
    assert_eq!(waited["lease"], "acquired", "{waited}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(waited["groups_committed"].as_u64() > Some(0), "{waited}");
    assert_eq!(count_and_distinct(&table).await, vec![N as i64, N as i64]);

    // Two runs at once under other sort keys (every file fresh again), five times over.
    let mut committed = 0;
    for round in 0..5 {
        let keys = if round % 2 == 0 {
            "pod,ts"
        } else {
            "namespace,pod,ts"
        };
        let args = strings(&[
            "--table",
            &table,
            "--sort-by",
            keys,
            "--settle",
            "0s",
            "--wait-lease",
            "0s",
        ]);
        let (x, y) = (
            Proc::spawn(compact_cmd(&args)).expect("x"),
            Proc::spawn(compact_cmd(&args)).expect("y"),
        );
        let mut got = Vec::new();
        for mut p in [x, y] {
            let done = p
                .wait_within(Duration::from_secs(300))
                .await
                .expect("wait")
                .expect("compact did not finish");
            assert!(done.status.success(), "{}", done.stderr_text());
            got.extend(reports(&done.stdout));
        }
        let acquired = got.iter().filter(|r| r["lease"] == "acquired").count();
        assert!(acquired >= 1, "{got:?}");
        let groups: u64 = got
            .iter()
            .map(|r| r["groups_committed"].as_u64().unwrap_or(0))
            .sum();
        committed += groups;
        assert_eq!(
            count_and_distinct(&table).await,
            vec![N as i64, N as i64],
            "round {round}: {got:?}"
        );
        // every partition ends as one file sorted by this round's keys
        let files = active_files(&table).await;
        let parts: HashSet<&String> = files.values().map(|(_, p)| p).collect();
        assert_eq!(files.len(), parts.len(), "round {round}: {files:?}");
    }
    announce(&format!(
        "two compactions at once: {committed} groups committed in 5 rounds"
    ));
}

/// `kill -9` of `compact` at moments spread over its run, ten times, then a normal run: the
/// table reads, nothing lost or duplicated, and what the killed runs uploaded without committing
/// is only compaction output (orphans for vacuum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_killed_ten_times_loses_and_duplicates_nothing() {
    const N: usize = 12_000;
    let (table, dlq, topic) = small_file_table("compact-kill", N).await;
    let mut kills = 0;
    let mut delay_ms = 150u64;
    for round in 0..10 {
        // other sort keys each round: every file is fresh again, so every run has work
        let keys = if round % 2 == 0 {
            "pod,ts"
        } else {
            "namespace,pod,ts"
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
            kills += 1;
        }
        let _ = p.wait_within(Duration::from_secs(30)).await.expect("wait");
        delay_ms = delay_ms * 17 / 10 % 3000 + 100;
    }
    assert!(
        kills >= 5,
        "only {kills} runs were still running when killed"
    );
    let last = compact(strings(&[
        "--table",
        &table,
        "--sort-by",
        "namespace,pod,container,ts",
        "--settle",
        "0s",
        "--wait-lease",
        "30s",
    ]))
    .await;
    assert_eq!(last["lease"], "acquired", "{last}");
    let (report, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (
            report.expected,
            report.rows,
            report.missing,
            report.duplicates
        ),
        (N as u64, N as u64, 0, 0)
    );
    assert!(ok);
    assert_eq!(count_and_distinct(&table).await, vec![N as i64, N as i64]);
    // Orphans: data files in the bucket that no version of the log mentions.
    let known = log_paths(&table).await;
    let orphans: Vec<String> = data_objects(&table)
        .await
        .into_iter()
        .filter(|k| !known.contains(k))
        .collect();
    announce(&format!(
        "{kills} kills; orphans left for vacuum: {}",
        orphans.len()
    ));
    assert!(
        orphans.iter().all(|o| o
            .rsplit('/')
            .next()
            .is_some_and(|f| f.starts_with("compacted-"))),
        "{orphans:?}"
    );
}

/// Every data file path any version of the table's log (JSON commits) adds or removes.
pub(crate) async fn log_paths(table: &str) -> HashSet<String> {
    let t = open(table).await;
    let mut known: HashSet<String> = HashSet::new();
    let store = t.log_store().object_store(None);
    let logs: Vec<_> = store
        .list(Some(&ObjPath::from("_delta_log")))
        .try_collect()
        .await
        .expect("list log");
    for m in logs
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".json"))
    {
        let bytes = store
            .get(&m.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("read");
        for line in String::from_utf8_lossy(&bytes).lines() {
            let v: Value = serde_json::from_str(line).expect("action");
            for kind in ["add", "remove"] {
                if let Some(p) = v[kind]["path"].as_str() {
                    known.insert(p.to_string());
                }
            }
        }
    }
    known
}

/// The Parquet objects under the table (outside `_delta_log`), as paths relative to its root.
pub(crate) async fn data_objects(table: &str) -> Vec<String> {
    let prefix = key_prefix(table);
    s3().list(&prefix)
        .await
        .expect("list")
        .into_iter()
        .filter(|k| k.ends_with(".parquet") && !k.contains("/_delta_log/"))
        .map(|k| k[prefix.len() + 1..].to_string())
        .collect()
}

/// A table with more than 1,000 commits carrying txn offsets: after `loglake checkpoint` its
/// state is the same, the log files past retention are gone, and an archiver resumes exactly
/// where the offsets say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_of_a_thousand_commits_keeps_state_and_offsets() {
    use loglake_lake::{DeltaSink, OffsetAdvance};
    const COMMITS: i64 = 1_050;
    let topic = unique_name("ckpt");
    kafka().create_topic(&topic, 1).await.expect("topic");
    // A local table: 1,050 commits through moto take minutes, the local file system seconds;
    // what is checked (the log, the checkpoint, the offsets) is the same on both.
    let dir = tempfile::tempdir().expect("tmp");
    let local = dir.path().join("ckpt");
    let name = "ckpt".to_string();
    let url = loglake_lake::table_url(&local.to_string_lossy()).expect("url");
    let table = url.to_string();
    let schema = loglake_schemas::table_schema(loglake_schemas::TableKind::Container);
    let parts = strings(&["dt", "hour"]);
    let opts = std::collections::HashMap::new();
    deltalake::aws::register_handlers(None);
    // 1,050 commits, each advancing partition 0 by one offset (no data: what the archiver
    // commits when it only read dead letters)
    let mut sink = DeltaSink::open_or_create(&name, &url, &opts, &schema, &parts, schema.clone())
        .await
        .expect("sink");
    let started = Instant::now();
    for k in 0..COMMITS {
        sink.commit(
            Vec::new(),
            &[OffsetAdvance {
                topic: topic.clone(),
                partition: 0,
                from: (k > 0).then_some(k),
                to: k + 1,
            }],
            Vec::new(),
        )
        .await
        .expect("commit");
    }
    announce(&format!("{COMMITS} commits in {:?}", started.elapsed()));
    let log_dir = local.join("_delta_log");
    let list = || -> Vec<String> {
        std::fs::read_dir(&log_dir)
            .expect("log dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect()
    };
    let jsons = |keys: &[String]| keys.iter().filter(|k| k.ends_with(".json")).count();
    let before = list();
    assert_eq!(
        jsons(&before) as i64,
        COMMITS + 1,
        "no cleanup by the writer"
    );
    assert!(
        !before.iter().any(|k| k.contains("checkpoint")),
        "no checkpoint by the writer"
    );

    let path = local.to_string_lossy();
    let out = loglake_ok(&["checkpoint", "--table", &path, "--log-retention", "0s"]).await;
    let r = reports(&out.stdout);
    assert_eq!(r[0]["version"].as_i64(), Some(COMMITS));
    assert_eq!(r[0]["created"], true);
    let after = list();
    assert!(
        after
            .iter()
            .any(|k| k.ends_with(&format!("{COMMITS:020}.checkpoint.parquet"))),
        "{after:?}"
    );
    assert!(
        jsons(&after) <= 2,
        "{} commit files left: {after:?}",
        jsons(&after)
    );
    let offsets = loglake_lake::read_offsets(&name, &url, &opts, &[(topic.clone(), 0)], false)
        .await
        .expect("offsets");
    assert_eq!(offsets[&(topic.clone(), 0)].0, Some(COMMITS));

    // Records 0..COMMITS+40 in the topic: the archiver resumes at offset COMMITS exactly.
    produce(&topic, 0, COMMITS as usize + 40, false).await;
    let dlq = dir.path().join("ckpt-dlq").to_string_lossy().to_string();
    let local_table = local.to_string_lossy().to_string();
    run_archive_blocking(archive_args(&topic, &unique_name("g"), &local_table, &dlq)).await;
    let v = query_i64(
        &table,
        "SELECT count(*), min(kafka_offset), max(kafka_offset) FROM t",
    )
    .await;
    assert_eq!(v, vec![40, COMMITS, COMMITS + 39]);
}
