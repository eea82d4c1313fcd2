//! The nightly `log_anomalies` table: per hour × namespace × service of a day, the log volume
//! and error count against the same hour of the previous `history_days` days (robust statistics:
//! median and MAD, no model), a robust z-score for each, and for the hours flagged anomalous the
//! pod and the template that explain most of the excess, with a ready SQL to drill in.
//!
//! A day with no rows for a service-hour counts 0. The scale of a z-score is
//! `max(1.4826 × MAD, 0.1 × median, 1)` (MAD alone is 0 for perfectly regular traffic). An hour is
//! anomalous when a z-score reaches `threshold` (default 5) and the excess over the median is at
//! least `min_excess` lines (default 50), and only once `min_history_days` (3) of the compared
//! days hold data (a lake's first days have no baseline). Localisation: per pod, today's lines minus the pod's own
//! median of the same hour: the largest increase is `top_pod` (its share of the service's
//! excess in `top_pod_share`); the same with templates (one miner over the service-hour's lines
//! of all the days compared) for `top_template`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use chrono::NaiveDate;

use crate::drain::{Drain, DrainConfig};
use crate::error::InsightsError;
use crate::lake::LakeSession;
use crate::templates::DaySource;

/// The table's name under the lake root.
pub const ANOMALIES_TABLE: &str = "log_anomalies";

/// Settings of the anomaly stage.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyOptions {
    pub history_days: u32,
    pub threshold: f64,
    pub min_excess: f64,
    /// Days of the history that must hold data before anything is flagged.
    pub min_history_days: u32,
}

impl Default for AnomalyOptions {
    fn default() -> Self {
        Self {
            history_days: 7,
            threshold: 5.0,
            min_excess: 50.0,
            min_history_days: 3,
        }
    }
}

/// The median of a list (0 for none).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// (median, robust z-score of `x`) against `history` (see the module docs for the scale).
pub fn robust_z(x: f64, history: &[f64]) -> (f64, f64) {
    let med = median(history);
    let dev: Vec<f64> = history.iter().map(|h| (h - med).abs()).collect();
    let mad = median(&dev);
    let scale = (1.4826 * mad).max(0.1 * med).max(1.0);
    (med, (x - med) / scale)
}

/// One row of `log_anomalies`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnomalyRow {
    pub dt: NaiveDate,
    pub hour: i32,
    pub namespace: String,
    pub service: String,
    pub rows: i64,
    pub baseline_rows: f64,
    pub rows_z: f64,
    pub errors: i64,
    pub baseline_errors: f64,
    pub errors_z: f64,
    pub is_anomaly: bool,
    pub top_pod: Option<String>,
    pub top_pod_share: Option<f64>,
    pub top_template: Option<String>,
    pub top_template_share: Option<f64>,
    pub drill_sql: Option<String>,
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The largest positive increase of `today[k] - median(history[k])`, and its share of `excess`.
fn top_increase(
    per_key_day: &BTreeMap<String, BTreeMap<NaiveDate, f64>>,
    day: NaiveDate,
    history: &[NaiveDate],
    excess: f64,
) -> Option<(String, f64)> {
    let mut best: Option<(String, f64)> = None;
    for (k, days) in per_key_day {
        let today = days.get(&day).copied().unwrap_or(0.0);
        let hist: Vec<f64> = history
            .iter()
            .map(|d| days.get(d).copied().unwrap_or(0.0))
            .collect();
        let inc = today - median(&hist);
        if inc > 0.0 && best.as_ref().is_none_or(|(_, b)| inc > *b) {
            best = Some((k.clone(), inc));
        }
    }
    best.map(|(k, inc)| {
        (
            k,
            if excess > 0.0 {
                (inc / excess).min(1.0)
            } else {
                0.0
            },
        )
    })
}

/// (hour, namespace, service).
type CellKey = (i32, String, String);

/// Per (hour, namespace, service): day -> (rows, errors).
type Cells = BTreeMap<CellKey, HashMap<NaiveDate, (f64, f64)>>;

/// Per key (pod or template): day -> lines.
type PerKeyDay = BTreeMap<String, BTreeMap<NaiveDate, f64>>;

/// What the queries of one day's scoring share: the logs table, the day, the days compared.
struct DayScope<'a> {
    lake: &'a LakeSession,
    src: &'a DaySource,
    day: NaiveDate,
    /// The previous days compared, most recent first.
    history: Vec<NaiveDate>,
    /// SQL filter on `dt` from the oldest compared day through `day`.
    range: String,
    /// SQL expression of the namespace (`''` when the table has none).
    ns_expr: &'static str,
}

