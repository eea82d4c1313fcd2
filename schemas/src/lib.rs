//! # loglake-schemas
//!
//! The contract every other part of loglake builds on: the Arrow schemas of loglake's tables,
//! the decoders that turn what real Kubernetes log collectors write to Kafka into rows of those
//! schemas, and the declarative table definitions (`schemas/tables/*.toml`).
//!
//! ## Portability rules (all schemas)
//! Readable by Spark, Hive, Trino, DuckDB and Delta readers without surprises: timestamps are
//! `Timestamp(Microsecond, "UTC")`, no unsigned integers, no nanosecond types, no
//! `Utf8View`/`Dictionary` in the schema. Low-cardinality columns (`cluster`, `namespace`,
//! `container`, `node`, `app`, `service`, `stream`, `level`, `kafka_topic`, `verb`, `method`, …)
//! are plain `Utf8`: the Parquet writer's dictionary encoding (on by default) stores them as
//! dictionaries on disk, which every reader understands, whereas an Arrow `Dictionary` type in
//! the table schema is rejected by Delta/Spark. Maps are `Map<Utf8, Utf8>` with the
//! Parquet/Delta entry names `key_value`/`key`/`value`; lists use the element name `element`.
//!
//! ## `container` table ([`TableKind::Container`]) — every decoder but `k8s-audit` and `access`
//! | column | type | meaning |
//! |---|---|---|
//! | `ts` | timestamp µs UTC, not null | event time from the envelope (or the CRI/docker line); when the record has none, the Kafka timestamp (`attrs["loglake.ts_source"]="kafka"`), else the decode time (`"ingest"`) |
//! | `ts_nanos` | Int16 | the nanoseconds within `ts`'s microsecond (0–999) when the time source wrote nanoseconds (CRI and docker lines, Fluent Bit's `time`, OTLP, integer nanosecond epochs), else null: `ts` + `ts_nanos` is the source's time to the nanosecond. A second time field of the envelope that names the same instant as `ts` (Fluent Bit's `time` beside `@timestamp`) is not repeated in `attrs`; one naming another instant is |
//! | `ingest_ts` | timestamp µs UTC, not null | when loglake decoded the record |
//! | `cluster` | Utf8 | cluster name from the envelope (`orchestrator.cluster.name`, `k8s.cluster.name`, `cluster`…), else [`DecoderOptions::cluster`] |
//! | `namespace` | Utf8 | Kubernetes namespace (envelope metadata, else the kubelet log file name) |
//! | `pod` | Utf8 | pod name |
//! | `container` | Utf8 | container name |
//! | `node` | Utf8 | node (host) name |
//! | `app` | Utf8 | from labels: `app.kubernetes.io/name`, else `app`, else `k8s-app` |
//! | `service` | Utf8 | `service.name` (OTLP), else labels `service`, else `app.kubernetes.io/instance` |
//! | `stream` | Utf8 | `stdout` / `stderr` |
//! | `level` | Utf8 | normalised to `trace`/`debug`/`info`/`warn`/`error`/`fatal` when recognised (other values kept lower-cased); from the envelope, else from JSON in the message, else detected in the first 160 bytes of the message |
//! | `message` | Utf8 | the log line; a trailing `\n`/`\r\n` is removed and CRLF line ends become LF |
//! | `trace_id`, `span_id` | Utf8 | hex ids when the record has them (OTLP fields, `trace_id`/`traceId`/`trace.id`) |
//! | `pod_uid` | Utf8 | pod UID (Fluent Bit `kubernetes.pod_id`, Vector `kubernetes.pod_uid`, Filebeat `kubernetes.pod.uid`, OTLP `k8s.pod.uid`, or the `/var/log/pods/<ns>_<pod>_<uid>/` path) |
//! | `container_id` | Utf8 | container runtime id (Fluent Bit `kubernetes.docker_id`, Vector `kubernetes.container_id`, Filebeat `container.id`, OTLP `container.id`, or the `/var/log/containers/…-<id>.log` path) |
//! | `image` | Utf8 | container image (`kubernetes.container_image`, Filebeat `container.image.name`, OTLP `container.image.name`) |
//! | `image_id` | Utf8 | image digest / id (Fluent Bit `kubernetes.container_hash`, Vector `kubernetes.container_image_id`, OTLP `container.image.id`) |
//! | `labels` | Map<Utf8,Utf8>, not null | pod labels |
//! | `attrs` | Map<Utf8,Utf8>, not null | every other field of the record, flattened (`a.b.c` keys, arrays as JSON text, numbers as written), so nothing is dropped; a message that is a JSON object stays whole in `message` (its level, trace and span ids fill those columns), and its fields are copied here only with the table option `json_message_attrs = true` (not overriding envelope keys); loglake's own flags under `loglake.*` (below) |
//! | `kafka_topic`, `kafka_partition`, `kafka_offset` | Utf8, Int32, Int64, not null | source coordinates; for a reassembled CRI/docker line, the offset of its final fragment |
//! | `dt`, `hour` | Date32, Int32, not null | partition columns: UTC date and hour of `ts` |
//!
//! `loglake.*` keys in `attrs`: `loglake.ts_source` (`kafka`/`ingest` when `ts` is not the event
//! time), `loglake.invalid_utf8` (`true`), `loglake.fragment_offsets` (comma-separated offsets of
//! the earlier fragments of a reassembled line), `loglake.partial` (`true` on a line flushed
//! before its final fragment arrived or cut at [`DecoderOptions::max_partial_bytes`]).
//!
//! ## `k8s_audit` table ([`TableKind::K8sAudit`]) — decoder `k8s-audit`
//! | column | type | meaning |
//! |---|---|---|
//! | `ts` | timestamp, not null | `stageTimestamp`, else `requestReceivedTimestamp`, else `timestamp`, else the Kafka timestamp (flagged as above) |
//! | `ingest_ts`, `cluster` | | as in `container` |
//! | `audit_id` | Utf8 | `auditID` |
//! | `api_version` | Utf8 | `apiVersion`; null when the producer stripped it (accepted) |
//! | `level`, `stage`, `verb`, `request_uri` | Utf8 | `level` (`Metadata`, `Request`, `RequestResponse`), `stage`, `verb`, `requestURI` |
//! | `user`, `user_uid` | Utf8 | `user.username`, `user.uid` |
//! | `user_groups` | List<Utf8> | `user.groups` |
//! | `impersonated_user` | Utf8 | `impersonatedUser.username` |
//! | `source_ips` | List<Utf8> | `sourceIPs` |
//! | `user_agent` | Utf8 | `userAgent` |
//! | `object_resource`, `object_subresource`, `object_namespace`, `object_name`, `object_api_group`, `object_api_version` | Utf8 | `objectRef.*` |
//! | `response_code` | Int32 | `responseStatus.code` |
//! | `response_status` | Utf8 | `responseStatus.status`, else `.reason`, else `.message` |
//! | `request_received_ts`, `stage_ts` | timestamp | `requestReceivedTimestamp`, `stageTimestamp` |
//! | `annotations` | Map<Utf8,Utf8>, not null | `annotations` |
//! | `request_object`, `response_object` | Utf8 | `requestObject` / `responseObject` as JSON text |
//! | `attrs` | Map<Utf8,Utf8>, not null | every other field, flattened |
//! | `kafka_*`, `dt`, `hour` | | as in `container` |
//!
//! ## `access` table ([`TableKind::Access`]) — decoder `access`
//! | column | type | meaning |
//! |---|---|---|
//! | `ts` | timestamp, not null | `[time_local]` of the line (its zone honoured) |
//! | `ingest_ts`, `cluster`, `namespace`, `pod`, `container` | | as in `container` (from a JSON envelope when there is one) |
//! | `remote_addr` | Utf8 | the client address nginx/Apache logged (the last address before `ident user`) |
//! | `remote_user` | Utf8 | the authenticated user (`-` → null) |
//! | `method`, `path`, `protocol` | Utf8 | from the request line; null when the request is empty or malformed |
//! | `status` | Int32 | HTTP status |
//! | `bytes_sent` | Int64 | body bytes (`-` → 0) |
//! | `referer`, `user_agent` | Utf8 | `-` → null |
//! | `request_time` | Float64 | seconds, when the line carries it (`rt=…`, `request_time=…`, or a bare number after the user agent) |
//! | `x_forwarded_for` | Utf8 | the address chain logged before `remote_addr`, or the quoted field after the user agent |
//! | `request` | Utf8 | the raw request line, only when it could not be split into method/path/protocol |
//! | `attrs` | Map<Utf8,Utf8>, not null | extra fields and envelope keys |
//! | `kafka_*`, `dt`, `hour` | | as in `container` |
//!
//! ## `dead_letter` table ([`TableKind::DeadLetter`]) — written by the archiver
//! `raw` (Binary: the payload as received), `error` (Utf8: the [`RecordError::reason`]),
//! `decoder` (Utf8), `kafka_topic`, `kafka_partition`, `kafka_offset`, `kafka_timestamp`
//! (timestamp, nullable), `ingest_ts`, `loglake_version` (Utf8), `dt`, `hour` (of the Kafka
//! timestamp, else the ingest time).
//!
//! ## Decoders
//! [`decoder_for`] builds one by name ([`DECODER_NAMES`]): `fluentbit`, `filebeat`, `vector`,
//! `ilogtail`, `cri`, `docker`, `k8s-audit`, `access`, `otlp-proto`, `otlp-json`. Each turns a
//! slice of [`RawRecord`]s into a [`DecodeOutput`]: a batch and per-record [`RecordError`]s. One
//! bad record never fails a batch, and no input makes a decoder panic (each has a fuzz target in
//! `schemas/fuzz`). Every input record becomes exactly one row, or one error, or (`cri`,
//! `docker` only) is buffered as a partial fragment and later folded into one row; `otlp-*`
//! records are the exception in the other direction: one Kafka record carries any number of log
//! records, each becoming one row with the Kafka record's offset (an empty request yields none).
//!
//! ## Invalid UTF-8: lossy decode with a flag, not a dead letter
//! A payload that is not valid UTF-8 is decoded with `String::from_utf8_lossy` (each bad sequence
//! becomes U+FFFD) and the row carries `attrs["loglake.invalid_utf8"] = "true"`; a JSON `\uD800`
//! lone surrogate is treated the same way. Why: the bad bytes are nearly always a few bytes of a
//! legacy encoding or a cut multi-byte character inside a long, otherwise useful line (see
//! lnav's `logfile_invalid_utf8.0`, a CRI partial split mid-character). Dead-lettering would hide
//! the whole line from queries over a cosmetic defect, while the flag keeps it findable
//! (`WHERE attrs['loglake.invalid_utf8'] = 'true'`). The dead-letter table is kept for records
//! that cannot be given a structure at all (not JSON, not a CRI line, …). For CRI lines the
//! fragments are concatenated as bytes first, so a character split across `P` fragments is
//! reassembled correctly.

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod access;
mod audit;
mod container;
mod error;
pub mod event_time;
pub mod r#gen;
pub mod json;
pub mod kubelet_path;
pub mod level;
mod lines;
mod otlp;
mod schema;
mod tables;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

