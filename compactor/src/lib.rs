//! # loglake-compactor
//!
//! `loglake compact`, `checkpoint`, `vacuum` and `retention`: the maintenance side of the lake.
//!
//! - [`plan`]: what to compact, a pure function (closed partitions, fresh files, first-fit
//!   decreasing groups up to the target size);
//! - [`rewrite`]: one group read, sorted by the table's `sort_by` under a memory budget
//!   (DataFusion, spilling to disk) and written with the archiver's encodings, statistics and
//!   page index plus bloom filters (lake::files), uploaded in parts;
//! - [`compact`]: the operation on one table — lease, plan, per group rewrite, re-check of its
//!   inputs against the latest snapshot, one `dataChange=false` commit — and its metrics;
//! - [`lease`]: one maintenance writer per table, from put-if-absent objects;
//! - [`checkpoint`]: Delta checkpoints and expired-log cleanup;
//! - [`metrics`]: the run's figures as OpenMetrics counters per table;
//! - [`vacuum`]: `loglake vacuum`, deltalake's full-mode vacuum under the lease;
//! - [`retention`]: `loglake retention`, whole files past their days (per namespace) removed;
//! - [`delete`]: `loglake delete`, row-level (GDPR) delete rewriting only the files with matches.

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod checkpoint;
pub mod compact;
pub mod delete;
pub mod error;
mod latest;
pub mod lease;
pub mod metrics;
pub mod plan;
pub mod retention;
pub mod rewrite;
pub mod vacuum;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use loglake_lake::units::{parse_bytes, parse_duration};
use loglake_lake::{discover, open_table, table_url, writer_storage_options};
use loglake_schemas::{DEFAULT_TARGET_FILE_SIZE_BYTES, TableDef, load_table_dir, table_schema};
use url::Url;

pub use checkpoint::{CheckpointMetrics, checkpoint_table};
pub use compact::{CompactMetrics, Layout, Settings, compact_table};
pub use delete::{DeleteReport, DeleteSettings, delete_rows};
pub use error::CompactError;
pub use metrics::CompactorMetrics;
pub use retention::{RetentionPolicy, RetentionReport, RetentionSettings, retain_table};
pub use vacuum::{VacuumReport, VacuumSettings, vacuum_table};

/// Which tables: every table under a lake root, or one table.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Lake root: every Delta table found under it (e.g. s3://logs/lake or ./lake).
    #[arg(long, env = "LOGLAKE_LAKE")]
    pub lake: Option<String>,
    /// One Delta table (URL or local path).
    #[arg(long)]
    pub table: Option<String>,
}

/// `loglake compact`: rewrite the small files of closed partitions into large sorted ones.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub target: Target,
    /// Table definitions (the archiver's): each table's sort_by, bloom_filter_columns and
    /// target_file_size_bytes, matched by table name. Tables without a definition (dead
    /// letters, tables of other writers) are compacted without sorting or bloom filters.
    #[arg(long, env = "LOGLAKE_TABLES_DIR")]
    pub tables_dir: Option<PathBuf>,
    /// Sort keys for every table compacted, instead of its definition's (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sort_by: Option<Vec<String>>,
    /// Bloom filter columns for every table compacted, instead of its definition's.
    #[arg(long, value_delimiter = ',')]
    pub bloom_filter_columns: Option<Vec<String>>,
    /// Input bytes per rewritten file, instead of the definition's target_file_size_bytes
    /// (default 256MiB).
    #[arg(long, value_parser = parse_bytes)]
    pub target_file_size: Option<u64>,
    /// A partition is compacted once its hour (or day) of event time ended this long ago.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub settle: Duration,
    /// Earlier compaction outputs under this fraction of the target merge with late data.
    #[arg(long, default_value_t = 0.5)]
    pub min_file_fraction: f64,
    /// Memory for sorting one group; past it the sort spills to --spill-dir.
    #[arg(long, env = "LOGLAKE_MEMORY_BUDGET", default_value = "512MiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    /// Where a sort spills (default: the system's temporary directory).
    #[arg(long)]
    pub spill_dir: Option<PathBuf>,
    /// The maintenance lease lapses this long after its last renewal (a crashed run's lease
    /// frees itself after it).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Wait this long for a lease another maintenance writer holds, then skip the table.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub wait_lease: Duration,
    /// Print the plan (as JSON) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not checkpoint and clean the log after compacting.
    #[arg(long)]
    pub no_checkpoint: bool,
    /// Keep log files this long (default: the table's delta.logRetentionDuration, 30 days).
    #[arg(long, value_parser = parse_duration)]
    pub log_retention: Option<Duration>,
    /// Serve /metrics (OpenMetrics) and /healthz on this address while the run lasts.
    #[arg(long, env = "LOGLAKE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write the run's metrics (OpenMetrics text) to this file after each table, replacing it
    /// atomically: for a textfile collector or the nightly runner.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}

