//! Records in: a poll batch grouped by table (new records of assigned partitions only),
//! decoded, rows below W dropped (I2), the table's ETL applied (filter, derived columns,
//! redactions, routes), late rows counted, rows buffered, and the rest made dead letters (I4).

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use loglake_schemas::{RawRecord, RecordError};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::offsets::PartState;
use super::{Archiver, count_late};
use crate::error::ArchiveError;
use crate::etl::Etl;

/// Kafka headers of one record, borrowed.
type HeaderList<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

impl Archiver {
    pub(super) fn process(&mut self, batch: &[BorrowedMessage<'_>]) -> Result<(), ArchiveError> {
        if batch.is_empty() {
            return Ok(());
        }
        let per_table = self.accept(batch);
        for (ti, msgs) in per_table.into_iter().enumerate() {
            if !msgs.is_empty() {
                self.decode(ti, &msgs)?;
            }
        }
        Ok(())
    }

    /// The messages of `batch` grouped by table, keeping only records of assigned partitions
    /// that are new (and, in an `--until-end` run, before the frozen end); counted as read.
    fn accept<'b, 'c>(
        &mut self,
        batch: &'b [BorrowedMessage<'c>],
    ) -> Vec<Vec<&'b BorrowedMessage<'c>>> {
        let mut per_table: Vec<Vec<&BorrowedMessage<'_>>> = vec![Vec::new(); self.tables.len()];
        // Messages come in runs of one partition: reuse the lookup key rather than allocate one
        // per record.
        let mut key = (String::new(), -1);
        let bytes_before = self.report.bytes_in;
        for m in batch {
            if key.1 != m.partition() || key.0 != m.topic() {
                key = (m.topic().to_string(), m.partition());
            }
            let Some(ps) = self.parts.get_mut(&key) else {
                continue;
            };
            if let Some(end) = ps.end
                && m.offset() >= end
            {
                continue; // beyond the frozen end of this batch run
            }
            if m.offset() < ps.next {
                continue; // already seen (seek raced a fetch)
            }
            ps.next = m.offset() + 1;
            self.report.records_in += 1;
            self.report.bytes_in += m.payload_len() as u64;
            per_table[ps.table].push(m);
        }
        let accepted: usize = per_table.iter().map(Vec::len).sum();
        self.cfg.metrics.records_in.inc_by(accepted as u64);
        self.cfg
            .metrics
            .bytes_in
            .inc_by(self.report.bytes_in - bytes_before);
        per_table
    }

