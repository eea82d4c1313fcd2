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

pub mod complete;
pub mod error;
pub mod ledger;
pub mod push;
pub mod quickstart;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use clap::Parser;
use loglake_archiver::metrics::ArchiverMetrics;
use loglake_archiver::{ArchiveArgs, ArchiveConfig};
use loglake_compactor::lease::Lease;
use loglake_compactor::{Layout, RetentionPolicy, RetentionSettings, Settings, VacuumSettings};
use loglake_lake::units::{parse_bytes, parse_duration};
use loglake_schemas::{DEFAULT_TARGET_FILE_SIZE_BYTES, TableDef, load_table_dir, table_schema};
use serde::Serialize;
use url::Url;

pub use error::JobError;
use ledger::{Entry, Ledger, Status};

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

/// The `[nightly]` section of `lake.toml`.
#[derive(Debug, Clone)]
pub struct NightlySettings {
    /// A partition is compacted once its hour (or day) of event time ended this long ago.
    pub settle: Duration,
    /// Vacuum retention (default: each table's `delta.deletedFileRetentionDuration`, 7 days).
    pub vacuum_retention: Option<Duration>,
    /// Memory for one compaction sort or delete.
    pub memory_budget: u64,
    /// The lake lease (and the tables' maintenance leases) lapse this long after a renewal.
    pub lease_ttl: Duration,
    /// Export root for the Hive export of each complete day (`<root>/<table>`); `None`: no
    /// export stage.
    pub export_hive: Option<String>,
    /// The logs table the insights stage mines; `None`: no insights stage.
    pub insights: Option<String>,
    /// Where the insights stage writes the day's report (`<dir>/<date>/`); `None`: no report.
    pub report_dir: Option<PathBuf>,
}

impl Default for NightlySettings {
    fn default() -> Self {
        NightlySettings {
            settle: Duration::from_secs(3600),
            vacuum_retention: None,
            memory_budget: 512 << 20,
            lease_ttl: Duration::from_secs(120),
            export_hive: None,
            insights: None,
            report_dir: None,
        }
    }
}

