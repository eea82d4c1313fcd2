//! The configuration of a run: the `[nightly]` section of `lake.toml`, and the run it resolves
//! to (the archiver's configuration, the table definitions, the date and run id).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use clap::Parser;
use loglake_archiver::metrics::ArchiverMetrics;
use loglake_archiver::{ArchiveArgs, ArchiveConfig};
use loglake_compactor::{Layout, RetentionPolicy, RetentionSettings, Settings, VacuumSettings};
use loglake_lake::units::{parse_bytes, parse_duration};
use loglake_schemas::{DEFAULT_TARGET_FILE_SIZE_BYTES, TableDef, load_table_dir, table_schema};
use url::Url;

use crate::{JobError, NightlyArgs};

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

impl NightlySettings {
    /// The compaction settings of the compact stage (checkpoint and log cleanup included).
    pub(crate) fn compact_settings(&self, owner: String) -> Settings {
        Settings {
            settle: self.settle,
            min_size_fraction: 0.5,
            memory_budget: usize::try_from(self.memory_budget).unwrap_or(usize::MAX),
            spill_dir: None,
            lease_ttl: self.lease_ttl,
            lease_wait: self.lease_ttl + Duration::from_secs(10),
            dry_run: false,
            checkpoint: true,
            log_retention: None,
            owner,
        }
    }

    /// The settings of the retention stage.
    pub(crate) fn retention_settings(&self, owner: String) -> RetentionSettings {
        RetentionSettings {
            dry_run: false,
            lease_ttl: self.lease_ttl,
            lease_wait: self.lease_ttl + Duration::from_secs(10),
            owner,
            batch: 5_000,
        }
    }

    /// The settings of the vacuum stage.
    pub(crate) fn vacuum_settings(&self, owner: String) -> VacuumSettings {
        VacuumSettings {
            retention: self.vacuum_retention,
            unsafe_short_retention: false,
            dry_run: false,
            lease_ttl: self.lease_ttl,
            lease_wait: self.lease_ttl + Duration::from_secs(10),
            owner,
        }
    }
}

/// Wraps [`ArchiveArgs`] to parse the archive stage's arguments with the archiver's own clap
/// definitions (same flags, environment and file as `loglake archive`).
#[derive(Parser)]
struct ArchiveCli {
    #[command(flatten)]
    args: ArchiveArgs,
}

/// The resolved configuration of a run.
pub(crate) struct Run {
    pub(crate) args: NightlyArgs,
    pub(crate) date: NaiveDate,
    pub(crate) run_id: String,
    pub(crate) settings: NightlySettings,
    pub(crate) archive: ArchiveConfig,
    pub(crate) defs: Vec<TableDef>,
    pub(crate) lake: Url,
}

impl Run {
    /// Whether the run does `stage`: configured, named by `--only` (when given), not by `--skip`.
    pub(crate) fn wants(&self, stage: &str) -> bool {
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
    pub(crate) fn tables(&self) -> Vec<(String, Url)> {
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

    /// The compactor's layout of table `name`: its definition's, else the defaults.
    pub(crate) fn layout(&self, name: &str) -> Layout {
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

    /// The retention policy of table `name` (none when it has no definition).
    pub(crate) fn retention_policy(&self, name: &str) -> RetentionPolicy {
        let def = self.defs.iter().find(|d| d.name == name);
        RetentionPolicy {
            default_days: def.and_then(|d| d.retention_days),
            by_namespace: def
                .map(|d| d.retention_by_namespace.clone())
                .unwrap_or_default(),
        }
    }
}

/// Reads the configuration file and the table definitions of a run.
pub(crate) fn resolve(args: NightlyArgs) -> Result<Run, JobError> {
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
