//! The `container` table: row model, Arrow builder with the common enrichment, and the JSON
//! envelope decoders (`fluentbit`, `filebeat`, `vector`, `ilogtail`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int16Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;

use crate::event_time::{EventTime, dt_hour, parse_any_ts, parse_epoch};
use crate::json::{JVal, Parser, join_path};
use crate::kubelet_path::parse_k8s_log_path;
use crate::level::{detect_level, normalize_level};
use crate::{
    DecodeOutput, Decoder, DecoderOptions, RawRecord, RecordError, TableKind, table_schema,
    with_text,
};

/// Key of an `attrs` entry: one string, or a dotted path stored in [`Row::parts`].
#[derive(Debug, Clone)]
pub(crate) enum AKey<'a> {
    One(Cow<'a, str>),
    Parts(u32, u32),
}

/// The string columns of the container schema that decoders set by name ([`COL_NAMES`] gives
/// each its schema column; `finish` places every builder by that name, so the order here is
/// free).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Cluster = 0,
    Namespace,
    Pod,
    Container,
    Node,
    App,
    Service,
    Stream,
    Level,
    TraceId,
    SpanId,
    PodUid,
    ContainerId,
    Image,
    ImageId,
}
const NCOLS: usize = 15;

/// The schema column of each [`Col`], by its discriminant.
const COL_NAMES: [&str; NCOLS] = [
    "cluster",
    "namespace",
    "pod",
    "container",
    "node",
    "app",
    "service",
    "stream",
    "level",
    "trace_id",
    "span_id",
    "pod_uid",
    "container_id",
    "image",
    "image_id",
];

/// One decoded row before it is appended to the builders.
#[derive(Debug, Default)]
pub(crate) struct Row<'a> {
    pub cols: [Option<Cow<'a, str>>; NCOLS],
    pub message: Option<Cow<'a, str>>,
    /// `message` stands for its text plus a final `"\n"` (see [`Parser::object_nl`]).
    pub(crate) msg_nl: bool,
    pub(crate) msg_prio: u8,
    pub(crate) msg_key: Option<AKey<'a>>,
    pub ts_us: Option<i64>,
    /// Nanoseconds within `ts_us`'s microsecond, when a time source had them (`ts_nanos`).
    pub ts_nanos: Option<i16>,
    pub(crate) ts_prio: u8,
    pub(crate) ts_key: Option<(AKey<'a>, Cow<'a, str>)>,
    /// A kubelet log path seen in the envelope: fills namespace/pod/container when missing.
    pub path: Option<Cow<'a, str>>,
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub attrs: Vec<(AKey<'a>, Option<Cow<'a, str>>)>,
    pub(crate) parts: Vec<Cow<'a, str>>,
    /// Extra `loglake.*` flags (key, value).
    pub flags: Vec<(&'static str, Cow<'a, str>)>,
    pub lossy: bool,
}

/// The vectors of the row model, kept between records: cleared, not reallocated.
#[derive(Debug, Default)]
pub(crate) struct RowBufs {
    labels: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    attrs: Vec<(AKey<'static>, Option<Cow<'static, str>>)>,
    parts: Vec<Cow<'static, str>>,
    flags: Vec<(&'static str, Cow<'static, str>)>,
}

/// Empties `v` and hands its allocation to a vector of another element type of the same size and
/// alignment (here: the same type with another lifetime). No unsafe: std's in-place `collect`
/// reuses the source buffer (checked by `recycle_keeps_the_allocation`).
pub(crate) fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

impl RowBufs {
    /// A new empty row that uses these buffers.
    fn row<'a>(&mut self, lossy: bool) -> Row<'a> {
        Row {
            lossy,
            labels: recycle(std::mem::take(&mut self.labels)),
            attrs: recycle(std::mem::take(&mut self.attrs)),
            parts: recycle(std::mem::take(&mut self.parts)),
            flags: recycle(std::mem::take(&mut self.flags)),
            ..Row::default()
        }
    }

    /// Takes the buffers back from a row that is done with.
    fn keep(&mut self, row: Row<'_>) {
        self.labels = recycle(row.labels);
        self.attrs = recycle(row.attrs);
        self.parts = recycle(row.parts);
        self.flags = recycle(row.flags);
    }
}

