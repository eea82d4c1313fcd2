//! Kubernetes health from Kubernetes Events.
//!
//! [`decode_events`] reads Events as collectors ship them: a `v1 EventList` (Fluent Bit's
//! `kubernetes_events` input polls these), a watch notification (`{"type":…,"object":Event}`), a
//! single `Event`, or one record of Fluent Bit's output (`[ts, record]` or the record with
//! `@timestamp`). Each event's time is `lastTimestamp`, else `firstTimestamp`, else
//! `metadata.creationTimestamp`, else `eventTime` — the time Fluent Bit gives the record.
//!
//! [`classify`] maps an event to a health signal; [`health_rows`] counts the signals per hour ×
//! namespace × workload × node. Every signal comes from Events (`reason` and `message` as the
//! kubelet, scheduler, node controller and node-problem-detector write them):
//!
//! | signal | events |
//! |---|---|
//! | `oom_kills` | `OOMKilling` (node-problem-detector), `SystemOOM` (kubelet), any event whose message says `OOMKilled` |
//! | `crashloop_backoffs` | `BackOff` "Back-off restarting failed container", `CrashLoopBackOff` |
//! | `liveness_failures` | `Unhealthy` "Liveness probe failed" (and "Startup probe failed") |
//! | `readiness_failures` | `Unhealthy` "Readiness probe failed" |
//! | `evictions` | `Evicted`, `Evicting`, `TaintManagerEviction` |
//! | `failed_scheduling` | `FailedScheduling` |
//! | `image_pull_failures` | `ErrImagePull`, `ImagePullBackOff`, `Failed` "Failed to pull image …", `BackOff` "Back-off pulling image …" |
//! | `node_not_ready` | `NodeNotReady` |
//!
//! Occurrences: the first record of an event (its `metadata.uid`) in the day counts 1, each later
//! record counts the growth of its `count` (the kubelet aggregates repeats into `count`), so a
//! repeated watch update or a re-polled list counts nothing twice. Not built: signals from
//! container/kubelet logs and from the audit log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use serde_json::Value;

use crate::error::InsightsError;

