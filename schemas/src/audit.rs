//! Kubernetes audit events (`audit.k8s.io/v1` `Event`, also `v1beta1` and events whose
//! `apiVersion` was stripped) into the `k8s_audit` table. An `EventList` payload yields one row
//! per item.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use serde_json::{Map, Value};

use crate::container::{finish_output, new_map_builder};
use crate::event_time::{dt_hour, parse_rfc3339_us};
use crate::{
    DecodeOutput, Decoder, DecoderOptions, RawRecord, TableKind, decode_each, table_schema,
    with_text,
};

/// Utf8 columns in schema order between `cluster` and `user_groups`, etc.
const S_CLUSTER: usize = 0;
const S_AUDIT_ID: usize = 1;
const S_API_VERSION: usize = 2;
const S_LEVEL: usize = 3;
const S_STAGE: usize = 4;
const S_VERB: usize = 5;
const S_URI: usize = 6;
const S_USER: usize = 7;
const S_USER_UID: usize = 8;
const S_IMPERSONATED: usize = 9;
const S_UA: usize = 10;
const S_OBJ_RES: usize = 11;
const S_OBJ_SUB: usize = 12;
const S_OBJ_NS: usize = 13;
const S_OBJ_NAME: usize = 14;
const S_OBJ_GROUP: usize = 15;
const S_OBJ_VERSION: usize = 16;
const S_RESP_STATUS: usize = 17;
const S_REQ_OBJ: usize = 18;
const S_RESP_OBJ: usize = 19;
const NS: usize = 20;

fn list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Utf8,
        true,
    )))
}

