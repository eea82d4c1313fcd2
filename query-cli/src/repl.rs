//! The interactive prompt: history (Ctrl-R search), completion of keywords, tables, columns and
//! functions, multi-line statements, backslash commands, a pager, an rc file, Ctrl-C cancels the
//! running query.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, CompletionType, Config, Context, Editor, Helper};

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
        for (m, _) in COMMANDS {
            let m = m.split_whitespace().next().unwrap_or(m);
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
        match crate::highlight::highlight_sql(line) {
            Some(h) => Cow::Owned(h),
            None => Cow::Borrowed(line),
        }
    }
    // Any edit can change what a token is (`sel` → `select`, an opening quote): re-colour on
    // every change, not on cursor moves.
    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        kind != CmdKind::MoveCursor
    }
}
// Multi-line statements are gathered by the main loop (so it can show a continuation prompt),
// not by rustyline's validator.
impl Validator for LqHelper {}
impl Helper for LqHelper {}

/// The prompt and the continuation prompt (same width, as psql and DuckDB align them).
const PROMPT: &str = "loglake> ";
const CONTINUATION: &str = "      -> ";

/// Every backslash command with its help line (`\?` prints them all; Tab completes them).
const COMMANDS: &[(&str, &str)] = &[
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

/// Where `\o` sends results.
struct OutFile {
    path: PathBuf,
    file: std::fs::File,
    format: Format,
}

/// How wide a boxed table may be (`\\maxwidth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    /// The terminal's width, read before every statement (it may have been resized).
    Terminal,
    Fixed(usize),
    Off,
}

struct Session {
    format: Format,
    timing: bool,
    output: Option<OutFile>,
    max_rows: Option<usize>,
    width: Width,
    /// The terminal's columns when the last statement started (None: not a terminal).
    terminal_columns: Option<usize>,
}

impl Session {
    /// The shape of the next result: results written to a `\\o` file are never cut.
    fn shape(&self) -> crate::output::ResultShape {
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

/// The format a file name asks for (`\o`, `--output`), if its extension names one.
pub fn format_for_path(p: &Path) -> Option<Format> {
    let ext = p.extension()?.to_string_lossy().to_ascii_lowercase();
    Some(match ext.as_str() {
        "csv" => Format::Csv,
        "tsv" => Format::Tsv,
        "json" => Format::Json,
        "ndjson" | "jsonl" => Format::Ndjson,
        "md" => Format::Markdown,
        "txt" => Format::Table,
        "parquet" => Format::Parquet,
        _ => return None,
    })
}

fn format_name(f: Format) -> String {
    clap::ValueEnum::to_possible_value(&f)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".loglake_history"))
}

/// Whether the text typed so far ends a statement: its last token (comments aside) is `;`. An
/// unterminated string or comment is not complete.
pub fn is_complete(sql: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return false;
    };
    match tokens
        .iter()
        .rev()
        .find(|t| !matches!(t, Token::Whitespace(_)))
    {
        None => true,
        Some(t) => *t == Token::SemiColon,
    }
}

