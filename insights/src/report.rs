//! `loglake report --lake URL --date D --out DIR`: one self-contained HTML page of a day (inline
//! SVG and CSS, a few lines of inline script to sort tables; nothing fetched) plus the same data
//! as `report-D.json`.
//!
//! Sections: volume and error rate per service per hour (stacked bars, heatmap), top templates
//! and the templates new that day (mined per service, seeded with the `log_templates` table when
//! the lake has one, so ids and "new" agree with it), dead letters of the day (by Drain template
//! of their error), completeness markers of each table for the day, and the compaction state
//! (data files per partition of the day); when the lake has them, the day's `k8s_health` per
//! workload and the anomalies of `log_anomalies` with their drill-down SQL. Every number the page shows is also in a `data-*`
//! attribute, so a test can read it from the DOM.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use serde::Serialize;

use crate::drain::DrainConfig;
use crate::error::InsightsError;
use crate::lake::LakeSession;
use crate::templates::{DaySource, DayTemplate, TEMPLATES_TABLE, mine_day};

/// Arguments of `loglake report`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Writes DIR/report-DATE.html (open it in a browser; no network needed) and \
DIR/report-DATE.json. Exit codes: 0 written, 1 failure, 2 bad arguments."
)]
pub struct ReportArgs {
    /// Lake root (s3://bucket/prefix or a local path).
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The day to report (UTC, YYYY-MM-DD; default: yesterday).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<NaiveDate>,
    /// Folder to write the report into (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The logs table (default: container_logs, containers or logs, else the first table with
    /// message and ts columns).
    #[arg(long, value_name = "NAME")]
    pub logs_table: Option<String>,
    /// The dead-letter table (default: dead_letters when present).
    #[arg(long, value_name = "NAME")]
    pub dlq_table: Option<String>,
    /// Templates listed in "top templates".
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// What a report holds (also its JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub date: NaiveDate,
    pub lake: String,
    pub logs_table: String,
    pub generated_at: String,
    pub rows: u64,
    pub errors: u64,
    pub services: Vec<ServiceDay>,
    pub hourly: Vec<HourRow>,
    pub templates_total: usize,
    pub top_templates: Vec<DayTemplate>,
    pub new_templates: Vec<DayTemplate>,
    /// Whether "new" is known (the lake has a `log_templates` table with earlier days).
    pub template_history: bool,
    pub dead_letters: Option<DeadLetters>,
    pub completeness: Vec<Completeness>,
    pub compaction: Vec<Compaction>,
    /// Health signals per namespace and workload (None: no `k8s_health` table).
    pub health: Option<Vec<HealthSummary>>,
    /// The day's flagged rows of `log_anomalies` (None: no such table).
    pub anomalies: Option<Vec<Anomaly>>,
}

/// A workload's health signals of the day (the `k8s_health` columns summed).
#[derive(Debug, Clone, Serialize)]
pub struct HealthSummary {
    pub namespace: String,
    pub workload: String,
    /// In [`crate::k8s::SIGNALS`] order.
    pub counts: Vec<i64>,
}

/// An anomaly of the day, as `log_anomalies` holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub hour: i64,
    pub namespace: String,
    pub service: String,
    pub rows: i64,
    pub baseline_rows: f64,
    pub rows_z: f64,
    pub errors: i64,
    pub top_pod: Option<String>,
    pub top_template: Option<String>,
    pub drill_sql: Option<String>,
}

/// A service's day.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDay {
    pub service: String,
    pub rows: u64,
    pub errors: u64,
}

/// One service's hour.
#[derive(Debug, Clone, Serialize)]
pub struct HourRow {
    pub service: String,
    pub hour: i32,
    pub rows: u64,
    pub errors: u64,
}

/// The day's dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetters {
    pub table: String,
    pub total: u64,
    /// (error template, count), most frequent first.
    pub by_error: Vec<(String, u64)>,
}

/// A table's completeness marker for the day.
#[derive(Debug, Clone, Serialize)]
pub struct Completeness {
    pub table: String,
    pub complete: bool,
    pub rows: Option<i64>,
    pub watermark: Option<String>,
}

