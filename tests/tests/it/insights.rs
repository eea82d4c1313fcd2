//! insights: the Drain-style template miner (grouping accuracy on the LogHub 2k sets and on
//! generated logs whose shapes are known), its SQL functions in `loglake query`, the nightly
//! `log_templates` table across two nights, and `loglake report` rendered in headless Chromium
//! with its numbers checked against SQL on the same lake.
//!
//! The lakes here are local folders (the report and the miner read the lake through the same
//! object-store layer as S3; the archiver's S3 paths are covered by the other suites).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::NaiveDate;
use loglake_archiver::fixture::{FixtureOptions, generated_rows, write_container_table};
use loglake_insights::accuracy::{drain_accuracy, grouping_accuracy, read_labelled};
use loglake_insights::{Drain, DrainConfig, template_id};
use loglake_tests::loglake_bin;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Grouping accuracy of the default miner on each LogHub 2k set (tests/data/loghub, with its
/// license). The floors are the values measured when the miner was written (BENCHMARKS.md,
/// "Template mining"), rounded down to two decimals: a change that makes the miner worse on any
/// set fails here.
#[test]
fn loghub_grouping_accuracy_is_at_least_the_measured_floor() {
    let floors: &[(&str, f64)] = &[
        ("Android", 0.90),
        ("Apache", 1.00),
        ("BGL", 0.97),
        ("HDFS", 0.99),
        ("HPC", 0.90),
        ("Hadoop", 0.96),
        ("HealthApp", 0.98),
        ("Linux", 0.69),
        ("Mac", 0.69),
        ("OpenSSH", 0.78),
        ("OpenStack", 0.34),
        ("Proxifier", 0.02),
        ("Spark", 0.92),
        ("Thunderbird", 0.95),
        ("Windows", 0.57),
        ("Zookeeper", 0.96),
    ];
    let mut sum = 0.0;
    let mut report = String::new();
    for (name, floor) in floors {
        let lines = read_labelled(&data_dir().join(format!("loghub/{name}_2k.tsv")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines.len(), 2000, "{name}");
        let acc = drain_accuracy(&lines, &DrainConfig::default());
        report.push_str(&format!("{name} {acc:.4}\n"));
        assert!(
            acc >= *floor,
            "{name}: accuracy {acc:.4} below the floor {floor}\n{report}"
        );
        sum += acc;
    }
    let avg = sum / floors.len() as f64;
    eprintln!("{report}average {avg:.4}");
    assert!(avg >= 0.79, "average accuracy {avg:.4}\n{report}");
}

/// `n` log messages of seven known shapes, each with the name of its shape: the miner's test
/// set where the right grouping is known. (The table generator, `loglake_archiver::fixture`,
/// writes Fluent Bit records whose plain-text lines are random word sequences, which have no
/// "right" grouping; this list keeps the message shapes of the query generator it replaced.)
/// The shape is the message's constant words plus, for the JSON line, its `"level"`.
fn shaped_messages(n: usize, seed: u64) -> Vec<(String, String)> {
    const PATHS: [&str; 6] = [
        "/api/v1/orders",
        "/api/v1/pay",
        "/healthz",
        "/api/v2/search",
        "/login",
        "/metrics",
    ];
    let mut rng = loglake_schemas::r#gen::Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for row in 0..n as u64 {
        let r = rng.next_u64();
        let level = match r % 1000 {
            0..=9 => "ERROR",
            10..=49 => "WARN",
            50..=199 => "DEBUG",
            _ => "INFO",
        };
        let path = PATHS[(r % 6) as usize];
        let (shape, msg) = match (level, r % 7) {
            ("ERROR", 0) => (
                "oom".to_string(),
                format!(
                    "OOMKilled: container {} exceeded memory limit {} Mi",
                    ["app", "sidecar", "envoy"][(r >> 8) as usize % 3],
                    256 << (r % 3)
                ),
            ),
            ("ERROR", 1 | 2) => (
                "upstream_timeout".to_string(),
                format!(
                    "request {} failed: upstream timeout after {}ms host=10.{}.{}.{}:8080",
                    row.wrapping_mul(0x5851_F42D_4C95_7F2D) >> 32,
                    100 + r % 900,
                    r % 250,
                    (r >> 8) % 250,
                    (r >> 16) % 250
                ),
            ),
            ("ERROR", _) => (
                "disk_quota".to_string(),
                format!(
                    "error writing /var/lib/app/data/{}.db: disk quota exceeded",
                    r % 100
                ),
            ),
            ("WARN", _) => (
                "slow_query".to_string(),
                format!(
                    "slow query took {}ms rows={} table=orders_{}",
                    500 + r % 5000,
                    r % 10_000,
                    r % 16
                ),
            ),
            (_, 0 | 1) => {
                let lower = level.to_ascii_lowercase();
                (
                    format!("json_request_done_{lower}"),
                    format!(
                        "{{\"level\":\"{lower}\",\"msg\":\"request done\",\"path\":\"{path}\",\"status\":{},\"latency_ms\":{},\"user_id\":{}}}",
                        [200, 200, 200, 201, 404, 500][((r >> 4) % 6) as usize],
                        r % 2000,
                        (r >> 20) % 100_000
                    ),
                )
            }
            _ => (
                "get".to_string(),
                format!(
                    "GET {path} 200 {}ms user={} req_id={:016x}",
                    r % 300,
                    (r >> 12) % 50_000,
                    rng.next_u64()
                ),
            ),
        };
        out.push((shape, msg));
    }
    out
}

#[test]
fn known_shapes_are_mined_into_exactly_their_groups() {
    let mut truth = Vec::new();
    let mut predicted = Vec::new();
    let mut d = Drain::default();
    for (shape, msg) in shaped_messages(50_000, 7) {
        predicted.push(d.add(&msg));
        truth.push(shape);
    }
    assert_eq!(truth.len(), 50_000);
    let shapes: std::collections::BTreeSet<&String> = truth.iter().collect();
    assert_eq!(shapes.len(), 7, "{shapes:?}");
    let texts: Vec<String> = d.clusters().iter().map(|c| c.template()).collect();
    let predicted: Vec<&str> = predicted
        .iter()
        .map(|c| texts[*c as usize].as_str())
        .collect();
    let acc = grouping_accuracy(&truth, &predicted);
    assert_eq!(acc, 1.0, "templates: {:#?}", d.templates());
    assert_eq!(d.templates().len(), 7);
}

// ------------------------------------------------------------------------------------------------
// lakes for the SQL, nightly and report tests
// ------------------------------------------------------------------------------------------------

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// Append rows (service, level, message, hour) of `d` to a Delta table partitioned by dt.
async fn write_logs(table: &Path, d: NaiveDate, rows: &[(&str, &str, String, i32)]) {
    std::fs::create_dir_all(table).expect("mkdir");
    let url = url::Url::from_directory_path(table).expect("url");
    write_logs_at(url, HashMap::new(), d, rows).await;
}

/// [`write_logs`] to any table URL (S3 with `storage`).
async fn write_logs_at(
    url: url::Url,
    storage: HashMap<String, String>,
    d: NaiveDate,
    rows: &[(&str, &str, String, i32)],
) {
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", ts_type, false),
        Field::new("service", DataType::Utf8, true),
        Field::new("level", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
    ]));
    let base = i64::from(days_since_epoch(d)) * 86_400_000_000;
    let ts: Vec<i64> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| base + i64::from(r.3) * 3_600_000_000 + i as i64 * 1000)
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(vec![days_since_epoch(d); rows.len()])),
        Arc::new(Int32Array::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema, cols).expect("batch");
    loglake_lake::register_object_stores();
    let t = deltalake::DeltaTable::try_from_url_with_storage_options(url, storage)
        .await
        .expect("open");
    t.write(vec![batch])
        .with_partition_columns(["dt"])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .expect("write");
}

