//! Arrow builders of the container schema, and the common enrichment applied to every row
//! (kubelet path, event-time fallback, level, app/service from labels, cluster).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int16Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;

use super::msg_json::{JsonHints, MsgJsonBufs};
use super::{COL_NAMES, Col, NCOLS, Row, RowBufs, clean_message_nl};
use crate::event_time::dt_hour;
use crate::kubelet_path::parse_k8s_log_path;
use crate::level::{detect_level, normalize_level};
use crate::{DecodeOutput, DecoderOptions, RawRecord, RecordError, TableKind, table_schema};

pub(crate) fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

pub(crate) fn new_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(map_field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

pub(crate) fn label_app<'a, 'b>(
    labels: &'b [(Cow<'a, str>, Cow<'a, str>)],
    keys: &[&str],
) -> Option<&'b Cow<'a, str>> {
    keys.iter()
        .find_map(|k| labels.iter().find(|(lk, _)| lk == k).map(|(_, v)| v))
}

/// Namespace, pod, container, pod uid and container id from the kubelet log path, where the
/// record did not carry them.
fn fill_from_path(row: &mut Row<'_>) {
    let Some(p) = row.path.take() else {
        return;
    };
    let cols = [
        Col::Namespace,
        Col::Pod,
        Col::Container,
        Col::PodUid,
        Col::ContainerId,
    ];
    if cols.iter().all(|c| row.get(*c).is_some()) {
        return;
    }
    let Some(m) = parse_k8s_log_path(&p) else {
        return;
    };
    for (c, v) in cols
        .into_iter()
        .zip([m.namespace, m.pod, m.container, m.pod_uid, m.container_id])
    {
        if row.get(c).is_none()
            && let Some(v) = v
        {
            row.set(c, v.to_owned());
        }
    }
}

/// The row's event time: its own, else the Kafka timestamp, else the ingest time (flagged in
/// `loglake.ts_source`).
fn row_ts(row: &mut Row<'_>, rec: &RawRecord<'_>, ingest_us: i64) -> i64 {
    if let Some(t) = row.ts_us {
        return t;
    }
    match rec.timestamp_ms.and_then(|ms| ms.checked_mul(1000)) {
        Some(t) => {
            row.flags
                .push(("loglake.ts_source", Cow::Borrowed("kafka")));
            t
        }
        None => {
            row.flags
                .push(("loglake.ts_source", Cow::Borrowed("ingest")));
            ingest_us
        }
    }
}

/// The level column: the envelope's, else the JSON message's (normalised, else lower-cased),
/// else detected in the message text.
fn row_level<'r>(
    envelope: Option<&'r str>,
    json: Option<&'r str>,
    message: Option<&'r str>,
) -> Option<Cow<'r, str>> {
    match envelope.or(json) {
        Some(l) => Some(match normalize_level(l) {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned(l.to_lowercase()),
        }),
        None => message.and_then(detect_level).map(Cow::Borrowed),
    }
}

/// The string columns of a row: its own values, the `level` given, then where the row has none
/// the JSON message's trace and span ids, `app` and `service` from the labels, and `cluster`.
fn column_values<'r>(
    row: &'r Row<'_>,
    hints: &JsonHints<'r>,
    level: Option<&'r str>,
    cluster: Option<&'r str>,
) -> [Option<&'r str>; NCOLS] {
    let mut vals: [Option<&str>; NCOLS] = std::array::from_fn(|i| row.cols[i].as_deref());
    vals[Col::Level as usize] = level;
    if vals[Col::TraceId as usize].is_none() {
        vals[Col::TraceId as usize] = hints.trace;
    }
    if vals[Col::SpanId as usize].is_none() {
        vals[Col::SpanId as usize] = hints.span;
    }
    if vals[Col::App as usize].is_none() {
        vals[Col::App as usize] =
            label_app(&row.labels, &["app.kubernetes.io/name", "app", "k8s-app"])
                .map(|c| c.as_ref());
    }
    if vals[Col::Service as usize].is_none() {
        vals[Col::Service as usize] =
            label_app(&row.labels, &["service", "app.kubernetes.io/instance"]).map(|c| c.as_ref());
    }
    if vals[Col::Cluster as usize].is_none() {
        vals[Col::Cluster as usize] = cluster;
    }
    vals
}

