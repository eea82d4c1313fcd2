//! Partitioned Parquet writers under one global byte budget.
//!
//! Rows are split by the table's partition columns; each partition value has one open file. A
//! file keeps its rows as Arrow batches until they reach [`BUFFER_BYTES`], and only then gets an
//! [`ArrowWriter`] encoding into memory: a Parquet writer costs about 3 MiB beyond the data it
//! holds (zstd contexts per column, see [`WRITER_BYTES_PER_LEAF`]), so with thousands of small
//! partitions the writers, not the rows, would fill the memory. Every open file's memory counts
//! against the budget, the writer's fixed cost included. A file is *closed*
//! (finished, ready to upload) when it reaches the target size, when it is older than the roll
//! latency, when the sum of all open files exceeds the byte budget (the largest ones go first),
//! or when the archiver commits.
//! The decisions are pure functions ([`should_roll`], [`budget_victims`]) with unit and property
//! tests; this module does no I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type, SchemaRef};
use arrow::row::{Row, RowConverter, SortField};
use chrono::NaiveDate;
use loglake_lake::DataFile;
use loglake_lake::files::{FileSettings, is_delta_length_encoded, writer_properties};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;

use crate::error::ArchiveError;

/// When to close files. Defaults follow the archiver issue: ~128 MB files, 5 minutes latency.
/// A table's definition sets its own target size ([`RollPolicy::for_table`]).
#[derive(Debug, Clone)]
pub struct RollPolicy {
    /// Close a file once its encoded size reaches this many bytes.
    pub target_file_bytes: u64,
    /// Close a file once it has been open this long.
    pub max_file_age: Duration,
    /// Upper bound for the memory of all open writers together.
    pub memory_budget_bytes: u64,
    /// Parquet row groups are cut at this many bytes.
    pub row_group_bytes: usize,
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy {
            target_file_bytes: 128 << 20,
            max_file_age: Duration::from_secs(300),
            memory_budget_bytes: 1 << 30,
            row_group_bytes: loglake_lake::files::DEFAULT_ROW_GROUP_BYTES,
        }
    }
}

impl RollPolicy {
    /// The policy of one table's files: this one, with the table's own target size if it has
    /// one (`TableTarget::target_file_bytes`, from its definition unless `--target-file-size`
    /// or the file's `target_file_size` was given).
    pub fn for_table(&self, table: &crate::archive::TableTarget) -> RollPolicy {
        RollPolicy {
            target_file_bytes: table.target_file_bytes.unwrap_or(self.target_file_bytes),
            ..self.clone()
        }
    }
}

/// Whether a file of `bytes` that has been open for `age` must be closed now.
pub fn should_roll(bytes: u64, age: Duration, policy: &RollPolicy) -> bool {
    bytes >= policy.target_file_bytes || age >= policy.max_file_age
}

