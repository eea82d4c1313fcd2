//! `loglake audit`: compares the (topic, partition, offset) coverage of a table and its
//! dead-letter table with the broker's offsets.
//!
//! Coverage of one offset = rows whose `kafka_offset` is it, plus reassembled lines that list it
//! in `attrs['loglake.fragment_offsets']`, plus dead letters. `missing` counts offsets in the
//! broker's `[low, high)` with no coverage; `duplicates` counts coverage beyond the first.
//! `deleted` counts offsets with no coverage that a `loglake delete` recorded as deleted
//! (`_loglake/deletes/*.json` under the table): they are not missing. `filtered` counts offsets
//! whose records an archive-time filter dropped: each commit lists them in its commit info
//! (`loglake.filtered`, see [`crate::etl`]); they count as coverage, so a filtered record that
//! is also a row or a dead letter is a duplicate. Maintenance folds those lists into the ETL
//! ledger (`_loglake/etl_offsets/`, `loglake_lake::etl_ledger`) before it cleans commit files
//! from the log; the audit reads the ledger for the versions it covers and the commit infos of
//! the later ones, each version once. Versions cleaned before they were folded are reported as
//! `unverifiable_versions`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use deltalake::datafusion::prelude::SessionContext;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use url::Url;

use crate::error::ArchiveError;

/// `loglake audit`: check that a table (+ dead letters) holds every Kafka record exactly once.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[arg(long, env = "LOGLAKE_BROKERS")]
    pub brokers: String,
    #[arg(long)]
    pub topic: String,
    /// Table URI (s3://… or a local path).
    #[arg(long)]
    pub table: String,
    /// Dead-letter table URI.
    #[arg(long)]
    pub dlq_table: Option<String>,
    /// librdkafka property (repeatable).
    #[arg(short = 'X', value_parser = crate::config::parse_kv)]
    pub kafka: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub expected: u64,
    pub rows: u64,
    pub dead_letters: u64,
    pub missing: u64,
    pub duplicates: u64,
    /// Offsets without a row that `loglake delete` recorded as deleted (left out when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub deleted: u64,
    /// Offsets an archive-time filter dropped, from the table's commit infos (left out when
    /// none).
    #[serde(skip_serializing_if = "is_zero")]
    pub filtered: u64,
    /// Offsets whose rows all moved to route tables, from the table's commit infos (left out
    /// when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub moved: u64,
    /// Table versions whose filtered/moved offsets nobody can vouch for: their commit files
    /// were cleaned from the log before maintenance folded them into the ETL ledger (left out
    /// when none). Offsets those versions filtered or moved count as missing.
    #[serde(skip_serializing_if = "is_zero")]
    pub unverifiable_versions: u64,
    /// The first few of those versions, as `[first, last]` ranges (left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unverifiable_version_ranges: Vec<(u64, u64)>,
    /// The first few offsets with no coverage, `[partition, offset]` (left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_examples: Vec<MissingOffset>,
    /// The first few offsets covered more than once, `[partition, offset, copies]` (left out
    /// when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicate_examples: Vec<DuplicateOffset>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A missing offset: (partition, offset).
pub type MissingOffset = (i32, i64);
/// A duplicated offset: (partition, offset, copies).
pub type DuplicateOffset = (i32, i64, u32);

/// How many missing and duplicated offsets the report names.
const EXAMPLES: usize = 10;

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0
    }
}

/// Per-partition offset coverage counts over `[low, high)`.
#[derive(Debug, Default)]
pub struct Coverage {
    ranges: HashMap<i32, (i64, i64, Vec<u32>)>,
    outside: HashMap<(i32, i64), u32>,
    deleted: HashSet<(i32, i64)>,
}

impl Coverage {
    pub fn new(watermarks: &HashMap<i32, (i64, i64)>) -> Self {
        let ranges = watermarks
            .iter()
            .map(|(&p, &(lo, hi))| (p, (lo, hi, vec![0u32; (hi - lo).max(0) as usize])))
            .collect();
        Coverage {
            ranges,
            outside: HashMap::new(),
            deleted: HashSet::new(),
        }
    }

    pub fn add(&mut self, partition: i32, offset: i64) {
        match self.ranges.get_mut(&partition) {
            Some((lo, hi, counts)) if offset >= *lo && offset < *hi => {
                counts[(offset - *lo) as usize] += 1
            }
            _ => *self.outside.entry((partition, offset)).or_insert(0) += 1,
        }
    }