/// A table's data files of the day.
#[derive(Debug, Clone, Serialize)]
pub struct Compaction {
    pub table: String,
    pub partitions: usize,
    pub files: u64,
    pub max_files_per_partition: u64,
    pub bytes: u64,
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportMetrics {
    pub html: PathBuf,
    pub json: PathBuf,
    pub rows: u64,
    pub services: usize,
    pub templates: usize,
    pub new_templates: usize,
    pub dead_letters: u64,
}

/// `loglake report`: write the report and print where it is.
pub fn run_report(args: ReportArgs) -> Result<ExitCode, InsightsError> {
    let m = runtime()?.block_on(write_report(&args))?;
    println!("{}", m.html.display());
    eprintln!(
        "loglake report: {} rows, {} services, {} templates ({} new), {} dead letters; data in {}",
        m.rows,
        m.services,
        m.templates,
        m.new_templates,
        m.dead_letters,
        m.json.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The given day, else yesterday (UTC): every stage's default `--date`.
pub(crate) fn day_or_yesterday(date: Option<NaiveDate>) -> NaiveDate {
    date.unwrap_or_else(|| (chrono::Utc::now() - chrono::Duration::days(1)).date_naive())
}

/// The runtime a `loglake report` / `loglake insights` invocation runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, InsightsError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| InsightsError::Io {
            path: "tokio runtime".into(),
            source: e,
        })
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Collect the day's data from the lake (see the module docs).
pub async fn collect(args: &ReportArgs) -> Result<ReportData, InsightsError> {
    let day = day_or_yesterday(args.date);
    let lake = LakeSession::open(&args.lake).await?;
    let src = DaySource::resolve(&lake, args.logs_table.as_deref(), day)?;
    let hourly = hourly(&lake, &src).await?;
    let services = services_of(&hourly);

    let templates = mine_day(&lake, &src, day, &DrainConfig::default()).await?;
    let template_history = lake.has_table(TEMPLATES_TABLE)
        && !crate::templates::known_before(&lake, day).await?.is_empty();
    let new_templates: Vec<DayTemplate> = if template_history {
        templates.iter().filter(|t| t.new_today).cloned().collect()
    } else {
        Vec::new()
    };

    let dead_letters = match dead_letter_table(&lake, args.dlq_table.as_deref())? {
        Some(t) => Some(dead_letters(&lake, &t, day).await?),
        None => None,
    };
    let (completeness, compaction) = table_states(&lake, day).await?;
    let health = if lake.has_table(crate::k8s::HEALTH_TABLE) {
        Some(health(&lake, day).await?)
    } else {
        None
    };
    let anomalies = if lake.has_table(crate::anomalies::ANOMALIES_TABLE) {
        Some(anomalies(&lake, day).await?)
    } else {
        None
    };
    Ok(ReportData {
        date: day,
        lake: args.lake.clone(),
        logs_table: src.table.trim_matches('"').to_string(),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        rows: services.iter().map(|s| s.rows).sum(),
        errors: services.iter().map(|s| s.errors).sum(),
        services,
        hourly,
        templates_total: templates.len(),
        top_templates: templates.iter().take(args.top).cloned().collect(),
        new_templates,
        template_history,
        dead_letters,
        completeness,
        compaction,
        health,
        anomalies,
    })
}

/// Rows and errors of the day per service and hour, ordered by service then hour.
async fn hourly(lake: &LakeSession, src: &DaySource) -> Result<Vec<HourRow>, InsightsError> {
    let sql = format!(
        "SELECT {svc} AS service, {hour} AS hour, count(*) AS n, \
         sum(CASE WHEN {err} THEN 1 ELSE 0 END) AS e FROM {t} WHERE {f} GROUP BY 1, 2 ORDER BY 1, 2",
        svc = src.service,
        hour = src.hour,
        err = src.is_error,
        t = src.table,
        f = src.day_filter
    );
    let mut hourly = Vec::new();
    for b in lake.query(&sql).await? {
        let b = cast_columns(&b)?;
        let s = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<Int64Type>();
        let n = b.column(2).as_primitive::<Int64Type>();
        let e = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            hourly.push(HourRow {
                service: s.value(i).to_string(),
                hour: h.value(i) as i32,
                rows: u(n.value(i)),
                errors: if e.is_valid(i) { u(e.value(i)) } else { 0 },
            });
        }
    }
    Ok(hourly)
}

