//! Partition completeness for T+1 readers: a day of a table is *complete* when every Kafka
//! partition feeding it has been archived past the end of that day plus the lateness allowance
//! (`late_after`, the archiver's `--late-after`), in event time: the table's watermark is the
//! oldest, over its Kafka partitions, of the newest event time archived from each
//! ([`watermark`]). A Kafka partition with nothing archived since the day began does not hold
//! the watermark back (an idle partition has nothing more for that day).
//!
//! A complete day gets a marker under the table, `_loglake/complete/dt=<day>/`: a
//! `manifest.json` (watermark, rows, table version, run id) written with put-if-absent, then an
//! empty `_SUCCESS`. `_`-prefixed, so Delta, Spark and vacuum leave it alone. [`is_complete`] is
//! pure.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// Where a table's completeness markers live, under its root.
pub const MARKERS_PATH: &str = "_loglake/complete";

/// The end of `day` (UTC): the next midnight.
pub fn day_end(day: NaiveDate) -> DateTime<Utc> {
    (day + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether `day` is complete under `watermark` with `late_after` allowed lateness.
pub fn is_complete(day: NaiveDate, watermark: Option<DateTime<Utc>>, late_after: Duration) -> bool {
    let late = chrono::Duration::from_std(late_after).unwrap_or(chrono::Duration::MAX);
    match (watermark, day_end(day).checked_add_signed(late)) {
        (Some(w), Some(needed)) => w >= needed,
        _ => false,
    }
}

/// The marker's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub table: String,
    pub date: String,
    pub watermark: String,
    pub late_after_secs: u64,
    pub rows: i64,
    pub table_version: u64,
    pub run_id: String,
    pub completed_at: String,
}

fn marker_dir(day: NaiveDate) -> String {
    format!("{MARKERS_PATH}/dt={day}")
}

/// The manifest of `day`'s marker, if the day is marked complete.
pub async fn marker(store: &dyn ObjectStore, day: NaiveDate) -> Option<Manifest> {
    let path = object_store::path::Path::from(format!("{}/manifest.json", marker_dir(day)));
    let bytes = store.get(&path).await.ok()?.bytes().await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `day`'s marker (manifest, then `_SUCCESS`); `false` when another run wrote it first.
pub async fn write_marker(
    store: &dyn ObjectStore,
    m: &Manifest,
    day: NaiveDate,
) -> Result<bool, object_store::Error> {
    let dir = marker_dir(day);
    let body = serde_json::to_vec_pretty(m).unwrap_or_default();
    let created = match store
        .put_opts(
            &format!("{dir}/manifest.json").into(),
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => true,
        Err(object_store::Error::AlreadyExists { .. }) => false,
        Err(e) => return Err(e),
    };
    // `_SUCCESS` after the manifest: a reader that sees it finds the manifest
    store
        .put(&format!("{dir}/_SUCCESS").into(), PutPayload::new())
        .await?;
    Ok(created)
}

/// The table's event-time watermark for `day` (see the module docs) and `day`'s row count.
pub async fn watermark(
    table: &DeltaTable,
    day: NaiveDate,
) -> Result<(Option<DateTime<Utc>>, i64), datafusion::error::DataFusionError> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    let schema = provider.schema();
    let has = |c: &str| schema.index_of(c).is_ok();
    ctx.register_table("t", provider)?;
    if !has("ts") || !has("kafka_partition") {
        return Ok((None, 0));
    }
    let since = if has("dt") {
        format!("WHERE dt >= '{day}'")
    } else {
        format!("WHERE ts >= TIMESTAMP '{day}T00:00:00Z'")
    };
    let topic = if has("kafka_topic") {
        "kafka_topic, "
    } else {
        ""
    };
    let sql = format!(
        "SELECT CAST(min(m) AS BIGINT) FROM (SELECT max(ts) AS m FROM t {since} \
         GROUP BY {topic}kafka_partition)"
    );
    let w = single_i64(&ctx, &sql).await?;
    let rows_sql = if has("dt") {
        format!("SELECT count(*) FROM t WHERE dt = '{day}'")
    } else {
        format!(
            "SELECT count(*) FROM t WHERE ts >= TIMESTAMP '{day}T00:00:00Z' AND ts < TIMESTAMP '{}'",
            day_end(day).to_rfc3339()
        )
    };
    let rows = single_i64(&ctx, &rows_sql).await?.unwrap_or(0);
    Ok((w.and_then(DateTime::<Utc>::from_timestamp_micros), rows))
}

async fn single_i64(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Option<i64>, datafusion::error::DataFusionError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    for b in batches {
        if b.num_rows() > 0 {
            let c = arrow::compute::cast(b.column(0), &DataType::Int64)?;
            let a = c.as_primitive::<Int64Type>();
            return Ok((!a.is_null(0)).then(|| a.value(0)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn at(s: &str) -> Option<DateTime<Utc>> {
        Some(
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn a_day_is_complete_once_the_watermark_passes_its_end_plus_the_allowance() {
        let d = day("2026-12-05");
        let hour = Duration::from_secs(3600);
        assert_eq!(day_end(d), at("2026-12-06T00:00:00Z").expect("t"));
        assert!(!is_complete(d, None, hour));
        assert!(!is_complete(d, at("2026-12-05T23:59:59Z"), Duration::ZERO));
        assert!(is_complete(d, at("2026-12-06T00:00:00Z"), Duration::ZERO));
        assert!(!is_complete(d, at("2026-12-06T00:59:59Z"), hour));
        assert!(is_complete(d, at("2026-12-06T01:00:00Z"), hour));
        assert!(!is_complete(d, at("2026-12-07T00:00:00Z"), Duration::MAX));
    }
}
