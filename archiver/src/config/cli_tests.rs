//! The real command line (clap derive) with environment and file, in a child process.
//!
//! clap reads each `env = "LOGLAKE_*"` variable with `std::env::var_os` while it builds the
//! command, and `storage_options` reads the `AWS_*` variables: neither takes an injected
//! environment. Setting real variables in this process is not sound: `std::env::set_var` is
//! `unsafe` (Rust 2024) because any other thread reading the environment at the same time —
//! the other tests of this binary, which resolve configurations in parallel, or C code calling
//! getenv — is undefined behaviour, and a static Mutex only orders the tests that take it.
//! Instead each case runs this test binary again with only the ignored `cli_child` test, in an
//! environment with every LOGLAKE_* and AWS_* variable of ours removed and the case's set; the
//! child parses the argument vector with the clap derive parser, resolves it and prints the
//! result as one JSON line. Nothing in this process's environment changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::tests::table_a_with_2mib_files;
use super::*;
use crate::archive::ArchiveConfig;
use crate::writer::RollPolicy;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: ArchiveArgs,
}

const CHILD_ARGV: &str = "LOGLAKE_TEST_CHILD_ARGV";
const CHILD_RESULT: &str = "loglake-test-child-result: ";

fn parse_and_resolve(argv: &[String]) -> Result<ArchiveConfig, String> {
    use clap::Parser;
    let argv = std::iter::once("loglake-archive".to_string()).chain(argv.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    cli.args
        .resolve(Arc::default(), Arc::default())
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

#[test]
#[ignore = "the child process of the command-line tests (see `cli`); does nothing alone"]
fn cli_child() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let argv: Vec<String> = serde_json::from_str(&argv).expect("argv JSON");
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let out = match parse_and_resolve(&argv) {
        Ok(c) => serde_json::json!({
            "brokers": c.brokers,
            "group": c.group,
            "memory_budget": c.policy.memory_budget_bytes,
            "target_file_size": c.policy.target_file_bytes,
            "roll_interval": d(c.policy.max_file_age),
            "late_after": d(c.late_after),
            "until_end": c.until_end,
            "tables": c.tables.iter().map(|t| serde_json::json!({
                "name": t.name,
                "topics": t.topics,
                "decoder": t.decoder,
                "partition_by": t.partition_by,
                "target_file_size": c.policy.for_table(t).target_file_bytes,
            })).collect::<Vec<_>>(),
            "storage": c.storage_options,
            "debug": format!("{c:?}"),
        }),
        Err(e) => serde_json::json!({ "error": e }),
    };
    println!("{CHILD_RESULT}{out}");
}

/// Parses `argv` (after `loglake archive`) with the clap derive parser and resolves it, in a
/// child process whose environment has no LOGLAKE_* or AWS_* variable but those of `env`.
/// Returns the resolved configuration as JSON, or `{"error": …}`.
fn cli(argv: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "config::cli_tests::cli_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("LOGLAKE_") || k.starts_with("AWS_"))
        {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .env(CHILD_ARGV, serde_json::to_string(argv).expect("argv JSON"));
    let out = cmd.output().expect("running the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .find_map(|l| l.split_once(CHILD_RESULT).map(|(_, json)| json))
    {
        Some(json) => serde_json::from_str(json).expect("child JSON"),
        None => panic!(
            "the child printed no result ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The single-table flags every command-line case needs.
fn table_flags(dir: &std::path::Path) -> Vec<String> {
    let t = dir.join("t").to_string_lossy().into_owned();
    ["--table", &t, "--topic", "logs", "--decoder", "fluentbit"]
        .map(String::from)
        .to_vec()
}

fn argv<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

fn error_of(v: &serde_json::Value) -> Option<&str> {
    v.get("error").and_then(|e| e.as_str())
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("archive.toml");
    std::fs::write(
        &cfg,
        "brokers = \"file:9092\"\ngroup = \"g-file\"\nmemory_budget = \"64MB\"\n\
         roll_interval = \"2m\"\nlate_after = \"2h\"\n",
    )
    .expect("write");
    let cfg = cfg.to_string_lossy().into_owned();
    let base = table_flags(dir.path());
    let with_file = argv(&base, &["--config", &cfg]);
    let env = [
        ("LOGLAKE_BROKERS", "env:9092"),
        ("LOGLAKE_GROUP", "g-env"),
        ("LOGLAKE_MEMORY_BUDGET", "128MB"),
        ("LOGLAKE_ROLL_INTERVAL", "3m"),
        ("LOGLAKE_LATE_AFTER", "3h"),
    ];
    let settings = |v: &serde_json::Value| {
        assert_eq!(error_of(v), None, "{v}");
        [
            "brokers",
            "group",
            "memory_budget",
            "roll_interval",
            "late_after",
        ]
        .map(|k| v[k].to_string())
        .join(" ")
    };

    // file only
    let v = cli(&with_file, &[]);
    assert_eq!(
        settings(&v),
        format!(r#""file:9092" "g-file" {} "2m" "2h""#, 64 << 20)
    );
    // env beats file
    let v = cli(&with_file, &env);
    assert_eq!(
        settings(&v),
        format!(r#""env:9092" "g-env" {} "3m" "3h""#, 128 << 20)
    );
    // flag beats env and file
    let mut flags = with_file.clone();
    flags.extend([
        "--brokers",
        "flag:9092",
        "--group",
        "g-flag",
        "--memory-budget",
        "256MB",
        "--roll-interval",
        "4m",
        "--late-after",
        "4h",
    ]);
    let v = cli(&flags, &env);
    assert_eq!(
        settings(&v),
        format!(r#""flag:9092" "g-flag" {} "4m" "4h""#, 256 << 20)
    );
    // each setting on its own: env for two, the file for the rest
    let v = cli(
        &with_file,
        &[("LOGLAKE_GROUP", "g-env"), ("LOGLAKE_ROLL_INTERVAL", "3m")],
    );
    assert_eq!(
        settings(&v),
        format!(r#""file:9092" "g-env" {} "3m" "2h""#, 64 << 20)
    );
    // the file named by LOGLAKE_CONFIG instead of --config
    let v = cli(&argv(&base, &[]), &[("LOGLAKE_CONFIG", &cfg)]);
    assert_eq!(
        settings(&v),
        format!(r#""file:9092" "g-file" {} "2m" "2h""#, 64 << 20)
    );
    // nothing: the defaults (brokers have none)
    let v = cli(&argv(&base, &["--brokers", "k:9092"]), &[]);
    let policy = RollPolicy::default();
    assert_eq!(
        settings(&v),
        format!(
            r#""k:9092" "loglake-archiver" {} "{}" "{}""#,
            policy.memory_budget_bytes,
            humantime::format_duration(policy.max_file_age),
            humantime::format_duration(crate::archive::DEFAULT_LATE_AFTER),
        )
    );
    let v = cli(&argv(&base, &[]), &[]);
    let e = error_of(&v).expect("no brokers is an error");
    assert!(
        e.contains("--brokers") && e.contains("LOGLAKE_BROKERS") && e.contains("config file"),
        "{e}"
    );
    // a bad environment value is an error naming the value, not a silent fall back to the file
    let v = cli(&with_file, &[("LOGLAKE_MEMORY_BUDGET", "12XB")]);
    let e = error_of(&v).expect("bad env value");
    assert!(e.contains("12XB") && e.contains("memory-budget"), "{e}");
}

/// Flag > LOGLAKE_TARGET_FILE_SIZE > file > each table definition's size, through the real
/// command line.
#[test]
fn the_target_file_size_precedence_reaches_every_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let defs = table_a_with_2mib_files(dir.path());
    let cfg = dir.path().join("archive.toml");
    std::fs::write(&cfg, "target_file_size = \"32MB\"\n").expect("write");
    let lake = dir.path().join("lake").to_string_lossy().into_owned();
    let (defs, cfg) = (defs.to_string_lossy(), cfg.to_string_lossy());
    let base = [
        "--brokers",
        "k:9092",
        "--lake",
        &lake,
        "--tables-dir",
        &defs,
    ];
    let size = |v: &serde_json::Value| {
        assert_eq!(error_of(v), None, "{v}");
        v["tables"][0]["target_file_size"].as_u64()
    };
    let env = [("LOGLAKE_TARGET_FILE_SIZE", "16MB")];
    let with_file: Vec<&str> = base.iter().copied().chain(["--config", &cfg]).collect();
    let with_flag: Vec<&str> = with_file
        .iter()
        .copied()
        .chain(["--target-file-size", "4MB"])
        .collect();
    assert_eq!(size(&cli(&base, &[])), Some(2 << 20));
    assert_eq!(size(&cli(&with_file, &[])), Some(32 << 20));
    assert_eq!(size(&cli(&with_file, &env)), Some(16 << 20));
    assert_eq!(size(&cli(&base, &env)), Some(16 << 20));
    assert_eq!(size(&cli(&with_flag, &env)), Some(4 << 20));
}

#[test]
fn the_single_table_form_works_from_flags_or_env_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path().join("t").to_string_lossy().into_owned();
    let dlq = dir.path().join("dlq").to_string_lossy().into_owned();
    let v = cli(
        &[
            "--brokers",
            "k:9092",
            "--topic",
            "a",
            "--topic",
            "b",
            "--group",
            "g",
            "--table",
            &t,
            "--decoder",
            "cri",
            "--dlq-table",
            &dlq,
            "--until-end",
            "-X",
            "fetch.min.bytes=1",
        ],
        &[],
    );
    assert_eq!(error_of(&v), None, "{v}");
    assert_eq!(v["tables"][0]["topics"], serde_json::json!(["a", "b"]));
    assert_eq!(v["tables"][0]["decoder"], "cri");
    assert_eq!(v["tables"][0]["name"], "t");
    assert_eq!(v["until_end"], true);
    // the same through LOGLAKE_* alone (topics comma-separated)
    let v = cli(
        &[],
        &[
            ("LOGLAKE_BROKERS", "k:9092"),
            ("LOGLAKE_TOPICS", "a,b"),
            ("LOGLAKE_TABLE", &t),
            ("LOGLAKE_DECODER", "cri"),
            ("LOGLAKE_UNTIL_END", "true"),
        ],
    );
    assert_eq!(error_of(&v), None, "{v}");
    assert_eq!(v["tables"][0]["topics"], serde_json::json!(["a", "b"]));
    assert_eq!(v["until_end"], true);
}

#[test]
fn storage_comes_from_aws_variables_overridden_by_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = table_flags(dir.path());
    let env = [
        ("AWS_ENDPOINT_URL", "http://minio.env:9000"),
        ("AWS_REGION", "eu-env-1"),
        ("AWS_ACCESS_KEY_ID", "AKIAENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret-0f9e8d"),
        ("AWS_SESSION_TOKEN", "env-token-7c6b5a"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let storage = |v: &serde_json::Value| -> HashMap<String, String> {
        assert_eq!(error_of(v), None, "{v}");
        serde_json::from_value(v["storage"].clone()).expect("storage map")
    };
    let no_secret = |v: &serde_json::Value, secrets: &[&str]| {
        let debug = v["debug"].as_str().expect("debug");
        for s in secrets {
            assert!(!debug.contains(s), "{s} in {debug}");
        }
    };

    // no [storage] in the file: the AWS_* variables, path-style for the custom endpoint
    let cfg = dir.path().join("plain.toml");
    std::fs::write(&cfg, "brokers = \"k:9092\"\n").expect("write");
    let v = cli(&argv(&base, &["--config", &cfg.to_string_lossy()]), &env);
    let mut want: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
    assert_eq!(storage(&v), want);
    no_secret(&v, &["env-secret-0f9e8d", "env-token-7c6b5a"]);

    // the file's [storage] overrides them, key by key
    let cfg = dir.path().join("storage.toml");
    std::fs::write(
        &cfg,
        "brokers = \"k:9092\"\n[storage]\nAWS_ENDPOINT_URL = \"https://s3.file.example\"\n\
         AWS_REGION = \"file-region\"\nAWS_SECRET_ACCESS_KEY = \"file-secret-1a2b3c\"\n\
         AWS_ALLOW_HTTP = \"false\"\n",
    )
    .expect("write");
    let v = cli(&argv(&base, &["--config", &cfg.to_string_lossy()]), &env);
    let got = storage(&v);
    let get = |k: &str| got.get(k).map(String::as_str);
    assert_eq!(get("AWS_ENDPOINT_URL"), Some("https://s3.file.example"));
    assert_eq!(get("AWS_REGION"), Some("file-region"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("file-secret-1a2b3c"));
    assert_eq!(get("AWS_ALLOW_HTTP"), Some("false"));
    assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("AKIAENV"));
    assert_eq!(get("AWS_SESSION_TOKEN"), Some("env-token-7c6b5a"));
    assert_eq!(get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST"), Some("false"));
    no_secret(
        &v,
        &[
            "file-secret-1a2b3c",
            "env-secret-0f9e8d",
            "env-token-7c6b5a",
        ],
    );

    // the file alone (no AWS_* at all), and it may ask for virtual-hosted style
    let cfg = dir.path().join("hosted.toml");
    std::fs::write(
        &cfg,
        "brokers = \"k:9092\"\n[storage]\nAWS_ENDPOINT_URL = \"https://s3.file.example\"\n\
         AWS_VIRTUAL_HOSTED_STYLE_REQUEST = \"true\"\n",
    )
    .expect("write");
    let v = cli(&argv(&base, &["--config", &cfg.to_string_lossy()]), &[]);
    let got = storage(&v);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
            .map(String::as_str),
        Some("true")
    );

    // no custom endpoint: addressing left to the default
    let v = cli(
        &argv(&base, &["--brokers", "k:9092"]),
        &[("AWS_REGION", "eu-env-1")],
    );
    let got = storage(&v);
    assert_eq!(
        got,
        HashMap::from([("AWS_REGION".to_string(), "eu-env-1".to_string())])
    );
}

#[test]
fn partition_by_flag_and_env_reach_the_single_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = table_flags(dir.path());
    let parts = |v: &serde_json::Value| {
        assert_eq!(error_of(v), None, "{v}");
        v["tables"][0]["partition_by"].clone()
    };
    let k = ("LOGLAKE_BROKERS", "k:9092");
    // default
    let v = cli(&argv(&base, &[]), &[k]);
    assert_eq!(parts(&v), serde_json::json!(["dt", "hour"]));
    // repeated flag, comma-separated flag
    let v = cli(
        &argv(
            &base,
            &["--partition-by", "namespace", "--partition-by", "pod"],
        ),
        &[k],
    );
    assert_eq!(
        parts(&v),
        serde_json::json!(["dt", "hour", "namespace", "pod"])
    );
    let v = cli(&argv(&base, &["--partition-by", "dt,namespace"]), &[k]);
    assert_eq!(parts(&v), serde_json::json!(["dt", "namespace"]));
    // LOGLAKE_PARTITION_BY, comma-separated; a flag replaces it
    let env = [k, ("LOGLAKE_PARTITION_BY", "namespace, container")];
    let v = cli(&argv(&base, &[]), &env);
    assert_eq!(
        parts(&v),
        serde_json::json!(["dt", "hour", "namespace", "container"])
    );
    let v = cli(&argv(&base, &["--partition-by", "pod"]), &env);
    assert_eq!(parts(&v), serde_json::json!(["dt", "hour", "pod"]));
    // an unknown column fails the run before anything is opened
    let v = cli(&argv(&base, &["--partition-by", "tenant"]), &[k]);
    let e = error_of(&v).expect("unknown column");
    assert!(e.contains("`tenant`") && e.contains("namespace"), "{e}");
    // the multi-table form takes partition columns from its table files only
    let v = cli(
        &[
            "--lake",
            "/tmp/lake",
            "--tables-dir",
            "/tmp/tables",
            "--partition-by",
            "pod",
        ],
        &[k],
    );
    let e = error_of(&v).expect("multi-table form");
    assert!(
        e.contains("--partition-by") && e.contains("partition_by"),
        "{e}"
    );
}
