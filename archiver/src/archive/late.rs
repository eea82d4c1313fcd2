//! Late rows: rows whose record reached Kafka more than `--late-after` after their event time.
//! They still go to their event-time partition; they are only counted (`late_rows`).

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::RecordBatch;
use loglake_schemas::RawRecord;

/// Default of `--late-after`: an hour, the partition grain of the log tables — a row later than
/// that lands in an hour partition that was already complete when its record arrived.
pub const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(3600);

/// Kafka timestamp (ms) of each (topic, partition, offset).
type KafkaTimes<'a> = HashMap<(&'a str, i32, i64), Option<i64>>;

/// How many rows of `batch` are late: their record (found in `records` by topic, partition and
/// offset) reached Kafka more than `late_after_us` after the row's event time `ts`. `batch`'s
/// rows are a subsequence of `records`, in order (a record may give several rows, or none);
/// rows without a Kafka timestamp, or of a batch without `ts` and the Kafka columns, are not
/// counted.
pub fn count_late(batch: &RecordBatch, records: &[RawRecord<'_>], late_after_us: i64) -> u64 {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
    let schema = batch.schema();
    let (Ok(tsi), Ok(ti), Ok(pi), Ok(oi)) = (
        schema.index_of("ts"),
        schema.index_of("kafka_topic"),
        schema.index_of("kafka_partition"),
        schema.index_of("kafka_offset"),
    ) else {
        return 0;
    };
    let (Some(ts), Some(topics), Some(parts), Some(offs)) = (
        batch
            .column(tsi)
            .as_primitive_opt::<TimestampMicrosecondType>(),
        batch.column(ti).as_string_opt::<i32>(),
        batch.column(pi).as_primitive_opt::<Int32Type>(),
        batch.column(oi).as_primitive_opt::<Int64Type>(),
    ) else {
        return 0;
    };
    let mut late = 0;
    // Rows follow their records, so one forward walk finds each; a row of a record outside
    // `records` (a CRI/docker line completed from an earlier batch's fragment) switches to a
    // lookup table for the rest of the batch.
    let mut j = 0;
    let mut index: Option<KafkaTimes<'_>> = None;
    for r in 0..batch.num_rows() {
        let (t, p, o) = (topics.value(r), parts.value(r), offs.value(r));
        let kafka_ms = match &mut index {
            Some(idx) => idx.get(&(t, p, o)).copied().flatten(),
            None => {
                while j < records.len()
                    && (records[j].offset != o
                        || records[j].partition != p
                        || records[j].topic != t)
                {
                    j += 1;
                }
                match records.get(j) {
                    Some(rec) => rec.timestamp_ms,
                    None => index
                        .insert(
                            records
                                .iter()
                                .map(|x| ((x.topic, x.partition, x.offset), x.timestamp_ms))
                                .collect(),
                        )
                        .get(&(t, p, o))
                        .copied()
                        .flatten(),
                }
            }
        };
        if ts.is_valid(r)
            && let Some(kafka_us) = kafka_ms.and_then(|ms| ms.checked_mul(1000))
            && kafka_us.saturating_sub(ts.value(r)) > late_after_us
        {
            late += 1;
        }
    }
    late
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn late_rows_reached_kafka_more_than_late_after_after_their_event_time() {
        use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let hour_us = 3_600_000_000i64;
        let kafka_ms = 100 * 3_600_000i64; // every record reached Kafka at 100 h
        let kafka_us = kafka_ms * 1000;
        let payload = b"{}";
        let mut records: Vec<RawRecord<'_>> = (10..16)
            .map(|o| RawRecord {
                timestamp_ms: Some(kafka_ms),
                ..RawRecord::new("t", 0, o, payload)
            })
            .collect();
        records[5].timestamp_ms = None; // offset 15: no Kafka timestamp
        // offset 11 gave no row (a dead letter), offset 13 gave two (one record, many logs)
        let rows: [(i64, i64); 7] = [
            (5, kafka_us - 10 * hour_us), // its record is not in this batch: not counted
            (10, kafka_us - 2 * hour_us), // late
            (12, kafka_us - hour_us),     // exactly late_after: not late
            (13, kafka_us - 3 * hour_us), // late
            (13, kafka_us),               // on time
            (14, kafka_us + hour_us),     // from the future: not late
            (15, kafka_us - 5 * hour_us), // no Kafka time to compare with
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("kafka_topic", DataType::Utf8, false),
            Field::new("kafka_partition", DataType::Int32, false),
            Field::new("kafka_offset", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["t"; rows.len()])),
                Arc::new(Int32Array::from(vec![0; rows.len()])),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            ],
        )
        .expect("batch");
        assert_eq!(count_late(&batch, &records, hour_us), 2);
        assert_eq!(count_late(&batch, &records, 0), 3);
        assert_eq!(count_late(&batch, &records, 10 * hour_us), 0);
        // rows are matched to their own records only
        assert_eq!(count_late(&batch, &records[..1], 0), 1);
        assert_eq!(count_late(&batch.slice(1, 6), &records, hour_us), 2);
        // a batch without the columns counts nothing
        assert_eq!(
            count_late(&batch.project(&[1, 2, 3]).expect("project"), &records, 0),
            0
        );
    }
}