/// Arrow builders of the container schema.
pub(crate) struct ContainerBuilder {
    ts: TimestampMicrosecondBuilder,
    ts_nanos: Int16Builder,
    ingest_ts: TimestampMicrosecondBuilder,
    cols: Vec<StringBuilder>,
    message: StringBuilder,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    attrs: MapBuilder<StringBuilder, StringBuilder>,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    dt: Date32Builder,
    hour: Int32Builder,
    schema: SchemaRef,
    pub rows: usize,
    /// Reused by [`ContainerBuilder::new_row`] rows.
    bufs: RowBufs,
    json: MsgJsonBufs,
}

impl ContainerBuilder {
    pub fn new() -> Self {
        ContainerBuilder {
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            ts_nanos: Int16Builder::new(),
            ingest_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            cols: (0..NCOLS).map(|_| StringBuilder::new()).collect(),
            message: StringBuilder::new(),
            labels: new_map_builder(),
            attrs: new_map_builder(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            dt: Date32Builder::new(),
            hour: Int32Builder::new(),
            schema: table_schema(TableKind::Container),
            rows: 0,
            bufs: RowBufs::default(),
            json: MsgJsonBufs::default(),
        }
    }

    /// An empty row whose vectors reuse the allocations of earlier rows.
    pub fn new_row<'a>(&mut self, lossy: bool) -> Row<'a> {
        self.bufs.row(lossy)
    }

    /// Takes back the vectors of a row that will not be appended.
    pub fn discard_row(&mut self, row: Row<'_>) {
        self.bufs.keep(row);
    }

    /// Appends one row, applying the common enrichment (see the crate docs).
    pub fn append(
        &mut self,
        mut row: Row<'_>,
        rec: &RawRecord<'_>,
        ingest_us: i64,
        opts: &DecoderOptions,
    ) {
        let message = row.message.take().map(|m| clean_message_nl(m, row.msg_nl));
        fill_from_path(&mut row);
        let (hints, ts) = self.append_attrs(&mut row, message.as_deref(), rec, ingest_us, opts);
        let level = row_level(row.get(Col::Level), hints.level, message.as_deref());
        let vals = column_values(&row, &hints, level.as_deref(), opts.cluster.as_deref());

        for (l, v) in &row.labels {
            self.labels.keys().append_value(l);
            self.labels.values().append_value(v);
        }
        let _ = self.labels.append(true);

        for (b, v) in self.cols.iter_mut().zip(vals) {
            b.append_option(v);
        }
        self.message.append_option(message.as_deref());
        self.ts.append_value(ts);
        self.ts_nanos.append_option(row.ts_us.and(row.ts_nanos));
        self.ingest_ts.append_value(ingest_us);
        self.topic.append_value(rec.topic);
        self.partition.append_value(rec.partition);
        self.offset.append_value(rec.offset);
        let (dt, hour) = dt_hour(ts);
        self.dt.append_value(dt);
        self.hour.append_value(hour);
        self.rows += 1;
        self.bufs.keep(row);
    }

    /// Appends the row's attrs entry: the record's own fields, then JSON found in the message,
    /// then loglake's flags. Returns what the JSON message says for the columns, and the row's
    /// event time (with its fallback flagged).
    fn append_attrs<'m>(
        &mut self,
        row: &mut Row<'_>,
        message: Option<&'m str>,
        rec: &RawRecord<'_>,
        ingest_us: i64,
        opts: &DecoderOptions,
    ) -> (JsonHints<'m>, i64) {
        for (k, v) in &row.attrs {
            row.write_key(self.attrs.keys(), k);
            self.attrs.values().append_option(v.as_deref());
        }
        let hints = match message {
            Some(m) if opts.parse_json_message => {
                self.json.append_fields(&mut self.attrs, row, m, opts)
            }
            _ => JsonHints::default(),
        };
        let ts = row_ts(row, rec, ingest_us);
        if row.lossy {
            row.flags
                .push(("loglake.invalid_utf8", Cow::Borrowed("true")));
        }
        for (k, v) in &row.flags {
            self.attrs.keys().append_value(k);
            self.attrs.values().append_value(v);
        }
        let _ = self.attrs.append(true);
        (hints, ts)
    }