/// One Kubernetes Event, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sEvent {
    pub ts: DateTime<Utc>,
    pub event_uid: String,
    pub namespace: Option<String>,
    pub object_kind: Option<String>,
    pub object_name: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub event_type: Option<String>,
    pub count: i64,
    /// The node: `source.host`, else the object's name for a Node.
    pub node: Option<String>,
    /// `source.component`, else `reportingComponent`.
    pub component: Option<String>,
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn time(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    text(v, path).and_then(|s| {
        DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// One Event object (`kind: Event`, or an EventList item).
pub fn event_from_object(o: &Value) -> Result<K8sEvent, String> {
    let ts = time(o, &["lastTimestamp"])
        .or_else(|| time(o, &["firstTimestamp"]))
        .or_else(|| time(o, &["metadata", "creationTimestamp"]))
        .or_else(|| time(o, &["eventTime"]))
        .ok_or("event has no lastTimestamp, firstTimestamp, creationTimestamp or eventTime")?;
    let object_kind = text(o, &["involvedObject", "kind"]);
    let object_name = text(o, &["involvedObject", "name"]);
    let node = text(o, &["source", "host"]).or_else(|| {
        (object_kind.as_deref() == Some("Node"))
            .then(|| object_name.clone())
            .flatten()
    });
    Ok(K8sEvent {
        ts,
        event_uid: text(o, &["metadata", "uid"])
            .or_else(|| text(o, &["metadata", "name"]))
            .unwrap_or_default(),
        namespace: text(o, &["metadata", "namespace"])
            .or_else(|| text(o, &["involvedObject", "namespace"])),
        object_kind,
        object_name,
        reason: text(o, &["reason"]),
        message: text(o, &["message"]),
        event_type: text(o, &["type"]),
        count: o.get("count").and_then(Value::as_i64).unwrap_or(1).max(1),
        node,
        component: text(o, &["source", "component"]).or_else(|| text(o, &["reportingComponent"])),
    })
}

/// The events of one document (see the module docs for the shapes accepted).
pub fn decode_events(doc: &Value) -> Result<Vec<K8sEvent>, String> {
    // Fluent Bit's output record: [ts, record]
    if let Some([_, rec]) = doc.as_array().map(Vec::as_slice) {
        return decode_events(rec);
    }
    if let Some(items) = doc.get("items").and_then(Value::as_array) {
        return items
            .iter()
            .enumerate()
            .map(|(i, it)| event_from_object(it).map_err(|e| format!("items[{i}]: {e}")))
            .collect();
    }
    if let Some(obj) = doc.get("object").filter(|_| doc.get("type").is_some()) {
        return Ok(vec![event_from_object(obj)?]);
    }
    if doc.get("involvedObject").is_some() || doc.get("reason").is_some() {
        return Ok(vec![event_from_object(doc)?]);
    }
    Err("not a Kubernetes Event, EventList or watch notification".into())
}

/// A health signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    OomKill,
    CrashLoopBackOff,
    LivenessFailure,
    ReadinessFailure,
    Eviction,
    FailedScheduling,
    ImagePullFailure,
    NodeNotReady,
}

/// The signals in table column order, with their column names.
pub const SIGNALS: &[(Signal, &str)] = &[
    (Signal::OomKill, "oom_kills"),
    (Signal::CrashLoopBackOff, "crashloop_backoffs"),
    (Signal::LivenessFailure, "liveness_failures"),
    (Signal::ReadinessFailure, "readiness_failures"),
    (Signal::Eviction, "evictions"),
    (Signal::FailedScheduling, "failed_scheduling"),
    (Signal::ImagePullFailure, "image_pull_failures"),
    (Signal::NodeNotReady, "node_not_ready"),
];

/// The health signal an event reports, if any (the table in the module docs).
pub fn classify(reason: &str, message: &str) -> Option<Signal> {
    let m = message.trim_start();
    match reason {
        "OOMKilling" | "SystemOOM" => Some(Signal::OomKill),
        "CrashLoopBackOff" => Some(Signal::CrashLoopBackOff),
        "BackOff" if m.starts_with("Back-off pulling image") => Some(Signal::ImagePullFailure),
        "BackOff" if m.starts_with("Back-off restarting failed container") => {
            Some(Signal::CrashLoopBackOff)
        }
        "Unhealthy" if m.starts_with("Readiness probe failed") => Some(Signal::ReadinessFailure),
        "Unhealthy"
            if m.starts_with("Liveness probe failed") || m.starts_with("Startup probe failed") =>
        {
            Some(Signal::LivenessFailure)
        }
        "Evicted" | "Evicting" | "TaintManagerEviction" => Some(Signal::Eviction),
        "FailedScheduling" => Some(Signal::FailedScheduling),
        "ErrImagePull" | "ImagePullBackOff" => Some(Signal::ImagePullFailure),
        "Failed" if m.starts_with("Failed to pull image") || m.contains("ErrImagePull") => {
            Some(Signal::ImagePullFailure)
        }
        "NodeNotReady" => Some(Signal::NodeNotReady),
        _ if m.contains("OOMKilled") => Some(Signal::OomKill),
        _ => None,
    }
}

fn is_hashlike(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The workload of an object: a Pod `name-<replicaset hash>-<5 chars>` or `name-<5 chars>`
/// (DaemonSet, Job) or `name-<ordinal>` (StatefulSet) belongs to `name`; a ReplicaSet
/// `name-<hash>` to `name`; anything else is its own workload.
pub fn workload_of(kind: Option<&str>, name: &str) -> String {
    let parts: Vec<&str> = name.split('-').collect();
    match kind {
        Some("Pod") if parts.len() >= 3 && is_hashlike(parts[parts.len() - 1], &[5]) => {
            let n = parts.len();
            if is_hashlike(parts[n - 2], &[6, 7, 8, 9, 10])
                && parts[n - 2].bytes().any(|b| b.is_ascii_digit())
            {
                parts[..n - 2].join("-")
            } else {
                parts[..n - 1].join("-")
            }
        }
        Some("Pod") if parts.len() >= 2 && is_hashlike(parts[parts.len() - 1], &[5]) => {
            parts[..parts.len() - 1].join("-")
        }
        Some("Pod")
            if parts.len() >= 2 && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit()) =>
        {
            parts[..parts.len() - 1].join("-")
        }
        Some("ReplicaSet")
            if parts.len() >= 2 && is_hashlike(parts[parts.len() - 1], &[6, 7, 8, 9, 10]) =>
        {
            parts[..parts.len() - 1].join("-")
        }
        _ => name.to_string(),
    }
}

/// A row of `k8s_health`: one hour × namespace × workload × node, signal counts in
/// [`SIGNALS`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    pub dt: NaiveDate,
    pub hour: i32,
    pub namespace: String,
    pub workload: String,
    pub node: String,
    pub counts: [i64; 8],
}

/// Count the signals of `events` (any order) falling on `day` (see the module docs).
pub fn health_rows(events: &[K8sEvent], day: NaiveDate) -> Vec<HealthRow> {
    let mut evs: Vec<&K8sEvent> = events.iter().filter(|e| e.ts.date_naive() == day).collect();
    evs.sort_by(|a, b| (&a.event_uid, a.count, a.ts).cmp(&(&b.event_uid, b.count, b.ts)));
    let mut last_count: HashMap<&str, i64> = HashMap::new();
    let mut out: BTreeMap<(i32, String, String, String), [i64; 8]> = BTreeMap::new();
    for e in evs {
        let occurrences = match last_count.get(e.event_uid.as_str()) {
            None => 1,
            Some(prev) => (e.count - prev).max(0),
        };
        last_count.insert(e.event_uid.as_str(), e.count);
        if occurrences == 0 {
            continue;
        }
        let Some(sig) = classify(
            e.reason.as_deref().unwrap_or(""),
            e.message.as_deref().unwrap_or(""),
        ) else {
            continue;
        };
        let idx = SIGNALS.iter().position(|(s, _)| *s == sig).unwrap_or(0);
        let workload = match (&e.object_kind, &e.object_name) {
            (_, None) => String::new(),
            (Some(k), Some(n)) if k == "Node" => format!("node/{n}"),
            (k, Some(n)) => workload_of(k.as_deref(), n),
        };
        let key = (
            e.ts.hour() as i32,
            e.namespace.clone().unwrap_or_default(),
            workload,
            e.node.clone().unwrap_or_default(),
        );
        out.entry(key).or_insert([0; 8])[idx] += occurrences;
    }
    out.into_iter()
        .map(|((hour, namespace, workload, node), counts)| HealthRow {
            dt: day,
            hour,
            namespace,
            workload,
            node,
            counts,
        })
        .collect()
}

// ---------------------------------------------------------------- tables

/// Append decoded events to `<lake>/k8s_events` (partitioned by `dt`); returns the rows written.
pub async fn load_events(lake_url: &str, events: &[K8sEvent]) -> Result<usize, InsightsError> {
    let root = loglake_lake::location_url(lake_url, true)?;
    let url = crate::lake::table_url(&root, EVENTS_TABLE)?;
    let table =
        loglake_lake::open_table(EVENTS_TABLE, &url, &crate::lake::storage_options()).await?;
    table
        .write(vec![events_batch(events)?])
        .with_partition_columns(["dt"])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .map_err(|e| InsightsError::Delta {
            table: EVENTS_TABLE.into(),
            source: e,
        })?;
    Ok(events.len())
}

/// Name of the decoded events table the nightly stage reads.
pub const EVENTS_TABLE: &str = "k8s_events";
/// Name of the health table it writes.
pub const HEALTH_TABLE: &str = "k8s_health";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of the `k8s_events` table ([`events_batch`]).
pub fn events_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("ts", ts_type(), false),
        Field::new("event_uid", DataType::Utf8, false),
        s("namespace"),
        s("object_kind"),
        s("object_name"),
        s("reason"),
        s("message"),
        s("type"),
        Field::new("count", DataType::Int64, false),
        s("node"),
        s("component"),
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
    ]))
}

