//! # loglake-archiver
//!
//! `loglake archive` consumes Kafka log topics and writes them, exactly once, into partitioned
//! Delta Lake tables (local or S3), with a dead-letter table for records that cannot be decoded.
//! `loglake audit` checks a table's offset coverage against the broker.
//!
//! Layout: [`config`] (flags > env > file > defaults), [`archive`] (the loop and the offset
//! protocol), [`writer`] (partitioned Parquet writers under a byte budget, pure roll/flush
//! planning), [`audit`], [`metrics`]. Table creation, uploads, the commit
//! protocol, storage options, the Parquet settings and Delta file statistics are shared with
//! the other stages in `loglake-lake`.

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod archive;
pub mod audit;
pub mod config;
pub mod error;
pub mod etl;
pub mod explain;
pub mod fixture;
pub mod r#gen;
pub mod kafka_log;
pub mod metrics;
pub mod preflight;
pub mod progress;
pub mod watch;
pub mod writer;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use archive::{ArchiveConfig, ArchiveReport, Archiver, TableTarget};
pub use audit::{AuditArgs, AuditReport};
pub use config::ArchiveArgs;
pub use error::ArchiveError;
pub use r#gen::{GenArgs, run_gen};

fn runtime() -> Result<tokio::runtime::Runtime, ArchiveError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("loglake-io")
        .build()
        .map_err(|source| ArchiveError::Io {
            what: "starting the I/O runtime".into(),
            source,
        })
}

/// Runs an archiver to completion on a dedicated thread (decode/encode are CPU work, kept off the
/// async runtime, which only does object-store I/O).
pub fn run_archiver(
    cfg: ArchiveConfig,
    rt: &tokio::runtime::Runtime,
) -> Result<ArchiveReport, ArchiveError> {
    preflight::check_kafka(&cfg)?;
    let handle = rt.handle().clone();
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("loglake-archiver".into())
        .spawn(move || {
            let mut archiver = match Archiver::new(cfg, handle) {
                Ok(a) => a,
                Err(e) => {
                    let _ = result_tx.send(Err(e));
                    return;
                }
            };
            let _ = result_tx.send(archiver.run_to_end());
            // Closing the consumer leaves the group; it waits for the broker.
            drop(archiver);
            let _ = closed_tx.send(());
        })
        .map_err(|source| ArchiveError::Io {
            what: "spawning the archiver thread".into(),
            source,
        })?;
    let result = result_rx
        .recv()
        .map_err(|_| ArchiveError::Other("archiver thread panicked".into()))?;
    match closed_rx.recv_timeout(CONSUMER_CLOSE_TIMEOUT) {
        Ok(()) => {
            let _ = worker.join();
        }
        Err(_) => tracing::warn!(
            "leaving the consumer group did not finish within {CONSUMER_CLOSE_TIMEOUT:?} (is the broker answering?): exiting anyway; the group drops this member after its session timeout"
        ),
    }
    result
}

/// How long `loglake archive` waits, after its work is done or failed, for the consumer to
/// leave the group before exiting anyway: a broker that stopped answering must not keep a
/// finished (or stalled) run alive.
pub const CONSUMER_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Exit code of `loglake archive` when a shutdown did not finish within `--shutdown-timeout`
/// (or a second signal came).
pub const SHUTDOWN_TIMEOUT_EXIT_CODE: i32 = 3;

/// `loglake archive`. Prints the run report as one JSON line on stdout.
pub fn run(args: ArchiveArgs) -> Result<ExitCode, ArchiveError> {
    let rt = runtime()?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let telemetry = Arc::new(metrics::Telemetry::new());
    let metrics = Arc::new(metrics::ArchiverMetrics::new(telemetry.health()));
    telemetry.register(&*metrics);
    if let Some(input) = &args.explain_etl {
        // No Kafka and no store: brokers are not needed to explain the definitions.
        let args = ArchiveArgs {
            brokers: args.brokers.clone().or_else(|| Some("unused:9092".into())),
            ..args.clone()
        };
        let (cfg, _) = args.resolve(shutdown, metrics)?;
        explain::explain(&cfg, input, &mut std::io::stdout().lock())?;
        return Ok(ExitCode::SUCCESS);
    }
    let (cfg, metrics_addr) = args.resolve(shutdown.clone(), metrics)?;
    tracing::info!("starting archiver: {}", preflight::summary(&cfg));
    if let Some(addr) = metrics_addr {
        // The error names the address.
        let local = rt
            .block_on(telemetry.serve(addr))
            .map_err(|e| ArchiveError::Config(e.to_string()))?;
        tracing::info!(%local, "serving /metrics and /healthz");
    }
    for url in cfg.tables.iter().map(|t| &t.url).chain(cfg.dlq.iter()) {
        if url.scheme() == "s3" && !args.allow_unsafe_store {
            rt.block_on(loglake_lake::check_put_if_absent(url, &cfg.storage_options))?;
        }
    }
    {
        let flag = shutdown.clone();
        let deadline = cfg.shutdown_timeout;
        rt.spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                flag.store(true, Ordering::Relaxed);
                // The flush and commit run on the archiver thread; this task only watches the
                // clock. Exiting without the commit is what a SIGKILL does, which the invariants
                // (DESIGN.md I1-I4) already make safe: the next run re-reads from the table.
                let why = tokio::select! {
                    _ = tokio::time::sleep(deadline) => format!(
                        "flush and commit not done within --shutdown-timeout {}",
                        humantime::format_duration(deadline)
                    ),
                    _ = term.recv() => "a second SIGTERM".to_string(),
                    _ = int.recv() => "a second SIGINT".to_string(),
                };
                tracing::error!(
                    "{why}: exiting without committing what was read since the last commit \
                     (nothing is lost: the next run re-reads it from the table's offsets)"
                );
                std::process::exit(SHUTDOWN_TIMEOUT_EXIT_CODE);
            }
        });
    }
    let report = run_archiver(cfg, &rt)?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// `loglake audit`: prints one JSON object; exit code 1 when anything is missing or duplicated.
pub fn run_audit(args: AuditArgs) -> Result<ExitCode, ArchiveError> {
    let rt = runtime()?;
    let opts = loglake_lake::storage_options(&Default::default());
    let report = rt.block_on(audit::audit(&args, &opts))?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
