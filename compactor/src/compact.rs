//! The compaction of one table: lease → plan → per group rewrite, re-check, commit → checkpoint.
//!
//! Invariants (DESIGN.md I6–I8) and where they are enforced:
//! - a compaction never changes the rows of a table: each group's output is checked to hold
//!   exactly the rows of its inputs ([`check_rows`]) and is committed as `remove` + `add` with
//!   `dataChange=false`, never with `txn` actions, so the archiver's offsets stay as they are;
//! - one maintenance writer per table: the lease ([`crate::lease`]) is held from planning to the
//!   last commit and checked before every commit;
//! - every file a commit removes is still in the latest snapshot when committing
//!   ([`crate::latest::removes`], re-run after every lost commit race): deltalake's own conflict check
//!   misses another writer's `dataChange=false` removes;
//! - one commit per group at exactly `latest + 1` with put-if-absent: a crash loses only the group
//!   in flight, whose upload is then an orphan for vacuum.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use loglake_lake::add_action;
use loglake_lake::files::{FileSettings, MAX_ROW_GROUP_ROWS, writer_properties};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use url::Url;

use crate::checkpoint::{CheckpointMetrics, checkpoint_table};
use crate::error::{CompactError, delta_err};
use crate::latest::{
    Decision, Removes, Took, commit_at_latest, open_existing, removes, take_lease,
};
use crate::lease::Lease;
use crate::plan::{FileInfo, Group, PartitionInfo, Plan, PlanOptions, partition_end, plan};
use crate::rewrite::Rewriter;

/// What the compactor needs of a table's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Sort keys of the rewritten files (columns missing from the files are ignored).
    pub sort_by: Vec<String>,
    pub bloom_filter_columns: Vec<String>,
    pub target_file_size: u64,
    /// The table's schema when loglake knows the table (from its definition's decoder); else
    /// the Delta schema is used. Files are read and written with it, less the partition columns.
    #[serde(skip)]
    pub schema: Option<SchemaRef>,
}

impl Layout {
    /// A short tag of the sort keys: files the compactor wrote under other keys are fresh again.
    pub fn tag(&self) -> String {
        // FNV-1a, stable across builds
        let mut h: u32 = 0x811c_9dc5;
        for b in self.sort_by.join(",").bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }

    /// Whether `path` is a file the compactor wrote with this layout.
    pub fn settled(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        name.starts_with(&format!("compacted-{}-", self.tag()))
    }
}

/// How a compaction runs (the flags of `loglake compact`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub settle: Duration,
    /// Settled files under this fraction of the target merge again with late data.
    pub min_size_fraction: f64,
    pub memory_budget: usize,
    pub spill_dir: Option<std::path::PathBuf>,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
    pub dry_run: bool,
    pub checkpoint: bool,
    pub log_retention: Option<Duration>,
    /// Who this run is, for the lease (host, pid, run id).
    pub owner: String,
}

/// What one table's compaction did (one JSON object per table on stdout).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactMetrics {
    pub table: String,
    pub url: String,
    /// `acquired`, `held by <owner>` (nothing done) or `not taken (dry run)`.
    pub lease: String,
    pub version_before: u64,
    pub version_after: u64,
    pub partitions_seen: usize,
    pub partitions_skipped_open: usize,
    pub partitions_skipped_done: usize,
    pub partitions_compacted: usize,
    pub groups_planned: usize,
    pub groups_committed: usize,
    /// Groups not committed because another writer removed one of their files first.
    pub groups_conflicted: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rows: u64,
    pub commits: usize,
    /// Commit races lost to other writers (archiver appends) and retried.
    pub commit_retries: usize,
    /// Object-store requests a full scan of the table saves: files removed minus files added.
    pub requests_saved: i64,
    pub checkpoint: Option<CheckpointMetrics>,
    pub duration_ms: u64,
    /// The plan, with `--dry-run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

/// A partition's values, in the table's partition-column order.
type PartitionValues = Vec<(String, Option<String>)>;

