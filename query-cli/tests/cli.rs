//! CLI behaviour of the real binary (`loglake-query`, the same entry point as `loglake query`):
//! formats, exit codes, positioned errors, `-f` + `--param`, stdin, `--output` Parquet,
//! `--max-rows`, `\d`, and EXPLAIN's Delta file counts. Outputs are compared with the files in
//! `tests/snapshots/` (set `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn lake() -> &'static Path {
    static LAKE: OnceLock<tempfile::TempDir> = OnceLock::new();
    LAKE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(common::build_lake(dir.path()));
        dir
    })
    .path()
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loglake-query"));
    cmd.arg("--lake")
        .arg(lake())
        .args(args)
        .env_remove("LOGLAKE_LAKE");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn loglake-query");
    if let Some(mut si) = child.stdin.take() {
        si.write_all(stdin.unwrap_or("").as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn snapshot(name: &str, actual: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "snapshots", name]
        .iter()
        .collect();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "snapshot {name} differs");
}

const Q: &str =
    "SELECT pod, count(*) AS n, min(message) AS first_msg FROM app GROUP BY pod ORDER BY pod";

#[test]
fn formats_match_snapshots() {
    for f in [
        "table", "vertical", "csv", "tsv", "json", "ndjson", "markdown",
    ] {
        let o = run(&["-c", Q, "--format", f], None);
        assert_eq!(o.status.code(), Some(0), "format {f}: {}", text(&o.stderr));
        snapshot(&format!("format_{f}.txt"), &text(&o.stdout));
    }
}

