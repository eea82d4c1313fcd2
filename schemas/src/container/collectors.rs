//! Each collector's field mapping into the container [`Row`]: which envelope field is the
//! message, the event time, a column, a label, or an attr.

use std::borrow::Cow;

use super::{Col, Row};
use crate::json::{JVal, join_path};

fn label_key<'a>(key: &Cow<'a, str>, prefix_len: usize) -> Cow<'a, str> {
    match key {
        Cow::Borrowed(s) => Cow::Borrowed(&s[prefix_len..]),
        Cow::Owned(s) => Cow::Owned(s[prefix_len..].to_owned()),
    }
}

/// Fluent Bit after its `kubernetes` filter (`log`, `stream`, `time`, `kubernetes.{pod_name,…}`).
pub(super) fn map_fluentbit<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, nl: bool) {
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
pub(super) fn map_filebeat<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, _nl: bool) {
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
pub(super) fn map_vector<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, _nl: bool) {
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
pub(super) fn map_ilogtail<'a>(row: &mut Row<'a>, path: &[Cow<'a, str>], v: JVal<'a>, _nl: bool) {
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
pub(super) type MapFn = for<'a> fn(&mut Row<'a>, &[Cow<'a, str>], JVal<'a>, bool);
/// Which leaves may be reported without their final `"\n"` (message candidates only).
pub(super) type NlFn = for<'a, 'b> fn(&'b [Cow<'a, str>]) -> bool;

/// Fluent Bit's message candidates: `log` nearly always ends with an escaped `\n`.
pub(super) fn fluentbit_nl(path: &[Cow<'_, str>]) -> bool {
    matches!(path, [k] if matches!(k.as_ref(), "log" | "message" | "msg"))
}

pub(super) fn no_nl(_: &[Cow<'_, str>]) -> bool {
    false
}
