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
            "SELECT * FROM logs WHERE level = 'ERROR'",
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
    let o = run(
        &[
            "-c",
            "SELECT count(*) FROM logs WHERE level = 'ERROR'",
            "--format",
            "csv",
        ],
        None,
    );
    let expected: i64 = text(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("count");
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
            "EXPLAIN SELECT count(*) FROM logs WHERE hour = 1 AND level = 'ERROR'",
            "--format",
            "csv",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("logs@v1: 1 of 2 files scanned (1 skipped"),
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
