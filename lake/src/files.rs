//! The Parquet settings of loglake's data files, from a table definition and a file schema:
//! every stage that writes files (the archiver, the compactor) writes them with exactly these
//! encodings, statistics, page index and bloom filters.
//!
//! zstd (level 3), version-1 data pages (every reader we check decodes them), page-level
//! statistics and the page index, dictionary encoding for low-cardinality columns, times and
//! offsets `DELTA_BINARY_PACKED`, ids and free text `DELTA_LENGTH_BYTE_ARRAY`, no min/max for
//! `message` and the maps, bloom filters on the table's `bloom_filter_columns`.

use arrow::datatypes::{DataType, Field, Schema};
use loglake_schemas::TableDef;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

/// Row groups are cut at this many bytes unless a writer asks for less (the archiver cuts at
/// most a quarter of its memory budget).
pub const DEFAULT_ROW_GROUP_BYTES: usize = 64 << 20;

/// Row groups are cut at this many rows at most.
pub const MAX_ROW_GROUP_ROWS: usize = 1 << 20;

/// Columns with many distinct values, where dictionary encoding only costs.
pub const NO_DICTIONARY: &[&str] = &[
    "message",
    "trace_id",
    "span_id",
    "kafka_offset",
    "ts",
    "ingest_ts",
];

/// Integer and timestamp columns whose values in a file are close to each other (event and
/// ingest times, offsets of a few Kafka partitions): `DELTA_BINARY_PACKED` stores the small
/// differences in a few bits instead of 8 bytes per value for zstd to squeeze.
pub const DELTA_ENCODED: &[&str] = &["ts", "ingest_ts", "kafka_offset"];

/// String columns without a dictionary, written `DELTA_LENGTH_BYTE_ARRAY`: the lengths go
/// delta-packed into their own run and the bytes follow back to back, so zstd sees only text
/// (`PLAIN` puts a 4-byte length before every value, which zstd cannot squeeze out of random
/// ids). Measured on a 600 MB payload (BENCHMARKS.md, session 10): `trace_id` 3.48 -> 3.20 MB,
/// `message` 34.70 -> 34.47 MB. Every reader we check (Spark 3.3+, DuckDB, delta-rs, polars)
/// decodes it.
pub const DELTA_LENGTH_ENCODED: &[&str] = &["message", "trace_id", "span_id"];

/// Free-text columns without min/max statistics: every value is distinct, so the bounds prune
/// nothing, and computing them compares every string (≈ 2 % of the archiver's CPU).
pub const NO_STATISTICS: &[&str] = &["message"];

/// Whether `f` is written `DELTA_LENGTH_BYTE_ARRAY` (see [`DELTA_LENGTH_ENCODED`]); its writer
/// holds a larger page buffer, which the archiver's memory accounting counts.
pub fn is_delta_length_encoded(f: &Field) -> bool {
    DELTA_LENGTH_ENCODED.contains(&f.name().as_str())
        && matches!(f.data_type(), DataType::Utf8 | DataType::Binary)
}

/// What varies between writers of the same table: which columns get bloom filters (from the
/// table definition), where row groups are cut, and how many distinct values a bloom filter is
/// sized for.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    /// Top-level columns that get a bloom filter (a table's `bloom_filter_columns`).
    pub bloom_filter_columns: Vec<String>,
    /// Cut row groups at this many bytes.
    pub row_group_bytes: usize,
    /// Size each bloom filter for this many distinct values (a compactor passes the distinct
    /// count of the row group it writes). `None`: parquet's default, the row-group row limit
    /// ([`MAX_ROW_GROUP_ROWS`]); either way the filter is folded down to its content when the
    /// row group is finished, so this mostly bounds the memory while writing.
    pub bloom_filter_ndv: Option<u64>,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            bloom_filter_columns: Vec::new(),
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            bloom_filter_ndv: None,
        }
    }
}

impl FileSettings {
    /// The settings of a table's files: its bloom filter columns, default row groups.
    pub fn for_table(def: &TableDef) -> Self {
        FileSettings {
            bloom_filter_columns: def.bloom_filter_columns.clone(),
            ..Default::default()
        }
    }

    pub fn with_row_group_bytes(mut self, bytes: usize) -> Self {
        self.row_group_bytes = bytes;
        self
    }

    pub fn with_bloom_filter_ndv(mut self, ndv: Option<u64>) -> Self {
        self.bloom_filter_ndv = ndv;
        self
    }
}