impl<'a> Row<'a> {
    pub fn key_for(&mut self, path: &[Cow<'a, str>]) -> AKey<'a> {
        match path {
            [one] => AKey::One(one.clone()),
            _ => {
                let start = self.parts.len() as u32;
                self.parts.extend(path.iter().cloned());
                AKey::Parts(start, path.len() as u32)
            }
        }
    }

    pub fn attr_path(&mut self, path: &[Cow<'a, str>], v: JVal<'a>) {
        let k = self.key_for(path);
        self.attrs.push((k, v.into_text()));
    }

    pub fn attr(&mut self, key: impl Into<Cow<'a, str>>, v: Option<Cow<'a, str>>) {
        self.attrs.push((AKey::One(key.into()), v));
    }

    /// Sets a string column; if it is already set (or the value is null), the field goes to attrs.
    pub fn col(&mut self, c: Col, path: &[Cow<'a, str>], v: JVal<'a>) {
        if self.cols[c as usize].is_none() && !matches!(v, JVal::Null | JVal::Raw(_)) {
            self.cols[c as usize] = v.into_text();
        } else {
            self.attr_path(path, v);
        }
    }

    pub fn set(&mut self, c: Col, v: impl Into<Cow<'a, str>>) {
        self.cols[c as usize] = Some(v.into());
    }

    pub fn get(&self, c: Col) -> Option<&str> {
        self.cols[c as usize].as_deref()
    }

    /// Offers a message candidate; the highest priority wins, the others go to attrs.
    pub fn message(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>) {
        self.message_nl(prio, path, v, false);
    }

    /// [`Row::message`] for a value that, when `nl`, stands for its text plus `"\n"`.
    pub(crate) fn message_nl(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>, nl: bool) {
        let JVal::Str(s) = v else {
            self.attr_path(path, v);
            return;
        };
        if self.message.is_some() && self.msg_prio >= prio {
            self.attr_path(path, JVal::Str(with_nl(s, nl)));
            return;
        }
        let key = self.key_for(path);
        if let (Some(old), Some(old_key)) = (self.message.take(), self.msg_key.take()) {
            self.attrs.push((old_key, Some(with_nl(old, self.msg_nl))));
        }
        self.message = Some(s);
        self.msg_nl = nl;
        self.msg_prio = prio;
        self.msg_key = Some(key);
    }

    /// Offers an event-time candidate (RFC 3339 text or epoch number). The highest priority
    /// wins; a candidate naming the same instant as the current `ts` is redundant and not kept
    /// (it only adds its nanoseconds when `ts` has none); any other loser goes to attrs.
    pub fn ts(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>) {
        let parsed = match &v {
            JVal::Str(s) => parse_any_ts(s),
            JVal::Num(n) => parse_epoch(n),
            _ => None,
        };
        let Some(t) = parsed else {
            self.attr_path(path, v);
            return;
        };
        if let Some(us) = self.ts_us {
            let cur = EventTime {
                us,
                sub_us_ns: self.ts_nanos,
            };
            if cur.same_instant(&t) {
                self.ts_nanos = self.ts_nanos.or(t.sub_us_ns);
                self.ts_prio = self.ts_prio.max(prio);
                return;
            }
            if self.ts_prio >= prio {
                self.attr_path(path, v);
                return;
            }
            if let Some((old_key, old)) = self.ts_key.take() {
                self.attrs.push((old_key, Some(old)));
            }
        }
        let key = self.key_for(path);
        self.ts_us = Some(t.us);
        self.ts_nanos = t.sub_us_ns;
        self.ts_prio = prio;
        if let Some(text) = v.into_text() {
            self.ts_key = Some((key, text));
        }
    }

    pub fn label(&mut self, key: Cow<'a, str>, v: JVal<'a>) {
        if let Some(t) = v.into_text() {
            self.labels.push((key, t));
        }
    }

    fn has_attr(&self, key: &str) -> bool {
        self.attrs
            .iter()
            .any(|(k, _)| matches!(k, AKey::One(k) if k == key))
    }

    fn write_key(&self, b: &mut StringBuilder, k: &AKey<'_>) {
        match k {
            AKey::One(s) => b.append_value(s),
            AKey::Parts(start, n) => {
                let parts = self
                    .parts
                    .get(*start as usize..(*start + *n) as usize)
                    .unwrap_or_default();
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        let _ = b.write_char('.');
                    }
                    let _ = b.write_str(p);
                }
                b.append_value("");
            }
        }
    }
}

/// `s`, plus `"\n"` when `nl`.
fn with_nl(s: Cow<'_, str>, nl: bool) -> Cow<'_, str> {
    if nl {
        let mut o = String::with_capacity(s.len() + 1);
        o.push_str(&s);
        o.push('\n');
        Cow::Owned(o)
    } else {
        s
    }
}

/// Removes a trailing line end and turns CRLF into LF.
pub(crate) fn clean_message(m: Cow<'_, str>) -> Cow<'_, str> {
    clean_message_nl(m, false)
}

/// [`clean_message`] of `m`, plus `"\n"` when `nl`.
fn clean_message_nl(m: Cow<'_, str>, nl: bool) -> Cow<'_, str> {
    let trimmed_len = {
        // with `nl`, the '\n' that would be stripped here is not in `m`
        let t = if nl {
            &m
        } else {
            m.strip_suffix('\n').unwrap_or(&m)
        };
        let t = t.strip_suffix('\r').unwrap_or(t);
        t.len()
    };
    let has_cr = memchr::memchr(b'\r', &m.as_bytes()[..trimmed_len]).is_some();
    match m {
        Cow::Borrowed(s) if !has_cr => Cow::Borrowed(&s[..trimmed_len]),
        Cow::Owned(mut s) if !has_cr => {
            s.truncate(trimmed_len);
            Cow::Owned(s)
        }
        m => Cow::Owned(m[..trimmed_len].replace("\r\n", "\n")),
    }
}

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

/// Key of a field of a JSON message: one key, or a dotted path joined in [`MsgJson::keys`].
enum MKey<'a> {
    One(Cow<'a, str>),
    Joined(u32, u32),
}

/// Scratch for flattening a JSON message in one pass, reused between rows.
struct MsgJson<'a> {
    path: Vec<Cow<'a, str>>,
    entries: Vec<(MKey<'a>, JVal<'a>)>,
    keys: String,
}

impl<'a> MsgJson<'a> {
    /// Flattens the object `t` into `entries` (keys joined with '.'). Returns whether `t` is one
    /// valid JSON object, exactly as `Parser::skip_value(0)` + `end` would judge it.
    fn flatten(&mut self, t: &'a str) -> bool {
        self.path.clear();
        self.entries.clear();
        self.keys.clear();
        let MsgJson {
            path,
            entries,
            keys,
        } = self;
        let mut p = Parser::new(t);
        p.ws();
        if p.peek() != Some(b'{') {
            return false;
        }
        let mut depth_ok = true;
        let res = p.object(path, &mut |path, v| {
            // `object` skips a raw value (array, object nested too deep) from nesting depth 0;
            // `skip_value` over the whole document counts from the top: check it the same way
            if let JVal::Raw(r) = &v
                && depth_ok
            {
                depth_ok = Parser::new(r).skip_value(path.len()).is_ok();
            }
            let key = match path {
                [one] => MKey::One(one.clone()),
                _ => {
                    let start = keys.len() as u32;
                    for (i, part) in path.iter().enumerate() {
                        if i > 0 {
                            keys.push('.');
                        }
                        keys.push_str(part);
                    }
                    MKey::Joined(start, keys.len() as u32)
                }
            };
            entries.push((key, v));
        });
        res.is_ok() && p.end().is_ok() && depth_ok
    }
}

/// Holder of a [`MsgJson`] between rows (its lifetime differs for each row).
#[derive(Default)]
struct MsgJsonBufs {
    path: Vec<Cow<'static, str>>,
    entries: Vec<(MKey<'static>, JVal<'static>)>,
    keys: String,
}

impl MsgJsonBufs {
    fn take<'a>(&mut self) -> MsgJson<'a> {
        MsgJson {
            path: recycle(std::mem::take(&mut self.path)),
            entries: recycle(std::mem::take(&mut self.entries)),
            keys: std::mem::take(&mut self.keys),
        }
    }

    fn keep(&mut self, m: MsgJson<'_>) {
        self.path = recycle(m.path);
        self.entries = recycle(m.entries);
        self.keys = m.keys;
    }
}

/// What a JSON message says for the level, trace id and span id columns.
#[derive(Debug, Default)]
struct JsonHints<'m> {
    level: Option<&'m str>,
    trace: Option<&'m str>,
    span: Option<&'m str>,
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
        offset: i64,
        ingest_us: i64,
        opts: &DecoderOptions,
    ) {
        let message = row.message.take().map(|m| clean_message_nl(m, row.msg_nl));
        fill_from_path(&mut row);

        // attrs: the record's own fields, then JSON found in the message, then flags
        for (k, v) in &row.attrs {
            row.write_key(self.attrs.keys(), k);
            self.attrs.values().append_option(v.as_deref());
        }
        let hints = match message.as_deref() {
            Some(m) if opts.parse_json_message => self.append_message_json(&row, m, opts),
            _ => JsonHints::default(),
        };
        let ts = row_ts(&mut row, rec, ingest_us);
        if row.lossy {
            row.flags
                .push(("loglake.invalid_utf8", Cow::Borrowed("true")));
        }
        for (k, v) in &row.flags {
            self.attrs.keys().append_value(k);
            self.attrs.values().append_value(v);
        }
        let _ = self.attrs.append(true);

        // level: envelope, else JSON in the message, else detected in the text
        let level: Option<Cow<'_, str>> = match row.get(Col::Level).or(hints.level) {
            Some(l) => Some(match normalize_level(l) {
                Some(c) => Cow::Borrowed(c),
                None => Cow::Owned(l.to_lowercase()),
            }),
            None => message.as_deref().and_then(detect_level).map(Cow::Borrowed),
        };
        let mut vals: [Option<&str>; NCOLS] = std::array::from_fn(|i| row.cols[i].as_deref());
        vals[Col::Level as usize] = level.as_deref();
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
                label_app(&row.labels, &["service", "app.kubernetes.io/instance"])
                    .map(|c| c.as_ref());
        }
        if vals[Col::Cluster as usize].is_none() {
            vals[Col::Cluster as usize] = opts.cluster.as_deref();
        }

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
        self.offset.append_value(offset);
        let (dt, hour) = dt_hour(ts);
        self.dt.append_value(dt);
        self.hour.append_value(hour);
        self.rows += 1;
        self.bufs.keep(row);
    }

