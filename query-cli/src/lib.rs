//! `loglake query`: the analysts' SQL CLI over the whole lake.
//!
//! * [`engine`]: DataFusion session over the lake (Delta tables discovered under `--lake`), the
//!   table functions `delta_scan`, `read_parquet`, `log_context`, `correlate`, time travel,
//!   read-only guard, memory limit with spilling.
//! * [`functions`]: log functions (`log_level`, `log_template`, `regexp_extract`, `time_bucket`,
//!   JSON access from `datafusion-functions-json`).
//! * [`output`]: result formats. [`script`]: statements, parameters, positions.
//! * [`statement`]: running one statement (cancellable) and streaming its result.
//! * [`repl`]: the interactive prompt. (Test and benchmark tables come from the archiver's
//!   generator, `loglake_archiver::fixture`, a dev-dependency.)
//!
//! Exit codes: 0 success, 1 query error, 2 usage error.

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod diagnose;
pub mod engine;
pub mod fit;
pub mod functions;
pub mod highlight;
pub mod lake;
pub mod output;
pub mod progress;
pub mod repl;
pub mod script;
pub mod sqltypes;
pub mod statement;
pub mod tablefns;
pub mod tfcheck;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use datafusion::error::DataFusionError;

pub use engine::{Engine, EngineOptions};
pub use output::Format;
pub use statement::{StatementContext, run_statement};

/// Errors of the query CLI.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Wrong invocation (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A statement failed (exit code 1); the message names the statement and position.
    #[error("{0}")]
    Statement(String),
    /// Anything else (exit code 1).
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl QueryError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            QueryError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Arguments of `loglake query`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(after_help = "Exit codes: 0 success, 1 query error, 2 usage error.\n\
Without -c/-f, SQL is read from standard input, or an interactive prompt starts in a terminal.\n\
A query running over a second shows a progress line on stderr when it is a terminal\n\
(LOGLAKE_PROGRESS=never turns it off, =always draws it anyway).\n\
See query-cli/README.md for the table functions, log functions and time travel.")]
pub struct QueryArgs {
    /// Lake root (s3://bucket/prefix or a local path): every Delta table under it is registered by
    /// its folder name.
    #[arg(long, env = "LOGLAKE_LAKE", value_name = "URL")]
    pub lake: Option<String>,
    /// Run these SQL statements (`;`-separated) and exit.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    pub command: Option<String>,
    /// Run the SQL statements in this file and exit.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Result format (default: table; with --output, guessed from the file extension).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write results to FILE instead of standard output (`.parquet` writes Parquet).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Substitute `${NAME}` in the SQL with VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Print at most N rows of each result.
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
    /// Memory limit for query execution (e.g. 512M, 4G); sorts, joins and aggregations spill to
    /// disk beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// Folder for spill files (default: the system temp folder).
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Allow statements that write to storage (COPY TO, INSERT, UPDATE, DELETE, MERGE).
    #[arg(long)]
    pub allow_write: bool,
    /// Print the elapsed time of each statement on stderr.
    #[arg(long)]
    pub timing: bool,
    /// Commands run when the interactive prompt starts (default: ~/.loglakerc).
    #[arg(long, value_name = "FILE")]
    pub rc: Option<PathBuf>,
    /// Number of parallel partitions (default: number of cores).
    #[arg(long, value_name = "N")]
    pub target_partitions: Option<usize>,
}

/// Parse `512M`, `4G`, `1.5GB`, `1024` (bytes) into bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?} (use e.g. 512M, 4G)"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok((n * mult as f64) as usize)
}

