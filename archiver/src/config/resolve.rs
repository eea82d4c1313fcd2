//! Resolution: flags (and their `LOGLAKE_*` variables, which clap merges into them) > file >
//! defaults, into the run configuration ([`ArchiveConfig`]), in small steps: the roll policy,
//! the poll batch, the timeouts, the tables of the single- or multi-table form.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loglake_lake::location_url;

/// A table's URL. A local folder is not created here: `Archiver::new` creates it, after the
/// broker preflight, so a run that fails its checks leaves nothing behind.
fn table_url(location: &str) -> Result<url::Url, loglake_lake::LakeError> {
    location_url(location, false)
}
use loglake_schemas::{
    DECODER_NAMES, DecoderOptions, RedactEntry, TableDef, TableKind, check_partition_by,
    load_table_dir,
};
use url::Url;

use super::{ArchiveArgs, FileConfig, parse_bytes, parse_duration, read_file_config};
use crate::archive::{ArchiveConfig, TableTarget};
use crate::error::ArchiveError;
use crate::etl::EtlSpec;
use crate::metrics::ArchiverMetrics;
use crate::writer::RollPolicy;

/// A duration setting: the flag (or its environment variable, which clap merges into it), else
/// the file's `key`, else `default`.
fn duration_setting(
    flag: Option<Duration>,
    file: Option<&str>,
    key: &str,
    default: Duration,
) -> Result<Duration, ArchiveError> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(s)) => parse_duration(s)
            .map_err(|e| ArchiveError::Config(format!("{key} in the config file: {e}"))),
        (None, None) => Ok(default),
    }
}

/// A [`duration_setting`] that must be at least a second (`flag` names it in the error).
fn timeout_setting(
    flag: Option<Duration>,
    file: Option<&str>,
    key: &str,
    default: Duration,
    flag_name: &str,
) -> Result<Duration, ArchiveError> {
    let d = duration_setting(flag, file, key, default)?;
    if d < Duration::from_secs(1) {
        return Err(ArchiveError::Config(format!(
            "{flag_name} {d:?} is below 1s"
        )));
    }
    Ok(d)
}

/// Route tables (`[[route]]`) are tables of the lake that only routes write: each named
/// [a-z][a-z0-9_]*, not a table the archiver also writes from its own topics, and the target of
/// one source table only (its schema is that table's).
pub(super) fn check_routes(defs: &[TableDef]) -> Result<(), ArchiveError> {
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for d in defs {
        let file = d
            .source
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        for (i, r) in d.route.iter().enumerate() {
            let bad = |reason: String| {
                ArchiveError::Config(format!("table `{}`{file}: `route[{i}]`: {reason}", d.name))
            };
            let name_ok = r.table.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || (i > 0 && (b.is_ascii_digit() || b == b'_'))
            });
            if r.table.is_empty() || !name_ok {
                return Err(bad(format!(
                    "table `{}` must match [a-z][a-z0-9_]*",
                    r.table
                )));
            }
            if d.route[..i].iter().any(|o| o.table == r.table) {
                return Err(bad(format!("`{}` is routed to twice", r.table)));
            }
            if defs.iter().any(|o| o.name == r.table) {
                return Err(bad(format!(
                    "`{}` is a table archived from its own topics; route to a table only routes write",
                    r.table
                )));
            }
            if let Some(other) = targets.insert(&r.table, &d.name)
                && other != d.name
            {
                return Err(bad(format!(
                    "`{}` is already the route table of `{other}`; one source table per route table",
                    r.table
                )));
            }
        }
    }
    Ok(())
}

