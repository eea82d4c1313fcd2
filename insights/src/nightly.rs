//! All insights derivations of one day, in order, as one library call for the nightly runner
//! (and `loglake insights day` by hand): templates, Kubernetes health (when the lake has
//! `k8s_events`), anomalies, then the report (which shows what the others wrote).

use std::path::PathBuf;

use chrono::NaiveDate;

use crate::anomalies::{AnomalyOptions, detect_anomalies_for_day};
use crate::drain::DrainConfig;
use crate::error::InsightsError;
use crate::k8s::{EVENTS_TABLE, derive_k8s_health_for_day};
use crate::report::{ReportArgs, write_report};
use crate::templates::mine_templates_for_day;

/// What to derive.
#[derive(Debug, Clone)]
pub struct DayOptions {
    pub lake: String,
    pub day: NaiveDate,
    pub logs_table: Option<String>,
    /// Where the report goes (None: no report).
    pub report_dir: Option<PathBuf>,
    pub drain: DrainConfig,
    pub anomalies: AnomalyOptions,
}

/// What each stage did (None: skipped).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DayMetrics {
    pub templates: crate::templates::TemplatesMetrics,
    pub k8s_health: Option<crate::k8s::HealthMetrics>,
    pub anomalies: usize,
    pub service_hours: usize,
    pub report: Option<crate::report::ReportMetrics>,
}

/// Run the day's derivations in order (each replaces its day's partition: re-running is safe).
pub async fn derive_day(opts: &DayOptions) -> Result<DayMetrics, InsightsError> {
    let templates = mine_templates_for_day(
        &opts.lake,
        opts.logs_table.as_deref(),
        opts.day,
        &opts.drain,
    )
    .await?;
    let has_events = crate::lake::LakeSession::open(&opts.lake)
        .await?
        .has_table(EVENTS_TABLE);
    let k8s_health = if has_events {
        Some(derive_k8s_health_for_day(&opts.lake, opts.day).await?)
    } else {
        None
    };
    let an = detect_anomalies_for_day(
        &opts.lake,
        opts.logs_table.as_deref(),
        opts.day,
        &opts.anomalies,
    )
    .await?;
    let report = match &opts.report_dir {
        Some(dir) => Some(
            write_report(&ReportArgs {
                lake: opts.lake.clone(),
                date: Some(opts.day),
                out: dir.clone(),
                logs_table: opts.logs_table.clone(),
                dlq_table: None,
                top: 20,
            })
            .await?,
        ),
        None => None,
    };
    Ok(DayMetrics {
        templates,
        k8s_health,
        anomalies: an.anomalies.len(),
        service_hours: an.service_hours,
        report,
    })
}