    /// Records that `loglake delete` deleted the record at `offset`: without a row it is
    /// deleted, not missing.
    pub fn mark_deleted(&mut self, partition: i32, offset: i64) {
        self.deleted.insert((partition, offset));
    }

    /// Up to `limit` missing offsets and up to `limit` duplicated ones (with their copies), in
    /// (partition, offset) order; duplicates inside the broker's range come before those below
    /// its low watermark.
    pub fn examples(&self, limit: usize) -> (Vec<MissingOffset>, Vec<DuplicateOffset>) {
        let mut missing = Vec::new();
        let mut dups = Vec::new();
        let mut parts: Vec<_> = self.ranges.iter().collect();
        parts.sort_by_key(|(p, _)| **p);
        for (&p, (lo, _, counts)) in parts {
            for (i, &c) in counts.iter().enumerate() {
                let o = lo + i as i64;
                if c == 0 && missing.len() < limit && !self.deleted.contains(&(p, o)) {
                    missing.push((p, o));
                } else if c > 1 && dups.len() < limit {
                    dups.push((p, o, c));
                }
            }
        }
        let mut outside: Vec<_> = self.outside.iter().filter(|(_, c)| **c > 1).collect();
        outside.sort();
        for (&(p, o), &c) in outside {
            if dups.len() < limit {
                dups.push((p, o, c));
            }
        }
        dups.sort();
        (missing, dups)
    }

    /// (expected, missing, duplicates, deleted)
    pub fn summary(&self) -> (u64, u64, u64, u64) {
        let mut expected = 0;
        let mut missing = 0;
        let mut dups = 0;
        let mut deleted = 0;
        for (&p, (lo, hi, counts)) in &self.ranges {
            expected += (hi - lo).max(0) as u64;
            for (i, &c) in counts.iter().enumerate() {
                if c == 0 && self.deleted.contains(&(p, lo + i as i64)) {
                    deleted += 1;
                } else if c == 0 {
                    missing += 1;
                } else {
                    dups += (c - 1) as u64;
                }
            }
        }
        for &c in self.outside.values() {
            dups += c.saturating_sub(1) as u64;
        }
        (expected, missing, dups, deleted)
    }
}

fn broker_watermarks(args: &AuditArgs) -> Result<HashMap<i32, (i64, i64)>, ArchiveError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &args.brokers);
    for (k, v) in &args.kafka {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc.create().map_err(|source| ArchiveError::Kafka {
        context: "creating audit client".into(),
        source,
    })?;
    let md = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))
        .map_err(|source| ArchiveError::Kafka {
            context: format!("metadata of {}", args.topic),
            source,
        })?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == args.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .collect();
    if parts.is_empty() {
        return Err(ArchiveError::Config(format!(
            "topic {} has no partitions on {}",
            args.topic, args.brokers
        )));
    }
    let mut out = HashMap::new();
    for p in parts {
        let wm = consumer
            .fetch_watermarks(&args.topic, p, Duration::from_secs(30))
            .map_err(|source| ArchiveError::Kafka {
                context: format!("watermarks of {}[{p}]", args.topic),
                source,
            })?;
        out.insert(p, wm);
    }
    drop(consumer);
    Ok(out)
}

/// Adds every (partition, offset) that `table` covers for `topic`; returns the row count.
async fn scan_table(
    url: &Url,
    storage_options: &HashMap<String, String>,
    topic: &str,
    with_fragments: bool,
    cov: &mut Coverage,
) -> Result<u64, ArchiveError> {
    let name = url.to_string();
    let err = |source| ArchiveError::Delta {
        table: name.clone(),
        source,
    };
    let table = loglake_lake::open_table(&name, url, storage_options).await?;
    if table.version().is_none() {
        return Ok(0);
    }
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).map_err(err)?;
    let provider = table
        .table_provider()
        .await
        .map_err(query_err(&name, "reading its files"))?;
    let has_attrs = provider.schema().index_of("attrs").is_ok();
    ctx.register_table("t", provider)
        .map_err(query_err(&name, "registering it"))?;
    let frag = if with_fragments && has_attrs {
        "attrs['loglake.fragment_offsets']"
    } else {
        "CAST(NULL AS VARCHAR)"
    };
    let topic_lit = topic.replace('\'', "''");
    let sql = format!(
        "SELECT kafka_partition, kafka_offset, {frag} AS frags FROM t WHERE kafka_topic = '{topic_lit}'"
    );
    let df = ctx
        .sql(&sql)
        .await
        .map_err(query_err(&name, "planning the offsets query"))?;
    let batches = df
        .collect()
        .await
        .map_err(query_err(&name, "reading its offsets"))?;
    let mut rows = 0u64;
    for b in batches {
        let parts = b.column(0).as_primitive::<Int32Type>();
        let offs = b.column(1).as_primitive::<Int64Type>();
        let frags = b.column(2).as_string_opt::<i32>();
        for r in 0..b.num_rows() {
            rows += 1;
            let p = parts.value(r);
            cov.add(p, offs.value(r));
            if let Some(f) = frags
                && !f.is_null(r)
            {
                for o in f
                    .value(r)
                    .split(',')
                    .filter_map(|s| s.trim().parse::<i64>().ok())
                {
                    cov.add(p, o);
                }
            }
        }
    }
    Ok(rows)
}