/// The day per service, most lines first (ties by name).
fn services_of(hourly: &[HourRow]) -> Vec<ServiceDay> {
    let mut by_svc: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in hourly {
        let e = by_svc.entry(r.service.clone()).or_default();
        e.0 += r.rows;
        e.1 += r.errors;
    }
    let mut services: Vec<ServiceDay> = by_svc
        .into_iter()
        .map(|(service, (rows, errors))| ServiceDay {
            service,
            rows,
            errors,
        })
        .collect();
    services.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.service.cmp(&b.service)));
    services
}

/// The dead-letter table to report: `--dlq-table` (an error when the lake lacks it), else
/// `dead_letters` when present.
fn dead_letter_table(
    lake: &LakeSession,
    dlq_table: Option<&str>,
) -> Result<Option<String>, InsightsError> {
    match dlq_table {
        Some(t) if !lake.has_table(t) => Err(InsightsError::Invalid(format!(
            "no dead-letter table {t:?} under {}",
            lake.root
        ))),
        Some(t) => Ok(Some(t.to_string())),
        None => Ok(lake
            .has_table("dead_letters")
            .then(|| "dead_letters".to_string())),
    }
}

/// Each table's completeness marker and data files of the day.
async fn table_states(
    lake: &LakeSession,
    day: NaiveDate,
) -> Result<(Vec<Completeness>, Vec<Compaction>), InsightsError> {
    let mut completeness = Vec::new();
    let mut compaction = Vec::new();
    for name in lake.tables.keys() {
        if !lake.has_table(name) {
            continue;
        }
        let m = lake.marker(name, day).await?;
        completeness.push(Completeness {
            table: name.clone(),
            complete: m.is_some(),
            rows: m.as_ref().and_then(|m| m["rows"].as_i64()),
            watermark: m
                .as_ref()
                .and_then(|m| m["watermark"].as_str().map(str::to_string)),
        });
        let files = lake.files_of_day(name, day);
        compaction.push(Compaction {
            table: name.clone(),
            partitions: files.len(),
            files: files.values().map(|v| v.0).sum(),
            max_files_per_partition: files.values().map(|v| v.0).max().unwrap_or(0),
            bytes: files.values().map(|v| v.1).sum(),
        });
    }
    Ok((completeness, compaction))
}

async fn health(lake: &LakeSession, day: NaiveDate) -> Result<Vec<HealthSummary>, InsightsError> {
    let cols: Vec<String> = crate::k8s::SIGNALS
        .iter()
        .map(|(_, c)| format!("sum({c})"))
        .collect();
    let total = cols.join(" + ");
    let sql = format!(
        "SELECT namespace, workload, {} FROM {} WHERE dt = DATE '{day}' GROUP BY 1, 2 \
         HAVING {total} > 0 ORDER BY {total} DESC, 1, 2",
        cols.join(", "),
        crate::k8s::HEALTH_TABLE
    );
    let mut out = Vec::new();
    for b in lake.query(&sql).await? {
        let b = cast_columns(&b)?;
        let ns = b.column(0).as_string::<i32>();
        let w = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push(HealthSummary {
                namespace: ns.value(i).to_string(),
                workload: w.value(i).to_string(),
                counts: (0..crate::k8s::SIGNALS.len())
                    .map(|c| b.column(2 + c).as_primitive::<Int64Type>().value(i))
                    .collect(),
            });
        }
    }
    Ok(out)
}

