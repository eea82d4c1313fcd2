//! The stages of a run, in order, on every table: each attempt a row of the run ledger and of
//! the summary, a stage that already succeeded on the same input skipped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use loglake_compactor::{RetentionSettings, Settings, VacuumSettings};
use url::Url;

use crate::config::Run;
use crate::ledger::{Entry, Ledger, Status};
use crate::{JobError, StageOutcome, Summary, complete, owner};

/// What a stage attempt returns: its status, the table version it left, its report.
type Outcome = Result<(Status, Option<i64>, serde_json::Value), JobError>;

/// Runs the stages the run wants, in order; the first failure ends the run.
pub(crate) fn run_stages(
    run: &Run,
    rt: &tokio::runtime::Runtime,
    summary: &mut Summary,
) -> Result<(), JobError> {
    let options = run.archive.storage_options.clone();
    let ledger = rt.block_on(Ledger::open(&run.lake, &options, &run.date.to_string()))?;
    let mut stages = Stages {
        run,
        rt,
        ledger,
        summary,
    };
    let owner = owner(&run.run_id);

    if run.wants("archive") {
        stages.archive()?;
    }

    let tables = run.tables();
    let data_tables: Vec<&(String, Url)> = tables
        .iter()
        .filter(|(n, _)| run.archive.tables.iter().any(|t| &t.name == n))
        .collect();

    if run.wants("complete") {
        for (name, url) in &data_tables {
            stages.complete(name, url)?;
        }
    }

    if run.wants("compact") {
        let settings = run.settings.compact_settings(owner.clone());
        for (name, url) in &tables {
            stages.compact(name, url, &settings)?;
        }
    }

    if run.wants("retention") {
        let settings = run.settings.retention_settings(owner.clone());
        for (name, url) in &tables {
            stages.retention(name, url, &settings)?;
        }
    }

    if run.wants("vacuum") {
        let settings = run.settings.vacuum_settings(owner);
        for (name, url) in &tables {
            stages.vacuum(name, url, &settings)?;
        }
    }

    if run.wants("export")
        && let Some(root) = &run.settings.export_hive
    {
        for (name, url) in &data_tables {
            stages.export_day(root, name, url)?;
        }
    }

    if run.wants("insights")
        && let Some(logs) = &run.settings.insights
    {
        stages.insights_day(logs)?;
    }
    Ok(())
}

/// The stage attempts of one run and where they are recorded: the ledger and the summary.
struct Stages<'a> {
    run: &'a Run,
    rt: &'a tokio::runtime::Runtime,
    ledger: Ledger,
    summary: &'a mut Summary,
}