/// Which open writers to close so that the total falls to at most `target` bytes: the largest
/// first (ties by index, for determinism). `sizes[i]` is writer i's memory; returns indices.
pub fn budget_victims(sizes: &[u64], budget: u64, target: u64) -> Vec<usize> {
    let total: u64 = sizes.iter().sum();
    if total <= budget {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut remaining = total;
    let mut out = Vec::new();
    for i in order {
        if remaining <= target {
            break;
        }
        remaining -= sizes[i];
        out.push(i);
    }
    out
}

/// One partition's values, serialized as in Delta's `partitionValues` (None for null).
pub type PartitionKey = Vec<Option<String>>;

/// A finished Parquet file, in memory, ready to upload and commit.
pub struct ClosedFile {
    /// Path relative to the table root, e.g. `dt=2024-01-01/hour=07/part-….zstd.parquet`.
    pub path: String,
    pub bytes: Vec<u8>,
    /// Delta partition values (column → serialized value, `None` for null).
    pub partition_values: Vec<(String, Option<String>)>,
    pub metadata: ParquetMetaData,
    pub rows: u64,
}

impl From<ClosedFile> for DataFile {
    fn from(f: ClosedFile) -> DataFile {
        DataFile {
            path: f.path,
            bytes: f.bytes,
            partition_values: f.partition_values,
            metadata: f.metadata,
        }
    }
}

/// A partition's rows stay Arrow batches (no Parquet writer) until they take this many bytes:
/// about where a writer's fixed cost ([`WRITER_BYTES_PER_LEAF`]) is repaid by its encoding.
pub const BUFFER_BYTES: u64 = 4 << 20;

/// Buffered batches of one partition are concatenated into one beyond this many, or sooner when
/// their fixed cost ([`BATCH_BYTES_PER_COLUMN`]) exceeds a quarter of the bytes they hold, so a
/// partition that gets a row or two per poll batch costs its rows plus about one batch.
const MAX_BUFFERED_BATCHES: usize = 16;

/// Memory of a buffered batch that `get_array_memory_size` does not count (array structs,
/// `Arc`s, buffer headers), per column; measured ≈ 240 bytes.
const BATCH_BYTES_PER_COLUMN: u64 = 256;

/// Memory of an open [`ArrowWriter`] that its `memory_size` does not report, per Parquet leaf
/// column: each column writer holds a zstd decompression context (≈ 96 KiB, unused when writing)
/// and, once it has compressed a page, a compression workspace sized to its pages (up to ≈ 1.3 MiB
/// for 1 MiB pages). Measured ≈ 3.3 MiB for a writer of the 20-leaf container schema.
const WRITER_BYTES_PER_LEAF: u64 = 192 << 10;

/// What a `DELTA_LENGTH_BYTE_ARRAY` column's writer ([`is_delta_length_encoded`]) keeps beyond [`WRITER_BYTES_PER_LEAF`]:
/// parquet's `DELTA_LENGTH_BYTE_ARRAY` encoder clears its page buffer after each page but keeps
/// the capacity, which `memory_size` does not report. A page is cut at the first 1,024-value
/// mini-batch past the 1 MiB page limit, so for values under 1 KB the buffer stays below 2 MiB
/// (doubling growth). Measured: +35 MB peak RSS over 24 open writers (BENCHMARKS.md, session 10).
const WRITER_BYTES_PER_DELTA_LENGTH_LEAF: u64 = 2 << 20;

struct OpenFile {
    /// Rows not handed to a Parquet writer yet (the file is below [`BUFFER_BYTES`]).
    buffered: Vec<RecordBatch>,
    buffered_bytes: u64,
    writer: Option<ArrowWriter<Vec<u8>>>,
    partition_values: Vec<(String, Option<String>)>,
    opened: Instant,
    rows: u64,
}

impl OpenFile {
    /// Memory held: buffered batches, or the writer's output, in-progress row group and fixed
    /// cost (`writer_fixed`).
    fn memory(&self, writer_fixed: u64) -> u64 {
        self.buffered_bytes
            + self.writer.as_ref().map_or(0, |w| {
                (w.bytes_written() + w.memory_size()) as u64 + writer_fixed
            })
    }
    fn encoded_estimate(&self) -> u64 {
        self.buffered_bytes
            + self
                .writer
                .as_ref()
                .map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64)
    }
    fn buffer(&mut self, part: RecordBatch) -> Result<(), ArchiveError> {
        self.buffered_bytes += batch_memory(&part);
        self.buffered.push(part);
        let n = self.buffered.len() as u64;
        let fixed = n * self.buffered[0].num_columns() as u64 * BATCH_BYTES_PER_COLUMN;
        if n > 1 && (n > MAX_BUFFERED_BATCHES as u64 || fixed * 4 > self.buffered_bytes) {
            let one = concat_batches(self.buffered[0].schema_ref(), &self.buffered)?;
            self.buffered_bytes = batch_memory(&one);
            self.buffered = vec![one];
        }
        Ok(())
    }
    /// Opens the Parquet writer and hands it the buffered rows.
    fn start_writer(
        &mut self,
        schema: &SchemaRef,
        props: &WriterProperties,
    ) -> Result<&mut ArrowWriter<Vec<u8>>, ArchiveError> {
        let w = match self.writer.take() {
            Some(w) => w,
            None => ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.clone()))?,
        };
        let w = self.writer.insert(w);
        for b in self.buffered.drain(..) {
            w.write(&b)?;
        }
        self.buffered_bytes = 0;
        Ok(w)
    }
}