    /// Adds to the row's attrs the fields of a message that is one JSON object (flattened in one
    /// pass, kept only when the whole object is valid; fields the record has itself win); its
    /// level and its trace and span ids (unless the record has them) are returned for the
    /// columns instead, the ids not repeated in attrs (copied verbatim: nothing is lost).
    fn append_message_json<'m>(
        &mut self,
        row: &Row<'_>,
        message: &'m str,
        opts: &DecoderOptions,
    ) -> JsonHints<'m> {
        let mut hints = JsonHints::default();
        let t = message.trim();
        if !(t.len() >= 2 && t.starts_with('{') && t.ends_with('}')) {
            return hints;
        }
        let has_trace = row.get(Col::TraceId).is_some();
        let has_span = row.get(Col::SpanId).is_some();
        let mut scratch = self.json.take();
        if scratch.flatten(t) {
            let MsgJson { entries, keys, .. } = &mut scratch;
            for (k, v) in entries.drain(..) {
                let k: &str = match &k {
                    MKey::One(c) => c,
                    MKey::Joined(a, b) => keys.get(*a as usize..*b as usize).unwrap_or(""),
                };
                if row.has_attr(k) {
                    continue;
                }
                match (k, &v) {
                    (
                        "level" | "lvl" | "severity" | "log.level" | "loglevel" | "log_level",
                        JVal::Str(Cow::Borrowed(x)),
                    ) if hints.level.is_none() => hints.level = Some(*x),
                    ("trace_id" | "traceId" | "trace.id", JVal::Str(Cow::Borrowed(x)))
                        if hints.trace.is_none() && !has_trace =>
                    {
                        hints.trace = Some(*x);
                        continue;
                    }
                    ("span_id" | "spanId" | "span.id", JVal::Str(Cow::Borrowed(x)))
                        if hints.span.is_none() && !has_span =>
                    {
                        hints.span = Some(*x);
                        continue;
                    }
                    _ => {}
                }
                if opts.json_message_attrs {
                    self.attrs.keys().append_value(k);
                    self.attrs.values().append_option(v.into_text().as_deref());
                }
            }
        }
        self.json.keep(scratch);
        hints
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

