//! Finding what a delete removes: the rows matching the predicate per file (one DataFusion query
//! over the table), and the "keep this row" filter a file is rewritten with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use url::Url;

use super::ActiveFile;
use crate::error::CompactError;

/// The name of the file-path column of the candidate query.
const FILE_COLUMN: &str = "__loglake_file";

/// A DataFusion error of table `table` while doing `what`.
fn df_error(
    table: &str,
    what: String,
) -> impl Fn(datafusion::error::DataFusionError) -> CompactError {
    let table = table.to_string();
    move |e| CompactError::DataFusion {
        table: table.clone(),
        what: what.clone(),
        source: Box::new(e),
    }
}

/// Matching rows per file, and their (topic, partition, offset) when the table has them.
pub(super) async fn find_matches(
    name: &str,
    table: &DeltaTable,
    predicate: &str,
) -> Result<(BTreeMap<String, u64>, Vec<(String, i32, i64)>), CompactError> {
    let ctx = SessionContext::new();
    let err = |what: &str| df_error(name, format!("{what} (--where {predicate})"));
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| CompactError::Internal(format!("table {name}: {e}")))?;
    let provider = table
        .table_provider()
        .with_file_column(FILE_COLUMN)
        .await
        .map_err(|e| CompactError::Internal(format!("table {name}: {e}")))?;
    let has_offsets = ["kafka_topic", "kafka_partition", "kafka_offset"]
        .iter()
        .all(|c| provider.schema().index_of(c).is_ok());
    ctx.register_table("t", provider)
        .map_err(err("registering"))?;
    let coords = if has_offsets {
        "kafka_topic, kafka_partition, kafka_offset"
    } else {
        "CAST(NULL AS VARCHAR), CAST(NULL AS INT), CAST(NULL AS BIGINT)"
    };
    let sql = format!("SELECT {FILE_COLUMN}, {coords} FROM t WHERE ({predicate})");
    let df = ctx
        .sql(&sql)
        .await
        .map_err(|e| CompactError::Config(format!("table {name}: --where {predicate}: {e}")))?;
    let batches = df
        .collect()
        .await
        .map_err(err("finding the matching rows"))?;
    let mut per_file: BTreeMap<String, u64> = BTreeMap::new();
    let mut offsets = Vec::new();
    let utf8 = |a: &arrow::array::ArrayRef| {
        arrow::compute::cast(a, &DataType::Utf8)
            .map_err(|e| CompactError::Internal(format!("table {name}: {e}")))
    };
    for b in batches {
        let files = utf8(b.column(0))?;
        let files = files.as_string::<i32>();
        let topics = utf8(b.column(1))?;
        let topics = topics.as_string_opt::<i32>();
        let parts = b.column(2).as_primitive_opt::<Int32Type>();
        let offs = b.column(3).as_primitive_opt::<Int64Type>();
        for i in 0..b.num_rows() {
            *per_file.entry(files.value(i).to_string()).or_default() += 1;
            if let (Some(t), Some(p), Some(o)) = (topics, parts, offs)
                && !t.is_null(i)
                && !p.is_null(i)
                && !o.is_null(i)
            {
                offsets.push((t.value(i).to_string(), p.value(i), o.value(i)));
            }
        }
    }
    Ok((per_file, offsets))
}

/// The physical "keep this row" filter for one file: `CASE WHEN predicate THEN false ELSE true
/// END` (a row where it is NULL stays) with the
/// file's partition values in place of the partition columns (the file holds only the others).
pub(super) fn keep_filter(
    name: &str,
    predicate: &str,
    file_schema: &SchemaRef,
    partition_values: &HashMap<String, Option<String>>,
) -> Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>, CompactError> {
    let ctx = SessionContext::new();
    let err = |what: &str| df_error(name, format!("{what} (--where {predicate})"));
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for k in partition_values.keys() {
        fields.push(Field::new(k, DataType::Utf8, true));
    }
    let full = DFSchema::try_from(Schema::new(fields)).map_err(err("schema"))?;
    let parsed = ctx
        .parse_sql_expr(predicate, &full)
        .map_err(|e| CompactError::Config(format!("table {name}: --where {predicate}: {e}")))?;
    let substituted = parsed
        .transform(|e| {
            if let Expr::Column(c) = &e
                && let Some(v) = partition_values.get(&c.name)
            {
                return Ok(Transformed::yes(cast(
                    lit(ScalarValue::Utf8(v.clone())),
                    DataType::Utf8,
                )));
            }
            Ok(Transformed::no(e))
        })
        .map_err(err("substituting partition values"))?
        .data;
    // CASE WHEN predicate THEN false ELSE true END: rows where it is NULL stay
    let keep = datafusion::logical_expr::when(substituted, lit(false))
        .otherwise(lit(true))
        .map_err(err("planning the filter"))?;
    let files_only = DFSchema::try_from(file_schema.as_ref().clone()).map_err(err("schema"))?;
    ctx.create_physical_expr(keep, &files_only)
        .map_err(err("planning the filter"))
}

/// Matching rows per file, keyed by the path relative to the table root (the file column holds
/// full URLs; the log, paths relative to the root).
pub(super) fn matches_per_file(url: &Url, found: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let root = format!("{}/", url.as_str().trim_end_matches('/'));
    let mut per_file: BTreeMap<String, u64> = BTreeMap::new();
    for (f, n) in found {
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_string();
        *per_file.entry(rel).or_default() += n;
    }
    per_file
}

/// Refuses a match in a file that is not an active file of the planned version.
pub(super) fn check_matches_active(
    name: &str,
    planned: u64,
    per_file: &BTreeMap<String, u64>,
    active: &HashMap<String, ActiveFile>,
) -> Result<(), CompactError> {
    for p in per_file.keys() {
        if !active.contains_key(p) {
            return Err(CompactError::Internal(format!(
                "table {name}: the candidate query named {p}, which is not a file of version {planned}"
            )));
        }
    }
    Ok(())
}