fn batch_memory(b: &RecordBatch) -> u64 {
    b.get_array_memory_size() as u64 + b.num_columns() as u64 * BATCH_BYTES_PER_COLUMN
}

/// The open writers of one table.
pub struct WriterSet {
    table_schema: SchemaRef,
    file_schema: SchemaRef,
    partition_by: Vec<String>,
    partition_idx: Vec<usize>,
    file_idx: Vec<usize>,
    props: WriterProperties,
    policy: RollPolicy,
    /// Unreported memory of one open Parquet writer of this schema (see [`WRITER_BYTES_PER_LEAF`]).
    writer_fixed: u64,
    open: HashMap<PartitionKey, OpenFile>,
}

impl WriterSet {
    pub fn new(
        table_schema: SchemaRef,
        partition_by: &[String],
        policy: RollPolicy,
        bloom_columns: &[String],
    ) -> Result<Self, ArchiveError> {
        let mut partition_idx = Vec::new();
        for c in partition_by {
            let i = table_schema.index_of(c).map_err(|_| {
                ArchiveError::Config(format!("partition column {c} is not in the table schema"))
            })?;
            partition_idx.push(i);
        }
        let file_idx: Vec<usize> = (0..table_schema.fields().len())
            .filter(|i| !partition_idx.contains(i))
            .collect();
        let file_schema = Arc::new(table_schema.project(&file_idx)?);
        let settings = FileSettings {
            bloom_filter_columns: bloom_columns.to_vec(),
            row_group_bytes: policy.row_group_bytes,
            bloom_filter_ndv: None,
        };
        let props = writer_properties(&file_schema, &settings);
        let leaves = ArrowSchemaConverter::new()
            .convert(&file_schema)?
            .num_columns() as u64;
        let delta_length_leaves = file_schema
            .fields()
            .iter()
            .filter(|f| is_delta_length_encoded(f))
            .count() as u64;
        Ok(WriterSet {
            table_schema,
            file_schema,
            partition_by: partition_by.to_vec(),
            partition_idx,
            file_idx,
            props,
            policy,
            writer_fixed: leaves * WRITER_BYTES_PER_LEAF
                + delta_length_leaves * WRITER_BYTES_PER_DELTA_LENGTH_LEAF,
            open: HashMap::new(),
        })
    }

    /// The schema of the Parquet files (table schema without partition columns).
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// Memory held by all open files.
    pub fn memory(&self) -> u64 {
        self.open
            .values()
            .map(|f| f.memory(self.writer_fixed))
            .sum()
    }