/// The partition columns of the single-table form: `dt`, `hour`, then the `--partition-by`
/// columns; when those name `dt` or `hour` themselves, they are the whole list, in their order.
/// Validated against the schema of `decoder`'s table ([`check_partition_by`]).
pub fn single_table_partition_by(
    decoder: &str,
    columns: &[String],
) -> Result<Vec<String>, ArchiveError> {
    let kind = TableKind::for_decoder(decoder).ok_or_else(|| {
        ArchiveError::Config(format!(
            "unknown --decoder `{decoder}` (known: {})",
            DECODER_NAMES.join(", ")
        ))
    })?;
    let columns: Vec<String> = columns.iter().map(|c| c.trim().to_string()).collect();
    let flag = || {
        format!(
            "--partition-by (LOGLAKE_PARTITION_BY) `{}`",
            columns.join(",")
        )
    };
    if columns.iter().any(String::is_empty) {
        return Err(ArchiveError::Config(format!(
            "{}: empty column name",
            flag()
        )));
    }
    let partition_by: Vec<String> = if columns.iter().any(|c| c == "dt" || c == "hour") {
        columns.clone()
    } else {
        ["dt", "hour"]
            .into_iter()
            .map(String::from)
            .chain(columns.iter().cloned())
            .collect()
    };
    check_partition_by(kind, &partition_by)
        .map_err(|reason| ArchiveError::Config(format!("{}: {reason}", flag())))?;
    Ok(partition_by)
}

/// A byte-size setting: the flag (or its environment variable), else the file's value.
fn bytes_setting(flag: Option<u64>, file: &Option<String>) -> Result<Option<u64>, ArchiveError> {
    match (flag, file) {
        (Some(v), _) => Ok(Some(v)),
        (None, Some(s)) => parse_bytes(s).map(Some).map_err(ArchiveError::Config),
        _ => Ok(None),
    }
}

/// The timeouts of a run, resolved.
struct Timeouts {
    watermark: Duration,
    late_after: Duration,
    stall: Duration,
    shutdown: Duration,
}

impl ArchiveArgs {
    /// Resolves flags, environment, file and defaults into a run configuration.
    pub fn resolve(
        &self,
        shutdown: Arc<AtomicBool>,
        metrics: Arc<ArchiverMetrics>,
    ) -> Result<(ArchiveConfig, Option<SocketAddr>), ArchiveError> {
        let file: FileConfig = match &self.config {
            Some(p) => read_file_config(p)?,
            None => FileConfig::default(),
        };
        let brokers = self.brokers.clone().or(file.brokers.clone()).ok_or_else(|| {
            ArchiveError::Config("no Kafka brokers: pass --brokers, set LOGLAKE_BROKERS, or `brokers` in the config file".into())
        })?;
        let group = self
            .group
            .clone()
            .or(file.group.clone())
            .unwrap_or_else(|| "loglake-archiver".into());
        // AWS_S3_ALLOW_UNSAFE_RENAME / AWS_S3_LOCKING_PROVIDER are refused (DESIGN.md I1).
        let storage = loglake_lake::writer_storage_options(&file.storage.0)?;
        let (policy, target_file_size) = self.roll_policy(&file)?;
        let batch_bytes = self.poll_batch_bytes(&file, &policy)?;
        let timeouts = self.timeouts(&file)?;
        let tables = match &self.table {
            Some(table) => vec![self.single_table(table)?],
            None => self.multi_table(&file, target_file_size)?,
        };
        let dlq = match self.dlq_table.clone().or(file.dlq_table.clone()) {
            Some(u) => Some(table_url(&u)?),
            None => None,
        };
        let decoder_options = DecoderOptions {
            cluster: self.cluster.clone().or(file.cluster.clone()),
            ..DecoderOptions::default()
        };
        // Every ETL expression is parsed, typed and tried now: a bad one fails the start
        // (exit code 2), naming the table, the key and the reason.
        for t in &tables {
            t.compile_etl(&decoder_options)?;
        }
        let cfg = ArchiveConfig {
            brokers,
            group,
            kafka_properties: self.kafka_properties(&file),
            tables,
            dlq,
            until_end: self.until_end,
            storage_options: storage,
            decoder_options,
            policy,
            batch_records: 20_000,
            batch_bytes,
            shutdown,
            instance_id: self.instance_id(&file),
            stall_timeout: timeouts.stall,
            watermark_timeout: timeouts.watermark,
            late_after: timeouts.late_after,
            shutdown_timeout: timeouts.shutdown,
            metrics,
        };
        Ok((cfg, self.metrics_addr.or(file.metrics_addr)))
    }