/// `loglake checkpoint`: write a Delta checkpoint and remove expired log files.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub target: Target,
    /// Keep log files this long (default: the table's delta.logRetentionDuration, 30 days).
    #[arg(long, value_parser = parse_duration)]
    pub log_retention: Option<Duration>,
}

/// The maintenance lease flags of `vacuum` and `retention`.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// The maintenance lease lapses this long after its last renewal.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Wait this long for a lease another maintenance writer holds, then skip the table.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub wait_lease: Duration,
}

/// `loglake vacuum`: delete removed files past the retention and orphaned uploads.
#[derive(Debug, Clone, clap::Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    pub target: Target,
    /// Keep removed and unreferenced files this long (default: the table's
    /// delta.deletedFileRetentionDuration, 7 days). Time travel works inside it.
    #[arg(long, value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Allow a retention below the table's delta.deletedFileRetentionDuration (time travel inside
    /// that window may fail, and an upload older than the retention that a slow writer has not
    /// committed yet would be deleted).
    #[arg(long)]
    pub unsafe_short_retention: bool,
    /// List what would be deleted, with sizes; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// `loglake retention`: remove the files whose rows are past the table's retention.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub target: Target,
    /// Table definitions (the archiver's): each table's retention_days and
    /// retention_by_namespace, matched by table name. Tables without one keep everything.
    #[arg(long, env = "LOGLAKE_TABLES_DIR")]
    pub tables_dir: Option<PathBuf>,
    /// Days to keep, for every table run on, instead of its definition's.
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Days per namespace, instead of the definition's (`payments=365,scratch=3`).
    #[arg(long, value_delimiter = ',', value_parser = parse_namespace_days)]
    pub retention_by_namespace: Option<Vec<(String, u32)>>,
    /// List the files that would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// `loglake delete`: delete the rows matching a SQL predicate (a GDPR erasure).
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub target: Target,
    /// The rows to delete: a SQL boolean expression over the table's columns, e.g.
    /// "message LIKE '%jane.doe@example.com%'". Rows where it is NULL stay.
    #[arg(long = "where", value_name = "SQL")]
    pub predicate: String,
    /// Table definitions: the bloom filter columns of the rewritten files.
    #[arg(long, env = "LOGLAKE_TABLES_DIR")]
    pub tables_dir: Option<PathBuf>,
    /// Count the matching rows per file; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Memory for the candidate query and the rewrites.
    #[arg(long, env = "LOGLAKE_MEMORY_BUDGET", default_value = "512MiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// `loglake delete`: one JSON object per table on stdout.
