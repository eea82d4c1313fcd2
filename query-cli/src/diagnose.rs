//! Error messages for people: plain text (no Rust `Debug`), one position, the user's own SQL line
//! with a caret under it, and "did you mean" for tables, columns and functions (edit distance)
//! with a short candidate list instead of the whole schema.
//!
//! ```text
//! statement 1 (line 1, column 16): syntax error: expected ), found FROM
//! LINE 1: SELECT count(* FROM logs
//!                        ^
//! ```

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

use crate::script::Statement;

/// Names the suggestions are drawn from (tables of the lake, functions of the session).
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub tables: Vec<String>,
    pub functions: Vec<String>,
}

/// The names of an engine's session: its tables and every scalar, aggregate, window and table
/// function.
pub fn names_of(engine: &crate::Engine) -> Names {
    let state = engine.ctx.state();
    let mut functions: Vec<String> = state.scalar_functions().keys().cloned().collect();
    functions.extend(state.aggregate_functions().keys().cloned());
    functions.extend(state.window_functions().keys().cloned());
    functions.extend(crate::engine::TABLE_FUNCTIONS.iter().map(|s| s.to_string()));
    functions.sort();
    functions.dedup();
    Names {
        tables: engine.table_names(),
        functions,
    }
}

/// How many candidates a "did you mean" names at most.
const MAX_SUGGESTIONS: usize = 3;
/// Up to this many names are listed in full when none is close to what was typed.
const MAX_LISTED: usize = 8;

/// A 1-based (line, column) position in the script.
pub type Pos = (u64, u64);

/// Names close to `typed` by edit distance (case-insensitive), best first, at most
/// [`MAX_SUGGESTIONS`]. A name containing what was typed (or the reverse) also counts.
pub fn closest<'a>(typed: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let t = typed.to_lowercase();
    // one edit per three characters; names of one or two characters match only exactly
    let n = t.chars().count();
    let limit = if n < 3 { 0 } else { (n / 3).max(1) };
    let mut scored: Vec<(usize, String)> = names
        .into_iter()
        .filter_map(|n| {
            let l = n.to_lowercase();
            if l == t {
                return Some((0, n.to_string()));
            }
            let d = strsim::damerau_levenshtein(&t, &l);
            let contains = t.chars().count() >= 3 && l.contains(&t);
            (d <= limit || contains).then(|| (d, n.to_string()))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, n)| n)
        .collect()
}

/// `(did you mean x?)`, or a short list of what exists, or the count and how to list them.
pub fn suggestion(typed: &str, what: &str, names: &[String], list_cmd: Option<&str>) -> String {
    let close = closest(typed, names.iter().map(String::as_str));
    match close.len() {
        0 if names.is_empty() => String::new(),
        0 if names.len() <= MAX_LISTED => format!("; {what}: {}", names.join(", ")),
        0 => match list_cmd {
            Some(c) => format!("; {} {what}, {c} lists them", names.len()),
            None => String::new(),
        },
        1 => format!(" (did you mean {}?)", close[0]),
        _ => format!(
            " (did you mean {} or {}?)",
            close[..close.len() - 1].join(", "),
            close[close.len() - 1]
        ),
    }
}

/// The position DataFusion or the SQL parser reported, if any.
pub fn position(e: &DataFusionError) -> Option<Pos> {
    if let Some(p) = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| (s.start.line, s.start.column))
        .filter(|(l, c)| *l > 0 && *c > 0)
    {
        return Some(p);
    }
    let (_, p) = split_parser_position(&parser_message(e.find_root())?);
    p
}

fn parser_message(e: &DataFusionError) -> Option<String> {
    match e {
        DataFusionError::SQL(pe, _) => Some(match pe.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".into(),
        }),
        _ => None,
    }
}

