//! Argument checks for the table functions that generate SQL (`log_context`, `correlate`).
//!
//! Each argument is planned on its own (the relation, the predicate, the filter, the key columns,
//! the window) before the generated SQL is, so an error names the argument and points at it —
//! inside a query string, at the character that failed — instead of at a position in the
//! generated SQL (`column 1359`, `__src.message`).

use datafusion::common::{Diagnostic, Location, Span};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::tokenizer::Span as SqlSpan;

use crate::diagnose::{self, Pos};
use crate::engine::Engine;
use crate::tablefns::{Arg, Args};

/// Where the call and each of its arguments are in the user's SQL.
#[derive(Debug, Default, Clone)]
pub struct ArgSpans {
    pub call: Option<SqlSpan>,
    pub positional: Vec<SqlSpan>,
    pub named: Vec<(String, SqlSpan)>,
}

impl ArgSpans {
    /// The span of the argument named `name`, or else of the positional one at `pos` (the lookup
    /// of [`Args::get`]).
    fn get(&self, name: &str, pos: Option<usize>) -> Option<SqlSpan> {
        self.named
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
            .or_else(|| pos.and_then(|p| self.positional.get(p).copied()))
    }
}

fn start(s: SqlSpan) -> Option<Pos> {
    (s.start.line > 0 && s.start.column > 0).then_some((s.start.line, s.start.column))
}

/// An error positioned at `at` in the user's SQL.
pub fn located(msg: String, at: Option<Pos>) -> DataFusionError {
    let span = at.map(|(line, column)| {
        let l = Location { line, column };
        Span::new(l, l)
    });
    DataFusionError::Plan(msg.clone()).with_diagnostic(Diagnostic::new_error(msg, span))
}

/// An error of the generated SQL (all arguments checked out): named after the function and
/// positioned at the call, never at a position in the generated text.
pub fn at_call(
    engine: &Engine,
    func: &str,
    spans: &ArgSpans,
    e: DataFusionError,
) -> DataFusionError {
    if e.diagnostic().is_some_and(|d| d.message.starts_with(func)) {
        return e;
    }
    let msg = diagnose::message(&e, &diagnose::names_of(engine));
    let msg = if msg.starts_with(&format!("{func}:")) {
        msg
    } else {
        format!("{func}: {msg}")
    };
    located(msg, spans.call.and_then(start))
}

/// An error of a table function call without a position of its own gets the call's position
/// (`delta_scan('nosuch')`, `logs VERSION AS OF 9`), so the caret points at the call.
pub fn at_position_of_call(e: DataFusionError, spans: &ArgSpans) -> DataFusionError {
    if diagnose::position(&e).is_some() {
        return e;
    }
    match spans.call.and_then(start) {
        Some((line, column)) => {
            let l = Location { line, column };
            let d = Diagnostic::new_error(e.message().to_string(), Some(Span::new(l, l)));
            e.with_diagnostic(d)
        }
        None => e,
    }
}

/// 1-based (line, column) → 0-based char index in `text`.
fn char_index(text: &str, (line, column): Pos) -> Option<usize> {
    let (mut l, mut c) = (1u64, 1u64);
    for (i, ch) in text.chars().enumerate() {
        if l == line && c == column {
            return Some(i);
        }
        if ch == '\n' {
            l += 1;
            c = 1;
        } else {
            c += 1;
        }
    }
    (l == line && c == column).then(|| text.chars().count())
}

fn is_query(s: &str) -> bool {
    let l = s.trim_start().to_ascii_lowercase();
    l.starts_with("select") || l.starts_with("with") || l.starts_with("values")
}

struct Checker<'a> {
    engine: &'a Engine,
    func: &'static str,
    args: &'a Args,
    spans: &'a ArgSpans,
}

