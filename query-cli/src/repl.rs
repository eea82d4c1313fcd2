//! The interactive prompt: history (Ctrl-R search), completion of keywords, tables, columns and
//! functions, multi-line statements, backslash commands, a pager, an rc file, Ctrl-C cancels the
//! running query.

mod commands;
mod complete;
mod session;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{ColorMode, CompletionType, Config, Editor};

use crate::output::Format;
use crate::{Engine, QueryArgs, QueryError, script};
use commands::meta;
use complete::{LqHelper, Names, refresh_names};
use session::{Session, Width, with_output};

/// The prompt and the continuation prompt (same width, as psql and DuckDB align them).
const PROMPT: &str = "loglake> ";
const CONTINUATION: &str = "      -> ";

type LqEditor = Editor<LqHelper, DefaultHistory>;

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
    let mut ed = editor(&names)?;
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
    let mut repl = Repl {
        rt: &rt,
        engine: &engine,
        names,
        sess,
        cancel: cancel_on_ctrl_c(&rt),
    };
    let rc = args
        .rc
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".loglakerc")));
    if let Some(rc) = rc {
        repl.run_rc_file(&rc);
    }
    eprintln!(
        "loglake query — {} tables; \\? for help, \\q to quit",
        engine.table_names().len()
    );
    repl.prompt_loop(&mut ed);
    if let Some(h) = &hist {
        let _ = ed.save_history(h);
    }
    Ok(())
}

/// The line editor with completion; Tab completes the longest common prefix and lists the
/// candidates when several match.
fn editor(names: &Arc<Mutex<Names>>) -> Result<LqEditor, QueryError> {
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
    let mut ed: LqEditor = Editor::with_config(config)
        .map_err(|e| QueryError::Usage(format!("cannot start the prompt: {e}")))?;
    ed.set_helper(Some(LqHelper {
        names: Arc::clone(names),
    }));
    Ok(ed)
}

/// Ctrl-C while a query runs cancels it (the returned notifier fires); at the prompt rustyline
/// handles it.
fn cancel_on_ctrl_c(rt: &tokio::runtime::Runtime) -> Arc<tokio::sync::Notify> {
    let cancel = Arc::new(tokio::sync::Notify::new());
    let c = Arc::clone(&cancel);
    rt.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            c.notify_waiters();
        }
    });
    cancel
}

/// What the prompt works with between statements.
struct Repl<'a> {
    rt: &'a tokio::runtime::Runtime,
    engine: &'a Engine,
    /// Completion candidates, refreshed after every statement.
    names: Arc<Mutex<Names>>,
    sess: Session,
    cancel: Arc<tokio::sync::Notify>,
}

/// Whether the prompt goes on after a line.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Repl<'_> {
    /// The rc file's backslash commands first, then its SQL. A missing file is no error.
    fn run_rc_file(&mut self, rc: &Path) {
        let Ok(text) = std::fs::read_to_string(rc) else {
            return;
        };
        for line in text.lines().filter(|l| l.trim_start().starts_with('\\')) {
            meta(self.rt, self.engine, line.trim(), &mut self.sess);
        }
        let sql: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('\\'))
            .collect::<Vec<_>>()
            .join("\n");
        run_sql(self.rt, self.engine, &sql, &mut self.sess, &self.cancel);
    }

    /// Read lines until `\q`, `quit`, `exit`, Ctrl-D or a prompt error.
    fn prompt_loop(&mut self, ed: &mut LqEditor) {
        let mut buf = String::new();
        loop {
            let prompt = if buf.is_empty() { PROMPT } else { CONTINUATION };
            match ed.readline(prompt) {
                Ok(line) => {
                    if self.on_line(ed, &mut buf, &line) == Flow::Quit {
                        break;
                    }
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
    }

    /// One line typed: a command runs at once; SQL is gathered in `buf` until it ends with `;`.
    fn on_line(&mut self, ed: &mut LqEditor, buf: &mut String, line: &str) -> Flow {
        let t = line.trim();
        if buf.is_empty() && t.is_empty() {
            return Flow::Continue;
        }
        if t == "\\q" || (buf.is_empty() && (t == "quit" || t == "exit")) {
            let _ = ed.add_history_entry(t);
            return Flow::Quit;
        }
        // a backslash command runs at once, also in the middle of a statement (as in psql)
        if t.starts_with('\\') {
            let _ = ed.add_history_entry(t);
            meta(self.rt, self.engine, t, &mut self.sess);
            return Flow::Continue;
        }
        if !buf.is_empty() {
            buf.push('\n');
        }
        buf.push_str(line);
        if !is_complete(buf) {
            return Flow::Continue;
        }
        let sql = std::mem::take(buf);
        let _ = ed.add_history_entry(sql.trim());
        self.sess.terminal_columns = ed.dimensions().map(|(c, _)| usize::from(c));
        run_sql(self.rt, self.engine, &sql, &mut self.sess, &self.cancel);
        refresh_names(self.rt, self.engine, &self.names);
        Flow::Continue
    }
}

/// Run the statements of `sql` one by one; the first error is printed and ends the run.
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
            let ctx = crate::StatementContext {
                rt,
                engine,
                shape: &shape,
                cancel: Some(cancel),
            };
            result = crate::run_statement(&ctx, &stmt, out, &mut err, &mut wrote);
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