impl Stages<'_> {
    /// The archive stage: every topic to the offsets frozen at its start.
    fn archive(&mut self) -> Result<(), JobError> {
        let started = (Utc::now(), Instant::now());
        let outcome = loglake_archiver::run_archiver(self.run.archive.clone(), self.rt)
            .map(|r| {
                (
                    Status::Success,
                    None,
                    serde_json::to_value(&r).unwrap_or_default(),
                )
            })
            .map_err(|e| JobError::stage("archive", "*", e));
        let fp = match &outcome {
            Ok((_, _, r)) => fingerprint_of(&r["offsets"]),
            Err(_) => String::new(),
        };
        self.record("archive", "*", &fp, started, outcome)
    }

    /// The complete stage of one data table.
    fn complete(&mut self, name: &str, url: &Url) -> Result<(), JobError> {
        let run = self.run;
        let late_after = run.archive.late_after;
        let options = &run.archive.storage_options;
        let started = (Utc::now(), Instant::now());
        let fp = format!("date={}", run.date);
        let outcome = self
            .rt
            .block_on(mark_complete(run, name, url, options, late_after));
        self.record("complete", name, &fp, started, outcome)
    }

    /// The compact stage of one table.
    fn compact(&mut self, name: &str, url: &Url, settings: &Settings) -> Result<(), JobError> {
        let (run, rt) = (self.run, self.rt);
        let options = &run.archive.storage_options;
        self.maintain("compact", name, url, |v| {
            let layout = run.layout(name);
            rt.block_on(loglake_compactor::compact_table(
                name, url, options, &layout, settings,
            ))
            .map(|m| {
                let after = m.version_after;
                (Some(after), serde_json::to_value(&m).unwrap_or_default())
            })
            .map_err(|e| JobError::stage("compact", name, e))
            .map(|(a, r)| (a.or(v), r))
        })
    }

    /// The retention stage of one table.
    fn retention(
        &mut self,
        name: &str,
        url: &Url,
        settings: &RetentionSettings,
    ) -> Result<(), JobError> {
        let (run, rt) = (self.run, self.rt);
        let options = &run.archive.storage_options;
        let policy = run.retention_policy(name);
        self.maintain("retention", name, url, |_| {
            rt.block_on(loglake_compactor::retain_table(
                name, url, options, &policy, settings,
            ))
            .map(|r| {
                (
                    Some(r.version_after),
                    serde_json::to_value(&r).unwrap_or_default(),
                )
            })
            .map_err(|e| JobError::stage("retention", name, e))
        })
    }

    /// The vacuum stage of one table.
    fn vacuum(&mut self, name: &str, url: &Url, settings: &VacuumSettings) -> Result<(), JobError> {
        let (run, rt) = (self.run, self.rt);
        let options = &run.archive.storage_options;
        self.maintain("vacuum", name, url, |_| {
            rt.block_on(loglake_compactor::vacuum_table(
                name, url, options, settings,
            ))
            .map(|r| {
                (
                    Some(r.version),
                    serde_json::to_value(&r).unwrap_or_default(),
                )
            })
            .map_err(|e| JobError::stage("vacuum", name, e))
        })
    }

    /// The export stage of one table: its day as Hive-partitioned Parquet under `<root>/<table>`,
    /// once the day is marked complete (a T+1 reader of the export never sees a partial day); the
    /// export itself skips a day already exported from the same table version.
    fn export_day(&mut self, root: &str, name: &str, url: &Url) -> Result<(), JobError> {
        let (run, rt) = (self.run, self.rt);
        let started = (Utc::now(), Instant::now());
        let options = &run.archive.storage_options;
        let table = rt
            .block_on(loglake_lake::open_table(name, url, options))
            .map_err(|e| JobError::stage("export", name, e))?;
        let complete = table.version().is_some() && {
            let store = table.log_store().object_store(None);
            rt.block_on(complete::marker(store.as_ref(), run.date))
                .is_some()
        };
        if !complete {
            // not a success: the next run exports the day once it is marked complete
            let outcome = Ok((
                Status::Skipped,
                None,
                serde_json::json!({"reason": "the day is not marked complete"}),
            ));
            return self.record("export", name, "incomplete", started, outcome);
        }
        self.maintain("export", name, url, |v| {
            let mut opts = loglake_export::HiveOptions::new(run.lake.as_str(), name, run.date);
            opts.to = Some(format!("{root}/{name}"));
            rt.block_on(loglake_export::export_hive(&opts))
                .map(|m| (v, serde_json::to_value(&m).unwrap_or_default()))
                .map_err(|e| JobError::stage("export", name, e))
        })
    }

    /// The insights stage: the day's templates, Kubernetes health, anomalies and report, derived
    /// from the logs table `logs` (each replaces its day's partition: a re-run is safe).
    fn insights_day(&mut self, logs: &str) -> Result<(), JobError> {
        let (run, rt) = (self.run, self.rt);
        let Some((_, url)) = run
            .archive
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.url.clone()))
            .find(|(n, _)| n == logs)
        else {
            return Err(JobError::Config(format!(
                "[nightly] insights = {logs:?}: no such table in the lake's configuration"
            )));
        };
        self.maintain("insights", logs, &url, |v| {
            let opts = loglake_insights::DayOptions {
                lake: run.lake.to_string(),
                day: run.date,
                logs_table: Some(logs.to_string()),
                report_dir: run
                    .settings
                    .report_dir
                    .as_ref()
                    .map(|d| d.join(run.date.to_string())),
                drain: Default::default(),
                anomalies: Default::default(),
            };
            rt.block_on(loglake_insights::derive_day(&opts))
                .map(|m| (v, serde_json::to_value(&m).unwrap_or_default()))
                .map_err(|e| JobError::stage("insights", logs, e))
        })
    }

    /// A maintenance stage on one table: skipped when the ledger has a success on the table's
    /// current version (nothing changed since), else run and recorded.
    fn maintain(
        &mut self,
        stage: &str,
        name: &str,
        url: &Url,
        work: impl FnOnce(Option<u64>) -> Result<(Option<u64>, serde_json::Value), JobError>,
    ) -> Result<(), JobError> {
        let started = (Utc::now(), Instant::now());
        let options = &self.run.archive.storage_options;
        let Some(v) = version_of(self.rt, name, url, options)? else {
            // not created yet (no records ever): nothing to maintain
            let outcome = Ok((
                Status::Skipped,
                None,
                serde_json::json!({"reason": "no table"}),
            ));
            return self.record(stage, name, "none", started, outcome);
        };
        let fp = format!("v{v}");
        if self.ledger.succeeded(stage, name, &fp) {
            let outcome = Ok((
                Status::Skipped,
                Some(v as i64),
                serde_json::json!({"reason": "succeeded on this version already"}),
            ));
            return self.record(stage, name, &fp, started, outcome);
        }
        let outcome =
            work(Some(v)).map(|(after, report)| (Status::Success, after.map(|a| a as i64), report));
        self.record(stage, name, &fp, started, outcome)
    }

    /// Records one stage attempt in the ledger and the summary.
    fn record(
        &mut self,
        stage: &str,
        table: &str,
        fingerprint: &str,
        started: (chrono::DateTime<Utc>, Instant),
        outcome: Outcome,
    ) -> Result<(), JobError> {
        let run = self.run;
        let attempt = self.ledger.next_attempt(stage, table);
        let (status, version, report, error) = match &outcome {
            Ok((s, v, r)) => (*s, *v, r.clone(), None),
            Err(e) => (
                Status::Failed,
                None,
                serde_json::Value::Null,
                Some(e.to_string()),
            ),
        };
        let entry = Entry {
            run_id: run.run_id.clone(),
            date: run.date.to_string(),
            stage: stage.to_string(),
            table: table.to_string(),
            attempt,
            status,
            started_at: started.0,
            ended_at: Utc::now(),
            fingerprint: fingerprint.to_string(),
            output_version: version,
            metrics: report.to_string(),
            error,
        };
        let duration_ms = started.1.elapsed().as_millis() as u64;
        if run.args.quiet {
            tracing::debug!(
                stage,
                table,
                status = status.as_str(),
                duration_ms,
                "stage done"
            );
        } else {
            tracing::info!(
                stage,
                table,
                status = status.as_str(),
                duration_ms,
                "stage done"
            );
        }
        if !run.args.quiet {
            eprintln!(
                "nightly {}: {stage:<9} {table:<20} {} in {:.1}s",
                run.date,
                status.as_str(),
                duration_ms as f64 / 1000.0
            );
        }
        self.summary.stages.push(StageOutcome {
            stage: stage.to_string(),
            table: table.to_string(),
            status,
            duration_ms,
            report,
        });
        let written = self
            .rt
            .block_on(self.ledger.append(std::slice::from_ref(&entry)));
        outcome?;
        written
    }
}

