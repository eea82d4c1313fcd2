//! `loglake insights …`: the nightly derivations run by hand.

use std::process::ExitCode;

use chrono::NaiveDate;

use crate::drain::DrainConfig;
use crate::error::InsightsError;
use crate::report::{day_or_yesterday, runtime};

/// Arguments of `loglake insights`.
#[derive(Debug, Clone, clap::Args)]
pub struct InsightsArgs {
    #[command(subcommand)]
    pub command: InsightsCommand,
}

/// The derivations.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum InsightsCommand {
    /// Everything for a day, in order: templates, k8s-health (when the lake has k8s_events),
    /// anomalies, then the report into --out (as the nightly runner calls it).
    Day(DayArgs),
    /// Mine a day of the logs table into the `log_templates` Delta table (per service; stable
    /// ids; first_seen, new_today), replacing that day's partition.
    Templates(TemplatesArgs),
    /// Decode Kubernetes Events files (EventList, watch notifications, Fluent Bit records; JSON,
    /// one document per file or per line) and append them to the `k8s_events` Delta table.
    K8sEvents(K8sEventsArgs),
    /// Count a day's health signals of `k8s_events` into the `k8s_health` Delta table (per hour ×
    /// namespace × workload × node), replacing that day's partition.
    K8sHealth(K8sHealthArgs),
    /// Score a day's log volume and errors per hour × namespace × service against the same hour
    /// of the previous days into the `log_anomalies` Delta table; prints the anomalies.
    Anomalies(AnomaliesArgs),
}

/// Arguments of `loglake insights anomalies`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnomaliesArgs {
    /// Lake root (writes <lake>/log_anomalies).
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The day (UTC, YYYY-MM-DD; default: yesterday).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<NaiveDate>,
    /// The logs table (default: as `loglake report`).
    #[arg(long, value_name = "NAME")]
    pub logs_table: Option<String>,
    /// Previous days compared.
    #[arg(long, default_value_t = 7)]
    pub history_days: u32,
    /// Robust z-score from which an hour is anomalous.
    #[arg(long, default_value_t = 5.0)]
    pub threshold: f64,
    /// Lines over the median an anomaly needs at least.
    #[arg(long, default_value_t = 50.0)]
    pub min_excess: f64,
}

/// Arguments of `loglake insights k8s-events`.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sEventsArgs {
    /// Lake root; the table is <lake>/k8s_events.
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// Files to decode.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,
}

/// Arguments of `loglake insights k8s-health`.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sHealthArgs {
    /// Lake root (reads <lake>/k8s_events, writes <lake>/k8s_health).
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The day (UTC, YYYY-MM-DD; default: yesterday).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<NaiveDate>,
}

/// Decode one file: a whole JSON document, else one document per line.
pub fn decode_file(path: &std::path::Path) -> Result<Vec<crate::k8s::K8sEvent>, InsightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| InsightsError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let bad = |line: usize, e: String| {
        InsightsError::Invalid(format!("{}: line {line}: {e}", path.display()))
    };
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) {
        return crate::k8s::decode_events(&doc).map_err(|e| bad(1, e));
    }
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let doc: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        out.extend(crate::k8s::decode_events(&doc).map_err(|e| bad(i + 1, e))?);
    }
    Ok(out)
}

/// Arguments of `loglake insights day`.
#[derive(Debug, Clone, clap::Args)]
pub struct DayArgs {
    /// Lake root (s3://bucket/prefix or a local path).
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The day (UTC, YYYY-MM-DD; default: yesterday).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<NaiveDate>,
    /// The logs table (default: as `loglake report`).
    #[arg(long, value_name = "NAME")]
    pub logs_table: Option<String>,
    /// Write the report into this folder too.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// Arguments of `loglake insights templates`.
#[derive(Debug, Clone, clap::Args)]
pub struct TemplatesArgs {
    /// Lake root (s3://bucket/prefix or a local path); the table is written to <lake>/log_templates.
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The day to mine (UTC, YYYY-MM-DD; default: yesterday).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<NaiveDate>,
    /// The logs table (default: as `loglake report`).
    #[arg(long, value_name = "NAME")]
    pub logs_table: Option<String>,
    /// Miner settings: `similarity=0.5,depth=4,max_children=100`.
    #[arg(long, value_name = "OPTIONS", default_value = "")]
    pub options: String,
}

/// Run `loglake insights …`; prints the stage's metrics as JSON.
pub fn run_insights(args: InsightsArgs) -> Result<ExitCode, InsightsError> {
    let rt = runtime()?;
    match args.command {
        InsightsCommand::Day(a) => run_day(&rt, a)?,
        InsightsCommand::Templates(a) => run_templates(&rt, &a)?,
        InsightsCommand::K8sEvents(a) => run_k8s_events(&rt, &a)?,
        InsightsCommand::Anomalies(a) => run_anomalies(&rt, &a)?,
        InsightsCommand::K8sHealth(a) => run_k8s_health(&rt, &a)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Print a stage's metrics as one line of JSON on stdout.
fn print_json<T: serde::Serialize>(m: &T) {
    println!(
        "{}",
        serde_json::to_string(m).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

/// `loglake insights day`.
fn run_day(rt: &tokio::runtime::Runtime, a: DayArgs) -> Result<(), InsightsError> {
    let day = day_or_yesterday(a.date);
    let m = rt.block_on(crate::derive_day(&crate::DayOptions {
        lake: a.lake,
        day,
        logs_table: a.logs_table,
        report_dir: a.out,
        drain: DrainConfig::default(),
        anomalies: crate::AnomalyOptions::default(),
    }))?;
    print_json(&m);
    Ok(())
}

/// `loglake insights templates`.
fn run_templates(rt: &tokio::runtime::Runtime, a: &TemplatesArgs) -> Result<(), InsightsError> {
    let cfg = DrainConfig::parse(&a.options)
        .map_err(|e| InsightsError::Invalid(format!("--options: {e}")))?;
    let day = day_or_yesterday(a.date);
    let m = rt.block_on(crate::mine_templates_for_day(
        &a.lake,
        a.logs_table.as_deref(),
        day,
        &cfg,
    ))?;
    print_json(&m);
    Ok(())
}

/// `loglake insights k8s-events`: decode every file first, then append them all.
fn run_k8s_events(rt: &tokio::runtime::Runtime, a: &K8sEventsArgs) -> Result<(), InsightsError> {
    let mut events = Vec::new();
    for f in &a.files {
        events.extend(decode_file(f)?);
    }
    let n = rt.block_on(crate::k8s::load_events(&a.lake, &events))?;
    println!("{{\"events\":{n}}}");
    Ok(())
}

/// `loglake insights anomalies`.
fn run_anomalies(rt: &tokio::runtime::Runtime, a: &AnomaliesArgs) -> Result<(), InsightsError> {
    let day = day_or_yesterday(a.date);
    let opts = crate::AnomalyOptions {
        history_days: a.history_days.max(1),
        threshold: a.threshold,
        min_excess: a.min_excess,
        ..Default::default()
    };
    let m = rt.block_on(crate::detect_anomalies_for_day(
        &a.lake,
        a.logs_table.as_deref(),
        day,
        &opts,
    ))?;
    print_json(&m);
    Ok(())
}

/// `loglake insights k8s-health`.
fn run_k8s_health(rt: &tokio::runtime::Runtime, a: &K8sHealthArgs) -> Result<(), InsightsError> {
    let day = day_or_yesterday(a.date);
    let m = rt.block_on(crate::derive_k8s_health_for_day(&a.lake, day))?;
    print_json(&m);
    Ok(())
}
