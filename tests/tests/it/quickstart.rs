//! The README's first command, `loglake quickstart`, through the real binary: embedded Kafka
//! (librdkafka's mock cluster), the bundled samples of `tests/data/corpus`, a local lake — no
//! service and no S3 settings. Its query answers are compared with
//! `tests/tests/snapshots/quickstart_queries.txt` (`UPDATE_SNAPSHOTS=1` rewrites it after a
//! deliberate change).

use std::path::PathBuf;
use std::process::Command;

use loglake_tests::loglake_bin;

#[test]
fn quickstart_archives_the_bundled_samples_and_answers_its_queries() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    let mut cmd = Command::new(loglake_bin());
    cmd.arg("quickstart").arg("--lake").arg(&lake);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("LOGLAKE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run loglake quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&*lake.to_string_lossy(), "<lake>");
    assert!(
        out.status.success(),
        "quickstart failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // 175 records: 173 rows in three tables, 2 dead letters (a corrupted docker line and a
    // truncated one), every Kafka record once.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("== archived"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(
        summary.starts_with("== archived 175 records into <lake>: 173 rows, 2 dead letters, "),
        "{summary}"
    );
    for table in ["container_logs", "k8s_audit", "access", "dead_letters"] {
        assert!(
            lake.join(table).join("_delta_log").is_dir(),
            "no Delta table {table} in the lake"
        );
    }
    // Compaction: every partition of the three data tables ends as one file (the samples are
    // days old, so every partition is closed; lone files are rewritten too, sorted); the dead
    // letters' partition (archive time) is still open.
    let compacted: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" partitions: ") && l.contains(" files ("))
        .collect();
    assert_eq!(compacted.len(), 4, "{stdout}");
    for line in compacted {
        let words: Vec<&str> = line.split_whitespace().collect();
        // table <name> <P> partitions: <X> files (<B> bytes) -> <Y> files (...)
        let num = |i: usize| -> usize { words[i].parse().unwrap_or_else(|_| panic!("{line}")) };
        let (partitions, files_in, files_out) = (num(2), num(4), num(9));
        assert!(partitions >= 1, "{line}");
        if line.contains("dead_letters") {
            // partitioned by the time they were archived: still open
            assert_eq!(files_out, 0, "{line}");
            continue;
        }
        assert_eq!(files_out, partitions, "{line}");
        assert!(files_in >= files_out, "{line}");
    }
    // The query answers (the table listing before them has versions and file counts, which
    // depend on how the records were batched).
    let start = stdout
        .find("\n-- ")
        .unwrap_or_else(|| panic!("no query in:\n{stdout}"));
    let end = stdout.find("\nThe lake is at").unwrap_or(stdout.len());
    let answers = &stdout[start + 1..end];
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "snapshots",
        "quickstart_queries.txt",
    ]
    .iter()
    .collect();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, answers).expect("write snapshot");
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(answers, expected, "quickstart's query answers differ");
}
