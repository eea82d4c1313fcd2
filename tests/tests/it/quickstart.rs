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
    // truncated one), every Kafka record once, archived by the nightly job's archive stage.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("== nightly pass 1"))
        .unwrap_or_else(|| panic!("no archive line in:\n{stdout}"));
    assert!(
        summary.contains("archived 175 records into <lake>: 173 rows, 2 dead letters, "),
        "{summary}"
    );
    for table in ["container_logs", "k8s_audit", "access", "dead_letters"] {
        assert!(
            lake.join(table).join("_delta_log").is_dir(),
            "no Delta table {table} in the lake"
        );
    }
    // The configuration a user would write, which the nightly passes ran on.
    let config = lake.join("_quickstart").join("lake.toml");
    assert!(config.is_file(), "no {}", config.display());
    for t in ["container_logs", "k8s_audit", "access"] {
        assert!(
            lake.join("_quickstart/tables")
                .join(format!("{t}.toml"))
                .is_file()
        );
    }
    // Pass 2, for the oldest day of the container logs (2016-03-02, Elastic's corrupted docker
    // log): every later stage on every table.
    let pass2: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("== nightly pass 2"))
        .skip(1)
        .take_while(|l| l.starts_with("   ") && !l.starts_with("   table "))
        .collect();
    assert!(
        stdout.contains("== nightly pass 2 (loglake nightly --date 2016-03-02 --skip archive"),
        "{stdout}"
    );
    let stage = |stage: &str, table: &str| -> &str {
        pass2
            .iter()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 2 && w[0] == stage && w[1] == table
            })
            .unwrap_or_else(|| panic!("no {stage} line for {table} in:\n{}", pass2.join("\n")))
    };
    // complete: every data table was archived past the end of that day (their Kafka partitions
    // hold later events), so the day gets a marker in each, with the day's rows
    for (table, rows) in [("container_logs", 20), ("k8s_audit", 0), ("access", 0)] {
        let line = stage("complete", table);
        assert!(
            line.contains(&format!("day complete ({rows} rows;"))
                && line.ends_with("marker written"),
            "{line}"
        );
        assert!(
            lake.join(table)
                .join("_loglake/complete/dt=2016-03-02/_SUCCESS")
                .is_file(),
            "no marker for {table}"
        );
    }
    // compaction: every partition of the three data tables ends as one file (the samples are
    // days old, so every partition is closed; lone files are rewritten too, sorted); the dead
    // letters' partition (archive time) is still open.
    for table in ["container_logs", "k8s_audit", "access", "dead_letters"] {
        let line = stage("compact", table);
        let words: Vec<&str> = line.split_whitespace().collect();
        // compact <table> <P> partitions: <X> files (<B> bytes) -> <Y> files (...)
        let num = |i: usize| -> usize { words[i].parse().unwrap_or_else(|_| panic!("{line}")) };
        let (partitions, files_in, files_out) = (num(2), num(4), num(9));
        assert!(partitions >= 1, "{line}");
        if table == "dead_letters" {
            assert_eq!(files_out, 0, "{line}");
            continue;
        }
        assert_eq!(files_out, partitions, "{line}");
        assert!(files_in >= files_out, "{line}");
    }
    for table in ["container_logs", "k8s_audit", "access", "dead_letters"] {
        assert!(stage("retention", table).ends_with("no retention set for this table"));
        assert!(stage("vacuum", table).contains("files deleted"));
    }
    // the complete day exported for Spark: the container logs' 20 rows, with _SUCCESS last
    let export = stage("export", "container_logs");
    assert!(export.contains(" 20 rows in 2 Hive partitions"), "{export}");
    let day = lake.join("_export/hive/container_logs/dt=2016-03-02");
    assert!(
        day.join("_SUCCESS").is_file(),
        "no _SUCCESS in {}",
        day.display()
    );
    // the insights stage: templates of the day and the report, one HTML file
    let insights = stage("insights", "container_logs");
    assert!(
        insights.contains("new), 0 anomalies; report "),
        "{insights}"
    );
    let report = lake.join("_report/2016-03-02/report-2016-03-02.html");
    let html =
        std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    assert!(html.contains("<svg"), "the report has no chart");
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