#[test]
fn exit_code_1_names_statement_and_position() {
    let o = run(
        &["-c", "SELECT 1;\nSELECT count(*) FROM app;\n  SELEC 2"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("statement 3 (line 3, column 3)"), "{err}");
    // the statements before the failing one ran
    assert!(
        text(&o.stdout).contains("| 14       |"),
        "{}",
        text(&o.stdout)
    );

    let o = run(&["-c", "SELECT nope FROM app"], None);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("statement 1 (line 1, column 8)"), "{err}");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn exit_code_2_for_usage_errors() {
    let o = run(&["--no-such-flag"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["-c", "SELECT '${day}'"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--param day=VALUE"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["-f", "/nonexistent/q.sql"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["-c", "SELECT 1", "--memory-limit", "lots"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn file_with_params_and_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("q.sql");
    std::fs::write(
        &f,
        "-- saved query\nSELECT count(*) AS n FROM app WHERE pod = '${pod}';\n",
    )
    .expect("write");
    let o = run(
        &[
            "-f",
            f.to_str().expect("utf8"),
            "--param",
            "pod=b",
            "--format",
            "csv",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "n\n6\n");

    let o = run(
        &["--format", "csv"],
        Some("SELECT count(*) AS n FROM events; SELECT 'x' AS y;"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "n\n4\ny\nx\n");
}

#[test]
fn describe_commands() {
    let o = run(&["--format", "csv"], Some("\\dt\n\\d events\n"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    snapshot("describe.txt", &text(&o.stdout));
}

#[test]
fn max_rows_and_parquet_output() {
    let o = run(
        &[
            "-c",
            "SELECT ts FROM logs ORDER BY ts",
            "--format",
            "csv",
            "--max-rows",
            "3",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout).lines().count(), 4, "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("limited to 3 rows"));

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("errors.parquet");
    let o = run(
        &[
            "-c",
            "SELECT * FROM logs WHERE level = 'error'",
            "--output",
            out.to_str().expect("utf8"),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let file = std::fs::File::open(&out).expect("parquet written");
    let reader = parquet::file::reader::SerializedFileReader::new(file).expect("valid parquet");
    use parquet::file::reader::FileReader;
    let rows = reader.metadata().file_metadata().num_rows();
    // the error rows of the generated records, counted without the engine
    let generated = common::logs_rows();
    let levels = generated
        .column_by_name("level")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
        .expect("level column")
        .clone();
    let expected = levels.iter().filter(|l| *l == Some("error")).count() as i64;
    assert!(expected > 0);
    assert_eq!(rows, expected);
}

#[test]
fn explain_shows_delta_files_scanned() {
    let o = run(
        &[
            "-c",
            // count(*) alone is answered from Delta statistics without reading a file; this one
            // must read the rows of hour 1.
            "EXPLAIN SELECT count(*) FROM logs WHERE hour = 1 AND level = 'error'",
            "--format",
            "csv",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("logs@v2: 1 of 2 files scanned (1 skipped"),
        "{out}"
    );

    let o = run(
        &[
            "-c",
            "EXPLAIN SELECT * FROM correlate(app, events, key => 'node', within => INTERVAL '10 seconds')",
            "--format",
            "csv",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("HashJoinExec"), "{out}");
    assert!(
        !out.contains("CrossJoinExec") && !out.contains("NestedLoopJoinExec"),
        "{out}"
    );
}

#[test]
fn write_needs_allow_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("copy.parquet");
    let sql = format!(
        "COPY (SELECT pod FROM app) TO '{}' STORED AS PARQUET",
        target.display()
    );
    let o = run(&["-c", &sql], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--allow-write"));
    assert!(!target.exists());
    let o = run(&["-c", &sql, "--allow-write"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(target.exists());
}

#[test]
fn memory_limit_spills_large_sort() {
    // a sort of all 3,000 rows' messages under a 2 MiB pool must spill, not fail
    let o = run(
        &[
            "-c",
            "SELECT count(DISTINCT message) FROM (SELECT message FROM logs ORDER BY message)",
            "--memory-limit",
            "2M",
            "--format",
            "csv",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

/// Every key in every row, `null` where null, in select order (`trace_id` is NULL on most rows
/// of `app`): a `jq` pipeline or a loader sees the same keys on every row.
#[test]
fn json_and_ndjson_keep_null_columns() {
    let q = "SELECT pod, trace_id, ts FROM app ORDER BY ts, pod LIMIT 4";
    for f in ["json", "ndjson"] {
        let o = run(&["-c", q, "--format", f], None);
        assert_eq!(o.status.code(), Some(0), "format {f}: {}", text(&o.stderr));
        snapshot(&format!("nulls_{f}.txt"), &text(&o.stdout));
    }
    let o = run(&["-c", q, "--format", "ndjson"], None);
    for line in text(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["pod", "trace_id", "ts"], "{line}");
    }
}

/// Run each case and render `$ args` / stderr / exit code for a snapshot.
fn transcript(cases: &[&[&str]]) -> String {
    let mut out = String::new();
    for args in cases {
        let o = run(args, None);
        out.push_str(&format!("$ loglake query {}\n", args.join(" ")));
        out.push_str(&text(&o.stderr));
        out.push_str(&format!("(exit {})\n\n", o.status.code().unwrap_or(-1)));
    }
    out
}

/// SQL errors: plain text, one position, the user's line with a caret under it, "did you mean"
/// for tables, columns and functions, and errors inside `log_context`/`correlate` pointing at
/// the argument that caused them.
#[test]
fn sql_errors_match_snapshot() {
    let cases: &[&[&str]] = &[
        &["-c", "SELECT count(* FROM app"],
        &["-c", "SELECT 1;\nSELECT count(*) FROM app;\n  SELEC 2"],
        &["-c", "SELECT pod,\n       mesage\nFROM logs"],
        &["-c", "SELECT nothing_like_it FROM logs"],
        &["-c", "SELECT * FROM log"],
        &["-c", "SELECT * FROM nothing_like_it"],
        &["-c", "SELECT cunt(*) FROM app"],
        &["-c", "SELECT a.pod FROM app b"],
        &["-c", "SELECT count(*) FROM logs VERSION AS OF 9"],
        &[
            "-c",
            "SELECT count(*) FROM logs VERSION AS OF 0 WHERE levl = 'ERROR'",
        ],
        &["-c", "SELECT 'unterminated FROM app"],
        &[
            "-c",
            "SELECT * FROM log_context(app, 'mesage LIKE ''%OOM%''', before => 2)",
        ],
        &[
            "-c",
            "SELECT * FROM log_context(app, 'message LIKE ''%OOM%''', partition_by => 'pod, nod')",
        ],
        &[
            "-c",
            "SELECT * FROM correlate(app, events, key => 'pood', within => INTERVAL '10 seconds')",
        ],
        &[
            "-c",
            "SELECT *\nFROM correlate('SELECT * FROM app WHERE log_levl(message) = ''ERROR''',\n               events, key => 'node', within => INTERVAL '10 seconds')",
        ],
        &[
            "-c",
            "SELECT * FROM correlate(app, events, key => 'node', within => 10)",
        ],
        &[
            "-c",
            "SELECT * FROM correlate(app, events, key => 'node', within => INTERVAL '1 minute', time => 'tss')",
        ],
    ];
    let out = transcript(cases);
    for forbidden in ["ParserError(", "__src", "Valid fields are", "SQL error:"] {
        assert!(!out.contains(forbidden), "{forbidden} in:\n{out}");
    }
    snapshot("errors.txt", &out);
}

fn run_with(lake: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loglake-query"));
    cmd.arg("--lake")
        .arg(lake)
        .args(args)
        .env_remove("LOGLAKE_LAKE")
        .env_remove("LOGLAKE_PROGRESS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.output().expect("run loglake-query")
}

/// A lake folder whose table folders are symlinks (a lake assembled from several disks or
/// checkouts) registers them, as DuckDB and datafusion-cli follow symlinks.
#[test]
fn symlinked_table_folders_are_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let linked = dir.path().join("lake");
    std::fs::create_dir_all(linked.join("disk2")).expect("mkdir");
    std::os::unix::fs::symlink(lake().join("svc/app"), linked.join("basic_append"))
        .expect("symlink");
    std::os::unix::fs::symlink(lake().join("k8s"), linked.join("disk2/k8s")).expect("symlink");
    let o = run_with(
        &linked,
        &[
            "-c",
            "SHOW TABLES; SELECT count(*) AS n FROM basic_append; SELECT count(*) AS n FROM events",
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("loglake,lake,basic_append,BASE TABLE"),
        "{out}"
    );
    assert!(out.contains("loglake,lake,events,BASE TABLE"), "{out}");
    assert!(out.ends_with("n\n14\nn\n4\n"), "{out}");
}

/// Headers without qualifiers and literal types, intervals as DuckDB prints them.
#[test]
fn plain_headers_and_readable_intervals() {
    let o = run(
        &[
            "-c",
            "SELECT count(*), min(ts), max(ts) - min(ts), min(app.ts) - max(ts), 1, 'x' FROM app",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    snapshot("headers_intervals.txt", &text(&o.stdout));
}

/// EXPLAIN of a count answered from the Delta log's file statistics says so instead of
/// "0 of 2 files scanned".
#[test]
fn explain_says_when_statistics_answer() {
    let o = run(
        &[
            "-c",
            "EXPLAIN SELECT count(*) FROM logs WHERE hour = 1",
            "--format",
            "csv",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("logs@v2: no file read, the answer comes from the Delta log's file statistics; filters: hour = Int32(1)"),
        "{out}"
    );
    let o = run(
        &[
            "-c",
            "SELECT count(*) FROM logs WHERE hour = 1",
            "--format",
            "csv",
        ],
        None,
    );
    let generated = common::logs_rows();
    let hours = generated
        .column_by_name("hour")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int32Array>())
        .expect("hour column")
        .clone();
    let in_hour_1 = hours.iter().filter(|h| *h == Some(1)).count();
    // one record a second from 00:35:00: the 1,500 seconds from 01:00:00
    assert_eq!(in_hour_1, 1500);
    assert_eq!(text(&o.stdout), format!("count(*)\n{in_hour_1}\n"));
}

/// The progress line is drawn by a thread of its own while the query keeps the runtime busy,
/// with rows, bytes and files scanned (`LOGLAKE_PROGRESS=always` draws it without a terminal;
/// the delay and tick are shortened so a sub-second query shows it).
#[test]
fn progress_line_appears_while_the_query_runs() {
    let o = run_with(
        lake(),
        &[
            "-c",
            "SELECT count(*) FROM logs a JOIN logs b ON a.pod = b.pod AND a.message <> b.message",
            "--format",
            "csv",
            "--target-partitions",
            "2",
        ],
        &[
            ("LOGLAKE_PROGRESS", "always"),
            ("LOGLAKE_PROGRESS_DELAY_MS", "0"),
            ("LOGLAKE_PROGRESS_TICK_MS", "2"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let re =
        regex::Regex::new(r"… \d+\.\ds: scanned [\d,]+ rows, [\d.]+ [KMG]?B, \d+ of \d+ files")
            .expect("regex");
    assert!(re.is_match(&err), "no progress line in {err:?}");
    // the line is cleared before the result
    assert!(err.ends_with("\r\x1b[2K"), "{err:?}");
    assert!(text(&o.stdout).starts_with("count(*)\n"));
}
