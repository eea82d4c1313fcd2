//! `loglake delete`: row-level delete (a GDPR erasure) that rewrites only the files holding
//! matching rows.
//!
//! 1. Under the maintenance lease (DESIGN.md I8), the matching rows are found with one DataFusion
//!    query over the table (deltalake's provider with a file-path column): file statistics,
//!    partition values and the Parquet row-group statistics and bloom filters skip what cannot
//!    match, so only candidate files are read.
//! 2. Their Kafka coordinates are written to `_loglake/deletes/<time>-<uuid>.json` *before* the
//!    commit: `loglake audit` counts an offset listed there and absent from the table as deleted,
//!    not missing (an offset still present — the commit never happened — stays a row).
//! 3. Each file with matches is rewritten keeping its other rows in their order (a sorted file
//!    stays sorted); a file whose rows all match is only removed. Every other file is untouched.
//! 4. One commit: `remove` + `add` with `dataChange=true`, operation `DELETE` with the predicate,
//!    and the row and file counts in `operationMetrics`; before it the latest snapshot is re-read
//!    and every file to remove must still be there.
//!
//! Rows an archiver appends after the delete planned are not deleted, even if they match: they
//! stay, and the next `loglake delete` with the same predicate removes them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use loglake_lake::add_action;
use loglake_lake::files::{FileSettings, MAX_ROW_GROUP_ROWS, writer_properties};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use url::Url;

use crate::compact::{Layout, file_schema};
use crate::error::{CompactError, delta_err};
use crate::latest::{Decision, Took, commit_at_latest, open_existing, take_lease};
use crate::lease::Lease;
use crate::rewrite::Rewriter;

/// The name of the file-path column of the candidate query.
const FILE_COLUMN: &str = "__loglake_file";
/// Where the deleted offsets of each run are recorded, under the table root.
pub const DELETES_PREFIX: &str = "_loglake/deletes";

/// How a delete runs (the flags of `loglake delete`).
#[derive(Debug, Clone)]
pub struct DeleteSettings {
    /// A SQL boolean expression over the table's columns (`message LIKE '%jane@example.com%'`).
    pub predicate: String,
    pub dry_run: bool,
    pub lease_ttl: std::time::Duration,
    pub lease_wait: std::time::Duration,
    pub owner: String,
    pub memory_budget: usize,
}

/// A file holding matching rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMatch {
    pub path: String,
    pub rows: u64,
}

