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

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::ExportError;
use crate::hive::{FileEntry, claim_root};
use crate::progress::Progress;
use crate::source::{self, ParquetFile};
use crate::split::{SPLIT_UDF, Split, split_udf};
use crate::target::Target;
use crate::tfrecord;

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

const SPLIT_COL: &str = "__loglake_split";
const TFRECORD_DOC: &str = "integers, booleans, dates (days since 1970-01-01) and timestamps \
    (microseconds since the epoch, UTC) -> int64_list; floats -> float_list (f32); strings and \
    binaries -> bytes_list of one value; lists -> the list of their elements; maps and structs -> \
    bytes_list of one JSON object; NULL -> an empty list";

fn quote(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

/// The source's SQL (without a trailing `;`).
fn base_sql(source: &MlSource) -> Result<String, ExportError> {
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
fn projection(
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

fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shard being written.
enum ShardWriter {
    Parquet(Box<ParquetFile>),
    Tf { buf: Vec<u8>, rows: u64 },
}

impl ShardWriter {
    fn new(format: MlFormat, schema: SchemaRef, name: &str) -> Result<Self, ExportError> {
        Ok(match format {
            MlFormat::Parquet => ShardWriter::Parquet(Box::new(ParquetFile::new(schema, name)?)),
            MlFormat::Tfrecord => ShardWriter::Tf {
                buf: Vec::new(),
                rows: 0,
            },
        })
    }

    async fn write(&mut self, batch: RecordBatch, name: &str) -> Result<(), ExportError> {
        match self {
            ShardWriter::Parquet(p) => p.write(batch).await,
            ShardWriter::Tf { buf, rows } => {
                let n = batch.num_rows() as u64;
                let mut b = std::mem::take(buf);
                let (b, res) = tokio::task::spawn_blocking(move || {
                    let r = tfrecord::write_batch(&mut b, &batch);
                    (b, r)
                })
                .await
                .map_err(|e| ExportError::Internal(format!("encoding task: {e}")))?;
                *buf = b;
                res.map_err(|e| ExportError::encode(name, e))?;
                *rows += n;
                Ok(())
            }
        }
    }

    fn size(&self) -> usize {
        match self {
            ShardWriter::Parquet(p) => p.size(),
            ShardWriter::Tf { buf, .. } => buf.len(),
        }
    }

    fn rows(&self) -> u64 {
        match self {
            ShardWriter::Parquet(p) => p.rows(),
            ShardWriter::Tf { rows, .. } => *rows,
        }
    }

    async fn finish(self) -> Result<source::Finished, ExportError> {
        match self {
            ShardWriter::Parquet(p) => p.finish().await,
            ShardWriter::Tf { buf, rows } => {
                let sha256 = tokio::task::spawn_blocking(move || {
                    let h = source::sha256_hex(&buf);
                    (buf, h)
                })
                .await
                .map_err(|e| ExportError::Internal(format!("hashing task: {e}")))?;
                Ok(source::Finished {
                    data: Bytes::from(sha256.0),
                    rows,
                    sha256: sha256.1,
                })
            }
        }
    }
}

/// Writes one split's rows into shards under `_tmp/<attempt>/`.
struct SplitWriter<'a> {
    target: &'a Target,
    format: MlFormat,
    schema: SchemaRef,
    attempt: String,
    split: String,
    /// Rows per shard (`Sharding::Count`) or a byte size.
    sharding: Sharding,
    rows_per_shard: u64,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    current: Option<(ShardWriter, String)>,
    done: Vec<FileEntry>,
    progress: &'a Progress,
}

impl SplitWriter<'_> {
    fn tmp_name(&self) -> String {
        format!(
            "_tmp/{}/{}-{:05}.{}",
            self.attempt,
            self.split,
            self.done.len(),
            self.format.ext()
        )
    }

    /// Rows the current shard still takes before it is full by count.
    fn room(&self) -> usize {
        match self.sharding {
            Sharding::Count(_) => {
                let used = self.current.as_ref().map_or(0, |(w, _)| w.rows());
                (self.rows_per_shard.saturating_sub(used)) as usize
            }
            Sharding::Size(_) => usize::MAX,
        }
    }

    async fn push(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        while self.pending_rows >= CHUNK_ROWS.min(self.room().max(1)) {
            self.write_chunk().await?;
        }
        Ok(())
    }

    /// Writes the next chunk of pending rows: `CHUNK_ROWS`, or fewer to end a shard or the
    /// split.
    async fn write_chunk(&mut self) -> Result<(), ExportError> {
        let n = CHUNK_ROWS.min(self.room().max(1)).min(self.pending_rows);
        if n == 0 {
            return Ok(());
        }
        let all = arrow::compute::concat_batches(&self.schema, &self.pending)
            .map_err(|e| ExportError::Internal(format!("concatenating batches: {e}")))?;
        let chunk = all.slice(0, n);
        let rest = all.slice(n, all.num_rows() - n);
        self.pending_rows = rest.num_rows();
        self.pending = if rest.num_rows() > 0 {
            vec![rest]
        } else {
            Vec::new()
        };
        if self.current.is_none() {
            let name = self.tmp_name();
            let w = ShardWriter::new(self.format, self.schema.clone(), &self.target.url_of(&name))?;
            self.current = Some((w, name));
        }
        if let Some((w, name)) = self.current.as_mut() {
            let shown = self.target.url_of(name);
            w.write(chunk, &shown).await?;
        }
        self.progress.rows(n as u64);
        let full = match (self.sharding, &self.current) {
            (Sharding::Count(_), Some((w, _))) => w.rows() >= self.rows_per_shard,
            (Sharding::Size(s), Some((w, _))) => w.size() as u64 >= s,
            _ => false,
        };
        if full {
            self.close().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), ExportError> {
        let Some((w, name)) = self.current.take() else {
            return Ok(());
        };
        let f = w.finish().await?;
        let bytes = f.data.len() as u64;
        self.target.put(&name, f.data).await?;
        self.progress.file(bytes);
        self.done.push(FileEntry {
            path: name,
            rows: f.rows,
            bytes,
            sha256: f.sha256,
        });
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<FileEntry>, ExportError> {
        while self.pending_rows > 0 {
            self.write_chunk().await?;
        }
        self.close().await?;
        Ok(self.done)
    }
}

/// Exports the rows (see the module docs).
pub async fn export_ml(opts: &MlOptions) -> Result<MlExportMetrics, ExportError> {
    let started = Instant::now();
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
    let engine = source::engine(&opts.lake, opts.memory_limit).await?;
    engine.ctx.register_udf(split_udf(opts.splits.clone()));
    if let MlSource::Table { name, .. } = &opts.source {
        source::table_url(&engine, &opts.lake, name)?;
    }
    let base = base_sql(&opts.source)?;
    let pinned = source::pin_tables(&engine, &base).await?;
    let (schema, _) =
        source::stream(&engine, &format!("SELECT * FROM ({base}) AS __src LIMIT 0")).await?;
    let split_expr = match &opts.split_by {
        Some(col) => {
            if schema.field_with_name(col).is_err() {
                return Err(ExportError::Usage(format!(
                    "--split-by {col}: no such column; the rows have {}",
                    column_list(&schema)
                )));
            }
            format!("{SPLIT_UDF}(arrow_cast({}, 'Utf8'))", quote(col))
        }
        None => format!("'{}'", opts.splits[0].name),
    };
    let (proj, order) = projection(&schema, opts.view, &split_expr)?;
    let inner = format!("SELECT {} FROM ({base}) AS __src", proj.join(", "));
    let target = Target::open(&opts.to, &source::storage_options())?;
    let lake_url = loglake_lake::location_url(&opts.lake, false)?;

    // pass 1: rows per split (also runs the query once before anything is written)
    let count_sql = format!("SELECT {SPLIT_COL}, count(*) FROM ({inner}) AS __rows GROUP BY 1");
    let (_, mut counts_stream) = source::stream(&engine, &count_sql).await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(b) = counts_stream.next().await {
        let b = b.map_err(|e| ExportError::query(&count_sql, e))?;
        let names = arrow::compute::cast(b.column(0), &DataType::Utf8)
            .map_err(|e| ExportError::Internal(e.to_string()))?;
        let names = names.as_string::<i32>();
        let n = arrow::compute::cast(b.column(1), &DataType::Int64)
            .map_err(|e| ExportError::Internal(e.to_string()))?;
        let n = n.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            counts.insert(names.value(i).to_string(), n.value(i) as u64);
        }
    }

    claim_root(&target, "ml", "query", lake_url.as_str()).await?;

    // pass 2: the ordered rows into shards under _tmp/<attempt>/
    let mut order_by = vec![SPLIT_COL.to_string()];
    order_by.extend(order.iter().cloned());
    let sql = format!(
        "SELECT * FROM ({inner}) AS __rows ORDER BY {}",
        order_by.join(", ")
    );
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    let progress = Progress::new(opts.progress, "export ml");
    let result = write_shards(opts, &engine, &sql, &target, &attempt, &counts, &progress).await;
    let (out_schema, per_split) = match result {
        Ok(x) => x,
        Err(e) => {
            // best effort: this attempt's shards go (they are hidden under _tmp/ anyway)
            if let Ok(objs) = target.list(&format!("_tmp/{attempt}/")).await {
                for o in objs {
                    let _ = target.delete(&o.rel).await;
                }
            }
            return Err(e);
        }
    };

    // replace the previous export: manifest first, then its shards, then ours into place
    target.delete(MANIFEST).await?;
    let mut splits = Vec::new();
    let mut renames = Vec::new();
    for s in &opts.splits {
        let tmp = per_split.get(&s.name).cloned().unwrap_or_default();
        let k = tmp.len();
        let mut shards = Vec::new();
        for (i, f) in tmp.into_iter().enumerate() {
            let final_name = format!("data/{}-{i:05}-of-{k:05}.{}", s.name, opts.format.ext());
            renames.push((f.path.clone(), final_name.clone()));
            shards.push(FileEntry {
                path: final_name,
                ..f
            });
        }
        splits.push(SplitEntry {
            name: s.name.clone(),
            weight: s.weight,
            rows: shards.iter().map(|f| f.rows).sum(),
            shards,
        });
    }
    let keep: std::collections::BTreeSet<&str> = renames.iter().map(|(_, b)| b.as_str()).collect();
    for o in target.list("data/").await? {
        if !keep.contains(o.rel.as_str()) {
            target.delete(&o.rel).await?;
        }
    }
    for (from, to) in &renames {
        target.rename(from, to).await?;
    }
    for o in target.list("_tmp/").await? {
        target.delete(&o.rel).await?;
    }
    let columns: Vec<Column> = out_schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect();
    let tables: BTreeMap<String, TableVersion> = pinned
        .into_iter()
        .map(|(n, (url, version))| (n, TableVersion { url, version }))
        .collect();
    let rows: u64 = splits.iter().map(|s| s.rows).sum();
    let manifest = MlManifest {
        format: MANIFEST_FORMAT.into(),
        query: base.clone(),
        tables: tables.clone(),
        view: opts.view,
        file_format: opts.format,
        split_by: opts.split_by.clone(),
        split_hash:
            "first 8 bytes of SHA-256 of the key's text (NULL: empty), big-endian, >> 11, / 2^53; \
                     first split whose cumulative weight exceeds it"
                .into(),
        order,
        schema: columns,
        rows,
        splits,
        tfrecord_features: (opts.format == MlFormat::Tfrecord).then(|| TFRECORD_DOC.to_string()),
    };
    target
        .put("README.md", Bytes::from(dataset_card(&manifest)))
        .await?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ExportError::Internal(format!("manifest: {e}")))?;
    target.put(MANIFEST, Bytes::from(json)).await?;
    progress.finish();

    Ok(MlExportMetrics {
        target: target.url().to_string(),
        format: opts.format,
        rows,
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

type Written = (SchemaRef, BTreeMap<String, Vec<FileEntry>>);

async fn write_shards(
    opts: &MlOptions,
    engine: &loglake_query::Engine,
    sql: &str,
    target: &Target,
    attempt: &str,
    counts: &BTreeMap<String, u64>,
    progress: &Progress,
) -> Result<Written, ExportError> {
    let (schema, mut stream) = source::stream(engine, sql).await?;
    let split_idx = schema
        .index_of(SPLIT_COL)
        .map_err(|e| ExportError::Internal(e.to_string()))?;
    let data_idx: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != split_idx)
        .collect();
    let out_schema = source::export_schema(&arrow::datatypes::Schema::new(
        data_idx
            .iter()
            .map(|&i| schema.field(i).clone())
            .collect::<Vec<_>>(),
    ));
    let mut done: BTreeMap<String, Vec<FileEntry>> = BTreeMap::new();
    let mut current: Option<SplitWriter> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| ExportError::query(sql, e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let names = arrow::compute::cast(batch.column(split_idx), &DataType::Utf8)
            .map_err(|e| ExportError::Internal(e.to_string()))?;
        let names = names.as_string::<i32>();
        let data = source::convert(&batch, &data_idx, &out_schema)?;
        let mut start = 0;
        while start < data.num_rows() {
            let name = names.value(start);
            let mut end = start + 1;
            while end < data.num_rows() && names.value(end) == name {
                end += 1;
            }
            if current.as_ref().is_none_or(|c| c.split != name) {
                if let Some(c) = current.take() {
                    let split = c.split.clone();
                    done.insert(split, c.finish().await?);
                }
                let total = counts.get(name).copied().unwrap_or(0);
                let rows_per_shard = match opts.sharding {
                    Sharding::Count(n) => total.div_ceil(n as u64).max(1),
                    Sharding::Size(_) => u64::MAX,
                };
                current = Some(SplitWriter {
                    target,
                    format: opts.format,
                    schema: out_schema.clone(),
                    attempt: attempt.to_string(),
                    split: name.to_string(),
                    sharding: opts.sharding,
                    rows_per_shard,
                    pending: Vec::new(),
                    pending_rows: 0,
                    current: None,
                    done: Vec::new(),
                    progress,
                });
            }
            if let Some(c) = current.as_mut() {
                c.push(data.slice(start, end - start)).await?;
            }
            start = end;
        }
    }
    if let Some(c) = current.take() {
        let split = c.split.clone();
        done.insert(split, c.finish().await?);
    }
    for (name, files) in &done {
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        if counts.get(name).copied().unwrap_or(0) != rows {
            return Err(ExportError::Internal(format!(
                "split {name}: counted {} rows, wrote {rows} (the source changed during the export?)",
                counts.get(name).copied().unwrap_or(0)
            )));
        }
    }
    Ok((out_schema, done))
}

/// The dataset card: a Hugging Face style README with the splits' files.
fn dataset_card(m: &MlManifest) -> String {
    let ext = match m.file_format {
        MlFormat::Parquet => "parquet",
        MlFormat::Tfrecord => "tfrecord",
    };
    let mut s = String::from("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for sp in &m.splits {
        s.push_str(&format!(
            "  - split: {}\n    path: data/{}-*.{ext}\n",
            sp.name, sp.name
        ));
    }
    s.push_str("---\n\n# loglake export\n\n");
    s.push_str(&format!("Rows of:\n\n```sql\n{}\n```\n\n", m.query));
    if !m.tables.is_empty() {
        s.push_str("Lake tables read (rebuild with `VERSION AS OF`):\n\n");
        for (n, t) in &m.tables {
            s.push_str(&format!("- `{n}` version {} ({})\n", t.version, t.url));
        }
        s.push('\n');
    }
    s.push_str("| split | weight | rows | shards |\n|---|---|---|---|\n");
    for sp in &m.splits {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            sp.name,
            sp.weight,
            sp.rows,
            sp.shards.len()
        ));
    }
    s.push_str(&format!(
        "\nSplit by {} (hash: {}).\nFormat: {ext}. `manifest.json` has the schema, the rows and SHA-256 of every shard.\n",
        m.split_by.as_deref().unwrap_or("(none: one split)"),
        m.split_hash
    ));
    if let Some(doc) = &m.tfrecord_features {
        s.push_str(&format!(
            "\nTFRecord shards hold one `tf.train.Example` per row: {doc}.\n"
        ));
    }
    s
}
