//! Resolution from flags, file and defaults, called directly (the command line and its
//! environment are in `cli_tests`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::resolve::check_routes;
use super::*;
use crate::archive::{ArchiveConfig, TableTarget};
use crate::error::ArchiveError;
use crate::writer::RollPolicy;

#[test]
fn flags_override_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("a.toml");
    std::fs::write(&cfg, "brokers = \"file:9092\"\ngroup = \"g-file\"\nmemory_budget = \"64MB\"\n[kafka]\n\"socket.timeout.ms\" = \"1000\"\n").expect("write");
    let table = dir.path().join("t");
    let args = ArchiveArgs {
        config: Some(cfg),
        brokers: Some("flag:9092".into()),
        topics: vec!["logs".into()],
        table: Some(table.to_string_lossy().into()),
        decoder: Some("fluentbit".into()),
        ..Default::default()
    };
    let (c, _) = args
        .resolve(Arc::default(), Arc::default())
        .expect("resolve");
    assert_eq!(c.brokers, "flag:9092");
    assert_eq!(c.group, "g-file");
    assert_eq!(c.policy.memory_budget_bytes, 64 << 20);
    assert_eq!(
        c.kafka_properties,
        vec![("socket.timeout.ms".to_string(), "1000".to_string())]
    );
    assert_eq!(c.tables[0].name, "t");
}

/// Resolves `args` as the single-table form (brokers, group, topic, `table`, decoder set)
/// with `file` written to `cfg` as the configuration file.
fn resolve_single_table(
    cfg: &std::path::Path,
    file: &str,
    table: &std::path::Path,
    args: ArchiveArgs,
) -> Result<ArchiveConfig, ArchiveError> {
    std::fs::write(cfg, file).expect("write");
    ArchiveArgs {
        config: Some(cfg.to_path_buf()),
        brokers: Some("k:9092".into()),
        group: Some("g".into()),
        topics: vec!["logs".into()],
        table: Some(table.to_string_lossy().into()),
        decoder: Some("fluentbit".into()),
        ..args
    }
    .resolve(Arc::default(), Arc::default())
    .map(|(c, _)| c)
}

#[test]
fn a_file_configs_debug_shows_the_keys_of_kafka_and_storage_not_their_values() {
    let file: FileConfig = toml::from_str(
        "brokers = \"k:9092\"\n[kafka]\n\"sasl.password\" = \"p4ss\"\n\
         [storage]\nAWS_SECRET_ACCESS_KEY = \"s3cr3t\"\n",
    )
    .expect("parse");
    let d = format!("{file:?}");
    assert!(d.contains("k:9092") && d.contains("sasl.password"), "{d}");
    assert!(d.contains("AWS_SECRET_ACCESS_KEY"), "{d}");
    assert!(!d.contains("p4ss") && !d.contains("s3cr3t"), "{d}");
}

#[test]
fn etl_flags_reach_the_single_table_and_bad_ones_fail_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("a.toml");
    let table = dir.path().join("t");
    let args = ArchiveArgs {
        filter: Some("level <> 'debug'".into()),
        derive: vec![("tenant".into(), "split_part(namespace, '-', 1)".into())],
        redact: vec!["email".into(), " jwt".into()],
        ..Default::default()
    };
    let c = resolve_single_table(&cfg, "", &table, args.clone()).expect("resolve");
    let etl = &c.tables[0].etl;
    assert_eq!(etl.filter.as_deref(), Some("level <> 'debug'"));
    assert_eq!(etl.derive.keys().collect::<Vec<_>>(), vec!["tenant"]);
    assert_eq!(
        etl.redact,
        vec![
            loglake_schemas::RedactEntry::Named("email".into()),
            loglake_schemas::RedactEntry::Named("jwt".into())
        ]
    );
    // a bad expression is a configuration error (exit code 2) naming the key
    let bad = ArchiveArgs {
        derive: vec![("n".into(), "nosuchcolumn + 1".into())],
        ..args.clone()
    };
    let e = resolve_single_table(&cfg, "", &table, bad).expect_err("bad derive");
    assert_eq!(e.exit_code(), crate::error::CONFIG_EXIT_CODE);
    assert!(e.to_string().contains("`derive.n`"), "{e}");
    let twice = ArchiveArgs {
        derive: vec![("n".into(), "1".into()), ("n".into(), "2".into())],
        ..Default::default()
    };
    let e = resolve_single_table(&cfg, "", &table, twice).expect_err("twice");
    assert!(e.to_string().contains("derived twice"), "{e}");
    // the multi-table form takes them from the definitions
    let e = ArchiveArgs {
        brokers: Some("k:9092".into()),
        tables_dir: Some(dir.path().to_path_buf()),
        lake: Some("/tmp/lake".into()),
        ..args
    }
    .resolve(Arc::default(), Arc::default())
    .expect_err("multi-table form");
    assert!(
        e.to_string().contains("--filter, --derive and --redact"),
        "{e}"
    );
}

