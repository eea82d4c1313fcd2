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

use std::collections::BTreeSet;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::ExportError;
use crate::layout::{
    add_partition_ddl, create_table_ddl, drop_partition_ddl, hadoop_location, hive_type,
    partition_dir,
};
use crate::progress::Progress;
use crate::source::{self, ParquetFile};
use crate::target::Target;

/// The marker naming a root as a loglake export.
pub const MARKER: &str = "_loglake_export.json";
/// The manifest of one exported day, inside the day's folder.
pub const MANIFEST: &str = "_manifest.json";
/// The marker written last for each exported day.
pub const SUCCESS: &str = "_SUCCESS";

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

/// The root marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootMarker {
    pub kind: String,
    pub table: String,
    pub source_url: String,
}

/// One exported file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the export root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// One Hive partition of the day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// Values of the partition columns (NULL: Hive's default partition).
    pub values: Vec<Option<String>>,
    /// Folder relative to the export root.
    pub path: String,
    pub rows: u64,
    pub files: Vec<FileEntry>,
}

/// `dt=<date>/_manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HiveManifest {
    pub format: String,
    pub table: String,
    pub source_url: String,
    pub source_version: i64,
    pub date: String,
    pub attempt: String,
    pub hive_db: String,
    pub hive_table: String,
    pub partition_columns: Vec<String>,
    pub columns: Vec<(String, String)>,
    pub rows: u64,
    pub partitions: Vec<PartitionEntry>,
    /// The last attempt added the rows of the versions after this one (`--from-version`).
    #[serde(default)]
    pub from_version: Option<i64>,
}

/// Rows encoded at a time (a file's size is checked after each).
pub const CHUNK_ROWS: usize = 1024;

/// Manifest format name.
pub const MANIFEST_FORMAT: &str = "loglake-hive-export/1";

/// A name safe as a Hive identifier: letters, digits and `_`, lower-case.
pub fn hive_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks that `target` is empty or an export of `kind` from `source_url`; writes the marker
/// of a new root.
pub async fn claim_root(
    target: &Target,
    kind: &'static str,
    table: &str,
    source_url: &str,
) -> Result<(), ExportError> {
    match target.get(MARKER).await? {
        Some(bytes) => {
            let m: RootMarker = serde_json::from_slice(&bytes).map_err(|e| {
                ExportError::Usage(format!(
                    "{}: not a loglake export marker: {e}",
                    target.url_of(MARKER)
                ))
            })?;
            if m.kind != kind || m.source_url != source_url {
                return Err(ExportError::Usage(format!(
                    "target {} is a {} export of {} ({}), not a {kind} export of {table} ({source_url})",
                    target.url(),
                    m.kind,
                    m.table,
                    m.source_url
                )));
            }
            Ok(())
        }
        None => {
            let existing = target.list("").await?;
            if let Some(first) = existing.first() {
                return Err(ExportError::NotAnExport {
                    target: target.url().to_string(),
                    kind,
                    found: format!("{} object(s), e.g. {}", existing.len(), first.rel),
                    marker: MARKER,
                });
            }
            let m = RootMarker {
                kind: kind.to_string(),
                table: table.to_string(),
                source_url: source_url.to_string(),
            };
            let json = serde_json::to_vec_pretty(&m)
                .map_err(|e| ExportError::Internal(format!("marker: {e}")))?;
            target.put(MARKER, Bytes::from(json)).await
        }
    }
}

/// The partition values of each row of `batch` (`cols` are the partition columns' indices).
fn row_keys(batch: &RecordBatch, cols: &[usize]) -> Result<Vec<Vec<Option<String>>>, ExportError> {
    let arrays: Vec<&ArrayRef> = cols.iter().map(|&i| batch.column(i)).collect();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut key = Vec::with_capacity(arrays.len());
        for a in &arrays {
            if a.is_null(row) {
                key.push(None);
            } else {
                let v = arrow::util::display::array_value_to_string(a, row)
                    .map_err(|e| ExportError::Internal(format!("partition value: {e}")))?;
                key.push(Some(v));
            }
        }
        out.push(key);
    }
    Ok(out)
}