fn version_of(
    rt: &tokio::runtime::Runtime,
    name: &str,
    url: &Url,
    options: &HashMap<String, String>,
) -> Result<Option<u64>, JobError> {
    let t = rt
        .block_on(loglake_lake::open_table(name, url, options))
        .map_err(|e| JobError::stage("open", name, e))?;
    Ok(t.version())
}

/// A stable text of the archive's committed offsets: its fingerprint in the ledger.
fn fingerprint_of(offsets: &serde_json::Value) -> String {
    let sorted: BTreeMap<String, serde_json::Value> = offsets
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// The complete stage of one table: its watermark, and the marker when the day is complete.
async fn mark_complete(
    run: &Run,
    name: &str,
    url: &Url,
    options: &HashMap<String, String>,
    late_after: Duration,
) -> Outcome {
    let table = loglake_lake::open_table(name, url, options)
        .await
        .map_err(|e| JobError::stage("complete", name, e))?;
    let Some(version) = table.version() else {
        return Ok((
            Status::Skipped,
            None,
            serde_json::json!({"reason": "no table"}),
        ));
    };
    let store = table.log_store().object_store(None);
    if let Some(m) = complete::marker(store.as_ref(), run.date).await {
        return Ok((
            Status::Skipped,
            Some(m.table_version as i64),
            serde_json::json!({"reason": "marked complete already", "manifest": m}),
        ));
    }
    let (watermark, rows) = complete::watermark(&table, run.date)
        .await
        .map_err(|e| JobError::stage("complete", name, e))?;
    let done = complete::is_complete(run.date, watermark, late_after);
    let report = serde_json::json!({
        "watermark": watermark.map(|w| w.to_rfc3339()),
        "late_after_secs": late_after.as_secs(),
        "rows": rows,
        "complete": done,
    });
    if !done {
        // not an error: the day is still open (the next run looks again)
        return Ok((Status::Skipped, Some(version as i64), report));
    }
    let manifest = complete::Manifest {
        table: name.to_string(),
        date: run.date.to_string(),
        watermark: watermark.map(|w| w.to_rfc3339()).unwrap_or_default(),
        late_after_secs: late_after.as_secs(),
        rows,
        table_version: version,
        run_id: run.run_id.clone(),
        completed_at: Utc::now().to_rfc3339(),
    };
    complete::write_marker(store.as_ref(), &manifest, run.date)
        .await
        .map_err(|e| JobError::stage("complete", name, e))?;
    Ok((Status::Success, Some(version as i64), report))
}
