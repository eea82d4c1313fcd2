//! The nightly `log_templates` Delta table: per day (`dt`, the partition) and service, every
//! template that day's lines joined: `template_id`, `template`, `count` (lines that day),
//! `example`, `first_seen` (the first day the template was seen, carried across nights),
//! `last_seen` (= `dt`) and `new_today` (`first_seen = dt`).
//!
//! The table is the miner's memory across nights: before mining day D, every template of the
//! service seen on a day before D seeds the service's miner ([`crate::Drain::seed`]), so a line
//! of a known event joins the known template and keeps its id. A template whose text is new
//! (including a known one that day's lines made more general) is new today. Re-running a day
//! replaces that day's partition (`replaceWhere dt = D`): nothing doubles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanBuilder, Date32Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use chrono::NaiveDate;

use crate::drain::DrainConfig;
use crate::error::InsightsError;
use crate::lake::LakeSession;
use crate::sql::GroupedMiner;

/// The table's name under the lake root.
pub const TEMPLATES_TABLE: &str = "log_templates";

/// Where a day's lines come from: the logs table, its service expression and day filter.
#[derive(Debug, Clone, PartialEq)]
pub struct DaySource {
    pub table: String,
    /// SQL for the service of a row (`COALESCE(service, app, container, 'unknown')`).
    pub service: String,
    /// SQL for the hour of a row (the `hour` partition column, else `date_part('hour', ts)`).
    pub hour: String,
    /// SQL predicate true for errors (`upper(level) IN ('ERROR', 'FATAL')`, else `false`).
    pub is_error: String,
    /// SQL predicate selecting the day's rows.
    pub day_filter: String,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The candidates for the logs table, in order, when none is named.
pub const LOG_TABLE_CANDIDATES: &[&str] = &["container_logs", "containers", "logs"];

impl DaySource {
    /// The day source of `table` (or the first logs table of the lake: one named in
    /// [`LOG_TABLE_CANDIDATES`], else the first with `message` and `ts` columns).
    pub fn resolve(
        lake: &LakeSession,
        table: Option<&str>,
        day: NaiveDate,
    ) -> Result<Self, InsightsError> {
        let table = match table {
            Some(t) => {
                if !lake.has_table(t) {
                    return Err(InsightsError::Invalid(format!(
                        "no Delta table {t:?} under {} (tables: {})",
                        lake.root,
                        lake.tables.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                t.to_string()
            }
            None => LOG_TABLE_CANDIDATES
                .iter()
                .map(|s| s.to_string())
                .find(|t| lake.has_table(t))
                .or_else(|| {
                    lake.tables.keys().find(|t| {
                        let c = lake.columns(t);
                        c.iter().any(|x| x == "message") && c.iter().any(|x| x == "ts")
                    })
                    .cloned()
                })
                .ok_or_else(|| {
                    InsightsError::Invalid(format!(
                        "no logs table (with message and ts columns) under {}; name one with --logs-table",
                        lake.root
                    ))
                })?,
        };
        let cols = lake.columns(&table);
        let has = |c: &str| cols.iter().any(|x| x == c);
        if !has("message") || !has("ts") {
            return Err(InsightsError::Invalid(format!(
                "table {table} has no message or ts column (columns: {})",
                cols.join(", ")
            )));
        }
        let svc: Vec<String> = ["service", "app", "container"]
            .iter()
            .filter(|c| has(c))
            .map(|c| quote(c))
            .collect();
        let service = format!(
            "COALESCE({}{}'unknown')",
            svc.join(", "),
            if svc.is_empty() { "" } else { ", " }
        );
        let hour = if has("hour") {
            "CAST(\"hour\" AS INT)".to_string()
        } else {
            "CAST(date_part('hour', ts) AS INT)".to_string()
        };
        let is_error = if has("level") {
            "upper(\"level\") IN ('ERROR', 'FATAL', 'CRITICAL')".to_string()
        } else {
            "false".to_string()
        };
        let day_filter = if has("dt") {
            format!("\"dt\" = DATE '{day}'")
        } else {
            format!("CAST(ts AS DATE) = DATE '{day}'")
        };
        Ok(Self {
            table: quote(&table),
            service,
            hour,
            is_error,
            day_filter,
        })
    }
}

/// A known template: its text and the first day it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub template: String,
    pub first_seen: NaiveDate,
}

/// Templates seen before `day`, per service and id (from the `log_templates` table; empty when
/// the lake has none).
pub async fn known_before(
    lake: &LakeSession,
    day: NaiveDate,
) -> Result<BTreeMap<String, BTreeMap<String, Known>>, InsightsError> {
    let mut out: BTreeMap<String, BTreeMap<String, Known>> = BTreeMap::new();
    if !lake.has_table(TEMPLATES_TABLE) {
        return Ok(out);
    }
    let sql = format!(
        "SELECT service, template_id, min(template) AS template, min(first_seen) AS first_seen \
         FROM {TEMPLATES_TABLE} WHERE dt < DATE '{day}' GROUP BY service, template_id"
    );
    for b in lake.query(&sql).await? {
        let utf8 = |i: usize| {
            arrow::compute::cast(b.column(i), &DataType::Utf8)
                .map_err(|e| InsightsError::Invalid(format!("{TEMPLATES_TABLE}: column {i}: {e}")))
        };
        let (svc, id, tpl) = (utf8(0)?, utf8(1)?, utf8(2)?);
        let (svc, id, tpl) = (
            svc.as_string::<i32>(),
            id.as_string::<i32>(),
            tpl.as_string::<i32>(),
        );
        let first = arrow::compute::cast(b.column(3), &DataType::Date32)
            .map_err(|e| InsightsError::Invalid(format!("{TEMPLATES_TABLE}: first_seen: {e}")))?;
        let first = first.as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            let Some(first_seen) = first.value_as_date(i) else {
                continue;
            };
            out.entry(svc.value(i).to_string()).or_default().insert(
                id.value(i).to_string(),
                Known {
                    template: tpl.value(i).to_string(),
                    first_seen,
                },
            );
        }
    }
    Ok(out)
}

/// One template of one service on one day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DayTemplate {
    pub service: String,
    pub template_id: String,
    pub template: String,
    pub count: u64,
    pub example: String,
    pub first_seen: NaiveDate,
    pub new_today: bool,
}

/// Mine a day of the logs table per service, seeded with the templates known before it. Most
/// frequent first.
pub async fn mine_day(
    lake: &LakeSession,
    src: &DaySource,
    day: NaiveDate,
    cfg: &DrainConfig,
) -> Result<Vec<DayTemplate>, InsightsError> {
    let known = known_before(lake, day).await?;
    let mut miner = GroupedMiner::new(cfg.clone());
    for (svc, templates) in &known {
        let d = miner.group_mut(vec![Some(svc.clone())]);
        // the same order every night: by first day, then text
        let mut seeds: Vec<&Known> = templates.values().collect();
        seeds.sort_by(|a, b| (a.first_seen, &a.template).cmp(&(b.first_seen, &b.template)));
        for k in seeds {
            d.seed(&k.template);
        }
    }
    let sql = format!(
        "SELECT {svc} AS service, CAST(message AS VARCHAR) AS message FROM {t} WHERE {f} ORDER BY ts",
        svc = src.service,
        t = src.table,
        f = src.day_filter
    );
    let miner = crate::sql::mine_sql(&lake.ctx, &sql, 1, miner)
        .await
        .map_err(|e| InsightsError::Query { sql, source: e })?;
    let mut out = Vec::new();
    for (key, t) in miner.templates() {
        let service = key.into_iter().next().flatten().unwrap_or_default();
        let first_seen = known
            .get(&service)
            .and_then(|k| k.get(&t.template_id))
            .map(|k| k.first_seen)
            .unwrap_or(day);
        out.push(DayTemplate {
            service,
            template_id: t.template_id,
            template: t.template,
            count: t.count,
            example: t.example,
            new_today: first_seen == day,
            first_seen,
        });
    }
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.service, &a.template).cmp(&(&b.service, &b.template)))
    });
    Ok(out)
}

