//! `loglake quickstart`: the whole pipeline on embedded defaults, with no service installed.
//!
//! 1. starts an embedded Kafka (librdkafka's mock cluster) and creates three topics;
//! 2. produces real sample logs written by others (`tests/data/corpus`, built into the binary with
//!    their SOURCE.md/LICENSE notes, all Apache-2.0: Fluent Bit's Kubernetes docker json-file
//!    logs plus Elastic's corrupted docker log, Falco's audit events, an nginx access log), each
//!    container line with the kubelet log path as a header;
//! 3. writes the lake's configuration as a user would (`<lake>/_quickstart/lake.toml` and one
//!    table definition per table), then runs `loglake nightly` on it as library calls: a first
//!    pass archives every topic to its end (three tables + dead letters), a second pass, for the
//!    oldest day of the container logs (the samples are years old; a CronJob runs for
//!    yesterday), marks complete days, compacts every closed partition (sorted, bloom filters,
//!    checkpoint), applies retention and vacuums, each stage a row of the run ledger;
//! 4. prints what each stage did and the answers of a few example queries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use loglake_lake::table_url;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::ledger::Status;
use crate::{JobError, NightlyArgs, Summary, nightly};

/// `loglake quickstart`: archive bundled real logs from an embedded Kafka and query them.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// Where to write the lake (recreated on every run).
    #[arg(long, default_value = "quickstart-lake")]
    pub lake: PathBuf,
    /// Folder with the sample logs, laid out as the repository's `tests/data/corpus` (default:
    /// the copy built into the binary).
    #[arg(long)]
    pub samples: Option<PathBuf>,
}

/// The repository's `tests/data/corpus` (1.3 MB, license notes included), so that an installed
/// or containerised binary runs the quickstart without a checkout.
static CORPUS: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../tests/data/corpus");

/// Where the samples come from: a folder, or the copy in the binary.
enum Corpus<'a> {
    Folder(&'a Path),
    BuiltIn,
}