fn epoch_days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

/// Decoded events as a batch of [`events_schema`].
pub fn events_batch(events: &[K8sEvent]) -> Result<RecordBatch, InsightsError> {
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut s: Vec<StringBuilder> = (0..9).map(|_| StringBuilder::new()).collect();
    let mut count = Int64Builder::new();
    let mut dt = Date32Builder::new();
    let mut hour = Int32Builder::new();
    for e in events {
        ts.append_value(e.ts.timestamp_micros());
        s[0].append_value(&e.event_uid);
        for (b, v) in s[1..7].iter_mut().zip([
            &e.namespace,
            &e.object_kind,
            &e.object_name,
            &e.reason,
            &e.message,
            &e.event_type,
        ]) {
            b.append_option(v.as_deref());
        }
        count.append_value(e.count);
        s[7].append_option(e.node.as_deref());
        s[8].append_option(e.component.as_deref());
        dt.append_value(epoch_days(e.ts.date_naive()));
        hour.append_value(e.ts.hour() as i32);
    }
    let mut strs: Vec<ArrayRef> = s
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let component = strs
        .pop()
        .ok_or_else(|| InsightsError::Invalid("columns".into()))?;
    let node = strs
        .pop()
        .ok_or_else(|| InsightsError::Invalid("columns".into()))?;
    let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish())];
    cols.extend(strs);
    cols.push(Arc::new(count.finish()));
    cols.push(node);
    cols.push(component);
    cols.push(Arc::new(dt.finish()));
    cols.push(Arc::new(hour.finish()));
    RecordBatch::try_new(events_schema(), cols)
        .map_err(|e| InsightsError::Invalid(format!("k8s_events batch: {e}")))
}