/// A night's lines: `logins` login lines and `disk` disk lines in service auth, `gets` GET lines
/// in service web, plus `extra` lines of a shape only some nights have (service web).
fn night(
    seed: u64,
    logins: usize,
    disk: usize,
    gets: usize,
    extra: usize,
) -> Vec<(&'static str, &'static str, String, i32)> {
    let mut v = Vec::new();
    for i in 0..logins {
        v.push((
            "auth",
            "INFO",
            format!(
                "user {} logged in from 10.0.{}.{}",
                seed * 1000 + i as u64,
                i % 7,
                i % 200
            ),
            (i % 24) as i32,
        ));
    }
    for i in 0..disk {
        v.push((
            "auth",
            "ERROR",
            format!(
                "disk quota exceeded on /var/lib/data/{}.db",
                i + seed as usize
            ),
            (i % 24) as i32,
        ));
    }
    for i in 0..gets {
        v.push((
            "web",
            "INFO",
            format!(
                "GET /api/v1/items/{} 200 {}ms",
                i * 3 + seed as usize,
                i % 90
            ),
            (i % 24) as i32,
        ));
    }
    for i in 0..extra {
        v.push((
            "web",
            "WARN",
            format!("cache evicted {} keys after {}s", i * 11 + 5, i + 1),
            (i % 24) as i32,
        ));
    }
    v
}