impl NightlySettings {
    /// Reads the `[nightly]` table; unknown keys and bad values are errors naming the key.
    pub fn from_table(t: Option<&toml::Table>) -> Result<Self, JobError> {
        let mut s = NightlySettings::default();
        let Some(t) = t else { return Ok(s) };
        for (k, v) in t {
            let text = v
                .as_str()
                .ok_or_else(|| JobError::Config(format!("[nightly] {k}: expected a string")))?;
            let bad = |e: String| JobError::Config(format!("[nightly] {k} = {text:?}: {e}"));
            match k.as_str() {
                "settle" => s.settle = parse_duration(text).map_err(bad)?,
                "vacuum_retention" => s.vacuum_retention = Some(parse_duration(text).map_err(bad)?),
                "memory_budget" => s.memory_budget = parse_bytes(text).map_err(bad)?,
                "lease_ttl" => s.lease_ttl = parse_duration(text).map_err(bad)?,
                "export_hive" => s.export_hive = Some(text.trim_end_matches('/').to_string()),
                "insights" => s.insights = Some(text.to_string()),
                "report_dir" => s.report_dir = Some(PathBuf::from(text)),
                _ => {
                    return Err(JobError::Config(format!(
                        "[nightly] {k}: unknown key (settle, vacuum_retention, memory_budget, \
                         lease_ttl, export_hive, insights, report_dir)"
                    )));
                }
            }
        }
        Ok(s)
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

/// Wraps [`ArchiveArgs`] to parse the archive stage's arguments with the archiver's own clap
/// definitions (same flags, environment and file as `loglake archive`).
#[derive(Parser)]
struct ArchiveCli {
    #[command(flatten)]
    args: ArchiveArgs,
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

/// The resolved configuration of a run.
struct Run {
    args: NightlyArgs,
    date: NaiveDate,
    run_id: String,
    settings: NightlySettings,
    archive: ArchiveConfig,
    defs: Vec<TableDef>,
    lake: Url,
}

impl Run {
    fn wants(&self, stage: &str) -> bool {
        let configured = match stage {
            "export" => self.settings.export_hive.is_some(),
            "insights" => self.settings.insights.is_some(),
            _ => true,
        };
        configured
            && (self.args.only.is_empty() || self.args.only.iter().any(|s| s == stage))
            && !self.args.skip.iter().any(|s| s == stage)
    }

    /// The tables the maintenance stages run on: the data tables, then the dead letters.
    fn tables(&self) -> Vec<(String, Url)> {
        let mut out: Vec<(String, Url)> = self
            .archive
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.url.clone()))
            .collect();
        if let Some(d) = &self.archive.dlq {
            let name = d
                .path()
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("dead_letters")
                .to_string();
            out.push((name, d.clone()));
        }
        out
    }

    fn layout(&self, name: &str) -> Layout {
        let def = self.defs.iter().find(|d| d.name == name);
        Layout {
            sort_by: def.map(|d| d.sort_by.clone()).unwrap_or_default(),
            bloom_filter_columns: def
                .map(|d| d.bloom_filter_columns.clone())
                .unwrap_or_default(),
            target_file_size: def
                .map(|d| d.target_file_size_bytes)
                .unwrap_or(DEFAULT_TARGET_FILE_SIZE_BYTES),
            schema: def.map(|d| table_schema(d.kind())),
        }
    }
}

fn resolve(args: NightlyArgs) -> Result<Run, JobError> {
    let file = loglake_archiver::config::read_file_config(&args.config)
        .map_err(|e| JobError::Config(e.to_string()))?;
    let settings = NightlySettings::from_table(file.nightly.as_ref())?;
    let lake = file.lake.clone().ok_or_else(|| {
        JobError::Config(format!(
            "{}: no `lake` (the lake root URL)",
            args.config.display()
        ))
    })?;
    let lake = loglake_lake::table_url(&lake).map_err(|e| JobError::Config(e.to_string()))?;
    let defs = match &file.tables_dir {
        Some(dir) => load_table_dir(dir).map_err(|e| JobError::Config(e.to_string()))?,
        None => Vec::new(),
    };
    let config = args.config.to_string_lossy().to_string();
    let cli = ArchiveCli::try_parse_from(["archive", "--config", &config, "--until-end"])
        .map_err(|e| JobError::Config(format!("the archive stage's arguments: {e}")))?;
    let (archive, _) = cli
        .args
        .resolve(
            Arc::new(AtomicBool::new(false)),
            Arc::new(ArchiverMetrics::default()),
        )
        .map_err(|e| JobError::Config(e.to_string()))?;
    let date = args
        .date
        .unwrap_or_else(|| (Utc::now() - chrono::Days::new(1)).date_naive());
    Ok(Run {
        args,
        date,
        run_id: format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        settings,
        archive,
        defs,
        lake,
    })
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
        for stage in STAGES.iter().filter(|s| run.wants(s)) {
            let tables: Vec<(String, Url)> = if *stage == "archive" {
                vec![("*".into(), run.lake.clone())]
            } else {
                run.tables()
            };
            for (name, url) in tables {
                summary.stages.push(StageOutcome {
                    stage: stage.to_string(),
                    table: name,
                    status: Status::Skipped,
                    duration_ms: 0,
                    report: serde_json::json!({ "planned": true, "url": url.to_string() }),
                });
            }
        }
        return Ok((summary, Ok(())));
    }
    let rt = runtime()?;
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
    let kept = {
        let _guard = rt.enter();
        lease.keep_alive()
    };
    let result = run_stages(&run, &rt, &mut summary);
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

/// Records one stage attempt in the ledger and the summary.
#[allow(clippy::too_many_arguments)]
fn record(
    rt: &tokio::runtime::Runtime,
    ledger: &mut Ledger,
    summary: &mut Summary,
    run: &Run,
    stage: &str,
    table: &str,
    fingerprint: &str,
    started: (chrono::DateTime<Utc>, Instant),
    outcome: Result<(Status, Option<i64>, serde_json::Value), JobError>,
) -> Result<(), JobError> {
    let attempt = ledger.next_attempt(stage, table);
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
    summary.stages.push(StageOutcome {
        stage: stage.to_string(),
        table: table.to_string(),
        status,
        duration_ms,
        report,
    });
    let written = rt.block_on(ledger.append(std::slice::from_ref(&entry)));
    outcome?;
    written
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

fn run_stages(
    run: &Run,
    rt: &tokio::runtime::Runtime,
    summary: &mut Summary,
) -> Result<(), JobError> {
    let options = run.archive.storage_options.clone();
    let mut ledger = rt.block_on(Ledger::open(&run.lake, &options, &run.date.to_string()))?;
    let owner = owner(&run.run_id);

    if run.wants("archive") {
        let started = (Utc::now(), Instant::now());
        let outcome = loglake_archiver::run_archiver(run.archive.clone(), rt)
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
        record(
            rt,
            &mut ledger,
            summary,
            run,
            "archive",
            "*",
            &fp,
            started,
            outcome,
        )?;
    }

    let tables = run.tables();
    let data_tables: Vec<&(String, Url)> = tables
        .iter()
        .filter(|(n, _)| run.archive.tables.iter().any(|t| &t.name == n))
        .collect();

    if run.wants("complete") {
        let late_after = run.archive.late_after;
        for (name, url) in &data_tables {
            let started = (Utc::now(), Instant::now());
            let fp = format!("date={}", run.date);
            let outcome = rt.block_on(mark_complete(run, name, url, &options, late_after));
            record(
                rt,
                &mut ledger,
                summary,
                run,
                "complete",
                name,
                &fp,
                started,
                outcome,
            )?;
        }
    }

    if run.wants("compact") {
        let settings = Settings {
            settle: run.settings.settle,
            min_size_fraction: 0.5,
            memory_budget: usize::try_from(run.settings.memory_budget).unwrap_or(usize::MAX),
            spill_dir: None,
            lease_ttl: run.settings.lease_ttl,
            lease_wait: run.settings.lease_ttl + Duration::from_secs(10),
            dry_run: false,
            checkpoint: true,
            log_retention: None,
            owner: owner.clone(),
        };
        for (name, url) in &tables {
            maintain(run, rt, &mut ledger, summary, "compact", name, url, |v| {
                let layout = run.layout(name);
                rt.block_on(loglake_compactor::compact_table(
                    name, url, &options, &layout, &settings,
                ))
                .map(|m| {
                    let after = m.version_after;
                    (Some(after), serde_json::to_value(&m).unwrap_or_default())
                })
                .map_err(|e| JobError::stage("compact", name, e))
                .map(|(a, r)| (a.or(v), r))
            })?;
        }
    }

    if run.wants("retention") {
        let settings = RetentionSettings {
            dry_run: false,
            lease_ttl: run.settings.lease_ttl,
            lease_wait: run.settings.lease_ttl + Duration::from_secs(10),
            owner: owner.clone(),
            batch: 5_000,
        };
        for (name, url) in &tables {
            let def = run.defs.iter().find(|d| &d.name == name);
            let policy = RetentionPolicy {
                default_days: def.and_then(|d| d.retention_days),
                by_namespace: def
                    .map(|d| d.retention_by_namespace.clone())
                    .unwrap_or_default(),
            };
            maintain(
                run,
                rt,
                &mut ledger,
                summary,
                "retention",
                name,
                url,
                |_| {
                    rt.block_on(loglake_compactor::retain_table(
                        name, url, &options, &policy, &settings,
                    ))
                    .map(|r| {
                        (
                            Some(r.version_after),
                            serde_json::to_value(&r).unwrap_or_default(),
                        )
                    })
                    .map_err(|e| JobError::stage("retention", name, e))
                },
            )?;
        }
    }

    if run.wants("vacuum") {
        let settings = VacuumSettings {
            retention: run.settings.vacuum_retention,
            unsafe_short_retention: false,
            dry_run: false,
            lease_ttl: run.settings.lease_ttl,
            lease_wait: run.settings.lease_ttl + Duration::from_secs(10),
            owner,
        };
        for (name, url) in &tables {
            maintain(run, rt, &mut ledger, summary, "vacuum", name, url, |_| {
                rt.block_on(loglake_compactor::vacuum_table(
                    name, url, &options, &settings,
                ))
                .map(|r| {
                    (
                        Some(r.version),
                        serde_json::to_value(&r).unwrap_or_default(),
                    )
                })
                .map_err(|e| JobError::stage("vacuum", name, e))
            })?;
        }
    }

    if run.wants("export")
        && let Some(root) = &run.settings.export_hive
    {
        for (name, url) in &data_tables {
            export_day(run, rt, &mut ledger, summary, root, name, url)?;
        }
    }

    if run.wants("insights")
        && let Some(logs) = &run.settings.insights
    {
        insights_day(run, rt, &mut ledger, summary, logs)?;
    }
    Ok(())
}

/// The export stage of one table: its day as Hive-partitioned Parquet under `<root>/<table>`,
/// once the day is marked complete (a T+1 reader of the export never sees a partial day); the
/// export itself skips a day already exported from the same table version.
#[allow(clippy::too_many_arguments)]
fn export_day(
    run: &Run,
    rt: &tokio::runtime::Runtime,
    ledger: &mut Ledger,
    summary: &mut Summary,
    root: &str,
    name: &str,
    url: &Url,
) -> Result<(), JobError> {
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
        return record(
            rt,
            ledger,
            summary,
            run,
            "export",
            name,
            "incomplete",
            started,
            outcome,
        );
    }
    maintain(run, rt, ledger, summary, "export", name, url, |v| {
        let mut opts = loglake_export::HiveOptions::new(run.lake.as_str(), name, run.date);
        opts.to = Some(format!("{root}/{name}"));
        rt.block_on(loglake_export::export_hive(&opts))
            .map(|m| (v, serde_json::to_value(&m).unwrap_or_default()))
            .map_err(|e| JobError::stage("export", name, e))
    })
}

/// The insights stage: the day's templates, Kubernetes health, anomalies and report, derived
/// from the logs table `logs` (each replaces its day's partition: a re-run is safe).
fn insights_day(
    run: &Run,
    rt: &tokio::runtime::Runtime,
    ledger: &mut Ledger,
    summary: &mut Summary,
    logs: &str,
) -> Result<(), JobError> {
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
    maintain(run, rt, ledger, summary, "insights", logs, &url, |v| {
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
#[allow(clippy::too_many_arguments)]
fn maintain(
    run: &Run,
    rt: &tokio::runtime::Runtime,
    ledger: &mut Ledger,
    summary: &mut Summary,
    stage: &str,
    name: &str,
    url: &Url,
    work: impl FnOnce(Option<u64>) -> Result<(Option<u64>, serde_json::Value), JobError>,
) -> Result<(), JobError> {
    let started = (Utc::now(), Instant::now());
    let options = &run.archive.storage_options;
    let Some(v) = version_of(rt, name, url, options)? else {
        // not created yet (no records ever): nothing to maintain
        let outcome = Ok((
            Status::Skipped,
            None,
            serde_json::json!({"reason": "no table"}),
        ));
        return record(
            rt, ledger, summary, run, stage, name, "none", started, outcome,
        );
    };
    let fp = format!("v{v}");
    if ledger.succeeded(stage, name, &fp) {
        let outcome = Ok((
            Status::Skipped,
            Some(v as i64),
            serde_json::json!({"reason": "succeeded on this version already"}),
        ));
        return record(rt, ledger, summary, run, stage, name, &fp, started, outcome);
    }
    let outcome =
        work(Some(v)).map(|(after, report)| (Status::Success, after.map(|a| a as i64), report));
    record(rt, ledger, summary, run, stage, name, &fp, started, outcome)
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
) -> Result<(Status, Option<i64>, serde_json::Value), JobError> {
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
