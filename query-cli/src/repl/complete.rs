//! Tab completion of keywords, tables, columns, functions and backslash commands, and the
//! highlighter of the line being typed.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::COMMANDS;
use crate::Engine;

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
pub(super) struct Names {
    tables: Vec<String>,
    columns: Vec<String>,
    functions: Vec<String>,
}

/// The prompt's rustyline helper: completion and highlighting.
pub(super) struct LqHelper {
    pub(super) names: Arc<Mutex<Names>>,
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

/// Refresh the completion candidates from the engine's tables, their columns and its functions.
pub(super) fn refresh_names(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    names: &Arc<Mutex<Names>>,
) {
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