/// Which collector wrote the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonFlavor {
    FluentBit,
    Filebeat,
    Vector,
    Ilogtail,
}

pub(crate) struct JsonDecoder {
    flavor: JsonFlavor,
    opts: DecoderOptions,
    builder: ContainerBuilder,
    /// The parser's key path, reused between records.
    path: Vec<Cow<'static, str>>,
}

impl JsonDecoder {
    pub fn new(flavor: JsonFlavor, opts: DecoderOptions) -> Self {
        JsonDecoder {
            flavor,
            opts,
            builder: ContainerBuilder::new(),
            path: Vec::new(),
        }
    }
}

fn label_key<'a>(key: &Cow<'a, str>, prefix_len: usize) -> Cow<'a, str> {
    match key {
        Cow::Borrowed(s) => Cow::Borrowed(&s[prefix_len..]),
        Cow::Owned(s) => Cow::Owned(s[prefix_len..].to_owned()),
    }
}

/// Fluent Bit after its `kubernetes` filter (`log`, `stream`, `time`, `kubernetes.{pod_name,…}`).
fn map_fluentbit<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, nl: bool) {
    match path {
        [k] => match k.as_ref() {
            "log" => row.message_nl(3, path, v, nl),
            "message" => row.message_nl(2, path, v, nl),
            "msg" => row.message_nl(1, path, v, nl),
            "stream" => row.col(Col::Stream, path, v),
            "@timestamp" => row.ts(3, path, v),
            "time" => row.ts(2, path, v),
            "timestamp" | "date" | "ts" => row.ts(1, path, v),
            "level" | "severity" | "lvl" | "loglevel" | "log_level" => row.col(Col::Level, path, v),
            "trace_id" | "traceId" | "traceid" => row.col(Col::TraceId, path, v),
            "span_id" | "spanId" | "spanid" => row.col(Col::SpanId, path, v),
            "cluster" | "cluster_name" => row.col(Col::Cluster, path, v),
            "filepath" | "file" | "path" => {
                if let JVal::Str(s) = &v {
                    row.path = Some(s.clone());
                }
                row.attr_path(path, v)
            }
            _ => row.attr_path(path, v),
        },
        [k8s, k] if k8s == "kubernetes" => match k.as_ref() {
            "namespace_name" => row.col(Col::Namespace, path, v),
            "pod_name" => row.col(Col::Pod, path, v),
            "container_name" => row.col(Col::Container, path, v),
            "host" => row.col(Col::Node, path, v),
            "cluster_name" => row.col(Col::Cluster, path, v),
            "pod_id" => row.col(Col::PodUid, path, v),
            "docker_id" | "container_id" => row.col(Col::ContainerId, path, v),
            "container_image" => row.col(Col::Image, path, v),
            "container_hash" | "container_image_id" => row.col(Col::ImageId, path, v),
            _ => row.attr_path(path, v),
        },
        [k8s, l, key] if k8s == "kubernetes" && l == "labels" => row.label(key.clone(), v),
        [k8s, l, rest @ ..] if k8s == "kubernetes" && l == "labels" => {
            row.label(join_path(rest), v)
        }
        _ => row.attr_path(path, v),
    }
}