/// The schema of the `log_templates` table.
pub fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("template_id", DataType::Utf8, false),
        Field::new("template", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("example", DataType::Utf8, false),
        Field::new("first_seen", DataType::Date32, false),
        Field::new("last_seen", DataType::Date32, false),
        Field::new("new_today", DataType::Boolean, false),
        Field::new("dt", DataType::Date32, false),
    ]))
}

fn days(d: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    (d - epoch).num_days() as i32
}

fn to_batch(day: NaiveDate, rows: &[DayTemplate]) -> Result<RecordBatch, InsightsError> {
    let mut s = [
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    ];
    let mut count = Int64Builder::new();
    let mut d = [
        Date32Builder::new(),
        Date32Builder::new(),
        Date32Builder::new(),
    ];
    let mut new = BooleanBuilder::new();
    for r in rows {
        s[0].append_value(&r.service);
        s[1].append_value(&r.template_id);
        s[2].append_value(&r.template);
        s[3].append_value(&r.example);
        count.append_value(r.count as i64);
        d[0].append_value(days(r.first_seen));
        d[1].append_value(days(day));
        d[2].append_value(days(day));
        new.append_value(r.new_today);
    }
    let [s0, s1, s2, s3] = s;
    let [d0, d1, d2] = d;
    let cols: Vec<ArrayRef> = vec![
        Arc::new({ s0 }.finish()),
        Arc::new({ s1 }.finish()),
        Arc::new({ s2 }.finish()),
        Arc::new(count.finish()),
        Arc::new({ s3 }.finish()),
        Arc::new({ d0 }.finish()),
        Arc::new({ d1 }.finish()),
        Arc::new(new.finish()),
        Arc::new({ d2 }.finish()),
    ];
    RecordBatch::try_new(table_schema(), cols)
        .map_err(|e| InsightsError::Invalid(format!("log_templates batch: {e}")))
}

