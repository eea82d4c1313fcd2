//! `loglake archive` configuration: flags > `LOGLAKE_*` environment > TOML file > defaults.
//!
//! S3 settings come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`), which a
//! `[storage]` table in the file can override. Secrets are never logged or printed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loglake_schemas::{DecoderOptions, TableDef, load_table_dir};
use serde::Deserialize;

use crate::archive::{ArchiveConfig, TableTarget};
use crate::delta::table_url;
use crate::error::ArchiveError;
use crate::metrics::Metrics;
use crate::writer::RollPolicy;

/// `loglake archive`: consume Kafka log topics into Delta tables, exactly once.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ArchiveArgs {
    /// TOML configuration file (see DESIGN.md); flags and LOGLAKE_* variables override it.
    #[arg(long, env = "LOGLAKE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(long, env = "LOGLAKE_BROKERS")]
    pub brokers: Option<String>,
    /// Topic to consume (repeatable) — single-table form, with --table and --decoder.
    #[arg(long = "topic", env = "LOGLAKE_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Consumer group (partitions are split among archivers of one group).
    #[arg(long, env = "LOGLAKE_GROUP")]
    pub group: Option<String>,
    /// Table URI for the single-table form: s3://bucket/prefix/name or a local path.
    #[arg(long, env = "LOGLAKE_TABLE")]
    pub table: Option<String>,
    /// Table name (default: the last segment of --table).
    #[arg(long, env = "LOGLAKE_TABLE_NAME")]
    pub table_name: Option<String>,
    /// Decoder: fluentbit, filebeat, vector, ilogtail, cri, docker, k8s-audit, access, otlp-proto, otlp-json.
    #[arg(long, env = "LOGLAKE_DECODER")]
    pub decoder: Option<String>,
    /// Dead-letter table URI (records that cannot be decoded go there, never dropped).
    #[arg(long, env = "LOGLAKE_DLQ_TABLE")]
    pub dlq_table: Option<String>,
    /// Batch mode: archive up to each partition's high watermark at start, commit, exit 0.
    #[arg(long, env = "LOGLAKE_UNTIL_END")]
    pub until_end: bool,
    /// librdkafka property passed through, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_parser = parse_kv)]
    pub kafka: Vec<(String, String)>,
    /// Lake root for the multi-table form: each table of --tables-dir is written to LAKE/<name>.
    #[arg(long, env = "LOGLAKE_LAKE")]
    pub lake: Option<String>,
    /// Folder of table definitions (TOML) for the multi-table form.
    #[arg(long, env = "LOGLAKE_TABLES_DIR")]
    pub tables_dir: Option<PathBuf>,
    /// Roll files at this size (e.g. 128MB).
    #[arg(long, env = "LOGLAKE_TARGET_FILE_SIZE", value_parser = parse_bytes)]
    pub target_file_size: Option<u64>,
    /// Commit at least this often (e.g. 5m, 30s).
    #[arg(long, env = "LOGLAKE_ROLL_INTERVAL", value_parser = parse_duration)]
    pub roll_interval: Option<Duration>,
    /// Memory budget for all open files together (e.g. 1GB); the largest is flushed beyond it.
    #[arg(long, env = "LOGLAKE_MEMORY_BUDGET", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Decode at most this many payload bytes per poll batch (default: an eighth of the memory
    /// budget, within 1MiB..32MiB). Batches are outside the budget (≈ 3× this in memory).
    #[arg(long, env = "LOGLAKE_POLL_BATCH_BYTES", value_parser = parse_bytes)]
    pub poll_batch_bytes: Option<u64>,
    /// How long reading a partition's watermarks may keep failing (retried: 1, 2, 4, 8, 16 s
    /// pauses) before the run fails (default 5m).
    #[arg(long, env = "LOGLAKE_WATERMARK_TIMEOUT", value_parser = parse_duration)]
    pub watermark_timeout: Option<Duration>,
    /// Count a row as late (report `late_rows`, metric `loglake_late_rows_total`) when its record
    /// reached Kafka more than this after its event time (default 1h). Late rows still go to
    /// their event-time partition.
    #[arg(long, env = "LOGLAKE_LATE_AFTER", value_parser = parse_duration)]
    pub late_after: Option<Duration>,
    /// After SIGTERM or SIGINT, how long flushing and committing may take before the archiver
    /// exits without (exit code 3; nothing is lost: the next run re-reads from the table's
    /// offsets). A second signal exits at once. Default 25s (Kubernetes' grace period is 30s).
    #[arg(long, env = "LOGLAKE_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Cluster name for records whose envelope carries none.
    #[arg(long, env = "LOGLAKE_CLUSTER")]
    pub cluster: Option<String>,
    /// Serve Prometheus /metrics and /healthz on this address (e.g. 0.0.0.0:9464).
    #[arg(long, env = "LOGLAKE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Allow an S3 store that does not enforce put-if-absent (unsafe with concurrent writers).
    #[arg(long, env = "LOGLAKE_ALLOW_UNSAFE_STORE")]
    pub allow_unsafe_store: bool,
}