    /// The roll policy, and the target file size when one was given: given (flag, environment
    /// or file), it applies to every table; otherwise each table definition's
    /// `target_file_size_bytes` does (`RollPolicy::for_table`).
    fn roll_policy(&self, file: &FileConfig) -> Result<(RollPolicy, Option<u64>), ArchiveError> {
        let mut policy = RollPolicy::default();
        let target_file_size = bytes_setting(self.target_file_size, &file.target_file_size)?;
        if let Some(v) = target_file_size {
            policy.target_file_bytes = v;
        }
        if let Some(v) = bytes_setting(self.memory_budget, &file.memory_budget)? {
            policy.memory_budget_bytes = v;
        }
        // Row groups no larger than a quarter of the budget, so one writer cannot hog it.
        policy.row_group_bytes = policy
            .row_group_bytes
            .min((policy.memory_budget_bytes / 4).max(1 << 20) as usize);
        match (self.roll_interval, &file.roll_interval) {
            (Some(d), _) => policy.max_file_age = d,
            (None, Some(s)) => {
                policy.max_file_age = parse_duration(s).map_err(ArchiveError::Config)?
            }
            _ => {}
        }
        Ok((policy, target_file_size))
    }

    /// Payload bytes of one poll batch: flag, file, or a share of the memory budget.
    fn poll_batch_bytes(
        &self,
        file: &FileConfig,
        policy: &RollPolicy,
    ) -> Result<u64, ArchiveError> {
        let batch_bytes = match (self.poll_batch_bytes, &file.poll_batch_bytes) {
            (Some(v), _) => v,
            (None, Some(s)) => parse_bytes(s).map_err(ArchiveError::Config)?,
            _ => crate::archive::default_poll_batch_bytes(policy.memory_budget_bytes),
        };
        if batch_bytes < 1 << 10 {
            return Err(ArchiveError::Config(format!(
                "--poll-batch-bytes {batch_bytes} is below 1KiB"
            )));
        }
        Ok(batch_bytes)
    }

    fn timeouts(&self, file: &FileConfig) -> Result<Timeouts, ArchiveError> {
        let watermark = timeout_setting(
            self.watermark_timeout,
            file.watermark_timeout.as_deref(),
            "watermark_timeout",
            crate::archive::DEFAULT_WATERMARK_TIMEOUT,
            "--watermark-timeout",
        )?;
        let late_after = duration_setting(
            self.late_after,
            file.late_after.as_deref(),
            "late_after",
            crate::archive::DEFAULT_LATE_AFTER,
        )?;
        let stall = timeout_setting(
            self.stall_timeout,
            file.stall_timeout.as_deref(),
            "stall_timeout",
            crate::watch::DEFAULT_STALL_TIMEOUT,
            "--stall-timeout",
        )?;
        let shutdown = duration_setting(
            self.shutdown_timeout,
            file.shutdown_timeout.as_deref(),
            "shutdown_timeout",
            crate::archive::DEFAULT_SHUTDOWN_TIMEOUT,
        )?;
        Ok(Timeouts {
            watermark,
            late_after,
            stall,
            shutdown,
        })
    }

    /// Static membership: the flag or the file's id, unless blank.
    fn instance_id(&self, file: &FileConfig) -> Option<String> {
        self.instance_id
            .clone()
            .or(file.instance_id.clone())
            .filter(|s| !s.trim().is_empty())
    }

    /// The file's `[kafka]` properties (sorted), then the `-X` flags, which override them.
    fn kafka_properties(&self, file: &FileConfig) -> Vec<(String, String)> {
        let mut kafka_properties: Vec<(String, String)> =
            file.kafka.0.clone().into_iter().collect();
        kafka_properties.sort();
        kafka_properties.extend(self.kafka.iter().cloned());
        kafka_properties
    }