/// Filebeat (ECS): `@timestamp`, `message`, `log.level`, `kubernetes.{namespace,pod.name,…}`.
fn map_filebeat<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, _nl: bool) {
    let key = join_path(path);
    const LABELS: &str = "kubernetes.labels.";
    match key.as_ref() {
        "@timestamp" => row.ts(3, path, v),
        "timestamp" => row.ts(1, path, v),
        "message" => row.message(3, path, v),
        "log" => row.message(1, path, v),
        "log.level" | "level" => row.col(Col::Level, path, v),
        "stream" => row.col(Col::Stream, path, v),
        "kubernetes.namespace" | "kubernetes.namespace.name" => row.col(Col::Namespace, path, v),
        "kubernetes.pod.name" => row.col(Col::Pod, path, v),
        "kubernetes.container.name" => row.col(Col::Container, path, v),
        "kubernetes.node.name" => row.col(Col::Node, path, v),
        "kubernetes.pod.uid" => row.col(Col::PodUid, path, v),
        "container.id" => row.col(Col::ContainerId, path, v),
        "container.image.name" => row.col(Col::Image, path, v),
        "orchestrator.cluster.name" | "kubernetes.cluster.name" => row.col(Col::Cluster, path, v),
        "trace.id" => row.col(Col::TraceId, path, v),
        "span.id" => row.col(Col::SpanId, path, v),
        "service.name" => row.col(Col::Service, path, v),
        "log.file.path" => {
            if let JVal::Str(s) = &v {
                row.path = Some(s.clone());
            }
            row.attr_path(path, v)
        }
        k if k.starts_with(LABELS) && k.len() > LABELS.len() => {
            let lk = label_key(&key, LABELS.len());
            row.label(lk, v)
        }
        _ => row.attr_path(path, v),
    }
}

/// Vector `kubernetes_logs`: `message`, `timestamp`, `stream`, `file`, `kubernetes.{pod_name,…}`.
fn map_vector<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, _nl: bool) {
    let key = join_path(path);
    const LABELS: &str = "kubernetes.pod_labels.";
    match key.as_ref() {
        "timestamp" => row.ts(3, path, v),
        "message" => row.message(3, path, v),
        "stream" => row.col(Col::Stream, path, v),
        "level" => row.col(Col::Level, path, v),
        "kubernetes.pod_namespace" => row.col(Col::Namespace, path, v),
        "kubernetes.pod_name" => row.col(Col::Pod, path, v),
        "kubernetes.container_name" => row.col(Col::Container, path, v),
        "kubernetes.pod_node_name" => row.col(Col::Node, path, v),
        "kubernetes.pod_uid" => row.col(Col::PodUid, path, v),
        "kubernetes.container_id" => row.col(Col::ContainerId, path, v),
        "kubernetes.container_image" => row.col(Col::Image, path, v),
        "kubernetes.container_image_id" => row.col(Col::ImageId, path, v),
        "kubernetes.cluster_name" | "cluster" => row.col(Col::Cluster, path, v),
        "trace_id" => row.col(Col::TraceId, path, v),
        "span_id" => row.col(Col::SpanId, path, v),
        "file" => {
            if let JVal::Str(s) = &v {
                row.path = Some(s.clone());
            }
            row.attr_path(path, v)
        }
        k if k.starts_with(LABELS) && k.len() > LABELS.len() => {
            let lk = label_key(&key, LABELS.len());
            row.label(lk, v)
        }
        _ => row.attr_path(path, v),
    }
}

