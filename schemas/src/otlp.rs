//! OpenTelemetry logs as the Collector's Kafka exporter writes them: `otlp_proto` (an
//! `ExportLogsServiceRequest` / `LogsData` protobuf — same wire format) and `otlp_json` (its
//! OTLP/JSON form). One Kafka record holds many log records: each becomes a row carrying the
//! Kafka record's offset. Resource attributes `k8s.*` map onto the canonical columns.

use std::borrow::Cow;

use arrow::datatypes::SchemaRef;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::container::{Col, ContainerBuilder, Row, finish_output};
use crate::event_time::EventTime;
use crate::{
    DecodeOutput, Decoder, DecoderOptions, RawRecord, TableKind, decode_each, table_schema,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtlpEncoding {
    Proto,
    Json,
}

pub(crate) struct OtlpDecoder {
    enc: OtlpEncoding,
    opts: DecoderOptions,
    builder: ContainerBuilder,
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

fn any_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or(J::Null),
        Some(any_value::Value::BytesValue(b)) => J::String(hex(b)),
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(any_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map(any_json).unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
    }
}

/// An attribute value as text: strings as they are, scalars printed, arrays/maps as JSON.
fn any_text(v: Option<&AnyValue>) -> Option<Cow<'_, str>> {
    let v = v?;
    Some(match &v.value {
        None => return None,
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => Cow::Owned(i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => Cow::Owned(d.to_string()),
        Some(any_value::Value::BytesValue(b)) => Cow::Owned(hex(b)),
        Some(_) => Cow::Owned(any_json(v).to_string()),
    })
}

fn severity_from_number(n: i32) -> Option<&'static str> {
    Some(match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    })
}

fn resource_attr<'a>(row: &mut Row<'a>, kv: &'a KeyValue) {
    let v = any_text(kv.value.as_ref());
    let col = match kv.key.as_str() {
        "k8s.namespace.name" => Some(Col::Namespace),
        "k8s.pod.name" => Some(Col::Pod),
        "k8s.container.name" => Some(Col::Container),
        "k8s.node.name" => Some(Col::Node),
        "k8s.pod.uid" => Some(Col::PodUid),
        "container.id" => Some(Col::ContainerId),
        "container.image.name" => Some(Col::Image),
        "container.image.id" => Some(Col::ImageId),
        "k8s.cluster.name" => Some(Col::Cluster),
        "service.name" => Some(Col::Service),
        "app.kubernetes.io/name" => Some(Col::App),
        _ => None,
    };
    match (col, v) {
        (Some(c), Some(v)) if row.get(c).is_none() => row.set(c, v),
        (_, v) => {
            if let Some(l) = kv
                .key
                .strip_prefix("k8s.pod.labels.")
                .or_else(|| kv.key.strip_prefix("k8s.pod.label."))
                && let Some(v) = v
            {
                row.labels.push((Cow::Borrowed(l), v));
                return;
            }
            row.attr(Cow::Owned(format!("resource.{}", kv.key)), v);
        }
    }
}

impl OtlpDecoder {
    pub fn new(enc: OtlpEncoding, opts: DecoderOptions) -> Self {
        OtlpDecoder {
            enc,
            opts,
            builder: ContainerBuilder::new(),
        }
    }

    fn parse(&self, payload: &[u8]) -> Result<(ExportLogsServiceRequest, bool), String> {
        match self.enc {
            OtlpEncoding::Proto => ExportLogsServiceRequest::decode(payload)
                .map(|r| (r, false))
                .map_err(|e| format!("invalid OTLP protobuf: {e}")),
            OtlpEncoding::Json => crate::with_text(payload, |t, lossy| {
                serde_json::from_str::<ExportLogsServiceRequest>(t)
                    .map(|r| (r, lossy))
                    .map_err(|e| format!("invalid OTLP JSON: {e}"))
            }),
        }
    }

