//! What a run is given and what it reports: the tables to write ([`TableTarget`]), the resolved
//! run configuration ([`ArchiveConfig`]) and the run report ([`ArchiveReport`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loglake_schemas::{DecoderOptions, decoder_for};
use url::Url;

use crate::error::ArchiveError;
use crate::etl::{Etl, EtlSpec};
use crate::metrics::ArchiverMetrics;
use crate::writer::RollPolicy;

/// One table the archiver writes.
#[derive(Debug, Clone)]
pub struct TableTarget {
    pub name: String,
    pub url: Url,
    pub topics: Vec<String>,
    pub decoder: String,
    pub partition_by: Vec<String>,
    pub bloom_filter_columns: Vec<String>,
    /// Roll this table's files at this size instead of the run's `--target-file-size` (the
    /// table definition's `target_file_size_bytes`; see `RollPolicy::for_table`).
    pub target_file_bytes: Option<u64>,
    /// Copy the fields of JSON messages into `attrs` too (the table option of that name).
    pub json_message_attrs: bool,
    /// Archive-time filter, derived columns and redactions ([`crate::etl`]).
    pub etl: EtlSpec,
    /// The table definition's file (for errors), if any.
    pub definition: Option<std::path::PathBuf>,
    /// The URL of each `[[route]]` table, in the definition's order (in the lake, next to it).
    pub route_urls: Vec<Url>,
}

impl TableTarget {
    /// The table a definition describes, at `url` (its route tables at `route_urls`), rolling
    /// at the definition's target file size.
    pub fn from_def(d: &loglake_schemas::TableDef, url: Url, route_urls: Vec<Url>) -> Self {
        TableTarget {
            name: d.name.clone(),
            url,
            topics: d.topics.clone(),
            decoder: d.decoder.clone(),
            partition_by: d.partition_by.clone(),
            bloom_filter_columns: d.bloom_filter_columns.clone(),
            target_file_bytes: Some(d.target_file_size_bytes),
            json_message_attrs: d.json_message_attrs,
            etl: EtlSpec::from_def(d),
            definition: d.source.clone(),
            route_urls,
        }
    }

    /// A decoder for this table: the archiver's decoder options with the table's own.
    pub fn decoder(
        &self,
        options: &DecoderOptions,
    ) -> Result<Box<dyn loglake_schemas::Decoder>, ArchiveError> {
        let options = DecoderOptions {
            json_message_attrs: self.json_message_attrs,
            ..options.clone()
        };
        Ok(decoder_for(&self.decoder, &options)?)
    }

    /// The table's compiled ETL (None without one); a definition that cannot work is a
    /// configuration error naming the table, the key and the reason.
    pub fn compile_etl(&self, options: &DecoderOptions) -> Result<Option<Arc<Etl>>, ArchiveError> {
        if self.etl.is_empty() {
            return Ok(None);
        }
        let schema = self.decoder(options)?.schema();
        Etl::compile(
            &self.name,
            self.definition.as_deref(),
            &self.etl,
            schema,
            &self.partition_by,
        )
        .map(|e| Some(Arc::new(e)))
        .map_err(|e| ArchiveError::Config(e.to_string()))
    }
}

/// Everything `loglake archive` needs, resolved from flags, environment and file.
#[derive(Clone)]
pub struct ArchiveConfig {
    pub brokers: String,
    pub group: String,
    /// Passed through to librdkafka (`-X key=value`).
    pub kafka_properties: Vec<(String, String)>,
    pub tables: Vec<TableTarget>,
    pub dlq: Option<Url>,
    pub until_end: bool,
    pub storage_options: HashMap<String, String>,
    pub decoder_options: DecoderOptions,
    pub policy: RollPolicy,
    /// Decode and write at most this many records at a time.
    pub batch_records: usize,
    /// … and at most this many payload bytes ([`default_poll_batch_bytes`]).
    pub batch_bytes: u64,
    /// Set to stop (SIGTERM): flush and commit, then return.
    pub shutdown: Arc<AtomicBool>,
    /// Static group membership (`group.instance.id`): a restarted member with the same id
    /// takes its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// No progress for this long: `--until-end` fails ([`ArchiveError::Stalled`]), continuous
    /// mode turns `/healthz` unhealthy ([`crate::watch`]).
    pub stall_timeout: Duration,
    /// How long a partition's watermark read may keep failing (retried) before the run fails.
    pub watermark_timeout: Duration,
    /// A row is *late* when its record reached Kafka more than this after the row's event time
    /// ([`count_late`](super::count_late)); late rows still go to their event-time partition and are counted.
    pub late_after: Duration,
    /// After SIGTERM/SIGINT, how long the flush and commit may take before the process exits
    /// without them (`loglake archive` only; see `run` in lib.rs).
    pub shutdown_timeout: Duration,
    pub metrics: Arc<ArchiverMetrics>,
}

