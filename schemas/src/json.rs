//! A small, strict, zero-copy JSON reader that *flattens* an object: every scalar leaf is
//! reported with the path of keys that leads to it; arrays (and objects nested deeper than
//! [`MAX_FLATTEN_DEPTH`]) are reported as their raw JSON text.
//!
//! Why hand-rolled: the decoders only ever need "walk the object once and route each leaf to a
//! column"; doing that straight off the input bytes, borrowing every unescaped string, is what
//! makes the decoders several times faster than building a `serde_json::Value` first.
//! The input is `&str`, so it is valid UTF-8 by construction; the parser never panics on any
//! input (fuzzed: `schemas/fuzz`).

use std::borrow::Cow;

/// Objects nested deeper than this are reported as raw JSON text instead of being flattened.
pub const MAX_FLATTEN_DEPTH: usize = 16;
/// Nesting deeper than this is rejected (protects the stack).
pub const MAX_DEPTH: usize = 128;

/// One leaf value.
#[derive(Debug, Clone, PartialEq)]
pub enum JVal<'a> {
    Str(Cow<'a, str>),
    /// A JSON number, as written.
    Num(&'a str),
    Bool(bool),
    Null,
    /// An array, an empty object, or an object nested too deep: its raw JSON text.
    Raw(&'a str),
}

impl<'a> JVal<'a> {
    /// The value as text for a `Map<Utf8, Utf8>` (`None` for JSON null).
    pub fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            JVal::Str(s) => Some(s),
            JVal::Num(n) => Some(Cow::Borrowed(n)),
            JVal::Bool(true) => Some(Cow::Borrowed("true")),
            JVal::Bool(false) => Some(Cow::Borrowed("false")),
            JVal::Null => None,
            JVal::Raw(r) => Some(Cow::Borrowed(r)),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            JVal::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The first `"` or `\\` in `b`. Most JSON strings (keys, ids, names) are short: the first 64
/// bytes are scanned 8 at a time in a `u64` (SWAR), which beats the setup of a SIMD `memchr2`
/// call on them; the rest of a long string goes to `memchr2`.
#[inline]
fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = LO * b'"' as u64;
    const BACKSLASH: u64 = LO * b'\\' as u64;
    let head = &b[..b.len().min(64)];
    let mut chunks = head.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let w = u64::from_le_bytes(a);
        let q = w ^ QUOTE;
        let e = w ^ BACKSLASH;
        // a byte of `q` or `e` is zero where `w` has a quote or a backslash; the lowest flagged
        // byte is always a true match (false positives can only sit above one)
        let m = (q.wrapping_sub(LO) & !q | e.wrapping_sub(LO) & !e) & HI;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if let Some(p) = chunks
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
    {
        return Some(i + p);
    }
    let i = head.len();
    memchr::memchr2(b'"', b'\\', &b[i..]).map(|p| i + p)
}

/// A parse error with the byte position where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub pos: usize,
    pub msg: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.pos, self.msg)
    }
}

pub struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pub pos: usize,
    /// Set when a string held an unpaired surrogate escape (replaced by U+FFFD).
    pub lossy: bool,
}

type PResult<T> = Result<T, JsonError>;

impl<'a> Parser<'a> {
    pub fn new(s: &'a str) -> Self {
        Parser {
            s,
            b: s.as_bytes(),
            pos: 0,
            lossy: false,
        }
    }

    fn err<T>(&self, msg: &'static str) -> PResult<T> {
        Err(JsonError { pos: self.pos, msg })
    }

