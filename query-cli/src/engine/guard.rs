//! The read-only guard: `loglake query` refuses statements that write to storage unless run with
//! `--allow-write`.

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

pub(super) fn write_error(what: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{what} writes to storage and loglake query is read-only by default; rerun with --allow-write"
    ))
}

/// Reject statements that write to storage.
pub(super) fn check_read_only(st: &DFStatement) -> Result<()> {
    match st {
        DFStatement::CopyTo(_) => Err(write_error("COPY TO")),
        DFStatement::Explain(e) => check_read_only(&e.statement),
        DFStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Insert(_) => Err(write_error("INSERT")),
            SqlStatement::Update { .. } => Err(write_error("UPDATE")),
            SqlStatement::Delete(_) => Err(write_error("DELETE")),
            SqlStatement::Merge { .. } => Err(write_error("MERGE")),
            SqlStatement::Truncate { .. } => Err(write_error("TRUNCATE")),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