    fn rows(
        &mut self,
        req: &ExportLogsServiceRequest,
        rec: &RawRecord<'_>,
        lossy: bool,
        ingest: i64,
    ) {
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                for lr in &sl.log_records {
                    let row = log_row(rl.resource.as_ref(), sl.scope.as_ref(), lr, lossy);
                    self.builder.append(row, rec, ingest, &self.opts);
                }
            }
        }
    }
}

/// The row of one log record, with the attributes of its resource and scope.
fn log_row<'a>(
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
    lr: &'a LogRecord,
    lossy: bool,
) -> Row<'a> {
    let mut row = Row {
        lossy,
        ..Row::default()
    };
    if let Some(res) = resource {
        for kv in &res.attributes {
            resource_attr(&mut row, kv);
        }
    }
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            row.attr("scope.name", Some(Cow::Borrowed(scope.name.as_str())));
        }
        if !scope.version.is_empty() {
            row.attr("scope.version", Some(Cow::Borrowed(scope.version.as_str())));
        }
    }
    set_time(&mut row, lr);
    let level = if !lr.severity_text.is_empty() {
        Some(Cow::Borrowed(lr.severity_text.as_str()))
    } else {
        severity_from_number(lr.severity_number).map(Cow::Borrowed)
    };
    row.cols[Col::Level as usize] = level;
    if !lr.trace_id.is_empty() {
        row.set(Col::TraceId, hex(&lr.trace_id));
    }
    if !lr.span_id.is_empty() {
        row.set(Col::SpanId, hex(&lr.span_id));
    }
    row.message = any_text(lr.body.as_ref());
    for kv in &lr.attributes {
        log_attr(&mut row, kv);
    }
    if !lr.event_name.is_empty() {
        row.attr("event.name", Some(Cow::Borrowed(lr.event_name.as_str())));
    }
    if lr.flags != 0 {
        row.attr("flags", Some(Cow::Owned(lr.flags.to_string())));
    }
    row
}

/// The event time: `time_unix_nano`, else `observed_time_unix_nano` (flagged `observed`).
fn set_time(row: &mut Row<'_>, lr: &LogRecord) {
    let t = if lr.time_unix_nano != 0 {
        lr.time_unix_nano
    } else {
        lr.observed_time_unix_nano
    };
    if t != 0
        && let Ok(ns) = i64::try_from(t)
    {
        let et = EventTime::from_nanos(ns);
        row.ts_us = Some(et.us);
        row.ts_nanos = et.sub_us_ns;
    }
    if lr.time_unix_nano == 0 && lr.observed_time_unix_nano != 0 {
        row.flags
            .push(("loglake.ts_source", Cow::Borrowed("observed")));
    }
}

/// One attribute of a log record: `log.iostream` fills `stream`, `log.file.path` is also the
/// kubelet path; all others go to attrs.
fn log_attr<'a>(row: &mut Row<'a>, kv: &'a KeyValue) {
    let v = any_text(kv.value.as_ref());
    match kv.key.as_str() {
        "log.iostream" if row.get(Col::Stream).is_none() && v.is_some() => {
            row.cols[Col::Stream as usize] = v
        }
        "log.file.path" => {
            row.path = v.clone();
            row.attr(kv.key.as_str(), v);
        }
        k => row.attr(k, v),
    }
}

impl Decoder for OtlpDecoder {
    fn name(&self) -> &'static str {
        match self.enc {
            OtlpEncoding::Proto => "otlp-proto",
            OtlpEncoding::Json => "otlp-json",
        }
    }

    fn schema(&self) -> SchemaRef {
        table_schema(TableKind::Container)
    }

    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput {
        let ingest = crate::now_us();
        let errors = decode_each(records, |rec, payload| {
            let (req, lossy) = self.parse(payload)?;
            self.rows(&req, rec, lossy, ingest);
            Ok(())
        });
        finish_output(self.builder.finish(), self.schema(), errors)
    }
}
