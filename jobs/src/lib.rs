//! # loglake-jobs
//!
//! `loglake nightly`: the T+1 job of a lake, idempotent and resumable. For one date (default:
//! yesterday, UTC) and every table of the lake's `lake.toml`, in order:
//!
//! 1. **archive** every topic to the offsets frozen at start (`loglake archive --until-end`, as a
//!    library call with the same configuration file);
//! 2. **complete**: mark the date complete per table when its event-time watermark passed the
//!    end of the day plus `late_after` ([`complete`]);
//! 3. **compact** closed partitions (with the checkpoint and log cleanup that follow it);
//! 4. **retention**: remove the files past the table's days;
//! 5. **vacuum**: delete files removed longer ago than the vacuum retention, and orphans;
//! 6. **export** (when `[nightly] export_hive` is set): each data table's day, once marked
//!    complete, as Hive-partitioned Parquet for Spark/Hadoop (`loglake_export::export_hive`);
//! 7. **insights** (when `[nightly] insights` names the logs table): the day's templates,
//!    Kubernetes health, anomalies and, with `report_dir`, the HTML report
//!    (`loglake_insights::derive_day`).
//!
//! One runner per lake: a lease at `<lake>/_loglake/lease/` (the compactor's [`Lease`]); a second
//! runner exits with [`error::EXIT_LEASE_HELD`]. Every stage attempt is a row of the run ledger
//! ([`ledger`], `<lake>/_loglake/runs`); a stage that already succeeded on the same input (its
//! fingerprint: the table version it started from, or the date for markers) is skipped, and every
//! stage is itself idempotent (archiving resumes from the tables' offsets, compaction skips sorted
//! files, markers are put-if-absent), so a killed run resumes and a re-run of a finished date
//! changes no table (DESIGN.md I5). With `--pushgateway` the run's figures go to a Prometheus
//! Pushgateway ([`push`]).

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod complete;
mod config;
pub mod error;
pub mod ledger;
pub mod push;
pub mod quickstart;
mod stages;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use loglake_compactor::lease::Lease;
use serde::Serialize;
use url::Url;

pub use config::NightlySettings;
use config::{Run, resolve};
pub use error::JobError;
use ledger::Status;

/// The stages, in the order they run.
pub const STAGES: [&str; 7] = [
    "archive",
    "complete",
    "compact",
    "retention",
    "vacuum",
    "export",
    "insights",
];

/// `loglake nightly`: the T+1 job of a lake.
#[derive(Debug, Clone, clap::Args)]
pub struct NightlyArgs {
    /// The lake's configuration: the archiver's `lake.toml` (brokers, group, lake, tables_dir,
    /// [kafka], [storage]) plus an optional [nightly] section (settle, vacuum_retention,
    /// memory_budget, lease_ttl).
    #[arg(long, env = "LOGLAKE_CONFIG")]
    pub config: PathBuf,
    /// The date to run for (YYYY-MM-DD, UTC; default yesterday).
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// Print the plan (stages and tables) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only these stages (comma-separated: archive, complete, compact, retention, vacuum,
    /// export, insights).
    #[arg(long, value_delimiter = ',', value_parser = parse_stage)]
    pub only: Vec<String>,
    /// Skip these stages.
    #[arg(long, value_delimiter = ',', value_parser = parse_stage)]
    pub skip: Vec<String>,
    /// Push the run's metrics to this Prometheus Pushgateway when it ends (e.g.
    /// http://pushgateway:9091).
    #[arg(long, env = "LOGLAKE_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
    /// No progress line per stage on stderr (the quickstart prints its own).
    #[arg(skip)]
    pub quiet: bool,
}

fn parse_stage(s: &str) -> Result<String, String> {
    let s = s.trim();
    if STAGES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown stage `{s}` (stages: {})",
            STAGES.join(", ")
        ))
    }
}

/// What one stage attempt on one table did (the summary's rows).
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub stage: String,
    pub table: String,
    pub status: Status,
    pub duration_ms: u64,
    /// The stage's own report.
    pub report: serde_json::Value,
}