#[test]
fn route_tables_are_checked_across_the_definitions() {
    let def = |name: &str, routes: &[&str]| {
        let mut text = format!("name = \"{name}\"\ntopics = [\"{name}\"]\ndecoder = \"cri\"\n");
        for r in routes {
            text.push_str(&format!("[[route]]\nwhen = \"true\"\ntable = \"{r}\"\n"));
        }
        loglake_schemas::parse_table_def(&text, Path::new("t.toml")).expect("def")
    };
    assert!(check_routes(&[def("a", &["a_errors"]), def("b", &["b_errors"])]).is_ok());
    let e = check_routes(&[def("a", &["b"]), def("b", &[])]).expect_err("archived table");
    assert!(
        e.to_string().contains("archived from its own topics"),
        "{e}"
    );
    let e = check_routes(&[def("a", &["x"]), def("b", &["x"])]).expect_err("two sources");
    assert!(e.to_string().contains("route table of `a`"), "{e}");
    let e = check_routes(&[def("a", &["x", "x"])]).expect_err("twice");
    assert!(e.to_string().contains("routed to twice"), "{e}");
    let e = check_routes(&[def("a", &["X-1"])]).expect_err("name");
    assert!(e.to_string().contains("`route[0]`"), "{e}");
}

#[test]
fn json_message_attrs_is_off_unless_the_single_table_flag_asks() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("a.toml");
    let table = dir.path().join("t");
    let attrs = |flag: bool| {
        let args = ArchiveArgs {
            json_message_attrs: flag,
            ..Default::default()
        };
        resolve_single_table(&cfg, "", &table, args).map(|c| c.tables[0].json_message_attrs)
    };
    assert_eq!(attrs(false).ok(), Some(false));
    assert_eq!(attrs(true).ok(), Some(true));
    // the multi-table form takes it from each table's definition
    let e = ArchiveArgs {
        brokers: Some("k:9092".into()),
        group: Some("g".into()),
        tables_dir: Some(dir.path().to_path_buf()),
        json_message_attrs: true,
        ..Default::default()
    }
    .resolve(Arc::default(), Arc::default())
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("--json-message-attrs"), "{e}");
}

#[test]
fn poll_batch_bytes_come_from_flag_file_or_the_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("a.toml");
    let table = dir.path().join("t");
    let resolve = |file: &str, flag: Option<u64>| {
        let args = ArchiveArgs {
            poll_batch_bytes: flag,
            ..Default::default()
        };
        resolve_single_table(&cfg, file, &table, args).map(|c| c.batch_bytes)
    };
    // default: an eighth of the budget, within 1 MiB ..= the cap
    assert_eq!(
        resolve("memory_budget = \"64MB\"\n", None).ok(),
        Some(8 << 20)
    );
    assert_eq!(
        resolve("memory_budget = \"4MB\"\n", None).ok(),
        Some(1 << 20)
    );
    assert_eq!(
        resolve("memory_budget = \"8GB\"\n", None).ok(),
        Some(crate::archive::POLL_BATCH_BYTES_CAP)
    );
    // file, then flag
    assert_eq!(
        resolve("poll_batch_bytes = \"2MiB\"\n", None).ok(),
        Some(2 << 20)
    );
    assert_eq!(
        resolve("poll_batch_bytes = \"2MiB\"\n", Some(3 << 20)).ok(),
        Some(3 << 20)
    );
    let e = resolve("", Some(10)).expect_err("too small").to_string();
    assert!(e.contains("--poll-batch-bytes 10"), "{e}");
}

