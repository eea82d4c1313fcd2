//! SQL script handling: `--param` substitution, splitting into statements with their position,
//! and the `TABLE VERSION AS OF n` / `TABLE TIMESTAMP AS OF '…'` time-travel rewrite.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::QueryError;

/// One statement of a script, with its 1-based position in the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// 1-based index of the statement in its script.
    pub index: usize,
    /// 1-based line of the statement's first character.
    pub line: u64,
    /// 1-based column of the statement's first character.
    pub column: u64,
    /// The statement text, without the terminating `;`.
    pub text: String,
}

impl Statement {
    /// The statement text padded with newlines and spaces so that positions reported by the
    /// parser (`Line: l, Column: c`) are positions in the whole script.
    pub fn positioned_text(&self) -> String {
        let mut s =
            String::with_capacity(self.text.len() + self.line as usize + self.column as usize);
        for _ in 1..self.line {
            s.push('\n');
        }
        for _ in 1..self.column {
            s.push(' ');
        }
        s.push_str(&self.text);
        s
    }
}

/// Replace `${name}` with the value given by `--param name=value`. An unknown `${name}` is a
/// usage error (a saved query run without its parameter must not silently run with a hole).
pub fn substitute_params(
    sql: &str,
    params: &BTreeMap<String, String>,
) -> Result<String, QueryError> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push_str("${");
            rest = after;
            continue;
        }
        match params.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(QueryError::Usage(format!(
                    "the SQL uses ${{{name}}} but no --param {name}=VALUE was given"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse `name=value` pairs of `--param`.
pub fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>, QueryError> {
    let mut map = BTreeMap::new();
    for p in raw {
        let Some((k, v)) = p.split_once('=') else {
            return Err(QueryError::Usage(format!(
                "--param expects name=value, got {p:?}"
            )));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(QueryError::Usage(format!(
                "--param name {k:?} must be [A-Za-z0-9_]+"
            )));
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// Byte offset of a 1-based (line, column-in-chars) location.
fn byte_offset(line_starts: &[usize], text: &str, line: u64, column: u64) -> usize {
    let Some(&ls) = line_starts.get(line.saturating_sub(1) as usize) else {
        return text.len();
    };
    let mut off = ls;
    for (i, (b, _)) in text[ls..].char_indices().enumerate() {
        if i as u64 + 1 == column {
            return ls + b;
        }
        off = ls + b;
    }
    if column <= 1 {
        ls
    } else {
        text.len().min(off + 1)
    }
}

/// Split a script into statements at top-level `;` (string literals and comments are
/// respected because the SQL tokenizer does the scanning). Empty statements are dropped.
pub fn split_statements(script: &str) -> Vec<Statement> {
    let dialect = GenericDialect {};
    let tokens = match Tokenizer::new(&dialect, script).tokenize_with_location() {
        Ok(t) => t,
        Err(_) => {
            // Let the parser report the tokenizer error with its position.
            return non_empty(script, 1, 1, 1).into_iter().collect();
        }
    };
    let mut line_starts = vec![0usize];
    for (i, b) in script.bytes().enumerate() {
        if b == b'\n' {
            line_starts.push(i + 1);
        }
    }
    let mut out = Vec::new();
    let mut start: Option<(u64, u64, usize)> = None; // (line, col, byte)
    let mut index = 0usize;
    for tok in &tokens {
        let is_ws = matches!(tok.token, Token::Whitespace(_));
        match &tok.token {
            Token::SemiColon => {
                if let Some((l, c, b)) = start.take() {
                    let end = byte_offset(
                        &line_starts,
                        script,
                        tok.span.start.line,
                        tok.span.start.column,
                    );
                    index += 1;
                    out.push(Statement {
                        index,
                        line: l,
                        column: c,
                        text: script[b..end.max(b)].to_string(),
                    });
                }
            }
            _ if is_ws => {}
            _ => {
                if start.is_none() {
                    let b = byte_offset(
                        &line_starts,
                        script,
                        tok.span.start.line,
                        tok.span.start.column,
                    );
                    start = Some((tok.span.start.line, tok.span.start.column, b));
                }
            }
        }
    }
    if let Some((l, c, b)) = start {
        let text = script[b..].trim_end().to_string();
        index += 1;
        out.push(Statement {
            index,
            line: l,
            column: c,
            text,
        });
    }
    out
}

fn non_empty(text: &str, index: usize, line: u64, column: u64) -> Option<Statement> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    Some(Statement {
        index,
        line,
        column,
        text: t.to_string(),
    })
}

/// Rewrite `name VERSION AS OF 3` and `name TIMESTAMP AS OF '2024-05-01T00:00:00Z'` (the
/// Databricks/Spark time-travel syntax) into `delta_scan('name', 3)` /
/// `delta_scan('name', '2024-05-01T00:00:00Z')`. Returns `None` when the statement has none.
pub fn rewrite_time_travel(sql: &str) -> Option<String> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let idx = significant_tokens(&tokens);
    let mut replace: Vec<(usize, usize, String)> = Vec::new(); // token range [a, b] -> text
    let mut k = 0;
    while k + 4 < idx.len() {
        match time_travel_at(&tokens, &idx, k) {
            Some(r) => {
                replace.push(r);
                k += 5;
            }
            None => k += 1,
        }
    }
    if replace.is_empty() {
        return None;
    }
    Some(splice(&tokens, replace, sql.len() + 32))
}

/// Indices of the tokens that are not spaces, newlines or tabs.
fn significant_tokens(tokens: &[Token]) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            !matches!(
                t,
                Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
            )
        })
        .map(|(i, _)| i)
        .collect()
}

/// The time travel `name VERSION AS OF n` / `name TIMESTAMP AS OF '…'` whose name is the `k`th
/// significant token (`idx`), as the token range it spans and its `delta_scan(…)` replacement.
fn time_travel_at(tokens: &[Token], idx: &[usize], k: usize) -> Option<(usize, usize, String)> {
    let kw = |t: &Token, kw: Keyword| matches!(t, Token::Word(w) if w.keyword == kw && w.quote_style.is_none());
    let t1 = &tokens[idx[k + 1]];
    let is_version = kw(t1, Keyword::VERSION);
    let is_ts = kw(t1, Keyword::TIMESTAMP);
    let Token::Word(name) = &tokens[idx[k]] else {
        return None;
    };
    if !((is_version || is_ts)
        && kw(&tokens[idx[k + 2]], Keyword::AS)
        && kw(&tokens[idx[k + 3]], Keyword::OF))
    {
        return None;
    }
    // the table name may be qualified: a.b.c
    let mut first = k;
    let mut parts = vec![name.value.clone()];
    while first >= 2 && matches!(tokens[idx[first - 1]], Token::Period) {
        if let Token::Word(w) = &tokens[idx[first - 2]] {
            parts.insert(0, w.value.clone());
            first -= 2;
        } else {
            break;
        }
    }
    let arg = match &tokens[idx[k + 4]] {
        Token::Number(n, _) if is_version => n.clone(),
        Token::SingleQuotedString(s) if is_ts => format!("'{}'", s.replace('\'', "''")),
        _ => return None,
    };
    let table = parts.join(".").replace('\'', "''");
    let original: String = tokens[idx[first]..=idx[k + 4]]
        .iter()
        .map(|t| t.to_string())
        .collect();
    let text = padded_like(format!("delta_scan('{table}',{arg})"), &original);
    Some((idx[first], idx[k + 4], text))
}

/// `text` made as long as the `original` it replaces (padded with its newlines, else spaces), so
/// that positions after it in error messages stay those of the user's SQL.
fn padded_like(mut text: String, original: &str) -> String {
    let newlines = original.matches('\n').count();
    if newlines > 0 {
        text.push_str(&"\n".repeat(newlines));
    } else {
        let (o, r) = (original.chars().count(), text.chars().count());
        text.push_str(&" ".repeat(o.saturating_sub(r)));
    }
    text
}

/// The tokens as text, each token range `[a, b]` of `replace` (in order) replaced by its text.
fn splice(tokens: &[Token], replace: Vec<(usize, usize, String)>, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity);
    let mut i = 0;
    for (a, b, text) in replace {
        for t in &tokens[i..a] {
            out.push_str(&t.to_string());
        }
        out.push_str(&text);
        i = b + 1;
    }
    for t in &tokens[i..] {
        out.push_str(&t.to_string());
    }
    out
}