pub use error::SchemaError;
pub use schema::{TableKind, string_list_type, string_map_type, table_schema, ts_type};
pub use tables::{
    DEFAULT_TARGET_FILE_SIZE_BYTES, TableDef, check_partition_by, load_table_dir, load_table_file,
    parse_table_def, partition_column_candidates,
};
pub use tables::{RedactEntry, RedactRule, RouteDef};

/// The crate version, for the dead-letter table's `loglake_version`.
pub const LOGLAKE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// All decoder names, as used by `--decoder` and by table files.
pub const DECODER_NAMES: [&str; 10] = [
    "fluentbit",
    "filebeat",
    "vector",
    "ilogtail",
    "cri",
    "docker",
    "k8s-audit",
    "access",
    "otlp-proto",
    "otlp-json",
];

/// One Kafka record, borrowed from the consumer's message (no copy).
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub payload: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// The Kafka timestamp, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl<'a> RawRecord<'a> {
    /// A record with only a payload and coordinates (handy in tests and tools).
    pub fn new(topic: &'a str, partition: i32, offset: i64, payload: &'a [u8]) -> Self {
        RawRecord {
            payload: Some(payload),
            key: None,
            headers: &[],
            timestamp_ms: None,
            topic,
            partition,
            offset,
        }
    }

    /// The first header with this name (case-insensitive) that has a value.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(k, v)| v.is_some() && k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| *v)
    }
}