/// Maps a DataFusion error of `what` on table `name` to [`ArchiveError::Query`].
fn query_err(
    name: &str,
    what: &'static str,
) -> impl Fn(datafusion::error::DataFusionError) -> ArchiveError {
    let table = name.to_string();
    move |source| ArchiveError::Query {
        table: table.clone(),
        what,
        source: Box::new(source),
    }
}

/// Maps an error of `what` (listing, reading, parsing) on the object `path` under table `name`
/// to [`ArchiveError::Object`].
fn object_err<E: std::error::Error + Send + Sync + 'static>(
    name: &str,
    what: &'static str,
    path: &object_store::path::Path,
) -> impl Fn(E) -> ArchiveError {
    let (table, path) = (name.to_string(), path.to_string());
    move |source| ArchiveError::Object {
        table: table.clone(),
        what,
        path: path.clone(),
        source: Box::new(source),
    }
}

/// Marks in `cov` the offsets of `topic` that `loglake delete` recorded under the table at
/// `url` (`_loglake/deletes/*.json`).
async fn mark_deleted(
    url: &Url,
    storage_options: &HashMap<String, String>,
    topic: &str,
    cov: &mut Coverage,
) -> Result<(), ArchiveError> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let name = url.to_string();
    let table = loglake_lake::open_table(&name, url, storage_options).await?;
    let store = table.log_store().object_store(None);
    let prefix = object_store::path::Path::from(loglake_compactor::delete::DELETES_PREFIX);
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(object_err(&name, "listing", &prefix))?;
    for m in listed {
        let bytes = store
            .get(&m.location)
            .await
            .map_err(object_err(&name, "reading", &m.location))?
            .bytes()
            .await
            .map_err(object_err(&name, "reading", &m.location))?;
        let record: loglake_compactor::delete::DeletedOffsets =
            serde_json::from_slice(&bytes).map_err(object_err(&name, "parsing", &m.location))?;
        for (p, ranges) in record.offsets.get(topic).into_iter().flatten() {
            for (lo, hi) in ranges {
                for o in *lo..=*hi {
                    cov.mark_deleted(*p, o);
                }
            }
        }
    }
    Ok(())
}

/// What the table records as filtered and moved for the audit.
struct EtlCounts {
    filtered: u64,
    moved: u64,
    /// Versions nobody can vouch for (inclusive ranges).
    unverifiable: Vec<(u64, u64)>,
}

/// Adds to `cov` the offsets of `topic` that the table records as filtered or moved: the ETL
/// ledger (`_loglake/etl_offsets/`, folded by maintenance before log cleanup) for the versions
/// it covers, the commit infos (`loglake.filtered`, `loglake.moved`) of the later versions —
/// each version once (`loglake_lake::etl_ledger::coverage`). Versions whose commit file was
/// cleaned before it was folded are returned as unverifiable.
async fn add_filtered(
    url: &Url,
    storage_options: &HashMap<String, String>,
    topic: &str,
    cov: &mut Coverage,
) -> Result<EtlCounts, ArchiveError> {
    let name = url.to_string();
    let table = loglake_lake::open_table(&name, url, storage_options).await?;
    let Some(latest) = table.version() else {
        return Ok(EtlCounts {
            filtered: 0,
            moved: 0,
            unverifiable: Vec::new(),
        });
    };
    let store = table.log_store().object_store(None);
    let found = loglake_lake::etl_ledger::coverage(store.as_ref(), &name, url, latest).await?;
    let mut add = |ranges: &loglake_lake::etl_ledger::RangeMap| {
        let mut n = 0u64;
        for ((t, p), list) in ranges {
            if t != topic {
                continue;
            }
            for &(lo, hi) in list {
                for o in lo..hi {
                    cov.add(*p, o);
                    n += 1;
                }
            }
        }
        n
    };
    let filtered = add(&found.offsets.filtered);
    let moved = add(&found.offsets.moved);
    if !found.unverifiable.is_empty() {
        tracing::warn!(table = %name, versions = ?found.unverifiable,
            "commit files cleaned from the log before their filtered/moved offsets were folded \
             into the ETL ledger: offsets those versions filtered or moved show as missing");
    }
    Ok(EtlCounts {
        filtered,
        moved,
        unverifiable: found.unverifiable,
    })
}