/// The TOML file form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub group: Option<String>,
    pub lake: Option<String>,
    pub tables_dir: Option<PathBuf>,
    pub dlq_table: Option<String>,
    pub target_file_size: Option<String>,
    pub roll_interval: Option<String>,
    pub memory_budget: Option<String>,
    pub poll_batch_bytes: Option<String>,
    pub watermark_timeout: Option<String>,
    pub late_after: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub cluster: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    /// librdkafka properties.
    #[serde(default)]
    pub kafka: HashMap<String, String>,
    /// Storage options (AWS_* names) overriding the environment.
    #[serde(default)]
    pub storage: HashMap<String, String>,
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// Parses `128MB`, `64MiB`, `1G`, `4096` (bytes). K/M/G are powers of 1024, as budgets usually are.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a byte size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown byte unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("byte size too large: {s:?}"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("not a duration: {s:?}: {e}"))
}

/// A duration setting: the flag (or its environment variable, which clap merges into it), else
/// the file's `key`, else `default`.
fn duration_setting(
    flag: Option<Duration>,
    file: Option<&str>,
    key: &str,
    default: Duration,
) -> Result<Duration, ArchiveError> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(s)) => parse_duration(s)
            .map_err(|e| ArchiveError::Config(format!("{key} in the config file: {e}"))),
        (None, None) => Ok(default),
    }
}