impl<'a> DayScope<'a> {
    fn new(lake: &'a LakeSession, src: &'a DaySource, day: NaiveDate, history_days: u32) -> Self {
        let first = day - chrono::Duration::days(i64::from(history_days));
        let history = (1..=i64::from(history_days))
            .map(|i| day - chrono::Duration::days(i))
            .collect();
        let ns_expr = if table_has_column(lake, src, "namespace") {
            "COALESCE(\"namespace\", '')"
        } else {
            "''"
        };
        Self {
            lake,
            src,
            day,
            history,
            range: format!("\"dt\" BETWEEN DATE '{first}' AND DATE '{day}'"),
            ns_expr,
        }
    }

    /// Rows and errors per day × hour × namespace × service over the range.
    fn cells_sql(&self) -> String {
        format!(
            "SELECT CAST(\"dt\" AS VARCHAR) AS d, {hour} AS h, {ns_expr} AS ns, {svc} AS svc, count(*) AS n, \
             sum(CASE WHEN {err} THEN 1 ELSE 0 END) AS e FROM {t} WHERE {range} GROUP BY 1, 2, 3, 4",
            hour = self.src.hour,
            ns_expr = self.ns_expr,
            svc = self.src.service,
            err = self.src.is_error,
            t = self.src.table,
            range = self.range,
        )
    }
}

fn table_has_column(lake: &LakeSession, src: &DaySource, column: &str) -> bool {
    lake.columns(src.table.trim_matches('"'))
        .iter()
        .any(|c| c == column)
}

/// Score every service-hour of `day` and localise the anomalous ones.
pub async fn score_day(
    lake: &LakeSession,
    src: &DaySource,
    day: NaiveDate,
    opts: &AnomalyOptions,
) -> Result<Vec<AnomalyRow>, InsightsError> {
    let scope = DayScope::new(lake, src, day, opts.history_days);
    let cells = read_cells(lake, &scope.cells_sql()).await?;
    let enough_history = enough_history(&cells, &scope.history, opts.min_history_days);
    let mut out = Vec::new();
    for (key, days) in &cells {
        let Some(mut row) = score_cell(scope.day, key, days, &scope.history, enough_history, opts)
        else {
            continue;
        };
        if row.is_anomaly {
            localise(&scope, &mut row).await?;
        }
        out.push(row);
    }
    Ok(out)
}

/// Run [`DayScope::cells_sql`] into per-cell day counts (rows whose day does not parse are
/// skipped).
async fn read_cells(lake: &LakeSession, sql: &str) -> Result<Cells, InsightsError> {
    let mut cells = Cells::new();
    for b in lake.query(sql).await? {
        let b = crate::report::cast_columns(&b)?;
        let d = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<Int64Type>();
        let ns = b.column(2).as_string::<i32>();
        let svc = b.column(3).as_string::<i32>();
        let n = b.column(4).as_primitive::<Int64Type>();
        let e = b.column(5).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let Ok(dd) = NaiveDate::parse_from_str(d.value(i), "%Y-%m-%d") else {
                continue;
            };
            cells
                .entry((
                    h.value(i) as i32,
                    ns.value(i).to_string(),
                    svc.value(i).to_string(),
                ))
                .or_default()
                .insert(dd, (n.value(i) as f64, e.value(i) as f64));
        }
    }
    Ok(cells)
}

/// Whether at least `min_days` of the compared days hold data (no baseline without history: a
/// lake's first days flag nothing).
fn enough_history(cells: &Cells, history: &[NaiveDate], min_days: u32) -> bool {
    let days_with_data: std::collections::BTreeSet<NaiveDate> = cells
        .values()
        .flat_map(|d| d.keys().copied())
        .filter(|d| history.contains(d))
        .collect();
    days_with_data.len() >= min_days as usize
}

/// The row of one service-hour of `day` against its history, not yet localised (None: the cell
/// has no lines on `day`).
fn score_cell(
    day: NaiveDate,
    (hour, ns, svc): &CellKey,
    days: &HashMap<NaiveDate, (f64, f64)>,
    history: &[NaiveDate],
    enough_history: bool,
    opts: &AnomalyOptions,
) -> Option<AnomalyRow> {
    let &(rows, errors) = days.get(&day)?;
    let hist_rows: Vec<f64> = history
        .iter()
        .map(|d| days.get(d).map_or(0.0, |v| v.0))
        .collect();
    let hist_err: Vec<f64> = history
        .iter()
        .map(|d| days.get(d).map_or(0.0, |v| v.1))
        .collect();
    let (base_rows, rows_z) = robust_z(rows, &hist_rows);
    let (base_err, errors_z) = robust_z(errors, &hist_err);
    let is_anomaly = enough_history
        && ((rows_z >= opts.threshold && rows - base_rows >= opts.min_excess)
            || (errors_z >= opts.threshold && errors - base_err >= opts.min_excess));
    Some(AnomalyRow {
        dt: day,
        hour: *hour,
        namespace: ns.clone(),
        service: svc.clone(),
        rows: rows as i64,
        baseline_rows: base_rows,
        rows_z,
        errors: errors as i64,
        baseline_errors: base_err,
        errors_z,
        is_anomaly,
        top_pod: None,
        top_pod_share: None,
        top_template: None,
        top_template_share: None,
        drill_sql: None,
    })
}

