//! `loglake export ml`: a query's (or a table day's) rows as reproducible training shards.
//!
//! ```text
//! _loglake_export.json                      what this root is (kind ml)
//! data/<split>-00000-of-0000N.parquet       (or .tfrecord): each split's shards
//! README.md                                 dataset card (splits, rows, how to load)
//! manifest.json                             query, table versions, schema, rows, SHA-256s; last
//! ```
//!
//! Reproducible: every lake table the query reads is pinned to one version for the whole run;
//! a row's split is a hash of its `--split-by` key ([`crate::split`]); rows are ordered by the
//! split and then by every scalar column, cut into fixed chunks of [`CHUNK_ROWS`] rows, so the
//! same rows give byte-identical shards. Shards are written under `_tmp/<attempt>/` and renamed
//! into `data/` once all are written; `manifest.json` (deleted first on a re-export) comes last.

mod publish;
mod query;
mod shards;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::ExportError;
use crate::hive::{FileEntry, claim_root};
use crate::progress::Progress;
use crate::source;
use crate::split::{Split, split_udf};
use crate::target::Target;
use publish::{discard_attempt, final_names, manifest, replace_shards, write_manifest};
use query::{base_sql, check_options, ordered_sql, projection, split_expr};
use shards::{ShardRun, count_rows};

/// Rows per encoded chunk (fixed, so that shards do not depend on the engine's batches).
pub const CHUNK_ROWS: usize = 8192;
/// The manifest, written last.
pub const MANIFEST: &str = "manifest.json";
/// Manifest format name.
pub const MANIFEST_FORMAT: &str = "loglake-ml-export/1";

/// Where the rows come from.
#[derive(Debug, Clone)]
pub enum MlSource {
    /// Any read-only SQL over the lake (`loglake query`'s dialect and functions).
    Query(String),
    /// One day (`dt`) of a lake table.
    Table { name: String, date: NaiveDate },
}

/// Shard file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlFormat {
    Parquet,
    Tfrecord,
}

impl MlFormat {
    fn ext(self) -> &'static str {
        match self {
            MlFormat::Parquet => "parquet",
            MlFormat::Tfrecord => "tfrecord",
        }
    }
}

/// A column view of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlView {
    /// LogHub/Drain's structured-log columns: LineId, Timestamp, Level, Component, Content,
    /// EventId, EventTemplate (the template from `log_template`, the id its MD5's first 8 hex
    /// digits, as Drain's).
    Loghub,
}

/// How shards are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// N shards per split, of equal row counts (the last smaller).
    Count(u32),
    /// A new shard once one reaches about this many bytes.
    Size(u64),
}

/// What to export (the library form of `loglake export ml`).
#[derive(Debug, Clone)]
pub struct MlOptions {
    pub lake: String,
    pub source: MlSource,
    pub to: String,
    pub format: MlFormat,
    pub sharding: Sharding,
    /// Splits with weights summing to 1 (default: `train` alone).
    pub splits: Vec<Split>,
    /// The column whose value decides a row's split (required with more than one split).
    pub split_by: Option<String>,
    pub view: Option<MlView>,
    pub memory_limit: Option<usize>,
    pub progress: bool,
}

/// One shard in the manifest.
pub type ShardEntry = FileEntry;

/// One split in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitEntry {
    pub name: String,
    pub weight: f64,
    pub rows: u64,
    pub shards: Vec<ShardEntry>,
}

/// A lake table the export read, at the version it read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableVersion {
    pub url: String,
    pub version: i64,
}

/// One column of the shards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// `manifest.json`. Nothing in it depends on when or where the export ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlManifest {
    pub format: String,
    /// The rows' query (for `--table`, the query it stands for).
    pub query: String,
    /// Lake tables read → the version read (rebuild with `VERSION AS OF`).
    pub tables: BTreeMap<String, TableVersion>,
    pub view: Option<MlView>,
    pub file_format: MlFormat,
    pub split_by: Option<String>,
    pub split_hash: String,
    pub order: Vec<String>,
    pub schema: Vec<Column>,
    pub rows: u64,
    pub splits: Vec<SplitEntry>,
    /// How TFRecord features encode the columns (TFRecord only).
    pub tfrecord_features: Option<String>,
}

/// What an ML export did (printed as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct MlExportMetrics {
    pub target: String,
    pub format: MlFormat,
    pub rows: u64,
    /// split → (rows, shards).
    pub splits: BTreeMap<String, (u64, u64)>,
    pub bytes: u64,
    pub tables: BTreeMap<String, TableVersion>,
    pub manifest: String,
    pub duration_ms: u64,
}

/// Exports the rows (see the module docs).
pub async fn export_ml(opts: &MlOptions) -> Result<MlExportMetrics, ExportError> {
    let started = Instant::now();
    check_options(opts)?;
    let engine = source::engine(&opts.lake, opts.memory_limit).await?;
    engine.ctx.register_udf(split_udf(opts.splits.clone()));
    if let MlSource::Table { name, .. } = &opts.source {
        source::table_url(&engine, &opts.lake, name)?;
    }
    let base = base_sql(&opts.source)?;
    let pinned = source::pin_tables(&engine, &base).await?;
    let (schema, _) =
        source::stream(&engine, &format!("SELECT * FROM ({base}) AS __src LIMIT 0")).await?;
    let split_expr = split_expr(&schema, opts)?;
    let (proj, order) = projection(&schema, opts.view, &split_expr)?;
    let inner = format!("SELECT {} FROM ({base}) AS __src", proj.join(", "));
    let target = Target::open(&opts.to, &source::storage_options())?;
    let lake_url = loglake_lake::location_url(&opts.lake, false)?;

    // pass 1: rows per split (also runs the query once before anything is written)
    let counts = count_rows(&engine, &inner).await?;

    claim_root(&target, "ml", "query", lake_url.as_str()).await?;

    // pass 2: the ordered rows into shards under _tmp/<attempt>/
    let sql = ordered_sql(&inner, &order);
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    let progress = Progress::new(opts.progress, "export ml");
    let run = ShardRun {
        opts,
        target: &target,
        attempt: &attempt,
        counts: &counts,
        progress: &progress,
    };
    let (out_schema, per_split) = match run.write_shards(&engine, &sql).await {
        Ok(x) => x,
        Err(e) => {
            discard_attempt(&target, &attempt).await;
            return Err(e);
        }
    };

    // replace the previous export: manifest first, then its shards, then ours into place
    target.delete(MANIFEST).await?;
    let (splits, renames) = final_names(&opts.splits, &per_split, opts.format);
    replace_shards(&target, &renames).await?;
    let tables: BTreeMap<String, TableVersion> = pinned
        .into_iter()
        .map(|(n, (url, version))| (n, TableVersion { url, version }))
        .collect();
    let manifest = manifest(opts, base, tables.clone(), order, &out_schema, splits);
    write_manifest(&target, &manifest).await?;
    progress.finish();

    Ok(MlExportMetrics {
        target: target.url().to_string(),
        format: opts.format,
        rows: manifest.rows,
        splits: manifest
            .splits
            .iter()
            .map(|s| (s.name.clone(), (s.rows, s.shards.len() as u64)))
            .collect(),
        bytes: manifest
            .splits
            .iter()
            .flat_map(|s| &s.shards)
            .map(|f| f.bytes)
            .sum(),
        tables,
        manifest: target.url_of(MANIFEST),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