/// What one table's delete did (one JSON object per table on stdout).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    pub table: String,
    pub url: String,
    pub lease: String,
    pub predicate: String,
    pub version_before: u64,
    pub version_after: u64,
    pub files_active: usize,
    pub files_matched: usize,
    pub files_rewritten: usize,
    /// Files all of whose rows matched: removed, nothing written in their place.
    pub files_removed: usize,
    pub rows_deleted: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The file recording the deleted Kafka offsets (for `loglake audit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets_record: Option<String>,
    /// With `--dry-run`: matching rows per file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<FileMatch>,
    pub duration_ms: u64,
}

/// The deleted offsets of one run, as recorded under [`DELETES_PREFIX`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeletedOffsets {
    pub predicate: String,
    pub planned_at_version: u64,
    pub time: String,
    /// topic → partition → inclusive offset ranges.
    pub offsets: BTreeMap<String, BTreeMap<i32, Vec<(i64, i64)>>>,
}

/// An active file of the version the delete planned on.
struct ActiveFile {
    size: u64,
    values: HashMap<String, Option<String>>,
    rows: Option<u64>,
}

/// A rewritten file and its partition values (in the table's partition-column order).
struct Output {
    written: crate::rewrite::Written,
    values: Vec<(String, Option<String>)>,
}

/// Sorted, merged inclusive ranges of `offsets`.
pub fn ranges(mut offsets: Vec<i64>) -> Vec<(i64, i64)> {
    offsets.sort_unstable();
    offsets.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for o in offsets {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == o => *hi = o,
            _ => out.push((o, o)),
        }
    }
    out
}

/// Deletes the rows matching `s.predicate` from the table `name` at `url`.
pub async fn delete_rows(
    name: &str,
    url: &Url,
    storage_options: &HashMap<String, String>,
    layout: &Layout,
    s: &DeleteSettings,
) -> Result<DeleteReport, CompactError> {
    let started = Instant::now();
    let mut r = DeleteReport {
        table: name.to_string(),
        url: url.to_string(),
        predicate: s.predicate.clone(),
        ..Default::default()
    };
    let (mut table, v0) = open_existing(name, url, storage_options).await?;
    r.version_before = v0;
    r.version_after = v0;
    let store: Arc<dyn ObjectStore> = table.log_store().object_store(None);
    let mut lease = Lease::new(name, store.clone(), s.owner.clone(), s.lease_ttl);
    let took = take_lease(name, url, &mut table, &mut lease, s.dry_run, s.lease_wait).await?;
    r.lease = took.text();
    if matches!(took, Took::HeldBy(_)) {
        return Ok(r);
    }
    let result = delete_held(name, url, &mut table, layout, s, &store, &mut lease, &mut r).await;
    lease.release().await;
    result?;
    r.version_after = table.version().unwrap_or(v0);
    r.duration_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

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
async fn find_matches(
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
fn keep_filter(
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

/// The name of a delete's output for `input`: a compacted (sorted) file keeps its layout tag,
/// since removing rows keeps the order.
fn output_path(input: &str) -> String {
    let (dir, file) = match input.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), input),
    };
    let id = uuid::Uuid::new_v4();
    match file
        .strip_prefix("compacted-")
        .and_then(|rest| rest.split_once('-'))
    {
        Some((tag, _)) => format!("{dir}compacted-{tag}-{id}.zstd.parquet"),
        None => format!("{dir}part-{id}-d.zstd.parquet"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn delete_held(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    layout: &Layout,
    s: &DeleteSettings,
    store: &Arc<dyn ObjectStore>,
    lease: &mut Lease,
    r: &mut DeleteReport,
) -> Result<(), CompactError> {
    let state = table
        .snapshot()
        .map_err(delta_err(name, url, "reading", r.version_before))?;
    let planned = state.version();
    let mut active: HashMap<String, ActiveFile> = HashMap::new();
    for view in state.log_data().iter() {
        active.insert(
            view.path().to_string(),
            ActiveFile {
                size: view.size().max(0) as u64,
                values: view.partition_values_map(),
                rows: view.num_records().map(|n| n as u64),
            },
        );
    }
    r.files_active = active.len();
    let (found, offsets) = find_matches(name, table, &s.predicate).await?;
    // the file column holds full URLs; the log, paths relative to the table root
    let root = format!("{}/", url.as_str().trim_end_matches('/'));
    let mut per_file: BTreeMap<String, u64> = BTreeMap::new();
    for (f, n) in found {
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_string();
        *per_file.entry(rel).or_default() += n;
    }
    r.files_matched = per_file.len();
    r.rows_deleted = per_file.values().sum();
    for p in per_file.keys() {
        if !active.contains_key(p) {
            return Err(CompactError::Internal(format!(
                "table {name}: the candidate query named {p}, which is not a file of version {planned}"
            )));
        }
    }
    tracing::info!(table = %name, files = per_file.len(), rows = r.rows_deleted, "delete planned");
    if s.dry_run || per_file.is_empty() {
        if s.dry_run {
            r.matches = per_file
                .iter()
                .map(|(p, n)| FileMatch {
                    path: p.clone(),
                    rows: *n,
                })
                .collect();
        }
        return Ok(());
    }

    // 2. the offsets record, before anything changes
    let mut record = DeletedOffsets {
        predicate: s.predicate.clone(),
        planned_at_version: planned,
        time: chrono::Utc::now().to_rfc3339(),
        ..Default::default()
    };
    let mut grouped: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    for (t, p, o) in offsets {
        grouped.entry((t, p)).or_default().push(o);
    }
    for ((t, p), offs) in grouped {
        record.offsets.entry(t).or_default().insert(p, ranges(offs));
    }
    let record_path = format!(
        "{DELETES_PREFIX}/{}-{}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        uuid::Uuid::new_v4()
    );
    let body = serde_json::to_vec(&record).map_err(|e| CompactError::Internal(e.to_string()))?;
    store
        .put(&record_path.as_str().into(), PutPayload::from(body))
        .await
        .map_err(|e| CompactError::Internal(format!("table {name}: writing {record_path}: {e}")))?;
    r.offsets_record = Some(record_path);

    // 3. rewrite the files with matches
    let schema = file_schema(table, layout, name, url)?;
    let rewriter = Rewriter::new(name, store.clone(), s.memory_budget, None)?;
    let margin = s.lease_ttl / 2;
    let mut outputs: Vec<Output> = Vec::new();
    let columns: Vec<String> = state.metadata().partition_columns().to_vec();
    for (path, matched) in &per_file {
        lease.ensure(margin).await?;
        let Some(ActiveFile { size, values, rows }) = active.get(path) else {
            continue;
        };
        r.bytes_in += size;
        if rows.is_some_and(|n| n == *matched) {
            r.files_removed += 1;
            continue; // every row matches: removed, nothing written
        }
        let keep = keep_filter(name, &s.predicate, &schema, values)?;
        let out = output_path(path);
        let ndv = rows.map(|n| n.clamp(1, MAX_ROW_GROUP_ROWS as u64));
        let props = writer_properties(
            &schema,
            &FileSettings {
                bloom_filter_columns: layout.bloom_filter_columns.clone(),
                ..Default::default()
            }
            .with_bloom_filter_ndv(ndv),
        );
        let written = rewriter
            .filter_file(path, *size, &schema, keep, props, &out)
            .await?;
        if let Some(n) = rows
            && written.rows + matched != *n
        {
            let _ = store.delete(&out.as_str().into()).await;
            return Err(CompactError::RowCount {
                table: name.to_string(),
                path: out,
                files: 1,
                expected: n - matched,
                written: written.rows,
            });
        }
        if written.rows == 0 {
            let _ = store.delete(&out.as_str().into()).await;
            r.files_removed += 1;
            continue;
        }
        r.files_rewritten += 1;
        r.bytes_out += written.size;
        let ordered: Vec<(String, Option<String>)> = columns
            .iter()
            .map(|c| (c.clone(), values.get(c).cloned().flatten()))
            .collect();
        outputs.push(Output {
            written,
            values: ordered,
        });
    }

    // 4. one commit
    lease.ensure(margin).await?;
    let removed: HashSet<&str> = per_file.keys().map(String::as_str).collect();
    commit_delete(name, url, table, &removed, &outputs, &schema, s, r)
        .await
        .inspect_err(|_| {
            let store = store.clone();
            let paths: Vec<String> = outputs.iter().map(|o| o.written.path.clone()).collect();
            tokio::spawn(async move {
                for p in paths {
                    let _ = store.delete(&p.as_str().into()).await;
                }
            });
        })
}

#[allow(clippy::too_many_arguments)]
async fn commit_delete(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    removed: &HashSet<&str>,
    outputs: &[Output],
    schema: &SchemaRef,
    s: &DeleteSettings,
    r: &DeleteReport,
) -> Result<(), CompactError> {
    let metrics = serde_json::json!({
        "numDeletedRows": r.rows_deleted,
        "numRemovedFiles": removed.len(),
        "numAddedFiles": outputs.len(),
        "numCopiedRows": outputs.iter().map(|o| o.written.rows).sum::<u64>(),
    });
    let metadata = Some(("operationMetrics".to_string(), metrics));
    commit_at_latest(name, url, table, metadata, |state| {
        let version = state.version();
        let mut actions = Vec::new();
        let mut found = HashSet::new();
        for view in state.log_data().iter() {
            let p = view.path().to_string();
            if removed.contains(p.as_str()) {
                actions.push(Action::Remove(view.remove_action(true)));
                found.insert(p);
            }
        }
        if found.len() != removed.len() {
            let gone: Vec<&&str> = removed.iter().filter(|p| !found.contains(**p)).collect();
            return Err(CompactError::Internal(format!(
                "table {name}: files of this delete were removed by another writer since it planned \
                 (version {version}): {gone:?}; nothing committed, run it again"
            )));
        }
        for o in outputs {
            actions.push(Action::Add(add_action(
                schema,
                o.written.path.clone(),
                o.written.size as i64,
                o.values.clone(),
                &o.written.metadata,
                true,
            )));
        }
        Ok(Decision::Commit {
            actions,
            operation: Box::new(DeltaOperation::Delete {
                predicate: Some(s.predicate.clone()),
            }),
            out: (),
        })
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_collapse_into_ranges() {
        assert_eq!(
            ranges(vec![5, 3, 4, 9, 10, 1, 4]),
            vec![(1, 1), (3, 5), (9, 10)]
        );
        assert!(ranges(vec![]).is_empty());
    }

    #[test]
    fn outputs_keep_the_layout_tag_of_sorted_inputs() {
        let o = output_path("dt=2026-01-01/hour=3/compacted-0badcafe-1234-abcd.zstd.parquet");
        assert!(
            o.starts_with("dt=2026-01-01/hour=3/compacted-0badcafe-"),
            "{o}"
        );
        let o = output_path("dt=2026-01-01/part-00001-xyz.zstd.parquet");
        assert!(
            o.starts_with("dt=2026-01-01/part-") && o.ends_with("-d.zstd.parquet"),
            "{o}"
        );
    }
}
