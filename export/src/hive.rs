//! `loglake export hive`: one day of a lake table as Hive-partitioned Parquet, with the DDL, a
//! manifest and a `_SUCCESS` marker, idempotent (DESIGN.md, I10).
//!
//! Layout under the export root:
//!
//! ```text
//! _loglake_export.json                   what this root is (kind hive, source table)
//! _ddl/create_table.sql                  CREATE DATABASE/EXTERNAL TABLE IF NOT EXISTS
//! _ddl/partitions-<date>.sql             ALTER TABLE ADD IF NOT EXISTS PARTITION … per partition
//! dt=<date>/hour=<h>/part-<attempt>-<n>.zstd.parquet
//! dt=<date>/_manifest.json               source version, rows per partition, files + SHA-256
//! dt=<date>/_SUCCESS                     written last
//! ```
//!
//! An attempt: (1) delete the day's `_SUCCESS`; (2) write every file under names carrying a
//! fresh attempt id; (3) delete every other file of the day (earlier attempts, a crashed
//! attempt's leftovers); (4) replace the manifest, write the DDL, then `_SUCCESS`. Whenever
//! `_SUCCESS` exists the day's files are exactly the manifest's. With `--from-version` the
//! previous attempt's files stay and only the rows the later versions added are written.

mod incremental;
mod manifest;
mod plan;
mod root;
mod writer;

use std::collections::BTreeSet;
use std::time::Instant;

use arrow::datatypes::Schema;
use bytes::Bytes;
use chrono::NaiveDate;
use serde::Serialize;

use crate::error::ExportError;
use crate::layout::{create_table_ddl, hadoop_location};
use crate::progress::Progress;
use crate::source;
use crate::target::Target;
use incremental::{IncrementalCheck, incremental_base, new_rows_filter};
pub use manifest::{FileEntry, HiveManifest, PartitionEntry, RootMarker};
pub use plan::hive_name;
use plan::{TableShape, check_dt_first, day_query, export_root, partitions_ddl, table_ref};
pub use root::claim_root;
use writer::{Writer, merge_parts};

/// The marker naming a root as a loglake export.
pub const MARKER: &str = "_loglake_export.json";
/// The manifest of one exported day, inside the day's folder.
pub const MANIFEST: &str = "_manifest.json";
/// The marker written last for each exported day.
pub const SUCCESS: &str = "_SUCCESS";

/// Rows encoded at a time (a file's size is checked after each).
pub const CHUNK_ROWS: usize = 1024;

/// Manifest format name.
pub const MANIFEST_FORMAT: &str = "loglake-hive-export/1";

/// What to export (the library form of `loglake export hive`).
#[derive(Debug, Clone)]
pub struct HiveOptions {
    /// Lake root (URL or path).
    pub lake: String,
    /// The table's name in the lake (its folder name, as `loglake query` registers it).
    pub table: String,
    /// The day (`dt`) to export.
    pub date: NaiveDate,
    /// Export root; default `<lake>/_export/hive/<table>`.
    pub to: Option<String>,
    /// Hive database of the DDL.
    pub hive_db: String,
    /// Hive table name of the DDL (default: the lake table's name).
    pub hive_table: Option<String>,
    /// Files roll at about this many bytes.
    pub target_file_size: u64,
    /// Memory limit of the query (its sort spills beyond it).
    pub memory_limit: Option<usize>,
    /// Export even when the day's `_SUCCESS` manifest has the current table version.
    pub force: bool,
    /// Add only the rows the versions after this one added, to a day exported at this version
    /// (for incremental consumers); `None`: the whole day.
    pub from_version: Option<i64>,
    /// Show a progress line on a terminal.
    pub progress: bool,
}

impl HiveOptions {
    /// Options with the defaults of the command line.
    pub fn new(lake: impl Into<String>, table: impl Into<String>, date: NaiveDate) -> Self {
        HiveOptions {
            lake: lake.into(),
            table: table.into(),
            date,
            to: None,
            hive_db: "default".into(),
            hive_table: None,
            target_file_size: 128 << 20,
            memory_limit: Some(512 << 20),
            force: false,
            from_version: None,
            progress: false,
        }
    }
}

/// What an export did (printed as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct HiveExportMetrics {
    pub table: String,
    pub date: String,
    pub target: String,
    pub source_version: i64,
    /// With `--from-version`: the version the added rows start after.
    pub from_version: Option<i64>,
    pub attempt: String,
    /// The day was already exported from this table version (nothing written).
    pub skipped: bool,
    /// Rows of the day in the export.
    pub rows: u64,
    /// Rows this attempt wrote (with `--from-version`, the added ones).
    pub rows_written: u64,
    pub partitions: u64,
    pub files: u64,
    pub bytes: u64,
    /// Files of earlier or crashed attempts deleted.
    pub stale_files_removed: u64,
    pub create_table_ddl: String,
    pub partitions_ddl: String,
    pub duration_ms: u64,
}

