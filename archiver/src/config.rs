//! `loglake archive` configuration: flags > `LOGLAKE_*` environment > TOML file > defaults.
//!
//! S3 settings come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`), which a
//! `[storage]` table in the file can override (`loglake_lake::storage`). Secrets are never
//! logged or printed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loglake_lake::table_url;
use loglake_schemas::{
    DECODER_NAMES, DecoderOptions, TableDef, TableKind, check_partition_by, load_table_dir,
};
use serde::{Deserialize, Deserializer};

use crate::archive::{ArchiveConfig, TableTarget};
use crate::error::ArchiveError;
use crate::metrics::ArchiverMetrics;
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
    /// Static group membership (librdkafka `group.instance.id`): a member restarted with the same
    /// id (e.g. the pod name) takes its partitions back at once, without a rebalance. Without it
    /// a killed member's partitions return after its session timeout (15s by default). Each live
    /// member of a group needs its own id.
    #[arg(long, env = "LOGLAKE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// No progress for this long ends an --until-end run with exit code 4 and an error naming
    /// each partition it waited for; in continuous mode it turns /healthz unhealthy (503) while
    /// an assigned partition lags (default 5m).
    #[arg(long, env = "LOGLAKE_STALL_TIMEOUT", value_parser = parse_duration)]
    pub stall_timeout: Option<Duration>,
    /// Table URI for the single-table form: s3://bucket/prefix/name or a local path.
    #[arg(long, env = "LOGLAKE_TABLE")]
    pub table: Option<String>,
    /// Partition column of the single-table form beyond dt and hour (repeatable, or
    /// comma-separated): `--partition-by namespace` writes dt=…/hour=…/namespace=…/. The columns
    /// come after dt and hour, in the order given; when the list names dt or hour itself it is
    /// the whole partitioning, in that order (`--partition-by dt,namespace` drops hour). Each
    /// must be a string, integer or date column of the decoder's table (the error lists them).
    /// A table keeps the columns it was created with: opening it with others is an error. Tables
    /// of the multi-table form set `partition_by` in their definition instead.
    #[arg(
        long = "partition-by",
        env = "LOGLAKE_PARTITION_BY",
        value_name = "COL",
        value_delimiter = ','
    )]
    pub partition_by: Vec<String>,
    /// Single-table form: also copy the fields of a JSON message into `attrs` (the table option
    /// `json_message_attrs`). By default they stay in `message` only, read with `json_get_*`;
    /// earlier loglake builds always copied them.
    #[arg(long, env = "LOGLAKE_JSON_MESSAGE_ATTRS")]
    pub json_message_attrs: bool,
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
    /// Roll files at this size (e.g. 128MB). Default: each table definition's
    /// `target_file_size_bytes` in the multi-table form, 128MB otherwise; given here, in
    /// LOGLAKE_TARGET_FILE_SIZE or in the file, it applies to every table.
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
    /// Serve /metrics (OpenMetrics text, for Prometheus) and /healthz on this address (e.g.
    /// 0.0.0.0:9464).
    #[arg(long, env = "LOGLAKE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Allow an S3 store that does not enforce put-if-absent (unsafe with concurrent writers).
    #[arg(long, env = "LOGLAKE_ALLOW_UNSAFE_STORE")]
    pub allow_unsafe_store: bool,
    /// Single-table form: drop rows for which this SQL condition is not true (the table key
    /// `filter`; README, "Transform at archive time").
    #[arg(long, env = "LOGLAKE_FILTER")]
    pub filter: Option<String>,
    /// Single-table form: a derived column, NAME=SQL (repeatable; the table key `[derive]`).
    #[arg(long = "derive", value_name = "NAME=SQL", value_parser = parse_kv)]
    pub derive: Vec<(String, String)>,
    /// Single-table form: mask a named pattern in `message` (repeatable or comma-separated:
    /// email, ipv4, ipv6, jwt, bearer, aws_key, credit_card; the table key `redact`).
    #[arg(long = "redact", value_name = "PATTERN", value_delimiter = ',')]
    pub redact: Vec<String>,
    /// Print what each table's filter, derived columns and redactions do to the records of
    /// FILE (one record per line, as the table's decoder reads them) as JSON lines, before and
    /// after, and exit; Kafka and the store are not contacted.
    #[arg(long, value_name = "FILE")]
    pub explain_etl: Option<PathBuf>,
}

