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

mod queries;
mod samples;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use serde_json::Value;

use crate::ledger::Status;
use crate::{JobError, NightlyArgs, Summary, nightly};
use queries::{oldest_day, query};
use samples::{Corpus, Sample, load_samples};

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

const MARKER: &str = ".loglake-quickstart";

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
    let cluster = start_kafka()?;
    let brokers = cluster.bootstrap_servers();
    println!("== embedded Kafka (librdkafka mock cluster) at {brokers}");

    // 2. Produce.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .map_err(kafka_err("creating a producer"))?;
    rt.block_on(produce(&producer, &samples))?;
    let by_topic = |t: &str| samples.iter().filter(|s| s.topic == t).count();
    println!(
        "== produced {} real sample records: k8s-container-logs {}, k8s-audit {}, ingress-access {}",
        samples.len(),
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
    archive_pass(&config, &lake)?;
    drop(producer);
    drop(cluster);

    // 4. The other stages, for the oldest day of the container logs.
    let day = rt.block_on(oldest_day(&lake, "container_logs"))?;
    let second = maintenance_pass(&config, day)?;

    // 5. Query.
    rt.block_on(query(&lake))?;
    print_next_steps(&lake, &config, day, &second);
    Ok(std::process::ExitCode::SUCCESS)
}

/// The embedded Kafka (librdkafka's mock cluster) with the quickstart's topics.
fn start_kafka() -> Result<MockCluster<'static, DefaultProducerContext>, JobError> {
    let cluster = MockCluster::new(1).map_err(kafka_err("starting the mock cluster"))?;
    for (topic, parts, ..) in TABLES {
        cluster
            .create_topic(topic, parts, 1)
            .map_err(kafka_err(&format!("creating topic {topic}")))?;
    }
    Ok(cluster)
}

/// Produces every sample (container logs keyed by their kubelet path, also a `path` header).
async fn produce(producer: &FutureProducer, samples: &[Sample]) -> Result<(), JobError> {
    let mut sends = Vec::new();
    for s in samples {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(s.topic).payload(&s.payload);
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
    Ok(())
}

/// Nightly pass 1: archives every topic to its end, and prints what it wrote.
fn archive_pass(config: &Path, lake: &str) -> Result<(), JobError> {
    let first = nightly_pass(config, None, &["archive"], &[])?;
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
    Ok(())
}

/// Nightly pass 2: every other stage for `day`, one line per stage attempt.
fn maintenance_pass(config: &Path, day: NaiveDate) -> Result<Summary, JobError> {
    let second = nightly_pass(config, Some(day), &[], &["archive"])?;
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
    Ok(second)
}

/// Where the lake, the report and the export are, and the commands to go on with.
fn print_next_steps(lake: &str, config: &Path, day: NaiveDate, second: &Summary) {
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
}