/// `"Expected: ), found: FROM at Line: 1, Column: 16"` → (`"Expected: ), found: FROM"`, (1, 16)).
fn split_parser_position(m: &str) -> (String, Option<Pos>) {
    let Some(i) = m.rfind(" at Line: ") else {
        return (m.to_string(), None);
    };
    let rest = &m[i + " at Line: ".len()..];
    let parsed = rest.split_once(", Column: ").and_then(|(l, c)| {
        let c: String = c.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some((l.trim().parse().ok()?, c.parse().ok()?))
    });
    match parsed {
        Some(p) => (m[..i].to_string(), Some(p)),
        None => (m.to_string(), None),
    }
}

/// `Expected: ), found: FROM` → `expected ), found FROM`.
fn plain_parser_text(m: &str) -> String {
    let m = m.trim();
    if let Some(rest) = m.strip_prefix("Expected: ")
        && let Some((want, got)) = rest.rsplit_once(", found: ")
    {
        let got = if got == "EOF" { "end of input" } else { got };
        return format!("expected {want}, found {got}");
    }
    let mut c = m.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn quoted(s: &str) -> Option<&str> {
    let a = s.find('\'')?;
    let b = s[a + 1..].find('\'')?;
    Some(&s[a + 1..a + 1 + b])
}

/// The error as one plain sentence (plus suggestions), without its position.
pub fn message(e: &DataFusionError, names: &Names) -> String {
    let root = e.find_root();
    if let Some(m) = parser_message(root) {
        let (m, _) = split_parser_position(&m);
        return format!("syntax error: {}", plain_parser_text(&m));
    }
    match root {
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            datafusion::common::SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => {
                // `a.pod` is compared with the qualified names (`b.pod`), `pod` with the names
                let typed = match &field.relation {
                    Some(r) => format!("{}.{}", r.table(), field.name),
                    None => field.name.clone(),
                };
                let mut valid: Vec<String> = Vec::new();
                for f in valid_fields {
                    let name = match (&field.relation, &f.relation) {
                        (Some(_), Some(r)) => format!("{}.{}", r.table(), f.name),
                        _ => f.name.clone(),
                    };
                    if !name.starts_with("__") && !valid.contains(&name) {
                        valid.push(name);
                    }
                }
                // `\d logs` lists them when there are many (one table, not a generated name)
                let tables: Vec<&str> = valid_fields
                    .iter()
                    .filter_map(|f| f.relation.as_ref().map(|r| r.table()))
                    .collect();
                let list = match tables.first() {
                    Some(t) if tables.iter().all(|x| x == t) && !t.starts_with("__") => {
                        Some(format!("\\d {t}"))
                    }
                    _ => None,
                };
                format!(
                    "column {typed} not found{}",
                    suggestion(&typed, "columns", &valid, list.as_deref())
                )
            }
            other => other.to_string(),
        },
        DataFusionError::Plan(m) => plan_message(m, names),
        other => {
            let m = other.message().to_string();
            match m.split_once(DataFusionError::BACK_TRACE_SEP) {
                Some((a, _)) => a.to_string(),
                None => m,
            }
        }
    }
}

fn plan_message(m: &str, names: &Names) -> String {
    // table 'loglake.lake.contaner_logs' not found
    if m.starts_with("table '")
        && m.ends_with("' not found")
        && let Some(q) = quoted(m)
    {
        let bare = q.rsplit('.').next().unwrap_or(q);
        let visible: Vec<String> = names
            .tables
            .iter()
            .filter(|t| !t.starts_with("__"))
            .cloned()
            .collect();
        return format!(
            "table {bare} not found{}",
            suggestion(bare, "tables", &visible, Some("\\dt"))
        );
    }
    // Invalid function 'cunt'.\nDid you mean 'count'?
    if m.starts_with("Invalid function '")
        && let Some(q) = quoted(m)
    {
        return format!(
            "function {q} not found{}",
            suggestion(q, "functions", &names.functions, None)
        );
    }
    join_lines(m)
}

