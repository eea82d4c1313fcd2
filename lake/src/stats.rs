//! Delta `add.stats` from a Parquet footer, and the `add` action of a written file.
//!
//! Readers (delta-rs, Spark, DuckDB, Trino) skip files with these statistics, so they must never
//! be narrower than the data: a min above a real value or a max below one silently drops rows.
//! Rules:
//! - only top-level primitive columns (maps and lists are left out: readers treat a missing
//!   column stat as "unknown", which is safe);
//! - min/max come from the Parquet writer's row-group statistics, merged, and only when the
//!   writer marked them exact;
//! - timestamps are written at millisecond precision (Delta's stats format): min rounded down,
//!   max rounded up, so the range always covers the microsecond values;
//! - strings longer than [`MAX_STRING_STAT_BYTES`] get no min/max (Spark truncates with a
//!   tie-break character instead; leaving them out is simpler and equally safe);
//! - `nullCount` only when every row group reports it.

use arrow::datatypes::{DataType, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate};
use deltalake::kernel::Add;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// Strings longer than this get no min/max statistics.
pub const MAX_STRING_STAT_BYTES: usize = 64;

/// Builds the Delta stats JSON (`{"numRecords":…,"minValues":…,"maxValues":…,"nullCount":…}`)
/// for a file written with `file_schema` (the table schema without partition columns).
pub fn delta_stats(file_schema: &Schema, meta: &ParquetMetaData) -> Value {
    let num_records: i64 = meta.row_groups().iter().map(|rg| rg.num_rows()).sum();
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let mut null_count = Map::new();

    // Top-level primitive fields map 1:1 onto Parquet leaf columns by path.
    let descr = meta.file_metadata().schema_descr();
    for field in file_schema.fields() {
        if !is_stat_type(field.data_type()) {
            continue;
        }
        let Some(leaf) = (0..descr.num_columns())
            .find(|&i| descr.column(i).path().parts() == [field.name().as_str()])
        else {
            continue;
        };
        let mut nulls: Option<i64> = Some(0);
        let mut min: Option<Value> = None;
        let mut max: Option<Value> = None;
        let mut exact = true;
        for rg in meta.row_groups() {
            let col = rg.column(leaf);
            let Some(stats) = col.statistics() else {
                nulls = None;
                exact = false;
                continue;
            };
            nulls = match (nulls, stats.null_count_opt()) {
                (Some(a), Some(b)) => Some(a + b as i64),
                _ => None,
            };
            if rg.num_rows() == stats.null_count_opt().unwrap_or(0) as i64 {
                continue; // all-null row group: no min/max to merge
            }
            if !(stats.min_is_exact() && stats.max_is_exact()) {
                exact = false;
                continue;
            }
            match (
                value_of(field.data_type(), stats, false),
                value_of(field.data_type(), stats, true),
            ) {
                (Some(lo), Some(hi)) => {
                    min = Some(match min {
                        Some(m) if cmp(&m, &lo).is_le() => m,
                        _ => lo,
                    });
                    max = Some(match max {
                        Some(m) if cmp(&m, &hi).is_ge() => m,
                        _ => hi,
                    });
                }
                _ => exact = false,
            }
        }
        if let Some(n) = nulls {
            null_count.insert(field.name().clone(), json!(n));
        }
        if exact && let (Some(lo), Some(hi)) = (min, max) {
            min_values.insert(field.name().clone(), lo);
            max_values.insert(field.name().clone(), hi);
        }
    }
    json!({
        "numRecords": num_records,
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    })
}

/// The Delta `add` action of a file written with `file_schema` and uploaded to `path` (relative
/// to the table root, `size` bytes): partition values as given, statistics from its footer
/// ([`delta_stats`]), modification time now. `data_change` is true for appends and false for
/// rewrites of the same rows (compaction).
pub fn add_action(
    file_schema: &Schema,
    path: String,
    size: i64,
    partition_values: Vec<(String, Option<String>)>,
    metadata: &ParquetMetaData,
    data_change: bool,
) -> Add {
    let stats = delta_stats(file_schema, metadata);
    Add {
        path,
        size,
        partition_values: partition_values.into_iter().collect(),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change,
        stats: Some(stats.to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

fn is_stat_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Microsecond, _)
    )
}

/// Orders two stat values of the same column (numbers or strings; dates and timestamps are
/// ISO strings whose lexical order is their time order).
fn cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x.cmp(&y)
            } else {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
            }
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

