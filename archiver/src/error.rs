//! The archiver's error type. Variants carry the table, topic/partition/offset or file they are
//! about, so a failure in a nightly job names what to look at.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("configuration: {0}")]
    Config(String),

    #[error("Kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    #[error("Delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },

    /// Opening, uploading to or committing to a table (`loglake-lake`); it names the table, its
    /// URL and the version or path concerned.
    #[error(transparent)]
    Lake(#[from] loglake_lake::LakeError),

    #[error(
        "Delta table {table}: offsets of {topic}[{partition}] are at {found:?} in the table, expected {expected:?}: another archiver owns this partition"
    )]
    OffsetConflict {
        table: String,
        topic: String,
        partition: i32,
        expected: Option<i64>,
        found: Option<i64>,
    },

    #[error("decoder: {0}")]
    Schema(#[from] loglake_schemas::SchemaError),

    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error(
        "no progress for {} (--stall-timeout) in consumer group {group}; waiting for: {partitions}{}{hint}",
        humantime::format_duration(*waited),
        if hint.is_empty() { "" } else { ". " }
    )]
    Stalled {
        group: String,
        waited: std::time::Duration,
        /// Each partition the run waited for: assigned or not, position, frozen end.
        partitions: String,
        hint: String,
    },

    /// Records that could not be decoded while no dead-letter table is configured: the run stops
    /// before committing past them, so nothing is dropped.
    #[error(
        "{count} record(s) could not be decoded and no --dlq-table is configured (first: {topic}[{partition}] offset {offset}: {reason}); refusing to drop them"
    )]
    Undecodable {
        count: usize,
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },

    /// The consumer group's rebalance could not be followed (assigning partitions, reading their
    /// positions from the tables, or an error of the group protocol).
    #[error("consumer group rebalance: {0}")]
    Rebalance(String),

    /// A query over a table's rows (`loglake audit`).
    #[error("table {table}: {what}: {source}")]
    Query {
        table: String,
        what: &'static str,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },

    /// Listing, reading or parsing an object under a table (`loglake audit`: the delete records).
    #[error("table {table}: {what} {path}: {source}")]
    Object {
        table: String,
        what: &'static str,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Local I/O: starting the runtime or a thread, writing `gen`'s or `--explain-etl`'s output.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),
}

/// Exit codes of `loglake archive` (README, "Operations"): 0 done, 1 failed (retry may help),
/// 2 bad configuration or usage, 3 shutdown not finished within `--shutdown-timeout`
/// ([`crate::SHUTDOWN_TIMEOUT_EXIT_CODE`]), 4 stalled (`--until-end` made no progress for
/// `--stall-timeout`).
pub const STALLED_EXIT_CODE: u8 = 4;
pub const CONFIG_EXIT_CODE: u8 = 2;

impl ArchiveError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ArchiveError::Config(_) => CONFIG_EXIT_CODE,
            ArchiveError::Lake(e) if e.is_configuration() => CONFIG_EXIT_CODE,
            ArchiveError::Stalled { .. } => STALLED_EXIT_CODE,
            _ => 1,
        }
    }
}
