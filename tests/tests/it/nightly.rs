//! `loglake nightly` against the real broker and S3 server, through the real binary: a run over
//! two days of data, a re-run that changes nothing, and two runners at once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::Value;

use crate::archiver::{audit, produce_with, query_i64};
use crate::compactor::{active_files, key_prefix, open};
use crate::maintenance::record_at;
use loglake_tests::{Proc, announce, kafka, loglake_cmd, s3, unique_name};

/// A lake.toml for `topic` into `lake` (one container table, dead letters), plus the tables of
/// `extra` (name, topic, decoder, sort keys), compaction settle `settle`.
fn lake_config(
    dir: &std::path::Path,
    topic: &str,
    lake: &str,
    settle: Duration,
    extra: &[(&str, &str, &str, &str)],
) -> std::path::PathBuf {
    let tables = dir.join("tables");
    std::fs::create_dir_all(&tables).expect("mkdir");
    for (name, topic, decoder, sort_by) in extra {
        std::fs::write(
            tables.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\ntopics = [\"{topic}\"]\ndecoder = \"{decoder}\"\n\
                 partition_by = [\"dt\", \"hour\"]\nsort_by = [{sort_by}]\n"
            ),
        )
        .expect("table def");
    }
    std::fs::write(
        tables.join("containers.toml"),
        format!(
            "name = \"containers\"\ntopics = [\"{topic}\"]\ndecoder = \"fluentbit\"\n\
             partition_by = [\"dt\", \"hour\"]\nsort_by = [\"namespace\", \"pod\", \"ts\"]\n\
             bloom_filter_columns = [\"trace_id\"]\nretention_days = 3650\n"
        ),
    )
    .expect("table def");
    let path = dir.join("lake.toml");
    std::fs::write(
        &path,
        format!(
            "brokers = \"{}\"\ngroup = \"{}\"\nlake = \"{lake}\"\ntables_dir = \"{}\"\n\
             dlq_table = \"{lake}/dead_letters\"\nstall_timeout = \"120s\"\n\n\
             [nightly]\nsettle = \"{}s\"\nlease_ttl = \"5s\"\n{}",
            kafka().brokers,
            unique_name("g-nightly"),
            tables.display(),
            settle.as_secs(),
            // the four-kinds run also exports complete days for Spark
            if extra.is_empty() {
                String::new()
            } else {
                format!("export_hive = \"{lake}/_export\"\n")
            }
        ),
    )
    .expect("lake.toml");
    path
}

/// An nginx combined access log line at `ts`.
fn access_line(i: usize, ts: chrono::DateTime<Utc>) -> Vec<u8> {
    format!(
        "10.0.{}.{} - - [{}] \"GET /api/items/{i} HTTP/1.1\" {} {} \"-\" \"curl/8.5.0\"",
        i % 7,
        i % 250,
        ts.format("%d/%b/%Y:%H:%M:%S %z"),
        [200, 200, 404, 500][i % 4],
        100 + i
    )
    .into_bytes()
}

/// A Kubernetes audit event (`audit.k8s.io/v1`) at `ts`.
fn audit_event(i: usize, ts: chrono::DateTime<Utc>) -> Vec<u8> {
    let t = ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": format!("00000000-0000-4000-8000-{i:012}"), "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/pods", "verb": (["list", "get", "watch"][i % 3]),
        "user": {"username": "system:serviceaccount:shop:web"},
        "objectRef": {"resource": "pods", "namespace": "shop", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": t, "stageTimestamp": t
    })
    .to_string()
    .into_bytes()
}

/// An OTLP/JSON `ExportLogsServiceRequest` with one log record at `ts`.
fn otlp_request(i: usize, ts: chrono::DateTime<Utc>) -> Vec<u8> {
    let nanos = ts.timestamp_nanos_opt().expect("nanos").to_string();
    serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "k8s.namespace.name", "value": {"stringValue": "payments"}},
            {"key": "k8s.pod.name", "value": {"stringValue": format!("pay-{}", i % 3)}},
            {"key": "service.name", "value": {"stringValue": "payment-service"}}
        ]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": nanos, "severityText": "INFO",
            "body": {"stringValue": format!("payment {i} done")}
        }]}]
    }]})
    .to_string()
    .into_bytes()
}

