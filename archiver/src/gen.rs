//! `loglake gen`: seeded synthetic Fluent Bit container logs (see `loglake_schemas::gen`) written
//! to a Kafka topic, to a file (one JSON record per line), or straight into a container-log Delta
//! table as `loglake archive` would write it ([`crate::fixture`]), for load tests and benchmarks.
//!
//! ```sh
//! loglake gen --brokers kafka:9092 --topic k8s-logs --bytes 2GB
//! loglake gen --output logs.ndjson --records 100000 --malformed-per-mille 10
//! loglake gen --table /tmp/lake/containers --records 1000000 --commits 10
//! ```
//! Prints one JSON summary line on standard error (`records`, `bytes`, `malformed`, `failed`,
//! `seconds`; standard output may be the data); progress
//! goes to the log every few seconds. Exit code 1 when a record could not be delivered.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loglake_schemas::r#gen::{FluentBitGen, GenOptions};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::config::{parse_bytes, parse_kv};
use crate::error::ArchiveError;

/// Arguments of `loglake gen`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["records", "bytes"])))]
#[command(group(clap::ArgGroup::new("sink").required(true).args(["topic", "output", "table"])))]
pub struct GenArgs {
    /// Kafka bootstrap servers (with --topic).
    #[arg(long, env = "LOGLAKE_BROKERS", requires = "topic")]
    pub brokers: Option<String>,
    /// Kafka topic to produce to.
    #[arg(long, requires = "brokers")]
    pub topic: Option<String>,
    /// File to write, one record per line (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub output: Option<String>,
    /// A new Delta table to write the records to, decoded and laid out as `loglake archive`
    /// writes the shipped `containers` table, without Kafka (needs --records).
    #[arg(long, value_name = "LOCATION", conflicts_with_all = ["bytes", "malformed_per_mille"])]
    pub table: Option<String>,
    /// With --table: number of commits (each of records / commits records).
    #[arg(long, default_value_t = 1, requires = "table")]
    pub commits: u64,
    /// With --table: Kafka partitions of the synthetic coordinates (records round robin).
    #[arg(long, default_value_t = 12, requires = "table")]
    pub partitions: i32,
    /// Number of records.
    #[arg(long)]
    pub records: Option<u64>,
    /// Total payload size (e.g. 2GB, 512MiB); stops at the first record reaching it.
    #[arg(long, value_parser = parse_bytes)]
    pub bytes: Option<u64>,
    /// Random seed: the same seed gives the same records.
    #[arg(long, default_value_t = GenOptions::default().seed)]
    pub seed: u64,
    /// Number of namespaces.
    #[arg(long, default_value_t = GenOptions::default().namespaces)]
    pub namespaces: usize,
    /// Event time of the first record (RFC 3339); default: 24 hours ago, on the hour.
    #[arg(long)]
    pub start: Option<String>,
    /// Records per second of event time.
    #[arg(long, default_value_t = GenOptions::default().records_per_second)]
    pub records_per_second: u64,
    /// Records per thousand written as truncated JSON (dead-letter material).
    #[arg(long, default_value_t = 0)]
    pub malformed_per_mille: u64,
    /// librdkafka producer property (repeatable), e.g. `-X compression.type=zstd`.
    #[arg(short = 'X', value_parser = parse_kv)]
    pub kafka: Vec<(String, String)>,
}

/// What `loglake gen` wrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct GenReport {
    pub records: u64,
    pub bytes: u64,
    pub malformed: u64,
    pub failed: u64,
    pub seconds: f64,
}

struct CountingContext {
    failed: Arc<AtomicU64>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            use rdkafka::Message;
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, partition = m.partition(), "record not delivered");
        }
    }
}

