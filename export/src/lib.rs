//! # loglake-export
//!
//! `loglake export`: the lake's rows for the tools outside it.
//!
//! - [`hive`]: `loglake export hive`, one day of a table as Hive-partitioned Parquet
//!   (`dt=…/hour=…/`, Spark's escaping, microsecond UTC timestamps, MAP/LIST columns) with the
//!   DDL, a manifest and `_SUCCESS` written last; idempotent ([`export_hive`]).
//! - [`ml`]: `loglake export ml`, a query's rows as reproducible Parquet or TFRecord shards with
//!   a deterministic split by a key, a dataset card and a manifest ([`export_ml`]).
//! - [`layout`]: the Hive layout as pure functions (escaping, types, DDL); [`split`]: the split
//!   hash; [`tfrecord`]: TFRecord framing and `tf.train.Example`; [`target`]: local folders and
//!   object stores; [`source`]: reading through `loglake query`'s engine.
//!
//! Both print one JSON summary on stdout and a progress line on a terminal. Exit codes: 0 done,
//! 1 failed (storage, a query failing while it runs), 2 usage or configuration (unknown table
//! or column, a query that does not plan, a target that is not an export).

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod error;
pub mod hive;
pub mod layout;
pub mod ml;
pub mod progress;
pub mod source;
pub mod split;
pub mod target;
pub mod tfrecord;

use std::process::ExitCode;

use chrono::NaiveDate;

pub use error::ExportError;
pub use hive::{HiveExportMetrics, HiveOptions, export_hive};
pub use ml::{MlExportMetrics, MlFormat, MlOptions, MlSource, MlView, Sharding, export_ml};

/// `loglake export`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit codes: 0 done, 1 failed (retry may help), 2 bad usage or configuration."
)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: ExportCommand,
}

/// The export kinds.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ExportCommand {
    /// One day of a table as Hive-partitioned Parquet (dt=…/hour=…/) with DDL, manifest and
    /// _SUCCESS, for Spark, Hive and Hadoop tools without Delta.
    Hive(HiveArgs),
    /// Rows of a query or a table day as reproducible training shards (Parquet or TFRecord) with
    /// a deterministic split and a manifest.
    Ml(MlArgs),
}

fn parse_size(s: &str) -> Result<u64, String> {
    loglake_lake::units::parse_bytes(s)
}

/// `loglake export hive`.
#[derive(Debug, Clone, clap::Args)]
pub struct HiveArgs {
    /// Lake root (s3://bucket/prefix or a path).
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The table (its folder name under the lake, as `loglake query` names it).
    #[arg(long, value_name = "NAME")]
    pub table: String,
    /// The day to export (YYYY-MM-DD, the table's `dt`).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: NaiveDate,
    /// Export root (default: <lake>/_export/hive/<table>).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Hive database of the DDL.
    #[arg(long, value_name = "DB", default_value = "default")]
    pub hive_db: String,
    /// Hive table name of the DDL (default: the table's name, `_` for other characters).
    #[arg(long, value_name = "NAME")]
    pub hive_table: Option<String>,
    /// Files roll at about this size.
    #[arg(long, value_name = "BYTES", default_value = "128MiB", value_parser = parse_size)]
    pub target_file_size: u64,
    /// Memory for the query; its sort spills to disk beyond it.
    #[arg(long, value_name = "BYTES", default_value = "512MiB", value_parser = parse_size)]
    pub memory_limit: u64,
    /// Export again even when the day was exported from the current table version.
    #[arg(long)]
    pub force: bool,
    /// Add to the day's export (made at version V) only the rows the later versions added, for
    /// incremental consumers; refused when rows of the day were deleted since V.
    #[arg(long, value_name = "V", conflicts_with = "force")]
    pub from_version: Option<i64>,
}