/// Alibaba Logtail / iLogtail: `__time__`, `content`, `_pod_name_`, `_namespace_`,
/// `_container_name_`, `_source_`, `__tag__:*`; the v2 shape `{time, contents:{…}, tags:{…}}` too.
fn map_ilogtail<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, _nl: bool) {
    let key = join_path(path);
    let k: &str = key.as_ref();
    let k = k
        .strip_prefix("contents.")
        .or_else(|| k.strip_prefix("tags."))
        .unwrap_or(k);
    let k = k.strip_prefix("__tag__:").unwrap_or(k);
    match k {
        "_time_" => row.ts(3, path, v),
        "__time__" | "time" => row.ts(2, path, v),
        "__time_ns_part__" => row.attr_path(path, v),
        "content" => row.message(3, path, v),
        "message" | "log" => row.message(2, path, v),
        "_source_" => row.col(Col::Stream, path, v),
        "_pod_name_" => row.col(Col::Pod, path, v),
        "_namespace_" => row.col(Col::Namespace, path, v),
        "_container_name_" | "_k8s_container_name_" => row.col(Col::Container, path, v),
        "_node_name_" => row.col(Col::Node, path, v),
        "_pod_uid_" => row.col(Col::PodUid, path, v),
        "_container_id_" => row.col(Col::ContainerId, path, v),
        "_image_name_" => row.col(Col::Image, path, v),
        "__hostname__" if row.get(Col::Node).is_none() => row.col(Col::Node, path, v),
        "level" | "__level__" => row.col(Col::Level, path, v),
        "_cluster_id_" | "cluster" => row.col(Col::Cluster, path, v),
        "__path__" | "__file_path__" | "_log_path_" => {
            if let JVal::Str(s) = &v {
                row.path = Some(s.clone());
            }
            row.attr_path(path, v)
        }
        l if l.len() > "_container_label__".len()
            && l.starts_with("_container_label_")
            && l.ends_with('_') =>
        {
            let inner = &l["_container_label_".len()..l.len() - 1];
            row.label(Cow::Owned(inner.to_owned()), v)
        }
        _ => row.attr_path(path, v),
    }
}

/// Maps one leaf (path, value, and whether the value stands for its text plus `"\n"`).
type MapFn = for<'a> fn(&mut Row<'a>, &[Cow<'a, str>], JVal<'a>, bool);
/// Which leaves may be reported without their final `"\n"` (message candidates only).
type NlFn = for<'a, 'b> fn(&'b [Cow<'a, str>]) -> bool;