/// The Parquet writer properties of a file of `file_schema` (the table's schema without its
/// partition columns) written with `settings`.
pub fn writer_properties(file_schema: &Schema, settings: &FileSettings) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_bytes(Some(settings.row_group_bytes))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_dictionary_enabled(true)
        .set_created_by(format!("loglake {}", env!("CARGO_PKG_VERSION")));
    for f in file_schema.fields() {
        let col = || ColumnPath::from(f.name().as_str());
        if NO_DICTIONARY.contains(&f.name().as_str()) {
            b = b.set_column_dictionary_enabled(col(), false);
        }
        if DELTA_ENCODED.contains(&f.name().as_str())
            && matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..))
        {
            b = b.set_column_encoding(col(), Encoding::DELTA_BINARY_PACKED);
        }
        if is_delta_length_encoded(f) {
            b = b.set_column_encoding(col(), Encoding::DELTA_LENGTH_BYTE_ARRAY);
        }
        if NO_STATISTICS.contains(&f.name().as_str()) {
            b = b.set_column_statistics_enabled(col(), EnabledStatistics::None);
        }
        // Map columns (labels, attrs): min/max of their keys and values prune nothing (no
        // reader pushes `attrs['k'] = v` into Parquet statistics, Delta's stats leave maps out)
        // and computing them compares every string.
        if let DataType::Map(entries, _) = f.data_type()
            && let DataType::Struct(kv) = entries.data_type()
        {
            for leaf in kv.iter() {
                b = b.set_column_statistics_enabled(
                    ColumnPath::new(vec![
                        f.name().clone(),
                        entries.name().clone(),
                        leaf.name().clone(),
                    ]),
                    EnabledStatistics::None,
                );
            }
        }
        if settings.bloom_filter_columns.iter().any(|c| c == f.name()) {
            b = b.set_column_bloom_filter_enabled(col(), true);
            if let Some(ndv) = settings.bloom_filter_ndv {
                b = b.set_column_bloom_filter_max_ndv(col(), ndv.max(1));
            }
        }
    }
    b.build()
}

