//! The interactive prompt: history (Ctrl-R search), completion of keywords, tables, columns and
//! functions, multi-line statements, backslash commands, a pager, an rc file, Ctrl-C cancels the
//! running query.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use crate::output::Format;
use crate::{Engine, QueryArgs, QueryError, script};

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "HAVING",
    "JOIN",
    "LEFT",
    "RIGHT",
    "INNER",
    "OUTER",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "IS",
    "NULL",
    "DISTINCT",
    "COUNT",
    "WITH",
    "UNION",
    "ALL",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "EXPLAIN",
    "ANALYZE",
    "DESCRIBE",
    "SHOW",
    "TABLES",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "STORED",
    "LOCATION",
    "PARQUET",
    "DELTA",
    "CSV",
    "JSON",
    "INTERVAL",
    "TIMESTAMP",
    "VERSION",
    "OF",
    "DESC",
    "ASC",
    "OVER",
    "PARTITION BY",
    "COPY",
    "TO",
];

/// Completion candidates, refreshed after every statement.
#[derive(Default)]
struct Names {
    tables: Vec<String>,
    columns: Vec<String>,
    functions: Vec<String>,
}

struct LqHelper {
    names: Arc<Mutex<Names>>,
}

impl Completer for LqHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '\\'))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, vec![]));
        }
        let lw = word.to_ascii_lowercase();
        let mut out: Vec<Pair> = Vec::new();
        let mut push = |cand: &str, upper: bool| {
            if cand.to_ascii_lowercase().starts_with(&lw) {
                let r = if upper && word.chars().all(|c| !c.is_lowercase()) {
                    cand.to_string()
                } else if upper {
                    cand.to_ascii_lowercase()
                } else {
                    cand.to_string()
                };
                if !out.iter().any(|p| p.replacement == r) {
                    out.push(Pair {
                        display: r.clone(),
                        replacement: r,
                    });
                }
            }
        };
        if let Ok(n) = self.names.lock() {
            for t in &n.tables {
                push(t, false);
            }
            for c in &n.columns {
                push(c, false);
            }
            for f in &n.functions {
                push(f, false);
            }
        }
        for k in KEYWORDS {
            push(k, true);
        }
        for m in ["\\d", "\\dt", "\\timing", "\\format", "\\o", "\\q", "\\?"] {
            push(m, false);
        }
        Ok((start, out))
    }
}

impl Hinter for LqHelper {
    type Hint = String;
}
impl Highlighter for LqHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}
impl Validator for LqHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input().trim();
        if input.is_empty() || input.starts_with('\\') || input.ends_with(';') {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}
impl Helper for LqHelper {}

struct Session {
    format: Format,
    timing: bool,
    output: Option<PathBuf>,
    max_rows: Option<usize>,
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".loglake_history"))
}