fn options(args: &GenArgs) -> Result<GenOptions, ArchiveError> {
    let start = match &args.start {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| ArchiveError::Config(format!("--start {s}: {e}")))?
            .timestamp(),
        None => {
            let now = chrono::Utc::now().timestamp();
            now - 86_400 - now.rem_euclid(3600)
        }
    };
    Ok(GenOptions {
        seed: args.seed,
        namespaces: args.namespaces,
        start_unix_secs: start,
        records_per_second: args.records_per_second,
        malformed_per_mille: args.malformed_per_mille,
    })
}

enum Sink {
    Kafka {
        producer: ThreadedProducer<CountingContext>,
        topic: String,
        failed: Arc<AtomicU64>,
    },
    File(Box<dyn Write>),
}

fn open_sink(args: &GenArgs) -> Result<Sink, ArchiveError> {
    if let (Some(brokers), Some(topic)) = (&args.brokers, &args.topic) {
        let failed = Arc::new(AtomicU64::new(0));
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("compression.type", "zstd")
            .set("enable.idempotence", "true");
        for (k, v) in &args.kafka {
            cfg.set(k, v);
        }
        let producer = cfg
            .create_with_context(CountingContext {
                failed: failed.clone(),
            })
            .map_err(|source| ArchiveError::Kafka {
                context: "creating producer".into(),
                source,
            })?;
        return Ok(Sink::Kafka {
            producer,
            topic: topic.clone(),
            failed,
        });
    }
    let out = args.output.as_deref().unwrap_or("-");
    let w: Box<dyn Write> = if out == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::File::create(out)
            .map_err(|e| ArchiveError::Config(format!("--output {out}: {e}")))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    Ok(Sink::File(w))
}

