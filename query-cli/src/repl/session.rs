//! The prompt's session settings (format, `\o` file, row and width limits) and where a result
//! goes: the `\o` file, a pager or the terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::output::Format;

/// Where `\o` sends results.
pub(super) struct OutFile {
    pub(super) path: PathBuf,
    pub(super) file: std::fs::File,
    pub(super) format: Format,
}

/// How wide a boxed table may be (`\\maxwidth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    /// The terminal's width, read before every statement (it may have been resized).
    Terminal,
    Fixed(usize),
    Off,
}

/// The prompt's settings, changed by the backslash commands.
pub(super) struct Session {
    pub(super) format: Format,
    pub(super) timing: bool,
    pub(super) output: Option<OutFile>,
    pub(super) max_rows: Option<usize>,
    pub(super) width: Width,
    /// The terminal's columns when the last statement started (None: not a terminal).
    pub(super) terminal_columns: Option<usize>,
}

impl Session {
    /// The shape of the next result: results written to a `\\o` file are never cut.
    pub(super) fn shape(&self) -> crate::output::ResultShape {
        let (format, max_width) = match &self.output {
            Some(o) => (o.format, None),
            None => (
                self.format,
                match self.width {
                    Width::Terminal => self.terminal_columns,
                    Width::Fixed(n) => Some(n),
                    Width::Off => None,
                },
            ),
        };
        crate::output::ResultShape {
            format,
            max_rows: self.max_rows,
            max_width,
        }
    }
}

/// Where a result goes: the `\o` file, a pager, or the terminal.
pub(super) fn with_output(sess: &Session, f: impl FnOnce(&mut crate::output::Out)) {
    if let Some(o) = &sess.output {
        let file = match o.file.try_clone() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("cannot write {}: {e}", o.path.display());
                return;
            }
        };
        let mut w = std::io::BufWriter::new(file);
        f(&mut w);
        if let Err(e) = w.flush() {
            eprintln!("cannot write {}: {e}", o.path.display());
        }
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    f(&mut buf);
    page(&buf);
}

/// Show text through `$PAGER` (default `less -FRSX`) when it is taller than the terminal.
fn page(buf: &[u8]) {
    let lines = buf.iter().filter(|b| **b == b'\n').count();
    let height: usize = std::env::var("LINES")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(40);
    if lines > height && std::io::stdout().is_terminal() {
        let pager = std::env::var("PAGER").unwrap_or_else(|_| "less -FRSX".to_string());
        let mut parts = pager.split_whitespace();
        if let Some(cmd) = parts.next()
            && let Ok(mut child) = std::process::Command::new(cmd)
                .args(parts)
                .stdin(std::process::Stdio::piped())
                .spawn()
        {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(buf);
            }
            let _ = child.wait();
            return;
        }
    }
    let _ = std::io::stdout().write_all(buf);
    let _ = std::io::stdout().flush();
}