    /// Writes a batch of the table schema; returns the files that had to be closed (size roll).
    ///
    /// `headroom` is what the budget has left (budget − memory of all open files): the rows
    /// written take from it, and a partition whose buffer reaches [`BUFFER_BYTES`] gets its
    /// Parquet writer (≈ 3 MiB of fixed cost each, [`WRITER_BYTES_PER_LEAF`]) only while the
    /// headroom covers that cost. Otherwise it stays buffered until a later batch, or until the
    /// budget closes it (it is then among the largest). Without this, one poll batch that
    /// carries the 50 busiest partitions over the threshold together started 50 writers at
    /// once: +182 MiB in one batch, far past a 256 MiB budget before the budget could act.
    pub fn write(
        &mut self,
        batch: &RecordBatch,
        headroom: &mut u64,
    ) -> Result<Vec<ClosedFile>, ArchiveError> {
        let mut closed = Vec::new();
        if batch.num_rows() == 0 {
            return Ok(closed);
        }
        let groups = partition_groups(batch, &self.partition_idx)?;
        let projected = batch.project(&self.file_idx)?;
        // The rows stay in memory whatever happens: they take their share first.
        *headroom = headroom.saturating_sub(batch_memory(&projected));
        for (key, rows) in groups {
            let key = &key;
            let part = if rows.len() == batch.num_rows() {
                projected.clone()
            } else {
                take_record_batch(&projected, &UInt32Array::from(rows))?
            };
            if !self.open.contains_key(key) {
                let partition_values = self
                    .partition_by
                    .iter()
                    .cloned()
                    .zip(key.iter().cloned())
                    .collect();
                self.open.insert(
                    key.clone(),
                    OpenFile {
                        buffered: Vec::new(),
                        buffered_bytes: 0,
                        writer: None,
                        partition_values,
                        opened: Instant::now(),
                        rows: 0,
                    },
                );
            }
            let Some(f) = self.open.get_mut(key) else {
                continue;
            };
            f.rows += part.num_rows() as u64;
            match &mut f.writer {
                Some(w) => w.write(&part)?,
                None => {
                    f.buffer(part)?;
                    if f.buffered_bytes >= BUFFER_BYTES && *headroom >= self.writer_fixed {
                        *headroom -= self.writer_fixed;
                        f.start_writer(&self.file_schema, &self.props)?;
                    }
                }
            }
            if should_roll(f.encoded_estimate(), f.opened.elapsed(), &self.policy)
                && let Some(f) = self.open.remove(key)
            {
                closed.push(finish(f, &self.file_schema, &self.props)?);
            }
        }
        Ok(closed)
    }

    /// Memory of each open writer.
    pub fn sizes(&self) -> Vec<(PartitionKey, u64)> {
        self.open
            .iter()
            .map(|(k, f)| (k.clone(), f.memory(self.writer_fixed)))
            .collect()
    }

    /// Closes the open writer of one partition, if there is one.
    pub fn close(&mut self, key: &PartitionKey) -> Result<Option<ClosedFile>, ArchiveError> {
        self.open
            .remove(key)
            .map(|f| finish(f, &self.file_schema, &self.props))
            .transpose()
    }

    /// Closes one open file, if any: call until `None` to close them all, uploading each before
    /// closing the next (finished files of thousands of partitions must not pile up in memory).
    pub fn close_next(&mut self) -> Result<Option<ClosedFile>, ArchiveError> {
        match self.open.keys().next().cloned() {
            Some(key) => self.close(&key),
            None => Ok(None),
        }
    }

    /// Drops every open file without writing it (used when a rebalance or a conflict makes the
    /// buffered rows someone else's).
    pub fn discard_all(&mut self) {
        self.open.clear();
    }
}

fn finish(
    mut f: OpenFile,
    schema: &SchemaRef,
    props: &WriterProperties,
) -> Result<ClosedFile, ArchiveError> {
    let writer = f.start_writer(schema, props)?;
    let metadata = writer.finish()?;
    // The writer is finished (footer written): take its buffer without copying.
    let bytes = std::mem::take(writer.inner_mut());
    let mut path = String::new();
    for (col, v) in &f.partition_values {
        path.push_str(&partition_segment(col, v.as_deref()));
        path.push('/');
    }
    path.push_str(&format!("part-{}.zstd.parquet", uuid::Uuid::new_v4()));
    Ok(ClosedFile {
        path,
        bytes,
        partition_values: f.partition_values,
        metadata,
        rows: f.rows,
    })
}