/// Runs of equal keys: (start, len, key).
fn runs(keys: Vec<Vec<Option<String>>>) -> Vec<(usize, usize, Vec<Option<String>>)> {
    let mut out: Vec<(usize, usize, Vec<Option<String>>)> = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        match out.last_mut() {
            Some((_, len, key)) if *key == k => *len += 1,
            _ => out.push((i, 1, k)),
        }
    }
    out
}

/// The file being written for one partition.
struct Open {
    key: Vec<Option<String>>,
    dir: String,
    seq: u32,
    file: ParquetFile,
    name: String,
}

struct Writer<'a> {
    target: &'a Target,
    attempt: String,
    schema: SchemaRef,
    names: Vec<String>,
    target_size: u64,
    open: Option<Open>,
    parts: Vec<PartitionEntry>,
    progress: &'a Progress,
}

impl Writer<'_> {
    async fn write(
        &mut self,
        key: Vec<Option<String>>,
        batch: RecordBatch,
    ) -> Result<(), ExportError> {
        if self.open.as_ref().is_some_and(|o| o.key != key) {
            self.close().await?;
        }
        let mut open = match self.open.take() {
            Some(o) => o,
            None => {
                let dir = self
                    .names
                    .iter()
                    .zip(&key)
                    .map(|(n, v)| partition_dir(n, v.as_deref()))
                    .collect::<Vec<_>>()
                    .join("/");
                let seq = self
                    .parts
                    .iter()
                    .find(|p| p.values == key)
                    .map_or(0, |p| p.files.len() as u32);
                let name = format!("{dir}/part-{}-{seq:05}.zstd.parquet", self.attempt);
                let file = ParquetFile::new(self.schema.clone(), &self.target.url_of(&name))?;
                Open {
                    key,
                    dir,
                    seq,
                    file,
                    name,
                }
            }
        };
        open.file.write(batch).await?;
        let full = open.file.size() as u64 >= self.target_size;
        self.open = Some(open);
        if full {
            self.close().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), ExportError> {
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        let _ = o.seq;
        let f = o.file.finish().await?;
        let bytes = f.data.len() as u64;
        self.target.put(&o.name, f.data).await?;
        self.progress.file(bytes);
        let entry = FileEntry {
            path: o.name,
            rows: f.rows,
            bytes,
            sha256: f.sha256,
        };
        match self.parts.iter_mut().find(|p| p.values == o.key) {
            Some(p) => {
                p.rows += entry.rows;
                p.files.push(entry);
            }
            None => self.parts.push(PartitionEntry {
                values: o.key,
                path: o.dir,
                rows: entry.rows,
                files: vec![entry],
            }),
        }
        Ok(())
    }
}