#[test]
fn the_watermark_timeout_comes_from_flag_file_or_the_default() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("a.toml");
    let table = dir.path().join("t");
    let resolve = |file: &str, flag: Option<Duration>| {
        let args = ArchiveArgs {
            watermark_timeout: flag,
            ..Default::default()
        };
        resolve_single_table(&cfg, file, &table, args).map(|c| c.watermark_timeout)
    };
    let s = Duration::from_secs;
    assert_eq!(resolve("", None).ok(), Some(s(300)));
    assert_eq!(
        resolve("watermark_timeout = \"10m\"\n", None).ok(),
        Some(s(600))
    );
    assert_eq!(
        resolve("watermark_timeout = \"10m\"\n", Some(s(20))).ok(),
        Some(s(20))
    );
    let e = resolve("", Some(Duration::from_millis(10)))
        .expect_err("too short")
        .to_string();
    assert!(e.contains("--watermark-timeout 10ms"), "{e}");
}

#[test]
fn late_after_and_shutdown_timeout_come_from_flag_file_or_the_default() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("a.toml");
    let table = dir.path().join("t");
    let resolve = |file: &str, flag: Option<Duration>| {
        let args = ArchiveArgs {
            late_after: flag,
            ..Default::default()
        };
        resolve_single_table(&cfg, file, &table, args).map(|c| c.late_after)
    };
    let s = Duration::from_secs;
    assert_eq!(resolve("", None).ok(), Some(s(3600)));
    // the shutdown timeout follows the same rules
    let shutdown = |file: &str, flag: Option<Duration>| {
        let args = ArchiveArgs {
            shutdown_timeout: flag,
            ..Default::default()
        };
        resolve_single_table(&cfg, file, &table, args).map(|c| c.shutdown_timeout)
    };
    assert_eq!(shutdown("", None).ok(), Some(s(25)));
    assert_eq!(
        shutdown("shutdown_timeout = \"2m\"\n", None).ok(),
        Some(s(120))
    );
    assert_eq!(
        shutdown("shutdown_timeout = \"2m\"\n", Some(s(5))).ok(),
        Some(s(5))
    );
    assert_eq!(resolve("late_after = \"2h\"\n", None).ok(), Some(s(7200)));
    assert_eq!(
        resolve("late_after = \"2h\"\n", Some(s(60))).ok(),
        Some(s(60))
    );
    let e = resolve("late_after = \"soon\"\n", None)
        .expect_err("bad duration")
        .to_string();
    assert!(e.contains("late_after") && e.contains("soon"), "{e}");
}

/// A folder of table definitions holding table `a` (topic `ta`, fluentbit) whose files roll
/// at 2 MiB.
pub(super) fn table_a_with_2mib_files(dir: &Path) -> PathBuf {
    let defs = dir.join("tables");
    std::fs::create_dir_all(&defs).expect("mkdir");
    std::fs::write(
        defs.join("a.toml"),
        "name = \"a\"\ntopics = [\"ta\"]\ndecoder = \"fluentbit\"\n\
         target_file_size_bytes = 2097152\n",
    )
    .expect("write");
    defs
}

