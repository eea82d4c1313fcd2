//! The `container` table: row model, Arrow builder with the common enrichment, and the JSON
//! envelope decoders (`fluentbit`, `filebeat`, `vector`, `ilogtail`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;

use crate::json::{JVal, Parser, flatten_object, join_path};
use crate::util::{
    detect_level, dt_hour, normalize_level, parse_any_ts_us, parse_epoch_us, parse_k8s_log_path,
};
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

/// String columns of the container schema, in schema order.
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
}
const NCOLS: usize = 11;

/// One decoded row before it is appended to the builders.
#[derive(Debug, Default)]
pub(crate) struct Row<'a> {
    pub cols: [Option<Cow<'a, str>>; NCOLS],
    pub message: Option<Cow<'a, str>>,
    pub(crate) msg_prio: u8,
    pub(crate) msg_key: Option<AKey<'a>>,
    pub ts_us: Option<i64>,
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
        let JVal::Str(s) = v else {
            self.attr_path(path, v);
            return;
        };
        if self.message.is_some() && self.msg_prio >= prio {
            self.attr_path(path, JVal::Str(s));
            return;
        }
        let key = self.key_for(path);
        if let (Some(old), Some(old_key)) = (self.message.take(), self.msg_key.take()) {
            self.attrs.push((old_key, Some(old)));
        }
        self.message = Some(s);
        self.msg_prio = prio;
        self.msg_key = Some(key);
    }

    /// Offers an event-time candidate (RFC 3339 text or epoch number).
    pub fn ts(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>) {
        if self.ts_us.is_some() && self.ts_prio >= prio {
            self.attr_path(path, v);
            return;
        }
        let parsed = match &v {
            JVal::Str(s) => parse_any_ts_us(s),
            JVal::Num(n) => parse_epoch_us(n),
            _ => None,
        };
        let Some(us) = parsed else {
            self.attr_path(path, v);
            return;
        };
        if self.ts_us.is_some() && self.ts_prio >= prio {
            self.attr_path(path, v);
            return;
        }
        let key = self.key_for(path);
        if let Some((old_key, old)) = self.ts_key.take() {
            self.attrs.push((old_key, Some(old)));
        }
        self.ts_us = Some(us);
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

/// Removes a trailing line end and turns CRLF into LF.
pub(crate) fn clean_message(m: Cow<'_, str>) -> Cow<'_, str> {
    let trimmed_len = {
        let t = m.strip_suffix('\n').unwrap_or(&m);
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

/// Arrow builders of the container schema.
pub(crate) struct ContainerBuilder {
    ts: TimestampMicrosecondBuilder,
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
}

impl ContainerBuilder {
    pub fn new() -> Self {
        ContainerBuilder {
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
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
        }
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
        // message
        let message = row.message.take().map(clean_message);

        // path-derived kubernetes metadata
        if let Some(p) = row.path.take()
            && (row.get(Col::Pod).is_none()
                || row.get(Col::Namespace).is_none()
                || row.get(Col::Container).is_none())
            && let Some(m) = parse_k8s_log_path(&p)
        {
            for (c, v) in [
                (Col::Namespace, m.namespace),
                (Col::Pod, m.pod),
                (Col::Container, m.container),
            ] {
                if row.get(c).is_none()
                    && let Some(v) = v
                {
                    row.set(c, v.to_owned());
                }
            }
        }

        // attrs: the record's own fields, then JSON found in the message, then flags
        let mut json_level: Option<&str> = None;
        let mut json_trace: Option<&str> = None;
        let mut json_span: Option<&str> = None;
        for (k, v) in &row.attrs {
            row.write_key(self.attrs.keys(), k);
            self.attrs.values().append_option(v.as_deref());
        }
        let json_msg = match message.as_deref() {
            Some(m) if opts.parse_json_message => {
                let t = m.trim();
                let looks = t.len() >= 2 && t.starts_with('{') && t.ends_with('}');
                // validate first (cheap, no allocation) so a broken object adds nothing
                (looks && {
                    let mut p = Parser::new(t);
                    p.skip_value(0).is_ok() && p.end().is_ok()
                })
                .then_some(t)
            }
            _ => None,
        };
        if let Some(t) = json_msg {
            let attrs = &mut self.attrs;
            let row_ref = &row;
            let _ = flatten_object(t, &mut |p, v| {
                let k = join_path(p);
                if row_ref.has_attr(&k) {
                    return;
                }
                match (&*k, &v) {
                    (
                        "level" | "lvl" | "severity" | "log.level" | "loglevel" | "log_level",
                        JVal::Str(Cow::Borrowed(x)),
                    ) if json_level.is_none() => json_level = Some(x),
                    ("trace_id" | "traceId" | "trace.id", JVal::Str(Cow::Borrowed(x)))
                        if json_trace.is_none() =>
                    {
                        json_trace = Some(x)
                    }
                    ("span_id" | "spanId" | "span.id", JVal::Str(Cow::Borrowed(x)))
                        if json_span.is_none() =>
                    {
                        json_span = Some(x)
                    }
                    _ => {}
                }
                attrs.keys().append_value(&k);
                attrs.values().append_option(v.into_text().as_deref());
            });
        }

        // timestamp
        let ts = match row.ts_us {
            Some(t) => t,
            None => match rec.timestamp_ms.and_then(|ms| ms.checked_mul(1000)) {
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
            },
        };
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
        let level: Option<Cow<'_, str>> = match row.get(Col::Level).or(json_level) {
            Some(l) => Some(match normalize_level(l) {
                Some(c) => Cow::Borrowed(c),
                None => Cow::Owned(l.to_lowercase()),
            }),
            None => message.as_deref().and_then(detect_level).map(Cow::Borrowed),
        };
        let mut vals: [Option<&str>; NCOLS] = std::array::from_fn(|i| row.cols[i].as_deref());
        vals[Col::Level as usize] = level.as_deref();
        if vals[Col::TraceId as usize].is_none() {
            vals[Col::TraceId as usize] = json_trace;
        }
        if vals[Col::SpanId as usize].is_none() {
            vals[Col::SpanId as usize] = json_span;
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
        self.ingest_ts.append_value(ingest_us);
        self.topic.append_value(rec.topic);
        self.partition.append_value(rec.partition);
        self.offset.append_value(offset);
        let (dt, hour) = dt_hour(ts);
        self.dt.append_value(dt);
        self.hour.append_value(hour);
        self.rows += 1;
    }

    pub fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut cols = self.cols.iter_mut();
        let mut next = || -> ArrayRef {
            cols.next()
                .map(|b| Arc::new(b.finish()) as ArrayRef)
                .unwrap_or_else(|| Arc::new(StringBuilder::new().finish()))
        };
        let cluster = next();
        let namespace = next();
        let pod = next();
        let container = next();
        let node = next();
        let app = next();
        let service = next();
        let stream = next();
        let level = next();
        let trace = next();
        let span = next();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.ingest_ts.finish()),
            cluster,
            namespace,
            pod,
            container,
            node,
            app,
            service,
            stream,
            level,
            {
                // size the next batch's message buffer like this one (saves regrowth + page faults)
                let (rows, bytes) = (self.rows, self.message.values_slice().len());
                let m =
                    std::mem::replace(&mut self.message, StringBuilder::with_capacity(rows, bytes));
                let mut m = m;
                Arc::new(m.finish())
            },
            trace,
            span,
            Arc::new(self.labels.finish()),
            {
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
                let mut old = std::mem::replace(&mut self.attrs, fresh);
                Arc::new(old.finish())
            },
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.dt.finish()),
            Arc::new(self.hour.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
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
}

impl JsonDecoder {
    pub fn new(flavor: JsonFlavor, opts: DecoderOptions) -> Self {
        JsonDecoder {
            flavor,
            opts,
            builder: ContainerBuilder::new(),
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
fn map_fluentbit<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>) {
    match path {
        [k] => match k.as_ref() {
            "log" => row.message(3, path, v),
            "message" => row.message(2, path, v),
            "msg" => row.message(1, path, v),
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
fn map_filebeat<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>) {
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
fn map_vector<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>) {
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
fn map_ilogtail<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>) {
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

type MapFn = for<'a> fn(&mut Row<'a>, &[Cow<'a, str>], JVal<'a>);

/// Parses one envelope into `row`. Accepts a JSON object, or Fluent Bit's `[ts, {record}]` /
/// `[[ts, {meta}], {record}]` forms.
fn parse_envelope<'a>(text: &'a str, row: &mut Row<'a>, map: MapFn) -> Result<(), String> {
    let mut p = Parser::new(text);
    p.ws();
    let mut path = Vec::with_capacity(4);
    match p.peek() {
        Some(b'{') => {
            p.object(&mut path, &mut |path, v| map(row, path, v))
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
            p.object(&mut path, &mut |path, v| map(row, path, v))
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
        let map: MapFn = match self.flavor {
            JsonFlavor::FluentBit => map_fluentbit,
            JsonFlavor::Filebeat => map_filebeat,
            JsonFlavor::Vector => map_vector,
            JsonFlavor::Ilogtail => map_ilogtail,
        };
        let mut errors = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            let Some(payload) = rec.payload else {
                errors.push(RecordError::new(i, rec, "empty payload (tombstone)"));
                continue;
            };
            let b = &mut self.builder;
            let opts = &self.opts;
            let res = with_text(payload, |text, lossy| {
                let mut row = Row {
                    lossy,
                    labels: Vec::with_capacity(8),
                    attrs: Vec::with_capacity(16),
                    parts: Vec::with_capacity(16),
                    ..Row::default()
                };
                parse_envelope(text, &mut row, map)?;
                b.append(row, rec, rec.offset, ingest, opts);
                Ok::<(), String>(())
            });
            if let Err(e) = res {
                errors.push(RecordError::new(i, rec, e));
            }
        }
        finish_output(self.builder.finish(), self.schema(), errors)
    }
}
