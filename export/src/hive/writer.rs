//! Writing the day's rows into Hive partition folders: rows cut into runs of one partition,
//! files rolled at about the target size, each file's entry in its partition.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use super::CHUNK_ROWS;
use super::manifest::{FileEntry, PartitionEntry};
use crate::error::ExportError;
use crate::layout::partition_dir;
use crate::progress::Progress;
use crate::source::{self, ParquetFile};
use crate::target::Target;

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
    file: ParquetFile,
    name: String,
}

/// Writes the day's rows into this attempt's files, one open file at a time.
pub(super) struct Writer<'a> {
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
    /// A writer of `attempt`'s files with the data columns `schema`, partitioned by `names`.
    pub(super) fn new<'a>(
        target: &'a Target,
        attempt: String,
        schema: SchemaRef,
        names: Vec<String>,
        target_size: u64,
        progress: &'a Progress,
    ) -> Writer<'a> {
        Writer {
            target,
            attempt,
            schema,
            names,
            target_size: target_size.max(1),
            open: None,
            parts: Vec::new(),
            progress,
        }
    }

    /// Writes the rows of the query `sql` (its first `n_data` columns the data, the rest the
    /// partition columns, ordered by partition).
    pub(super) async fn copy(
        &mut self,
        schema: &SchemaRef,
        mut stream: SendableRecordBatchStream,
        sql: &str,
        n_data: usize,
    ) -> Result<(), ExportError> {
        let data_idx: Vec<usize> = (0..n_data).collect();
        let part_idx: Vec<usize> = (n_data..schema.fields().len()).collect();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| ExportError::query(sql, e))?;
            if batch.num_rows() == 0 {
                continue;
            }
            let keys = row_keys(&batch, &part_idx)?;
            let data = source::convert(&batch, &data_idx, &self.schema)?;
            for (start, len, key) in runs(keys) {
                // in slices, so that files roll close to the target size
                let mut at = 0;
                while at < len {
                    let n = CHUNK_ROWS.min(len - at);
                    self.write(key.clone(), data.slice(start + at, n)).await?;
                    at += n;
                }
                self.progress.rows(len as u64);
            }
        }
        Ok(())
    }

    /// Closes the open file; the partitions written, with their files.
    pub(super) async fn finish(mut self) -> Result<Vec<PartitionEntry>, ExportError> {
        self.close().await?;
        Ok(self.parts)
    }

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

/// The partitions of `base` with the files and rows of `added` (new partitions at the end, in
/// order).
pub(super) fn merge_parts(
    base: Vec<PartitionEntry>,
    added: Vec<PartitionEntry>,
) -> Vec<PartitionEntry> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::hive_name;

    #[test]
    fn rows_are_cut_into_runs_of_one_partition() {
        let k = |h: &str| vec![Some("2024-05-01".to_string()), Some(h.to_string())];
        let r = runs(vec![k("1"), k("1"), k("2"), k("3"), k("3")]);
        let got: Vec<(usize, usize)> = r.iter().map(|(s, l, _)| (*s, *l)).collect();
        assert_eq!(got, [(0, 2), (2, 1), (3, 2)]);
        assert_eq!(hive_name("k8s-audit.Logs"), "k8s_audit_logs");
    }
}