/// Run the interactive prompt.
pub fn run(args: QueryArgs) -> Result<(), QueryError> {
    let rt = crate::runtime()?;
    let engine = rt.block_on(Engine::new(args.engine_options()))?;
    let names = Arc::new(Mutex::new(Names::default()));
    refresh_names(&rt, &engine, &names);
    let mut ed: Editor<LqHelper, DefaultHistory> =
        Editor::new().map_err(|e| QueryError::Usage(format!("cannot start the prompt: {e}")))?;
    ed.set_helper(Some(LqHelper {
        names: Arc::clone(&names),
    }));
    let hist = history_path();
    if let Some(h) = &hist {
        let _ = ed.load_history(h);
    }
    let mut sess = Session {
        format: args.format.unwrap_or(Format::Table),
        timing: args.timing,
        output: args.output.clone(),
        max_rows: args.max_rows.or(Some(10_000)),
    };
    let cancel = Arc::new(tokio::sync::Notify::new());
    {
        // Ctrl-C while a query runs cancels it; at the prompt rustyline handles it.
        let c = Arc::clone(&cancel);
        rt.spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                c.notify_waiters();
            }
        });
    }
    let rc = args
        .rc
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".loglakerc")));
    if let Some(rc) = rc
        && let Ok(text) = std::fs::read_to_string(&rc)
    {
        for line in text.lines().filter(|l| l.trim_start().starts_with('\\')) {
            meta(&rt, &engine, line.trim(), &mut sess);
        }
        let sql: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('\\'))
            .collect::<Vec<_>>()
            .join("\n");
        run_sql(&rt, &engine, &sql, &mut sess, &cancel);
    }
    eprintln!(
        "loglake query — {} tables; \\? for help, \\q to quit",
        engine.table_names().len()
    );
    loop {
        match ed.readline("loglake> ") {
            Ok(line) => {
                let t = line.trim();
                if t.is_empty() {
                    continue;
                }
                let _ = ed.add_history_entry(t);
                if t == "\\q" || t == "quit" || t == "exit" {
                    break;
                }
                if t.starts_with('\\') {
                    meta(&rt, &engine, t, &mut sess);
                } else {
                    run_sql(&rt, &engine, t, &mut sess, &cancel);
                    refresh_names(&rt, &engine, &names);
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("prompt error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &hist {
        let _ = ed.save_history(h);
    }
    Ok(())
}

fn refresh_names(rt: &tokio::runtime::Runtime, engine: &Engine, names: &Arc<Mutex<Names>>) {
    let tables = engine.table_names();
    let mut columns = Vec::new();
    for t in &tables {
        if let Ok(Some(p)) = rt.block_on(datafusion::catalog::SchemaProvider::table(
            engine.lake.as_ref(),
            t,
        )) {
            for f in p.schema().fields() {
                if !columns.contains(f.name()) {
                    columns.push(f.name().clone());
                }
            }
        }
    }
    let state = engine.ctx.state();
    let mut functions: Vec<String> = state.scalar_functions().keys().cloned().collect();
    functions.extend(state.aggregate_functions().keys().cloned());
    functions.extend(state.window_functions().keys().cloned());
    functions.extend(crate::engine::TABLE_FUNCTIONS.iter().map(|s| s.to_string()));
    functions.sort();
    functions.dedup();
    if let Ok(mut n) = names.lock() {
        *n = Names {
            tables,
            columns,
            functions,
        };
    }
}

/// Where a result goes: the `\o` file, a pager, or the terminal.
fn with_output(sess: &Session, f: impl FnOnce(&mut crate::output::Out)) {
    if let Some(p) = &sess.output {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(file) => {
                let mut w = std::io::BufWriter::new(file);
                f(&mut w);
                let _ = w.flush();
            }
            Err(e) => eprintln!("cannot open {}: {e}", p.display()),
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

fn run_sql(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    sql: &str,
    sess: &mut Session,
    cancel: &tokio::sync::Notify,
) {
    for stmt in script::split_statements(sql) {
        let started = Instant::now();
        let mut result: Result<usize, QueryError> = Ok(0);
        let format = sess.format;
        let max_rows = sess.max_rows;
        with_output(sess, |out| {
            let mut err = std::io::stderr();
            let mut wrote = false;
            result = crate::run_statement(
                rt,
                engine,
                &stmt,
                format,
                max_rows,
                out,
                &mut err,
                Some(cancel),
                &mut wrote,
            );
        });
        match result {
            Ok(rows) => {
                if sess.timing {
                    eprintln!("{rows} row(s) in {:.3}s", started.elapsed().as_secs_f64());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
}

/// Backslash commands.
fn meta(rt: &tokio::runtime::Runtime, engine: &Engine, cmd: &str, sess: &mut Session) {
    let mut parts = cmd.splitn(2, char::is_whitespace);
    let head = parts.next().unwrap_or("");
    let arg = parts.next().map(str::trim).unwrap_or("");
    let cancel = tokio::sync::Notify::new();
    match head {
        "\\?" | "\\h" | "\\help" => eprintln!(
            "\\d              list tables\n\\d TABLE        describe a table\n\\dt             list tables\n\
             \\timing         toggle timing\n\\format FORMAT  table|vertical|csv|tsv|json|ndjson|markdown\n\
             \\o [FILE]       send results to FILE (no FILE: back to the terminal)\n\\q              quit"
        ),
        "\\d" | "\\dt" => match script::meta_sql(cmd) {
            Some(sql) => run_sql(rt, engine, &sql, sess, &cancel),
            None => eprintln!("usage: \\d [TABLE]"),
        },
        "\\timing" => {
            sess.timing = !sess.timing;
            eprintln!("timing is {}", if sess.timing { "on" } else { "off" });
        }
        "\\format" | "\\f" => match Format::parse(arg) {
            Some(Format::Parquet) | None => {
                eprintln!("unknown format {arg:?}; use table|vertical|csv|tsv|json|ndjson|markdown")
            }
            Some(f) => sess.format = f,
        },
        "\\x" => {
            sess.format = if sess.format == Format::Vertical {
                Format::Table
            } else {
                Format::Vertical
            }
        }
        "\\o" => {
            sess.output = if arg.is_empty() {
                None
            } else {
                Some(PathBuf::from(arg))
            };
        }
        other => eprintln!("unknown command {other}; \\? for help"),
    }
}