/// A table's data files by partition, as the planner sees them.
fn partitions_of(
    table: &DeltaTable,
    layout: &Layout,
    name: &str,
    url: &Url,
) -> Result<Vec<PartitionInfo>, CompactError> {
    let state = table
        .snapshot()
        .map_err(delta_err(name, url, "reading", 0))?;
    let columns: Vec<String> = state.metadata().partition_columns().to_vec();
    let mut by_values: BTreeMap<PartitionValues, (Vec<FileInfo>, Option<i64>)> = BTreeMap::new();
    for view in state.log_data().iter() {
        if view.deletion_vector_descriptor().is_some() {
            continue; // rewriting would need the deletion vector applied: left alone
        }
        let path = view.path().to_string();
        if !plain_path(&path) {
            // deltalake hands out these paths decoded, while the log and the store hold them
            // encoded: a remove of the decoded path would not match its add. Left alone.
            continue;
        }
        let map = view.partition_values_map();
        let values: Vec<(String, Option<String>)> = columns
            .iter()
            .map(|c| (c.clone(), map.get(c).cloned().flatten()))
            .collect();
        let stats: Option<serde_json::Value> =
            view.stats().and_then(|s| serde_json::from_str(&s).ok());
        let max_ts = stats
            .as_ref()
            .and_then(|s| s.pointer("/maxValues/ts"))
            .and_then(|v| v.as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        let entry = by_values.entry(values).or_default();
        entry.1 = entry.1.max(max_ts);
        entry.0.push(FileInfo {
            settled: layout.settled(&path),
            path,
            size: view.size().max(0) as u64,
            rows: view.num_records().map(|n| n as u64),
        });
    }
    Ok(by_values
        .into_iter()
        .map(|(values, (files, max_ts))| PartitionInfo {
            end: partition_end(&values).or_else(|| {
                max_ts.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            }),
            values,
            files,
        })
        .collect())
}

/// A path whose log, store and decoded forms are the same: ASCII letters, digits and `._-=/`
/// (what the archiver writes, and most writers for plain partition values).
pub fn plain_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'=' | b'/'))
}

/// The file schema to read and write: the layout's, else the Delta schema without the
/// partition columns.
pub(crate) fn file_schema(
    table: &DeltaTable,
    layout: &Layout,
    name: &str,
    url: &Url,
) -> Result<SchemaRef, CompactError> {
    let state = table
        .snapshot()
        .map_err(delta_err(name, url, "reading", 0))?;
    let parts = state.metadata().partition_columns().to_vec();
    let full = match &layout.schema {
        Some(s) => s.clone(),
        None => state.snapshot().arrow_schema(),
    };
    let keep: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| !parts.contains(f.name()))
        .cloned()
        .collect();
    Ok(Arc::new(Schema::new(keep)))
}

/// Refuses an output whose row count differs from its inputs' (`numRecords` of each).
pub fn check_rows(
    table: &str,
    group: &Group,
    path: &str,
    written: u64,
) -> Result<(), CompactError> {
    match group.rows() {
        Some(expected) if expected != written => Err(CompactError::RowCount {
            table: table.to_string(),
            path: path.to_string(),
            files: group.files.len(),
            expected,
            written,
        }),
        _ => Ok(()),
    }
}

/// Compacts one table (see the module docs). A lease held by another writer is not an error:
/// the metrics say so and nothing is done.
pub async fn compact_table(
    name: &str,
    url: &Url,
    storage_options: &HashMap<String, String>,
    layout: &Layout,
    settings: &Settings,
) -> Result<CompactMetrics, CompactError> {
    let started = Instant::now();
    let mut m = CompactMetrics {
        table: name.to_string(),
        url: url.to_string(),
        ..Default::default()
    };
    let (mut table, v0) = open_existing(name, url, storage_options).await?;
    m.version_before = v0;
    m.version_after = v0;
    let store: Arc<dyn ObjectStore> = table.log_store().object_store(None);
    let mut lease = Lease::new(
        name,
        store.clone(),
        settings.owner.clone(),
        settings.lease_ttl,
    );
    let took = take_lease(
        name,
        url,
        &mut table,
        &mut lease,
        settings.dry_run,
        settings.lease_wait,
    )
    .await?;
    m.lease = took.text();
    if matches!(took, Took::HeldBy(_)) {
        m.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(m);
    }
    let result = compact_held(name, url, &mut table, layout, settings, &mut lease, &mut m).await;
    if result.is_ok() && settings.checkpoint && !settings.dry_run {
        match checkpoint_table(name, url, &mut table, settings.log_retention).await {
            Ok(c) => m.checkpoint = Some(c),
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        }
    }
    lease.release().await;
    result?;
    m.version_after = table.version().unwrap_or(v0);
    m.duration_ms = started.elapsed().as_millis() as u64;
    Ok(m)
}