/// Why one record did not become a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Position of the record in the slice given to [`Decoder::decode`] (for errors returned by
    /// [`Decoder::flush`]: 0).
    pub index: usize,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

impl RecordError {
    pub(crate) fn new(index: usize, rec: &RawRecord<'_>, reason: impl Into<String>) -> Self {
        RecordError {
            index,
            topic: rec.topic.to_owned(),
            partition: rec.partition,
            offset: rec.offset,
            reason: reason.into(),
        }
    }
}

/// The result of decoding a slice of records.
#[derive(Debug, Clone)]
pub struct DecodeOutput {
    pub batch: RecordBatch,
    pub errors: Vec<RecordError>,
}

/// Options shared by all decoders.
#[derive(Debug, Clone)]
pub struct DecoderOptions {
    /// Cluster name for records whose envelope does not carry one.
    pub cluster: Option<String>,
    /// Kafka headers that may carry the kubelet log path (checked in order), for `cri`/`docker`.
    pub path_headers: Vec<String>,
    /// A partial CRI/docker line longer than this is emitted as it is (flagged `loglake.partial`).
    pub max_partial_bytes: usize,
    /// Look into a message that is a JSON object: its level, trace and span ids fill those
    /// columns when the envelope has none.
    pub parse_json_message: bool,
    /// Also copy the other fields of a JSON message into `attrs` (table option
    /// `json_message_attrs`, default off). They stay in `message`, whole, either way; copied, they
    /// are stored twice (12 % larger files on the archive bench's payload, BENCHMARKS.md).
    pub json_message_attrs: bool,
    /// `docker`: a record whose `log` lacks the trailing `\n` is a split-line fragment (to be
    /// joined with the next record of the same source and stream) only when `log` is at least
    /// this long. Docker's json-file driver splits lines at 16 KiB, so by default (16384) a short
    /// record without `\n` — a process's last output without a newline — is a complete line and
    /// is not held back; 0 joins every record without `\n` (Fluent Bit's `Docker_Mode`).
    pub docker_split_min_bytes: usize,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions {
            cluster: None,
            path_headers: ["path", "file", "filename", "log.file.path", "log_path"]
                .map(String::from)
                .to_vec(),
            max_partial_bytes: 1 << 20,
            parse_json_message: true,
            json_message_attrs: false,
            docker_split_min_bytes: 16 * 1024,
        }
    }
}