/// Each table of the multi-table form rolls its files at its definition's
/// `target_file_size_bytes`; a size given by flag, environment (see
/// `precedence_is_flag_then_env_then_file_then_default`) or file applies to every table.
#[test]
fn tables_roll_at_their_definitions_target_size_unless_one_is_given() {
    let dir = tempfile::tempdir().expect("tmp");
    let defs = table_a_with_2mib_files(dir.path());
    std::fs::write(
        defs.join("b.toml"),
        "name = \"b\"\ntopics = [\"tb\"]\ndecoder = \"k8s-audit\"\n",
    )
    .expect("write");
    let cfg = dir.path().join("archive.toml");
    let lake = dir.path().join("lake").to_string_lossy().into_owned();
    let resolve = |file: &str, flag: Option<u64>| {
        std::fs::write(&cfg, file).expect("write");
        let (c, _) = ArchiveArgs {
            config: Some(cfg.clone()),
            brokers: Some("k:9092".into()),
            lake: Some(lake.clone()),
            tables_dir: Some(defs.clone()),
            target_file_size: flag,
            ..Default::default()
        }
        .resolve(Arc::default(), Arc::default())
        .expect("resolve");
        let mut sizes: Vec<(String, u64)> = c
            .tables
            .iter()
            .map(|t| (t.name.clone(), c.policy.for_table(t).target_file_bytes))
            .collect();
        sizes.sort();
        sizes
    };
    let both = |a: u64, b: u64| vec![("a".to_string(), a), ("b".to_string(), b)];
    // each definition's own size (b has none: the definitions' default, 256 MiB)
    assert_eq!(
        resolve("", None),
        both(2 << 20, loglake_schemas::DEFAULT_TARGET_FILE_SIZE_BYTES)
    );
    // the file's target_file_size applies to every table
    assert_eq!(
        resolve("target_file_size = \"64MB\"\n", None),
        both(64 << 20, 64 << 20)
    );
    // the flag (or LOGLAKE_TARGET_FILE_SIZE, which clap reads into it) beats the file
    assert_eq!(
        resolve("target_file_size = \"64MB\"\n", Some(8 << 20)),
        both(8 << 20, 8 << 20)
    );
    assert_eq!(resolve("", Some(8 << 20)), both(8 << 20, 8 << 20));
    // the dead-letter table and the single-table form: the run's size, or the default
    let dlq = TableTarget {
        name: "dead_letters".into(),
        url: url::Url::parse("file:///tmp/dlq/").expect("url"),
        topics: Vec::new(),
        decoder: "fluentbit".into(),
        partition_by: Vec::new(),
        bloom_filter_columns: Vec::new(),
        target_file_bytes: None,
        json_message_attrs: false,
        etl: Default::default(),
        definition: None,
        route_urls: Vec::new(),
    };
    assert_eq!(
        RollPolicy::default().for_table(&dlq).target_file_bytes,
        128 << 20
    );
    let table = dir.path().join("t");
    let single = |flag: Option<u64>| {
        let args = ArchiveArgs {
            target_file_size: flag,
            ..Default::default()
        };
        let c = resolve_single_table(&cfg, "", &table, args).expect("resolve");
        c.policy.for_table(&c.tables[0]).target_file_bytes
    };
    assert_eq!(single(None), 128 << 20);
    assert_eq!(single(Some(3 << 20)), 3 << 20);
}

#[test]
fn unknown_file_keys_are_rejected_with_the_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "brokers = \"x\"\nbrokerz = \"y\"\n").expect("write");
    let args = ArchiveArgs {
        config: Some(cfg.clone()),
        ..Default::default()
    };
    let e = args
        .resolve(Arc::default(), Arc::default())
        .expect_err("error")
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("brokerz"), "{e}");
}