/// The final JSON summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub date: String,
    pub lake: String,
    pub dry_run: bool,
    pub stages: Vec<StageOutcome>,
    pub duration_ms: u64,
}

fn runtime() -> Result<tokio::runtime::Runtime, JobError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| JobError::Internal(format!("starting the async runtime: {e}")))
}

/// Who this run is, for the lease: host, pid, run id.
fn owner(run_id: &str) -> String {
    loglake_compactor::lease::owner_name(run_id)
}

/// `loglake nightly`: prints the summary as one JSON object on stdout.
pub fn run_nightly(args: NightlyArgs) -> Result<ExitCode, JobError> {
    let (summary, result) = nightly(args)?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    result?;
    Ok(ExitCode::SUCCESS)
}

/// One nightly run as a library call: its summary (also when a stage failed) and the first
/// stage error. An `Err` of its own means nothing ran (configuration, or the lease is held).
pub fn nightly(args: NightlyArgs) -> Result<(Summary, Result<(), JobError>), JobError> {
    let started = Instant::now();
    let run = resolve(args)?;
    let mut summary = Summary {
        run_id: run.run_id.clone(),
        date: run.date.to_string(),
        lake: run.lake.to_string(),
        dry_run: run.args.dry_run,
        stages: Vec::new(),
        duration_ms: 0,
    };
    if run.args.dry_run {
        summary.stages = dry_run_plan(&run);
        return Ok((summary, Ok(())));
    }
    let rt = runtime()?;
    let lease = acquire_lake_lease(&run, &rt)?;
    let kept = {
        let _guard = rt.enter();
        lease.keep_alive()
    };
    let result = stages::run_stages(&run, &rt, &mut summary);
    if let Some(lost) = rt.block_on(kept.release()) {
        tracing::warn!(error = %lost, "the lake lease was lost during the run");
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(gw) = &run.args.pushgateway {
        let now = Utc::now().timestamp_millis() as f64 / 1000.0;
        let body = push::body(&summary, result.is_ok(), now);
        if let Err(e) = rt.block_on(push::push(gw, run.lake.as_str(), body)) {
            tracing::warn!("{e}");
            eprintln!("loglake: warning: {e}");
        }
    }
    Ok((summary, result))
}

/// The summary rows of `--dry-run`: each stage the run wants, on each table, planned.
fn dry_run_plan(run: &Run) -> Vec<StageOutcome> {
    let mut out = Vec::new();
    for stage in STAGES.iter().filter(|s| run.wants(s)) {
        let tables: Vec<(String, Url)> = if *stage == "archive" {
            vec![("*".into(), run.lake.clone())]
        } else {
            run.tables()
        };
        for (name, url) in tables {
            out.push(StageOutcome {
                stage: stage.to_string(),
                table: name,
                status: Status::Skipped,
                duration_ms: 0,
                report: serde_json::json!({ "planned": true, "url": url.to_string() }),
            });
        }
    }
    out
}

/// Takes the lake's lease (`<lake>/_loglake/lease/`) without waiting: held by another runner,
/// [`JobError::LeaseHeld`].
fn acquire_lake_lease(run: &Run, rt: &tokio::runtime::Runtime) -> Result<Lease, JobError> {
    let options = run.archive.storage_options.clone();
    let (store, prefix) = loglake_lake::object_store_for(&run.lake, &options)
        .map_err(|e| JobError::Config(e.to_string()))?;
    let lake_store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix));
    let mut lease = Lease::new(
        "lake",
        lake_store,
        owner(&run.run_id),
        run.settings.lease_ttl,
    );
    let held = rt
        .block_on(lease.acquire(Duration::ZERO))
        .map_err(|e| JobError::Internal(e.to_string()))?;
    if let Some(h) = held {
        return Err(JobError::LeaseHeld {
            lake: run.lake.to_string(),
            owner: h.owner,
            expires: chrono::DateTime::<Utc>::from_timestamp_millis(h.expires_ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        });
    }
    Ok(lease)
}