impl QueryArgs {
    fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            lake: self.lake.clone(),
            memory_limit: self.memory_limit,
            temp_dir: self.temp_dir.clone(),
            allow_write: self.allow_write,
            target_partitions: self.target_partitions,
        }
    }

    fn effective_format(&self) -> Format {
        if let Some(f) = self.format {
            return f;
        }
        let ext = self
            .output
            .as_ref()
            .and_then(|p| p.extension())
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("parquet") => Format::Parquet,
            Some("csv") => Format::Csv,
            Some("tsv") => Format::Tsv,
            Some("json") => Format::Json,
            Some("ndjson") | Some("jsonl") => Format::Ndjson,
            Some("md") => Format::Markdown,
            _ => Format::Table,
        }
    }
}

/// Entry point of `loglake query`.
pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let interactive =
        args.command.is_none() && args.file.is_none() && std::io::stdin().is_terminal();
    let mut err = std::io::stderr();
    let result = if interactive {
        repl::run(args)
    } else {
        let stdout: Box<output::Out> = Box::new(std::io::stdout());
        run_batch(args, None, stdout, &mut err)
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "loglake query: error: {e}");
            ExitCode::from(e.exit_code())
        }
    })
}

/// Build the tokio runtime the engine runs on. Results are written by the calling thread, not on
/// the runtime's workers.
pub fn runtime() -> Result<tokio::runtime::Runtime, QueryError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Batch mode: `-c`, `-f`, or SQL on standard input (`stdin` overrides reading the process's
/// standard input, for tests). Stops at the first failing statement.
pub fn run_batch(
    args: QueryArgs,
    stdin: Option<String>,
    stdout: Box<output::Out>,
    err: &mut dyn Write,
) -> Result<(), QueryError> {
    let params = script::parse_params(&args.params)?;
    let sql = read_sql(&args, stdin)?;
    let sql = script::expand_meta_lines(&script::substitute_params(&sql, &params)?);
    let format = args.effective_format();
    let mut out = open_output(&args, format, stdout)?;
    let rt = runtime()?;
    let engine = rt
        .block_on(Engine::new(args.engine_options()))
        .map_err(|e| match e {
            DataFusionError::Plan(m) if args.lake.is_some() => {
                QueryError::Usage(format!("--lake: {m}"))
            }
            other => QueryError::DataFusion(other),
        })?;
    let mut wrote_parquet = false;
    // batch mode never cuts values: its output is read by programs and files
    let shape = output::ResultShape {
        format,
        max_rows: args.max_rows,
        max_width: None,
    };
    let ctx = StatementContext {
        rt: &rt,
        engine: &engine,
        shape: &shape,
        cancel: None,
    };
    for stmt in script::split_statements(&sql) {
        let started = Instant::now();
        match run_statement(&ctx, &stmt, &mut *out, err, &mut wrote_parquet) {
            Ok(rows) => {
                if args.timing {
                    let _ = writeln!(
                        err,
                        "statement {}: {rows} row(s) in {:.3}s",
                        stmt.index,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                let _ = out.flush();
                return Err(e);
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The script: `-c`, `-f`, the given `stdin` text, or the process's standard input.
fn read_sql(args: &QueryArgs, stdin: Option<String>) -> Result<String, QueryError> {
    Ok(if let Some(c) = &args.command {
        c.clone()
    } else if let Some(f) = &args.file {
        std::fs::read_to_string(f)
            .map_err(|e| QueryError::Usage(format!("cannot read {}: {e}", f.display())))?
    } else if let Some(s) = stdin {
        s
    } else {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    })
}

/// Where batch results go: the `--output` file (created now), else `stdout`; Parquet is not
/// written to a terminal.
fn open_output(
    args: &QueryArgs,
    format: Format,
    stdout: Box<output::Out>,
) -> Result<Box<output::Out>, QueryError> {
    match &args.output {
        Some(p) => Ok(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| QueryError::Usage(format!("cannot create {}: {e}", p.display())))?,
        ))),
        None => {
            if format == Format::Parquet && std::io::stdout().is_terminal() {
                return Err(QueryError::Usage(
                    "--format parquet needs --output FILE or a pipe".into(),
                ));
            }
            Ok(stdout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("1.5GB"), Ok(3 << 29));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }
}
