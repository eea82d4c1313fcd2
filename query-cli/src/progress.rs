//! The progress line on stderr for queries running longer than a second on a terminal:
//! elapsed time, rows, bytes and files scanned so far, read from the running plan's scan
//! metrics.
//!
//! The ticker is a thread of its own: DataFusion keeps every worker of the query runtime busy
//! during a scan, so a ticker task on that runtime would not run until the query is done.

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::common::human_readable_size;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// Delay before the line appears (`LOGLAKE_PROGRESS_DELAY_MS` overrides it, for tests).
const DELAY: Duration = Duration::from_secs(1);
/// How often the line is redrawn (`LOGLAKE_PROGRESS_TICK_MS` overrides it, for tests).
const TICK: Duration = Duration::from_millis(250);

/// What the scans of a running plan have done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanProgress {
    pub rows: u64,
    pub bytes: u64,
    pub files_opened: u64,
    pub files_total: u64,
}

/// Sum the scan metrics of every `DataSourceExec` in the plan (live counters).
pub fn scan_progress(plan: &Arc<dyn ExecutionPlan>) -> ScanProgress {
    let mut p = ScanProgress::default();
    if let Some(ds) = plan.downcast_ref::<DataSourceExec>() {
        if let Some(m) = ds.metrics() {
            p.rows += m.output_rows().unwrap_or(0) as u64;
            p.bytes += m
                .sum_by_name("bytes_scanned")
                .map(|v| v.as_usize())
                .unwrap_or(0) as u64;
            p.files_opened += m
                .sum_by_name("files_opened")
                .map(|v| v.as_usize())
                .unwrap_or(0) as u64;
        }
        p.files_total += crate::lake::count_files(plan) as u64;
    }
    for c in plan.children() {
        let q = scan_progress(c);
        p.rows += q.rows;
        p.bytes += q.bytes;
        p.files_opened += q.files_opened;
        p.files_total += q.files_total;
    }
    p
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The text of the progress line.
pub fn line(elapsed: Duration, scan: Option<ScanProgress>, rows_out: u64) -> String {
    let secs = elapsed.as_secs_f64();
    match scan {
        None => format!("… {secs:.1}s planning"),
        Some(s) => {
            let files = if s.files_total > 0 {
                format!(
                    ", {} of {} files",
                    s.files_opened.min(s.files_total),
                    s.files_total
                )
            } else {
                String::new()
            };
            let out = if rows_out > 0 {
                format!(", {} rows out", thousands(rows_out))
            } else {
                String::new()
            };
            format!(
                "… {secs:.1}s: scanned {} rows, {}{files}{out}",
                thousands(s.rows),
                human_readable_size(s.bytes as usize)
            )
        }
    }
}

/// Whether the progress line is drawn: on a terminal, or when `LOGLAKE_PROGRESS=always`.
pub fn wanted(stderr_is_terminal: bool) -> bool {
    match std::env::var("LOGLAKE_PROGRESS").as_deref() {
        Ok("always") => true,
        Ok("never") => false,
        _ => stderr_is_terminal,
    }
}

/// Shared state the ticker reads.
#[derive(Default)]
struct Shared {
    plan: Option<Arc<dyn ExecutionPlan>>,
    rows_out: u64,
}

/// A running progress ticker; dropped or [`Progress::stop`]ped, it clears its line.
pub struct Progress {
    shared: Arc<Mutex<Shared>>,
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Start the ticker thread (nothing when `enabled` is false).
    pub fn start(enabled: bool) -> Progress {
        let shared = Arc::new(Mutex::new(Shared::default()));
        if !enabled {
            return Progress {
                shared,
                stop: None,
                handle: None,
            };
        }
        let delay = std::env::var("LOGLAKE_PROGRESS_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(DELAY);
        let tick_every = std::env::var("LOGLAKE_PROGRESS_TICK_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(TICK);
        let (tx, rx) = mpsc::channel::<()>();
        let s = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("loglake-progress".into())
            .spawn(move || tick(&rx, &s, delay, tick_every))
            .ok();
        Progress {
            shared,
            stop: Some(tx),
            handle,
        }
    }

    /// The physical plan being executed (its scan metrics feed the line).
    pub fn set_plan(&self, plan: Arc<dyn ExecutionPlan>) {
        if let Ok(mut s) = self.shared.lock() {
            s.plan = Some(plan);
        }
    }

    /// Rows of the result so far.
    pub fn add_rows(&self, n: u64) {
        if let Ok(mut s) = self.shared.lock() {
            s.rows_out += n;
        }
    }

    /// Stop the ticker and clear its line (before results are printed).
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tick(rx: &mpsc::Receiver<()>, shared: &Mutex<Shared>, delay: Duration, every: Duration) {
    let started = Instant::now();
    let mut wait = delay;
    let mut shown = false;
    // a message or a dropped sender (the query ended) stops the ticker
    while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(wait) {
        wait = every;
        let (plan, rows_out) = match shared.lock() {
            Ok(s) => (s.plan.clone(), s.rows_out),
            Err(_) => break,
        };
        let text = line(
            started.elapsed(),
            plan.as_ref().map(scan_progress),
            rows_out,
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
        shown = true;
    }
    if shown {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
        let s = ScanProgress {
            rows: 1_500_000,
            bytes: 3 * 1024 * 1024,
            files_opened: 2,
            files_total: 5,
        };
        assert_eq!(
            line(Duration::from_millis(2500), Some(s), 10),
            "… 2.5s: scanned 1,500,000 rows, 3.0 MB, 2 of 5 files, 10 rows out"
        );
        assert_eq!(line(Duration::from_secs(1), None, 0), "… 1.0s planning");
    }
}
