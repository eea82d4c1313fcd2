//! SQL syntax highlighting for the prompt: the line is split by sqlparser's tokenizer (the one
//! DataFusion parses with, so what is coloured as a keyword is what the parser takes for one)
//! and each token's span is wrapped in an ANSI colour. Only colours are added: the displayed
//! width stays the line's, as rustyline requires.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::{
    Keyword, RESERVED_FOR_COLUMN_ALIAS, RESERVED_FOR_TABLE_ALIAS,
};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

const RESET: &str = "\x1b[0m";
const KEYWORD: &str = "\x1b[1;34m";
const STRING: &str = "\x1b[32m";
const NUMBER: &str = "\x1b[33m";
const COMMENT: &str = "\x1b[90m";

/// Keywords coloured besides the clause words sqlparser reserves: operators and the words of
/// expressions. Non-reserved keywords (`level`, `count`, `date`, `hour`…) are column and
/// function names in a log lake far more often than keywords, so they stay plain.
const EXTRA_KEYWORDS: &[Keyword] = &[
    Keyword::AND,
    Keyword::OR,
    Keyword::NOT,
    Keyword::AS,
    Keyword::IN,
    Keyword::IS,
    Keyword::NULL,
    Keyword::LIKE,
    Keyword::ILIKE,
    Keyword::BETWEEN,
    Keyword::CASE,
    Keyword::WHEN,
    Keyword::THEN,
    Keyword::ELSE,
    Keyword::DISTINCT,
    Keyword::ASC,
    Keyword::DESC,
    Keyword::TRUE,
    Keyword::FALSE,
    Keyword::BY,
    Keyword::INTERVAL,
    Keyword::EXISTS,
    Keyword::CAST,
    Keyword::OVER,
    Keyword::SHOW,
    Keyword::DESCRIBE,
    Keyword::CREATE,
    Keyword::INSERT,
    Keyword::COPY,
];

fn is_highlighted_keyword(k: Keyword) -> bool {
    k != Keyword::NoKeyword
        && (RESERVED_FOR_TABLE_ALIAS.contains(&k)
            || RESERVED_FOR_COLUMN_ALIAS.contains(&k)
            || EXTRA_KEYWORDS.contains(&k))
}

/// The colour a token gets, if any.
fn colour(token: &Token) -> Option<&'static str> {
    use datafusion::sql::sqlparser::tokenizer::Whitespace;
    match token {
        Token::Word(w) if w.quote_style.is_none() && is_highlighted_keyword(w.keyword) => {
            Some(KEYWORD)
        }
        Token::Number(..) => Some(NUMBER),
        Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_) => Some(STRING),
        Token::Whitespace(Whitespace::SingleLineComment { .. })
        | Token::Whitespace(Whitespace::MultiLineComment(_)) => Some(COMMENT),
        _ => None,
    }
}

/// Byte offset of each (1-based line, 1-based column in chars) position of `text`.
struct Positions {
    /// Per line: the byte offsets of its chars, plus the offset just past the line's end.
    lines: Vec<Vec<usize>>,
}

impl Positions {
    fn new(text: &str) -> Self {
        let mut lines = vec![Vec::new()];
        for (i, c) in text.char_indices() {
            if let Some(l) = lines.last_mut() {
                l.push(i);
            }
            if c == '\n' {
                lines.push(Vec::new());
            }
        }
        if let Some(l) = lines.last_mut() {
            l.push(text.len());
        }
        Positions { lines }
    }

    fn byte(&self, line: u64, column: u64) -> Option<usize> {
        let l = self
            .lines
            .get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        l.get(usize::try_from(column).ok()?.checked_sub(1)?)
            .copied()
    }
}

/// `line` with ANSI colours on keywords, literals and comments; `None` when there is nothing
/// to colour, or the line is a backslash command or does not tokenize (an unterminated quote
/// while it is being typed).
pub fn highlight_sql(line: &str) -> Option<String> {
    if line.trim_start().starts_with('\\') {
        return None;
    }
    let dialect = GenericDialect {};
    let tokens: Vec<TokenWithSpan> = Tokenizer::new(&dialect, line)
        .tokenize_with_location()
        .ok()?;
    let pos = Positions::new(line);
    let mut out = String::with_capacity(line.len() + 16);
    let mut done = 0usize;
    let mut coloured = false;
    let mut after_period = false;
    for t in &tokens {
        let qualified = std::mem::replace(&mut after_period, t.token == Token::Period);
        let Some(c) = colour(&t.token) else { continue };
        if qualified && matches!(t.token, Token::Word(_)) {
            continue;
        }
        let (Some(a), Some(b)) = (
            pos.byte(t.span.start.line, t.span.start.column),
            pos.byte(t.span.end.line, t.span.end.column),
        ) else {
            continue;
        };
        if a < done || b <= a || !line.is_char_boundary(a) || !line.is_char_boundary(b) {
            continue;
        }
        out.push_str(&line[done..a]);
        out.push_str(c);
        out.push_str(&line[a..b]);
        out.push_str(RESET);
        done = b;
        coloured = true;
    }
    if !coloured {
        return None;
    }
    out.push_str(&line[done..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn colours_keywords_strings_numbers_and_comments() {
        let line = "SELECT level, count(*) FROM logs WHERE msg = 'a b' AND n > 42 -- note";
        let h = highlight_sql(line).expect("coloured");
        assert_eq!(strip(&h), line);
        assert!(h.starts_with("\x1b[1;34mSELECT\x1b[0m level"), "{h}");
        assert!(h.contains("\x1b[1;34mFROM\x1b[0m logs"), "{h}");
        assert!(h.contains("\x1b[32m'a b'\x1b[0m"), "{h}");
        assert!(h.contains("\x1b[33m42\x1b[0m"), "{h}");
        assert!(h.ends_with("\x1b[90m-- note\x1b[0m"), "{h}");
        // identifiers and non-reserved keywords used as names stay plain
        assert!(!h.contains("\x1b[1;34mlogs"), "{h}");
        assert!(!h.contains("\x1b[1;34mcount"), "{h}");
        let q = highlight_sql("select t.from, hour from t").expect("coloured");
        assert!(q.contains(" t.from, hour "), "{q}");
    }

    #[test]
    fn keeps_multibyte_text_and_quoted_identifiers() {
        let line = "select \"from\", 'héllo → wörld' from t";
        let h = highlight_sql(line).expect("coloured");
        assert_eq!(strip(&h), line);
        assert!(h.contains("\x1b[32m'héllo → wörld'\x1b[0m"), "{h}");
        // a quoted identifier is not a keyword
        assert!(h.contains(" \"from\","), "{h}");
    }

    #[test]
    fn leaves_commands_unfinished_quotes_and_plain_words_alone() {
        assert_eq!(highlight_sql("\\d logs"), None);
        assert_eq!(highlight_sql("select 'unterminated"), None);
        assert_eq!(highlight_sql("foo bar"), None);
    }

    #[test]
    fn multi_line_buffers_keep_their_text() {
        let line = "select 1\nfrom t\nwhere x = 'y'";
        let h = highlight_sql(line).expect("coloured");
        assert_eq!(strip(&h), line);
        assert!(h.contains("\n\x1b[1;34mfrom\x1b[0m t"), "{h}");
    }
}
