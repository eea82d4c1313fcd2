//! `loglake`: one binary, one subcommand per stage. Each stage's library crate owns its
//! subcommand's arguments (a clap `Args` struct) and its logic (`run(args) -> Result<ExitCode>`);
//! this file only parses, dispatches and maps errors to exit codes.

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc rather than the system allocator: glibc's malloc keeps the multi-MiB Arrow and
/// Parquet buffers that the archiver frees (its mmap threshold rises to 32 MiB after the first
/// large free), so the resident set drifts far above what is in use; jemalloc returns freed
/// pages to the system after a delay. Measured in DESIGN.md, "Memory".
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "loglake",
    version,
    about = "Offline log lakehouse: Kafka log topics -> Delta Lake on S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text (coloured on a terminal unless NO_COLOR is set) or as one JSON
    /// object per line (for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LOGLAKE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume Kafka log topics into partitioned Delta tables, exactly once.
    Archive(Box<loglake_archiver::ArchiveArgs>),
    /// Check that a table (+ dead letters) holds every Kafka record exactly once.
    Audit(loglake_archiver::AuditArgs),
    /// Generate synthetic container logs (Fluent Bit JSON) into a Kafka topic or a file.
    Gen(loglake_archiver::GenArgs),
    /// The whole pipeline on embedded defaults: bundled real logs through an embedded Kafka, the
    /// nightly job (archive, completeness, compaction, ledger) on a local lake, example queries.
    Quickstart(loglake_jobs::quickstart::QuickstartArgs),
    /// Rewrite the small files of closed partitions into large files sorted by the table's keys,
    /// with bloom filters; then checkpoint the table and clean its log.
    Compact(Box<loglake_compactor::CompactArgs>),
    /// Write a Delta checkpoint of a table and remove its expired log files.
    Checkpoint(loglake_compactor::CheckpointArgs),
    /// Delete data files removed longer ago than the retention, and orphaned uploads.
    Vacuum(loglake_compactor::VacuumArgs),
    /// Remove the files whose rows are past the table's retention (per namespace overrides).
    Retention(loglake_compactor::RetentionArgs),
    /// Delete the rows matching a SQL predicate (GDPR), rewriting only the files that hold them.
    Delete(loglake_compactor::DeleteArgs),
    /// The T+1 job of a lake: archive to frozen offsets, mark complete days, compact, retention,
    /// vacuum; with a run ledger, one runner per lake (exit 3 when another holds the lease).
    Nightly(loglake_jobs::NightlyArgs),
    /// SQL over the whole lake: every Delta table as a table, log functions, correlation.
    Query(Box<loglake_query::QueryArgs>),
    /// Export a table day for Hadoop/Spark (Hive-partitioned Parquet + DDL + _SUCCESS) or rows
    /// for ML training (reproducible Parquet/TFRecord shards with a manifest).
    Export(loglake_export::ExportArgs),
    /// Write the HTML report of a day (volume, errors, templates, dead letters, completeness,
    /// compaction) and its JSON into a folder; no network needed to open it.
    Report(loglake_insights::ReportArgs),
    /// Derived tables by hand (the nightly stages): `insights templates` mines a day into the
    /// log_templates table.
    Insights(loglake_insights::InsightsArgs),
    /// Print version information of loglake and its storage stack.
    Version,
}

/// The tracing filter for `LOGLAKE_LOG` (`None`: not set). Delta Kernel logs an ERROR each time
/// a table that does not exist yet is opened (`No files in log segment`), which the archiver
/// does on purpose before creating it; that line stays off unless the filter names the kernel.
fn log_filter(env: Option<&str>) -> String {
    const DEFAULT: &str = "warn,aws_config=error,buoyant_kernel=off,loglake=info,loglake_archiver=info,loglake_compactor=info,loglake_jobs=info,loglake_query=info,loglake_export=info";
    match env.map(str::trim) {
        None | Some("") => DEFAULT.to_string(),
        Some(s) if s.contains("buoyant_kernel") => s.to_string(),
        Some(s) => format!("{s},buoyant_kernel::snapshot::builder=off"),
    }
}

/// Colour only for a person: stderr is a terminal and `NO_COLOR` (no-color.org) is not set.
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let spec = log_filter(std::env::var("LOGLAKE_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("loglake: ignoring LOGLAKE_LOG={spec:?}: {e}");
        EnvFilter::new(log_filter(None))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Archive(args) => loglake_archiver::run(*args).map_err(Into::into),
        Command::Audit(args) => loglake_archiver::run_audit(args).map_err(Into::into),
        Command::Gen(args) => loglake_archiver::run_gen(args).map_err(Into::into),
        Command::Quickstart(args) => loglake_jobs::quickstart::run(args).map_err(Into::into),
        Command::Compact(args) => loglake_compactor::run_compact(*args).map_err(Into::into),
        Command::Checkpoint(args) => loglake_compactor::run_checkpoint(args).map_err(Into::into),
        Command::Vacuum(args) => loglake_compactor::run_vacuum(args).map_err(Into::into),
        Command::Retention(args) => loglake_compactor::run_retention(args).map_err(Into::into),
        Command::Delete(args) => loglake_compactor::run_delete(args).map_err(Into::into),
        Command::Nightly(args) => loglake_jobs::run_nightly(args).map_err(Into::into),
        Command::Query(args) => loglake_query::run(*args),
        Command::Export(args) => loglake_export::run(args).map_err(Into::into),
        Command::Report(args) => loglake_insights::run_report(args).map_err(Into::into),
        Command::Insights(args) => loglake_insights::run_insights(args).map_err(Into::into),
        Command::Version => {
            println!("loglake {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loglake: error: {}", error_text(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code of a failed subcommand: the stage error's own mapping (archive: 2 for
/// configuration, 4 for a stall; README, "Operations"), else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<loglake_compactor::CompactError>() {
        return c.exit_code();
    }
    if let Some(j) = e.downcast_ref::<loglake_jobs::JobError>() {
        return j.exit_code();
    }
    if let Some(i) = e.downcast_ref::<loglake_insights::InsightsError>() {
        return i.exit_code();
    }
    if let Some(x) = e.downcast_ref::<loglake_export::ExportError>() {
        return x.exit_code();
    }
    e.downcast_ref::<loglake_archiver::ArchiveError>()
        .map_or(1, loglake_archiver::ArchiveError::exit_code)
}

/// The error and its causes joined with ": ", leaving out a cause whose text the message already
/// holds (loglake's error types print their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{colour, error_text, log_filter};

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "redirected to a file or a pipe");
    }

    #[test]
    fn the_kernel_error_for_a_new_table_stays_off_unless_asked_for() {
        assert!(log_filter(None).contains("buoyant_kernel=off"));
        assert_eq!(log_filter(Some(" ")), log_filter(None));
        assert_eq!(
            log_filter(Some("warn")),
            "warn,buoyant_kernel::snapshot::builder=off"
        );
        assert_eq!(
            log_filter(Some("buoyant_kernel=debug")),
            "buoyant_kernel=debug"
        );
        for spec in [None, Some("warn"), Some("info,loglake_archiver=debug")] {
            assert!(
                tracing_subscriber::EnvFilter::try_new(log_filter(spec)).is_ok(),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let inner = std::io::Error::other("Timed out");
        let e = anyhow::Error::new(inner).context("fetch_watermarks of t/1: Timed out");
        assert_eq!(error_text(&e), "fetch_watermarks of t/1: Timed out");
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing x");
        assert_eq!(error_text(&e), "writing x: disk full");
    }
}