/// The TOML file form. Its `Debug` shows the keys of `kafka` and `storage` but not their values
/// (credentials).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub group: Option<String>,
    pub instance_id: Option<String>,
    pub stall_timeout: Option<String>,
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
    #[serde(default, deserialize_with = "kafka_table")]
    pub kafka: SecretTable,
    /// Storage options (AWS_* names) overriding the environment.
    #[serde(default, deserialize_with = "storage_table")]
    pub storage: SecretTable,
    /// `[nightly]`: the settings of `loglake nightly` (read by the jobs crate; the archiver
    /// ignores them).
    #[serde(default)]
    pub nightly: Option<toml::Table>,
}

/// A `[kafka]` or `[storage]` table of the file: string values that may be credentials
/// (`sasl.password`, `AWS_SECRET_ACCESS_KEY`), so its `Debug` shows the keys only.
#[derive(Default)]
pub struct SecretTable(pub HashMap<String, String>);

impl std::fmt::Debug for SecretTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_set().entries(keys).finish()
    }
}

/// A `[table]` of string values whose type errors name the key but never the value: `[storage]`
/// and `[kafka]` hold credentials (`AWS_SECRET_ACCESS_KEY`, `sasl.password`), and serde's own
/// message would quote a non-string value (`invalid type: integer `1234``).
fn string_table<'de, D: Deserializer<'de>>(
    d: D,
    table: &str,
) -> Result<HashMap<String, String>, D::Error> {
    // Any value first: serde's error for a non-table (`kafka = "sasl.password=…"`) would quote it.
    let raw = match toml::Value::deserialize(d)? {
        toml::Value::Table(t) => t,
        other => {
            return Err(serde::de::Error::custom(format!(
                "`{table}` must be a table (`[{table}]` with `key = \"value\"` lines), found a value of type {}",
                other.type_str()
            )));
        }
    };
    let mut out = HashMap::with_capacity(raw.len());
    for (k, v) in raw {
        match v {
            toml::Value::String(s) => {
                out.insert(k, s);
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "[{table}] `{k}` must be a string (quote the value), found a value of type {}",
                    other.type_str()
                )));
            }
        }
    }
    Ok(out)
}

fn kafka_table<'de, D: Deserializer<'de>>(d: D) -> Result<SecretTable, D::Error> {
    string_table(d, "kafka").map(SecretTable)
}

fn storage_table<'de, D: Deserializer<'de>>(d: D) -> Result<SecretTable, D::Error> {
    string_table(d, "storage").map(SecretTable)
}

/// Reads the configuration file. Errors name the file, line, column and key but, unlike toml's
/// own rendering, do not quote the line: it may hold a credential.
pub fn read_file_config(path: &Path) -> Result<FileConfig, ArchiveError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ArchiveError::Config(format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // A syntax error may point into a (multi-line) string value; a type error of a
        // well-formed file points at a value, which starts on its key's line.
        let well_formed = toml::from_str::<toml::Table>(&text).is_ok();
        let at = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| {
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let line = before.matches('\n').count() + 1;
                let column = before[line_start..].chars().count() + 1;
                // The key of the line (`key = value`), never its value.
                let key = text[line_start..]
                    .lines()
                    .next()
                    .filter(|_| well_formed)
                    .and_then(|l| l.split_once('='))
                    .map(|(k, _)| k.trim())
                    .filter(|k| !k.is_empty())
                    .map(|k| format!(" (`{k}`)"))
                    .unwrap_or_default();
                format!(" line {line}, column {column}{key}:")
            })
            .unwrap_or_default();
        ArchiveError::Config(format!(
            "{}:{at} {}",
            path.display(),
            e.message().trim_end()
        ))
    })
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

pub use loglake_lake::units::{parse_bytes, parse_duration};

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

/// A [`duration_setting`] that must be at least a second (`flag` names it in the error).
fn timeout_setting(
    flag: Option<Duration>,
    file: Option<&str>,
    key: &str,
    default: Duration,
    flag_name: &str,
) -> Result<Duration, ArchiveError> {
    let d = duration_setting(flag, file, key, default)?;
    if d < Duration::from_secs(1) {
        return Err(ArchiveError::Config(format!(
            "{flag_name} {d:?} is below 1s"
        )));
    }
    Ok(d)
}