/// [`writer_properties`] for a file of the table `def` ([`FileSettings::for_table`]), cut at
/// `row_group_bytes`, bloom filters sized for `bloom_filter_ndv` distinct values.
pub fn table_writer_properties(
    def: &TableDef,
    file_schema: &Schema,
    row_group_bytes: usize,
    bloom_filter_ndv: Option<u64>,
) -> WriterProperties {
    let settings = FileSettings::for_table(def)
        .with_row_group_bytes(row_group_bytes)
        .with_bloom_filter_ndv(bloom_filter_ndv);
    writer_properties(file_schema, &settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Array, ArrayRef, Date32Array, Int32Array, Int64Array, MapBuilder, MapFieldNames,
        RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    };
    use arrow::compute::concat_batches;
    use loglake_schemas::{TableKind, load_table_dir, table_schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
    use std::sync::Arc;

    /// `n` rows of `schema`: times, offsets, `message` and `trace_id` as a log would have them,
    /// every other string column `<column>-<i % 50>`, NOT NULL columns a constant, the rest null.
    fn sample_batch(schema: &Arc<Schema>, n: i64) -> RecordBatch {
        let cols: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match (f.name().as_str(), f.data_type()) {
                ("ts" | "ingest_ts", DataType::Timestamp(..)) => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        (0..n).map(|i| 1_714_557_600_000_000 + i * 1_237),
                    )
                    .with_timezone("UTC"),
                ) as ArrayRef,
                ("kafka_offset", _) => Arc::new(Int64Array::from_iter_values(5_000..5_000 + n)),
                ("message", DataType::Utf8) => Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("GET /api/v1/items/{i} 200 {}ms", i % 97)),
                )),
                ("trace_id", DataType::Utf8) => {
                    Arc::new(StringArray::from_iter((0..n).map(|i| {
                        (i % 4 != 0).then(|| format!("{:032x}", i * 0x9e37_79b9))
                    })))
                }
                (name, DataType::Utf8) => Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("{name}-{}", i % 50)),
                )),
                (_, t) if f.is_nullable() => arrow::array::new_null_array(t, n as usize),
                (_, DataType::Int32) => Arc::new(Int32Array::from(vec![1; n as usize])),
                (_, DataType::Int64) => Arc::new(Int64Array::from(vec![1; n as usize])),
                (_, DataType::Date32) => Arc::new(Date32Array::from(vec![19_844; n as usize])),
                (_, DataType::Map(..)) => {
                    let names = MapFieldNames {
                        entry: "key_value".into(),
                        key: "key".into(),
                        value: "value".into(),
                    };
                    let mut m =
                        MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
                    for _ in 0..n {
                        m.append(true).expect("map");
                    }
                    Arc::new(m.finish())
                }
                (name, other) => panic!("no test value for {name}: {other}"),
            })
            .collect();
        RecordBatch::try_new(schema.clone(), cols).expect("batch")
    }

    /// Writes `batch` with `props` and opens the file again, bloom filters read.
    fn write_and_open(batch: &RecordBatch, props: WriterProperties) -> std::fs::File {
        let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).expect("writer");
        w.write(batch).expect("write");
        let mut file = tempfile::tempfile().expect("tmp");
        std::io::Write::write_all(&mut file, &w.into_inner().expect("finish")).expect("write");
        file
    }

    fn open_footer(file: &std::fs::File) -> SerializedFileReader<std::fs::File> {
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        SerializedFileReader::new_with_options(file.try_clone().expect("dup"), options)
            .expect("footer")
    }

    /// The container schema's settings: times and offsets delta-encoded, free text without a
    /// dictionary, and the file reads back with the same values.
    #[test]
    fn container_columns_get_their_encodings() {
        let schema = table_schema(TableKind::Container);
        let batch = sample_batch(&schema, 1000);
        let props = writer_properties(&schema, &FileSettings::default());
        let file = write_and_open(&batch, props);
        let reader = open_footer(&file);
        let rg = reader.metadata().row_group(0);
        let encodings = |name: &str| -> Vec<Encoding> {
            rg.columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .map(|c| c.encodings().collect())
                .unwrap_or_else(|| panic!("no column {name}"))
        };
        for c in ["ts", "ingest_ts", "kafka_offset"] {
            assert!(
                encodings(c).contains(&Encoding::DELTA_BINARY_PACKED),
                "{c}: {:?}",
                encodings(c)
            );
        }
        for c in ["message", "trace_id"] {
            assert!(
                encodings(c).contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY),
                "{c}: {:?}",
                encodings(c)
            );
            assert!(!encodings(c).contains(&Encoding::RLE_DICTIONARY));
            assert!(
                !encodings(c).contains(&Encoding::PLAIN),
                "{c}: {:?}",
                encodings(c)
            );
        }
        assert!(encodings("namespace").contains(&Encoding::RLE_DICTIONARY));
        // message and the maps have no min/max; other columns do, with a page index
        let stats = |name: &str| {
            rg.columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .and_then(|c| c.statistics().and_then(|s| s.min_bytes_opt().map(|_| ())))
        };
        assert!(stats("message").is_none());
        assert!(stats("labels.key_value.key").is_none());
        assert!(stats("namespace").is_some() && stats("ts").is_some());
        assert!(
            rg.columns()
                .iter()
                .all(|c| c.bloom_filter_offset().is_none())
        );
        let back: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader")
                .map(|b| b.expect("batch"))
                .collect();
        let back = concat_batches(&schema, &back).expect("concat");
        for c in ["ts", "kafka_offset", "message", "trace_id"] {
            assert_eq!(back.column_by_name(c), batch.column_by_name(c), "{c}");
        }
    }

    /// Every table definition of `schemas/tables`: a bloom filter on exactly its
    /// `bloom_filter_columns` (holding the values written), sized for the NDV asked for.
    #[test]
    fn table_definitions_choose_the_bloom_filter_columns() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/tables");
        let defs = load_table_dir(&dir).expect("table definitions");
        assert!(defs.len() >= 4, "{defs:?}");
        for def in defs {
            let schema = table_schema(def.kind());
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| !def.partition_by.contains(schema.field(i).name()))
                .collect();
            let file_schema = Arc::new(schema.project(&keep).expect("file schema"));
            assert!(!def.bloom_filter_columns.is_empty(), "{}", def.name);
            for ndv in [None, Some(300)] {
                let props = table_writer_properties(&def, &file_schema, 1 << 20, ndv);
                for f in file_schema.fields() {
                    let col = ColumnPath::from(f.name().as_str());
                    let bloom = props.bloom_filter_properties(&col);
                    if def.bloom_filter_columns.contains(f.name()) {
                        let want = ndv.unwrap_or(MAX_ROW_GROUP_ROWS as u64);
                        assert_eq!(bloom.map(|b| b.ndv()), Some(want), "{}.{f}", def.name);
                    } else {
                        assert!(bloom.is_none(), "{}.{}", def.name, f.name());
                    }
                }
                assert_eq!(props.max_row_group_bytes(), Some(1 << 20));
                let batch = sample_batch(&file_schema, 400);
                let file = write_and_open(&batch, props);
                let reader = open_footer(&file);
                let rg = reader.get_row_group(0).expect("row group");
                let meta = reader.metadata().row_group(0);
                for (i, c) in meta.columns().iter().enumerate() {
                    let top = c.column_path().parts()[0].as_str();
                    let filter = rg.get_column_bloom_filter(i);
                    if !def.bloom_filter_columns.iter().any(|b| b == top) {
                        assert!(filter.is_none(), "{}.{top}", def.name);
                        continue;
                    }
                    let filter = filter.unwrap_or_else(|| panic!("{}.{top}: none", def.name));
                    let values = batch
                        .column_by_name(top)
                        .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
                        .unwrap_or_else(|| panic!("{}.{top}: not a string", def.name));
                    for v in values.iter().flatten().take(60) {
                        assert!(filter.check(v), "{}.{top}: {v} not in the filter", def.name);
                    }
                }
            }
        }
    }

    #[test]
    fn delta_length_columns() {
        let f = |name: &str, t: DataType| Field::new(name, t, true);
        assert!(is_delta_length_encoded(&f("trace_id", DataType::Utf8)));
        assert!(is_delta_length_encoded(&f("message", DataType::Binary)));
        assert!(!is_delta_length_encoded(&f("trace_id", DataType::Int64)));
        assert!(!is_delta_length_encoded(&f("pod", DataType::Utf8)));
    }
}