/// Fluent Bit's message candidates: `log` nearly always ends with an escaped `\n`.
fn fluentbit_nl(path: &[Cow<'_, str>]) -> bool {
    matches!(path, [k] if matches!(k.as_ref(), "log" | "message" | "msg"))
}

fn no_nl(_: &[Cow<'_, str>]) -> bool {
    false
}

/// Parses one envelope into `row`. Accepts a JSON object, or Fluent Bit's `[ts, {record}]` /
/// `[[ts, {meta}], {record}]` forms.
fn parse_envelope<'a>(
    text: &'a str,
    row: &mut Row<'a>,
    path: &mut Vec<Cow<'a, str>>,
    map: MapFn,
    nl_ok: NlFn,
) -> Result<(), String> {
    let mut p = Parser::new(text);
    p.ws();
    match p.peek() {
        Some(b'{') => {
            p.object_nl(path, &nl_ok, &mut |path, v, nl| map(row, path, v, nl))
                .map_err(|e| e.to_string())?;
        }
        Some(b'[') => {
            p.expect(b'[').map_err(|e| e.to_string())?;
            p.ws();
            let ts = if p.peek() == Some(b'[') {
                p.expect(b'[').map_err(|e| e.to_string())?;
                let ts = p.value().map_err(|e| e.to_string())?;
                p.expect(b',').map_err(|e| e.to_string())?;
                let meta = p.raw_value().map_err(|e| e.to_string())?;
                p.expect(b']').map_err(|e| e.to_string())?;
                if meta.trim() != "{}" {
                    row.attr("fluentbit.metadata", Some(Cow::Borrowed(meta)));
                }
                ts
            } else {
                p.value().map_err(|e| e.to_string())?
            };
            if !matches!(ts, JVal::Num(_)) {
                return Err("expected [timestamp, {record}]".into());
            }
            row.ts(4, &[Cow::Borrowed("fluentbit.time")], ts);
            p.expect(b',').map_err(|e| e.to_string())?;
            p.ws();
            p.object_nl(path, &nl_ok, &mut |path, v, nl| map(row, path, v, nl))
                .map_err(|e| e.to_string())?;
            p.expect(b']').map_err(|e| e.to_string())?;
        }
        _ => return Err("payload is not a JSON object".into()),
    }
    p.end().map_err(|e| e.to_string())?;
    if p.lossy {
        row.lossy = true;
    }
    Ok(())
}

impl Decoder for JsonDecoder {
    fn name(&self) -> &'static str {
        match self.flavor {
            JsonFlavor::FluentBit => "fluentbit",
            JsonFlavor::Filebeat => "filebeat",
            JsonFlavor::Vector => "vector",
            JsonFlavor::Ilogtail => "ilogtail",
        }
    }

    fn schema(&self) -> SchemaRef {
        table_schema(TableKind::Container)
    }

    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput {
        let ingest = crate::now_us();
        let (map, nl_ok): (MapFn, NlFn) = match self.flavor {
            JsonFlavor::FluentBit => (map_fluentbit, fluentbit_nl),
            JsonFlavor::Filebeat => (map_filebeat, no_nl),
            JsonFlavor::Vector => (map_vector, no_nl),
            JsonFlavor::Ilogtail => (map_ilogtail, no_nl),
        };
        let mut errors = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            let Some(payload) = rec.payload else {
                errors.push(RecordError::new(i, rec, "empty payload (tombstone)"));
                continue;
            };
            let b = &mut self.builder;
            let opts = &self.opts;
            let path_buf = &mut self.path;
            let res = with_text(payload, |text, lossy| {
                let mut row = b.new_row(lossy);
                let mut path = recycle(std::mem::take(path_buf));
                let res = parse_envelope(text, &mut row, &mut path, map, nl_ok);
                *path_buf = recycle(path);
                match res {
                    Ok(()) => {
                        b.append(row, rec, rec.offset, ingest, opts);
                        Ok(())
                    }
                    Err(e) => {
                        b.discard_row(row);
                        Err(e)
                    }
                }
            });
            if let Err(e) = res {
                errors.push(RecordError::new(i, rec, e));
            }
        }
        finish_output(self.builder.finish(), self.schema(), errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder_for;
    use arrow::array::{Array, AsArray};

    type Attrs = Vec<(String, Option<String>)>;
    /// (message, level, attrs) of one row.
    type Decoded = (Option<String>, Option<String>, Attrs);

    /// (message, level, attrs) of each row, and the error reasons.
    fn decode_fb(payloads: &[&str]) -> (Vec<Decoded>, Vec<String>) {
        // with the message's JSON fields copied into attrs, so the tests see what was parsed
        let opts = DecoderOptions {
            json_message_attrs: true,
            ..DecoderOptions::default()
        };
        let mut d = decoder_for("fluentbit", &opts).expect("decoder");
        let recs: Vec<RawRecord<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord {
                timestamp_ms: Some(1000),
                ..RawRecord::new("t", 0, i as i64, p.as_bytes())
            })
            .collect();
        let out = d.decode(&recs);
        let b = &out.batch;
        let col = |name: &str| {
            b.column_by_name(name)
                .expect("column")
                .as_string::<i32>()
                .clone()
        };
        let (msg, lvl) = (col("message"), col("level"));
        let attrs = b.column_by_name("attrs").expect("attrs").as_map().clone();
        let rows = (0..b.num_rows())
            .map(|r| {
                let e = attrs.value(r);
                let (k, v) = (
                    e.column(0).as_string::<i32>(),
                    e.column(1).as_string::<i32>(),
                );
                // loglake's own flags (`loglake.ts_source`) left out
                let kv = (0..e.len())
                    .filter(|&i| !k.value(i).starts_with("loglake."))
                    .map(|i| {
                        (
                            k.value(i).to_owned(),
                            v.is_valid(i).then(|| v.value(i).to_owned()),
                        )
                    })
                    .collect();
                let s =
                    |a: &arrow::array::StringArray| a.is_valid(r).then(|| a.value(r).to_owned());
                (s(&msg), s(&lvl), kv)
            })
            .collect();
        (rows, out.errors.into_iter().map(|e| e.reason).collect())
    }

    fn attr<'x>(a: &'x Attrs, k: &str) -> Option<&'x Option<String>> {
        a.iter().find(|(x, _)| x == k).map(|(_, v)| v)
    }

    #[test]
    fn log_ending_in_an_escaped_newline_decodes_as_before() {
        let (rows, errors) = decode_fb(&[
            r#"{"log":"hello\n"}"#,
            r#"{"log":"a\r\n"}"#,
            r#"{"log":"x\ry\r\n"}"#,
            r#"{"log":"\n"}"#,
            r#"{"log":"a\nb\n"}"#,
            r#"{"log":"plain"}"#,
            r#"{"log":"first\n","log":"second\n"}"#,
            r#"{"msg":"low\n","message":"mid\n","log":"high\n","stream":"x\n"}"#,
            r#"{"log":"unterminated\n"#,
            r#"{"log":"x\n" }"#,
            r#"{"log":"bad escape\q\n"}"#,
        ]);
        let msgs: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
        assert_eq!(
            msgs,
            [
                Some("hello"),
                Some("a"),
                Some("x\ry"),
                Some(""),
                Some("a\nb"),
                Some("plain"),
                Some("first"),
                Some("high"),
                Some("x"),
            ]
        );
        // a `log` that loses to another message candidate keeps its line end in attrs
        assert_eq!(attr(&rows[6].2, "log"), Some(&Some("second\n".to_owned())));
        assert_eq!(attr(&rows[7].2, "msg"), Some(&Some("low\n".to_owned())));
        assert_eq!(attr(&rows[7].2, "message"), Some(&Some("mid\n".to_owned())));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn json_message_is_flattened_in_one_pass_all_or_nothing() {
        let deep = |n: usize| format!("{{\\\"a\\\":{}{}}}", "[".repeat(n), "]".repeat(n));
        let (rows, errors) = decode_fb(&[
            r#"{"log":"{\"level\":\"WARN\",\"x\":{\"y\":1,\"z\":[1,{}]},\"e\":{},\"n\":null}\n","x.y":"envelope"}"#,
            r#"{"log":"{\"level\":\"warn\",\"a\":1,}\n"}"#,
            r#"{"x":"kept","log":" {\"x\":\"dropped\",\"trace_id\":\"abc\"} \n"}"#,
            &format!(r#"{{"log":"{}"}}"#, deep(128)),
            &format!(r#"{{"log":"{}"}}"#, deep(129)),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let (_, level, a) = &rows[0];
        assert_eq!(level.as_deref(), Some("warn"));
        // the envelope's `x.y` wins over the message's
        let keys: Vec<&str> = a.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["x.y", "level", "x.z", "e", "n"]);
        assert_eq!(attr(a, "x.y"), Some(&Some("envelope".to_owned())));
        assert_eq!(attr(a, "x.z"), Some(&Some("[1,{}]".to_owned())));
        assert_eq!(attr(a, "n"), Some(&None));
        // invalid JSON: nothing from the message, the level is detected in the text
        assert_eq!(rows[1].2, vec![]);
        assert_eq!(rows[1].1.as_deref(), Some("warn"));
        // envelope keys win; trimmed message
        assert_eq!(rows[2].2.iter().filter(|(k, _)| k == "x").count(), 1);
        // a trace id promoted to its column is not repeated in attrs
        assert_eq!(attr(&rows[2].2, "trace_id"), None);
        // nesting is limited (128) from the top of the message, as when it was validated first
        // with `skip_value(0)`
        let validated = |n: usize| {
            let t = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
            let mut p = Parser::new(&t);
            p.skip_value(0).is_ok() && p.end().is_ok()
        };
        assert!(validated(128) && !validated(129));
        assert_eq!(rows[3].2.len(), 1);
        assert_eq!(rows[4].2, vec![]);
    }

    #[test]
    fn reused_row_buffers_do_not_leak_between_records() {
        let (rows, errors) = decode_fb(&[
            r#"{"log":"a","k1":"1","kubernetes":{"labels":{"l":"v"},"pod_id":"p"}}"#,
            r#"{"log":"b","k2":"2","kubernetes":{"x":"#,
            r#"{"log":"c","k3":"3"}"#,
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(rows.len(), 2);
        let keys: Vec<&str> = rows[1].2.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["k3"]);
    }

    #[test]
    fn every_string_column_names_a_distinct_utf8_column_of_the_schema() {
        let schema = table_schema(TableKind::Container);
        let mut seen = std::collections::HashSet::new();
        for name in COL_NAMES {
            let f = schema.field_with_name(name).expect("in the schema");
            assert_eq!(f.data_type(), &arrow::datatypes::DataType::Utf8, "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
        // an empty batch has every column of the schema, in its order
        let b = ContainerBuilder::new().finish().expect("batch");
        assert_eq!(b.schema(), schema);
    }

    #[test]
    fn recycle_keeps_the_allocation() {
        let text = String::from("abc");
        let mut v: Vec<Cow<'_, str>> = Vec::with_capacity(32);
        v.push(Cow::Borrowed(text.as_str()));
        let ptr = v.as_ptr() as usize;
        let w: Vec<Cow<'static, str>> = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), 32);
        assert_eq!(w.as_ptr() as usize, ptr);
    }
}
