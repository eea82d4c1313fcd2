//! `--from-version`: the checks before adding to a day's export only the rows later table
//! versions added, and the filter that selects those rows.

use std::collections::BTreeMap;

use arrow::array::AsArray;
use futures::StreamExt;

use super::manifest::{HiveManifest, PartitionEntry};
use crate::error::ExportError;
use crate::source;
use crate::target::Target;

/// The condition (after the day's `WHERE`) keeping only the rows of `__new` that the table's
/// version `from` did not have.
pub(super) fn new_rows_filter(table: &str, from: i64, date: &str) -> String {
    format!(
        " AND NOT EXISTS (SELECT 1 FROM delta_scan('{}', {from}) AS __old \
         WHERE __old.dt = DATE '{date}' AND __old.kafka_topic = __new.kafka_topic \
         AND __old.kafka_partition = __new.kafka_partition \
         AND __old.kafka_offset = __new.kafka_offset)",
        table.replace('\'', "''")
    )
}

/// What `--from-version` checks before adding rows.
pub(super) struct IncrementalCheck<'a> {
    pub table: &'a str,
    pub date: &'a str,
    pub day: &'a str,
    pub from: i64,
    pub version: i64,
    pub previous: Option<&'a HiveManifest>,
    pub columns: &'a [String],
}

/// The partitions an incremental export adds to: the previous export's, when it was made at
/// `from`, all its files are still there, and no row of the day at `from` is gone at `version`
/// (a delete or rewrite needs a full re-export).
pub(super) async fn incremental_base(
    engine: &loglake_query::Engine,
    target: &Target,
    c: IncrementalCheck<'_>,
) -> Result<Vec<PartitionEntry>, ExportError> {
    let (from, version, date) = (c.from, c.version, c.date);
    let prev = c.previous.ok_or_else(|| {
        ExportError::Usage(format!(
            "--from-version {from}: {date} has no export to add to; export the day in full first"
        ))
    })?;
    if prev.source_version != from {
        return Err(ExportError::Usage(format!(
            "--from-version {from}: {date} was exported at version {}; add to it with \
             --from-version {} or export the day in full",
            prev.source_version, prev.source_version
        )));
    }
    if from > version {
        return Err(ExportError::Usage(format!(
            "--from-version {from}: the table is at version {version}"
        )));
    }
    for k in ["kafka_topic", "kafka_partition", "kafka_offset"] {
        if !c.columns.iter().any(|x| x == k) {
            return Err(ExportError::Usage(format!(
                "--from-version: table {} has no {k} column to tell new rows by",
                c.table
            )));
        }
    }
    let present: BTreeMap<String, u64> = target
        .list(&format!("{}/", c.day))
        .await?
        .into_iter()
        .map(|l| (l.rel, l.size))
        .collect();
    for f in prev.partitions.iter().flat_map(|p| &p.files) {
        if present.get(&f.path) != Some(&f.bytes) {
            return Err(ExportError::Usage(format!(
                "--from-version {from}: the export of {date} is not intact ({} is missing or \
                 changed; an interrupted full export?); export the day in full",
                target.url_of(&f.path)
            )));
        }
    }
    let t = c.table.replace('\'', "''");
    let sql = format!(
        "SELECT count(*) AS n FROM delta_scan('{t}', {from}) AS __old \
         WHERE __old.dt = DATE '{date}' AND NOT EXISTS (SELECT 1 FROM delta_scan('{t}', {version}) AS __new \
         WHERE __new.dt = DATE '{date}' AND __old.kafka_topic = __new.kafka_topic \
         AND __old.kafka_partition = __new.kafka_partition \
         AND __old.kafka_offset = __new.kafka_offset)"
    );
    let (_, mut stream) = source::stream(engine, &sql).await?;
    let mut gone = 0i64;
    while let Some(b) = stream.next().await {
        let b = b.map_err(|e| ExportError::query(&sql, e))?;
        if b.num_rows() > 0 {
            let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
                .map_err(|e| ExportError::Internal(e.to_string()))?;
            gone += n.as_primitive::<arrow::datatypes::Int64Type>().value(0);
        }
    }
    if gone > 0 {
        return Err(ExportError::Usage(format!(
            "--from-version {from}: {gone} rows of {date} at version {from} are gone at version \
             {version} (a delete or rewrite); export the day in full"
        )));
    }
    Ok(prev.partitions.clone())
}