    /// The batch of the rows appended since the last call. Each builder's array goes to the
    /// schema column of its name (the schema in `schema.rs` is the one list of columns); a
    /// column no builder fills is an error, not a silent shift.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let schema = self.schema.clone();
        let mut out: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
        let mut put = |name: &str, a: ArrayRef| -> Result<(), arrow::error::ArrowError> {
            out[schema.index_of(name)?] = Some(a);
            Ok(())
        };
        put("ts", Arc::new(self.ts.finish()))?;
        put("ts_nanos", Arc::new(self.ts_nanos.finish()))?;
        put("ingest_ts", Arc::new(self.ingest_ts.finish()))?;
        for (name, b) in COL_NAMES.iter().zip(self.cols.iter_mut()) {
            put(name, Arc::new(b.finish()))?;
        }
        put("message", Arc::new(self.finish_message()))?;
        put("labels", Arc::new(self.labels.finish()))?;
        put("attrs", Arc::new(self.finish_attrs()))?;
        put("kafka_topic", Arc::new(self.topic.finish()))?;
        put("kafka_partition", Arc::new(self.partition.finish()))?;
        put("kafka_offset", Arc::new(self.offset.finish()))?;
        put("dt", Arc::new(self.dt.finish()))?;
        put("hour", Arc::new(self.hour.finish()))?;
        let arrays = out
            .into_iter()
            .zip(schema.fields())
            .map(|(a, f)| {
                a.ok_or_else(|| {
                    arrow::error::ArrowError::SchemaError(format!(
                        "the container builder fills no column {}",
                        f.name()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.rows = 0;
        RecordBatch::try_new(schema, arrays)
    }

    /// The message column; the next batch's buffer is sized like this one's (saves regrowth
    /// and page faults).
    fn finish_message(&mut self) -> arrow::array::StringArray {
        let (rows, bytes) = (self.rows, self.message.values_slice().len());
        std::mem::replace(&mut self.message, StringBuilder::with_capacity(rows, bytes)).finish()
    }

    /// The attrs column; the next batch's builders are sized like this one's.
    fn finish_attrs(&mut self) -> arrow::array::MapArray {
        use arrow::array::ArrayBuilder;
        let n = self.attrs.keys().len();
        let kb = self.attrs.keys().values_slice().len();
        let vb = self.attrs.values().values_slice().len();
        let fresh = MapBuilder::with_capacity(
            Some(map_field_names()),
            StringBuilder::with_capacity(n, kb),
            StringBuilder::with_capacity(n, vb),
            self.rows,
        );
        std::mem::replace(&mut self.attrs, fresh).finish()
    }
}

/// Finishes a builder into a [`DecodeOutput`]; an (impossible) Arrow error becomes a record error.
pub(crate) fn finish_output(
    batch: Result<RecordBatch, arrow::error::ArrowError>,
    schema: SchemaRef,
    mut errors: Vec<RecordError>,
) -> DecodeOutput {
    match batch {
        Ok(batch) => DecodeOutput { batch, errors },
        Err(e) => {
            errors.push(RecordError {
                index: 0,
                topic: String::new(),
                partition: -1,
                offset: -1,
                reason: format!("internal error building the batch: {e}"),
            });
            DecodeOutput {
                batch: RecordBatch::new_empty(schema),
                errors,
            }
        }
    }
}