impl Checker<'_> {
    fn fail(&self, what: &str, msg: impl std::fmt::Display, at: Option<Pos>) -> DataFusionError {
        located(
            format!("{}: {what}: {msg}", self.func),
            at.or_else(|| self.spans.call.and_then(start)),
        )
    }

    /// The user position of the `k`-th character of a string argument's content (the quote
    /// doubling `''` counts two columns), or the argument's start for other arguments.
    fn position_in(&self, name: &str, pos: Option<usize>, k: Option<usize>) -> Option<Pos> {
        let span = self.spans.get(name, pos)?;
        let (mut line, mut col) = start(span)?;
        let (Some(Arg::Str(s)), Some(k)) = (self.args.get(name, pos), k) else {
            return Some((line, col));
        };
        col += 1; // the opening quote
        for ch in s.chars().take(k) {
            match ch {
                '\n' => {
                    line += 1;
                    col = 1;
                }
                '\'' => col += 2,
                _ => col += 1,
            }
        }
        Some((line, col))
    }

    /// Plan `prefix + text + suffix`, where `text` is the argument's content; an error is
    /// reported at the argument (at the failing character when `text` is a string's content).
    async fn plan_part(
        &self,
        name: &str,
        pos: Option<usize>,
        prefix: &str,
        text: &str,
        suffix: &str,
    ) -> Result<LogicalPlan> {
        let sql = format!("{prefix}{text}{suffix}");
        match self.engine.plan_sql(&sql, false).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let inner = diagnose::position(&e)
                    .and_then(|p| char_index(&sql, p))
                    .and_then(|i| i.checked_sub(prefix.chars().count()))
                    .filter(|k| *k <= text.chars().count());
                let at = self.position_in(name, pos, inner);
                let msg = diagnose::message(&e, &diagnose::names_of(self.engine));
                Err(self.fail(name, msg, at))
            }
        }
    }

    /// The columns of a relation argument (a table name or a query string).
    async fn relation(&self, name: &str, pos: usize) -> Result<Vec<String>> {
        let Some(a) = self.args.get(name, Some(pos)) else {
            return Err(self.fail(name, "missing", None));
        };
        let plan = match a {
            Arg::Str(s) if is_query(s) => {
                self.plan_part(name, Some(pos), "SELECT * FROM (", s, ") AS __t LIMIT 0")
                    .await?
            }
            Arg::Str(s) => {
                self.plan_part(name, Some(pos), "SELECT * FROM ", s, " AS __t LIMIT 0")
                    .await?
            }
            other => {
                let r = other.relation();
                self.plan_part(name, Some(pos), "SELECT * FROM ", &r, " AS __t LIMIT 0")
                    .await?
            }
        };
        Ok(plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect())
    }

    /// Check that `col` (as written in a string argument, at char `k` of it) names one of
    /// `cols` of `side`.
    fn column(
        &self,
        arg: &str,
        pos: Option<usize>,
        k: usize,
        col: &str,
        side: &str,
        cols: &[String],
    ) -> Result<()> {
        let found = match col.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
            Some(quoted) => cols.iter().any(|c| c == quoted),
            None => cols.iter().any(|c| *c == col.to_lowercase() || c == col),
        };
        if found {
            return Ok(());
        }
        Err(self.fail(
            arg,
            format!(
                "{side} has no column {col}{}",
                diagnose::suggestion(col, "columns", cols, None)
            ),
            self.position_in(arg, pos, Some(k)),
        ))
    }
}

/// Items of a comma-separated string argument with their char offsets.
fn items(s: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    for part in s.split(',') {
        let lead = part.chars().take_while(|c| c.is_whitespace()).count();
        let t = part.trim();
        if !t.is_empty() {
            out.push((offset + lead, t.to_string()));
        }
        offset += part.chars().count() + 1;
    }
    out
}

