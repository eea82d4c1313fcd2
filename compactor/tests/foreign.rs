//! Tables loglake did not write: Delta Acceptance Test (DAT) tables written by Spark compact
//! and read back equal (local copies, no services).

use std::path::{Path, PathBuf};
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::datafusion::prelude::SessionContext;
use loglake_compactor::{Layout, Settings, compact_table};
use url::Url;

fn dat(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/peer-suites/delta-acceptance-dat/dat-v0.0.2-via-levi/generated")
        .join(case)
        .join("delta")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Every row of the table, as sorted text lines.
async fn rows(url: &Url) -> (Vec<String>, usize) {
    let table = DeltaTable::try_from_url(url.clone()).await.expect("open");
    let files = table.snapshot().expect("snapshot").log_data().num_files();
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .expect("session");
    ctx.register_table("t", table.table_provider().await.expect("provider"))
        .expect("register");
    let batches = ctx
        .sql("SELECT * FROM t")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("read");
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1) // header
        .map(str::to_string)
        .collect();
    lines.sort();
    (lines, files)
}

fn settings() -> Settings {
    Settings {
        settle: Duration::ZERO,
        min_size_fraction: 0.5,
        memory_budget: 64 << 20,
        spill_dir: None,
        lease_ttl: Duration::from_secs(60),
        lease_wait: Duration::ZERO,
        dry_run: false,
        checkpoint: true,
        log_retention: None,
        owner: "test".into(),
    }
}

#[tokio::test]
async fn spark_written_dat_tables_compact_and_read_back_equal() {
    // (case, sort keys, data files after, whether anything is rewritten): the latest version of
    // multi_partitioned holds two files under percent-encoded and non-ASCII partition paths,
    // which the compactor leaves alone; with_schema_change's files have two schemas.
    for (case, sort_by, files_after_expected, rewrites) in [
        ("basic_append", vec![], Some(1), true),
        ("basic_partitioned", vec!["number".to_string()], None, true),
        ("multi_partitioned", vec![], Some(2), false),
        ("no_stats", vec!["letter".to_string()], None, true),
        ("with_schema_change", vec![], None, true),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        copy_dir(&dat(case), dir.path());
        let url = Url::from_directory_path(dir.path()).expect("url");
        let (before, files_before) = rows(&url).await;
        assert!(files_before >= 1, "{case}: {files_before} files");
        let layout = Layout {
            sort_by,
            bloom_filter_columns: vec![],
            target_file_size: 1 << 20,
            schema: None,
        };
        let m = compact_table(case, &url, &Default::default(), &layout, &settings())
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let (after, files_after) = rows(&url).await;
        assert_eq!(after, before, "{case}: {m:?}");
        assert_eq!(m.groups_committed >= 1, rewrites, "{case}: {m:?}");
        assert_eq!(
            m.files_in - m.files_out,
            files_before - files_after,
            "{case}: {m:?}"
        );
        assert!(
            files_after <= files_before,
            "{case}: {files_before} -> {files_after}"
        );
        if let Some(n) = files_after_expected {
            assert_eq!(files_after, n, "{case}");
        }
        assert_eq!(
            m.checkpoint.as_ref().map(|c| c.version),
            Some(m.version_after)
        );
        // a second run plans nothing
        let again = compact_table(case, &url, &Default::default(), &layout, &settings())
            .await
            .expect("again");
        assert_eq!(again.groups_planned, 0, "{case}: {again:?}");
    }
}
