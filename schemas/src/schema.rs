//! Arrow schemas of loglake's tables. See the crate docs for the meaning of every column.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The kinds of table loglake writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Container / application logs (all decoders but `k8s-audit` and `access`).
    Container,
    /// Kubernetes audit events (`k8s-audit`).
    K8sAudit,
    /// HTTP access logs (`access`).
    Access,
    /// Records no decoder could turn into a row (written by the archiver).
    DeadLetter,
}

impl TableKind {
    pub const ALL: [TableKind; 4] = [
        TableKind::Container,
        TableKind::K8sAudit,
        TableKind::Access,
        TableKind::DeadLetter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Container => "container",
            TableKind::K8sAudit => "k8s_audit",
            TableKind::Access => "access",
            TableKind::DeadLetter => "dead_letter",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The table kind a decoder writes.
    pub fn for_decoder(decoder: &str) -> Option<Self> {
        match decoder {
            "k8s-audit" => Some(TableKind::K8sAudit),
            "access" => Some(TableKind::Access),
            d if crate::DECODER_NAMES.contains(&d) => Some(TableKind::Container),
            _ => None,
        }
    }
}

/// `Timestamp(Microsecond, "UTC")`.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` with Parquet/Delta's entry names (`key_value`, `key`, `value`).
pub fn string_map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

/// `List<Utf8>` with the element name Parquet/Delta use.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn tail_fields() -> Vec<Field> {
    vec![
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
    ]
}

static CONTAINER: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new("ts", ts_type(), false),
        Field::new("ts_nanos", DataType::Int16, true),
        Field::new("ingest_ts", ts_type(), false),
        utf8("cluster"),
        utf8("namespace"),
        utf8("pod"),
        utf8("container"),
        utf8("node"),
        utf8("app"),
        utf8("service"),
        utf8("stream"),
        utf8("level"),
        utf8("message"),
        utf8("trace_id"),
        utf8("span_id"),
        utf8("pod_uid"),
        utf8("container_id"),
        utf8("image"),
        utf8("image_id"),
        Field::new("labels", string_map_type(), false),
        Field::new("attrs", string_map_type(), false),
    ];
    f.extend(tail_fields());
    Arc::new(Schema::new(f))
});

static AUDIT: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new("ts", ts_type(), false),
        Field::new("ingest_ts", ts_type(), false),
        utf8("cluster"),
        utf8("audit_id"),
        utf8("api_version"),
        utf8("level"),
        utf8("stage"),
        utf8("verb"),
        utf8("request_uri"),
        utf8("user"),
        utf8("user_uid"),
        Field::new("user_groups", string_list_type(), true),
        utf8("impersonated_user"),
        Field::new("source_ips", string_list_type(), true),
        utf8("user_agent"),
        utf8("object_resource"),
        utf8("object_subresource"),
        utf8("object_namespace"),
        utf8("object_name"),
        utf8("object_api_group"),
        utf8("object_api_version"),
        Field::new("response_code", DataType::Int32, true),
        utf8("response_status"),
        Field::new("request_received_ts", ts_type(), true),
        Field::new("stage_ts", ts_type(), true),
        Field::new("annotations", string_map_type(), false),
        utf8("request_object"),
        utf8("response_object"),
        Field::new("attrs", string_map_type(), false),
    ];
    f.extend(tail_fields());
    Arc::new(Schema::new(f))
});

static ACCESS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new("ts", ts_type(), false),
        Field::new("ingest_ts", ts_type(), false),
        utf8("cluster"),
        utf8("namespace"),
        utf8("pod"),
        utf8("container"),
        utf8("remote_addr"),
        utf8("remote_user"),
        utf8("method"),
        utf8("path"),
        utf8("protocol"),
        Field::new("status", DataType::Int32, true),
        Field::new("bytes_sent", DataType::Int64, true),
        utf8("referer"),
        utf8("user_agent"),
        Field::new("request_time", DataType::Float64, true),
        utf8("x_forwarded_for"),
        utf8("request"),
        Field::new("attrs", string_map_type(), false),
    ];
    f.extend(tail_fields());
    Arc::new(Schema::new(f))
});

static DEAD_LETTER: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("raw", DataType::Binary, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("decoder", DataType::Utf8, true),
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts_type(), true),
        Field::new("ingest_ts", ts_type(), false),
        Field::new("loglake_version", DataType::Utf8, false),
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
    ]))
});

/// The Arrow schema of a table kind.
pub fn table_schema(kind: TableKind) -> SchemaRef {
    match kind {
        TableKind::Container => CONTAINER.clone(),
        TableKind::K8sAudit => AUDIT.clone(),
        TableKind::Access => ACCESS.clone(),
        TableKind::DeadLetter => DEAD_LETTER.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portability rules: no unsigned ints, no nanosecond or view/dictionary types,
    /// microsecond UTC timestamps, and the common Kafka/partition tail.
    #[test]
    fn schemas_are_portable() {
        fn check(dt: &DataType, col: &str) {
            match dt {
                DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                    panic!("{col}: unsigned")
                }
                DataType::Utf8View
                | DataType::BinaryView
                | DataType::Dictionary(..)
                | DataType::LargeUtf8 => {
                    panic!("{col}: {dt}")
                }
                DataType::Timestamp(u, tz) => {
                    assert_eq!(*u, TimeUnit::Microsecond, "{col}");
                    assert_eq!(tz.as_deref(), Some("UTC"), "{col}");
                }
                DataType::Map(f, _) | DataType::List(f) => check(f.data_type(), col),
                DataType::Struct(fs) => fs.iter().for_each(|f| check(f.data_type(), col)),
                _ => {}
            }
        }
        for kind in TableKind::ALL {
            let s = table_schema(kind);
            for f in s.fields() {
                check(f.data_type(), f.name());
            }
            for (name, dt) in [
                ("kafka_topic", DataType::Utf8),
                ("kafka_partition", DataType::Int32),
                ("kafka_offset", DataType::Int64),
                ("ingest_ts", ts_type()),
                ("dt", DataType::Date32),
                ("hour", DataType::Int32),
            ] {
                assert_eq!(
                    s.field_with_name(name).map(|f| f.data_type().clone()).ok(),
                    Some(dt),
                    "{kind:?}.{name}"
                );
            }
        }
    }
}
