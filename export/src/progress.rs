//! A progress line on a terminal (rows and files so far); nothing when stderr is not one.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    rows: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// A spinner labelled `what` when `show` and stderr is a terminal; hidden otherwise.
    pub fn new(show: bool, what: &str) -> Self {
        let bar = if show && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
            {
                b.set_style(style);
            }
            b.set_prefix(what.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            rows: AtomicU64::new(0),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn show(&self) {
        self.bar.set_message(format!(
            "{} rows, {} files, {} MiB written",
            self.rows.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed) >> 20
        ));
    }

    pub fn rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
        self.show();
    }

    pub fn file(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.show();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
