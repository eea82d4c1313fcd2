//! Errors of `loglake compact` and `loglake checkpoint`: each names the table and the file,
//! group or version concerned.

use loglake_lake::LakeError;
use thiserror::Error;
use url::Url;

use crate::lease::LeaseError;

#[derive(Debug, Error)]
pub enum CompactError {
    /// Wrong or inconsistent flags, or table definitions that cannot be read.
    #[error("configuration: {0}")]
    Config(String),

    #[error(transparent)]
    Lake(#[from] LakeError),

    #[error(transparent)]
    Lease(#[from] LeaseError),

    #[error("table {table} ({url}) does not exist (no Delta log)")]
    NoTable { table: String, url: String },

    #[error("table {table}: {what}: {source}")]
    DataFusion {
        table: String,
        what: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },

    #[error("table {table}: writing {path}: {source}")]
    Parquet {
        table: String,
        path: String,
        #[source]
        source: Box<parquet::errors::ParquetError>,
    },

    #[error(
        "table {table}: rewrote {path} with {written} rows but its {files} input files hold {expected}: not committed"
    )]
    RowCount {
        table: String,
        path: String,
        files: usize,
        expected: u64,
        written: u64,
    },

    #[error("table {table} ({url}): {what} at version {version}: {source}")]
    Delta {
        table: String,
        url: String,
        what: String,
        version: u64,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// Files an operation planned to remove were removed by another writer before it committed.
    #[error(
        "table {table}: files of this {operation} were removed by another writer since it planned \
         (latest version {version}): {files:?}; nothing committed, run it again"
    )]
    FilesGone {
        table: String,
        operation: &'static str,
        version: u64,
        files: Vec<String>,
    },

    /// Every commit attempt lost its race to another writer.
    #[error(
        "table {table}: {attempts} commit attempts all lost to other writers (last at version {version}); nothing committed"
    )]
    RetriesExhausted {
        table: String,
        attempts: usize,
        version: u64,
    },

    #[error("{0}")]
    Internal(String),
}

impl CompactError {
    /// The process exit code: 2 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CompactError::Config(_) => 2,
            CompactError::Lake(e) if e.is_configuration() => 2,
            _ => 1,
        }
    }
}

/// Maps a deltalake error of `what` (reading, committing, …) on table `table` at `version` to
/// [`CompactError::Delta`].
pub(crate) fn delta_err(
    table: &str,
    url: &Url,
    what: &str,
    version: u64,
) -> impl Fn(deltalake::DeltaTableError) -> CompactError {
    let (table, url, what) = (table.to_string(), url.to_string(), what.to_string());
    move |source| CompactError::Delta {
        table: table.clone(),
        url: url.clone(),
        what: what.clone(),
        version,
        source: Box::new(source),
    }
}