/// Check the arguments of `log_context`; returns the table's columns.
pub async fn log_context(engine: &Engine, args: &Args, spans: &ArgSpans) -> Result<Vec<String>> {
    let c = Checker {
        engine,
        func: "log_context",
        args,
        spans,
    };
    let cols = c.relation("table", 0).await?;
    let rel = crate::tablefns::relation_of(args, "table", 0).unwrap_or_default();
    let mut source = rel.clone();
    if let Some(f) = args.get("filter", None) {
        let prefix = format!("SELECT * FROM {rel} AS __t WHERE ");
        c.plan_part("filter", None, &prefix, &f.text(), " LIMIT 0")
            .await?;
        source = format!("(SELECT * FROM {rel} AS __t WHERE {})", f.text());
    }
    if let Some(p) = args.get("predicate", Some(1)) {
        let prefix = format!("SELECT * FROM {source} AS __t WHERE (");
        c.plan_part(
            "predicate",
            Some(1),
            &prefix,
            &p.text(),
            ") IS TRUE LIMIT 0",
        )
        .await?;
    }
    match args.get("order_by", None) {
        Some(o) => {
            let prefix = format!("SELECT * FROM {rel} AS __t ORDER BY ");
            c.plan_part("order_by", None, &prefix, &o.text(), " LIMIT 0")
                .await?;
        }
        None if !cols.iter().any(|x| x == "ts") => {
            return Err(c.fail(
                "order_by",
                "the table has no column ts to order by; give order_by => 'column'",
                None,
            ));
        }
        None => {}
    }
    if let Some(p) = args.get("partition_by", None) {
        for (k, col) in items(&p.text()) {
            c.column("partition_by", None, k, &col, "the table", &cols)?;
        }
    }
    Ok(cols)
}

/// Check the arguments of `correlate`; returns the left and right columns.
pub async fn correlate(
    engine: &Engine,
    args: &Args,
    spans: &ArgSpans,
) -> Result<(Vec<String>, Vec<String>)> {
    let c = Checker {
        engine,
        func: "correlate",
        args,
        spans,
    };
    let lc = c.relation("left", 0).await?;
    let rc = c.relation("right", 1).await?;
    if let Some(key) = args.get("key", Some(2)) {
        for (k, item) in items(&key.text()) {
            match item.split_once('=') {
                Some((l, r)) => {
                    let lk = k + l.chars().take_while(|c| c.is_whitespace()).count();
                    c.column("key", Some(2), lk, l.trim(), "left", &lc)?;
                    let rk = k
                        + l.chars().count()
                        + 1
                        + r.chars().take_while(|c| c.is_whitespace()).count();
                    c.column("key", Some(2), rk, r.trim(), "right", &rc)?;
                }
                None => {
                    c.column("key", Some(2), k, &item, "left", &lc)?;
                    c.column("key", Some(2), k, &item, "right", &rc)?;
                }
            }
        }
    }
    let lt = args.get("time", None).map(|a| a.text());
    let rt = args
        .get("right_time", None)
        .map(|a| a.text())
        .or(lt.clone());
    for (arg, side, t, cols) in [
        ("time", "left", &lt, &lc),
        ("right_time", "right", &rt, &rc),
    ] {
        match t {
            Some(t) => c.column(arg, None, 0, t.trim(), side, cols)?,
            None if !cols.iter().any(|x| x == "ts") => {
                return Err(c.fail(
                    arg,
                    format!("{side} has no column ts; give {arg} => 'column'"),
                    None,
                ));
            }
            None => {}
        }
    }
    let left = crate::tablefns::relation_of(args, "left", 0).unwrap_or_default();
    let lt = lt.unwrap_or_else(|| "ts".into());
    for (name, pos) in [("within", Some(3)), ("before", None), ("after", None)] {
        if let Some(a) = args.get(name, pos) {
            let prefix = format!("SELECT l.{lt} - (");
            let suffix = format!(") FROM {left} AS l LIMIT 0");
            let text = a.sql();
            // a string argument is embedded quoted: point at the argument, not inside it
            let sql = format!("{prefix}{text}{suffix}");
            if let Err(e) = engine.plan_sql(&sql, false).await {
                let msg = diagnose::message(&e, &diagnose::names_of(engine));
                return Err(c.fail(
                    name,
                    format!("expected an INTERVAL such as INTERVAL '10 seconds' ({msg})"),
                    c.position_in(name, pos, None),
                ));
            }
        }
    }
    Ok((lc, rc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_index_and_items() {
        assert_eq!(char_index("ab\ncd", (2, 2)), Some(4));
        assert_eq!(char_index("ab", (1, 3)), Some(2));
        assert_eq!(
            items("a, b = c ,d"),
            vec![(0, "a".into()), (3, "b = c".into()), (10, "d".into())]
        );
    }
}