/// What [`mine_templates_for_day`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplatesMetrics {
    pub day: NaiveDate,
    pub lines: u64,
    pub templates: usize,
    pub new_templates: usize,
    pub services: usize,
    pub table_version: Option<u64>,
}

/// The nightly stage: mine `day` of the logs table (`logs_table`, or the lake's logs table) and
/// write its templates to `<lake>/log_templates`, replacing that day's partition.
pub async fn mine_templates_for_day(
    lake_url: &str,
    logs_table: Option<&str>,
    day: NaiveDate,
    cfg: &DrainConfig,
) -> Result<TemplatesMetrics, InsightsError> {
    let lake = LakeSession::open(lake_url).await?;
    let src = DaySource::resolve(&lake, logs_table, day)?;
    let rows = mine_day(&lake, &src, day, cfg).await?;
    let batch = to_batch(day, &rows)?;
    let written = crate::lake::replace_day(&lake.root, TEMPLATES_TABLE, batch, day).await?;
    let services: BTreeSet<&str> = rows.iter().map(|r| r.service.as_str()).collect();
    Ok(TemplatesMetrics {
        day,
        lines: rows.iter().map(|r| r.count).sum(),
        templates: rows.len(),
        new_templates: rows.iter().filter(|r| r.new_today).count(),
        services: services.len(),
        table_version: written.version(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn batch_has_the_table_schema() {
        let day = NaiveDate::from_ymd_opt(2024, 5, 2).unwrap();
        let rows = vec![DayTemplate {
            service: "a".into(),
            template_id: crate::template_id("x <*>"),
            template: "x <*>".into(),
            count: 3,
            example: "x 1".into(),
            first_seen: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
            new_today: false,
        }];
        let b = to_batch(day, &rows).unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), table_schema());
        let dt = b.column(8).as_primitive::<Date32Type>();
        assert_eq!(dt.value_as_date(0), Some(day));
        assert!(b.column(7).as_boolean().is_valid(0));
        assert!(!b.column(7).as_boolean().value(0));
    }
}
