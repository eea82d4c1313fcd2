//! The flags of `loglake archive` (clap `Args`), each with its `LOGLAKE_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{parse_bytes, parse_duration};

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

/// A `key=value` flag value (`-X`, `--derive`), trimmed.
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}
