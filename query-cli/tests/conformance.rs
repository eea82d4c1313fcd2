//! Conformance on tables written by others (in-repo copies under `tests/data/peer-suites`):
//! parquet-testing (`data/` row counts vs the footer, `bad_data/` fails cleanly), delta-kernel-rs
//! golden tables (`golden_test!` equal `expected/` after sorting, `negative_test!` fail cleanly),
//! and the Delta Acceptance Tests (latest and every `vN`: rows and version metadata).
//!
//! Each suite prints its pass/fail counts and asserts that exactly the known failures (listed with
//! their reason in `KNOWN_*`) fail, so both a regression and a fix are noticed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use loglake_query::engine::{Engine, EngineOptions};
use loglake_query::script::Statement;

async fn engine() -> Arc<Engine> {
    Arc::new(
        Engine::new(EngineOptions {
            memory_limit: Some(512 << 20),
            target_partitions: Some(2),
            ..Default::default()
        })
        .await
        .expect("engine"),
    )
}

/// Run SQL with a time limit, converting panics and hangs into errors.
async fn query(engine: &Arc<Engine>, sql: String) -> Result<Vec<RecordBatch>, String> {
    let e = Arc::clone(engine);
    let task = tokio::spawn(async move {
        let stmt = Statement {
            index: 1,
            line: 1,
            column: 1,
            text: sql,
        };
        let res = e.execute(&stmt).await.map_err(|e| e.strip_backtrace())?;
        let mut out = Vec::new();
        let mut s = res.stream;
        while let Some(b) = s.next().await {
            out.push(b.map_err(|e| e.strip_backtrace())?);
        }
        Ok::<_, String>(out)
    });
    match tokio::time::timeout(Duration::from_secs(60), task).await {
        Err(_) => Err("HANG: no answer within 60 s".into()),
        Ok(Err(join)) => Err(format!("PANIC: {join}")),
        Ok(Ok(r)) => r,
    }
}

fn sql_str(p: &Path) -> String {
    p.to_string_lossy().replace('\'', "''")
}

fn count_of(batches: &[RecordBatch]) -> Option<i64> {
    let b = batches.first()?;
    let a = b
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()?;
    Some(a.value(0))
}

// ------------------------------------------------------------------ parquet-testing