    /// The table of the single-table form (`--table`, `--topic`, `--decoder`, …).
    fn single_table(&self, table: &str) -> Result<TableTarget, ArchiveError> {
        if self.topics.is_empty() {
            return Err(ArchiveError::Config(
                "--table needs at least one --topic".into(),
            ));
        }
        let decoder = self
            .decoder
            .clone()
            .ok_or_else(|| ArchiveError::Config("--table needs --decoder".into()))?;
        let partition_by = single_table_partition_by(&decoder, &self.partition_by)?;
        let url = table_url(table)?;
        let name = self
            .table_name
            .clone()
            .unwrap_or_else(|| crate::archive::name_from_url(&url));
        Ok(TableTarget {
            name,
            url,
            topics: self.topics.clone(),
            decoder,
            partition_by,
            bloom_filter_columns: Vec::new(),
            target_file_bytes: None,
            json_message_attrs: self.json_message_attrs,
            etl: self.single_table_etl()?,
            definition: None,
            route_urls: Vec::new(),
        })
    }

    /// The ETL of the single-table form, from `--filter`, `--derive` and `--redact`.
    fn single_table_etl(&self) -> Result<EtlSpec, ArchiveError> {
        let mut derive = BTreeMap::new();
        for (k, v) in &self.derive {
            let k = k.trim().to_string();
            if derive.insert(k.clone(), v.clone()).is_some() {
                return Err(ArchiveError::Config(format!(
                    "--derive: column `{k}` is derived twice"
                )));
            }
        }
        Ok(EtlSpec {
            filter: self.filter.clone(),
            derive,
            redact: self
                .redact
                .iter()
                .map(|n| RedactEntry::Named(n.trim().to_string()))
                .collect(),
            routes: Vec::new(),
        })
    }

    /// Flags of the single-table form are an error in the multi-table form: each table's
    /// definition sets them there.
    fn refuse_single_table_flags(&self) -> Result<(), ArchiveError> {
        let given = [
            (
                self.json_message_attrs,
                "--json-message-attrs (LOGLAKE_JSON_MESSAGE_ATTRS) is",
                "`json_message_attrs`",
            ),
            (
                !self.partition_by.is_empty(),
                "--partition-by (LOGLAKE_PARTITION_BY) is",
                "`partition_by`",
            ),
            (
                self.filter.is_some() || !self.derive.is_empty() || !self.redact.is_empty(),
                "--filter, --derive and --redact are",
                "`filter`, `[derive]` and `redact`",
            ),
        ];
        match given.into_iter().find(|(given, _, _)| *given) {
            Some((_, flags, keys)) => Err(ArchiveError::Config(format!(
                "{flags} for the single-table form (--table); in the multi-table form each table's definition sets {keys}"
            ))),
            None => Ok(()),
        }
    }

    /// The tables of the multi-table form: each definition of `--tables-dir`, at LAKE/<name>.
    fn multi_table(
        &self,
        file: &FileConfig,
        target_file_size: Option<u64>,
    ) -> Result<Vec<TableTarget>, ArchiveError> {
        self.refuse_single_table_flags()?;
        let lake = self.lake.clone().or(file.lake.clone()).ok_or_else(|| {
            ArchiveError::Config(
                "nothing to archive: pass --table/--topic/--decoder, or --lake with --tables-dir"
                    .into(),
            )
        })?;
        let dir = self
            .tables_dir
            .clone()
            .or(file.tables_dir.clone())
            .ok_or_else(|| {
                ArchiveError::Config(
                    "--lake needs --tables-dir (a folder of table definitions)".into(),
                )
            })?;
        let defs: Vec<TableDef> = load_table_dir(&dir)?;
        check_routes(&defs)?;
        let in_lake = |name: &str| table_url(&format!("{}/{}", lake.trim_end_matches('/'), name));
        defs.into_iter()
            .map(|d| {
                let url = in_lake(&d.name)?;
                let route_urls = d
                    .route
                    .iter()
                    .map(|r| in_lake(&r.table))
                    .collect::<Result<Vec<Url>, _>>()?;
                let mut t = TableTarget::from_def(&d, url, route_urls);
                if target_file_size.is_some() {
                    // the run's --target-file-size applies to every table
                    t.target_file_bytes = None;
                }
                Ok(t)
            })
            .collect()
    }
}