/// Exports one day of a lake table (see the module docs).
pub async fn export_hive(opts: &HiveOptions) -> Result<HiveExportMetrics, ExportError> {
    let started = Instant::now();
    let date = opts.date.format("%Y-%m-%d").to_string();
    let engine = source::engine(&opts.lake, opts.memory_limit).await?;
    let table_url = source::table_url(&engine, &opts.lake, &opts.table)?;
    let (version, partition_columns) = source::table_version(&opts.table, &table_url).await?;
    if partition_columns.first().map(String::as_str) != Some("dt") {
        return Err(ExportError::Usage(format!(
            "table {} is partitioned by {:?}; a Hive export needs `dt` first",
            opts.table, partition_columns
        )));
    }
    let to = match &opts.to {
        Some(t) => t.clone(),
        None => format!(
            "{}/_export/hive/{}",
            opts.lake.trim_end_matches('/'),
            opts.table
        ),
    };
    let target = Target::open(&to, &source::storage_options())?;
    let hive_table = opts
        .hive_table
        .clone()
        .unwrap_or_else(|| hive_name(&opts.table));
    let day = format!("dt={date}");

    // the query and its schema first: a bad table fails before anything is written
    let table_ref = format!(
        "delta_scan('{}', {version})",
        opts.table.replace('\'', "''")
    );
    let probe = format!("SELECT * FROM {table_ref} LIMIT 0");
    let (schema, _) = source::stream(&engine, &probe).await?;
    let data_cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !partition_columns.contains(n))
        .collect();
    let mut columns = Vec::new();
    for n in &data_cols {
        let f = schema
            .field_with_name(n)
            .map_err(|e| ExportError::Internal(e.to_string()))?;
        let t = hive_type(f.data_type()).ok_or_else(|| {
            ExportError::Usage(format!(
                "column {n} of {}: type {} has no Hive equivalent",
                opts.table,
                f.data_type()
            ))
        })?;
        columns.push((n.clone(), t));
    }
    let mut part_types = Vec::new();
    for n in &partition_columns {
        let f = schema
            .field_with_name(n)
            .map_err(|e| ExportError::Internal(e.to_string()))?;
        let t = hive_type(f.data_type()).ok_or_else(|| {
            ExportError::Usage(format!(
                "partition column {n}: type {} has no Hive equivalent",
                f.data_type()
            ))
        })?;
        part_types.push((n.clone(), t));
    }

    claim_root(&target, "hive", &opts.table, table_url.as_str()).await?;
    let manifest_rel = format!("{day}/{MANIFEST}");
    let success_rel = format!("{day}/{SUCCESS}");
    let previous: Option<HiveManifest> = match target.get(&manifest_rel).await? {
        Some(b) => serde_json::from_slice(&b).ok(),
        None => None,
    };
    let attempt = uuid::Uuid::new_v4().simple().to_string();
    let ddl_rel = "_ddl/create_table.sql".to_string();
    let parts_ddl_rel = format!("_ddl/partitions-{date}.sql");
    if !opts.force
        && let Some(prev) = &previous
        && prev.source_version == version
        && target.get(&success_rel).await?.is_some()
    {
        return Ok(HiveExportMetrics {
            table: opts.table.clone(),
            date,
            target: target.url().to_string(),
            source_version: version,
            from_version: opts.from_version,
            attempt: prev.attempt.clone(),
            skipped: true,
            rows: prev.rows,
            rows_written: 0,
            partitions: prev.partitions.len() as u64,
            files: prev.partitions.iter().map(|p| p.files.len() as u64).sum(),
            bytes: prev
                .partitions
                .iter()
                .flat_map(|p| &p.files)
                .map(|f| f.bytes)
                .sum(),
            stale_files_removed: 0,
            create_table_ddl: target.url_of(&ddl_rel),
            partitions_ddl: target.url_of(&parts_ddl_rel),
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }

    let base = match opts.from_version {
        None => Vec::new(),
        Some(from) => {
            incremental_base(
                &engine,
                &target,
                IncrementalCheck {
                    table: &opts.table,
                    date: &date,
                    day: &day,
                    from,
                    version,
                    previous: previous.as_ref(),
                    columns: &data_cols,
                },
            )
            .await?
        }
    };

    // (1) the day is no longer complete
    target.delete(&success_rel).await?;

    // (2) this attempt's files
    let select: Vec<String> = data_cols
        .iter()
        .chain(&partition_columns)
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let order: Vec<String> = partition_columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let new_rows = match opts.from_version {
        None => String::new(),
        Some(from) => format!(
            " AND NOT EXISTS (SELECT 1 FROM delta_scan('{}', {from}) AS __old \
             WHERE __old.dt = DATE '{date}' AND __old.kafka_topic = __new.kafka_topic \
             AND __old.kafka_partition = __new.kafka_partition \
             AND __old.kafka_offset = __new.kafka_offset)",
            opts.table.replace('\'', "''")
        ),
    };
    let sql = format!(
        "SELECT {} FROM {table_ref} AS __new WHERE __new.dt = DATE '{date}'{new_rows} ORDER BY {}",
        select.join(", "),
        order.join(", ")
    );
    let (schema, mut stream) = source::stream(&engine, &sql).await?;
    let n_data = data_cols.len();
    let data_idx: Vec<usize> = (0..n_data).collect();
    let part_idx: Vec<usize> = (n_data..schema.fields().len()).collect();
    let data_schema = source::export_schema(&Schema::new(schema.fields()[..n_data].to_vec()));
    let progress = Progress::new(opts.progress, &format!("export hive {} {date}", opts.table));
    let mut w = Writer {
        target: &target,
        attempt: attempt.clone(),
        schema: data_schema.clone(),
        names: partition_columns.clone(),
        target_size: opts.target_file_size.max(1),
        open: None,
        parts: Vec::new(),
        progress: &progress,
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| ExportError::query(&sql, e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let keys = row_keys(&batch, &part_idx)?;
        let data = source::convert(&batch, &data_idx, &data_schema)?;
        for (start, len, key) in runs(keys) {
            // in slices, so that files roll close to the target size
            let mut at = 0;
            while at < len {
                let n = CHUNK_ROWS.min(len - at);
                w.write(key.clone(), data.slice(start + at, n)).await?;
                at += n;
            }
            progress.rows(len as u64);
        }
    }
    w.close().await?;
    let added = std::mem::take(&mut w.parts);
    drop(w);
    let rows_written: u64 = added.iter().map(|p| p.rows).sum();
    let parts = merge_parts(base, added);

    // (3) every other file of the day goes (the old manifest stays until it is replaced)
    let mut keep: BTreeSet<&str> = parts
        .iter()
        .flat_map(|p| p.files.iter().map(|f| f.path.as_str()))
        .collect();
    keep.insert(manifest_rel.as_str());
    let mut stale = 0u64;
    for obj in target.list(&format!("{day}/")).await? {
        if !keep.contains(obj.rel.as_str()) {
            target.delete(&obj.rel).await?;
            stale += 1;
        }
    }

    // (4) manifest, DDL, then _SUCCESS
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    let manifest = HiveManifest {
        format: MANIFEST_FORMAT.into(),
        table: opts.table.clone(),
        source_url: table_url.to_string(),
        source_version: version,
        date: date.clone(),
        attempt: attempt.clone(),
        hive_db: opts.hive_db.clone(),
        hive_table: hive_table.clone(),
        partition_columns: partition_columns.clone(),
        columns: columns.clone(),
        rows,
        partitions: parts.clone(),
        from_version: opts.from_version,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ExportError::Internal(format!("manifest: {e}")))?;
    target.put(&manifest_rel, Bytes::from(json)).await?;
    let root_location = hadoop_location(target.url());
    let ddl = create_table_ddl(
        &opts.hive_db,
        &hive_table,
        &columns,
        &part_types,
        &root_location,
    );
    target.put(&ddl_rel, Bytes::from(ddl)).await?;
    let mut parts_ddl = String::new();
    if let Some(prev) = &previous {
        for p in &prev.partitions {
            if !parts.iter().any(|q| q.values == p.values) {
                parts_ddl.push_str(&drop_partition_ddl(
                    &opts.hive_db,
                    &hive_table,
                    &part_types,
                    &p.values,
                ));
            }
        }
    }
    for p in &parts {
        parts_ddl.push_str(&add_partition_ddl(
            &opts.hive_db,
            &hive_table,
            &part_types,
            &p.values,
            &format!("{root_location}/{}", p.path),
        ));
    }
    target.put(&parts_ddl_rel, Bytes::from(parts_ddl)).await?;
    target.put(&success_rel, Bytes::new()).await?;
    progress.finish();

    Ok(HiveExportMetrics {
        table: opts.table.clone(),
        date,
        target: target.url().to_string(),
        source_version: version,
        from_version: opts.from_version,
        attempt,
        skipped: false,
        rows,
        rows_written,
        partitions: parts.len() as u64,
        files: parts.iter().map(|p| p.files.len() as u64).sum(),
        bytes: parts.iter().flat_map(|p| &p.files).map(|f| f.bytes).sum(),
        stale_files_removed: stale,
        create_table_ddl: target.url_of(&ddl_rel),
        partitions_ddl: target.url_of(&parts_ddl_rel),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The partitions of `base` with the files and rows of `added` (new partitions at the end, in
/// order).
fn merge_parts(base: Vec<PartitionEntry>, added: Vec<PartitionEntry>) -> Vec<PartitionEntry> {
    let mut out = base;
    for a in added {
        match out.iter_mut().find(|p| p.values == a.values) {
            Some(p) => {
                p.rows += a.rows;
                p.files.extend(a.files);
            }
            None => out.push(a),
        }
    }
    out
}

/// What `--from-version` checks before adding rows.
struct IncrementalCheck<'a> {
    table: &'a str,
    date: &'a str,
    day: &'a str,
    from: i64,
    version: i64,
    previous: Option<&'a HiveManifest>,
    columns: &'a [String],
}

/// The partitions an incremental export adds to: the previous export's, when it was made at
/// `from`, all its files are still there, and no row of the day at `from` is gone at `version`
/// (a delete or rewrite needs a full re-export).
async fn incremental_base(
    engine: &loglake_query::Engine,
    target: &Target,
    c: IncrementalCheck<'_>,
) -> Result<Vec<PartitionEntry>, ExportError> {
    let (from, version, date) = (c.from, c.version, c.date);
    let prev = c.previous.ok_or_else(|| {
        ExportError::Usage(format!(
            "--from-version {from}: {date} has no export to add to; export the day in full first"
        ))
    })?;
    if prev.source_version != from {
        return Err(ExportError::Usage(format!(
            "--from-version {from}: {date} was exported at version {}; add to it with \
             --from-version {} or export the day in full",
            prev.source_version, prev.source_version
        )));
    }
    if from > version {
        return Err(ExportError::Usage(format!(
            "--from-version {from}: the table is at version {version}"
        )));
    }
    for k in ["kafka_topic", "kafka_partition", "kafka_offset"] {
        if !c.columns.iter().any(|x| x == k) {
            return Err(ExportError::Usage(format!(
                "--from-version: table {} has no {k} column to tell new rows by",
                c.table
            )));
        }
    }
    let present: std::collections::BTreeMap<String, u64> = target
        .list(&format!("{}/", c.day))
        .await?
        .into_iter()
        .map(|l| (l.rel, l.size))
        .collect();
    for f in prev.partitions.iter().flat_map(|p| &p.files) {
        if present.get(&f.path) != Some(&f.bytes) {
            return Err(ExportError::Usage(format!(
                "--from-version {from}: the export of {date} is not intact ({} is missing or \
                 changed; an interrupted full export?); export the day in full",
                target.url_of(&f.path)
            )));
        }
    }
    let t = c.table.replace('\'', "''");
    let sql = format!(
        "SELECT count(*) AS n FROM delta_scan('{t}', {from}) AS __old \
         WHERE __old.dt = DATE '{date}' AND NOT EXISTS (SELECT 1 FROM delta_scan('{t}', {version}) AS __new \
         WHERE __new.dt = DATE '{date}' AND __old.kafka_topic = __new.kafka_topic \
         AND __old.kafka_partition = __new.kafka_partition \
         AND __old.kafka_offset = __new.kafka_offset)"
    );
    let (_, mut stream) = source::stream(engine, &sql).await?;
    let mut gone = 0i64;
    while let Some(b) = stream.next().await {
        let b = b.map_err(|e| ExportError::query(&sql, e))?;
        if b.num_rows() > 0 {
            let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
                .map_err(|e| ExportError::Internal(e.to_string()))?;
            use arrow::array::AsArray;
            gone += n.as_primitive::<arrow::datatypes::Int64Type>().value(0);
        }
    }
    if gone > 0 {
        return Err(ExportError::Usage(format!(
            "--from-version {from}: {gone} rows of {date} at version {from} are gone at version \
             {version} (a delete or rewrite); export the day in full"
        )));
    }
    Ok(prev.partitions.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_cut_into_runs_of_one_partition() {
        let k = |h: &str| vec![Some("2024-05-01".to_string()), Some(h.to_string())];
        let r = runs(vec![k("1"), k("1"), k("2"), k("3"), k("3")]);
        let got: Vec<(usize, usize)> = r.iter().map(|(s, l, _)| (*s, *l)).collect();
        assert_eq!(got, [(0, 2), (2, 1), (3, 2)]);
        assert_eq!(hive_name("k8s-audit.Logs"), "k8s_audit_logs");
    }
}