    #[inline]
    pub fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c == b' ' || c == b'\n' || c == b'\r' || c == b'\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    pub fn expect(&mut self, c: u8) -> PResult<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(match c {
                b'{' => "expected '{'",
                b'}' => "expected '}'",
                b'[' => "expected '['",
                b']' => "expected ']'",
                b':' => "expected ':'",
                b',' => "expected ','",
                _ => "unexpected character",
            })
        }
    }

    /// After the value: only whitespace may follow.
    pub fn end(&mut self) -> PResult<()> {
        self.ws();
        if self.pos == self.b.len() {
            Ok(())
        } else {
            self.err("trailing characters after the JSON value")
        }
    }

    /// Parses a string; `self.pos` is at the opening quote.
    pub fn string(&mut self) -> PResult<Cow<'a, str>> {
        self.string_nl::<false>().map(|(s, _)| s)
    }

    /// Parses a string. With `NL`, a string whose only escape is a final `\n` is returned
    /// borrowed *without* that line end, and `true` (saves copying a log line just to unescape
    /// the `\n` that ends it); otherwise `false`.
    #[inline]
    fn string_nl<const NL: bool>(&mut self) -> PResult<(Cow<'a, str>, bool)> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string");
        }
        self.pos += 1;
        let start = self.pos;
        let rest = &self.b[start..];
        match find_quote_or_backslash(rest) {
            None => self.err("unterminated string"),
            Some(i) if rest[i] == b'"' => {
                self.pos = start + i + 1;
                Ok((Cow::Borrowed(&self.s[start..start + i]), false))
            }
            Some(i) if NL && rest.get(i + 1) == Some(&b'n') && rest.get(i + 2) == Some(&b'"') => {
                self.pos = start + i + 3;
                Ok((Cow::Borrowed(&self.s[start..start + i]), true))
            }
            Some(i) => {
                // the first escape is often near the start (`{\"level\":…` in a log line):
                // size for the whole string (bounded by what is left of the input) rather than
                // from there, so that it rarely regrows
                let mut out = String::with_capacity(rest.len().min((i + 16).max(1024)));
                out.push_str(&self.s[start..start + i]);
                self.pos = start + i;
                self.string_slow(out).map(|s| (Cow::Owned(s), false))
            }
        }
    }

    fn string_slow(&mut self, mut out: String) -> PResult<String> {
        loop {
            let rest = &self.b[self.pos..];
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                return self.err("unterminated string");
            };
            out.push_str(&self.s[self.pos..self.pos + i]);
            self.pos += i;
            if self.b[self.pos] == b'"' {
                self.pos += 1;
                return Ok(out);
            }
            // backslash
            let Some(&e) = self.b.get(self.pos + 1) else {
                return self.err("unterminated escape");
            };
            self.pos += 2;
            match e {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4()?;
                    if (0xD800..0xDC00).contains(&hi) {
                        // high surrogate: a low one should follow
                        if self.b.get(self.pos) == Some(&b'\\')
                            && self.b.get(self.pos + 1) == Some(&b'u')
                        {
                            let save = self.pos;
                            self.pos += 2;
                            let lo = self.hex4()?;
                            if (0xDC00..0xE000).contains(&lo) {
                                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                            } else {
                                self.lossy = true;
                                out.push('\u{FFFD}');
                                self.pos = save;
                            }
                        } else {
                            self.lossy = true;
                            out.push('\u{FFFD}');
                        }
                    } else if (0xDC00..0xE000).contains(&hi) {
                        self.lossy = true;
                        out.push('\u{FFFD}');
                    } else {
                        out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                    }
                }
                _ => return self.err("invalid escape"),
            }
        }
    }

    fn hex4(&mut self) -> PResult<u32> {
        let Some(h) = self.b.get(self.pos..self.pos + 4) else {
            return self.err("truncated \\u escape");
        };
        let mut v = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return self.err("invalid \\u escape"),
            };
            v = v * 16 + u32::from(d);
        }
        self.pos += 4;
        Ok(v)
    }

    /// Parses a number; returns its text.
    pub fn number(&mut self) -> PResult<&'a str> {
        let start = self.pos;
        let b = self.b;
        let mut p = self.pos;
        if b.get(p) == Some(&b'-') {
            p += 1;
        }
        match b.get(p) {
            Some(b'0') => p += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(p), Some(b'0'..=b'9')) {
                    p += 1;
                }
            }
            _ => {
                self.pos = p;
                return self.err("invalid number");
            }
        }
        if b.get(p) == Some(&b'.') {
            p += 1;
            if !matches!(b.get(p), Some(b'0'..=b'9')) {
                self.pos = p;
                return self.err("invalid number fraction");
            }
            while matches!(b.get(p), Some(b'0'..=b'9')) {
                p += 1;
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            p += 1;
            if matches!(b.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            if !matches!(b.get(p), Some(b'0'..=b'9')) {
                self.pos = p;
                return self.err("invalid number exponent");
            }
            while matches!(b.get(p), Some(b'0'..=b'9')) {
                p += 1;
            }
        }
        self.pos = p;
        Ok(&self.s[start..p])
    }

    fn literal(&mut self, word: &'static str) -> PResult<()> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// Validates and skips any value.
    pub fn skip_value(&mut self, depth: usize) -> PResult<()> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.expect(b':')?;
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return self.err("expected ',' or '}'"),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            None => self.err("unexpected end of input"),
            Some(_) => self.err("unexpected character"),
        }
    }

    /// Validates and returns the raw text of the next value.
    pub fn raw_value(&mut self) -> PResult<&'a str> {
        self.ws();
        let start = self.pos;
        self.skip_value(0)?;
        Ok(&self.s[start..self.pos])
    }

    /// Parses a scalar or raw value (no flattening).
    pub fn value(&mut self) -> PResult<JVal<'a>> {
        self.ws();
        match self.peek() {
            Some(b'"') => Ok(JVal::Str(self.string()?)),
            Some(b't') => self.literal("true").map(|_| JVal::Bool(true)),
            Some(b'f') => self.literal("false").map(|_| JVal::Bool(false)),
            Some(b'n') => self.literal("null").map(|_| JVal::Null),
            Some(b'-' | b'0'..=b'9') => Ok(JVal::Num(self.number()?)),
            Some(b'[' | b'{') => Ok(JVal::Raw(self.raw_value()?)),
            None => self.err("unexpected end of input"),
            Some(_) => self.err("unexpected character"),
        }
    }

    /// Flattens the object at the current position. `f` gets the key path (including the
    /// leaf key) and the leaf value.
    pub fn object<F>(&mut self, path: &mut Vec<Cow<'a, str>>, f: &mut F) -> PResult<()>
    where
        F: FnMut(&[Cow<'a, str>], JVal<'a>),
    {
        self.object_impl::<false, _, _>(path, &|_| false, &mut |p, v, _| f(p, v))
    }

    /// Like [`Parser::object`], but a string leaf whose path passes `nl_ok` and whose only
    /// escape is a final `\n` is reported borrowed without that `\n`, and `f`'s third argument
    /// is `true` (the value is that text plus `"\n"`).
    pub(crate) fn object_nl<P, F>(
        &mut self,
        path: &mut Vec<Cow<'a, str>>,
        nl_ok: &P,
        f: &mut F,
    ) -> PResult<()>
    where
        P: Fn(&[Cow<'a, str>]) -> bool,
        F: FnMut(&[Cow<'a, str>], JVal<'a>, bool),
    {
        self.object_impl::<true, _, _>(path, nl_ok, f)
    }

    fn object_impl<const NL: bool, P, F>(
        &mut self,
        path: &mut Vec<Cow<'a, str>>,
        nl_ok: &P,
        f: &mut F,
    ) -> PResult<()>
    where
        P: Fn(&[Cow<'a, str>]) -> bool,
        F: FnMut(&[Cow<'a, str>], JVal<'a>, bool),
    {
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.expect(b':')?;
            self.ws();
            path.push(key);
            if self.peek() == Some(b'{') && path.len() < MAX_FLATTEN_DEPTH {
                let start = self.pos;
                // empty objects are reported raw so that the key is not lost
                let save = self.pos;
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    f(path, JVal::Raw(&self.s[start..self.pos]), false);
                } else {
                    self.pos = save;
                    self.object_impl::<NL, P, F>(path, nl_ok, f)?;
                }
            } else if NL && self.peek() == Some(b'"') && nl_ok(path) {
                let (s, nl) = self.string_nl::<true>()?;
                f(path, JVal::Str(s), nl);
            } else {
                let v = self.value()?;
                f(path, v, false);
            }
            path.pop();
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }
}

/// Flattens a whole document that must be one JSON object.
/// Returns whether a lone surrogate escape had to be replaced.
pub fn flatten_object<'a, F>(s: &'a str, f: &mut F) -> Result<bool, JsonError>
where
    F: FnMut(&[Cow<'a, str>], JVal<'a>),
{
    let mut p = Parser::new(s);
    let mut path = Vec::with_capacity(4);
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(JsonError {
            pos: p.pos,
            msg: "expected a JSON object",
        });
    }
    p.object(&mut path, f)?;
    p.end()?;
    Ok(p.lossy)
}

/// Joins a key path with '.'.
pub fn join_path<'a>(path: &[Cow<'a, str>]) -> Cow<'a, str> {
    match path {
        [one] => one.clone(),
        _ => {
            let mut s = String::with_capacity(path.iter().map(|p| p.len() + 1).sum());
            for (i, p) in path.iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(p);
            }
            Cow::Owned(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(s: &str) -> Result<Vec<(String, JVal<'_>)>, JsonError> {
        let mut v = Vec::new();
        flatten_object(s, &mut |p, x| v.push((join_path(p).into_owned(), x)))?;
        Ok(v)
    }

    #[test]
    fn flattens_nested_objects_and_keeps_arrays_raw() {
        let v =
            flat(r#"{"a":1,"b":{"c":"x\ny","d":[1, {"e":2}],"f":{}},"g":null,"h":true}"#).unwrap();
        assert_eq!(
            v,
            vec![
                ("a".into(), JVal::Num("1")),
                ("b.c".into(), JVal::Str(Cow::Owned("x\ny".into()))),
                ("b.d".into(), JVal::Raw("[1, {\"e\":2}]")),
                ("b.f".into(), JVal::Raw("{}")),
                ("g".into(), JVal::Null),
                ("h".into(), JVal::Bool(true)),
            ]
        );
    }

    #[test]
    fn decodes_escapes_and_surrogates() {
        let v = flat(r#"{"k":"\u00e9\ud83d\ude00\t\"","l":"\ud800x"}"#).unwrap();
        assert_eq!(v[0].1, JVal::Str(Cow::Owned("é😀\t\"".into())));
        assert_eq!(v[1].1, JVal::Str(Cow::Owned("\u{FFFD}x".into())));
    }

    #[test]
    fn finds_quotes_and_backslashes_like_memchr2() {
        let mut r = crate::r#gen::Rng::new(3);
        for len in 0..200 {
            for k in 0..200u64 {
                let odds = [3, 40, 400, 1 << 30][(k % 4) as usize];
                let b: Vec<u8> = (0..len)
                    .map(|_| match r.below(odds) {
                        0 => b'"',
                        1 => b'\\',
                        _ => match r.below(8) {
                            0 => 0x80 | r.below(64) as u8,
                            1 => 0xA2,
                            2 => 0xDC,
                            _ => b'a' + r.below(26) as u8,
                        },
                    })
                    .collect();
                assert_eq!(
                    find_quote_or_backslash(&b),
                    memchr::memchr2(b'"', b'\\', &b),
                    "{b:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1]",
            "{\"a\":01}",
            "{\"a\":1} x",
            "{\"a\":\"\\x\"}",
            "{\"a\":tru}",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":\"abc",
        ] {
            assert!(flat(bad).is_err(), "accepted {bad:?}");
        }
    }
}