/// Events back from batches of the `k8s_events` table (any string layout).
pub fn events_from_batch(b: &RecordBatch) -> Result<Vec<K8sEvent>, InsightsError> {
    let bad = |e: String| InsightsError::Invalid(format!("{EVENTS_TABLE}: {e}"));
    let col = |n: &str| -> Result<ArrayRef, InsightsError> {
        let c = b
            .column_by_name(n)
            .ok_or_else(|| bad(format!("no column {n}")))?;
        let t = match n {
            "ts" => ts_type(),
            "count" => DataType::Int64,
            _ => DataType::Utf8,
        };
        arrow::compute::cast(c, &t).map_err(|e| bad(format!("{n}: {e}")))
    };
    let ts = col("ts")?;
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    let count = col("count")?;
    let count = count.as_primitive::<arrow::datatypes::Int64Type>();
    let names = [
        "event_uid",
        "namespace",
        "object_kind",
        "object_name",
        "reason",
        "message",
        "type",
        "node",
        "component",
    ];
    let strs: Vec<ArrayRef> = names.iter().map(|n| col(n)).collect::<Result<_, _>>()?;
    let get = |c: usize, i: usize| -> Option<String> {
        let a = strs[c].as_string::<i32>();
        a.is_valid(i).then(|| a.value(i).to_string())
    };
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let Some(t) = DateTime::from_timestamp_micros(ts.value(i)) else {
            return Err(bad(format!("row {i}: timestamp out of range")));
        };
        out.push(K8sEvent {
            ts: t,
            event_uid: get(0, i).unwrap_or_default(),
            namespace: get(1, i),
            object_kind: get(2, i),
            object_name: get(3, i),
            reason: get(4, i),
            message: get(5, i),
            event_type: get(6, i),
            count: if count.is_valid(i) { count.value(i) } else { 1 },
            node: get(7, i),
            component: get(8, i),
        });
    }
    Ok(out)
}

/// The schema of `k8s_health`.
pub fn health_schema() -> SchemaRef {
    let mut f = vec![
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
        Field::new("namespace", DataType::Utf8, false),
        Field::new("workload", DataType::Utf8, false),
        Field::new("node", DataType::Utf8, false),
    ];
    for (_, name) in SIGNALS {
        f.push(Field::new(*name, DataType::Int64, false));
    }
    Arc::new(Schema::new(f))
}

fn health_batch(rows: &[HealthRow]) -> Result<RecordBatch, InsightsError> {
    let mut dt = Date32Builder::new();
    let mut hour = Int32Builder::new();
    let mut s = [
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    ];
    let mut c: Vec<Int64Builder> = SIGNALS.iter().map(|_| Int64Builder::new()).collect();
    for r in rows {
        dt.append_value(epoch_days(r.dt));
        hour.append_value(r.hour);
        s[0].append_value(&r.namespace);
        s[1].append_value(&r.workload);
        s[2].append_value(&r.node);
        for (b, v) in c.iter_mut().zip(r.counts) {
            b.append_value(v);
        }
    }
    let mut cols: Vec<ArrayRef> = vec![Arc::new(dt.finish()), Arc::new(hour.finish())];
    for mut b in s {
        cols.push(Arc::new(b.finish()));
    }
    for mut b in c {
        cols.push(Arc::new(b.finish()));
    }
    RecordBatch::try_new(health_schema(), cols)
        .map_err(|e| InsightsError::Invalid(format!("k8s_health batch: {e}")))
}

/// What [`derive_k8s_health_for_day`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthMetrics {
    pub day: NaiveDate,
    pub events: usize,
    pub rows: usize,
    /// Total per signal column name.
    pub totals: BTreeMap<String, i64>,
}