/// `loglake export ml`.
#[derive(Debug, Clone, clap::Args)]
pub struct MlArgs {
    /// Lake root (s3://bucket/prefix or a path): its tables are the query's tables.
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: String,
    /// The rows: a read-only SQL query over the lake (loglake query's dialect and functions).
    #[arg(long, value_name = "SQL", conflicts_with_all = ["table", "date"], required_unless_present = "table")]
    pub query: Option<String>,
    /// The rows: one day of this table (with --date).
    #[arg(long, value_name = "NAME", requires = "date")]
    pub table: Option<String>,
    /// The day of --table (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD", requires = "table")]
    pub date: Option<NaiveDate>,
    /// Export root (a folder or s3://bucket/prefix): empty, or an earlier ML export (replaced).
    #[arg(long, value_name = "DIR|URL")]
    pub to: String,
    /// Shard format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: MlFormat,
    /// At most N shards per split, of equal row counts.
    #[arg(long, value_name = "N", conflicts_with = "shard_size")]
    pub shards: Option<u32>,
    /// A new shard once one reaches about this size (default 256MiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub shard_size: Option<u64>,
    /// Splits and their weights.
    #[arg(long, value_name = "NAME=W,…", default_value = "train=1")]
    pub split: String,
    /// The column whose value decides a row's split (e.g. pod, trace_id): no value in two splits.
    #[arg(long, value_name = "COLUMN")]
    pub split_by: Option<String>,
    /// A column view: `loghub` gives LineId, Timestamp, Level, Component, Content, EventId,
    /// EventTemplate.
    #[arg(long, value_enum)]
    pub view: Option<MlView>,
    /// Memory for the query; sorts spill to disk beyond it.
    #[arg(long, value_name = "BYTES", default_value = "512MiB", value_parser = parse_size)]
    pub memory_limit: u64,
}

impl HiveArgs {
    /// The library options of these arguments.
    pub fn options(&self) -> HiveOptions {
        HiveOptions {
            lake: self.lake.clone(),
            table: self.table.clone(),
            date: self.date,
            to: self.to.clone(),
            hive_db: self.hive_db.clone(),
            hive_table: self.hive_table.clone(),
            target_file_size: self.target_file_size,
            memory_limit: Some(self.memory_limit as usize),
            force: self.force,
            from_version: self.from_version,
            progress: true,
        }
    }
}

impl MlArgs {
    /// The library options of these arguments.
    pub fn options(&self) -> Result<MlOptions, ExportError> {
        let source = match (&self.query, &self.table, self.date) {
            (Some(q), None, None) => MlSource::Query(q.clone()),
            (None, Some(t), Some(d)) => MlSource::Table {
                name: t.clone(),
                date: d,
            },
            _ => {
                return Err(ExportError::Usage(
                    "give --query SQL, or --table NAME with --date".into(),
                ));
            }
        };
        let sharding = match (self.shards, self.shard_size) {
            (Some(n), _) => Sharding::Count(n),
            (None, Some(s)) => Sharding::Size(s),
            (None, None) => Sharding::Size(256 << 20),
        };
        Ok(MlOptions {
            lake: self.lake.clone(),
            source,
            to: self.to.clone(),
            format: self.format,
            sharding,
            splits: split::parse_splits(&self.split)?,
            split_by: self.split_by.clone(),
            view: self.view,
            memory_limit: Some(self.memory_limit as usize),
            progress: true,
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExportError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ExportError::Internal(format!("starting the async runtime: {e}")))
}

fn print_json(v: &impl serde::Serialize) -> Result<(), ExportError> {
    let s = serde_json::to_string(v).map_err(|e| ExportError::Internal(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// `loglake export …`: runs the export and prints its JSON summary.
pub fn run(args: ExportArgs) -> Result<ExitCode, ExportError> {
    let rt = runtime()?;
    match args.command {
        ExportCommand::Hive(a) => {
            let m = rt.block_on(export_hive(&a.options()))?;
            print_json(&m)?;
        }
        ExportCommand::Ml(a) => {
            let opts = a.options()?;
            let m = rt.block_on(export_ml(&opts))?;
            print_json(&m)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