/// `col=value` path segment, Hive style: `hour` zero-padded to two digits, characters outside
/// `[A-Za-z0-9._-]` percent-encoded, null as `__HIVE_DEFAULT_PARTITION__`.
pub fn partition_segment(col: &str, value: Option<&str>) -> String {
    let Some(v) = value else {
        return format!("{col}=__HIVE_DEFAULT_PARTITION__");
    };
    if col == "hour" && v.len() == 1 {
        return format!("{col}=0{v}");
    }
    let mut out = format!("{col}=");
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The rows of `batch` grouped by partition, in order of first appearance: each group's
/// partition values (serialized as Delta does in `partitionValues`) and its row indices.
///
/// Rows are compared in arrow's row format (one comparable byte string per row), so no value
/// is formatted per row: each group's strings are made once, from its first row. Runs of equal
/// keys (the usual case: Kafka order is roughly time order) skip the hash lookup.
fn partition_groups(
    batch: &RecordBatch,
    idx: &[usize],
) -> Result<Vec<(PartitionKey, Vec<u32>)>, ArchiveError> {
    let n = batch.num_rows();
    if idx.is_empty() {
        return Ok(vec![(Vec::new(), (0..n as u32).collect())]);
    }
    let cols: Vec<ArrayRef> = idx.iter().map(|&i| batch.column(i).clone()).collect();
    let converter = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&cols)?;
    let mut index: HashMap<Row<'_>, usize> = HashMap::new();
    let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut prev: Option<(Row<'_>, usize)> = None;
    for r in 0..n {
        let row = rows.row(r);
        let g = match prev {
            Some((p, g)) if p == row => g,
            _ => *index.entry(row).or_insert_with(|| {
                groups.push((r, Vec::new()));
                groups.len() - 1
            }),
        };
        groups[g].1.push(r as u32);
        prev = Some((row, g));
    }
    groups
        .into_iter()
        .map(|(first, rows)| Ok((partition_key(batch, idx, first)?, rows)))
        .collect()
}

/// Row `r`'s partition values, serialized as Delta does in `partitionValues`.
fn partition_key(
    batch: &RecordBatch,
    idx: &[usize],
    r: usize,
) -> Result<PartitionKey, ArchiveError> {
    let mut key = Vec::with_capacity(idx.len());
    for &i in idx {
        let col: &ArrayRef = batch.column(i);
        if col.is_null(r) {
            key.push(None);
            continue;
        }
        let v = match col.data_type() {
            DataType::Date32 => {
                let days = col.as_primitive::<Date32Type>().value(r);
                NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            }
            DataType::Int32 => col.as_primitive::<Int32Type>().value(r).to_string(),
            DataType::Int64 => col.as_primitive::<Int64Type>().value(r).to_string(),
            DataType::Utf8 => col.as_string::<i32>().value(r).to_string(),
            other => {
                return Err(ArchiveError::Config(format!(
                    "partition column {} has type {other}, expected date, int or string",
                    batch.schema_ref().field(i).name()
                )));
            }
        };
        key.push(Some(v));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    #[test]
    fn roll_by_size_or_age() {
        let p = RollPolicy {
            target_file_bytes: 100,
            max_file_age: Duration::from_secs(10),
            ..Default::default()
        };
        assert!(!should_roll(99, Duration::from_secs(9), &p));
        assert!(should_roll(100, Duration::from_secs(0), &p));
        assert!(should_roll(1, Duration::from_secs(10), &p));
    }

    #[test]
    fn budget_closes_largest_first() {
        assert_eq!(budget_victims(&[10, 50, 30], 100, 75), Vec::<usize>::new());
        assert_eq!(budget_victims(&[10, 80, 30], 100, 75), vec![1]);
        assert_eq!(budget_victims(&[40, 40, 40], 100, 50), vec![0, 1]);
    }

    #[test]
    fn rows_group_by_partition_in_order_of_first_appearance() {
        use arrow::array::{Date32Array, Int32Array};
        let schema = Arc::new(Schema::new(vec![
            Field::new("dt", DataType::Date32, true),
            Field::new("hour", DataType::Int32, true),
            Field::new("ns", DataType::Utf8, true),
        ]));
        // 19_844 = 2024-05-01
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(vec![
                    Some(19_844),
                    Some(19_844),
                    Some(19_845),
                    Some(19_844),
                    None,
                    Some(19_844),
                ])),
                Arc::new(Int32Array::from(vec![
                    Some(7),
                    Some(7),
                    Some(0),
                    Some(7),
                    Some(7),
                    Some(23),
                ])),
                Arc::new(arrow::array::StringArray::from(vec![
                    Some("a"),
                    Some("a"),
                    Some("a"),
                    Some("a"),
                    Some("a"),
                    None,
                ])),
            ],
        )
        .expect("batch");
        let s = |v: &str| Some(v.to_string());
        let groups = partition_groups(&b, &[0, 1, 2]).expect("groups");
        assert_eq!(
            groups,
            vec![
                (vec![s("2024-05-01"), s("7"), s("a")], vec![0, 1, 3]),
                (vec![s("2024-05-02"), s("0"), s("a")], vec![2]),
                (vec![None, s("7"), s("a")], vec![4]),
                (vec![s("2024-05-01"), s("23"), None], vec![5]),
            ]
        );
        // only the hour: rows 0..5 are 7 except row 2 (0) and row 5 (23)
        let groups = partition_groups(&b, &[1]).expect("groups");
        assert_eq!(
            groups,
            vec![
                (vec![s("7")], vec![0, 1, 3, 4]),
                (vec![s("0")], vec![2]),
                (vec![s("23")], vec![5]),
            ]
        );
        assert_eq!(
            partition_groups(&b, &[]).expect("groups"),
            vec![(vec![], vec![0, 1, 2, 3, 4, 5])]
        );
    }

    #[test]
    fn segments() {
        assert_eq!(partition_segment("hour", Some("7")), "hour=07");
        assert_eq!(partition_segment("hour", Some("17")), "hour=17");
        assert_eq!(partition_segment("dt", Some("2024-01-02")), "dt=2024-01-02");
        assert_eq!(
            partition_segment("tenant", Some("a/b c")),
            "tenant=a%2Fb%20c"
        );
        assert_eq!(
            partition_segment("tenant", None),
            "tenant=__HIVE_DEFAULT_PARTITION__"
        );
    }

    /// Rows of `(p, msg, n)`: partition column `p`, a message, a number.
    fn rows(parts: &[&str], msg: &str) -> RecordBatch {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::Field;
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, false),
            Field::new("msg", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let n = parts.len();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(parts.to_vec())),
                Arc::new(StringArray::from(vec![msg; n])),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ],
        )
        .expect("batch")
    }

    fn writer_set() -> WriterSet {
        WriterSet::new(
            rows(&[], "").schema(),
            &["p".to_string()],
            RollPolicy::default(),
            &[],
        )
        .expect("writer set")
    }

    fn read_back(f: &ClosedFile) -> usize {
        let mut file = tempfile::tempfile().expect("tmp");
        std::io::Write::write_all(&mut file, &f.bytes).expect("write");
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader")
            .map(|b| b.expect("batch").num_rows())
            .sum()
    }

    #[test]
    fn small_partitions_stay_arrow_batches_and_close_into_complete_files() {
        let mut ws = writer_set();
        for _ in 0..40 {
            // one row per partition per batch: concatenated as they come
            let closed = ws
                .write(&rows(&["a", "b", "c"], "hello"), &mut u64::MAX.clone())
                .expect("write");
            assert!(closed.is_empty());
        }
        assert_eq!(ws.open.len(), 3);
        for f in ws.open.values() {
            assert!(f.writer.is_none(), "no Parquet writer below BUFFER_BYTES");
            assert!(f.buffered.len() <= 4, "{} batches kept", f.buffered.len());
        }
        assert!(ws.memory() > 0);
        let mut total = 0;
        while let Some(f) = ws.close_next().expect("close") {
            assert_eq!(f.rows, 40);
            assert_eq!(read_back(&f), 40);
            assert_eq!(f.metadata.file_metadata().num_rows(), 40);
            assert!(f.path.starts_with(&format!(
                "p={}/",
                f.partition_values[0].1.as_deref().unwrap_or_default()
            )));
            total += 1;
        }
        assert_eq!(total, 3);
        assert_eq!(ws.memory(), 0);
    }

    #[test]
    fn a_large_partition_gets_a_writer_whose_fixed_cost_counts() {
        let mut ws = writer_set();
        let big = "x".repeat(64 << 10);
        let mut written = 0;
        while ws
            .open
            .get(&vec![Some("a".to_string())])
            .is_none_or(|f| f.writer.is_none())
        {
            ws.write(&rows(&["a"; 8], &big), &mut u64::MAX.clone())
                .expect("write");
            written += 8;
            assert!(written < 1000, "never opened a writer");
        }
        assert!(written as u64 * (64 << 10) >= BUFFER_BYTES);
        assert!(
            ws.memory() >= ws.writer_fixed,
            "the writer's fixed cost is in the budget"
        );
        let f = ws.close_next().expect("close").expect("file");
        assert_eq!(read_back(&f), written);
    }

    #[test]
    fn writers_start_only_within_the_budget_headroom() {
        let mut ws = writer_set();
        let big = "x".repeat(64 << 10);
        // 10 partitions, each over BUFFER_BYTES in one batch: 70 rows × 64 KiB = 4.4 MiB.
        let parts: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        let keys: Vec<&str> = parts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.as_str(), 70))
            .collect();
        let batch = rows(&keys, &big);
        let rows_memory = batch_memory(&batch.project(&[1, 2]).expect("project"));
        assert!(rows_memory >= 10 * BUFFER_BYTES);
        // Room for the rows and for exactly three writers.
        let mut headroom = rows_memory + 3 * ws.writer_fixed + ws.writer_fixed / 2;
        let closed = ws.write(&batch, &mut headroom).expect("write");
        assert!(closed.is_empty());
        let started = ws.open.values().filter(|f| f.writer.is_some()).count();
        assert_eq!(started, 3);
        assert_eq!(headroom, ws.writer_fixed / 2);
        // No headroom at all: nothing starts, and the rows are still all kept.
        let mut ws = writer_set();
        let closed = ws.write(&batch, &mut 0).expect("write");
        assert!(closed.is_empty());
        assert!(ws.open.values().all(|f| f.writer.is_none()));
        assert!(
            ws.memory() >= 10 * BUFFER_BYTES,
            "{} < {rows_memory}",
            ws.memory()
        );
        // A later batch with room starts the waiting partition's writer.
        ws.write(&rows(&["p0"], "y"), &mut u64::MAX.clone())
            .expect("write");
        let p0 = &ws.open[&vec![Some("p0".to_string())]];
        assert!(p0.writer.is_some());
        let mut files = 0;
        let mut total = 0;
        while let Some(f) = ws.close_next().expect("close") {
            total += read_back(&f);
            files += 1;
        }
        assert_eq!((files, total), (10, 701));
    }

    proptest! {
        #[test]
        fn budget_victims_bring_total_under_target(sizes in proptest::collection::vec(0u64..1000, 0..50), budget in 1u64..20000) {
            let target = budget / 4 * 3;
            let v = budget_victims(&sizes, budget, target);
            let total: u64 = sizes.iter().sum();
            let left: u64 = total - v.iter().map(|&i| sizes[i]).sum::<u64>();
            if total <= budget {
                prop_assert!(v.is_empty());
            } else {
                prop_assert!(left <= target);
                // minimal: without the last victim we would still be above target
                if let Some(&last) = v.last() {
                    prop_assert!(left + sizes[last] > target);
                }
                // victims are in non-increasing size order
                for w in v.windows(2) { prop_assert!(sizes[w[0]] >= sizes[w[1]]); }
            }
        }
    }
}
