//! Errors of the insights stages, each naming the table, query, path or option concerned.

/// An insights error.
#[derive(Debug, thiserror::Error)]
pub enum InsightsError {
    /// Opening or discovering the lake failed.
    #[error(transparent)]
    Lake(#[from] loglake_lake::LakeError),
    /// A Delta operation on a table failed.
    #[error("Delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A query failed.
    #[error("query failed: {source} (SQL: {sql})")]
    Query {
        sql: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// Reading an object failed.
    #[error("reading {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// Writing a local file failed.
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad input: an option, a date, a table without the needed columns.
    #[error("{0}")]
    Invalid(String),
}

impl InsightsError {
    /// The process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            InsightsError::Invalid(_) => 2,
            _ => 1,
        }
    }
}