/// Name the pod and the template that explain most of an anomalous row's excess, and set its
/// drill-down SQL.
async fn localise(scope: &DayScope<'_>, row: &mut AnomalyRow) -> Result<(), InsightsError> {
    let excess = (row.rows as f64 - row.baseline_rows).max(0.0);
    let has_pod = table_has_column(scope.lake, scope.src, "pod");
    let (pods, templates) = lines_per_pod_and_template(scope, row, has_pod).await?;
    if let Some((pod, share)) = top_increase(&pods, row.dt, &scope.history, excess) {
        row.top_pod = Some(pod);
        row.top_pod_share = Some(share);
    }
    if let Some((t, share)) = top_increase(&templates, row.dt, &scope.history, excess) {
        row.top_template = Some(t);
        row.top_template_share = Some(share);
    }
    row.drill_sql = Some(drill_sql(scope.src, row, has_pod));
    Ok(())
}

/// The service-hour's lines of every compared day, counted per pod and per template (one miner
/// over all of them, in `ts` order).
async fn lines_per_pod_and_template(
    scope: &DayScope<'_>,
    row: &AnomalyRow,
    has_pod: bool,
) -> Result<(PerKeyDay, PerKeyDay), InsightsError> {
    let pod_expr = if has_pod {
        "COALESCE(\"pod\", '')"
    } else {
        "''"
    };
    let sql = format!(
        "SELECT CAST(\"dt\" AS VARCHAR) AS d, {pod_expr} AS pod, CAST(message AS VARCHAR) AS m FROM {t} \
         WHERE {range} AND {hour} = {h} AND {ns_expr} = {ns} AND {svc} = {s} ORDER BY ts",
        t = scope.src.table,
        range = scope.range,
        hour = scope.src.hour,
        h = row.hour,
        ns_expr = scope.ns_expr,
        ns = lit(&row.namespace),
        svc = scope.src.service,
        s = lit(&row.service),
    );
    let mut pods = PerKeyDay::new();
    let mut per_line: Vec<(NaiveDate, u32)> = Vec::new();
    let mut miner = Drain::new(DrainConfig::default());
    for b in scope.lake.query(&sql).await? {
        let b = crate::report::cast_columns(&b)?;
        let d = b.column(0).as_string::<i32>();
        let p = b.column(1).as_string::<i32>();
        let m = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            let Ok(dd) = NaiveDate::parse_from_str(d.value(i), "%Y-%m-%d") else {
                continue;
            };
            *pods
                .entry(p.value(i).to_string())
                .or_default()
                .entry(dd)
                .or_default() += 1.0;
            per_line.push((dd, miner.add(m.value(i))));
        }
    }
    Ok((pods, lines_per_template(&miner, per_line)))
}

/// Count the mined lines (day, cluster) per final template text and day.
fn lines_per_template(miner: &Drain, per_line: Vec<(NaiveDate, u32)>) -> PerKeyDay {
    let texts: Vec<String> = miner.clusters().iter().map(|c| c.template()).collect();
    let mut templates = PerKeyDay::new();
    for (dd, c) in per_line {
        *templates
            .entry(texts[c as usize].clone())
            .or_default()
            .entry(dd)
            .or_default() += 1.0;
    }
    templates
}

/// The SQL showing an anomalous service-hour's lines with their template ids (only the top
/// pod's, when the table has pods and one was named).
fn drill_sql(src: &DaySource, row: &AnomalyRow, has_pod: bool) -> String {
    let pod_filter = match (&row.top_pod, has_pod) {
        (Some(p), true) => format!(" AND pod = {}", lit(p)),
        _ => String::new(),
    };
    format!(
        "SELECT ts, pod, level, message, log_template_id(message) OVER (ORDER BY ts) AS template_id FROM {t} \
         WHERE dt = DATE '{d}' AND {hour} = {h} AND {svc} = {s}{pod_filter} ORDER BY ts",
        t = src.table,
        d = row.dt,
        hour = src.hour,
        h = row.hour,
        svc = src.service,
        s = lit(&row.service),
    )
}

/// The schema of `log_anomalies`.
pub fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
        Field::new("namespace", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("baseline_rows", DataType::Float64, false),
        Field::new("rows_z", DataType::Float64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("baseline_errors", DataType::Float64, false),
        Field::new("errors_z", DataType::Float64, false),
        Field::new("is_anomaly", DataType::Boolean, false),
        Field::new("top_pod", DataType::Utf8, true),
        Field::new("top_pod_share", DataType::Float64, true),
        Field::new("top_template", DataType::Utf8, true),
        Field::new("top_template_share", DataType::Float64, true),
        Field::new("drill_sql", DataType::Utf8, true),
    ]))
}

