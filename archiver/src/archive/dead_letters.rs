//! Dead letters (I4): every record that did not become a row becomes a row of the dead-letter
//! table, with its raw payload, the error, the decoder and its Kafka coordinates.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use loglake_schemas::{RawRecord, RecordError, TableKind, table_schema};

use super::offsets::PartState;
use super::{Archiver, LOG_TARGET};
use crate::error::ArchiveError;

/// A record that failed to decode, its raw payload and Kafka timestamp (ms).
pub(super) type DeadLetter = (RecordError, Option<Vec<u8>>, Option<i64>);

impl Archiver {
    /// The dead letters of `errors` (records of `records` that gave no row), except those below
    /// their partition's max(W, D): they are in the dead-letter table already.
    pub(super) fn dead_letters_of(
        &self,
        errors: Vec<RecordError>,
        records: &[RawRecord<'_>],
    ) -> Vec<DeadLetter> {
        let mut bad = Vec::new();
        for e in errors {
            let key = (e.topic.clone(), e.partition);
            let floor = self
                .parts
                .get(&key)
                .map(PartState::dlq_floor)
                .unwrap_or(i64::MIN);
            if e.offset < floor {
                continue;
            }
            let raw = records
                .get(e.index)
                .filter(|r| r.offset == e.offset)
                .and_then(|r| r.payload);
            let ts = records.get(e.index).and_then(|r| r.timestamp_ms);
            tracing::debug!(target: LOG_TARGET, topic = %e.topic, partition = e.partition, offset = e.offset, reason = %e.reason, "dead letter");
            bad.push((e, raw.map(<[u8]>::to_vec), ts));
        }
        bad
    }

    /// Buffers `bad` in the dead-letter table; without one, the run fails rather than drop them.
    pub(super) fn write_dead_letters(
        &mut self,
        decoder: &str,
        bad: Vec<DeadLetter>,
    ) -> Result<(), ArchiveError> {
        if bad.is_empty() {
            return Ok(());
        }
        self.report.dead_letters += bad.len() as u64;
        self.cfg.metrics.dead_letters.inc_by(bad.len() as u64);
        let mut headroom = self.headroom();
        let Some(dlq) = &mut self.dlq else {
            let (e, _, _) = &bad[0];
            return Err(ArchiveError::Undecodable {
                count: bad.len(),
                topic: e.topic.clone(),
                partition: e.partition,
                offset: e.offset,
                reason: e.reason.clone(),
            });
        };
        let batch = dead_letter_batch(decoder, &bad)?;
        dlq.write(&self.handle, &batch, &mut headroom, &self.cfg.metrics)
    }
}

/// Builds a dead-letter batch: raw bytes, error, decoder, Kafka coordinates and timestamp.
pub(super) fn dead_letter_batch(
    decoder: &str,
    bad: &[DeadLetter],
) -> Result<RecordBatch, ArchiveError> {
    let schema: SchemaRef = table_schema(TableKind::DeadLetter);
    let now = Utc::now();
    let cols = schema
        .fields()
        .iter()
        .map(|field| dead_letter_column(field.name(), decoder, bad, now))
        .collect::<Result<Vec<ArrayRef>, ArchiveError>>()?;
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// One column of [`dead_letter_batch`]; `dt` and `hour` are those of the Kafka timestamp (of
/// `now` without one).
fn dead_letter_column(
    name: &str,
    decoder: &str,
    bad: &[DeadLetter],
    now: DateTime<Utc>,
) -> Result<ArrayRef, ArchiveError> {
    let time = |ts: &Option<i64>| ts.and_then(DateTime::from_timestamp_millis).unwrap_or(now);
    let strings = |f: &dyn Fn(&DeadLetter) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(bad.iter().map(f)))
    };
    let utc_micros = |v: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
    };
    Ok(match name {
        "raw" => Arc::new(
            bad.iter()
                .map(|(_, raw, _)| raw.as_deref())
                .collect::<BinaryArray>(),
        ),
        "error" => strings(&|(e, _, _)| e.reason.clone()),
        "decoder" => strings(&|_| decoder.to_string()),
        "kafka_topic" => strings(&|(e, _, _)| e.topic.clone()),
        "loglake_version" => strings(&|_| env!("CARGO_PKG_VERSION").to_string()),
        "kafka_partition" => Arc::new(Int32Array::from_iter_values(
            bad.iter().map(|(e, _, _)| e.partition),
        )),
        "hour" => Arc::new(Int32Array::from_iter_values(
            bad.iter()
                .map(|(_, _, ts)| chrono::Timelike::hour(&time(ts)) as i32),
        )),
        "kafka_offset" => Arc::new(Int64Array::from_iter_values(
            bad.iter().map(|(e, _, _)| e.offset),
        )),
        "kafka_timestamp" => utc_micros(
            bad.iter()
                .map(|(_, _, ts)| ts.map(|ms| ms * 1000))
                .collect(),
        ),
        "ingest_ts" => utc_micros(bad.iter().map(|_| Some(now.timestamp_micros())).collect()),
        "dt" => Arc::new(Date32Array::from_iter_values(bad.iter().map(
            |(_, _, ts)| (time(ts).date_naive() - chrono::NaiveDate::default()).num_days() as i32,
        ))),
        other => {
            return Err(ArchiveError::Other(format!(
                "unexpected dead-letter column {other}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Int32Type, Int64Type, TimestampMicrosecondType};

    fn dead_letter(offset: i64, raw: Option<&[u8]>, ts_ms: Option<i64>) -> DeadLetter {
        let e = RecordError {
            index: 0,
            topic: "logs".into(),
            partition: 3,
            offset,
            reason: format!("bad record {offset}"),
        };
        (e, raw.map(<[u8]>::to_vec), ts_ms)
    }

    #[test]
    fn a_dead_letter_row_keeps_the_raw_record_the_error_and_its_coordinates() {
        // 2026-11-23T10:15:00Z
        let ms = 1_795_428_900_000i64;
        let bad = [
            dead_letter(7, Some(b"{not json"), Some(ms)),
            dead_letter(9, None, None),
        ];
        let before = Utc::now();
        let b = dead_letter_batch("fluentbit", &bad).expect("batch");
        let after = Utc::now();
        assert_eq!(b.num_rows(), 2);
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("no {n}"));
        let raw = col("raw").as_binary::<i32>();
        assert_eq!((raw.value(0), raw.is_null(1)), (&b"{not json"[..], true));
        let s = |n: &str, i| col(n).as_string::<i32>().value(i).to_string();
        assert_eq!(
            (s("error", 0), s("error", 1)),
            ("bad record 7".into(), "bad record 9".into())
        );
        assert_eq!(s("decoder", 1), "fluentbit");
        assert_eq!(s("kafka_topic", 0), "logs");
        assert_eq!(s("loglake_version", 0), env!("CARGO_PKG_VERSION"));
        assert_eq!(
            col("kafka_partition").as_primitive::<Int32Type>().value(1),
            3
        );
        let offsets = col("kafka_offset").as_primitive::<Int64Type>();
        assert_eq!((offsets.value(0), offsets.value(1)), (7, 9));
        let kafka_ts = col("kafka_timestamp").as_primitive::<TimestampMicrosecondType>();
        assert_eq!((kafka_ts.value(0), kafka_ts.is_null(1)), (ms * 1000, true));
        let ingest = col("ingest_ts").as_primitive::<TimestampMicrosecondType>();
        assert!(
            (before.timestamp_micros()..=after.timestamp_micros()).contains(&ingest.value(0)),
            "{}",
            ingest.value(0)
        );
        // dt and hour: the Kafka timestamp's, else the time of writing
        let dt = col("dt").as_primitive::<Date32Type>();
        let hour = col("hour").as_primitive::<Int32Type>();
        assert_eq!((dt.value(0), hour.value(0)), (20_780, 10));
        let days = |t: DateTime<Utc>| (t.date_naive() - chrono::NaiveDate::default()).num_days();
        assert!((days(before)..=days(after)).contains(&i64::from(dt.value(1))));
    }
}