/// Rows of `SELECT … FROM log_templates WHERE dt = d` as (service, template) -> (id, count,
/// first_seen, new_today).
async fn templates_of(
    lake: &Path,
    d: NaiveDate,
) -> BTreeMap<(String, String), (String, i64, NaiveDate, bool)> {
    let ctx = datafusion::prelude::SessionContext::new();
    let url = url::Url::from_directory_path(lake.join("log_templates")).expect("url");
    let t = deltalake::DeltaTable::try_from_url(url)
        .await
        .expect("open log_templates");
    ctx.register_table("t", t.table_provider().await.expect("provider"))
        .expect("register");
    let batches = ctx
        .sql(&format!(
            "SELECT service, template, template_id, count, CAST(first_seen AS VARCHAR), new_today FROM t WHERE dt = DATE '{d}'"
        ))
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let mut out = BTreeMap::new();
    for b in batches {
        let s = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8).expect("cast");
        let (svc, tpl, id, first) = (s(0), s(1), s(2), s(4));
        let (svc, tpl, id, first) = (
            svc.as_any().downcast_ref::<StringArray>().expect("s"),
            tpl.as_any().downcast_ref::<StringArray>().expect("s"),
            id.as_any().downcast_ref::<StringArray>().expect("s"),
            first.as_any().downcast_ref::<StringArray>().expect("s"),
        );
        let n = b
            .column(3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count");
        let new = b
            .column(5)
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .expect("new");
        for i in 0..b.num_rows() {
            out.insert(
                (svc.value(i).to_string(), tpl.value(i).to_string()),
                (
                    id.value(i).to_string(),
                    n.value(i),
                    day(first.value(i)),
                    new.value(i),
                ),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_table_keeps_ids_across_two_nights_and_flags_only_new_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    let logs = lake.join("container_logs");
    let (d1, d2) = (day("2024-05-01"), day("2024-05-02"));
    write_logs(&logs, d1, &night(1, 300, 40, 200, 0)).await;
    write_logs(&logs, d2, &night(2, 250, 10, 120, 30)).await;
    let lake_s = lake.to_str().expect("utf8");
    let cfg = DrainConfig::default();

    let m1 = loglake_insights::mine_templates_for_day(lake_s, None, d1, &cfg)
        .await
        .expect("night 1");
    assert_eq!(
        (m1.lines, m1.templates, m1.new_templates, m1.services),
        (540, 3, 3, 2)
    );
    let n1 = templates_of(&lake, d1).await;
    let login = (
        "auth".to_string(),
        "user <*> logged in from <*>".to_string(),
    );
    let diskq = ("auth".to_string(), "disk quota exceeded on <*>".to_string());
    let get = ("web".to_string(), "GET <*> <*> <*>".to_string());
    assert_eq!(
        n1.keys().cloned().collect::<Vec<_>>(),
        vec![diskq.clone(), login.clone(), get.clone()]
    );
    assert_eq!(n1[&login].1, 300);
    assert_eq!(n1[&diskq].1, 40);
    assert_eq!(n1[&get].1, 200);
    assert!(n1.values().all(|v| v.2 == d1 && v.3), "{n1:?}");
    assert_eq!(n1[&login].0, loglake_insights::template_id(&login.1));

    // night 2: the known templates keep their ids and are not new; the cache line is new
    let m2 = loglake_insights::mine_templates_for_day(lake_s, None, d2, &cfg)
        .await
        .expect("night 2");
    assert_eq!((m2.lines, m2.templates, m2.new_templates), (410, 4, 1));
    let n2 = templates_of(&lake, d2).await;
    let cache = (
        "web".to_string(),
        "cache evicted <*> keys after <*>".to_string(),
    );
    assert_eq!(n2.len(), 4, "{n2:?}");
    for k in [&login, &diskq, &get] {
        assert_eq!(n2[k].0, n1[k].0, "{k:?} changed id");
        assert_eq!((n2[k].2, n2[k].3), (d1, false), "{k:?}");
    }
    assert_eq!((n2[&login].1, n2[&diskq].1, n2[&get].1), (250, 10, 120));
    assert_eq!((n2[&cache].1, n2[&cache].2, n2[&cache].3), (30, d2, true));

    // re-running night 2 replaces its partition: the same rows, nothing doubled; night 1 intact
    let again = loglake_insights::mine_templates_for_day(lake_s, None, d2, &cfg)
        .await
        .expect("rerun");
    assert_eq!(
        (again.lines, again.templates, again.new_templates),
        (410, 4, 1)
    );
    assert_eq!(templates_of(&lake, d2).await, n2);
    assert_eq!(templates_of(&lake, d1).await, n1);
}

fn loglake(args: &[&str]) -> std::process::Output {
    let out = Command::new(loglake_bin())
        .args(args)
        .env("LOGLAKE_LOG", "warn")
        .output()
        .expect("run loglake");
    assert!(
        out.status.success(),
        "loglake {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `loglake query --format csv` rows (header dropped).
fn query_csv(lake: &str, sql: &str) -> Vec<Vec<String>> {
    let out = loglake(&["query", "--lake", lake, "--format", "csv", "-c", sql]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// Generated container logs in `<lake>/container_logs`, written as `loglake archive` writes the
/// shipped `containers` table (`loglake_archiver::fixture`): one namespace (6 apps), one record
/// a second from 2024-05-01T00:00:00Z, two commits.
fn generated_options(rows: u64) -> FixtureOptions {
    FixtureOptions {
        seed: 11,
        namespaces: 1,
        start_unix_secs: 1_714_521_600,
        records_per_second: 1,
        commits: 2,
        ..FixtureOptions::new(rows).expect("fixture options")
    }
}

async fn generated_lake(lake: &Path, rows: u64) {
    let t = lake.join("container_logs");
    let report = write_container_table(t.to_str().expect("utf8"), &generated_options(rows))
        .await
        .expect("generate");
    assert_eq!(report.rows, rows);
}

/// Templates of the generated messages mined in Kafka order (the order of
/// `ORDER BY kafka_offset, kafka_partition`), per app and in all: computed without the engine.
fn mined_in_kafka_order(rows: u64) -> (BTreeMap<String, (u64, usize)>, usize, Vec<String>) {
    let batch = generated_rows(&generated_options(rows)).expect("generated rows");
    let col = |name: &str| {
        arrow::compute::cast(batch.column_by_name(name).expect("column"), &DataType::Utf8)
            .expect("utf8")
    };
    let (apps, messages) = (col("app"), col("message"));
    let apps = apps.as_any().downcast_ref::<StringArray>().expect("utf8");
    let messages = messages
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    let mut all = Drain::default();
    let mut per_app: BTreeMap<String, Drain> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..batch.num_rows() {
        let (app, msg) = (apps.value(i).to_string(), messages.value(i));
        ids.push(all.add(msg));
        per_app.entry(app.clone()).or_default().add(msg);
        *counts.entry(app).or_default() += 1;
    }
    let by_app = per_app
        .iter()
        .map(|(app, d)| (app.clone(), (counts[app], d.templates().len())))
        .collect();
    let texts: Vec<String> = all.clusters().iter().map(|c| c.template()).collect();
    let ids = ids
        .iter()
        .map(|c| template_id(&texts[*c as usize]))
        .collect();
    (by_app, all.templates().len(), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_templates_and_window_functions_in_loglake_query() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    generated_lake(&lake, 6000).await;
    let lake_s = lake.to_str().expect("utf8");
    let order = "ORDER BY kafka_offset, kafka_partition";
    // log_templates mines its query's rows in the order they come: DataFusion drops the ORDER BY
    // of a subquery unless it has a LIMIT
    let sorted = format!("{order} LIMIT 6000");
    let (by_app, templates, ids) = mined_in_kafka_order(6000);
    assert_eq!(by_app.len(), 6, "{by_app:?}");
    // per app: the rows and templates of mining each app's messages in Kafka order
    let mined = query_csv(
        lake_s,
        &format!(
            "SELECT app, sum(count) AS n, count(*) AS templates FROM log_templates('SELECT app, message FROM container_logs {sorted}', 'by=app') GROUP BY app ORDER BY app"
        ),
    );
    let expected: Vec<Vec<String>> = by_app
        .iter()
        .map(|(app, (n, t))| vec![app.clone(), n.to_string(), t.to_string()])
        .collect();
    assert_eq!(mined, expected);
    // the whole table
    let all = query_csv(
        lake_s,
        &format!(
            "SELECT count(*), sum(count) FROM log_templates('SELECT message FROM container_logs {sorted}')"
        ),
    );
    assert_eq!(all, vec![vec![templates.to_string(), "6000".to_string()]]);
    // the window function gives each row the id of its template in the whole-table mining
    let window = query_csv(
        lake_s,
        &format!(
            "SELECT log_template_id(message) OVER ({order}) AS id FROM container_logs {order}"
        ),
    );
    let window: Vec<String> = window.into_iter().map(|r| r.join(",")).collect();
    assert_eq!(window, ids);
    let joined = query_csv(
        lake_s,
        &format!(
            "SELECT count(*) FROM (SELECT log_template_id(message) OVER ({order}) AS id FROM container_logs) r \
             JOIN log_templates('SELECT message FROM container_logs {sorted}') t ON r.id = t.template_id"
        ),
    );
    assert_eq!(joined, vec![vec!["6000".to_string()]]);
}

// ------------------------------------------------------------------------------------------------
// the report in headless Chromium
// ------------------------------------------------------------------------------------------------

fn chromium() -> PathBuf {
    let p = ["chromium", "chromium-browser"].iter().find_map(|b| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(b))
                .find(|p| p.exists())
        })
    });
    p.unwrap_or_else(|| panic!("chromium not found: run scripts/install-test-deps.sh"))
}

fn chromium_cmd(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Every element carrying `data-k="KEY"`, as its `data-*` attributes.
fn elements(dom: &str, key: &str) -> Vec<HashMap<String, String>> {
    let needle = format!("data-k=\"{key}\"");
    let mut out = Vec::new();
    for (i, _) in dom.match_indices(&needle) {
        let start = dom[..i].rfind('<').expect("tag start");
        let end = i + dom[i..].find('>').expect("tag end");
        let tag = &dom[start..end];
        let mut attrs = HashMap::new();
        let mut rest = tag;
        while let Some(p) = rest.find("data-") {
            let r = &rest[p + 5..];
            let Some(eq) = r.find("=\"") else { break };
            let name = r[..eq].to_string();
            let v = &r[eq + 2..];
            let close = v.find('"').expect("attr end");
            attrs.insert(
                name,
                v[..close].replace("&amp;", "&").replace("&quot;", "\""),
            );
            rest = &v[close..];
        }
        out.push(attrs);
    }
    out
}

/// A dead-letter table with `n` records of `d` (the archiver's dead-letter columns that the
/// report reads).
async fn write_dead_letters(table: &Path, d: NaiveDate, n: usize) {
    std::fs::create_dir_all(table).expect("mkdir");
    let schema = Arc::new(Schema::new(vec![
        Field::new("raw", DataType::Binary, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("dt", DataType::Date32, false),
    ]));
    let errors: Vec<String> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                format!("invalid UTF-8 at byte {}", i * 7)
            } else {
                format!(
                    "JSON: EOF while parsing an object at line 1 column {}",
                    40 + i
                )
            }
        })
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from(vec![Some(&b"{"[..]); n])),
        Arc::new(StringArray::from(errors)),
        Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
        Arc::new(Date32Array::from(vec![days_since_epoch(d); n])),
    ];
    let batch = RecordBatch::try_new(schema, cols).expect("batch");
    let url = url::Url::from_directory_path(table).expect("url");
    let t = deltalake::DeltaTable::try_from_url(url)
        .await
        .expect("open");
    t.write(vec![batch])
        .with_partition_columns(["dt"])
        .await
        .expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_renders_in_headless_chromium_with_the_numbers_sql_gives() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    // 2024-05-01 00:00 to 05:33, one record a second
    generated_lake(&lake, 20_000).await;
    write_dead_letters(&lake.join("dead_letters"), day("2024-05-01"), 9).await;
    // container_logs is marked complete for the day, as loglake nightly writes it
    let marker = lake.join("container_logs/_loglake/complete/dt=2024-05-01");
    std::fs::create_dir_all(&marker).expect("mkdir");
    std::fs::write(
        marker.join("manifest.json"),
        r#"{"table":"container_logs","date":"2024-05-01","watermark":"2024-05-02T00:10:00Z","late_after_secs":600,"rows":20000,"table_version":2,"run_id":"t","completed_at":"2024-05-02T01:00:00Z"}"#,
    )
    .expect("manifest");
    let lake_s = lake.to_str().expect("utf8");
    // a few Kubernetes Events of the day, counted into k8s_health
    let events: Vec<String> = (0..5)
        .map(|i| {
            let (reason, msg, pod) = if i < 3 {
                (
                    "BackOff",
                    "Back-off restarting failed container cart",
                    "cart-7d9f8c6b5-abcde",
                )
            } else {
                (
                    "Unhealthy",
                    "Liveness probe failed: timeout",
                    "web-5c8d7f9b4-x2k9p",
                )
            };
            event_json(
                (&format!("r{i}"), "shop", "Pod", pod),
                "node-1",
                reason,
                msg,
                1,
                &format!("2024-05-01T0{i}:00:00Z"),
            )
            .to_string()
        })
        .collect();
    let ev_file = dir.path().join("events.ndjson");
    std::fs::write(&ev_file, events.join("\n")).expect("events");
    loglake(&[
        "insights",
        "k8s-events",
        "--lake",
        lake_s,
        ev_file.to_str().expect("utf8"),
    ]);
    loglake(&[
        "insights",
        "k8s-health",
        "--lake",
        lake_s,
        "--date",
        "2024-05-01",
    ]);
    // one day only: no baseline, no anomaly
    loglake(&[
        "insights",
        "anomalies",
        "--lake",
        lake_s,
        "--date",
        "2024-05-01",
    ]);
    let out_dir = dir.path().join("report");

    let out = loglake(&[
        "report",
        "--lake",
        lake_s,
        "--date",
        "2024-05-01",
        "--out",
        out_dir.to_str().expect("utf8"),
    ]);
    let html = out_dir.join("report-2024-05-01.html");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        html.display().to_string()
    );
    let page = std::fs::read_to_string(&html).expect("html");
    for banned in ["http://", "https://", "<link", "src=\""] {
        let hits: Vec<&str> = page
            .match_indices(banned)
            .map(|(i, _)| &page[i.saturating_sub(40)..(i + 60).min(page.len())])
            .collect();
        // the only URL allowed is the SVG namespace
        assert!(
            hits.iter().all(|h| h.contains("www.w3.org/2000/svg")),
            "the page references something outside itself: {hits:?}"
        );
    }
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("report-2024-05-01.json")).expect("json"),
    )
    .expect("parse");
    assert_eq!(json["rows"], 20_000);

    // render: DOM after the scripts ran, and a screenshot kept as a test artifact
    let profile = dir.path().join("chromium-profile");
    let dom = chromium_cmd(&profile)
        .arg("--dump-dom")
        .arg(url::Url::from_file_path(&html).expect("url").as_str())
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run to its end:\n{stderr}"
    );
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("insights-report-2024-05-01.png");
    let _ = std::fs::remove_file(&shot);
    let s = chromium_cmd(&profile)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,3200")
        .arg("--hide-scrollbars")
        .arg(url::Url::from_file_path(&html).expect("url").as_str())
        .output()
        .expect("run chromium");
    assert!(
        s.status.success(),
        "screenshot: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());

    // the numbers in the DOM are the answers of SQL on the same lake; a row's service is the
    // report's, COALESCE(service, app, container, 'unknown') (Fluent Bit's records carry an app
    // label and no service)
    let card = |k: &str| -> String {
        elements(&dom, k)
            .first()
            .and_then(|e| e.get("v").cloned())
            .unwrap_or_else(|| panic!("card {k}"))
    };
    let totals = query_csv(
        lake_s,
        "SELECT count(*), sum(CASE WHEN upper(level) IN ('ERROR','FATAL','CRITICAL') THEN 1 ELSE 0 END), count(DISTINCT COALESCE(service, app, container, 'unknown')) FROM container_logs WHERE dt = DATE '2024-05-01'",
    );
    assert_eq!(
        vec![card("rows"), card("errors"), card("services")],
        totals[0]
    );
    let services = query_csv(
        lake_s,
        "SELECT COALESCE(service, app, container, 'unknown'), count(*), sum(CASE WHEN upper(level) IN ('ERROR','FATAL','CRITICAL') THEN 1 ELSE 0 END) FROM container_logs WHERE dt = DATE '2024-05-01' GROUP BY 1 ORDER BY 1",
    );
    let mut dom_services: Vec<Vec<String>> = elements(&dom, "service")
        .into_iter()
        .map(|e| vec![e["service"].clone(), e["rows"].clone(), e["errors"].clone()])
        .collect();
    dom_services.sort();
    assert_eq!(dom_services, services);
    let cells = query_csv(
        lake_s,
        "SELECT COALESCE(service, app, container, 'unknown'), hour, count(*), sum(CASE WHEN upper(level) IN ('ERROR','FATAL','CRITICAL') THEN 1 ELSE 0 END) FROM container_logs WHERE dt = DATE '2024-05-01' GROUP BY 1, 2 ORDER BY 1, 2",
    );
    let mut dom_cells: Vec<Vec<String>> = elements(&dom, "cell")
        .into_iter()
        .map(|e| {
            vec![
                e["service"].clone(),
                e["hour"].clone(),
                e["rows"].clone(),
                e["errors"].clone(),
            ]
        })
        .collect();
    dom_cells.sort_by_key(|c| (c[0].clone(), c[1].parse::<i32>().unwrap_or(0)));
    assert_eq!(dom_cells, cells);
    let hours = query_csv(
        lake_s,
        "SELECT hour, count(*) FROM container_logs WHERE dt = DATE '2024-05-01' GROUP BY 1 ORDER BY 1",
    );
    let dom_hours: Vec<Vec<String>> = elements(&dom, "hour_total")
        .into_iter()
        .map(|e| vec![e["hour"].clone(), e["v"].clone()])
        .collect();
    assert_eq!(dom_hours, hours);
    // templates: the page's top templates are log_templates' per service, same ids and counts,
    // mined in the same order (the report's ORDER BY ts; a subquery keeps its sort only with a
    // LIMIT)
    let top = query_csv(
        lake_s,
        "SELECT service, template_id, count FROM log_templates('SELECT COALESCE(service, app, container, ''unknown'') AS service, message FROM container_logs WHERE dt = DATE ''2024-05-01'' ORDER BY ts LIMIT 20000', 'by=service') ORDER BY count DESC, service, template LIMIT 20",
    );
    let dom_top: Vec<Vec<String>> = elements(&dom, "template")
        .into_iter()
        .map(|e| {
            vec![
                e["service"].clone(),
                e["template-id"].clone(),
                e["count"].clone(),
            ]
        })
        .collect();
    assert_eq!(dom_top.len(), 20);
    assert_eq!(dom_top, top);
    // dead letters and the lake's state
    let dl = query_csv(
        lake_s,
        "SELECT count(*) FROM dead_letters WHERE dt = DATE '2024-05-01'",
    );
    assert_eq!(card("dead_letters"), dl[0][0]);
    assert_eq!(dl[0][0], "9");
    let errs: Vec<String> = elements(&dom, "dead_letter_error")
        .into_iter()
        .map(|e| e["count"].clone())
        .collect();
    assert_eq!(errs, ["6", "3"]);
    let tables: BTreeMap<String, (String, String)> = elements(&dom, "table")
        .into_iter()
        .map(|e| {
            (
                e["table"].clone(),
                (e["complete"].clone(), e["partitions"].clone()),
            )
        })
        .collect();
    // one partition per hour: 20,000 records at one a second fill hours 00 to 05
    assert_eq!(
        tables["container_logs"],
        ("true".to_string(), 20_000u64.div_ceil(3600).to_string())
    );
    assert_eq!(
        tables["dead_letters"],
        ("false".to_string(), "1".to_string())
    );
    // the insights tables are tables of the lake too (none marked complete)
    assert_eq!(tables.len(), 5, "{tables:?}");
    assert_eq!(card("complete_tables"), "1/5");
    // health: the DOM's rows are k8s_health's sums per workload
    let health = query_csv(
        lake_s,
        "SELECT namespace, workload, sum(oom_kills), sum(crashloop_backoffs), sum(liveness_failures), sum(readiness_failures), sum(evictions), sum(failed_scheduling), sum(image_pull_failures), sum(node_not_ready) \
         FROM k8s_health WHERE dt = DATE '2024-05-01' GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert_eq!(health.len(), 2);
    let mut dom_health: Vec<Vec<String>> = elements(&dom, "health")
        .into_iter()
        .map(|e| {
            let mut v = vec![e["namespace"].clone(), e["workload"].clone()];
            v.extend(e["counts"].split(' ').map(str::to_string));
            v
        })
        .collect();
    dom_health.sort();
    assert_eq!(dom_health, health);
    assert_eq!(health[0][..4], ["shop", "cart", "0", "3"]);
    assert!(dom.contains("every service-hour is within its usual range"));
}

// ------------------------------------------------------------------------------------------------
// Kubernetes Events and k8s_health
// ------------------------------------------------------------------------------------------------

/// Fluent Bit's expected output (`[ts, record]` documents back to back).
fn fluent_bit_out(path: &Path) -> Vec<(f64, serde_json::Value)> {
    let text = std::fs::read_to_string(path).expect("read .out");
    serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .map(|v| {
            let v = v.expect("json");
            let ts = v[0].as_f64().expect("ts");
            (ts, v[1].clone())
        })
        .collect()
}

#[test]
fn k8s_events_corpus_decodes_to_fluent_bits_records() {
    use loglake_insights::k8s::decode_events;
    let dir = data_dir().join("k8s_events");
    let mut total = 0;
    for name in [
        "eventlist_v1_with_creationTimestamp",
        "eventlist_v1_with_lastTimestamp",
        "watch_v1_with_lastTimestamp",
    ] {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).expect("read"))
                .expect("json");
        let events = decode_events(&doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = fluent_bit_out(&dir.join(format!("{name}.out")));
        assert_eq!(events.len(), expected.len(), "{name}");
        for (e, (ts, rec)) in events.iter().zip(&expected) {
            let s = |p: &str| {
                rec.pointer(p)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            assert_eq!(e.ts.timestamp() as f64, *ts, "{name}: time");
            assert_eq!(e.event_uid, s("/metadata/uid").expect("uid"), "{name}");
            assert_eq!(e.namespace, s("/metadata/namespace"), "{name}");
            assert_eq!(e.object_kind, s("/involvedObject/kind"), "{name}");
            assert_eq!(e.object_name, s("/involvedObject/name"), "{name}");
            assert_eq!(e.reason, s("/reason"), "{name}");
            assert_eq!(e.message, s("/message"), "{name}");
            assert_eq!(e.event_type, s("/type"), "{name}");
            assert_eq!(e.count, rec["count"].as_i64().unwrap_or(1), "{name}");
            assert_eq!(e.node, s("/source/host"), "{name}");
            // Fluent Bit's own record decodes to the same event
            let again = decode_events(&serde_json::json!([ts, rec])).expect("record");
            assert_eq!(again, vec![e.clone()], "{name}");
            total += 1;
        }
    }
    assert_eq!(total, 3);
    // values checked by hand against the files
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("watch_v1_with_lastTimestamp.json")).expect("read"),
    )
    .expect("json");
    let e = &decode_events(&doc).expect("watch")[0];
    assert_eq!(e.ts.to_rfc3339(), "2024-07-31T18:47:15+00:00");
    assert_eq!(
        (e.reason.as_deref(), e.count, e.node.as_deref()),
        (Some("FailedMount"), 16, Some("minikube"))
    );
    assert_eq!(
        loglake_insights::k8s::workload_of(
            e.object_kind.as_deref(),
            e.object_name.as_deref().unwrap_or("")
        ),
        "fluent-bit"
    );
}