impl Corpus<'_> {
    /// The files under `sub` whose extension is `ext`, sorted by path, with their bytes.
    fn files(&self, sub: &str, ext: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, JobError> {
        match self {
            Corpus::Folder(dir) => files(&dir.join(sub), ext)?
                .into_iter()
                .map(|p| {
                    let bytes = read_file(&p)?;
                    Ok((p, bytes))
                })
                .collect(),
            Corpus::BuiltIn => {
                let dir = CORPUS.get_dir(sub).ok_or_else(|| {
                    JobError::Config(format!("built-in samples: no folder {sub}"))
                })?;
                let mut out = Vec::new();
                let mut stack = vec![dir];
                while let Some(d) = stack.pop() {
                    stack.extend(d.dirs());
                    for f in d.files() {
                        if f.path().extension().is_some_and(|x| x == ext) {
                            out.push((f.path().to_path_buf(), f.contents().to_vec()));
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    fn file(&self, path: &str) -> Result<Vec<u8>, JobError> {
        match self {
            Corpus::Folder(dir) => read_file(&dir.join(path)),
            Corpus::BuiltIn => CORPUS
                .get_file(path)
                .map(|f| f.contents().to_vec())
                .ok_or_else(|| JobError::Config(format!("built-in samples: no file {path}"))),
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, JobError> {
    std::fs::read(path)
        .map_err(|e| JobError::Config(format!("reading sample {}: {e}", path.display())))
}

const MARKER: &str = ".loglake-quickstart";

struct Sample {
    topic: &'static str,
    payload: Vec<u8>,
    path: Option<String>,
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, JobError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| JobError::Config(format!("reading {}: {e}", d.display())))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `<ns>_<pod>_<container>.log` (Fluent Bit's test naming) → a kubelet path
/// `/var/log/containers/<pod>_<ns>_<container>-<id>.log`.
fn kubelet_path(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let mut it = stem.splitn(3, '_');
    let (ns, pod, container) = (it.next()?, it.next()?, it.next()?);
    Some(format!(
        "/var/log/containers/{pod}_{ns}_{container}-{:064x}.log",
        stem.len()
    ))
}

fn load_samples(corpus: &Corpus<'_>) -> Result<Vec<Sample>, JobError> {
    let mut out = Vec::new();
    for (f, bytes) in corpus.files("fluent-bit/tests/runtime/data/kubernetes/log", "log")? {
        let path = kubelet_path(&f);
        for line in lines(&bytes) {
            out.push(Sample {
                topic: "k8s-container-logs",
                payload: line,
                path: path.clone(),
            });
        }
    }
    for line in lines(&corpus.file("beats/docker_corrupted.log")?) {
        out.push(Sample {
            topic: "k8s-container-logs",
            payload: line,
            path: Some(format!(
                "/var/log/containers/shop-web-7d9f_shop_nginx-{:064x}.log",
                7
            )),
        });
    }
    for (_, bytes) in corpus.files("falco-k8s-audit/k8s_audit", "json")? {
        for line in lines(&bytes) {
            out.push(Sample {
                topic: "k8s-audit",
                payload: line,
                path: None,
            });
        }
    }
    for line in lines(&corpus.file("beats/nginx_access_test.log")?) {
        out.push(Sample {
            topic: "ingress-access",
            payload: line,
            path: None,
        });
    }
    Ok(out)
}

fn prepare_lake(lake: &Path) -> Result<(), JobError> {
    if lake.exists() {
        let empty = std::fs::read_dir(lake)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !lake.join(MARKER).exists() {
            return Err(JobError::Config(format!(
                "{} exists and was not made by the quickstart; pass --lake with a new folder",
                lake.display()
            )));
        }
        std::fs::remove_dir_all(lake)
            .map_err(|e| JobError::Config(format!("clearing {}: {e}", lake.display())))?;
    }
    std::fs::create_dir_all(lake)
        .map_err(|e| JobError::Config(format!("creating {}: {e}", lake.display())))?;
    std::fs::write(
        lake.join(MARKER),
        "made by `loglake quickstart`; safe to delete\n",
    )
    .map_err(|e| JobError::Config(format!("writing marker: {e}")))?;
    Ok(())
}

/// The quickstart's topics and tables: (topic, Kafka partitions, table, decoder, sort keys, bloom
/// filter columns), as the shipped definitions (`schemas/tables`) lay them out.
const TABLES: [(&str, i32, &str, &str, &str, &str); 3] = [
    (
        "k8s-container-logs",
        3,
        "container_logs",
        "docker",
        r#""namespace", "pod", "container", "ts""#,
        r#""trace_id", "pod""#,
    ),
    (
        "k8s-audit",
        1,
        "k8s_audit",
        "k8s-audit",
        r#""verb", "object_resource", "ts""#,
        r#""user", "object_name", "audit_id""#,
    ),
    (
        "ingress-access",
        1,
        "access",
        "access",
        r#""path", "ts""#,
        r#""remote_addr""#,
    ),
];

fn kafka_err(context: &str) -> impl Fn(rdkafka::error::KafkaError) -> JobError + '_ {
    move |e| JobError::Internal(format!("embedded Kafka: {context}: {e}"))
}

/// Writes `<lake>/_quickstart/lake.toml` and its table definitions: the configuration a user
/// would write for `loglake archive` and `loglake nightly`. No retention: the samples are years
/// old, and the shipped definitions' 30 days would remove them all.
fn write_config(lake: &Path, brokers: &str) -> Result<PathBuf, JobError> {
    let dir = lake.join("_quickstart");
    let tables = dir.join("tables");
    std::fs::create_dir_all(&tables)
        .map_err(|e| JobError::Config(format!("creating {}: {e}", tables.display())))?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text)
            .map_err(|e| JobError::Config(format!("writing {}: {e}", path.display())))
    };
    for (topic, _, name, decoder, sort_by, bloom) in TABLES {
        // the container logs get the archive-time ETL a platform team starts with: DEBUG noise
        // of kube-system dropped, a `service` derived from the labels, e-mail addresses and
        // tokens masked before they reach storage
        let etl = if name == "container_logs" {
            "filter = \"NOT (level = 'debug' AND namespace = 'kube-system')\"\n\
             redact = [\"email\", \"bearer\", \"jwt\"]\n\n[derive]\n\
             service = \"coalesce(labels['app.kubernetes.io/name'], labels['app'], container)\"\n"
        } else {
            ""
        };
        write(
            &tables.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\ntopics = [\"{topic}\"]\ndecoder = \"{decoder}\"\n\
                 partition_by = [\"dt\", \"hour\"]\nsort_by = [{sort_by}]\n\
                 bloom_filter_columns = [{bloom}]\n{etl}"
            ),
        )?;
    }
    let lake_text = lake.to_string_lossy();
    let toml_str = |s: &str| toml::Value::String(s.to_string()).to_string();
    let config = dir.join("lake.toml");
    write(
        &config,
        format!(
            "# Written by `loglake quickstart`: the lake's configuration, as for a CronJob.\n\
             brokers = {}\ngroup = \"loglake-quickstart\"\nlake = {}\ntables_dir = {}\n\
             dlq_table = {}\ncluster = \"quickstart\"\nmemory_budget = \"256MB\"\n\
             stall_timeout = \"30s\"\nwatermark_timeout = \"30s\"\n\n[nightly]\n\
             lease_ttl = \"60s\"\nexport_hive = {}\ninsights = \"container_logs\"\n\
             report_dir = {}\n",
            toml_str(brokers),
            toml_str(&lake_text),
            toml_str(&tables.to_string_lossy()),
            toml_str(&format!("{lake_text}/dead_letters")),
            toml_str(&format!("{lake_text}/_export/hive")),
            toml_str(&format!("{lake_text}/_report")),
        ),
    )?;
    Ok(config)
}

/// One `loglake nightly` pass as a library call, quiet: the quickstart prints the stages.
fn nightly_pass(
    config: &Path,
    date: Option<NaiveDate>,
    only: &[&str],
    skip: &[&str],
) -> Result<Summary, JobError> {
    let args = NightlyArgs {
        config: config.to_path_buf(),
        date,
        dry_run: false,
        only: only.iter().map(|s| s.to_string()).collect(),
        skip: skip.iter().map(|s| s.to_string()).collect(),
        pushgateway: None,
        quiet: true,
    };
    let (summary, result) = nightly(args)?;
    result.map(|()| summary)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// What one stage did, in a line.
fn describe(stage: &str, status: Status, r: &Value) -> String {
    let reason = || r["reason"].as_str().unwrap_or("").to_string();
    match (stage, status) {
        (_, Status::Skipped) if r.get("reason").is_some() => format!("skipped: {}", reason()),
        ("complete", _) => {
            let w = r["watermark"].as_str().unwrap_or("none");
            if r["complete"].as_bool().unwrap_or(false) {
                format!(
                    "day complete ({} rows; watermark {w}): marker written",
                    n(r, "rows")
                )
            } else {
                format!("still open (watermark {w})")
            }
        }
        ("compact", _) => format!(
            "{} partitions: {} files ({} bytes) -> {} files ({} bytes), checkpoint at version {}",
            n(r, "partitions_seen"),
            n(r, "files_in"),
            n(r, "bytes_in"),
            n(r, "files_out"),
            n(r, "bytes_out"),
            n(&r["checkpoint"], "version")
        ),
        ("retention", _)
            if r["lease"]
                .as_str()
                .is_some_and(|l| l.starts_with("not needed")) =>
        {
            "no retention set for this table".to_string()
        }
        ("retention", _) => format!("{} files removed", n(r, "files_removed")),
        ("vacuum", _) => format!(
            "{} files deleted ({} bytes)",
            n(r, "files_deleted"),
            n(r, "bytes_deleted")
        ),
        ("export", _) => format!(
            "{} rows in {} Hive partitions ({} files) at {}",
            n(r, "rows"),
            n(r, "partitions"),
            n(r, "files"),
            r["target"].as_str().unwrap_or("?")
        ),
        ("insights", _) => format!(
            "{} templates ({} new), {} anomalies; report {}",
            n(&r["templates"], "templates"),
            n(&r["templates"], "new_templates"),
            n(r, "anomalies"),
            r["report"]["html"].as_str().unwrap_or("not written")
        ),
        _ => status.as_str().to_string(),
    }
}

/// The oldest `dt` of a table of the lake.
async fn oldest_day(lake: &str, name: &str) -> Result<NaiveDate, JobError> {
    let ctx = SessionContext::new();
    register(&ctx, lake, name).await?;
    let batches = ctx
        .sql(&format!("SELECT CAST(min(dt) AS VARCHAR) FROM {name}"))
        .await
        .map_err(|e| JobError::Internal(format!("{name}: {e}")))?
        .collect()
        .await
        .map_err(|e| JobError::Internal(format!("{name}: {e}")))?;
    let text = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| arrow::util::display::array_value_to_string(b.column(0), 0).ok())
        .unwrap_or_default();
    text.parse()
        .map_err(|e| JobError::Internal(format!("{name}: no day in the table ({text:?}: {e})")))
}

/// Runs the quickstart and prints its results on stdout.
pub fn run(args: QuickstartArgs) -> Result<std::process::ExitCode, JobError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| JobError::Internal(e.to_string()))?;
    prepare_lake(&args.lake)?;
    let corpus = match &args.samples {
        Some(dir) => Corpus::Folder(dir),
        None => Corpus::BuiltIn,
    };
    let samples = load_samples(&corpus)?;

    // 1. Embedded Kafka.
    let cluster = MockCluster::new(1).map_err(kafka_err("starting the mock cluster"))?;
    for (topic, parts, ..) in TABLES {
        cluster
            .create_topic(topic, parts, 1)
            .map_err(kafka_err(&format!("creating topic {topic}")))?;
    }
    let brokers = cluster.bootstrap_servers();
    println!("== embedded Kafka (librdkafka mock cluster) at {brokers}");

    // 2. Produce.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .map_err(kafka_err("creating a producer"))?;
    let count = samples.len();
    rt.block_on(async {
        let mut sends = Vec::new();
        for s in &samples {
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(s.topic).payload(&s.payload);
            if let Some(p) = &s.path {
                rec = rec
                    .key(p.as_bytes())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "path",
                        value: Some(p.as_bytes()),
                    }));
            }
            sends.push(producer.send(rec, Duration::from_secs(10)));
        }
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| kafka_err("producing samples")(e))?;
        }
        Ok::<(), JobError>(())
    })?;
    let by_topic = |t: &str| samples.iter().filter(|s| s.topic == t).count();
    println!(
        "== produced {count} real sample records: k8s-container-logs {}, k8s-audit {}, ingress-access {}",
        by_topic("k8s-container-logs"),
        by_topic("k8s-audit"),
        by_topic("ingress-access")
    );

    // 3. The lake's configuration, then the nightly job's archive stage.
    let config = write_config(&args.lake, &brokers)?;
    println!(
        "== wrote the lake's configuration: {} (+ tables/*.toml)",
        config.display()
    );
    let lake = args.lake.to_string_lossy().to_string();
    let first = nightly_pass(&config, None, &["archive"], &[])?;
    let archived = first
        .stages
        .iter()
        .find(|s| s.stage == "archive")
        .map(|s| s.report.clone())
        .unwrap_or_default();
    println!(
        "== nightly pass 1 (loglake nightly --only archive): archived {} records into {}: {} rows, {} dead letters, {} files, {} commits",
        n(&archived, "records_in"),
        lake,
        n(&archived, "rows_written"),
        n(&archived, "dead_letters"),
        n(&archived, "files"),
        n(&archived, "commits")
    );
    drop(producer);
    drop(cluster);

    // 4. The other stages, for the oldest day of the container logs.
    let day = rt.block_on(oldest_day(&lake, "container_logs"))?;
    let second = nightly_pass(&config, Some(day), &[], &["archive"])?;
    println!(
        "== nightly pass 2 (loglake nightly --date {day} --skip archive; the samples are years old, a CronJob runs for yesterday):"
    );
    for s in &second.stages {
        println!(
            "   {:<9} {:<15} {}",
            s.stage,
            s.table,
            describe(&s.stage, s.status, &s.report)
        );
    }

    // 5. Query.
    rt.block_on(query(&lake))?;
    let report = second
        .stages
        .iter()
        .find(|s| s.stage == "insights")
        .and_then(|s| s.report["report"]["html"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(not written)".into());
    println!(
        "\nThe lake is at {lake}/ — Delta tables readable by Spark, DuckDB, polars and delta-rs; the\n\
         run ledger is the Delta table {lake}/_loglake/runs.\n\
         The day's report:      {report}\n\
         The day for Spark:     {lake}/_export/hive/<table>/ (DDL in _ddl/, _SUCCESS when complete)\n\
         Explore it with SQL:   loglake query --lake {lake}\n\
         Run the nightly job:   loglake nightly --config {} --skip archive --date {day}",
        config.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn register(ctx: &SessionContext, lake: &str, name: &str) -> Result<DeltaTable, JobError> {
    let path = if name == "runs" {
        format!("{lake}/{}", crate::ledger::LEDGER_PATH)
    } else {
        format!("{lake}/{name}")
    };
    let url = table_url(&path).map_err(|e| JobError::Config(e.to_string()))?;
    let t = DeltaTable::try_from_url(url)
        .await
        .map_err(|e| JobError::stage("query", name, e))?;
    t.update_datafusion_session(&ctx.state())
        .map_err(|e| JobError::stage("query", name, e))?;
    let p = t
        .table_provider()
        .await
        .map_err(|e| JobError::stage("query", name, e))?;
    ctx.register_table(name, p)
        .map_err(|e| JobError::stage("query", name, e))?;
    Ok(t)
}

async fn query(lake: &str) -> Result<(), JobError> {
    let ctx = SessionContext::new();
    for name in [
        "container_logs",
        "k8s_audit",
        "access",
        "dead_letters",
        "log_templates",
        "runs",
    ] {
        let t = register(&ctx, lake, name).await?;
        let files = t.snapshot().map(|s| s.log_data().num_files()).unwrap_or(0);
        println!(
            "   table {name:<15} version {}, {files} data file(s)",
            t.version().unwrap_or(0)
        );
    }
    // the queries run on `loglake query`'s engine: every table of the lake by folder name, the
    // log functions (log_context, correlate, delta_scan, lake_status, ...)
    let engine = loglake_query::Engine::new(loglake_query::EngineOptions {
        lake: Some(lake.to_string()),
        ..Default::default()
    })
    .await
    .map_err(|e| JobError::Internal(format!("loglake query's engine on {lake}: {e}")))?;
    let runs = format!("{lake}/{}", crate::ledger::LEDGER_PATH);
    let ledger_sql = format!(
        "SELECT stage, status, count(*) AS attempts FROM delta_scan('{runs}') \
         GROUP BY stage, status ORDER BY stage, status"
    );
    let queries = [
        (
            "rows and partitions per table",
            "SELECT 'container_logs' AS table_name, count(*) AS rows, count(DISTINCT (dt, hour)) AS partitions FROM container_logs \
          UNION ALL SELECT 'k8s_audit', count(*), count(DISTINCT (dt, hour)) FROM k8s_audit \
          UNION ALL SELECT 'access', count(*), count(DISTINCT (dt, hour)) FROM access \
          UNION ALL SELECT 'dead_letters', count(*), count(DISTINCT (dt, hour)) FROM dead_letters ORDER BY table_name",
        ),
        (
            "container log lines by namespace and stream",
            "SELECT namespace, stream, count(*) AS lines FROM container_logs GROUP BY namespace, stream ORDER BY lines DESC, namespace, stream LIMIT 10",
        ),
        (
            "who did what in the API server (audit)",
            "SELECT \"user\", verb, object_resource, count(*) AS events FROM k8s_audit GROUP BY 1, 2, 3 ORDER BY events DESC, 1, 2, 3 LIMIT 8",
        ),
        (
            "HTTP status classes at the ingress",
            "SELECT status, count(*) AS requests, sum(bytes_sent) AS bytes FROM access GROUP BY status ORDER BY status",
        ),
        (
            "dead letters (nothing is dropped)",
            "SELECT kafka_topic, kafka_partition, kafka_offset, substr(error, 1, 60) AS error FROM dead_letters ORDER BY kafka_offset",
        ),
        (
            "grep -C for logs: the stderr lines of the annotations-exclude pods, one line before and after each (log_context)",
            "SELECT pod, count(*) FILTER (WHERE \"offset\" = 0) AS hits, count(*) FILTER (WHERE \"offset\" <> 0) AS context_lines \
             FROM log_context('container_logs', 'stream = ''stderr'' AND namespace = ''annotations-exclude''', before => 1, after => 1) \
             GROUP BY pod ORDER BY pod",
        ),
        (
            "what each user did within 10 seconds of a delete (correlate)",
            "SELECT \"user\", r_verb, count(*) AS pairs \
             FROM correlate('SELECT * FROM k8s_audit WHERE verb = ''delete''', 'k8s_audit', key => 'user', within => INTERVAL '10 seconds') \
             GROUP BY 1, 2 ORDER BY pairs DESC, 1, 2",
        ),
        (
            "the day's log templates (Drain-style mining by the nightly insights stage)",
            "SELECT service, template, count FROM log_templates ORDER BY count DESC, template LIMIT 6",
        ),
        (
            "the run ledger: stage attempts of the two nightly passes",
            ledger_sql.as_str(),
        ),
    ];
    for (title, sql) in queries {
        println!("\n-- {title}\n{sql}");
        let plan = engine
            .plan_sql(sql, true)
            .await
            .map_err(|e| JobError::Internal(format!("{title}: {e}")))?;
        let batches = engine
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| JobError::Internal(format!("{title}: {e}")))?
            .collect()
            .await
            .map_err(|e| JobError::Internal(format!("{title}: {e}")))?;
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(|e| JobError::Internal(format!("{title}: {e}")))?;
        println!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_samples_are_the_repository_corpus() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/corpus"));
        let key = |s: &Sample| (s.topic, s.payload.clone(), s.path.clone());
        let from_folder: Vec<_> = load_samples(&Corpus::Folder(dir))
            .expect("folder samples")
            .iter()
            .map(key)
            .collect();
        let built_in: Vec<_> = load_samples(&Corpus::BuiltIn)
            .expect("built-in samples")
            .iter()
            .map(key)
            .collect();
        assert_eq!(from_folder.len(), 175);
        assert_eq!(built_in, from_folder);
        let per_topic = |t: &str| built_in.iter().filter(|s| s.0 == t).count();
        assert_eq!(
            (
                per_topic("k8s-container-logs"),
                per_topic("k8s-audit"),
                per_topic("ingress-access")
            ),
            (116, 52, 7)
        );
        // the license notes travel with them
        for note in [
            "fluent-bit/SOURCE.md",
            "fluent-bit/LICENSE",
            "beats/SOURCE.md",
            "falco-k8s-audit/SOURCE.md",
        ] {
            assert!(CORPUS.get_file(note).is_some(), "{note} is not built in");
        }
    }
}