impl std::fmt::Debug for ArchiveConfig {
    // Storage options and Kafka properties may hold credentials: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("instance_id", &self.instance_id)
            .field("tables", &self.tables)
            .field("dlq", &self.dlq)
            .field("until_end", &self.until_end)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ArchiveReport {
    pub records_in: u64,
    pub bytes_in: u64,
    pub rows_written: u64,
    /// Rows whose record reached Kafka more than `--late-after` after their event time.
    pub late_rows: u64,
    pub dead_letters: u64,
    /// Rows the archive-time filters dropped (committed: their offsets advanced).
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_filtered: u64,
    /// Redactions applied, per `table/pattern` (left out when none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redactions: BTreeMap<String, u64>,
    /// Records an archive-time expression failed on (also counted in `dead_letters`).
    #[serde(skip_serializing_if = "is_zero")]
    pub etl_failures: u64,
    /// Rows committed to route tables, per `table/route_table` (left out when none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rows_routed: BTreeMap<String, u64>,
    pub files: u64,
    pub commits: u64,
    pub conflicts: u64,
    pub rebalances: u64,
    /// (table, topic, partition) → next offset committed.
    pub offsets: BTreeMap<String, i64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The default payload bytes of one poll batch for a memory budget. A poll batch, its decoded
/// rows and their per-partition copies (≈ 3× its payload) are outside the budget, so they are
/// bounded in bytes too, not only in records (DESIGN.md, "Memory").
pub fn default_poll_batch_bytes(memory_budget: u64) -> u64 {
    (memory_budget / 8).clamp(1 << 20, POLL_BATCH_BYTES_CAP)
}

/// Upper end of [`default_poll_batch_bytes`].
pub const POLL_BATCH_BYTES_CAP: u64 = 32 << 20;

/// Default of `--shutdown-timeout`: below Kubernetes' default 30 s grace period, so the archiver
/// says why it stops before the kubelet's SIGKILL would.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// A table's default name: the last segment of its URL.
pub fn name_from_url(url: &Url) -> String {
    url.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("dead_letters")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_schemas::RawRecord;

    #[test]
    fn a_tables_decoder_copies_json_message_fields_into_attrs_only_when_the_table_asks() {
        use arrow::array::{Array, AsArray};
        let payload = br#"{"time":"2026-11-23T10:00:00Z","log":"{\"level\":\"warn\",\"msg\":\"slow\",\"user\":7}\n"}"#;
        let attrs_keys = |json_message_attrs: bool| -> (Vec<String>, Option<String>) {
            let target = TableTarget {
                name: "t".into(),
                url: Url::parse("file:///tmp/t").expect("url"),
                topics: vec!["t".into()],
                decoder: "fluentbit".into(),
                partition_by: vec!["dt".into(), "hour".into()],
                bloom_filter_columns: Vec::new(),
                target_file_bytes: None,
                json_message_attrs,
                etl: EtlSpec::default(),
                definition: None,
                route_urls: Vec::new(),
            };
            let mut d = target.decoder(&DecoderOptions::default()).expect("decoder");
            let out = d.decode(&[RawRecord::new("t", 0, 0, payload)]);
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            let b = &out.batch;
            let attrs = b.column_by_name("attrs").expect("attrs").as_map();
            let keys = attrs.keys().as_string::<i32>();
            let level = b.column_by_name("level").expect("level").as_string::<i32>();
            (
                keys.iter().flatten().map(str::to_owned).collect(),
                level.is_valid(0).then(|| level.value(0).to_owned()),
            )
        };
        assert_eq!(attrs_keys(false), (vec![], Some("warn".into())));
        assert_eq!(
            attrs_keys(true),
            (
                vec!["level".into(), "msg".into(), "user".into()],
                Some("warn".into())
            )
        );
    }
}
