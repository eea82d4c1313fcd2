//! The naive baseline shared by the benchmarks (`schemas/benches/decode.rs` and the archive
//! benchmark `benches/archive.rs`): parse each Fluent Bit record into a `serde_json::Value`, then
//! map it into the canonical container schema with plain Arrow builders, as a hand-rolled
//! pipeline would. Not part of any library: benchmark code only.

use arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use loglake_schemas::{TableKind, table_schema};
use serde_json::Value;
use std::sync::Arc;

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(MapFieldNames {
            entry: "key_value".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

fn flatten(prefix: &str, v: &Value, out: &mut MapBuilder<StringBuilder, StringBuilder>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Null => {
            out.keys().append_value(prefix);
            out.values().append_null();
        }
        Value::String(s) => {
            out.keys().append_value(prefix);
            out.values().append_value(s);
        }
        other => {
            out.keys().append_value(prefix);
            out.values().append_value(other.to_string());
        }
    }
}

/// The baseline: `serde_json::Value` per record, then the same mapping into the container schema.
pub fn serde_baseline(records: &[Vec<u8>]) -> RecordBatch {
    let ts = |_: ()| TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut t = ts(());
    let mut it = ts(());
    let mut strs: Vec<StringBuilder> = (0..16).map(|_| StringBuilder::new()).collect();
    let mut labels = map_builder();
    let mut attrs = map_builder();
    let mut topic = StringBuilder::new();
    let mut part = Int32Builder::new();
    let mut off = Int64Builder::new();
    let mut dt = Date32Builder::new();
    let mut hour = Int32Builder::new();
    for (i, rec) in records.iter().enumerate() {
        let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(rec) else {
            continue;
        };
        let k8s = v.get("kubernetes");
        let ks = |k: &str| k8s.and_then(|x| x.get(k)).and_then(Value::as_str);
        let mut cols: [Option<&str>; 16] = [None; 16];
        cols[1] = ks("namespace_name");
        cols[2] = ks("pod_name");
        cols[3] = ks("container_name");
        cols[4] = ks("host");
        cols[12] = ks("pod_id");
        cols[13] = ks("docker_id");
        cols[14] = ks("container_image");
        cols[15] = ks("container_hash");
        cols[7] = v.get("stream").and_then(Value::as_str);
        let msg = v
            .get("log")
            .and_then(Value::as_str)
            .map(|m| m.trim_end_matches('\n'));
        cols[9] = msg;
        if let Some(Value::Object(l)) = k8s.and_then(|k| k.get("labels")) {
            cols[5] = l.get("app.kubernetes.io/name").and_then(Value::as_str);
            for (k, v) in l {
                labels.keys().append_value(k);
                labels.values().append_option(v.as_str());
            }
        }
        let _ = labels.append(true);
        for (k, val) in &v {
            if !matches!(k.as_str(), "log" | "stream" | "@timestamp" | "kubernetes") {
                flatten(k, val, &mut attrs);
            }
        }
        if let Some(Value::Object(k)) = k8s {
            for (kk, val) in k {
                if !matches!(
                    kk.as_str(),
                    "namespace_name"
                        | "pod_name"
                        | "container_name"
                        | "host"
                        | "labels"
                        | "pod_id"
                        | "docker_id"
                        | "container_image"
                        | "container_hash"
                ) {
                    flatten(&format!("kubernetes.{kk}"), val, &mut attrs);
                }
            }
        }
        let _ = attrs.append(true);
        for (b, c) in strs.iter_mut().zip(cols) {
            b.append_option(c);
        }
        let us = v
            .get("@timestamp")
            .and_then(Value::as_f64)
            .map(|f| (f * 1e6) as i64)
            .unwrap_or(0);
        t.append_value(us);
        it.append_value(0);
        topic.append_value("bench");
        part.append_value(0);
        off.append_value(i as i64);
        dt.append_value((us / 86_400_000_000) as i32);
        hour.append_value(((us / 3_600_000_000) % 24) as i32);
    }
    let mut s: Vec<ArrayRef> = strs
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let message = s.remove(9);
    let rows = t.len();
    // `ts_nanos`: the baseline keeps Fluent Bit's `time` in attrs instead (a plain mapping)
    let ts_nanos = Arc::new(arrow::array::Int16Array::new_null(rows));
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(t.finish()), ts_nanos, Arc::new(it.finish())];
    arrays.extend(s.drain(..9)); // cluster..level
    arrays.push(message);
    arrays.append(&mut s); // trace, span, pod_uid, container_id, image, image_id
    arrays.push(Arc::new(labels.finish()));
    arrays.push(Arc::new(attrs.finish()));
    arrays.push(Arc::new(topic.finish()));
    arrays.push(Arc::new(part.finish()));
    arrays.push(Arc::new(off.finish()));
    arrays.push(Arc::new(dt.finish()));
    arrays.push(Arc::new(hour.finish()));
    RecordBatch::try_new(table_schema(TableKind::Container), arrays).expect("baseline batch")
}