pub(crate) struct AuditDecoder {
    opts: DecoderOptions,
    ts: TimestampMicrosecondBuilder,
    ingest_ts: TimestampMicrosecondBuilder,
    s: Vec<StringBuilder>,
    groups: ListBuilder<StringBuilder>,
    ips: ListBuilder<StringBuilder>,
    code: Int32Builder,
    req_ts: TimestampMicrosecondBuilder,
    stage_ts: TimestampMicrosecondBuilder,
    annotations: MapBuilder<StringBuilder, StringBuilder>,
    attrs: MapBuilder<StringBuilder, StringBuilder>,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    dt: Date32Builder,
    hour: Int32Builder,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn flatten_into(prefix: &str, v: &Value, out: &mut Vec<(String, Option<String>)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten_into(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => out.push((prefix.to_owned(), text(other))),
    }
}

/// The Utf8 columns of one event (index `S_*`), `cluster` from the options.
fn string_cols(ev: &Map<String, Value>, cluster: Option<String>) -> [Option<String>; NS] {
    let get_s = |k: &str| ev.get(k).and_then(text);
    let sub = |o: &str, k: &str| ev.get(o).and_then(|x| x.get(k)).and_then(text);
    let mut cols: [Option<String>; NS] = Default::default();
    cols[S_CLUSTER] = cluster;
    cols[S_AUDIT_ID] = get_s("auditID");
    cols[S_API_VERSION] = get_s("apiVersion");
    cols[S_LEVEL] = get_s("level");
    cols[S_STAGE] = get_s("stage");
    cols[S_VERB] = get_s("verb");
    cols[S_URI] = get_s("requestURI");
    cols[S_USER] = sub("user", "username");
    cols[S_USER_UID] = sub("user", "uid");
    cols[S_IMPERSONATED] = sub("impersonatedUser", "username");
    cols[S_UA] = get_s("userAgent");
    cols[S_OBJ_RES] = sub("objectRef", "resource");
    cols[S_OBJ_SUB] = sub("objectRef", "subresource");
    cols[S_OBJ_NS] = sub("objectRef", "namespace");
    cols[S_OBJ_NAME] = sub("objectRef", "name");
    cols[S_OBJ_GROUP] = sub("objectRef", "apiGroup");
    cols[S_OBJ_VERSION] = sub("objectRef", "apiVersion");
    cols[S_RESP_STATUS] = sub("responseStatus", "status")
        .or_else(|| sub("responseStatus", "reason"))
        .or_else(|| sub("responseStatus", "message"));
    cols[S_REQ_OBJ] = ev
        .get("requestObject")
        .filter(|v| !v.is_null())
        .map(Value::to_string);
    cols[S_RESP_OBJ] = ev
        .get("responseObject")
        .filter(|v| !v.is_null())
        .map(Value::to_string);
    cols
}

/// Appends a list of strings (`v` an array), else a null list.
fn append_list(b: &mut ListBuilder<StringBuilder>, v: Option<&Value>) {
    match v {
        Some(Value::Array(a)) => {
            for x in a {
                b.values().append_option(text(x));
            }
            b.append(true);
        }
        _ => b.append(false),
    }
}

/// The RFC 3339 timestamp of the field `k`, in µs.
fn ts_of(ev: &Map<String, Value>, k: &str) -> Option<i64> {
    ev.get(k).and_then(Value::as_str).and_then(parse_rfc3339_us)
}

/// The time of an event that has none: the Kafka timestamp, else the ingest time, with the
/// `loglake.ts_source` value that says which.
fn fallback_ts(kafka_ms: Option<i64>, ingest: i64) -> (i64, &'static str) {
    match kafka_ms.and_then(|m| m.checked_mul(1000)) {
        Some(t) => (t, "kafka"),
        None => (ingest, "ingest"),
    }
}

/// The fields of an event that no column holds, flattened (`user.extra.x`, `objectRef.uid`, …).
fn other_fields(ev: &Map<String, Value>) -> Vec<(String, Option<String>)> {
    let mut attrs = Vec::new();
    for (k, v) in ev {
        if matches!(
            k.as_str(),
            "auditID"
                | "apiVersion"
                | "level"
                | "stage"
                | "verb"
                | "requestURI"
                | "sourceIPs"
                | "userAgent"
                | "requestObject"
                | "responseObject"
                | "requestReceivedTimestamp"
                | "stageTimestamp"
                | "annotations"
                | "kind"
        ) {
            continue;
        }
        match (k.as_str(), v) {
            ("user", Value::Object(u)) => {
                flatten_other("user", u, &["username", "uid", "groups"], &mut attrs)
            }
            ("objectRef", Value::Object(o)) => flatten_other(
                "objectRef",
                o,
                &[
                    "resource",
                    "subresource",
                    "namespace",
                    "name",
                    "apiGroup",
                    "apiVersion",
                ],
                &mut attrs,
            ),
            ("responseStatus", Value::Object(o)) => {
                flatten_other("responseStatus", o, &["code"], &mut attrs)
            }
            _ => flatten_into(k, v, &mut attrs),
        }
    }
    attrs
}

/// Flattens the fields of the object `o` (under `prefix`) but those in `columns`.
fn flatten_other(
    prefix: &str,
    o: &Map<String, Value>,
    columns: &[&str],
    out: &mut Vec<(String, Option<String>)>,
) {
    for (k, v) in o {
        if !columns.contains(&k.as_str()) {
            flatten_into(&format!("{prefix}.{k}"), v, out);
        }
    }
}

impl AuditDecoder {
    pub fn new(opts: DecoderOptions) -> Self {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        AuditDecoder {
            opts,
            ts: ts(),
            ingest_ts: ts(),
            s: (0..NS).map(|_| StringBuilder::new()).collect(),
            groups: list_builder(),
            ips: list_builder(),
            code: Int32Builder::new(),
            req_ts: ts(),
            stage_ts: ts(),
            annotations: new_map_builder(),
            attrs: new_map_builder(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            dt: Date32Builder::new(),
            hour: Int32Builder::new(),
        }
    }

    fn validate(ev: &Map<String, Value>) -> Result<(), String> {
        match ev.get("kind") {
            None | Some(Value::Null) => {}
            Some(Value::String(k)) if k == "Event" => {}
            Some(other) => return Err(format!("not an audit Event: kind is {other}")),
        }
        if let Some(v) = ev.get("apiVersion") {
            match v.as_str() {
                Some(a) if a.starts_with("audit.k8s.io/") => {}
                _ => return Err(format!("not an audit Event: apiVersion is {v}")),
            }
        }
        let has = |k: &str| ev.get(k).is_some_and(|v| !v.is_null());
        if !(has("auditID") || has("verb") || has("stage")) {
            return Err("not an audit Event: none of auditID, verb, stage".into());
        }
        Ok(())
    }

    fn append(&mut self, ev: &Map<String, Value>, rec: &RawRecord<'_>, ingest: i64, lossy: bool) {
        let cols = string_cols(ev, self.opts.cluster.clone());
        for (b, v) in self.s.iter_mut().zip(cols.iter()) {
            b.append_option(v.as_deref());
        }
        append_list(
            &mut self.groups,
            ev.get("user").and_then(|u| u.get("groups")),
        );
        append_list(&mut self.ips, ev.get("sourceIPs"));
        self.code.append_option(
            ev.get("responseStatus")
                .and_then(|r| r.get("code"))
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok()),
        );
        let req = ts_of(ev, "requestReceivedTimestamp");
        let stage = ts_of(ev, "stageTimestamp");
        self.req_ts.append_option(req);
        self.stage_ts.append_option(stage);

        if let Some(Value::Object(a)) = ev.get("annotations") {
            for (k, v) in a {
                self.annotations.keys().append_value(k);
                self.annotations.values().append_option(text(v));
            }
        }
        let _ = self.annotations.append(true);

        let mut attrs = other_fields(ev);
        let ts = match stage.or(req).or_else(|| ts_of(ev, "timestamp")) {
            Some(t) => t,
            None => {
                let (t, source) = fallback_ts(rec.timestamp_ms, ingest);
                attrs.push(("loglake.ts_source".into(), Some(source.into())));
                t
            }
        };
        if lossy {
            attrs.push(("loglake.invalid_utf8".into(), Some("true".into())));
        }
        for (k, v) in attrs {
            self.attrs.keys().append_value(k);
            self.attrs.values().append_option(v);
        }
        let _ = self.attrs.append(true);

        self.ts.append_value(ts);
        self.ingest_ts.append_value(ingest);
        self.topic.append_value(rec.topic);
        self.partition.append_value(rec.partition);
        self.offset.append_value(rec.offset);
        let (dt, hour) = dt_hour(ts);
        self.dt.append_value(dt);
        self.hour.append_value(hour);
    }

    fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut s: Vec<ArrayRef> = self
            .s
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let mut take =
            |i: usize| std::mem::replace(&mut s[i], Arc::new(StringBuilder::new().finish()));
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.ingest_ts.finish()),
            take(S_CLUSTER),
            take(S_AUDIT_ID),
            take(S_API_VERSION),
            take(S_LEVEL),
            take(S_STAGE),
            take(S_VERB),
            take(S_URI),
            take(S_USER),
            take(S_USER_UID),
            Arc::new(self.groups.finish()),
            take(S_IMPERSONATED),
            Arc::new(self.ips.finish()),
            take(S_UA),
            take(S_OBJ_RES),
            take(S_OBJ_SUB),
            take(S_OBJ_NS),
            take(S_OBJ_NAME),
            take(S_OBJ_GROUP),
            take(S_OBJ_VERSION),
            Arc::new(self.code.finish()),
            take(S_RESP_STATUS),
            Arc::new(self.req_ts.finish()),
            Arc::new(self.stage_ts.finish()),
            Arc::new(self.annotations.finish()),
            take(S_REQ_OBJ),
            take(S_RESP_OBJ),
            Arc::new(self.attrs.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.dt.finish()),
            Arc::new(self.hour.finish()),
        ];
        RecordBatch::try_new(table_schema(TableKind::K8sAudit), arrays)
    }
}

impl Decoder for AuditDecoder {
    fn name(&self) -> &'static str {
        "k8s-audit"
    }

    fn schema(&self) -> SchemaRef {
        table_schema(TableKind::K8sAudit)
    }

    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput {
        let ingest = crate::now_us();
        let errors = decode_each(records, |rec, payload| {
            let (v, lossy) = with_text(payload, |t, lossy| {
                serde_json::from_str::<Value>(t)
                    .map(|v| (v, lossy))
                    .map_err(|e| format!("invalid JSON: {e}"))
            })?;
            let Value::Object(ev) = v else {
                return Err("payload is not a JSON object".to_owned());
            };
            if ev.get("kind").and_then(Value::as_str) != Some("EventList") {
                Self::validate(&ev)?;
                self.append(&ev, rec, ingest, lossy);
                return Ok(());
            }
            let items: Vec<&Map<String, Value>> = ev
                .get("items")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default();
            if let Some(e) = items.iter().find_map(|it| Self::validate(it).err()) {
                return Err(format!("EventList item: {e}"));
            }
            for it in items {
                self.append(it, rec, ingest, lossy);
            }
            Ok(())
        });
        finish_output(self.finish(), self.schema(), errors)
    }
}