/// Exports one day of a lake table (see the module docs).
pub async fn export_hive(opts: &HiveOptions) -> Result<HiveExportMetrics, ExportError> {
    let started = Instant::now();
    let date = opts.date.format("%Y-%m-%d").to_string();
    let engine = source::engine(&opts.lake, opts.memory_limit).await?;
    let table_url = source::table_url(&engine, &opts.lake, &opts.table)?;
    let (version, partition_columns) = source::table_version(&opts.table, &table_url).await?;
    check_dt_first(&opts.table, &partition_columns)?;
    let target = Target::open(&export_root(opts), &source::storage_options())?;
    let hive_table = opts
        .hive_table
        .clone()
        .unwrap_or_else(|| hive_name(&opts.table));
    let day = format!("dt={date}");

    // the query and its schema first: a bad table fails before anything is written
    let table_ref = table_ref(&opts.table, version);
    let probe = format!("SELECT * FROM {table_ref} LIMIT 0");
    let (schema, _) = source::stream(&engine, &probe).await?;
    let shape = TableShape::of(&schema, &partition_columns, &opts.table)?;

    claim_root(&target, "hive", &opts.table, table_url.as_str()).await?;
    let x = DayExport {
        opts,
        engine,
        target,
        table_url,
        version,
        partition_columns,
        table_ref,
        shape,
        hive_table,
        manifest_rel: format!("{day}/{MANIFEST}"),
        success_rel: format!("{day}/{SUCCESS}"),
        ddl_rel: "_ddl/create_table.sql".to_string(),
        parts_ddl_rel: format!("_ddl/partitions-{date}.sql"),
        attempt: uuid::Uuid::new_v4().simple().to_string(),
        date,
        day,
        started,
    };
    let previous: Option<HiveManifest> = match x.target.get(&x.manifest_rel).await? {
        Some(b) => serde_json::from_slice(&b).ok(),
        None => None,
    };
    if !opts.force
        && let Some(prev) = &previous
        && prev.source_version == version
        && x.target.get(&x.success_rel).await?.is_some()
    {
        return Ok(x.metrics(prev.attempt.clone(), prev.rows, &prev.partitions));
    }
    let base = x.base(previous.as_ref()).await?;

    // (1) the day is no longer complete
    x.target.delete(&x.success_rel).await?;

    // (2) this attempt's files
    let (added, progress) = x.write_rows().await?;
    let rows_written: u64 = added.iter().map(|p| p.rows).sum();
    let parts = merge_parts(base, added);

    // (3) every other file of the day goes (the old manifest stays until it is replaced)
    let stale = x.remove_stale(&parts).await?;

    // (4) manifest, DDL, then _SUCCESS
    let rows = x.publish(&parts, previous.as_ref()).await?;
    progress.finish();

    Ok(HiveExportMetrics {
        skipped: false,
        rows_written,
        stale_files_removed: stale,
        ..x.metrics(x.attempt.clone(), rows, &parts)
    })
}

/// One attempt at exporting a day: what its steps share.
struct DayExport<'a> {
    opts: &'a HiveOptions,
    engine: loglake_query::Engine,
    target: Target,
    table_url: url::Url,
    /// The table version exported.
    version: i64,
    partition_columns: Vec<String>,
    /// The table at `version`, as the queries name it.
    table_ref: String,
    shape: TableShape,
    hive_table: String,
    /// `YYYY-MM-DD`.
    date: String,
    /// The day's folder, `dt=<date>`.
    day: String,
    manifest_rel: String,
    success_rel: String,
    ddl_rel: String,
    parts_ddl_rel: String,
    attempt: String,
    started: Instant,
}

