//! The prompt's backslash commands (`\d`, `\x`, `\format`, `\o`, `\maxrows`, `\maxwidth`, …);
//! each one says what it did.

use std::path::PathBuf;

use super::session::{OutFile, Session, Width};
use crate::output::Format;
use crate::{Engine, script};

/// Every backslash command with its help line (`\?` prints them all; Tab completes them).
pub(super) const COMMANDS: &[(&str, &str)] = &[
    ("\\d", "list tables"),
    ("\\d TABLE", "describe a table (column, SQL type, nullable)"),
    ("\\dt", "list tables"),
    (
        "\\x",
        "toggle expanded display (one `column | value` line per field)",
    ),
    (
        "\\format FORMAT",
        "table|vertical|csv|tsv|json|ndjson|markdown",
    ),
    (
        "\\o FILE",
        "write results to FILE; .json .ndjson .csv .tsv .md pick the format",
    ),
    ("\\o", "results back to the terminal"),
    ("\\maxrows N|off", "print at most N rows of a result"),
    (
        "\\maxwidth N|auto|off",
        "fit tables to N columns (auto: the terminal's width; long values end in …)",
    ),
    (
        "\\timing",
        "toggle the time each query takes (not the pager)",
    ),
    ("\\q", "quit (also Ctrl-D)"),
    ("\\?", "this list"),
];

fn format_name(f: Format) -> String {
    clap::ValueEnum::to_possible_value(&f)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Backslash commands; each one says what it did.
pub(super) fn meta(rt: &tokio::runtime::Runtime, engine: &Engine, cmd: &str, sess: &mut Session) {
    let mut parts = cmd.splitn(2, char::is_whitespace);
    let head = parts.next().unwrap_or("");
    let arg = parts.next().map(str::trim).unwrap_or("");
    match head {
        "\\?" | "\\h" | "\\help" => help(),
        "\\d" | "\\dt" => describe(rt, engine, cmd, sess),
        "\\timing" => {
            sess.timing = !sess.timing;
            eprintln!("timing is {}", if sess.timing { "on" } else { "off" });
        }
        "\\format" | "\\f" => set_format(sess, arg),
        "\\x" => toggle_expanded(sess),
        "\\o" => set_output(sess, arg),
        "\\maxrows" => set_max_rows(sess, arg),
        "\\maxwidth" => set_max_width(sess, arg),
        other => eprintln!("unknown command {other}; \\? lists the commands"),
    }
}

/// `\?`: every command with its help line.
fn help() {
    let w = COMMANDS.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (c, h) in COMMANDS {
        eprintln!("{c:<w$}  {h}");
    }
}

/// `\d`, `\dt`, `\d TABLE`: run the describe SQL (not cancellable by Ctrl-C).
fn describe(rt: &tokio::runtime::Runtime, engine: &Engine, cmd: &str, sess: &mut Session) {
    let cancel = tokio::sync::Notify::new();
    match script::meta_sql(cmd) {
        Some(sql) => super::run_sql(rt, engine, &sql, sess, &cancel),
        None => eprintln!("usage: \\d [TABLE]"),
    }
}

/// `\format FORMAT`: the format of the next results (also for the `\o` file).
fn set_format(sess: &mut Session, arg: &str) {
    match Format::parse(arg) {
        Some(Format::Parquet) | None => eprintln!(
            "{}; use table|vertical|csv|tsv|json|ndjson|markdown (now: {})",
            if arg.is_empty() {
                "\\format needs a format".to_string()
            } else {
                format!("unknown format {arg:?}")
            },
            format_name(sess.format)
        ),
        Some(f) => {
            sess.format = f;
            match &mut sess.output {
                Some(o) => {
                    o.format = f;
                    eprintln!(
                        "format is {} (also for {})",
                        format_name(f),
                        o.path.display()
                    );
                }
                None => eprintln!("format is {}", format_name(f)),
            }
        }
    }
}

/// `\x`: toggle between the vertical and the table format.
fn toggle_expanded(sess: &mut Session) {
    sess.format = if sess.format == Format::Vertical {
        Format::Table
    } else {
        Format::Vertical
    };
    eprintln!(
        "expanded display is {}",
        if sess.format == Format::Vertical {
            "on"
        } else {
            "off"
        }
    );
}

/// `\o FILE` sends results to FILE (its extension may pick the format); `\o` alone back to the
/// terminal.
fn set_output(sess: &mut Session, arg: &str) {
    if arg.is_empty() {
        sess.output = None;
        eprintln!("results go to the terminal");
        return;
    }
    let path = PathBuf::from(arg);
    let format = match super::format_for_path(&path) {
        Some(Format::Parquet) => {
            eprintln!("\\o writes text; for Parquet run loglake query -c … --output {arg}");
            return;
        }
        Some(f) => f,
        None => sess.format,
    };
    // opened (and emptied) now, so a bad path fails here, not at the next query
    match std::fs::File::create(&path) {
        Ok(file) => {
            eprintln!(
                "results go to {} ({}); \\o alone returns to the terminal",
                path.display(),
                format_name(format)
            );
            sess.output = Some(OutFile { path, file, format });
        }
        Err(e) => eprintln!(
            "cannot write {}: {e}; results still go to {}",
            path.display(),
            match &sess.output {
                Some(o) => o.path.display().to_string(),
                None => "the terminal".into(),
            }
        ),
    }
}

/// `\maxrows N|off`, or `\maxrows` alone to show the limit.
fn set_max_rows(sess: &mut Session, arg: &str) {
    match arg {
        "" => match sess.max_rows {
            Some(n) => eprintln!("at most {n} rows per result; \\maxrows N|off changes it"),
            None => eprintln!("no row limit; \\maxrows N sets one"),
        },
        "off" | "0" => {
            sess.max_rows = None;
            eprintln!("no row limit");
        }
        n => match n.parse::<usize>() {
            Ok(n) => {
                sess.max_rows = Some(n);
                eprintln!("at most {n} rows per result");
            }
            Err(_) => eprintln!("usage: \\maxrows N|off"),
        },
    }
}

/// `\maxwidth N|auto|off`, or `\maxwidth` alone; then says the width tables fit in.
fn set_max_width(sess: &mut Session, arg: &str) {
    match arg {
        "" => {}
        "off" | "0" => sess.width = Width::Off,
        "auto" => sess.width = Width::Terminal,
        n => match n.parse::<usize>() {
            Ok(n) => sess.width = Width::Fixed(n),
            Err(_) => {
                eprintln!("usage: \\maxwidth N|auto|off");
                return;
            }
        },
    }
    match sess.width {
        Width::Terminal => eprintln!(
            "tables fit the terminal's width ({}); \\maxwidth N|off changes it",
            sess.terminal_columns
                .map_or("not a terminal: no limit".to_string(), |c| format!(
                    "{c} columns"
                ))
        ),
        Width::Fixed(n) => eprintln!("tables fit in {n} columns"),
        Width::Off => eprintln!("no width limit: long values are printed whole"),
    }
}