/// `loglake gen --table`: prints the table's [`crate::fixture::FixtureReport`] as one JSON line
/// on standard output.
fn run_gen_table(args: &GenArgs, table: &str) -> Result<ExitCode, ArchiveError> {
    let g = options(args)?;
    let rows = args
        .records
        .ok_or_else(|| ArchiveError::Config("--table needs --records".into()))?;
    let opts = crate::fixture::FixtureOptions {
        seed: g.seed,
        namespaces: g.namespaces,
        start_unix_secs: g.start_unix_secs,
        records_per_second: g.records_per_second,
        commits: args.commits,
        partitions: args.partitions,
        ..crate::fixture::FixtureOptions::new(rows).map_err(fixture_error)?
    };
    let rt = crate::runtime()?;
    let report = rt
        .block_on(crate::fixture::write_container_table(table, &opts))
        .map_err(fixture_error)?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn fixture_error(e: crate::fixture::FixtureError) -> ArchiveError {
    use crate::fixture::FixtureError;
    match e {
        FixtureError::Archive(e) => *e,
        FixtureError::Lake(e) => ArchiveError::Lake(*e),
        e @ (FixtureError::Options(_) | FixtureError::Exists { .. }) => {
            ArchiveError::Config(e.to_string())
        }
        e => ArchiveError::Other(e.to_string()),
    }
}

/// `loglake gen`.
pub fn run_gen(args: GenArgs) -> Result<ExitCode, ArchiveError> {
    if let Some(table) = &args.table {
        return run_gen_table(&args, table);
    }
    let mut g = FluentBitGen::new(options(&args)?);
    let mut sink = open_sink(&args)?;
    let mut report = GenReport::default();
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    let want_records = args.records.unwrap_or(u64::MAX);
    let want_bytes = args.bytes.unwrap_or(u64::MAX);
    while report.records < want_records && report.bytes < want_bytes {
        let rec = g.next_record();
        match &mut sink {
            Sink::Kafka {
                producer, topic, ..
            } => {
                let mut r: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic).payload(&rec);
                loop {
                    match producer.send(r) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            r = back;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((source, _)) => {
                            return Err(ArchiveError::Kafka {
                                context: format!("producing record {}", report.records),
                                source,
                            });
                        }
                    }
                }
            }
            Sink::File(w) => w
                .write_all(&rec)
                .and_then(|()| w.write_all(b"\n"))
                .map_err(|source| ArchiveError::Io {
                    what: format!("writing record {}", report.records),
                    source,
                })?,
        }
        report.records += 1;
        report.bytes += rec.len() as u64;
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let secs = t0.elapsed().as_secs_f64();
            tracing::info!(
                records = report.records,
                mb = report.bytes as f64 / 1e6,
                mb_per_s = report.bytes as f64 / 1e6 / secs,
                "generating"
            );
        }
    }
    match sink {
        Sink::Kafka {
            producer, failed, ..
        } => {
            producer
                .flush(Duration::from_secs(120))
                .map_err(|source| ArchiveError::Kafka {
                    context: "flushing the producer".into(),
                    source,
                })?;
            report.failed = failed.load(Ordering::Relaxed);
        }
        Sink::File(mut w) => w.flush().map_err(|source| ArchiveError::Io {
            what: "flushing the output".into(),
            source,
        })?,
    }
    report.malformed = g.malformed();
    report.seconds = t0.elapsed().as_secs_f64();
    eprintln!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GenArgs,
    }

    #[test]
    fn writes_the_asked_records_to_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("logs.ndjson");
        let cli = Cli::try_parse_from([
            "gen",
            "--output",
            out.to_str().expect("utf8"),
            "--records",
            "1000",
            "--malformed-per-mille",
            "20",
            "--start",
            "2024-05-01T00:00:00Z",
        ])
        .expect("args");
        assert_eq!(run_gen(cli.args).expect("gen"), ExitCode::SUCCESS);
        let text = std::fs::read_to_string(&out).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        let bad = lines
            .iter()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
            .count();
        assert!(bad > 0 && bad < 60, "{bad} malformed");
        let first: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(
            first["@timestamp"].as_f64().map(|t| t as i64),
            Some(1_714_521_600)
        );
    }

    #[test]
    fn writes_a_table_as_the_archiver_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = dir.path().join("containers");
        let table = table.to_str().expect("utf8");
        let argv = [
            "gen",
            "--table",
            table,
            "--records",
            "500",
            "--commits",
            "2",
            "--partitions",
            "3",
            "--start",
            "2024-05-01T00:00:00Z",
        ];
        let cli = Cli::try_parse_from(argv).expect("args");
        assert_eq!(run_gen(cli.args).expect("gen"), ExitCode::SUCCESS);
        let rt = crate::runtime().expect("runtime");
        let url = loglake_lake::table_url(table).expect("url");
        let t = rt
            .block_on(loglake_lake::open_table(
                "containers",
                &url,
                &Default::default(),
            ))
            .expect("open");
        // creation, then two commits
        assert_eq!(t.version(), Some(2));
        let parts: Vec<(String, i32)> = (0..3).map(|p| ("k8s-logs".to_string(), p)).collect();
        let offsets = rt
            .block_on(loglake_lake::read_offsets(
                "containers",
                &url,
                &Default::default(),
                &parts,
                false,
            ))
            .expect("offsets");
        // 500 records round robin over 3 partitions: 167, 167, 166
        let mut w: Vec<(i32, Option<i64>)> = offsets.iter().map(|(k, v)| (k.1, v.0)).collect();
        w.sort();
        assert_eq!(w, vec![(0, Some(167)), (1, Some(167)), (2, Some(166))]);
        // a second run does not write over it (exit code 2: configuration)
        let cli = Cli::try_parse_from(argv).expect("args");
        let e = run_gen(cli.args).expect_err("exists");
        assert!(e.to_string().contains("already holds a Delta table"), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(
            Cli::try_parse_from(["gen", "--table", table, "--bytes", "1MB"]).is_err(),
            "--table with --bytes"
        );
    }

    #[test]
    fn needs_an_amount_and_a_sink() {
        assert!(Cli::try_parse_from(["gen", "--output", "x"]).is_err());
        assert!(Cli::try_parse_from(["gen", "--records", "5"]).is_err());
        assert!(Cli::try_parse_from(["gen", "--topic", "t", "--records", "5"]).is_err());
    }
}