/// Route tables (`[[route]]`) are tables of the lake that only routes write: each named
/// [a-z][a-z0-9_]*, not a table the archiver also writes from its own topics, and the target of
/// one source table only (its schema is that table's).
fn check_routes(defs: &[TableDef]) -> Result<(), ArchiveError> {
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for d in defs {
        let file = d
            .source
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        for (i, r) in d.route.iter().enumerate() {
            let bad = |reason: String| {
                ArchiveError::Config(format!("table `{}`{file}: `route[{i}]`: {reason}", d.name))
            };
            let name_ok = r.table.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || (i > 0 && (b.is_ascii_digit() || b == b'_'))
            });
            if r.table.is_empty() || !name_ok {
                return Err(bad(format!(
                    "table `{}` must match [a-z][a-z0-9_]*",
                    r.table
                )));
            }
            if d.route[..i].iter().any(|o| o.table == r.table) {
                return Err(bad(format!("`{}` is routed to twice", r.table)));
            }
            if defs.iter().any(|o| o.name == r.table) {
                return Err(bad(format!(
                    "`{}` is a table archived from its own topics; route to a table only routes write",
                    r.table
                )));
            }
            if let Some(other) = targets.insert(&r.table, &d.name)
                && other != d.name
            {
                return Err(bad(format!(
                    "`{}` is already the route table of `{other}`; one source table per route table",
                    r.table
                )));
            }
        }
    }
    Ok(())
}

/// The partition columns of the single-table form: `dt`, `hour`, then the `--partition-by`
/// columns; when those name `dt` or `hour` themselves, they are the whole list, in their order.
/// Validated against the schema of `decoder`'s table ([`check_partition_by`]).
pub fn single_table_partition_by(
    decoder: &str,
    columns: &[String],
) -> Result<Vec<String>, ArchiveError> {
    let kind = TableKind::for_decoder(decoder).ok_or_else(|| {
        ArchiveError::Config(format!(
            "unknown --decoder `{decoder}` (known: {})",
            DECODER_NAMES.join(", ")
        ))
    })?;
    let columns: Vec<String> = columns.iter().map(|c| c.trim().to_string()).collect();
    let flag = || {
        format!(
            "--partition-by (LOGLAKE_PARTITION_BY) `{}`",
            columns.join(",")
        )
    };
    if columns.iter().any(String::is_empty) {
        return Err(ArchiveError::Config(format!(
            "{}: empty column name",
            flag()
        )));
    }
    let partition_by: Vec<String> = if columns.iter().any(|c| c == "dt" || c == "hour") {
        columns.clone()
    } else {
        ["dt", "hour"]
            .into_iter()
            .map(String::from)
            .chain(columns.iter().cloned())
            .collect()
    };
    check_partition_by(kind, &partition_by)
        .map_err(|reason| ArchiveError::Config(format!("{}: {reason}", flag())))?;
    Ok(partition_by)
}

impl ArchiveArgs {
    /// The ETL of the single-table form, from `--filter`, `--derive` and `--redact`.
    fn single_table_etl(&self) -> Result<crate::etl::EtlSpec, ArchiveError> {
        let mut derive = std::collections::BTreeMap::new();
        for (k, v) in &self.derive {
            let k = k.trim().to_string();
            if derive.insert(k.clone(), v.clone()).is_some() {
                return Err(ArchiveError::Config(format!(
                    "--derive: column `{k}` is derived twice"
                )));
            }
        }
        Ok(crate::etl::EtlSpec {
            filter: self.filter.clone(),
            derive,
            redact: self
                .redact
                .iter()
                .map(|n| loglake_schemas::RedactEntry::Named(n.trim().to_string()))
                .collect(),
            routes: Vec::new(),
        })
    }