/// The AWS_* storage options from the environment, overridden by the file's `[storage]`.
pub fn storage_options(file: &HashMap<String, String>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    for (k, v) in file {
        out.insert(k.clone(), v.clone());
    }
    if out.contains_key("AWS_ENDPOINT_URL") && !out.contains_key("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
    {
        // Custom endpoints (MinIO, moto, Ceph…) want path-style addressing.
        out.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
    }
    out
}

impl ArchiveArgs {
    /// Resolves flags, environment, file and defaults into a run configuration.
    pub fn resolve(
        &self,
        shutdown: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Result<(ArchiveConfig, Option<SocketAddr>), ArchiveError> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ArchiveError::Config(format!("reading {}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| {
                    ArchiveError::Config(format!("{}: {}", p.display(), e.to_string().trim_end()))
                })?
            }
            None => FileConfig::default(),
        };
        let brokers = self.brokers.clone().or(file.brokers.clone()).ok_or_else(|| {
            ArchiveError::Config("no Kafka brokers: pass --brokers, set LOGLAKE_BROKERS, or `brokers` in the config file".into())
        })?;
        let group = self
            .group
            .clone()
            .or(file.group.clone())
            .unwrap_or_else(|| "loglake-archiver".into());
        let storage = storage_options(&file.storage);
        if storage
            .get("AWS_S3_ALLOW_UNSAFE_RENAME")
            .is_some_and(|v| v == "true")
            || storage.contains_key("AWS_S3_LOCKING_PROVIDER")
        {
            return Err(ArchiveError::Config(
                "AWS_S3_ALLOW_UNSAFE_RENAME / AWS_S3_LOCKING_PROVIDER are not supported: loglake commits with put-if-absent only".into(),
            ));
        }
        let mut policy = RollPolicy::default();
        let bytes_opt =
            |flag: Option<u64>, file: &Option<String>| -> Result<Option<u64>, ArchiveError> {
                match (flag, file) {
                    (Some(v), _) => Ok(Some(v)),
                    (None, Some(s)) => parse_bytes(s).map(Some).map_err(ArchiveError::Config),
                    _ => Ok(None),
                }
            };
        if let Some(v) = bytes_opt(self.target_file_size, &file.target_file_size)? {
            policy.target_file_bytes = v;
        }
        if let Some(v) = bytes_opt(self.memory_budget, &file.memory_budget)? {
            policy.memory_budget_bytes = v;
        }
        // Row groups no larger than a quarter of the budget, so one writer cannot hog it.
        policy.row_group_bytes = policy
            .row_group_bytes
            .min((policy.memory_budget_bytes / 4).max(1 << 20) as usize);
        match (self.roll_interval, &file.roll_interval) {
            (Some(d), _) => policy.max_file_age = d,
            (None, Some(s)) => {
                policy.max_file_age = parse_duration(s).map_err(ArchiveError::Config)?
            }
            _ => {}
        }

        let batch_bytes = match (self.poll_batch_bytes, &file.poll_batch_bytes) {
            (Some(v), _) => v,
            (None, Some(s)) => parse_bytes(s).map_err(ArchiveError::Config)?,
            _ => crate::archive::default_poll_batch_bytes(policy.memory_budget_bytes),
        };
        if batch_bytes < 1 << 10 {
            return Err(ArchiveError::Config(format!(
                "--poll-batch-bytes {batch_bytes} is below 1KiB"
            )));
        }

        let watermark_timeout = duration_setting(
            self.watermark_timeout,
            file.watermark_timeout.as_deref(),
            "watermark_timeout",
            crate::archive::DEFAULT_WATERMARK_TIMEOUT,
        )?;
        if watermark_timeout < Duration::from_secs(1) {
            return Err(ArchiveError::Config(format!(
                "--watermark-timeout {watermark_timeout:?} is below 1s"
            )));
        }

        let late_after = duration_setting(
            self.late_after,
            file.late_after.as_deref(),
            "late_after",
            crate::archive::DEFAULT_LATE_AFTER,
        )?;
        let shutdown_timeout = duration_setting(
            self.shutdown_timeout,
            file.shutdown_timeout.as_deref(),
            "shutdown_timeout",
            crate::archive::DEFAULT_SHUTDOWN_TIMEOUT,
        )?;

        let mut tables = Vec::new();
        if let Some(table) = &self.table {
            if self.topics.is_empty() {
                return Err(ArchiveError::Config(
                    "--table needs at least one --topic".into(),
                ));
            }
            let decoder = self
                .decoder
                .clone()
                .ok_or_else(|| ArchiveError::Config("--table needs --decoder".into()))?;
            let url = table_url(table)?;
            let name = self
                .table_name
                .clone()
                .unwrap_or_else(|| crate::archive::name_from_url(&url));
            tables.push(TableTarget {
                name,
                url,
                topics: self.topics.clone(),
                decoder,
                partition_by: vec!["dt".into(), "hour".into()],
                bloom_filter_columns: Vec::new(),
            });
        } else {
            let lake = self.lake.clone().or(file.lake.clone()).ok_or_else(|| {
                ArchiveError::Config("nothing to archive: pass --table/--topic/--decoder, or --lake with --tables-dir".into())
            })?;
            let dir = self
                .tables_dir
                .clone()
                .or(file.tables_dir.clone())
                .ok_or_else(|| {
                    ArchiveError::Config(
                        "--lake needs --tables-dir (a folder of table definitions)".into(),
                    )
                })?;
            let defs: Vec<TableDef> = load_table_dir(&dir)?;
            for d in defs {
                let url = table_url(&format!("{}/{}", lake.trim_end_matches('/'), d.name))?;
                tables.push(TableTarget {
                    name: d.name.clone(),
                    url,
                    topics: d.topics.clone(),
                    decoder: d.decoder.clone(),
                    partition_by: d.partition_by.clone(),
                    bloom_filter_columns: d.bloom_filter_columns.clone(),
                });
            }
        }
        let dlq = match self.dlq_table.clone().or(file.dlq_table.clone()) {
            Some(u) => Some(table_url(&u)?),
            None => None,
        };
        let mut kafka_properties: Vec<(String, String)> = file.kafka.clone().into_iter().collect();
        kafka_properties.sort();
        kafka_properties.extend(self.kafka.iter().cloned());
        let decoder_options = DecoderOptions {
            cluster: self.cluster.clone().or(file.cluster.clone()),
            ..DecoderOptions::default()
        };
        let cfg = ArchiveConfig {
            brokers,
            group,
            kafka_properties,
            tables,
            dlq,
            until_end: self.until_end,
            storage_options: storage,
            decoder_options,
            policy,
            batch_records: 20_000,
            batch_bytes,
            shutdown,
            assignment_timeout: Duration::from_secs(60),
            watermark_timeout,
            late_after,
            shutdown_timeout,
            metrics,
        };
        Ok((cfg, self.metrics_addr.or(file.metrics_addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("256MB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("MB").is_err());
    }

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
}