/// A multi-line message on one line: `a\nb` → `a; b`, `a:\nb` → `a: b`.
fn join_lines(m: &str) -> String {
    let mut out = String::new();
    for l in m.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(l);
    }
    out
}

/// The statement's own text of script line `line`, and how many characters of the script line
/// precede it (the statement's padding on its first line).
fn statement_line(stmt: &Statement, line: u64) -> Option<(String, u64)> {
    let k = line.checked_sub(stmt.line)? as usize;
    let text = stmt.text.lines().nth(k)?;
    let lead = if k == 0 { stmt.column - 1 } else { 0 };
    Some((text.to_string(), lead))
}

/// The `LINE n: …` and caret lines for a position, with long lines cut around the caret.
pub fn caret(stmt: &Statement, pos: Pos) -> Option<String> {
    let (line, column) = pos;
    let (text, lead) = statement_line(stmt, line)?;
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let at = column.checked_sub(1 + lead)? as usize;
    if at > chars.len() {
        return None;
    }
    // cut lines longer than 100 characters to 40 before and 60 after the caret
    let (from, to) = if chars.len() > 100 {
        (
            at.saturating_sub(40),
            (at.saturating_sub(40) + 100).min(chars.len()),
        )
    } else {
        (0, chars.len())
    };
    let mut shown: String = chars[from..to].iter().collect();
    let mut caret_at = at - from;
    if from > 0 {
        shown = format!("…{shown}");
        caret_at += 1;
    }
    if to < chars.len() {
        shown.push('…');
    }
    let prefix = format!("LINE {line}: ");
    Some(format!(
        "{prefix}{}\n{}^",
        shown.trim_end(),
        " ".repeat(prefix.chars().count() + caret_at)
    ))
}

/// The full message for a failed statement: statement, one position, the plain error, and the
/// user's SQL line with a caret under the position.
pub fn describe(stmt: &Statement, e: &DataFusionError, names: &Names) -> String {
    let msg = message(e, names);
    match position(e) {
        Some((l, c)) => {
            let head = format!("statement {} (line {l}, column {c}): {msg}", stmt.index);
            match caret(stmt, (l, c)) {
                Some(c) => format!("{head}\n{c}"),
                None => head,
            }
        }
        None => format!(
            "statement {} (line {}, column {}): {msg}",
            stmt.index, stmt.line, stmt.column
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(line: u64, column: u64, text: &str) -> Statement {
        Statement {
            index: 1,
            line,
            column,
            text: text.into(),
        }
    }

    #[test]
    fn closest_names_by_edit_distance() {
        let names = ["ts", "pod", "message", "claim_ts", "namespace"];
        assert_eq!(closest("mesage", names), vec!["message"]);
        assert_eq!(closest("Pod", names), vec!["pod"]);
        assert!(closest("zzzzzz", names).is_empty());
        assert_eq!(
            suggestion("x", "tables", &["a".into(), "b".into()], None),
            "; tables: a, b"
        );
    }

    #[test]
    fn parser_position_is_split_off() {
        let (m, p) = split_parser_position("Expected: ), found: FROM at Line: 1, Column: 16");
        assert_eq!(p, Some((1, 16)));
        assert_eq!(plain_parser_text(&m), "expected ), found FROM");
    }

    #[test]
    fn caret_under_the_column_of_the_statement_line() {
        let s = stmt(2, 3, "SELECT count(* FROM logs");
        assert_eq!(
            caret(&s, (2, 18)).as_deref(),
            Some("LINE 2: SELECT count(* FROM logs\n                       ^")
        );
        let long = format!("SELECT {} FROM t", "x, ".repeat(60));
        let c = caret(&stmt(1, 1, &long), (1, 180)).expect("caret");
        let lines: Vec<&str> = c.lines().collect();
        let at = lines[1].chars().count() - 1;
        assert_eq!(lines[0].chars().nth(at), long.chars().nth(179));
    }
}