/// Plans and runs the groups while holding the lease.
async fn compact_held(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    layout: &Layout,
    settings: &Settings,
    lease: &mut Lease,
    m: &mut CompactMetrics,
) -> Result<(), CompactError> {
    let partitions = partitions_of(table, layout, name, url)?;
    let the_plan = plan(
        partitions,
        &plan_options(layout, settings, chrono::Utc::now()),
    );
    m.record_plan(&the_plan);
    tracing::info!(table = %name, partitions = the_plan.partitions_seen, open = the_plan.skipped_open,
        done = the_plan.skipped_done, groups = m.groups_planned, "compaction planned");
    if settings.dry_run {
        m.plan = Some(the_plan);
        return Ok(());
    }
    let schema = file_schema(table, layout, name, url)?;
    let store = table.log_store().object_store(None);
    let rewriter = Rewriter::new(
        name,
        store.clone(),
        settings.memory_budget,
        settings.spill_dir.as_deref(),
    )?;
    let writer = GroupWriter {
        name,
        url,
        layout,
        schema,
        store,
        rewriter,
        margin: settings.lease_ttl / 2,
    };
    let mut compacted_partitions = 0;
    let total = m.groups_planned;
    let mut done = 0;
    let bar = progress_bar(name, total as u64);
    for pp in &the_plan.partitions {
        let mut any = false;
        for group in &pp.groups {
            done += 1;
            bar.set_position(done as u64 - 1);
            bar.set_message(format!(
                "{} MiB in, {} MiB out",
                m.bytes_in >> 20,
                m.bytes_out >> 20
            ));
            let (written, committed) = writer
                .write_group(table, lease, group, &pp.values, m)
                .await?;
            if committed {
                any = true;
                m.record_group(group, &written);
            } else {
                m.groups_conflicted += 1;
            }
            tracing::info!(table = %name, group = done, of = total, files = group.files.len(),
                bytes_in = group.bytes(), bytes_out = written.size, rows = written.rows, committed,
                "compacted a group");
        }
        compacted_partitions += usize::from(any);
    }
    bar.finish_and_clear();
    m.partitions_compacted = compacted_partitions;
    m.requests_saved = m.files_in as i64 - m.files_out as i64;
    Ok(())
}

/// The planner's options for a table's layout and the run's settings, at `now`.
fn plan_options(
    layout: &Layout,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
) -> PlanOptions {
    PlanOptions {
        target_size: layout.target_file_size,
        min_size: (layout.target_file_size as f64 * settings.min_size_fraction) as u64,
        settle: settings.settle,
        now,
        sorts: !layout.sort_by.is_empty(),
    }
}

impl CompactMetrics {
    /// The plan's figures.
    fn record_plan(&mut self, the_plan: &Plan) {
        self.partitions_seen = the_plan.partitions_seen;
        self.partitions_skipped_open = the_plan.skipped_open;
        self.partitions_skipped_done = the_plan.skipped_done;
        self.groups_planned = the_plan.groups().count();
    }

    /// A committed group's figures.
    fn record_group(&mut self, group: &Group, written: &crate::rewrite::Written) {
        self.groups_committed += 1;
        self.files_in += group.files.len();
        self.files_out += 1;
        self.bytes_in += group.bytes();
        self.bytes_out += written.size;
        self.rows += written.rows;
    }
}

/// What writing the groups of one table shares: where, with which layout and schema, and the
/// lease margin checked before each upload and commit.
struct GroupWriter<'a> {
    name: &'a str,
    url: &'a Url,
    layout: &'a Layout,
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    rewriter: Rewriter,
    margin: Duration,
}

impl GroupWriter<'_> {
    /// Rewrites one group into one sorted file, checks its rows and commits it; the output is
    /// deleted again when its rows differ (an error) or another writer won (`committed` false).
    async fn write_group(
        &self,
        table: &mut DeltaTable,
        lease: &mut Lease,
        group: &Group,
        values: &[(String, Option<String>)],
        m: &mut CompactMetrics,
    ) -> Result<(crate::rewrite::Written, bool), CompactError> {
        let name = self.name;
        lease.ensure(self.margin).await?;
        let out_path = output_path(group, self.layout);
        let ndv = group.rows().map(|r| r.clamp(1, MAX_ROW_GROUP_ROWS as u64));
        let settings_f = FileSettings {
            bloom_filter_columns: self.layout.bloom_filter_columns.clone(),
            ..Default::default()
        }
        .with_bloom_filter_ndv(ndv);
        let props = writer_properties(&self.schema, &settings_f);
        let written = self
            .rewriter
            .rewrite(group, &self.schema, &self.layout.sort_by, props, &out_path)
            .await?;
        if let Err(e) = check_rows(name, group, &out_path, written.rows) {
            delete_quietly(self.store.as_ref(), &out_path).await;
            return Err(e);
        }
        lease.ensure(self.margin).await?;
        let committed = self.commit_group(table, group, values, &written, m).await?;
        if !committed {
            delete_quietly(self.store.as_ref(), &out_path).await;
        }
        Ok((written, committed))
    }

    /// Commits one group (removes + add, `dataChange=false`) at exactly the latest version + 1,
    /// after checking on the latest snapshot that its inputs are all still there. `Ok(false)`:
    /// another writer removed one of them first (nothing committed).
    async fn commit_group(
        &self,
        table: &mut DeltaTable,
        group: &Group,
        values: &[(String, Option<String>)],
        written: &crate::rewrite::Written,
        m: &mut CompactMetrics,
    ) -> Result<bool, CompactError> {
        let (name, schema) = (self.name, &self.schema);
        let inputs: HashSet<&str> = group.files.iter().map(|f| f.path.as_str()).collect();
        let done = commit_at_latest(name, self.url, table, None, |state| {
            let Removes {
                mut actions,
                missing,
                ..
            } = removes(state, &inputs, false);
            if !missing.is_empty() {
                tracing::warn!(table = %name, version = state.version(), missing = ?missing,
                    "files of this group were removed by another writer; not committing it");
                return Ok(Decision::Stop(false));
            }
            actions.push(Action::Add(add_action(
                schema,
                written.path.clone(),
                written.size as i64,
                values.to_vec(),
                &written.metadata,
                false,
            )));
            Ok(Decision::Commit {
                actions,
                operation: Box::new(DeltaOperation::Optimize {
                    predicate: None,
                    target_size: written.size as i64,
                }),
                out: true,
            })
        })
        .await?;
        m.commit_retries += done.retries;
        m.commits += usize::from(done.version.is_some());
        Ok(done.out)
    }
}