pub fn run_delete(args: DeleteArgs) -> Result<ExitCode, CompactError> {
    if args.predicate.trim().is_empty() {
        return Err(CompactError::Config("--where must not be empty".into()));
    }
    let defs = match &args.tables_dir {
        Some(dir) => load_table_dir(dir).map_err(|e| CompactError::Config(e.to_string()))?,
        None => Vec::new(),
    };
    let options = writer_storage_options(&Default::default())?;
    let settings = DeleteSettings {
        predicate: args.predicate.clone(),
        dry_run: args.dry_run,
        lease_ttl: args.lease.lease_ttl,
        lease_wait: args.lease.wait_lease,
        owner: owner(),
        memory_budget: usize::try_from(args.memory_budget).unwrap_or(usize::MAX),
    };
    runtime()?.block_on(async {
        for (name, url) in tables(&args.target, &options).await? {
            let def = defs.iter().find(|d| d.name == name);
            let layout = Layout {
                sort_by: Vec::new(),
                bloom_filter_columns: def
                    .map(|d| d.bloom_filter_columns.clone())
                    .unwrap_or_default(),
                target_file_size: DEFAULT_TARGET_FILE_SIZE_BYTES,
                schema: def.map(|d| table_schema(d.kind())),
            };
            let r = delete_rows(&name, &url, &options, &layout, &settings).await?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `namespace=days`, days at least 1.
fn parse_namespace_days(s: &str) -> Result<(String, u32), String> {
    let (ns, days) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected namespace=days"))?;
    let days: u32 = days
        .trim()
        .parse()
        .map_err(|e| format!("`{s}`: days: {e}"))?;
    if days == 0 || ns.trim().is_empty() {
        return Err(format!("`{s}`: a namespace and at least 1 day"));
    }
    Ok((ns.trim().to_string(), days))
}

/// `loglake vacuum`: one JSON object per table on stdout.
pub fn run_vacuum(args: VacuumArgs) -> Result<ExitCode, CompactError> {
    let options = writer_storage_options(&Default::default())?;
    let settings = VacuumSettings {
        retention: args.retention,
        unsafe_short_retention: args.unsafe_short_retention,
        dry_run: args.dry_run,
        lease_ttl: args.lease.lease_ttl,
        lease_wait: args.lease.wait_lease,
        owner: owner(),
    };
    runtime()?.block_on(async {
        for (name, url) in tables(&args.target, &options).await? {
            let r = vacuum_table(&name, &url, &options, &settings).await?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `loglake retention`: one JSON object per table on stdout.
pub fn run_retention(args: RetentionArgs) -> Result<ExitCode, CompactError> {
    let defs = match &args.tables_dir {
        Some(dir) => load_table_dir(dir).map_err(|e| CompactError::Config(e.to_string()))?,
        None => Vec::new(),
    };
    let options = writer_storage_options(&Default::default())?;
    let settings = RetentionSettings {
        dry_run: args.dry_run,
        lease_ttl: args.lease.lease_ttl,
        lease_wait: args.lease.wait_lease,
        owner: owner(),
        batch: 5_000,
    };
    runtime()?.block_on(async {
        for (name, url) in tables(&args.target, &options).await? {
            let def = defs.iter().find(|d| d.name == name);
            let policy = RetentionPolicy {
                default_days: args
                    .retention_days
                    .or_else(|| def.and_then(|d| d.retention_days)),
                by_namespace: match &args.retention_by_namespace {
                    Some(v) => v.iter().cloned().collect(),
                    None => def
                        .map(|d| d.retention_by_namespace.clone())
                        .unwrap_or_default(),
                },
            };
            let r = retain_table(&name, &url, &options, &policy, &settings).await?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, CompactError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CompactError::Internal(format!("starting the async runtime: {e}")))
}

/// The tables of `target`, by name.
async fn tables(
    target: &Target,
    options: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, Url>, CompactError> {
    match (&target.lake, &target.table) {
        (Some(lake), _) => {
            let root = table_url(lake)?;
            let found = discover(&root, options).await?;
            if found.is_empty() {
                return Err(CompactError::Config(format!(
                    "no Delta tables under {root}"
                )));
            }
            Ok(found)
        }
        (None, Some(t)) => {
            let url = table_url(t)?;
            let name = url
                .path()
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("table")
                .to_string();
            Ok(BTreeMap::from([(name, url)]))
        }
        (None, None) => Err(CompactError::Config("pass --lake or --table".into())),
    }
}

/// The layout of table `name`: its definition's, overridden by the flags.
fn layout_for(name: &str, defs: &[TableDef], args: &CompactArgs) -> Layout {
    let def = defs.iter().find(|d| d.name == name);
    Layout {
        sort_by: args
            .sort_by
            .clone()
            .or_else(|| def.map(|d| d.sort_by.clone()))
            .unwrap_or_default(),
        bloom_filter_columns: args
            .bloom_filter_columns
            .clone()
            .or_else(|| def.map(|d| d.bloom_filter_columns.clone()))
            .unwrap_or_default(),
        target_file_size: args
            .target_file_size
            .or_else(|| def.map(|d| d.target_file_size_bytes))
            .unwrap_or(DEFAULT_TARGET_FILE_SIZE_BYTES),
        schema: def.map(|d| table_schema(d.kind())),
    }
}

/// A name for this run in the lease: host, pid and a random suffix.
fn owner() -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    lease::owner_name(&run[..8])
}

/// `loglake compact`: one JSON object per table on stdout.
pub fn run_compact(args: CompactArgs) -> Result<ExitCode, CompactError> {
    if !(0.0..=1.0).contains(&args.min_file_fraction) {
        return Err(CompactError::Config(format!(
            "--min-file-fraction must be within 0..=1, not {}",
            args.min_file_fraction
        )));
    }
    let defs = match &args.tables_dir {
        Some(dir) => load_table_dir(dir).map_err(|e| CompactError::Config(e.to_string()))?,
        None => Vec::new(),
    };
    let options = writer_storage_options(&Default::default())?;
    let settings = Settings {
        settle: args.settle,
        min_size_fraction: args.min_file_fraction,
        memory_budget: usize::try_from(args.memory_budget).unwrap_or(usize::MAX),
        spill_dir: args.spill_dir.clone(),
        lease_ttl: args.lease_ttl,
        lease_wait: args.wait_lease,
        dry_run: args.dry_run,
        checkpoint: !args.no_checkpoint,
        log_retention: args.log_retention,
        owner: owner(),
    };
    let telemetry = std::sync::Arc::new(loglake_lake::telemetry::Telemetry::new());
    let metrics = CompactorMetrics::default();
    telemetry.register(&metrics);
    let write_metrics = || -> Result<(), CompactError> {
        match &args.metrics_file {
            Some(path) => telemetry
                .write_to(path)
                .map_err(|e| CompactError::Config(e.to_string())),
            None => Ok(()),
        }
    };
    runtime()?.block_on(async {
        if let Some(addr) = args.metrics_addr {
            let bound = telemetry
                .clone()
                .serve(addr)
                .await
                .map_err(|e| CompactError::Config(e.to_string()))?;
            tracing::info!(%bound, "serving /metrics and /healthz");
        }
        let tables = tables(&args.target, &options).await?;
        for (name, url) in tables {
            let layout = layout_for(&name, &defs, &args);
            match compact_table(&name, &url, &options, &layout, &settings).await {
                Ok(m) => {
                    metrics.record(&m, unix_now());
                    write_metrics()?;
                    println!("{}", serde_json::to_string(&m).unwrap_or_default());
                }
                Err(e) => {
                    metrics.failed(&name);
                    if let Err(w) = write_metrics() {
                        tracing::error!("{w}");
                    }
                    return Err(e);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `loglake checkpoint`: one JSON object per table on stdout.
pub fn run_checkpoint(args: CheckpointArgs) -> Result<ExitCode, CompactError> {
    let options = writer_storage_options(&Default::default())?;
    runtime()?.block_on(async {
        for (name, url) in tables(&args.target, &options).await? {
            let mut table = open_table(&name, &url, &options).await?;
            if table.version().is_none() {
                return Err(CompactError::NoTable {
                    table: name,
                    url: url.to_string(),
                });
            }
            let m = checkpoint_table(&name, &url, &mut table, args.log_retention).await?;
            let mut out = serde_json::to_value(&m).unwrap_or_default();
            if let Some(o) = out.as_object_mut() {
                o.insert("table".into(), name.clone().into());
                o.insert("url".into(), url.to_string().into());
            }
            println!("{out}");
        }
        Ok(ExitCode::SUCCESS)
    })
}