    /// Decodes the messages of table `ti` and writes what came out.
    fn decode(&mut self, ti: usize, msgs: &[&BorrowedMessage<'_>]) -> Result<(), ArchiveError> {
        let headers: Vec<HeaderList<'_>> = msgs
            .iter()
            .map(|m| {
                m.headers()
                    .map(|h| h.iter().map(|x| (x.key, x.value)).collect())
                    .unwrap_or_default()
            })
            .collect();
        let records: Vec<RawRecord<'_>> = msgs
            .iter()
            .zip(&headers)
            .map(|(m, h)| RawRecord {
                payload: m.payload(),
                key: m.key(),
                headers: h.as_slice(),
                timestamp_ms: m.timestamp().to_millis(),
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            })
            .collect();
        let out = self.tables[ti].decoder.decode(&records);
        self.write_decoded(ti, out.batch, out.errors, &records)?;
        Ok(())
    }

    fn write_decoded(
        &mut self,
        ti: usize,
        batch: RecordBatch,
        errors: Vec<RecordError>,
        records: &[RawRecord<'_>],
    ) -> Result<(), ArchiveError> {
        // I2: rows at offsets below W are already in the table (re-read after a resume point).
        let batch = self.filter_committed(&batch)?;
        let mut errors = errors;
        let batch = match self.tables[ti].etl.clone() {
            Some(etl) => self.apply_etl(ti, &etl, &batch, records, &mut errors)?,
            None => batch,
        };
        let late = count_late(
            &batch,
            records,
            i64::try_from(self.cfg.late_after.as_micros()).unwrap_or(i64::MAX),
        );
        if late > 0 {
            self.report.late_rows += late;
            self.cfg.metrics.late_rows.inc_by(late);
        }
        let mut headroom = self.headroom();
        self.tables[ti]
            .out
            .write(&self.handle, &batch, &mut headroom, &self.cfg.metrics)?;
        // I4: every record that did not become a row becomes a dead letter.
        if !errors.is_empty() {
            let bad = self.dead_letters_of(errors, records);
            self.write_dead_letters(&self.tables[ti].target.decoder.clone(), bad)?;
        }
        Ok(())
    }

    /// Filters, derives and redacts (the table's [`Etl`]): the filtered offsets are kept for the
    /// next commit's info, records an expression failed on join `errors` (the dead letters).
    fn apply_etl(
        &mut self,
        ti: usize,
        etl: &Etl,
        batch: &RecordBatch,
        records: &[RawRecord<'_>],
        errors: &mut Vec<RecordError>,
    ) -> Result<RecordBatch, ArchiveError> {
        let out = etl.apply(batch)?;
        let name = self.tables[ti].target.name.clone();
        let metrics = self.cfg.metrics.clone();
        if out.filtered_rows > 0 {
            metrics.add_etl_filtered(&name, out.filtered_rows);
        }
        for (label, n) in etl.redaction_labels().iter().zip(&out.redactions) {
            if *n > 0 {
                metrics.add_etl_redactions(&name, label, *n);
                *self
                    .report
                    .redactions
                    .entry(format!("{name}/{label}"))
                    .or_insert(0) += n;
            }
        }
        let t = &mut self.tables[ti];
        t.pending_filtered_rows += out.filtered_rows;
        for (topic, p, o) in out.filtered_offsets {
            t.pending_filtered.entry((topic, p)).or_default().push(o);
        }
        for (topic, p, o) in out.moved_offsets {
            t.pending_moved.entry((topic, p)).or_default().push(o);
        }
        for (ri, rows) in out.routed.into_iter().enumerate() {
            self.write_routed(ti, ri, &rows)?;
        }
        if !out.failed.is_empty() {
            metrics.add_etl_failures(&name, out.failed.len() as u64);
            self.report.etl_failures += out.failed.len() as u64;
        }
        for (topic, partition, offset, reason) in out.failed {
            let index = records
                .iter()
                .position(|r| r.offset == offset && r.partition == partition && r.topic == topic)
                .unwrap_or(usize::MAX);
            errors.push(RecordError {
                index,
                topic,
                partition,
                offset,
                reason,
            });
        }
        Ok(out.batch)
    }

    /// Buffers the rows route `ri` of table `ti` copies or moves, except those below the route
    /// table's W (already there: a crash between its commit and the source table's).
    fn write_routed(
        &mut self,
        ti: usize,
        ri: usize,
        rows: &RecordBatch,
    ) -> Result<(), ArchiveError> {
        use arrow::array::{AsArray, BooleanArray};
        use arrow::datatypes::{Int32Type, Int64Type};
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let r = &self.tables[ti].routes[ri];
        let (Some(t), Some(p), Some(o)) = (
            rows.column_by_name("kafka_topic")
                .and_then(|c| c.as_string_opt::<i32>()),
            rows.column_by_name("kafka_partition")
                .and_then(|c| c.as_primitive_opt::<Int32Type>()),
            rows.column_by_name("kafka_offset")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(ArchiveError::Other(format!(
                "route table {}: rows without Kafka coordinates",
                r.name
            )));
        };
        let keep: BooleanArray = (0..rows.num_rows())
            .map(|i| Some(o.value(i) >= r.floor(t.value(i), p.value(i))))
            .collect();
        let rows = filter_record_batch(rows, &keep)?;
        let mut headroom = self.headroom();
        self.tables[ti].routes[ri]
            .out
            .write(&self.handle, &rows, &mut headroom, &self.cfg.metrics)
    }

    fn filter_committed(&self, batch: &RecordBatch) -> Result<RecordBatch, ArchiveError> {
        use arrow::array::{AsArray, BooleanArray};
        use arrow::datatypes::{Int32Type, Int64Type};
        let schema = batch.schema();
        let (Ok(ti), Ok(pi), Ok(oi)) = (
            schema.index_of("kafka_topic"),
            schema.index_of("kafka_partition"),
            schema.index_of("kafka_offset"),
        ) else {
            return Ok(batch.clone());
        };
        let topics = batch.column(ti).as_string::<i32>();
        let parts = batch.column(pi).as_primitive::<Int32Type>();
        let offs = batch.column(oi).as_primitive::<Int64Type>();
        let mut all = true;
        // Rows come in runs of one partition: look the floor up once per run.
        let mut last: Option<(&str, i32, i64)> = None;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|r| {
                let (t, p) = (topics.value(r), parts.value(r));
                let floor = match last {
                    Some((lt, lp, f)) if lp == p && lt == t => f,
                    _ => {
                        let f = self
                            .parts
                            .get(&(t.to_string(), p))
                            .map(PartState::floor)
                            .unwrap_or(i64::MIN);
                        last = Some((t, p, f));
                        f
                    }
                };
                let k = offs.value(r) >= floor;
                all &= k;
                Some(k)
            })
            .collect();
        if all {
            return Ok(batch.clone());
        }
        Ok(filter_record_batch(batch, &keep)?)
    }
}
