//! The two passes over the rows: pass 1 counts each split's rows, pass 2 writes each split's
//! ordered rows into shards under `_tmp/<attempt>/`.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use futures::StreamExt;

use super::query::{SPLIT_COL, count_sql};
use super::{CHUNK_ROWS, MlFormat, MlOptions, Sharding};
use crate::error::ExportError;
use crate::hive::FileEntry;
use crate::progress::Progress;
use crate::source::{self, ParquetFile};
use crate::target::Target;
use crate::tfrecord;

/// Pass 1: the rows per split of the rows `inner` (also runs the query once before anything
/// is written).
pub(super) async fn count_rows(
    engine: &loglake_query::Engine,
    inner: &str,
) -> Result<BTreeMap<String, u64>, ExportError> {
    let count_sql = count_sql(inner);
    let (_, mut counts_stream) = source::stream(engine, &count_sql).await?;
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
    Ok(counts)
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

/// The shards' schema and each split's shards (in the order written).
pub(super) type Written = (SchemaRef, BTreeMap<String, Vec<FileEntry>>);

/// What pass 2 shares: where and how the shards are written.
pub(super) struct ShardRun<'a> {
    pub opts: &'a MlOptions,
    pub target: &'a Target,
    pub attempt: &'a str,
    /// Rows per split, from pass 1.
    pub counts: &'a BTreeMap<String, u64>,
    pub progress: &'a Progress,
}

impl<'a> ShardRun<'a> {
    /// Pass 2: the rows of `sql` (ordered by split) into each split's shards.
    pub(super) async fn write_shards(
        &self,
        engine: &loglake_query::Engine,
        sql: &str,
    ) -> Result<Written, ExportError> {
        let (schema, mut stream) = source::stream(engine, sql).await?;
        let split_idx = schema
            .index_of(SPLIT_COL)
            .map_err(|e| ExportError::Internal(e.to_string()))?;
        let (data_idx, out_schema) = shard_schema(&schema, split_idx);
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
            for (start, end) in name_runs(names) {
                let name = names.value(start);
                if current.as_ref().is_none_or(|c| c.split != name) {
                    if let Some(c) = current.take() {
                        let split = c.split.clone();
                        done.insert(split, c.finish().await?);
                    }
                    current = Some(self.split_writer(name, &out_schema));
                }
                if let Some(c) = current.as_mut() {
                    c.push(data.slice(start, end - start)).await?;
                }
            }
        }
        if let Some(c) = current.take() {
            let split = c.split.clone();
            done.insert(split, c.finish().await?);
        }
        check_counts(self.counts, &done)?;
        Ok((out_schema, done))
    }

    /// The writer of the split `name`'s shards.
    fn split_writer(&self, name: &str, schema: &SchemaRef) -> SplitWriter<'a> {
        let total = self.counts.get(name).copied().unwrap_or(0);
        let rows_per_shard = match self.opts.sharding {
            Sharding::Count(n) => total.div_ceil(n as u64).max(1),
            Sharding::Size(_) => u64::MAX,
        };
        SplitWriter {
            target: self.target,
            format: self.opts.format,
            schema: schema.clone(),
            attempt: self.attempt.to_string(),
            split: name.to_string(),
            sharding: self.opts.sharding,
            rows_per_shard,
            pending: Vec::new(),
            pending_rows: 0,
            current: None,
            done: Vec::new(),
            progress: self.progress,
        }
    }
}

/// The indices of the data columns (all but the split column) and the shards' schema.
fn shard_schema(schema: &SchemaRef, split_idx: usize) -> (Vec<usize>, SchemaRef) {
    let data_idx: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != split_idx)
        .collect();
    let out_schema = source::export_schema(&Schema::new(
        data_idx
            .iter()
            .map(|&i| schema.field(i).clone())
            .collect::<Vec<_>>(),
    ));
    (data_idx, out_schema)
}

/// Runs of rows with the same split name: (start, end).
fn name_runs(names: &StringArray) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < names.len() {
        let name = names.value(start);
        let mut end = start + 1;
        while end < names.len() && names.value(end) == name {
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    out
}

/// Refuses shards whose rows differ from pass 1's count of their split.
fn check_counts(
    counts: &BTreeMap<String, u64>,
    done: &BTreeMap<String, Vec<FileEntry>>,
) -> Result<(), ExportError> {
    for (name, files) in done {
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        if counts.get(name).copied().unwrap_or(0) != rows {
            return Err(ExportError::Internal(format!(
                "split {name}: counted {} rows, wrote {rows} (the source changed during the export?)",
                counts.get(name).copied().unwrap_or(0)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_cut_into_runs_of_one_split() {
        let names = StringArray::from(vec!["test", "test", "train", "validation", "validation"]);
        assert_eq!(name_runs(&names), [(0, 2), (2, 3), (3, 5)]);
        assert_eq!(name_runs(&StringArray::from(Vec::<&str>::new())), []);
    }
}