/// The nightly stage: count `day`'s signals of the lake's `k8s_events` table into
/// `<lake>/k8s_health`, replacing that day's partition.
pub async fn derive_k8s_health_for_day(
    lake_url: &str,
    day: NaiveDate,
) -> Result<HealthMetrics, InsightsError> {
    let lake = crate::lake::LakeSession::open(lake_url).await?;
    if !lake.has_table(EVENTS_TABLE) {
        return Err(InsightsError::Invalid(format!(
            "no {EVENTS_TABLE} table under {}",
            lake.root
        )));
    }
    // an event aggregated across midnight counts 1 on its first record of this day
    let sql = format!(
        "SELECT * FROM {EVENTS_TABLE} WHERE dt = DATE '{day}' ORDER BY event_uid, count, ts"
    );
    let mut events = Vec::new();
    for b in lake.query(&sql).await? {
        events.extend(events_from_batch(&b)?);
    }
    let rows = health_rows(&events, day);
    let mut totals = BTreeMap::new();
    for (i, (_, name)) in SIGNALS.iter().enumerate() {
        totals.insert(name.to_string(), rows.iter().map(|r| r.counts[i]).sum());
    }
    let batch = health_batch(&rows)?;
    crate::lake::replace_day(&lake.root, HEALTH_TABLE, batch, day).await?;
    Ok(HealthMetrics {
        day,
        events: events.len(),
        rows: rows.len(),
        totals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_from_reasons_and_messages() {
        assert_eq!(
            classify(
                "BackOff",
                "Back-off restarting failed container app in pod x"
            ),
            Some(Signal::CrashLoopBackOff)
        );
        assert_eq!(
            classify("BackOff", "Back-off pulling image \"x:1\""),
            Some(Signal::ImagePullFailure)
        );
        assert_eq!(
            classify(
                "Unhealthy",
                "Liveness probe failed: HTTP probe failed with statuscode: 500"
            ),
            Some(Signal::LivenessFailure)
        );
        assert_eq!(
            classify("Unhealthy", "Readiness probe failed: connection refused"),
            Some(Signal::ReadinessFailure)
        );
        assert_eq!(
            classify("Failed", "Failed to pull image \"x\": not found"),
            Some(Signal::ImagePullFailure)
        );
        assert_eq!(classify("Failed", "Error: container create failed"), None);
        assert_eq!(
            classify(
                "Killing",
                "Container app failed liveness probe, will be restarted"
            ),
            None
        );
        assert_eq!(classify("Started", "Started container app"), None);
        assert_eq!(
            classify("Evicted", "The node was low on resource: memory."),
            Some(Signal::Eviction)
        );
        assert_eq!(
            classify("NodeNotReady", "Node n1 status is now: NodeNotReady"),
            Some(Signal::NodeNotReady)
        );
        assert_eq!(
            classify(
                "OOMKilling",
                "Memory cgroup out of memory: Killed process 123"
            ),
            Some(Signal::OomKill)
        );
    }

    #[test]
    fn workloads_from_pod_names() {
        assert_eq!(
            workload_of(Some("Pod"), "fluent-bit-78945dccd8-2g7qg"),
            "fluent-bit"
        );
        assert_eq!(
            workload_of(Some("Pod"), "node-exporter-x7k2p"),
            "node-exporter"
        );
        assert_eq!(workload_of(Some("Pod"), "kafka-2"), "kafka");
        assert_eq!(workload_of(Some("ReplicaSet"), "web-7d9f8c6b5"), "web");
        assert_eq!(workload_of(Some("Deployment"), "web"), "web");
    }

    #[test]
    fn repeated_records_of_one_event_count_its_growth_once() {
        let day = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let t = |h: u32| day.and_hms_opt(h, 0, 0).unwrap().and_utc();
        let e = |count: i64, h: u32| K8sEvent {
            ts: t(h),
            event_uid: "u1".into(),
            namespace: Some("shop".into()),
            object_kind: Some("Pod".into()),
            object_name: Some("web-7d9f8c6b5-abcde".into()),
            reason: Some("BackOff".into()),
            message: Some("Back-off restarting failed container".into()),
            event_type: Some("Warning".into()),
            count,
            node: Some("n1".into()),
            component: Some("kubelet".into()),
        };
        // seen at count 3 (1), again at 3 (0), then 7 (+4)
        let rows = health_rows(&[e(3, 1), e(3, 1), e(7, 2)], day);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].hour, rows[0].counts[1]), (1, 1));
        assert_eq!(
            (rows[1].hour, rows[1].counts[1], rows[1].workload.as_str()),
            (2, 4, "web")
        );
        let b = events_batch(&[e(3, 1)]).unwrap();
        assert_eq!(events_from_batch(&b).unwrap(), vec![e(3, 1)]);
    }
}
