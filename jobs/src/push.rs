//! `--pushgateway URL`: a CronJob's pod is gone before Prometheus could scrape it, so a run pushes
//! its figures to a Prometheus Pushgateway when it ends (success or failure), grouped by
//! `job="loglake_nightly"` and `lake` (the lake URL with every character outside `[A-Za-z0-9_.-]`
//! replaced by `_`). The figures are gauges (a pushed group replaces the previous one):
//!
//! - `loglake_nightly_last_run_timestamp_seconds`, `loglake_nightly_last_run_success` (1/0),
//!   `loglake_nightly_duration_seconds`;
//! - `loglake_nightly_stage_success{stage,table}` (1 success or skipped, 0 failed) and
//!   `loglake_nightly_stage_duration_seconds{stage,table}`;
//! - `loglake_nightly_rows_archived`.
//!
//! Encoded by `prometheus-client` (OpenMetrics text); gauges only, so the body is also valid
//! Prometheus text format 0.0.4, which the Pushgateway takes, once the `# EOF` line is left out.
//! A push that fails is logged, never the run's failure.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Summary;
use crate::ledger::Status;

type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
    table: String,
}

/// The push body for a run's `summary` that ended `ok` at `now_unix`.
pub fn body(summary: &Summary, ok: bool, now_unix: f64) -> String {
    let mut r = Registry::default();
    let gauge = |r: &mut Registry, name: &str, help: &str, v: f64| {
        let g = F64Gauge::default();
        g.set(v);
        r.register(name, help, g);
    };
    gauge(
        &mut r,
        "loglake_nightly_last_run_timestamp_seconds",
        "Unix time the last nightly run ended",
        now_unix,
    );
    gauge(
        &mut r,
        "loglake_nightly_last_run_success",
        "1 when the last nightly run ended without error",
        if ok { 1.0 } else { 0.0 },
    );
    gauge(
        &mut r,
        "loglake_nightly_duration_seconds",
        "Seconds the last nightly run took",
        summary.duration_ms as f64 / 1000.0,
    );
    let rows: f64 = summary
        .stages
        .iter()
        .filter(|s| s.stage == "archive")
        .filter_map(|s| s.report["rows_written"].as_f64())
        .sum();
    gauge(
        &mut r,
        "loglake_nightly_rows_archived",
        "Rows the last run's archive stage wrote",
        rows,
    );
    let success = Family::<StageLabels, F64Gauge>::default();
    let duration = Family::<StageLabels, F64Gauge>::default();
    for s in &summary.stages {
        let l = StageLabels {
            stage: s.stage.clone(),
            table: s.table.clone(),
        };
        success
            .get_or_create(&l)
            .set(if s.status == Status::Failed { 0.0 } else { 1.0 });
        duration
            .get_or_create(&l)
            .set(s.duration_ms as f64 / 1000.0);
    }
    r.register(
        "loglake_nightly_stage_success",
        "1 when the stage succeeded or had nothing to do, 0 when it failed",
        success,
    );
    r.register(
        "loglake_nightly_stage_duration_seconds",
        "Seconds the stage took",
        duration,
    );
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &r) {
        tracing::error!("encoding the pushed metrics: {e}");
    }
    text.lines()
        .filter(|l| *l != "# EOF")
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The grouping key value of `lake`.
pub fn lake_label(lake: &str) -> String {
    lake.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// PUTs `body` to `<gateway>/metrics/job/loglake_nightly/lake/<lake>`; the error names the URL.
pub async fn push(gateway: &str, lake: &str, body: String) -> Result<(), String> {
    let url = format!(
        "{}/metrics/job/loglake_nightly/lake/{}",
        gateway.trim_end_matches('/'),
        lake_label(lake)
    );
    let resp = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("pushing metrics to {url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "pushing metrics to {url}: {status}: {}",
            text.trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StageOutcome;

    #[test]
    fn the_body_is_prometheus_text_with_a_gauge_per_stage() {
        let s = Summary {
            run_id: "r".into(),
            date: "2026-12-05".into(),
            lake: "s3://b/lake".into(),
            dry_run: false,
            stages: vec![
                StageOutcome {
                    stage: "archive".into(),
                    table: "*".into(),
                    status: Status::Success,
                    duration_ms: 1500,
                    report: serde_json::json!({"rows_written": 42}),
                },
                StageOutcome {
                    stage: "compact".into(),
                    table: "containers".into(),
                    status: Status::Failed,
                    duration_ms: 250,
                    report: serde_json::Value::Null,
                },
            ],
            duration_ms: 2000,
        };
        let text = body(&s, false, 1_700_000_000.0);
        assert!(!text.contains("# EOF"), "{text}");
        for line in [
            "loglake_nightly_last_run_success 0.0",
            "loglake_nightly_duration_seconds 2.0",
            "loglake_nightly_rows_archived 42.0",
            "loglake_nightly_stage_success{stage=\"archive\",table=\"*\"} 1.0",
            "loglake_nightly_stage_success{stage=\"compact\",table=\"containers\"} 0.0",
            "loglake_nightly_stage_duration_seconds{stage=\"archive\",table=\"*\"} 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(lake_label("s3://b/lake"), "s3___b_lake");
    }
}