fn nightly(config: &std::path::Path, date: NaiveDate, extra: &[&str]) -> std::process::Command {
    let mut c = loglake_cmd();
    c.arg("nightly")
        .arg("--config")
        .arg(config)
        .args(["--date", &date.to_string()])
        .args(extra)
        .env("LOGLAKE_LOG", "warn,loglake_jobs=info");
    c
}

/// Runs `loglake nightly` to the end: (exit code, summary, stderr).
async fn run_nightly(config: &std::path::Path, date: NaiveDate) -> (Option<i32>, Value, String) {
    run_nightly_with(config, date, &[]).await
}

async fn run_nightly_with(
    config: &std::path::Path,
    date: NaiveDate,
    extra: &[&str],
) -> (Option<i32>, Value, String) {
    let mut c = nightly(config, date, extra);
    let out = tokio::task::spawn_blocking(move || c.output().expect("run nightly"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("summary JSON"))
        .unwrap_or(Value::Null);
    (
        out.status.code(),
        summary,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// (stage, table) → status of a run's summary.
fn statuses(summary: &Value) -> BTreeMap<(String, String), String> {
    summary["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        (
                            s["stage"].as_str().unwrap_or("").to_string(),
                            s["table"].as_str().unwrap_or("").to_string(),
                        ),
                        s["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn versions(urls: &[&str]) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for u in urls {
        out.push(open(u).await.version());
    }
    out
}

/// Two days of data (D: 10:00–13:59, E = D + 1: 10:00–10:59): `nightly --date D` archives,
/// marks D complete (the watermark, E 10:59, is past D's end plus the hour of lateness),
/// compacts D's closed partitions and leaves E's open one alone, and records one success per
/// stage and table; `--date E` does not mark E complete; re-running D changes no table; two
/// runners at once: one runs, the other exits 3; an expired lease is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_marks_complete_days_compacts_closed_partitions_and_reruns_change_nothing() {
    const N: usize = 6_000;
    let topic = unique_name("nightly");
    kafka().create_topic(&topic, 3).await.expect("topic");
    let today = Utc::now().date_naive();
    let d = today - chrono::Days::new(2);
    let e = today - chrono::Days::new(1);
    let at = |day: NaiveDate, secs: i64| {
        day.and_hms_opt(10, 0, 0).expect("time").and_utc() + chrono::Duration::seconds(secs)
    };
    // 5,000 records over D's four hours, then 1,000 over E's 10:00 hour
    produce_with(&topic, 0, N, move |i| {
        let ns = ["shop", "payments", "kube-system"][i % 3];
        if i < 5_000 {
            record_at(i, ns, at(d, (i as i64 * 14_399) / 5_000))
        } else {
            record_at(i, ns, at(e, ((i - 5_000) as i64 * 3_599) / 1_000))
        }
    })
    .await;
    // The three other table kinds: 200 records each over D's four hours, 40 in E's 10:00 hour
    const M: usize = 240;
    let kinds = [
        (
            "audit",
            format!("{topic}-audit"),
            "k8s-audit",
            "\"verb\", \"ts\"",
        ),
        (
            "access",
            format!("{topic}-access"),
            "access",
            "\"path\", \"ts\"",
        ),
        (
            "otlp",
            format!("{topic}-otlp"),
            "otlp-json",
            "\"namespace\", \"pod\", \"ts\"",
        ),
    ];
    for (i, (_, t, _, _)) in kinds.iter().enumerate() {
        kafka().create_topic(t, 1).await.expect("topic");
        let time = move |j: usize| {
            if j < 200 {
                at(d, (j as i64 * 14_399) / 200)
            } else {
                at(e, ((j - 200) as i64 * 3_599) / 40)
            }
        };
        match i {
            0 => produce_with(t, 0, M, move |j| audit_event(j, time(j))).await,
            1 => produce_with(t, 0, M, move |j| access_line(j, time(j))).await,
            _ => produce_with(t, 0, M, move |j| otlp_request(j, time(j))).await,
        };
    }
    let kinds: Vec<(&str, &str, &str, &str)> = kinds
        .iter()
        .map(|(n, t, dec, s)| (*n, t.as_str(), *dec, *s))
        .collect();
    let lake = s3().unique_url("nightly");
    let table = format!("{lake}/containers");
    let dlq = format!("{lake}/dead_letters");
    // E's partition (ended at 11:00 yesterday) stays open: settle = its age + 1h
    let e_end = at(e, 3_600);
    let settle = Duration::from_secs(((Utc::now() - e_end).num_seconds() + 3_600) as u64);
    let dir = tempfile::tempdir().expect("tmp");
    let config = lake_config(dir.path(), &topic, &lake, settle, &kinds);

    let (code, summary, err) = run_nightly(&config, d).await;
    assert_eq!(code, Some(0), "{err}\n{summary}");
    let st = statuses(&summary);
    assert_eq!(st[&("archive".into(), "*".into())], "success", "{summary}");
    for name in ["containers", "audit", "access", "otlp"] {
        for stage in ["complete", "compact", "retention", "vacuum", "export"] {
            assert_eq!(
                st[&(stage.into(), name.into())],
                "success",
                "{stage} {name}: {summary}"
            );
        }
    }
    assert_eq!(
        query_i64(&table, "SELECT count(*) FROM t").await,
        vec![N as i64]
    );
    // The other kinds: every record a row; D marked complete with its 200 rows; D's four hours
    // one compacted file each, E's hour left as archived
    let store = s3().object_store().expect("s3");
    for (name, ..) in &kinds {
        let url = format!("{lake}/{name}");
        assert_eq!(
            query_i64(&url, "SELECT count(*) FROM t").await,
            vec![M as i64],
            "{name}"
        );
        let prefix = key_prefix(&url);
        let manifest = store
            .get(&format!("{prefix}/_loglake/complete/dt={d}/manifest.json").into())
            .await
            .unwrap_or_else(|e| panic!("{name}: D's manifest: {e}"))
            .bytes()
            .await
            .expect("bytes");
        let manifest: Value = serde_json::from_slice(&manifest).expect("manifest");
        assert_eq!(manifest["rows"].as_i64(), Some(200), "{name}: {manifest}");
        let files = active_files(&url).await;
        let on = |day: NaiveDate| -> Vec<&String> {
            files
                .iter()
                .filter(|(_, (_, p))| p.starts_with(&day.to_string()))
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(on(d).len(), 4, "{name}: {files:?}");
        assert!(
            on(d).iter().all(|f| f.contains("/compacted-")),
            "{name}: {files:?}"
        );
        assert!(
            !on(e).is_empty() && on(e).iter().all(|f| !f.contains("/compacted-")),
            "{name}: {files:?}"
        );
    }
    // D is marked complete with its rows; nothing for E
    let prefix = key_prefix(&table);
    let manifest = store
        .get(&format!("{prefix}/_loglake/complete/dt={d}/manifest.json").into())
        .await
        .expect("D's manifest")
        .bytes()
        .await
        .expect("bytes");
    let manifest: Value = serde_json::from_slice(&manifest).expect("manifest");
    assert_eq!(manifest["rows"].as_i64(), Some(5_000), "{manifest}");
    assert_eq!(manifest["date"], d.to_string());
    store
        .head(&format!("{prefix}/_loglake/complete/dt={d}/_SUCCESS").into())
        .await
        .expect("_SUCCESS");
    assert!(
        store
            .head(&format!("{prefix}/_loglake/complete/dt={e}/manifest.json").into())
            .await
            .is_err()
    );
    // ... and exported for Spark once complete: the day's rows, `_SUCCESS` after the manifest
    let export_day = format!("{}/_export/containers/dt={d}", key_prefix(&lake));
    let exported: Value = serde_json::from_slice(
        &store
            .get(&format!("{export_day}/_manifest.json").into())
            .await
            .expect("the export's manifest")
            .bytes()
            .await
            .expect("bytes"),
    )
    .expect("manifest JSON");
    assert_eq!(exported["rows"].as_u64(), Some(5_000), "{exported}");
    store
        .head(&format!("{export_day}/_SUCCESS").into())
        .await
        .expect("the export's _SUCCESS");
    // `loglake query` shows it: lake_status() has D as the newest complete day of containers
    let out = loglake_cmd()
        .args(["query", "--lake", &lake, "--format", "ndjson", "-c"])
        .arg("SELECT * FROM lake_status() ORDER BY \"table\"")
        .output()
        .expect("loglake query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let containers = status
        .iter()
        .find(|r| r["table"] == "containers")
        .unwrap_or_else(|| panic!("{status:?}"));
    assert_eq!(containers["complete_through"], d.to_string(), "{status:?}");
    assert_eq!(containers["days_complete"], 1, "{status:?}");
    assert_eq!(containers["rows_on_last_day"], 5_000, "{status:?}");
    let dead = status.iter().find(|r| r["table"] == "dead_letters");
    assert!(
        dead.is_some_and(|r| r["complete_through"].is_null()),
        "{status:?}"
    );

    // D's four partitions are one compacted file each; E's partition keeps its archived files
    let files = active_files(&table).await;
    let by_part = |day: NaiveDate| -> Vec<&String> {
        files
            .iter()
            .filter(|(_, (_, p))| p.starts_with(&day.to_string()))
            .map(|(f, _)| f)
            .collect()
    };
    let d_files = by_part(d);
    assert_eq!(d_files.len(), 4, "{files:?}");
    assert!(
        d_files.iter().all(|f| f.contains("/compacted-")),
        "{d_files:?}"
    );
    let e_files = by_part(e);
    assert!(
        !e_files.is_empty() && e_files.iter().all(|f| !f.contains("/compacted-")),
        "{e_files:?}"
    );

    // E: not complete yet (watermark E 10:59 < E's end + 1h); its figures go to a Pushgateway
    let (_gateway, gateway_addr) = start_pushgateway().await;
    let gateway_url = format!("http://{gateway_addr}");
    let (code, summary_e, err) =
        run_nightly_with(&config, e, &["--pushgateway", &gateway_url]).await;
    assert_eq!(code, Some(0), "{err}");
    let pushed = loglake_tests::http_get(&gateway_addr, "/metrics")
        .await
        .expect("pushgateway /metrics")
        .body;
    for metric in [
        "loglake_nightly_last_run_success{",
        "loglake_nightly_stage_success{",
        "loglake_nightly_stage_duration_seconds{",
    ] {
        let line = pushed
            .lines()
            .find(|l| l.starts_with(metric) && l.contains("job=\"loglake_nightly\""))
            .unwrap_or_else(|| panic!("no {metric} in\n{pushed}"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
    assert!(
        pushed
            .lines()
            .any(|l| l.starts_with("loglake_nightly_stage_success{")
                && l.contains("stage=\"complete\"")
                && l.contains("table=\"containers\"")
                && l.ends_with(" 1")),
        "{pushed}"
    );
    let complete_e = summary_e["stages"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["stage"] == "complete" && s["table"] == "containers")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(complete_e["status"], "skipped", "{summary_e}");
    assert_eq!(complete_e["report"]["complete"], false, "{summary_e}");
    let st_e = statuses(&summary_e);
    assert_eq!(
        st_e[&("export".into(), "containers".into())],
        "skipped",
        "E is not complete, so not exported: {summary_e}"
    );

    // Re-running D changes no table
    let others: Vec<String> = kinds.iter().map(|k| format!("{lake}/{}", k.0)).collect();
    let all: Vec<&str> = [table.as_str(), dlq.as_str()]
        .into_iter()
        .chain(others.iter().map(String::as_str))
        .collect();
    let before = versions(&all).await;
    let (code, again, err) = run_nightly(&config, d).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(versions(&all).await, before, "{again}");
    let st = statuses(&again);
    assert_eq!(
        st[&("complete".into(), "containers".into())],
        "skipped",
        "{again}"
    );

    // The ledger: one success per stage and table for D in the first run
    let ledger = format!("{lake}/_loglake/runs");
    let run_id = summary["run_id"].as_str().expect("run id").to_string();
    let successes = query_i64(
        &ledger,
        &format!(
            "SELECT count(*) FROM t WHERE run_id = '{run_id}' AND status = 'success' \
             AND date = '{d}' AND \"table\" <> 'dead_letters'"
        ),
    )
    .await;
    assert_eq!(
        successes,
        vec![1 + 4 * 5],
        "archive, then complete, compact, retention, vacuum, export of each of the four tables"
    );

    // Two runners at once: one runs, the other exits 3 and names the holder.
    let (mut a, mut b) = (
        Proc::spawn(nightly(&config, d, &[])).expect("a"),
        Proc::spawn(nightly(&config, d, &[])).expect("b"),
    );
    let mut codes = Vec::new();
    for p in [&mut a, &mut b] {
        let done = p
            .wait_within(Duration::from_secs(300))
            .await
            .expect("wait")
            .expect("nightly still running after 5 min");
        if done.status.code() == Some(3) {
            assert!(
                done.stderr_text()
                    .contains("another nightly runner holds the lease"),
                "{}",
                done.stderr_text()
            );
        }
        codes.push(done.status.code());
    }
    codes.sort();
    assert_eq!(codes, vec![Some(0), Some(3)]);

    // A lease left by a killed runner: refused while it lasts, taken over once expired.
    let lake_prefix = key_prefix(&lake);
    let lease_dir = format!("{lake_prefix}/_loglake/lease");
    let newest = s3()
        .list(&lease_dir)
        .await
        .expect("list")
        .iter()
        .filter_map(|k| {
            k.rsplit('/')
                .next()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let put = |n: u64, expires_ms: i64| {
        let store = store.clone();
        let path = format!("{lease_dir}/{n:020}.json");
        async move {
            let body = serde_json::json!({"owner": "killed-pod:1:run", "expires_ms": expires_ms, "released": false});
            store
                .put(
                    &path.into(),
                    PutPayload::from(body.to_string().into_bytes()),
                )
                .await
                .expect("put lease");
        }
    };
    let now_ms = Utc::now().timestamp_millis();
    put(newest + 1, now_ms + 600_000).await;
    let (code, _, err) = run_nightly(&config, d).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("killed-pod:1:run"), "{err}");
    put(newest + 2, now_ms - 1).await;
    let (code, _, err) = run_nightly(&config, d).await;
    assert_eq!(code, Some(0), "{err}");

    let (au, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        (
            au.expected,
            au.rows + au.dead_letters,
            au.missing,
            au.duplicates
        ),
        (N as u64, N as u64, 0, 0),
        "{au:?}"
    );
    assert!(ok);
    announce(&format!(
        "nightly: D={d} complete, E={e} open; settle {settle:?}"
    ));
}

/// A Prometheus Pushgateway (Debian's, `LOGLAKE_PUSHGATEWAY_BIN`) on a free 127.0.0.1 port,
/// ready; stopped when the returned process drops.
async fn start_pushgateway() -> (Proc, String) {
    let bin = std::env::var("LOGLAKE_PUSHGATEWAY_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .expect("LOGLAKE_PUSHGATEWAY_BIN (eval \"$(scripts/install-test-deps.sh)\")");
    let port = loglake_tests::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut c = std::process::Command::new(bin);
    c.arg(format!("--web.listen-address={addr}"));
    let p = Proc::spawn(c).expect("start pushgateway");
    for _ in 0..100 {
        if loglake_tests::http_get(&addr, "/-/ready")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            announce(&format!("Prometheus Pushgateway at {addr}"));
            return (p, addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the pushgateway at {addr} did not get ready in 10 s");
}

/// Rows per (dt, hour) and data files per partition of a table.
async fn shape(table: &str) -> (Vec<i64>, BTreeMap<String, usize>) {
    let rows = query_i64(
        table,
        "SELECT count(*) FROM t GROUP BY dt, hour ORDER BY dt, hour",
    )
    .await;
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    for (_, (_, part)) in active_files(table).await {
        *files.entry(part).or_default() += 1;
    }
    (rows, files)
}

/// `kill -9` of `loglake nightly` ten times at moments spread over its stages, then a last run:
/// the lake ends as one uninterrupted run leaves it (rows and files per partition, the marker),
/// and the audit finds every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_killed_ten_times_ends_as_one_uninterrupted_run() {
    const N: usize = 6_000;
    let topic = unique_name("nightly-kill");
    kafka().create_topic(&topic, 3).await.expect("topic");
    let today = Utc::now().date_naive();
    let d = today - chrono::Days::new(2);
    let e = today - chrono::Days::new(1);
    produce_with(&topic, 0, N, move |i| {
        let ns = ["shop", "payments", "kube-system"][i % 3];
        let (day, secs) = if i < 5_000 {
            (d, (i as i64 * 14_399) / 5_000)
        } else {
            (e, ((i - 5_000) as i64 * 3_599) / 1_000)
        };
        record_at(
            i,
            ns,
            day.and_hms_opt(10, 0, 0).expect("t").and_utc() + chrono::Duration::seconds(secs),
        )
    })
    .await;
    let settle = Duration::from_secs(3_600);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (lake_a, lake_b) = (s3().unique_url("nightly-a"), s3().unique_url("nightly-b"));
    let config_a = lake_config(dir_a.path(), &topic, &lake_a, settle, &[]);
    let config_b = lake_config(dir_b.path(), &topic, &lake_b, settle, &[]);

    let (code, _, err) = run_nightly(&config_a, d).await;
    assert_eq!(code, Some(0), "{err}");

    let mut kills = 0;
    let mut delay_ms = 400u64;
    for _ in 0..10 {
        let mut p = Proc::spawn(nightly(&config_b, d, &[])).expect("spawn");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if p.running() {
            p.signal(libc::SIGKILL).expect("kill");
            kills += 1;
        }
        let _ = p.wait_within(Duration::from_secs(300)).await.expect("wait");
        delay_ms = delay_ms * 8 / 5 % 9_000 + 300;
        // a killed runner's lease lapses after lease_ttl (5 s)
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert!(
        kills >= 5,
        "only {kills} runs were still running when killed"
    );
    let (code, summary, err) = run_nightly(&config_b, d).await;
    assert_eq!(code, Some(0), "{err}\n{summary}");

    let (ta, tb) = (
        format!("{lake_a}/containers"),
        format!("{lake_b}/containers"),
    );
    assert_eq!(shape(&tb).await, shape(&ta).await);
    let store = s3().object_store().expect("s3");
    for t in [&ta, &tb] {
        let m = store
            .get(&format!("{}/_loglake/complete/dt={d}/manifest.json", key_prefix(t)).into())
            .await
            .expect("manifest")
            .bytes()
            .await
            .expect("bytes");
        let m: Value = serde_json::from_slice(&m).expect("json");
        assert_eq!(m["rows"].as_i64(), Some(5_000), "{m}");
    }
    let (au, ok) = audit(&topic, &tb, &format!("{lake_b}/dead_letters"));
    assert_eq!(
        (
            au.expected,
            au.rows + au.dead_letters,
            au.missing,
            au.duplicates
        ),
        (N as u64, N as u64, 0, 0),
        "{au:?}"
    );
    assert!(ok);
    announce(&format!(
        "nightly: {kills} of 10 runs killed; the lake ends as the uninterrupted one"
    ));
}