impl DayExport<'_> {
    /// The partitions the attempt adds to: none, or with `--from-version` the previous
    /// export's once the checks pass.
    async fn base(
        &self,
        previous: Option<&HiveManifest>,
    ) -> Result<Vec<PartitionEntry>, ExportError> {
        match self.opts.from_version {
            None => Ok(Vec::new()),
            Some(from) => {
                incremental_base(
                    &self.engine,
                    &self.target,
                    IncrementalCheck {
                        table: &self.opts.table,
                        date: &self.date,
                        day: &self.day,
                        from,
                        version: self.version,
                        previous,
                        columns: &self.shape.data_cols,
                    },
                )
                .await
            }
        }
    }

    /// Step (2): the day's rows (with `--from-version`, the added ones) into this attempt's
    /// files; the partitions written, and the progress line (finished last).
    async fn write_rows(&self) -> Result<(Vec<PartitionEntry>, Progress), ExportError> {
        let opts = self.opts;
        let new_rows = match opts.from_version {
            None => String::new(),
            Some(from) => new_rows_filter(&opts.table, from, &self.date),
        };
        let sql = day_query(
            &self.table_ref,
            &self.shape.data_cols,
            &self.partition_columns,
            &self.date,
            &new_rows,
        );
        let (schema, stream) = source::stream(&self.engine, &sql).await?;
        let n_data = self.shape.data_cols.len();
        let data_schema = source::export_schema(&Schema::new(schema.fields()[..n_data].to_vec()));
        let progress = Progress::new(
            opts.progress,
            &format!("export hive {} {}", opts.table, self.date),
        );
        let mut w = Writer::new(
            &self.target,
            self.attempt.clone(),
            data_schema,
            self.partition_columns.clone(),
            opts.target_file_size,
            &progress,
        );
        w.copy(&schema, stream, &sql, n_data).await?;
        let added = w.finish().await?;
        Ok((added, progress))
    }

    /// Step (3): deletes every file of the day but `parts`' and the manifest; how many went.
    async fn remove_stale(&self, parts: &[PartitionEntry]) -> Result<u64, ExportError> {
        let mut keep: BTreeSet<&str> = parts
            .iter()
            .flat_map(|p| p.files.iter().map(|f| f.path.as_str()))
            .collect();
        keep.insert(self.manifest_rel.as_str());
        let mut stale = 0u64;
        for obj in self.target.list(&format!("{}/", self.day)).await? {
            if !keep.contains(obj.rel.as_str()) {
                self.target.delete(&obj.rel).await?;
                stale += 1;
            }
        }
        Ok(stale)
    }

    /// Step (4): the manifest of `parts`, the DDL, then `_SUCCESS`; the day's rows.
    async fn publish(
        &self,
        parts: &[PartitionEntry],
        previous: Option<&HiveManifest>,
    ) -> Result<u64, ExportError> {
        let opts = self.opts;
        let rows: u64 = parts.iter().map(|p| p.rows).sum();
        let manifest = HiveManifest {
            format: MANIFEST_FORMAT.into(),
            table: opts.table.clone(),
            source_url: self.table_url.to_string(),
            source_version: self.version,
            date: self.date.clone(),
            attempt: self.attempt.clone(),
            hive_db: opts.hive_db.clone(),
            hive_table: self.hive_table.clone(),
            partition_columns: self.partition_columns.clone(),
            columns: self.shape.columns.clone(),
            rows,
            partitions: parts.to_vec(),
            from_version: opts.from_version,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ExportError::Internal(format!("manifest: {e}")))?;
        self.target
            .put(&self.manifest_rel, Bytes::from(json))
            .await?;
        let root_location = hadoop_location(self.target.url());
        let ddl = create_table_ddl(
            &opts.hive_db,
            &self.hive_table,
            &self.shape.columns,
            &self.shape.part_types,
            &root_location,
        );
        self.target.put(&self.ddl_rel, Bytes::from(ddl)).await?;
        let parts_ddl = partitions_ddl(
            &opts.hive_db,
            &self.hive_table,
            &self.shape.part_types,
            previous,
            parts,
            &root_location,
        );
        self.target
            .put(&self.parts_ddl_rel, Bytes::from(parts_ddl))
            .await?;
        self.target.put(&self.success_rel, Bytes::new()).await?;
        Ok(rows)
    }

    /// The metrics of an export of `rows` in `parts` by `attempt` that wrote nothing (a
    /// skipped day); a run that wrote sets `skipped`, `rows_written` and the stale files.
    fn metrics(&self, attempt: String, rows: u64, parts: &[PartitionEntry]) -> HiveExportMetrics {
        HiveExportMetrics {
            table: self.opts.table.clone(),
            date: self.date.clone(),
            target: self.target.url().to_string(),
            source_version: self.version,
            from_version: self.opts.from_version,
            attempt,
            skipped: true,
            rows,
            rows_written: 0,
            partitions: parts.len() as u64,
            files: parts.iter().map(|p| p.files.len() as u64).sum(),
            bytes: parts.iter().flat_map(|p| &p.files).map(|f| f.bytes).sum(),
            stale_files_removed: 0,
            create_table_ddl: self.target.url_of(&self.ddl_rel),
            partitions_ddl: self.target.url_of(&self.parts_ddl_rel),
            duration_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}
