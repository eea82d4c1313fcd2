//! What an operator sees when the configuration is wrong, through the real binary: one clear
//! line naming what to set or check, the documented exit code (2: configuration, 1: retryable),
//! within a bound, and no colour codes when stderr is not a terminal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loglake_tests::{Proc, loglake_bin};

/// `loglake <args>` with no AWS settings and no LOGLAKE_* variables from the test environment.
fn bare(args: &[&str]) -> Command {
    let mut c = Command::new(loglake_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("LOGLAKE_") {
            c.env_remove(k);
        }
    }
    c.args(args);
    c
}

/// `loglake [BEFORE] archive` of topic `logs` in group `g` into the local `table` (fluentbit,
/// `--until-end`) on `brokers`, plus `extra`, with no `AWS_*`/`LOGLAKE_*` from the test's
/// environment.
fn bare_archive(before: &[&str], brokers: &str, table: &Path, extra: &[&str]) -> Command {
    let table = table.to_string_lossy();
    let mut args: Vec<&str> = before.to_vec();
    args.extend([
        "archive",
        "--brokers",
        brokers,
        "--topic",
        "logs",
        "--group",
        "g",
        "--table",
        &table,
        "--decoder",
        "fluentbit",
        "--until-end",
    ]);
    args.extend(extra);
    bare(&args)
}

/// Runs `cmd` to its end (at most `bound`): exit code, stderr.
async fn finish(cmd: Command, bound: Duration) -> (Option<i32>, String) {
    let mut p = Proc::spawn(cmd).expect("spawn loglake");
    let done = p
        .wait_within(bound)
        .await
        .expect("wait")
        .unwrap_or_else(|| panic!("still running after {bound:?}"));
    (done.status.code(), done.stderr_text())
}

fn assert_plain(stderr: &str) {
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in redirected stderr:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_address_that_does_not_resolve_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let table = dir.path().join("t");
    let cmd = bare_archive(&[], "nosuchhost.invalid:9092", &table, &[]);
    // checked before any Kafka client starts; the bound is the resolver's
    let (code, stderr) = finish(cmd, Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_plain(&stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("loglake: error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    assert!(
        error.contains(
            "none of the Kafka brokers resolves to an address (nosuchhost.invalid:9092: "
        ) && error.contains("check --brokers"),
        "{error}"
    );
    assert!(
        !stderr.contains("ArchiveConfig {"),
        "a Debug dump of the configuration:\n{stderr}"
    );
    // nothing is created by a run that fails its checks
    assert!(!table.exists(), "{} was created", table.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_connections_is_reported_once_per_kind_not_every_retry() {
    // a port nobody listens on: every connection attempt is refused at once, and librdkafka
    // retries (and reports) every 100 ms to 10 s
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let dir = tempfile::tempdir().expect("tmp");
    let table = dir.path().join("t");
    let mut cmd = bare_archive(&[], &addr, &table, &["--stall-timeout", "8s"]);
    cmd.env("LOGLAKE_LOG", "info").env("NO_COLOR", "1");
    let (code, stderr) = finish(cmd, Duration::from_secs(90)).await;
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("loglake: error: no progress for 8s"),
        "{stderr}"
    );
    // librdkafka's lines: each kind at most once in the run's ~8 s (the limiter's window is
    // 30 s), the repeats summed up at the end
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("librdkafka") && l.contains("Connection refused"))
        .collect();
    assert!(!refused.is_empty(), "no librdkafka line at all:\n{stderr}");
    let mut kinds: Vec<String> = refused
        .iter()
        .map(|l| {
            let text = l.split("librdkafka").nth(1).unwrap_or(l);
            text.chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect()
        })
        .collect();
    let lines = kinds.len();
    kinds.sort();
    kinds.dedup();
    assert_eq!(lines, kinds.len(), "a kind repeated within 30 s:\n{stderr}");
    assert!(
        stderr.contains("were not shown"),
        "no summary of the held-back repeats:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_accepts_and_never_answers_gets_one_warning_and_the_stall_error() {
    // a port that accepts connections and never says a word
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let _hold = std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in listener.incoming().flatten() {
            open.push(s);
        }
    });
    let dir = tempfile::tempdir().expect("tmp");
    let table = dir.path().join("t");
    let mut cmd = bare_archive(
        &["--log-format", "json"],
        &addr,
        &table,
        &["--stall-timeout", "5s"],
    );
    cmd.env("LOGLAKE_LOG", "info");
    let (code, stderr) = finish(cmd, Duration::from_secs(90)).await;
    // the stall error (exit 4): the address is right, the broker is not answering
    assert_eq!(code, Some(4), "{stderr}");
    assert_plain(&stderr);
    // --log-format json: one JSON object per log line; the configuration as a readable summary
    let logged: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let start = logged
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("starting archiver: "))
        })
        .unwrap_or_else(|| panic!("no JSON start line in:\n{stderr}"));
    assert_eq!(start["level"], "INFO", "{start}");
    let summary = start["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(&format!(
            "starting archiver: brokers {addr}, group g; tables: t <- logs (fluentbit) at file://"
        )),
        "{summary}"
    );
    // one warning naming what to check (not a line per librdkafka retry), then the stall error
    let warned = logged
        .iter()
        .filter(|v| {
            v["fields"]["message"].as_str().is_some_and(|m| {
                m.starts_with(&format!(
                    "the Kafka brokers {addr} did not answer within 5s"
                )) && m.contains("check --brokers")
            })
        })
        .count();
    assert_eq!(warned, 1, "{stderr}");
    assert!(
        stderr.contains("loglake: error: no progress for 5s"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_lake_without_credentials_names_the_settings_and_exits_2() {
    let cmd = bare(&[
        "compact",
        "--table",
        "s3://no-such-bucket-for-loglake/logs/containers",
    ]);
    let (code, stderr) = finish(cmd, Duration::from_secs(60)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_plain(&stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("loglake: error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    assert!(
        error.contains("no usable S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{error}"
    );
    // the AWS SDK's own IMDS warnings stay off
    assert!(!stderr.contains("aws_config"), "{stderr}");
}