fn value_of(t: &DataType, stats: &Statistics, want_max: bool) -> Option<Value> {
    match (t, stats) {
        (DataType::Int8 | DataType::Int16 | DataType::Int32, Statistics::Int32(s)) => {
            let v = if want_max { s.max_opt()? } else { s.min_opt()? };
            Some(json!(*v))
        }
        (DataType::Date32, Statistics::Int32(s)) => {
            let v = if want_max { s.max_opt()? } else { s.min_opt()? };
            let d = NaiveDate::from_num_days_from_ce_opt(*v + 719_163)?;
            Some(json!(d.format("%Y-%m-%d").to_string()))
        }
        (DataType::Int64, Statistics::Int64(s)) => {
            let v = if want_max { s.max_opt()? } else { s.min_opt()? };
            Some(json!(*v))
        }
        (DataType::Timestamp(TimeUnit::Microsecond, _), Statistics::Int64(s)) => {
            let us = if want_max {
                *s.max_opt()?
            } else {
                *s.min_opt()?
            };
            // Millisecond precision, widened outwards.
            let ms = if want_max {
                us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
            } else {
                us.div_euclid(1000)
            };
            let dt = DateTime::from_timestamp_millis(ms)?;
            Some(json!(dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
        }
        (DataType::Float32, Statistics::Float(s)) => {
            let v = if want_max { s.max_opt()? } else { s.min_opt()? };
            v.is_finite().then(|| json!(*v))
        }
        (DataType::Float64, Statistics::Double(s)) => {
            let v = if want_max { s.max_opt()? } else { s.min_opt()? };
            v.is_finite().then(|| json!(*v))
        }
        (DataType::Utf8 | DataType::LargeUtf8, Statistics::ByteArray(s)) => {
            let v = if want_max { s.max_opt()? } else { s.min_opt()? };
            let bytes = v.data();
            if bytes.len() > MAX_STRING_STAT_BYTES {
                return None;
            }
            std::str::from_utf8(bytes).ok().map(|s| json!(s))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    fn write(batches: &[RecordBatch], rows_per_group: usize) -> ParquetMetaData {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows_per_group))
            .build();
        let mut w =
            ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props)).expect("writer");
        for b in batches {
            w.write(b).expect("write");
        }
        w.close().expect("close")
    }

    #[test]
    fn stats_cover_all_values_across_row_groups() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("d", DataType::Date32, false),
            Field::new("long", DataType::Utf8, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(5), None, Some(-3), Some(40)])),
            Arc::new(StringArray::from(vec![
                Some("b"),
                Some("a"),
                None,
                Some("z"),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    1_700_000_000_123_456,
                    1_700_000_000_000_001,
                    1_700_000_001_999_999,
                    1_700_000_000_500_000,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(vec![19000, 19001, 18999, 19000])),
            Arc::new(StringArray::from(vec!["x".repeat(100); 4])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
        let meta = write(&[batch], 2);
        assert_eq!(meta.num_row_groups(), 2);
        let s = delta_stats(&schema, &meta);
        assert_eq!(s["numRecords"], json!(4));
        assert_eq!(s["minValues"]["n"], json!(-3));
        assert_eq!(s["maxValues"]["n"], json!(40));
        assert_eq!(s["nullCount"]["n"], json!(1));
        assert_eq!(s["minValues"]["s"], json!("a"));
        assert_eq!(s["maxValues"]["s"], json!("z"));
        assert_eq!(s["nullCount"]["s"], json!(1));
        // 1_700_000_000_000_001 µs → floor 1_700_000_000_000 ms; 1_700_000_001_999_999 µs → ceil …002_000 ms
        assert_eq!(s["minValues"]["ts"], json!("2023-11-14T22:13:20.000Z"));
        assert_eq!(s["maxValues"]["ts"], json!("2023-11-14T22:13:22.000Z"));
        assert_eq!(s["minValues"]["d"], json!("2022-01-07"));
        assert_eq!(s["maxValues"]["d"], json!("2022-01-09"));
        assert!(
            s["minValues"].get("long").is_none(),
            "long strings get no min/max"
        );
        assert_eq!(s["nullCount"]["long"], json!(0));
    }

    #[test]
    fn an_add_action_carries_the_footers_statistics() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![7, 3, 9])) as ArrayRef],
        )
        .expect("batch");
        let meta = write(&[batch], 10);
        let parts = vec![
            ("dt".to_string(), Some("2024-05-01".to_string())),
            ("ns".to_string(), None),
        ];
        for data_change in [true, false] {
            let add = add_action(
                &schema,
                "dt=2024-05-01/part-1.zstd.parquet".into(),
                1234,
                parts.clone(),
                &meta,
                data_change,
            );
            assert_eq!(add.path, "dt=2024-05-01/part-1.zstd.parquet");
            assert_eq!(add.size, 1234);
            assert_eq!(add.data_change, data_change);
            assert_eq!(add.partition_values.len(), 2);
            assert_eq!(add.partition_values["dt"].as_deref(), Some("2024-05-01"));
            assert_eq!(add.partition_values["ns"], None);
            let stats: Value =
                serde_json::from_str(add.stats.as_deref().expect("stats")).expect("stats JSON");
            assert_eq!(stats, delta_stats(&schema, &meta));
            assert_eq!(stats["minValues"]["n"], json!(3));
            assert!(add.deletion_vector.is_none() && add.tags.is_none());
        }
    }
}
