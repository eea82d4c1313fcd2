//! The export's SQL, planned without I/O: the source query, the split expression, the
//! projection of a view and the order that makes shards reproducible.

use arrow::datatypes::{DataType, SchemaRef};

use super::{MlOptions, MlSource, MlView, Sharding};
use crate::error::ExportError;
use crate::split::SPLIT_UDF;

/// The column of the export query naming each row's split.
pub(super) const SPLIT_COL: &str = "__loglake_split";

/// Refuses options that cannot make an export (several splits without a key, no shards).
pub(super) fn check_options(opts: &MlOptions) -> Result<(), ExportError> {
    if opts.splits.len() > 1 && opts.split_by.is_none() {
        return Err(ExportError::Usage(
            "--split with more than one split needs --split-by COLUMN".into(),
        ));
    }
    match opts.sharding {
        Sharding::Count(0) => return Err(ExportError::Usage("--shards must be at least 1".into())),
        Sharding::Size(0) => {
            return Err(ExportError::Usage("--shard-size must be positive".into()));
        }
        _ => {}
    }
    Ok(())
}

/// `c` as a quoted SQL identifier.
fn quote(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

/// The source's SQL (without a trailing `;`).
pub(super) fn base_sql(source: &MlSource) -> Result<String, ExportError> {
    Ok(match source {
        MlSource::Query(q) => {
            let q = q.trim().trim_end_matches(';').trim();
            if q.is_empty() {
                return Err(ExportError::Usage("--query is empty".into()));
            }
            q.to_string()
        }
        MlSource::Table { name, date } => format!(
            "SELECT * FROM {} WHERE dt = DATE '{}'",
            quote(name),
            date.format("%Y-%m-%d")
        ),
    })
}

/// Whether a column of this type can order rows (not a list, map, struct or union).
fn is_scalar(dt: &DataType) -> bool {
    !matches!(
        dt,
        DataType::Map(..)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::Struct(_)
            | DataType::FixedSizeList(..)
            | DataType::Union(..)
    )
}

/// The projection (with the split column) and the ordering of the export query.
pub(super) fn projection(
    schema: &SchemaRef,
    view: Option<MlView>,
    split_expr: &str,
) -> Result<(Vec<String>, Vec<String>), ExportError> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    let all_scalar: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| is_scalar(f.data_type()))
        .map(|f| quote(f.name()))
        .collect();
    match view {
        None => {
            let mut proj: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
            proj.push(format!("{split_expr} AS {SPLIT_COL}"));
            Ok((proj, all_scalar))
        }
        Some(MlView::Loghub) => {
            for c in ["ts", "message", "level"] {
                if !has(c) {
                    return Err(ExportError::Usage(format!(
                        "--view loghub needs a column {c} (a container or OTLP log table); the rows have {}",
                        column_list(schema)
                    )));
                }
            }
            let component = match (has("app"), has("container")) {
                (true, true) => "coalesce(\"app\", \"container\")",
                (true, false) => "\"app\"",
                (false, true) => "\"container\"",
                (false, false) => "CAST(NULL AS VARCHAR)",
            };
            let mut order = vec!["\"ts\"".to_string()];
            order.extend(all_scalar.into_iter().filter(|c| c != "\"ts\""));
            let proj = vec![
                format!(
                    "row_number() OVER (ORDER BY {}) AS \"LineId\"",
                    order.join(", ")
                ),
                "\"ts\" AS \"Timestamp\"".into(),
                "\"level\" AS \"Level\"".into(),
                format!("{component} AS \"Component\""),
                "\"message\" AS \"Content\"".into(),
                "substr(md5(log_template(\"message\")), 1, 8) AS \"EventId\"".into(),
                "log_template(\"message\") AS \"EventTemplate\"".into(),
                format!("{split_expr} AS {SPLIT_COL}"),
            ];
            Ok((proj, vec!["\"LineId\"".into()]))
        }
    }
}

/// The column names of `schema`, for error messages.
fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The expression naming a row's split: the split of the `--split-by` column's text, or the
/// only split.
pub(super) fn split_expr(schema: &SchemaRef, opts: &MlOptions) -> Result<String, ExportError> {
    Ok(match &opts.split_by {
        Some(col) => {
            if schema.field_with_name(col).is_err() {
                return Err(ExportError::Usage(format!(
                    "--split-by {col}: no such column; the rows have {}",
                    column_list(schema)
                )));
            }
            format!("{SPLIT_UDF}(arrow_cast({}, 'Utf8'))", quote(col))
        }
        None => format!("'{}'", opts.splits[0].name),
    })
}

/// Pass 1's query: rows per split of the rows `inner`.
pub(super) fn count_sql(inner: &str) -> String {
    format!("SELECT {SPLIT_COL}, count(*) FROM ({inner}) AS __rows GROUP BY 1")
}

/// Pass 2's query: the rows `inner` ordered by split, then by `order`.
pub(super) fn ordered_sql(inner: &str, order: &[String]) -> String {
    let mut order_by = vec![SPLIT_COL.to_string()];
    order_by.extend(order.iter().cloned());
    format!(
        "SELECT * FROM ({inner}) AS __rows ORDER BY {}",
        order_by.join(", ")
    )
}