/// A decoder: Kafka records in, a [`RecordBatch`] of its table's schema out.
pub trait Decoder: Send {
    /// Its name (one of [`DECODER_NAMES`]).
    fn name(&self) -> &'static str;
    /// The schema of the batches it returns.
    fn schema(&self) -> SchemaRef;
    /// Decodes a slice of records. Never panics, never fails as a whole.
    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput;
    /// The lowest offset still buffered (as a partial line) for this topic/partition: the
    /// archiver must not commit at or past it.
    fn pending_min_offset(&self, _topic: &str, _partition: i32) -> Option<i64> {
        None
    }
    /// Emits everything buffered (e.g. on shutdown or partition revocation).
    fn flush(&mut self) -> DecodeOutput {
        DecodeOutput {
            batch: RecordBatch::new_empty(self.schema()),
            errors: Vec::new(),
        }
    }
}

/// Builds a decoder by name.
pub fn decoder_for(name: &str, opts: &DecoderOptions) -> Result<Box<dyn Decoder>, SchemaError> {
    use container::{JsonDecoder, JsonFlavor};
    let o = opts.clone();
    Ok(match name {
        "fluentbit" => Box::new(JsonDecoder::new(JsonFlavor::FluentBit, o)),
        "filebeat" => Box::new(JsonDecoder::new(JsonFlavor::Filebeat, o)),
        "vector" => Box::new(JsonDecoder::new(JsonFlavor::Vector, o)),
        "ilogtail" => Box::new(JsonDecoder::new(JsonFlavor::Ilogtail, o)),
        "cri" => Box::new(lines::LineDecoder::new(lines::LineFormat::Cri, o)),
        "docker" => Box::new(lines::LineDecoder::new(lines::LineFormat::Docker, o)),
        "k8s-audit" => Box::new(audit::AuditDecoder::new(o)),
        "access" => Box::new(access::AccessDecoder::new(o)),
        "otlp-proto" => Box::new(otlp::OtlpDecoder::new(otlp::OtlpEncoding::Proto, o)),
        "otlp-json" => Box::new(otlp::OtlpDecoder::new(otlp::OtlpEncoding::Json, o)),
        other => {
            return Err(SchemaError::UnknownDecoder {
                name: other.to_owned(),
                known: DECODER_NAMES.join(", "),
            });
        }
    })
}

/// Decodes each record's payload with `one` and collects its failures as [`RecordError`]s that
/// name the record (index, topic, partition, offset); a record without a payload (a tombstone)
/// is a failure too. The loop every decoder's [`Decoder::decode`] runs.
pub(crate) fn decode_each(
    records: &[RawRecord<'_>],
    mut one: impl FnMut(&RawRecord<'_>, &[u8]) -> Result<(), String>,
) -> Vec<RecordError> {
    let mut errors = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        let res = match rec.payload {
            Some(payload) => one(rec, payload),
            None => Err("empty payload (tombstone)".to_owned()),
        };
        if let Err(e) = res {
            errors.push(RecordError::new(i, rec, e));
        }
    }
    errors
}

/// Runs `f` on the payload as `&str`; invalid UTF-8 is decoded lossily and `f` is told so.
pub(crate) fn with_text<R>(payload: &[u8], f: impl FnOnce(&str, bool) -> R) -> R {
    match std::str::from_utf8(payload) {
        Ok(s) => f(s, false),
        Err(_) => {
            let owned = String::from_utf8_lossy(payload);
            f(&owned, true)
        }
    }
}

/// The current time in UTC microseconds.
pub(crate) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