/// Run the interactive prompt.
pub fn run(args: QueryArgs) -> Result<(), QueryError> {
    let rt = crate::runtime()?;
    let engine = rt.block_on(Engine::new(args.engine_options()))?;
    let names = Arc::new(Mutex::new(Names::default()));
    refresh_names(&rt, &engine, &names);
    // Tab completes the longest common prefix and lists the candidates when several match
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .completion_show_all_if_ambiguous(true)
        // rustyline colours only a terminal that supports it; NO_COLOR turns it off.
        .color_mode(
            if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
                ColorMode::Disabled
            } else {
                ColorMode::Enabled
            },
        )
        .build();
    let mut ed: Editor<LqHelper, DefaultHistory> = Editor::with_config(config)
        .map_err(|e| QueryError::Usage(format!("cannot start the prompt: {e}")))?;
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
        output: None,
        max_rows: args.max_rows.or(Some(10_000)),
        width: Width::Terminal,
        terminal_columns: ed.dimensions().map(|(c, _)| usize::from(c)),
    };
    if let Some(p) = &args.output {
        meta(&rt, &engine, &format!("\\o {}", p.display()), &mut sess);
    }
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
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() { PROMPT } else { CONTINUATION };
        match ed.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if buf.is_empty() && t.is_empty() {
                    continue;
                }
                if t == "\\q" || (buf.is_empty() && (t == "quit" || t == "exit")) {
                    let _ = ed.add_history_entry(t);
                    break;
                }
                // a backslash command runs at once, also in the middle of a statement (as in psql)
                if t.starts_with('\\') {
                    let _ = ed.add_history_entry(t);
                    meta(&rt, &engine, t, &mut sess);
                    continue;
                }
                if !buf.is_empty() {
                    buf.push('\n');
                }
                buf.push_str(&line);
                if !is_complete(&buf) {
                    continue;
                }
                let sql = std::mem::take(&mut buf);
                let _ = ed.add_history_entry(sql.trim());
                sess.terminal_columns = ed.dimensions().map(|(c, _)| usize::from(c));
                run_sql(&rt, &engine, &sql, &mut sess, &cancel);
                refresh_names(&rt, &engine, &names);
            }
            // Ctrl-C at the prompt drops the statement being typed
            Err(ReadlineError::Interrupted) => buf.clear(),
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
    let functions = crate::diagnose::names_of(engine).functions;
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

fn run_sql(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    sql: &str,
    sess: &mut Session,
    cancel: &tokio::sync::Notify,
) {
    for stmt in script::split_statements(sql) {
        let mut result: Result<usize, QueryError> = Ok(0);
        let mut elapsed = std::time::Duration::ZERO;
        let shape = sess.shape();
        with_output(sess, |out| {
            let mut err = std::io::stderr();
            let mut wrote = false;
            // \timing measures the query, not the pager that shows its result
            let started = Instant::now();
            result = crate::run_statement(
                rt,
                engine,
                &stmt,
                &shape,
                out,
                &mut err,
                Some(cancel),
                &mut wrote,
            );
            elapsed = started.elapsed();
        });
        match result {
            Ok(rows) => {
                if sess.timing {
                    eprintln!("{rows} row(s) in {:.3}s", elapsed.as_secs_f64());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
}

/// Backslash commands; each one says what it did.
fn meta(rt: &tokio::runtime::Runtime, engine: &Engine, cmd: &str, sess: &mut Session) {
    let mut parts = cmd.splitn(2, char::is_whitespace);
    let head = parts.next().unwrap_or("");
    let arg = parts.next().map(str::trim).unwrap_or("");
    let cancel = tokio::sync::Notify::new();
    match head {
        "\\?" | "\\h" | "\\help" => {
            let w = COMMANDS.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
            for (c, h) in COMMANDS {
                eprintln!("{c:<w$}  {h}");
            }
        }
        "\\d" | "\\dt" => match script::meta_sql(cmd) {
            Some(sql) => run_sql(rt, engine, &sql, sess, &cancel),
            None => eprintln!("usage: \\d [TABLE]"),
        },
        "\\timing" => {
            sess.timing = !sess.timing;
            eprintln!("timing is {}", if sess.timing { "on" } else { "off" });
        }
        "\\format" | "\\f" => match Format::parse(arg) {
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
        },
        "\\x" => {
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
        "\\o" => {
            if arg.is_empty() {
                sess.output = None;
                eprintln!("results go to the terminal");
                return;
            }
            let path = PathBuf::from(arg);
            let format = match format_for_path(&path) {
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
        "\\maxrows" => match arg {
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
        },
        "\\maxwidth" => {
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
        other => eprintln!("unknown command {other}; \\? lists the commands"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_complete_at_a_final_semicolon() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1; -- done"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1 /* ; */"));
    }

    #[test]
    fn output_format_from_extension() {
        assert_eq!(format_for_path(Path::new("a.JSON")), Some(Format::Json));
        assert_eq!(format_for_path(Path::new("a.ndjson")), Some(Format::Ndjson));
        assert_eq!(format_for_path(Path::new("a.csv")), Some(Format::Csv));
        assert_eq!(format_for_path(Path::new("a")), None);
    }
}