/// One generated Event (core/v1, as `kubectl get events -o json` and the watch API give it).
fn event_json(
    (uid, ns, kind, name): (&str, &str, &str, &str),
    node: &str,
    reason: &str,
    message: &str,
    count: i64,
    ts: &str,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": {"name": format!("{name}.{uid}"), "namespace": ns, "uid": uid, "creationTimestamp": ts},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name},
        "reason": reason, "message": message,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": ts, "lastTimestamp": ts, "count": count,
        "type": if reason == "Started" || reason == "Pulled" || reason == "Scheduled" { "Normal" } else { "Warning" }
    })
}

#[test]
fn a_day_of_generated_pod_events_lands_in_k8s_health_with_exactly_their_counts() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().expect("utf8").to_string();
    // (reason, message, namespace, pod, node, hour, how many distinct events)
    let plan: &[(&str, &str, &str, &str, &str, u32, usize)] = &[
        (
            "OOMKilling",
            "Memory cgroup out of memory: Killed process 4242 (java)",
            "shop",
            "cart-7d9f8c6b5-abcde",
            "node-1",
            3,
            3,
        ),
        (
            "BackOff",
            "Back-off restarting failed container cart in pod cart-7d9f8c6b5-abcde",
            "shop",
            "cart-7d9f8c6b5-abcde",
            "node-1",
            3,
            5,
        ),
        (
            "Unhealthy",
            "Liveness probe failed: HTTP probe failed with statuscode: 500",
            "shop",
            "web-5c8d7f9b4-x2k9p",
            "node-2",
            10,
            4,
        ),
        (
            "Unhealthy",
            "Readiness probe failed: dial tcp 10.0.0.7:8080: connect: connection refused",
            "shop",
            "web-5c8d7f9b4-x2k9p",
            "node-2",
            10,
            6,
        ),
        (
            "Evicted",
            "The node was low on resource: memory.",
            "batch",
            "report-28461230-q7w2z",
            "node-3",
            22,
            2,
        ),
        (
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient cpu.",
            "batch",
            "report-28461230-q7w2z",
            "",
            22,
            7,
        ),
        (
            "Failed",
            "Failed to pull image \"registry.local/api:9.9\": not found",
            "shop",
            "api-6b7c9d8f5-mn4op",
            "node-2",
            14,
            3,
        ),
        (
            "NodeNotReady",
            "Node node-3 status is now: NodeNotReady",
            "default",
            "node-3",
            "node-3",
            22,
            1,
        ),
        // noise: not health signals
        (
            "Started",
            "Started container cart",
            "shop",
            "cart-7d9f8c6b5-abcde",
            "node-1",
            3,
            10,
        ),
        (
            "Pulled",
            "Container image \"x\" already present on machine",
            "shop",
            "web-5c8d7f9b4-x2k9p",
            "node-2",
            10,
            10,
        ),
    ];
    let mut lines = Vec::new();
    let mut n = 0;
    for (reason, msg, ns, pod, node, hour, count) in plan {
        for i in 0..*count {
            n += 1;
            let kind = if *reason == "NodeNotReady" {
                "Node"
            } else {
                "Pod"
            };
            let ns = if kind == "Node" { "" } else { ns };
            let ts = format!("2024-05-01T{hour:02}:{:02}:00Z", i % 60);
            let e = event_json(
                (&format!("uid-{n}"), ns, kind, pod),
                node,
                reason,
                msg,
                1,
                &ts,
            );
            // every event is also seen again (a re-polled list): it must not count twice
            lines.push(e.to_string());
            lines.push(serde_json::json!({"type": "MODIFIED", "object": e}).to_string());
        }
    }
    // one aggregated event: seen at count 2 then count 5 -> 1 + 3 crash-loop back-offs, hour 4
    for c in [2, 5] {
        let e = event_json(
            ("uid-agg", "shop", "Pod", "cart-7d9f8c6b5-abcde"),
            "node-1",
            "BackOff",
            "Back-off restarting failed container cart in pod cart-7d9f8c6b5-abcde",
            c,
            "2024-05-01T04:30:00Z",
        );
        lines.push(e.to_string());
    }
    // an event of another day does not count
    lines.push(
        event_json(
            ("uid-other-day", "shop", "Pod", "cart-7d9f8c6b5-abcde"),
            "node-1",
            "OOMKilling",
            "x",
            1,
            "2024-05-02T01:00:00Z",
        )
        .to_string(),
    );
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let out = loglake(&[
        "insights",
        "k8s-events",
        "--lake",
        &lake_s,
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{{\"events\":{}}}", lines.len())
    );
    let out = loglake(&[
        "insights",
        "k8s-health",
        "--lake",
        &lake_s,
        "--date",
        "2024-05-01",
    ]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metrics json");
    assert_eq!(m["totals"]["oom_kills"], 3);
    assert_eq!(m["totals"]["crashloop_backoffs"], 5 + 4);
    assert_eq!(m["totals"]["liveness_failures"], 4);
    assert_eq!(m["totals"]["readiness_failures"], 6);
    assert_eq!(m["totals"]["evictions"], 2);
    assert_eq!(m["totals"]["failed_scheduling"], 7);
    assert_eq!(m["totals"]["image_pull_failures"], 3);
    assert_eq!(m["totals"]["node_not_ready"], 1);
    // the table, by SQL: one row per hour x namespace x workload x node with exactly those counts
    let rows = query_csv(
        &lake_s,
        "SELECT hour, namespace, workload, node, oom_kills, crashloop_backoffs, liveness_failures, readiness_failures, evictions, failed_scheduling, image_pull_failures, node_not_ready \
         FROM k8s_health WHERE dt = DATE '2024-05-01' ORDER BY hour, namespace, workload, node",
    );
    let expect: Vec<Vec<String>> = [
        "3,shop,cart,node-1,3,5,0,0,0,0,0,0",
        "4,shop,cart,node-1,0,4,0,0,0,0,0,0",
        "10,shop,web,node-2,0,0,4,6,0,0,0,0",
        "14,shop,api,node-2,0,0,0,0,0,0,3,0",
        "22,,node/node-3,node-3,0,0,0,0,0,0,0,1",
        "22,batch,report,,0,0,0,0,0,7,0,0",
        "22,batch,report,node-3,0,0,0,0,2,0,0,0",
    ]
    .iter()
    .map(|r| r.split(',').map(str::to_string).collect())
    .collect();
    assert_eq!(rows, expect);
    // re-running the day replaces its partition
    loglake(&[
        "insights",
        "k8s-health",
        "--lake",
        &lake_s,
        "--date",
        "2024-05-01",
    ]);
    let again = query_csv(
        &lake_s,
        "SELECT count(*), sum(failed_scheduling) FROM k8s_health",
    );
    assert_eq!(again, vec![vec!["7".to_string(), "7".to_string()]]);
}

// ------------------------------------------------------------------------------------------------
// log_anomalies
// ------------------------------------------------------------------------------------------------

/// Append rows (namespace, service, pod, message, hour) of `d` to a Delta table partitioned by
/// dt (level INFO).
async fn write_pod_logs(table: &Path, d: NaiveDate, rows: &[(&str, &str, String, String, i32)]) {
    std::fs::create_dir_all(table).expect("mkdir");
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", ts_type, false),
        Field::new("namespace", DataType::Utf8, true),
        Field::new("service", DataType::Utf8, true),
        Field::new("pod", DataType::Utf8, true),
        Field::new("level", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
    ]));
    let base = i64::from(days_since_epoch(d)) * 86_400_000_000;
    let ts: Vec<i64> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| base + i64::from(r.4) * 3_600_000_000 + (i as i64 % 3_000_000) * 1000)
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec!["INFO"; rows.len()])),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.3.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(vec![days_since_epoch(d); rows.len()])),
        Arc::new(Int32Array::from(
            rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema, cols).expect("batch");
    let url = url::Url::from_directory_path(table).expect("url");
    let t = deltalake::DeltaTable::try_from_url(url)
        .await
        .expect("open");
    t.write(vec![batch])
        .with_partition_columns(["dt"])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_spike_is_found_and_attributed_to_its_pod_and_template() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    let logs = lake.join("container_logs");
    // 8 days of regular traffic (web: ~100 lines an hour over two pods, auth: ~60), and on the
    // last day, hour 14, pod web-b logs 500 lines of a template the other days never had
    for day_i in 1..=8u32 {
        let d = NaiveDate::from_ymd_opt(2024, 5, day_i).expect("date");
        let mut rows = Vec::new();
        for hour in 0..24i32 {
            let web = 100 + ((day_i as i32 * 7 + hour * 3) % 11);
            for i in 0..web {
                let pod = if i % 2 == 0 { "web-a" } else { "web-b" };
                let msg = if i % 3 == 0 {
                    format!("GET /api/items/{i} 200 {}ms", i % 40)
                } else {
                    format!("cache hit for key item-{i}")
                };
                rows.push(("shop", "web", pod.to_string(), msg, hour));
            }
            for i in 0..(60 + (day_i as i32 + hour) % 5) {
                rows.push((
                    "shop",
                    "auth",
                    "auth-a".to_string(),
                    format!("user {i} logged in"),
                    hour,
                ));
            }
            if day_i == 8 && hour == 14 {
                for i in 0..500 {
                    rows.push((
                        "shop",
                        "web",
                        "web-b".to_string(),
                        format!(
                            "payment gateway timeout for order {} after {}ms",
                            9000 + i,
                            3000 + i
                        ),
                        hour,
                    ));
                }
            }
        }
        write_pod_logs(&logs, d, &rows).await;
    }
    let lake_s = lake.to_str().expect("utf8").to_string();
    let out = loglake(&[
        "insights",
        "anomalies",
        "--lake",
        &lake_s,
        "--date",
        "2024-05-08",
    ]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(m["service_hours"], 48);
    let found = m["anomalies"].as_array().expect("anomalies");
    assert_eq!(found.len(), 1, "{found:#?}");
    let a = &found[0];
    assert_eq!(
        (
            a["hour"].as_i64(),
            a["namespace"].as_str(),
            a["service"].as_str()
        ),
        (Some(14), Some("shop"), Some("web"))
    );
    assert_eq!(a["top_pod"], "web-b");
    assert_eq!(
        a["top_template"],
        "payment gateway timeout for order <*> after <*>"
    );
    let share = a["top_template_share"].as_f64().expect("share");
    assert!(share > 0.9, "{share}");
    assert_eq!(a["rows"].as_i64(), Some(100 + (8 * 7 + 14 * 3) % 11 + 500));
    // the drill-down SQL runs and returns exactly the spike hour of that pod
    let drill = a["drill_sql"].as_str().expect("drill sql");
    let n = query_csv(&lake_s, &format!("SELECT count(*) FROM ({drill})"));
    let web_b = (100 + (8 * 7 + 14 * 3) % 11 + 1) / 2 + 500;
    assert_eq!(n, vec![vec![web_b.to_string()]]);
    // the table holds every service-hour of the day, one flagged
    let t = query_csv(
        &lake_s,
        "SELECT count(*), sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) FROM log_anomalies WHERE dt = DATE '2024-05-08'",
    );
    assert_eq!(t, vec![vec!["48".to_string(), "1".to_string()]]);

    // a day without a spike: nothing above the threshold
    let out = loglake(&[
        "insights",
        "anomalies",
        "--lake",
        &lake_s,
        "--date",
        "2024-05-07",
    ]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(m["service_hours"], 48);
    assert_eq!(m["anomalies"].as_array().map(Vec::len), Some(0), "{m}");
    // the lake's first day has no baseline: nothing is flagged although every hour is "new"
    let out = loglake(&[
        "insights",
        "anomalies",
        "--lake",
        &lake_s,
        "--date",
        "2024-05-01",
    ]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(m["anomalies"].as_array().map(Vec::len), Some(0), "{m}");

    // the report of the spike day lists the anomaly with its pod, template and drill-down SQL
    let rep = dir.path().join("report");
    loglake(&[
        "report",
        "--lake",
        &lake_s,
        "--date",
        "2024-05-08",
        "--out",
        rep.to_str().expect("utf8"),
    ]);
    let page = std::fs::read_to_string(rep.join("report-2024-05-08.html")).expect("html");
    let rows = elements(&page, "anomaly");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["hour"], "14");
    assert_eq!(rows[0]["service"], "web");
    assert_eq!(rows[0]["pod"], "web-b");
    assert_eq!(
        rows[0]["template"],
        "payment gateway timeout for order &lt;*&gt; after &lt;*&gt;"
    );
    assert_eq!(rows[0]["rows"], a["rows"].to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_day_runs_every_stage_and_the_report_shows_only_todays_new_templates() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    let logs = lake.join("container_logs");
    let (d1, d2) = (day("2024-05-01"), day("2024-05-02"));
    write_logs(&logs, d1, &night(1, 300, 40, 200, 0)).await;
    write_logs(&logs, d2, &night(2, 250, 10, 120, 30)).await;
    let lake_s = lake.to_str().expect("utf8").to_string();
    let out = dir.path().join("reports");
    let out_s = out.to_str().expect("utf8").to_string();
    for d in ["2024-05-01", "2024-05-02"] {
        let o = loglake(&[
            "insights", "day", "--lake", &lake_s, "--date", d, "--out", &out_s,
        ]);
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert!(m["k8s_health"].is_null(), "no k8s_events table: {m}");
        assert_eq!(m["anomalies"], 0, "{m}");
        let want_new = if d == "2024-05-01" { 3 } else { 1 };
        assert_eq!(m["templates"]["new_templates"], want_new, "{m}");
        assert_eq!(
            m["report"]["new_templates"],
            if d == "2024-05-01" { 0 } else { 1 },
            "{m}"
        );
    }
    // day 2's page: one new template (the cache line), the known ones without the badge
    let page = std::fs::read_to_string(out.join("report-2024-05-02.html")).expect("html");
    let new: Vec<String> = elements(&page, "new_template")
        .into_iter()
        .map(|e| e["template-id"].clone())
        .collect();
    assert_eq!(
        new,
        vec![loglake_insights::template_id(
            "cache evicted <*> keys after <*>"
        )]
    );
    let top = elements(&page, "template");
    assert_eq!(top.len(), 4);
    assert_eq!(page.matches("class=\"new\"").count(), 1);
    let card: Vec<String> = elements(&page, "new_templates")
        .into_iter()
        .map(|e| e["v"].clone())
        .collect();
    assert_eq!(card, ["1"]);
    // day 1's page had no history: nothing called new
    let page1 = std::fs::read_to_string(out.join("report-2024-05-01.html")).expect("html");
    assert!(elements(&page1, "new_templates").is_empty());
    assert_eq!(page1.matches("class=\"new\"").count(), 0);
    // the JSON beside it has the same templates
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report-2024-05-02.json")).expect("json"))
            .expect("parse");
    assert_eq!(
        j["new_templates"][0]["template"],
        "cache evicted <*> keys after <*>"
    );
    assert_eq!(j["new_templates"][0]["count"], 30);
}

/// The same two nights on the S3-compatible server: the insights stages and the report read and
/// write the lake through object storage (Delta commits with put-if-absent, replaceWhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_day_on_an_s3_lake_keeps_ids_and_flags_the_new_template() {
    let lake = loglake_tests::s3().unique_url("insights");
    let storage = loglake_tests::s3().storage_options();
    let table = url::Url::parse(&format!("{lake}/container_logs/")).expect("url");
    let (d1, d2) = (day("2024-05-01"), day("2024-05-02"));
    write_logs_at(
        table.clone(),
        storage.clone(),
        d1,
        &night(1, 300, 40, 200, 0),
    )
    .await;
    write_logs_at(table, storage, d2, &night(2, 250, 10, 120, 30)).await;
    let dir = tempfile::tempdir().expect("tmp");
    let out_s = dir.path().to_str().expect("utf8").to_string();
    let mut news = Vec::new();
    for d in ["2024-05-01", "2024-05-02", "2024-05-02"] {
        let o = loglake_tests::loglake_cmd()
            .args([
                "insights", "day", "--lake", &lake, "--date", d, "--out", &out_s,
            ])
            .output()
            .expect("run loglake");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        news.push((
            m["templates"]["templates"].clone(),
            m["templates"]["new_templates"].clone(),
        ));
    }
    // night 1: 3 templates, all new; night 2 (twice): 4 templates, 1 new; the rerun changes nothing
    assert_eq!(
        news,
        vec![
            (serde_json::json!(3), serde_json::json!(3)),
            (serde_json::json!(4), serde_json::json!(1)),
            (serde_json::json!(4), serde_json::json!(1)),
        ]
    );
    let o = loglake_tests::loglake_cmd()
        .args([
            "query",
            "--lake",
            &lake,
            "--format",
            "csv",
            "-c",
            "SELECT CAST(dt AS VARCHAR), count(*), sum(CASE WHEN new_today THEN 1 ELSE 0 END), count(DISTINCT template_id) \
             FROM log_templates GROUP BY 1 ORDER BY 1",
        ])
        .output()
        .expect("query");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>(),
        ["2024-05-01,3,3,3", "2024-05-02,4,1,4"]
    );
    let page = std::fs::read_to_string(dir.path().join("report-2024-05-02.html")).expect("html");
    assert_eq!(elements(&page, "new_template").len(), 1);
}
