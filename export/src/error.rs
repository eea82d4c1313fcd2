//! Errors of `loglake export`, each naming the table, file, column or statement concerned, and
//! the exit codes: 2 for what retrying cannot fix (usage, configuration, a target that is not an
//! export), 1 for the rest (storage, a query that failed while running).

use thiserror::Error;

/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the export failed (storage, query execution); a re-run may succeed.
pub const EXIT_FAILED: u8 = 1;

#[derive(Debug, Error)]
pub enum ExportError {
    /// Wrong invocation or configuration (exit 2).
    #[error("{0}")]
    Usage(String),

    /// The target holds objects but no export marker: it is not an export (exit 2).
    #[error(
        "target {target} is not a loglake {kind} export (it holds {found} but no {marker}); \
         choose an empty location or a previous {kind} export"
    )]
    NotAnExport {
        target: String,
        kind: &'static str,
        found: String,
        marker: &'static str,
    },

    /// A query was refused when planned: unknown table or column, syntax (exit 2).
    #[error("query {sql:?}: {message}")]
    QueryPlan { sql: String, message: String },

    /// A query failed while running (exit 1).
    #[error("query {sql:?}: {message}")]
    QueryRun { sql: String, message: String },

    /// Reading or writing an object of the target or the lake (exit 1).
    #[error("{op} {path}: {message}")]
    Store {
        op: &'static str,
        path: String,
        message: String,
    },

    /// Encoding a file (Parquet, TFRecord) failed (exit 1).
    #[error("writing {path}: {message}")]
    Encode { path: String, message: String },

    #[error(transparent)]
    Lake(#[from] loglake_lake::LakeError),

    #[error("{0}")]
    Internal(String),
}

impl ExportError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::Usage(_)
            | ExportError::NotAnExport { .. }
            | ExportError::QueryPlan { .. } => EXIT_USAGE,
            ExportError::Lake(loglake_lake::LakeError::Location { .. }) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }

    pub(crate) fn store(op: &'static str, path: impl ToString, e: impl std::fmt::Display) -> Self {
        ExportError::Store {
            op,
            path: path.to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn encode(path: impl ToString, e: impl std::fmt::Display) -> Self {
        ExportError::Encode {
            path: path.to_string(),
            message: e.to_string(),
        }
    }

    /// A DataFusion error of `sql`: planning errors (unknown table or column, syntax, types)
    /// are the caller's, the rest happened while running.
    pub(crate) fn query(sql: &str, e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        let root = e.find_root();
        let planning = matches!(
            root,
            D::Plan(_) | D::SQL(..) | D::SchemaError(..) | D::NotImplemented(_)
        );
        let message = e.to_string();
        let sql = sql.to_string();
        if planning {
            ExportError::QueryPlan { sql, message }
        } else {
            ExportError::QueryRun { sql, message }
        }
    }
}