/// data/ files pyarrow reads but we do not, with the reason. Each fails cleanly (an error, no
/// panic); the test fails if one of them starts to pass, so the list stays honest.
const KNOWN_PARQUET_FAILURES: &[(&str, &str)] = &[
    (
        "data/dict-page-offset-zero.parquet",
        "its footer carries Thrift fields outside parquet-format; arrow-rs 59's footer decoder \
         rejects it (\"Expected list element type of I64 but got I16\"), pyarrow skips them",
    ),
    (
        "data/nation.dict-malformed.parquet",
        "a deliberately malformed dictionary page: arrow-rs stops with \"Invalid page header\", \
         pyarrow tolerates it; the footer count (25) is still answered",
    ),
    (
        "data/repeated_no_annotation.parquet",
        "the footer says num_rows = 0 while its row group holds 6 rows: count(*) gives 6 from the \
         row group, but the DataFusion scan trusts the file-level 0 and returns no rows",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_testing() {
    let root = common::peer_suites().join("parquet-testing");
    let manifest = std::fs::read_to_string(root.join("MANIFEST_pyarrow.csv")).expect("manifest");
    let engine = engine().await;
    let (mut ok, mut fail, mut clean_err, mut bad_ok) = (0, Vec::new(), 0, Vec::new());
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(5, ',').collect();
        let [file, _bytes, footer_rows, _ncols, status] = cols[..] else {
            continue;
        };
        let path = root.join(file);
        if file.starts_with("data/") && status.starts_with("pyarrow_read_ok") {
            // pyarrow's row count when the manifest has one (it differs from the footer's
            // file-level count for repeated_no_annotation), else the footer's
            let want: i64 = status
                .split_once("rows=")
                .map(|(_, n)| n.trim())
                .unwrap_or(footer_rows)
                .parse()
                .expect("row count");
            // count(*) and a full read of every column must both give the footer row count
            let c = query(
                &engine,
                format!("SELECT count(*) FROM read_parquet('{}')", sql_str(&path)),
            )
            .await;
            let full = query(
                &engine,
                format!("SELECT * FROM read_parquet('{}')", sql_str(&path)),
            )
            .await;
            let full_rows = full
                .as_ref()
                .map(|b| b.iter().map(|b| b.num_rows() as i64).sum::<i64>());
            match (c.as_ref().ok().and_then(|b| count_of(b)), full_rows) {
                (Some(n), Ok(m)) if n == want && m == want => ok += 1,
                (n, m) => fail.push(format!(
                    "{file}: count={n:?} full={m:?} want {want} ({:?})",
                    c.err()
                )),
            }
        } else if file.starts_with("bad_data/")
            || status.contains("error")
            || status.starts_with("skipped")
        {
            // must fail cleanly (or, for ARROW-GH-43605 and the >2 GB bomb, may read)
            let r = query(
                &engine,
                format!("SELECT * FROM read_parquet('{}')", sql_str(&path)),
            )
            .await;
            match r {
                Err(e) if e.starts_with("PANIC") || e.starts_with("HANG") => {
                    fail.push(format!("{file}: {e}"))
                }
                Err(_) => clean_err += 1,
                Ok(b) => bad_ok.push(format!(
                    "{file}: read {} rows",
                    b.iter().map(|b| b.num_rows()).sum::<usize>()
                )),
            }
        }
    }
    eprintln!(
        "parquet-testing: {ok} readable files match the footer, {clean_err} bad/unreadable files fail cleanly, \
         {} read where pyarrow fails: {bad_ok:?}; failures: {fail:#?}",
        bad_ok.len()
    );
    let known: Vec<&str> = KNOWN_PARQUET_FAILURES.iter().map(|(f, _)| *f).collect();
    let unexpected: Vec<&String> = fail
        .iter()
        .filter(|f| !known.iter().any(|k| f.starts_with(k)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected failures: {unexpected:#?}"
    );
    let fixed: Vec<&&str> = known
        .iter()
        .filter(|k| !fail.iter().any(|f| f.starts_with(**k)))
        .collect();
    assert!(
        fixed.is_empty(),
        "known failures now pass, remove them from KNOWN_PARQUET_FAILURES: {fixed:?}"
    );
    for b in &bad_ok {
        assert!(
            b.starts_with("bad_data/ARROW-GH-43605")
                || b.starts_with("data/large_string_map.brotli")
                // a map whose keys are not annotated `required`: pyarrow refuses the footer,
                // arrow-rs reads the map leniently (its own test suite reads this file)
                || b.starts_with("data/incorrect_map_schema"),
            "a bad file read without error: {b}"
        );
    }
    assert!(ok >= 60, "only {ok} files matched");
}

// ------------------------------------------------------------------ shared comparison

fn fmt_rows(
    batches: &[RecordBatch],
    cols: &[String],
    types: &BTreeMap<String, arrow::datatypes::DataType>,
) -> Result<Vec<String>, String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let mut arrays = Vec::new();
        for c in cols {
            let idx = b
                .schema()
                .index_of(c)
                .map_err(|_| format!("column {c} missing"))?;
            let mut a = Arc::clone(b.column(idx));
            if let Some(t) = types.get(c)
                && a.data_type() != t
                && let Ok(x) = arrow::compute::cast(&a, t)
            {
                a = x;
            }
            arrays.push(a);
        }
        let f: Vec<ArrayFormatter<'_>> = arrays
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for r in 0..b.num_rows() {
            rows.push(
                f.iter()
                    .map(|x| x.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    Ok(rows)
}

/// Read `table` (a Delta location, optionally at `version`) and compare with the Parquet data in
/// `expected` after sorting all columns.
async fn compare(
    engine: &Arc<Engine>,
    table: &Path,
    version: Option<i64>,
    expected: &Path,
) -> Result<(), String> {
    let v = version.map(|v| format!(", {v}")).unwrap_or_default();
    let actual = query(
        engine,
        format!("SELECT * FROM delta_scan('{}'{v})", sql_str(table)),
    )
    .await?;
    let exp = query(
        engine,
        format!("SELECT * FROM read_parquet('{}')", sql_str(expected)),
    )
    .await?;
    let Some(first) = exp.first() else {
        let n: usize = actual.iter().map(|b| b.num_rows()).sum();
        return if n == 0 {
            Ok(())
        } else {
            Err(format!("expected no rows, got {n}"))
        };
    };
    let schema = first.schema();
    let cols: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let types: BTreeMap<String, _> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let a = fmt_rows(&actual, &cols, &types)?;
    let e = fmt_rows(&exp, &cols, &BTreeMap::new())?;
    if a == e {
        Ok(())
    } else {
        let first_diff = a.iter().zip(&e).find(|(x, y)| x != y);
        Err(format!(
            "{} rows vs {} expected; first difference {first_diff:?}",
            a.len(),
            e.len()
        ))
    }
}

// ------------------------------------------------------------------ delta-kernel golden tables

/// Golden tables delta-kernel-rs passes that we fail, with the reason.
const KNOWN_GOLDEN_FAILURES: &[(&str, &str)] = &[(
    "basic-with-vacuum-protocol-check-feature",
    "reader feature vacuumProtocolCheck: delta-rs 1.1 refuses the table with \"Unsupported table \
     features required: [VacuumProtocolCheck]\" (a clean error, not wrong data)",
)];

/// Golden cases delta-kernel-rs lists that the peer suite does not ship (nothing to read).
const ABSENT_GOLDEN_CASES: &[&str] = &["parquet-decimal-dictionaries-v1"];

/// delta-kernel-rs's `checkpoint_test`: a log-only table (its "data files" are 1-byte
/// placeholders named 0..15) whose state must be replayed from the version-10 checkpoint plus
/// commits 11..14: version 14 with exactly one live file, `15`.
async fn checkpoint_case(dir: &Path) -> Result<(), String> {
    let url = loglake_query::lake::to_url(&dir.join("delta").to_string_lossy())
        .map_err(|e| e.to_string())?;
    let t = deltalake::DeltaTableBuilder::from_url(url)
        .map_err(|e| e.to_string())?
        .load()
        .await
        .map_err(|e| e.to_string())?;
    let files: Vec<String> = t
        .get_file_uris()
        .map_err(|e| e.to_string())?
        .map(|u| u.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    match (t.version(), files.as_slice()) {
        (Some(14), [only]) if only == "15" => Ok(()),
        (v, f) => Err(format!(
            "version {v:?} files {f:?}, want version 14 and [\"15\"]"
        )),
    }
}

fn golden_verdicts() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(common::peer_suites().join(
        "delta-kernel-golden/GOLDEN_VERDICTS_from_kernel_tests_integration_golden_tables.rs.txt",
    ))
    .expect("verdicts");
    let (mut golden, mut negative) = (Vec::new(), Vec::new());
    let mut pending: Option<&str> = None;
    for line in text.lines() {
        let l = line.trim();
        let kind = if l.starts_with("golden_test!") {
            Some("g")
        } else if l.starts_with("negative_test!") {
            Some("n")
        } else {
            None
        };
        let name = l.split('"').nth(1).map(str::to_string);
        match (kind, name, pending) {
            (Some(k), Some(n), _) => {
                if k == "g" {
                    golden.push(n)
                } else {
                    negative.push(n)
                }
                pending = None;
            }
            (Some(k), None, _) => pending = Some(k),
            (None, Some(n), Some(k)) => {
                if k == "g" {
                    golden.push(n)
                } else {
                    negative.push(n)
                }
                pending = None;
            }
            _ => {}
        }
    }
    (golden, negative)
}

fn extract(name: &str, into: &Path) -> Result<PathBuf, String> {
    let archive =
        common::peer_suites().join(format!("delta-kernel-golden/golden_data/{name}.tar.zst"));
    let f = std::fs::File::open(&archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let dec = zstd::stream::read::Decoder::new(f).map_err(|e| e.to_string())?;
    tar::Archive::new(dec)
        .unpack(into)
        .map_err(|e| e.to_string())?;
    Ok(into.join(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_kernel_golden_tables() {
    let (golden, negative) = golden_verdicts();
    assert!(
        golden.len() >= 60 && negative.len() == 7,
        "parsed {} golden, {} negative",
        golden.len(),
        negative.len()
    );
    let engine = engine().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut pass, mut fail) = (Vec::new(), Vec::new());
    let mut absent = Vec::new();
    for name in &golden {
        if ABSENT_GOLDEN_CASES.contains(&name.as_str()) {
            absent.push(name.clone());
            continue;
        }
        let r = match extract(name, tmp.path()) {
            Ok(dir) if name == "checkpoint" => checkpoint_case(&dir).await,
            Ok(dir) => compare(&engine, &dir.join("delta"), None, &dir.join("expected")).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => pass.push(name.clone()),
            Err(e) => fail.push(format!("{name}: {e}")),
        }
    }
    let (mut neg_ok, mut neg_fail) = (0, Vec::new());
    for name in &negative {
        let dir = match extract(name, tmp.path()) {
            Ok(d) => d,
            Err(e) => {
                neg_fail.push(format!("{name}: {e}"));
                continue;
            }
        };
        let table = if dir.join("delta").exists() {
            dir.join("delta")
        } else {
            dir.clone()
        };
        match query(
            &engine,
            format!("SELECT * FROM delta_scan('{}')", sql_str(&table)),
        )
        .await
        {
            Err(e) if !e.starts_with("PANIC") && !e.starts_with("HANG") => neg_ok += 1,
            other => neg_fail.push(format!("{name}: {:?}", other.map(|b| b.len()))),
        }
    }
    eprintln!(
        "delta-kernel golden: {}/{} golden_test pass ({} absent from the suite: {absent:?}), \
         {neg_ok}/{} negative_test fail cleanly; failures: {fail:#?} {neg_fail:#?}",
        pass.len(),
        golden.len() - absent.len(),
        absent.len(),
        negative.len()
    );
    let known: Vec<&str> = KNOWN_GOLDEN_FAILURES.iter().map(|(f, _)| *f).collect();
    let unexpected: Vec<&String> = fail
        .iter()
        .chain(&neg_fail)
        .filter(|f| !known.iter().any(|k| f.starts_with(&format!("{k}:"))))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected failures: {unexpected:#?}"
    );
    assert_eq!(
        fail.len(),
        known.len(),
        "a known golden failure now passes: {fail:?}"
    );
    assert_eq!(absent.len(), ABSENT_GOLDEN_CASES.len());
}

// ------------------------------------------------------------------ DAT

const KNOWN_DAT_FAILURES: &[(&str, &str)] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_acceptance_tests() {
    let engine = engine().await;
    let roots = [
        common::peer_suites().join("delta-acceptance-dat/dat-v0.0.2-via-levi/generated"),
        common::peer_suites()
            .join("delta-acceptance-dat/dat-repo-history/out/reader_tests/generated"),
    ];
    let (mut pass, mut fail) = (0, Vec::new());
    for root in roots.iter().filter(|r| r.exists()) {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(root)
            .expect("cases")
            .flatten()
            .map(|e| e.path())
            .collect();
        cases.sort();
        for case in cases {
            let table = case.join("delta");
            let Ok(rd) = std::fs::read_dir(case.join("expected")) else {
                continue;
            };
            let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            versions.sort();
            for v in versions {
                let label = format!(
                    "{}/{}",
                    case.file_name()
                        .map(|s| s.to_string_lossy())
                        .unwrap_or_default(),
                    v.file_name()
                        .map(|s| s.to_string_lossy())
                        .unwrap_or_default()
                );
                let meta: serde_json::Value =
                    match std::fs::read_to_string(v.join("table_version_metadata.json"))
                        .map(|t| serde_json::from_str(&t))
                    {
                        Ok(Ok(m)) => m,
                        _ => {
                            fail.push(format!("{label}: unreadable metadata"));
                            continue;
                        }
                    };
                let want_version = meta["version"].as_i64();
                let is_latest = v.file_name().is_some_and(|n| n == "latest");
                let version = if is_latest { None } else { want_version };
                let r = async {
                    compare(&engine, &table, version, &v.join("table_content.parquet")).await?;
                    // version metadata: the snapshot's version and protocol
                    let url = loglake_query::lake::to_url(&table.to_string_lossy())
                        .map_err(|e| e.to_string())?;
                    let mut b =
                        deltalake::DeltaTableBuilder::from_url(url).map_err(|e| e.to_string())?;
                    if let Some(n) = version {
                        b = b.with_version(n as _);
                    }
                    let t = b.load().await.map_err(|e| e.to_string())?;
                    let got = t.version().map(|v| v as i64);
                    if got != want_version {
                        return Err(format!("version {got:?} != {want_version:?}"));
                    }
                    let snap = t.snapshot().map_err(|e| e.to_string())?;
                    let p = snap.protocol();
                    if Some(p.min_reader_version() as i64) != meta["min_reader_version"].as_i64()
                        || Some(p.min_writer_version() as i64)
                            != meta["min_writer_version"].as_i64()
                    {
                        return Err(format!(
                            "protocol {}/{} != {meta}",
                            p.min_reader_version(),
                            p.min_writer_version()
                        ));
                    }
                    Ok::<(), String>(())
                }
                .await;
                match r {
                    Ok(()) => pass += 1,
                    Err(e) => fail.push(format!("{label}: {e}")),
                }
            }
        }
    }
    eprintln!("DAT: {pass} pass, {} fail: {fail:#?}", fail.len());
    let known: Vec<&str> = KNOWN_DAT_FAILURES.iter().map(|(f, _)| *f).collect();
    let unexpected: Vec<&String> = fail
        .iter()
        .filter(|f| !known.iter().any(|k| f.starts_with(&format!("{k}:"))))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected failures: {unexpected:#?}"
    );
    assert!(pass >= 20, "only {pass} DAT versions passed");
}