async fn anomalies(lake: &LakeSession, day: NaiveDate) -> Result<Vec<Anomaly>, InsightsError> {
    let sql = format!(
        "SELECT hour, namespace, service, rows, errors, top_pod, top_template, drill_sql, \
         CAST(baseline_rows * 1000 AS BIGINT), CAST(rows_z * 1000 AS BIGINT) FROM {} \
         WHERE dt = DATE '{day}' AND is_anomaly ORDER BY rows_z DESC, hour, service",
        crate::anomalies::ANOMALIES_TABLE
    );
    let mut out = Vec::new();
    for b in lake.query(&sql).await? {
        let b = cast_columns(&b)?;
        let int = |c: usize, i: usize| b.column(c).as_primitive::<Int64Type>().value(i);
        let text = |c: usize, i: usize| {
            let a = b.column(c).as_string::<i32>();
            a.is_valid(i).then(|| a.value(i).to_string())
        };
        for i in 0..b.num_rows() {
            out.push(Anomaly {
                hour: int(0, i),
                namespace: text(1, i).unwrap_or_default(),
                service: text(2, i).unwrap_or_default(),
                rows: int(3, i),
                errors: int(4, i),
                top_pod: text(5, i),
                top_template: text(6, i),
                drill_sql: text(7, i),
                baseline_rows: int(8, i) as f64 / 1000.0,
                rows_z: int(9, i) as f64 / 1000.0,
            });
        }
    }
    Ok(out)
}

/// Cast the numeric columns of a batch to Int64 (count/sum types differ by engine version).
pub(crate) fn cast_columns(
    b: &arrow::array::RecordBatch,
) -> Result<arrow::array::RecordBatch, InsightsError> {
    use arrow::datatypes::DataType;
    let bad = |e: arrow::error::ArrowError| InsightsError::Invalid(format!("report query: {e}"));
    let cols = b
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8 | DataType::Boolean => Ok(c.clone()),
            DataType::Utf8View | DataType::LargeUtf8 => arrow::compute::cast(c, &DataType::Utf8),
            _ => arrow::compute::cast(c, &DataType::Int64),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let fields: Vec<arrow::datatypes::Field> = b
        .schema()
        .fields()
        .iter()
        .zip(&cols)
        .map(|(f, c)| arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )
    .map_err(bad)
}

async fn dead_letters(
    lake: &LakeSession,
    table: &str,
    day: NaiveDate,
) -> Result<DeadLetters, InsightsError> {
    let cols = lake.columns(table);
    let day_filter = if cols.iter().any(|c| c == "dt") {
        format!("\"dt\" = DATE '{day}'")
    } else {
        format!("CAST(ingest_ts AS DATE) = DATE '{day}'")
    };
    let sql = format!(
        "SELECT template, count FROM log_templates('SELECT error AS message FROM \"{table}\" WHERE {}') ORDER BY count DESC, template",
        day_filter.replace('\'', "''")
    );
    let mut by_error = Vec::new();
    for b in lake.query(&sql).await? {
        let b = cast_columns(&b)?;
        let t = b.column(0).as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            by_error.push((t.value(i).to_string(), u(n.value(i))));
        }
    }
    Ok(DeadLetters {
        table: table.to_string(),
        total: by_error.iter().map(|e| e.1).sum(),
        by_error,
    })
}

/// Write the report of `args.date` into `args.out`: `report-D.html` and `report-D.json`.
pub async fn write_report(args: &ReportArgs) -> Result<ReportMetrics, InsightsError> {
    let data = collect(args).await?;
    let io = |p: &std::path::Path| {
        let path = p.display().to_string();
        move |e| InsightsError::Io { path, source: e }
    };
    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    let html_path = args.out.join(format!("report-{}.html", data.date));
    let json_path = args.out.join(format!("report-{}.json", data.date));
    let json = serde_json::to_vec_pretty(&data)
        .map_err(|e| InsightsError::Invalid(format!("report JSON: {e}")))?;
    std::fs::write(&json_path, json).map_err(io(&json_path))?;
    std::fs::write(&html_path, crate::html::render(&data)).map_err(io(&html_path))?;
    Ok(ReportMetrics {
        html: html_path,
        json: json_path,
        rows: data.rows,
        services: data.services.len(),
        templates: data.templates_total,
        new_templates: data.new_templates.len(),
        dead_letters: data.dead_letters.as_ref().map_or(0, |d| d.total),
    })
}

/// A cheap `write!` into a String (never fails).
pub(crate) fn w(s: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = s.write_fmt(args);
}