fn to_batch(rows: &[AnomalyRow]) -> Result<RecordBatch, InsightsError> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let mut dt = Date32Builder::new();
    let mut hour = Int32Builder::new();
    let mut s: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    let mut i: Vec<Int64Builder> = (0..2).map(|_| Int64Builder::new()).collect();
    let mut f: Vec<Float64Builder> = (0..6).map(|_| Float64Builder::new()).collect();
    let mut flag = BooleanBuilder::new();
    for r in rows {
        dt.append_value((r.dt - epoch).num_days() as i32);
        hour.append_value(r.hour);
        s[0].append_value(&r.namespace);
        s[1].append_value(&r.service);
        s[2].append_option(r.top_pod.as_deref());
        s[3].append_option(r.top_template.as_deref());
        s[4].append_option(r.drill_sql.as_deref());
        i[0].append_value(r.rows);
        i[1].append_value(r.errors);
        f[0].append_value(r.baseline_rows);
        f[1].append_value(r.rows_z);
        f[2].append_value(r.baseline_errors);
        f[3].append_value(r.errors_z);
        f[4].append_option(r.top_pod_share);
        f[5].append_option(r.top_template_share);
        flag.append_value(r.is_anomaly);
    }
    let fin = |b: &mut StringBuilder| Arc::new(b.finish()) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(dt.finish()),
        Arc::new(hour.finish()),
        fin(&mut s[0]),
        fin(&mut s[1]),
        Arc::new(i[0].finish()),
        Arc::new(f[0].finish()),
        Arc::new(f[1].finish()),
        Arc::new(i[1].finish()),
        Arc::new(f[2].finish()),
        Arc::new(f[3].finish()),
        Arc::new(flag.finish()),
        fin(&mut s[2]),
        Arc::new(f[4].finish()),
        fin(&mut s[3]),
        Arc::new(f[5].finish()),
        fin(&mut s[4]),
    ];
    RecordBatch::try_new(table_schema(), cols)
        .map_err(|e| InsightsError::Invalid(format!("log_anomalies batch: {e}")))
}

/// What [`detect_anomalies_for_day`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnomalyMetrics {
    pub day: NaiveDate,
    pub service_hours: usize,
    pub anomalies: Vec<AnomalyRow>,
}

/// The nightly stage: score `day` of the logs table into `<lake>/log_anomalies`, replacing that
/// day's partition; returns the anomalies found.
pub async fn detect_anomalies_for_day(
    lake_url: &str,
    logs_table: Option<&str>,
    day: NaiveDate,
    opts: &AnomalyOptions,
) -> Result<AnomalyMetrics, InsightsError> {
    let lake = LakeSession::open(lake_url).await?;
    let src = DaySource::resolve(&lake, logs_table, day)?;
    if !lake
        .columns(src.table.trim_matches('"'))
        .iter()
        .any(|c| c == "dt")
    {
        return Err(InsightsError::Invalid(format!(
            "table {} has no dt partition column",
            src.table
        )));
    }
    let rows = score_day(&lake, &src, day, opts).await?;
    let batch = to_batch(&rows)?;
    crate::lake::replace_day(&lake.root, ANOMALIES_TABLE, batch, day).await?;
    Ok(AnomalyMetrics {
        day,
        service_hours: rows.len(),
        anomalies: rows.into_iter().filter(|r| r.is_anomaly).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_robust_z() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        // regular traffic: MAD 0, the scale floors at 10 % of the median
        let (m, z) = robust_z(1500.0, &[1000.0; 7]);
        assert_eq!((m, z), (1000.0, 5.0));
        let (_, z) = robust_z(
            1040.0,
            &[1000.0, 980.0, 1020.0, 990.0, 1010.0, 1000.0, 1005.0],
        );
        assert!(z < 5.0, "{z}");
        // a service that was silent: the scale floors at 1 line
        assert_eq!(robust_z(3.0, &[0.0; 7]), (0.0, 3.0));
    }

    #[test]
    fn top_increase_names_the_key_that_grew_most() {
        let d = |i: u32| NaiveDate::from_ymd_opt(2024, 5, i).unwrap();
        let mut m: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
        for i in 1..=3 {
            m.entry("a".into()).or_default().insert(d(i), 10.0);
            m.entry("b".into()).or_default().insert(d(i), 10.0);
        }
        m.entry("a".into()).or_default().insert(d(4), 12.0);
        m.entry("b".into()).or_default().insert(d(4), 110.0);
        let (k, share) = top_increase(&m, d(4), &[d(3), d(2), d(1)], 102.0).unwrap();
        assert_eq!(k, "b");
        assert!((share - 100.0 / 102.0).abs() < 1e-9);
    }
}