/// The SQL behind the describe commands `\d`, `\dt` and `\d TABLE` (usable in scripts too).
pub fn meta_sql(cmd: &str) -> Option<String> {
    let mut parts = cmd
        .trim()
        .trim_end_matches(';')
        .splitn(2, char::is_whitespace);
    let head = parts.next()?;
    let arg = parts.next().map(str::trim).unwrap_or("");
    match head {
        "\\d" | "\\dt" if arg.is_empty() => Some(
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'lake' ORDER BY table_name"
                .to_string(),
        ),
        "\\d" => {
            let t = arg.replace('\'', "''");
            Some(format!(
                "SELECT column_name, sql_type(data_type) AS data_type, is_nullable \
                 FROM information_schema.columns WHERE table_schema = 'lake' AND table_name = '{t}' ORDER BY ordinal_position"
            ))
        }
        _ => None,
    }
}

/// Replace lines holding `\d`, `\dt`, `\d TABLE` by their SQL (terminated by `;`), so saved
/// scripts and piped input can use them as at the prompt.
pub fn expand_meta_lines(script: &str) -> String {
    script
        .lines()
        .map(|l| {
            match l
                .trim_start()
                .starts_with('\\')
                .then(|| meta_sql(l))
                .flatten()
            {
                Some(sql) => format!("{sql};"),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_positions_and_respects_strings() {
        let s = split_statements("select 1;\n  select ';' as x ; -- c;\n\nselect 3");
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].line, s[0].column, s[0].text.as_str()),
            (1, 1, "select 1")
        );
        assert_eq!(
            (s[1].line, s[1].column, s[1].text.as_str()),
            (2, 3, "select ';' as x ")
        );
        assert_eq!(
            (s[2].index, s[2].line, s[2].text.as_str()),
            (3, 4, "select 3")
        );
        assert!(split_statements(" ;; \n").is_empty());
    }

    #[test]
    fn params_substitute_and_unknown_is_usage_error() {
        let p = parse_params(&["day=2024-05-01".into(), "n=5".into()]).unwrap();
        assert_eq!(
            substitute_params("where dt = '${day}' limit ${n}", &p).unwrap(),
            "where dt = '2024-05-01' limit 5"
        );
        assert!(matches!(
            substitute_params("${nope}", &p),
            Err(QueryError::Usage(_))
        ));
        assert!(matches!(
            parse_params(&["novalue".into()]),
            Err(QueryError::Usage(_))
        ));
    }

    #[test]
    fn time_travel_rewrite() {
        assert_eq!(
            rewrite_time_travel("select * from logs VERSION AS OF 3 where x = 1").as_deref(),
            Some("select * from delta_scan('logs',3) where x = 1")
        );
        assert_eq!(
            rewrite_time_travel("select * from lake.logs timestamp as of '2024-01-01T00:00:00Z' t")
                .as_deref(),
            Some("select * from delta_scan('lake.logs','2024-01-01T00:00:00Z')   t")
        );
        assert_eq!(rewrite_time_travel("select 'logs VERSION AS OF 3'"), None);
    }
}