/// A progress bar over a table's groups on a terminal (stderr); hidden otherwise, where the
/// "compacted a group" log lines tell the progress.
fn progress_bar(table: &str, groups: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if groups == 0 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(groups);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "compact {prefix} [{bar:30}] {pos}/{len} groups, {msg} ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(table.to_string());
    bar
}

/// `compacted-<layout tag>-<uuid>.zstd.parquet` in the directory of the group's first file.
fn output_path(group: &Group, layout: &Layout) -> String {
    let first = group.files.first().map(|f| f.path.as_str()).unwrap_or("");
    let dir = first.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let name = format!(
        "compacted-{}-{}.zstd.parquet",
        layout.tag(),
        uuid::Uuid::new_v4()
    );
    if dir.is_empty() {
        name
    } else {
        format!("{dir}/{name}")
    }
}

async fn delete_quietly(store: &dyn ObjectStore, path: &str) {
    if let Err(e) = store.delete(&object_store::path::Path::from(path)).await {
        tracing::warn!(path, error = %e, "could not delete an uncommitted compaction output (vacuum will)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(paths: &[(&str, Option<u64>)]) -> Group {
        Group {
            files: paths
                .iter()
                .map(|(p, rows)| FileInfo {
                    path: p.to_string(),
                    size: 10,
                    rows: *rows,
                    settled: false,
                })
                .collect(),
        }
    }

    #[test]
    fn layout_tags_mark_settled_files() {
        let a = Layout {
            sort_by: vec!["namespace".into(), "ts".into()],
            bloom_filter_columns: vec![],
            target_file_size: 1,
            schema: None,
        };
        let mut b = a.clone();
        b.sort_by.push("pod".into());
        assert_ne!(a.tag(), b.tag());
        assert_eq!(a.tag().len(), 8);
        let g = group(&[("dt=2024-05-01/hour=07/part-1.zstd.parquet", None)]);
        let out = output_path(&g, &a);
        assert!(out.starts_with("dt=2024-05-01/hour=07/compacted-"), "{out}");
        assert!(a.settled(&out));
        assert!(!b.settled(&out), "other sort keys: fresh again");
        assert!(!a.settled("dt=2024-05-01/hour=07/part-1.zstd.parquet"));
        let top = output_path(&group(&[("part-1.parquet", None)]), &a);
        assert!(top.starts_with("compacted-") && a.settled(&top), "{top}");
    }

    #[test]
    fn row_counts_must_match_and_paths_must_be_plain() {
        let g = group(&[("a", Some(3)), ("b", Some(4))]);
        assert!(check_rows("t", &g, "out", 7).is_ok());
        let e = check_rows("t", &g, "out", 6)
            .expect_err("6 != 7")
            .to_string();
        assert!(
            e.contains("6 rows") && e.contains("hold 7") && e.contains("out"),
            "{e}"
        );
        // unknown input counts: nothing to compare
        assert!(check_rows("t", &group(&[("a", None)]), "out", 5).is_ok());
        assert!(plain_path("dt=2024-05-01/hour=07/part-1.zstd.parquet"));
        assert!(!plain_path("letter=%2F%2520%25f/part-0.parquet"));
        assert!(!plain_path("data=😈/part-0.parquet"));
        assert!(!plain_path("a b/part-0.parquet"));
    }
}