#[test]
fn file_errors_never_quote_credentials() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("secret.toml");
    let resolve = |text: &str| {
        std::fs::write(&cfg, text).expect("write");
        ArchiveArgs {
            config: Some(cfg.clone()),
            ..Default::default()
        }
        .resolve(Arc::default(), Arc::default())
        .expect_err("bad file")
        .to_string()
    };
    // Syntax errors (unterminated string, invalid escape, also in a multi-line string)
    // give the line; a non-string value in [storage] or [kafka] names the key. `expect` is
    // what the message must contain, `secret` what it must not.
    for (text, secret, expect) in [
        (
            "[storage]\nAWS_SECRET_ACCESS_KEY = \"s3cr3t-unterminated\n",
            "s3cr3t-unterminated",
            "line 2",
        ),
        (
            "[storage]\nAWS_SECRET_ACCESS_KEY = \"s3cr3t\\q-escape\"\n",
            "s3cr3t",
            "line 2",
        ),
        (
            "brokers = \"k:9092\"\n[storage]\nAWS_REGION = \"r\"\nAWS_SECRET_ACCESS_KEY = 98765432123\n",
            "98765432123",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            "[kafka]\n\"sasl.password\" = 4242424242\n",
            "4242424242",
            "sasl.password",
        ),
        // not a table at all: serde's own message would quote the string
        (
            "kafka = \"sasl.password=hunter2\"\n",
            "hunter2",
            "`kafka` must be a table",
        ),
        (
            "storage = [\"AWS_SECRET_ACCESS_KEY=k3y\"]\n",
            "k3y",
            "`storage` must be a table",
        ),
        (
            "[storage]\nAWS_SECRET_ACCESS_KEY = \"\"\"\nml-secret=tail\\q\n\"\"\"\n",
            "ml-secret",
            "line 3",
        ),
    ] {
        let e = resolve(text);
        assert!(!e.contains(secret), "{secret} in: {e}");
        assert!(e.contains("secret.toml") && e.contains(expect), "{e}");
    }
    // other errors still name line and key
    let e = resolve("brokers = \"k\"\nmemory_budget = 12\n");
    assert!(e.contains("line 2") && e.contains("memory_budget"), "{e}");
    // and the file's Debug shows storage keys, not values
    std::fs::write(
        &cfg,
        "[storage]\nAWS_SECRET_ACCESS_KEY = \"dbg-secret\"\n[kafka]\n\"sasl.password\" = \"dbg-pw\"\n",
    )
    .expect("write");
    let f = format!("{:?}", read_file_config(&cfg).expect("read"));
    assert!(
        f.contains("AWS_SECRET_ACCESS_KEY") && f.contains("sasl.password"),
        "{f}"
    );
    assert!(!f.contains("dbg-secret") && !f.contains("dbg-pw"), "{f}");
}

#[test]
fn single_table_partition_columns_follow_dt_and_hour_unless_listed() {
    let cols = |decoder: &str, c: &[&str]| {
        let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
        single_table_partition_by(decoder, &c).map_err(|e| e.to_string())
    };
    let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(cols("fluentbit", &[]), ok(&["dt", "hour"]));
    assert_eq!(
        cols("fluentbit", &["namespace"]),
        ok(&["dt", "hour", "namespace"])
    );
    assert_eq!(
        cols("cri", &[" namespace", "pod "]),
        ok(&["dt", "hour", "namespace", "pod"])
    );
    // naming dt or hour makes the list the whole partitioning, in its order
    assert_eq!(
        cols("fluentbit", &["dt", "namespace"]),
        ok(&["dt", "namespace"])
    );
    assert_eq!(
        cols("fluentbit", &["namespace", "dt", "hour"]),
        ok(&["namespace", "dt", "hour"])
    );
    assert_eq!(cols("k8s-audit", &["verb"]), ok(&["dt", "hour", "verb"]));
    assert_eq!(cols("access", &["status"]), ok(&["dt", "hour", "status"]));

    // an unknown column: named, with the valid ones listed
    let e = cols("fluentbit", &["tenant"]).expect_err("unknown column");
    assert!(
        e.contains("--partition-by") && e.contains("`tenant`"),
        "{e}"
    );
    assert!(e.contains("container table"), "{e}");
    assert!(
        e.contains("partition columns can be: ") && e.contains("namespace, pod"),
        "{e}"
    );
    // a column of another table's schema
    let e = cols("k8s-audit", &["namespace"]).expect_err("not in k8s_audit");
    assert!(
        e.contains("`namespace`") && e.contains("object_namespace"),
        "{e}"
    );
    // a column that cannot be a partition column, a repeated one, an empty one
    let e = cols("fluentbit", &["labels"]).expect_err("map column");
    assert!(
        e.contains("`labels`") && e.contains("cannot be a partition column"),
        "{e}"
    );
    let e = cols("fluentbit", &["namespace", "namespace"]).expect_err("twice");
    assert!(e.contains("`namespace` is listed twice"), "{e}");
    let e = cols("fluentbit", &["hour", "hour"]).expect_err("twice");
    assert!(e.contains("`hour` is listed twice"), "{e}");
    let e = cols("fluentbit", &["namespace", ""]).expect_err("empty");
    assert!(e.contains("empty column name"), "{e}");
    // an unknown decoder is reported as such (the schema depends on it)
    let e = cols("syslog", &["namespace"]).expect_err("unknown decoder");
    assert!(e.contains("`syslog`") && e.contains("fluentbit"), "{e}");
}