    /// Resolves flags, environment, file and defaults into a run configuration.
    pub fn resolve(
        &self,
        shutdown: Arc<AtomicBool>,
        metrics: Arc<ArchiverMetrics>,
    ) -> Result<(ArchiveConfig, Option<SocketAddr>), ArchiveError> {
        let file: FileConfig = match &self.config {
            Some(p) => read_file_config(p)?,
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
        // AWS_S3_ALLOW_UNSAFE_RENAME / AWS_S3_LOCKING_PROVIDER are refused (DESIGN.md I1).
        let storage = loglake_lake::writer_storage_options(&file.storage.0)?;
        let mut policy = RollPolicy::default();
        let bytes_opt =
            |flag: Option<u64>, file: &Option<String>| -> Result<Option<u64>, ArchiveError> {
                match (flag, file) {
                    (Some(v), _) => Ok(Some(v)),
                    (None, Some(s)) => parse_bytes(s).map(Some).map_err(ArchiveError::Config),
                    _ => Ok(None),
                }
            };
        // Given (flag, environment or file), it applies to every table; otherwise each table
        // definition's `target_file_size_bytes` does (`RollPolicy::for_table`).
        let target_file_size = bytes_opt(self.target_file_size, &file.target_file_size)?;
        if let Some(v) = target_file_size {
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

        let watermark_timeout = timeout_setting(
            self.watermark_timeout,
            file.watermark_timeout.as_deref(),
            "watermark_timeout",
            crate::archive::DEFAULT_WATERMARK_TIMEOUT,
            "--watermark-timeout",
        )?;

        let late_after = duration_setting(
            self.late_after,
            file.late_after.as_deref(),
            "late_after",
            crate::archive::DEFAULT_LATE_AFTER,
        )?;
        let stall_timeout = timeout_setting(
            self.stall_timeout,
            file.stall_timeout.as_deref(),
            "stall_timeout",
            crate::watch::DEFAULT_STALL_TIMEOUT,
            "--stall-timeout",
        )?;
        let instance_id = self
            .instance_id
            .clone()
            .or(file.instance_id.clone())
            .filter(|s| !s.trim().is_empty());
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
            let partition_by = single_table_partition_by(&decoder, &self.partition_by)?;
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
                partition_by,
                bloom_filter_columns: Vec::new(),
                target_file_bytes: None,
                json_message_attrs: self.json_message_attrs,
                etl: self.single_table_etl()?,
                definition: None,
                route_urls: Vec::new(),
            });
        } else {
            if self.json_message_attrs {
                return Err(ArchiveError::Config(
                    "--json-message-attrs (LOGLAKE_JSON_MESSAGE_ATTRS) is for the single-table form (--table); in the multi-table form each table's definition sets `json_message_attrs`".into(),
                ));
            }
            if !self.partition_by.is_empty() {
                return Err(ArchiveError::Config(
                    "--partition-by (LOGLAKE_PARTITION_BY) is for the single-table form (--table); in the multi-table form each table's definition sets `partition_by`".into(),
                ));
            }
            if self.filter.is_some() || !self.derive.is_empty() || !self.redact.is_empty() {
                return Err(ArchiveError::Config(
                    "--filter, --derive and --redact are for the single-table form (--table); in the multi-table form each table's definition sets `filter`, `[derive]` and `redact`".into(),
                ));
            }
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
            check_routes(&defs)?;
            for d in defs {
                let url = table_url(&format!("{}/{}", lake.trim_end_matches('/'), d.name))?;
                let route_urls = d
                    .route
                    .iter()
                    .map(|r| table_url(&format!("{}/{}", lake.trim_end_matches('/'), r.table)))
                    .collect::<Result<Vec<_>, _>>()?;
                tables.push(TableTarget {
                    name: d.name.clone(),
                    url,
                    topics: d.topics.clone(),
                    decoder: d.decoder.clone(),
                    partition_by: d.partition_by.clone(),
                    bloom_filter_columns: d.bloom_filter_columns.clone(),
                    target_file_bytes: target_file_size
                        .is_none()
                        .then_some(d.target_file_size_bytes),
                    json_message_attrs: d.json_message_attrs,
                    etl: crate::etl::EtlSpec::from_def(&d),
                    definition: d.source.clone(),
                    route_urls,
                });
            }
        }
        let dlq = match self.dlq_table.clone().or(file.dlq_table.clone()) {
            Some(u) => Some(table_url(&u)?),
            None => None,
        };
        let mut kafka_properties: Vec<(String, String)> =
            file.kafka.0.clone().into_iter().collect();
        kafka_properties.sort();
        kafka_properties.extend(self.kafka.iter().cloned());
        let decoder_options = DecoderOptions {
            cluster: self.cluster.clone().or(file.cluster.clone()),
            ..DecoderOptions::default()
        };
        // Every ETL expression is parsed, typed and tried now: a bad one fails the start
        // (exit code 2), naming the table, the key and the reason.
        for t in &tables {
            t.compile_etl(&decoder_options)?;
        }
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
            instance_id,
            stall_timeout,
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
    fn table_a_with_2mib_files(dir: &Path) -> PathBuf {
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

    // ---- The real command line (clap derive) with environment and file, in a child process ----
    //
    // clap reads each `env = "LOGLAKE_*"` variable with `std::env::var_os` while it builds the
    // command, and `storage_options` reads the `AWS_*` variables: neither takes an injected
    // environment. Setting real variables in this process is not sound: `std::env::set_var` is
    // `unsafe` (Rust 2024) because any other thread reading the environment at the same time —
    // the other tests of this binary, which resolve configurations in parallel, or C code calling
    // getenv — is undefined behaviour, and a static Mutex only orders the tests that take it.
    // Instead each case runs this test binary again with only the ignored `cli_child` test, in an
    // environment with every LOGLAKE_* and AWS_* variable of ours removed and the case's set; the
    // child parses the argument vector with the clap derive parser, resolves it and prints the
    // result as one JSON line. Nothing in this process's environment changes.

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
            "config::tests::cli_child",
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
}
