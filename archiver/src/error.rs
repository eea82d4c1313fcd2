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

    #[error("{0}")]
    Other(String),
}