/// Runs the audit.
pub async fn audit(
    args: &AuditArgs,
    storage_options: &HashMap<String, String>,
) -> Result<AuditReport, ArchiveError> {
    let a = args.clone();
    let wm = tokio::task::spawn_blocking(move || broker_watermarks(&a))
        .await
        .map_err(|e| ArchiveError::Other(e.to_string()))??;
    let mut cov = Coverage::new(&wm);
    let url = loglake_lake::table_url(&args.table)?;
    let rows = scan_table(&url, storage_options, &args.topic, true, &mut cov).await?;
    mark_deleted(&url, storage_options, &args.topic, &mut cov).await?;
    let etl = add_filtered(&url, storage_options, &args.topic, &mut cov).await?;
    let dead_letters = match &args.dlq_table {
        Some(d) => {
            scan_table(
                &loglake_lake::table_url(d)?,
                storage_options,
                &args.topic,
                false,
                &mut cov,
            )
            .await?
        }
        None => 0,
    };
    let (expected, missing, duplicates, deleted) = cov.summary();
    // A second pass over the coverage only when there is something to name.
    let (missing_examples, duplicate_examples) = if missing + duplicates > 0 {
        cov.examples(EXAMPLES)
    } else {
        Default::default()
    };
    Ok(AuditReport {
        expected,
        rows,
        dead_letters,
        missing,
        duplicates,
        deleted,
        filtered: etl.filtered,
        moved: etl.moved,
        unverifiable_versions: loglake_lake::etl_ledger::version_count(&etl.unverifiable),
        unverifiable_version_ranges: etl.unverifiable.into_iter().take(EXAMPLES).collect(),
        missing_examples,
        duplicate_examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_missing_and_duplicates() {
        let wm = HashMap::from([(0, (0, 5)), (1, (10, 12))]);
        let mut c = Coverage::new(&wm);
        for o in [0, 1, 2, 2, 4] {
            c.add(0, o);
        }
        c.add(1, 10);
        c.add(1, 11);
        c.add(1, 3); // below low watermark (retention): not missing, counted once
        c.add(1, 3); // …and its second copy is a duplicate
        assert_eq!(c.summary(), (7, 1, 2, 0));
        let mut d = Coverage::new(&wm);
        for o in [0, 1, 2, 4] {
            d.add(0, o);
        }
        d.add(1, 10);
        d.mark_deleted(0, 3);
        d.mark_deleted(0, 4); // deleted but present (the delete never committed): a row
        assert_eq!(d.summary(), (7, 1, 0, 1));
        assert_eq!(d.examples(10), (vec![(1, 11)], vec![]));
        assert_eq!(c.examples(10), (vec![(0, 3)], vec![(0, 2, 2), (1, 3, 2)]));
        assert_eq!(c.examples(1), (vec![(0, 3)], vec![(0, 2, 2)]));
    }

    #[test]
    fn a_clean_report_prints_the_five_counts_only() {
        let r = AuditReport {
            expected: 3,
            rows: 2,
            dead_letters: 1,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"expected":3,"rows":2,"dead_letters":1,"missing":0,"duplicates":0}"#
        );
        let bad = AuditReport {
            duplicates: 1,
            duplicate_examples: vec![(2, 40, 2)],
            ..r
        };
        assert_eq!(
            serde_json::to_string(&bad).unwrap(),
            r#"{"expected":3,"rows":2,"dead_letters":1,"missing":0,"duplicates":1,"duplicate_examples":[[2,40,2]]}"#
        );
        let unverifiable = AuditReport {
            expected: 3,
            rows: 2,
            dead_letters: 1,
            missing: 1,
            unverifiable_versions: 3,
            unverifiable_version_ranges: vec![(4, 5), (9, 9)],
            missing_examples: vec![(0, 7)],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&unverifiable).unwrap(),
            r#"{"expected":3,"rows":2,"dead_letters":1,"missing":1,"duplicates":0,"unverifiable_versions":3,"unverifiable_version_ranges":[[4,5],[9,9]],"missing_examples":[[0,7]]}"#
        );
    }
}
