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

mod matches;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::table::state::DeltaTableState;
use loglake_lake::add_action;
use loglake_lake::files::{FileSettings, MAX_ROW_GROUP_ROWS, writer_properties};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use url::Url;

use crate::compact::{Layout, file_schema};
use crate::error::{CompactError, delta_err};
use crate::latest::{Decision, Took, commit_at_latest, open_existing, removes, take_lease};
use crate::lease::Lease;
use crate::rewrite::Rewriter;
use matches::{check_matches_active, find_matches, keep_filter, matches_per_file};

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
    let job = DeleteJob {
        name,
        url,
        layout,
        s,
        store,
    };
    let result = job.held(&mut table, &mut lease, &mut r).await;
    lease.release().await;
    result?;
    r.version_after = table.version().unwrap_or(v0);
    r.duration_ms = started.elapsed().as_millis() as u64;
    Ok(r)
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

/// One delete of rows from one table: what its steps share.
struct DeleteJob<'a> {
    name: &'a str,
    url: &'a Url,
    layout: &'a Layout,
    s: &'a DeleteSettings,
    store: Arc<dyn ObjectStore>,
}

impl DeleteJob<'_> {
    /// The delete under the table's lease: plan on the latest snapshot, record the matched offsets,
    /// rewrite the files with matches, commit once.
    async fn held(
        &self,
        table: &mut DeltaTable,
        lease: &mut Lease,
        r: &mut DeleteReport,
    ) -> Result<(), CompactError> {
        let (name, url, layout, s, store) = (self.name, self.url, self.layout, self.s, &self.store);
        let state = table
            .snapshot()
            .map_err(delta_err(name, url, "reading", r.version_before))?;
        let planned = state.version();
        let active = active_files(state);
        let columns: Vec<String> = state.metadata().partition_columns().to_vec();
        r.files_active = active.len();
        let (found, offsets) = find_matches(name, table, &s.predicate).await?;
        let per_file = matches_per_file(url, found);
        r.files_matched = per_file.len();
        r.rows_deleted = per_file.values().sum();
        check_matches_active(name, planned, &per_file, &active)?;
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
        let record = offsets_record(&s.predicate, planned, offsets);
        r.offsets_record = Some(write_offsets_record(store.as_ref(), name, &record).await?);

        // 3. rewrite the files with matches
        let schema = file_schema(table, layout, name, url)?;
        let filter = FileFilter {
            name,
            predicate: &s.predicate,
            layout,
            schema: schema.clone(),
            store: store.clone(),
            rewriter: Rewriter::new(name, store.clone(), s.memory_budget, None)?,
            columns,
        };
        let margin = s.lease_ttl / 2;
        let outputs = filter
            .rewrite_all(&per_file, &active, lease, margin, r)
            .await?;

        // 4. one commit
        lease.ensure(margin).await?;
        let removed: HashSet<&str> = per_file.keys().map(String::as_str).collect();
        self.commit(table, &removed, &outputs, &schema, r)
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

    /// Commits the delete (removes with `dataChange=true`, the rewritten files' adds) at the latest
    /// version + 1, after checking on that snapshot that every file it removes is still there.
    async fn commit(
        &self,
        table: &mut DeltaTable,
        removed: &HashSet<&str>,
        outputs: &[Output],
        schema: &SchemaRef,
        r: &DeleteReport,
    ) -> Result<(), CompactError> {
        let (name, url, s) = (self.name, self.url, self.s);
        let metrics = serde_json::json!({
            "numDeletedRows": r.rows_deleted,
            "numRemovedFiles": removed.len(),
            "numAddedFiles": outputs.len(),
            "numCopiedRows": outputs.iter().map(|o| o.written.rows).sum::<u64>(),
        });
        let metadata = Some(("operationMetrics".to_string(), metrics));
        commit_at_latest(name, url, table, metadata, |state| {
            let r = removes(state, removed, true);
            if !r.missing.is_empty() {
                return Err(CompactError::FilesGone {
                    table: name.to_string(),
                    operation: "delete",
                    version: state.version(),
                    files: r.missing,
                });
            }
            let mut actions = r.actions;
            actions.extend(outputs.iter().map(|o| {
                Action::Add(add_action(
                    schema,
                    o.written.path.clone(),
                    o.written.size as i64,
                    o.values.clone(),
                    &o.written.metadata,
                    true,
                ))
            }));
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
}

/// The active files of the snapshot the delete plans on, by path.
fn active_files(state: &DeltaTableState) -> HashMap<String, ActiveFile> {
    state
        .log_data()
        .iter()
        .map(|view| {
            (
                view.path().to_string(),
                ActiveFile {
                    size: view.size().max(0) as u64,
                    values: view.partition_values_map(),
                    rows: view.num_records().map(|n| n as u64),
                },
            )
        })
        .collect()
}

/// The record of the offsets a delete planned on version `planned` removes.
fn offsets_record(
    predicate: &str,
    planned: u64,
    offsets: Vec<(String, i32, i64)>,
) -> DeletedOffsets {
    let mut record = DeletedOffsets {
        predicate: predicate.to_string(),
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
    record
}

/// Writes `record` under [`DELETES_PREFIX`]; returns its path.
async fn write_offsets_record(
    store: &dyn ObjectStore,
    name: &str,
    record: &DeletedOffsets,
) -> Result<String, CompactError> {
    let record_path = format!(
        "{DELETES_PREFIX}/{}-{}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        uuid::Uuid::new_v4()
    );
    let body = serde_json::to_vec(record).map_err(|e| CompactError::Internal(e.to_string()))?;
    store
        .put(&record_path.as_str().into(), PutPayload::from(body))
        .await
        .map_err(|e| CompactError::Internal(format!("table {name}: writing {record_path}: {e}")))?;
    Ok(record_path)
}

/// What rewriting the files with matches shares: the predicate, the layout and file schema, the
/// store and the table's partition columns.
struct FileFilter<'a> {
    name: &'a str,
    predicate: &'a str,
    layout: &'a Layout,
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    rewriter: Rewriter,
    columns: Vec<String>,
}

impl FileFilter<'_> {
    /// Rewrites every file with matches in turn (the lease checked before each); the outputs to
    /// commit.
    async fn rewrite_all(
        &self,
        per_file: &BTreeMap<String, u64>,
        active: &HashMap<String, ActiveFile>,
        lease: &mut Lease,
        margin: Duration,
        r: &mut DeleteReport,
    ) -> Result<Vec<Output>, CompactError> {
        let mut outputs: Vec<Output> = Vec::new();
        for (path, matched) in per_file {
            lease.ensure(margin).await?;
            let Some(file) = active.get(path) else {
                continue;
            };
            r.bytes_in += file.size;
            match self.drop_matches(path, *matched, file).await? {
                Some(out) => {
                    r.files_rewritten += 1;
                    r.bytes_out += out.written.size;
                    outputs.push(out);
                }
                None => r.files_removed += 1,
            }
        }
        Ok(outputs)
    }

    /// Rewrites the file at `path` without its `matched` rows; `None` when no row is left (the
    /// file is only removed, nothing written in its place).
    async fn drop_matches(
        &self,
        path: &str,
        matched: u64,
        file: &ActiveFile,
    ) -> Result<Option<Output>, CompactError> {
        let ActiveFile { size, values, rows } = file;
        if rows.is_some_and(|n| n == matched) {
            return Ok(None); // every row matches: removed, nothing written
        }
        let keep = keep_filter(self.name, self.predicate, &self.schema, values)?;
        let out = output_path(path);
        let ndv = rows.map(|n| n.clamp(1, MAX_ROW_GROUP_ROWS as u64));
        let props = writer_properties(
            &self.schema,
            &FileSettings {
                bloom_filter_columns: self.layout.bloom_filter_columns.clone(),
                ..Default::default()
            }
            .with_bloom_filter_ndv(ndv),
        );
        let written = self
            .rewriter
            .filter_file(path, *size, &self.schema, keep, props, &out)
            .await?;
        if let Some(n) = rows
            && written.rows + matched != *n
        {
            let _ = self.store.delete(&out.as_str().into()).await;
            return Err(CompactError::RowCount {
                table: self.name.to_string(),
                path: out,
                files: 1,
                expected: n - matched,
                written: written.rows,
            });
        }
        if written.rows == 0 {
            let _ = self.store.delete(&out.as_str().into()).await;
            return Ok(None);
        }
        let ordered: Vec<(String, Option<String>)> = self
            .columns
            .iter()
            .map(|c| (c.clone(), values.get(c).cloned().flatten()))
            .collect();
        Ok(Some(Output {
            written,
            values: ordered,
        }))
    }
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
