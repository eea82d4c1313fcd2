//! Tokenising and masking a log line for the miner.
//!
//! A line is cut into tokens at whitespace and after commas (so a JSON object or a `k=v, k=v`
//! list is more than one token). Each token keeps its leading and trailing punctuation and the key
//! of a `key=value` / `"key":value` pair; what is left (the core) is replaced by [`WILDCARD`] when
//! it is variable: it holds a digit (numbers, durations, IPs and ports, UUIDs, hex ids, timestamps,
//! block and pod names; except words of at most three characters like `v2`, `e2e`, `k8s`), or it
//! is an absolute path (`/healthz`, `/var/lib/x`), or a URL. Only the first line of a message is
//! used (a stack trace is mined by its head line).

use std::borrow::Cow;

/// The wildcard a variable token becomes, as in Drain.
pub const WILDCARD: &str = "<*>";

/// One token of a line: its (masked) text and whether whitespace followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub text: Cow<'a, str>,
    pub space_after: bool,
}

impl Token<'_> {
    /// Whether the whole token is the wildcard, or holds one.
    pub fn is_variable(&self) -> bool {
        self.text.contains(WILDCARD)
    }
}

/// The first line of `msg` without its line end.
pub fn first_line(msg: &str) -> &str {
    let line = match memchr_newline(msg) {
        Some(i) => &msg[..i],
        None => msg,
    };
    line.strip_suffix('\r').unwrap_or(line)
}

fn memchr_newline(s: &str) -> Option<usize> {
    s.as_bytes().iter().position(|&b| b == b'\n')
}

/// Cut `line` into masked tokens, appending to `out` (cleared first). At most `max_tokens`
/// tokens are kept; the rest of the line becomes one last wildcard token.
pub fn tokenize<'a>(line: &'a str, max_tokens: usize, out: &mut Vec<Token<'a>>) {
    out.clear();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        if out.len() + 1 >= max_tokens {
            out.push(Token {
                text: Cow::Borrowed(WILDCARD),
                space_after: false,
            });
            return;
        }
        let start = i;
        // a token ends at whitespace, or right after a comma that is followed by more text
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            if bytes[i] == b',' && i + 1 < bytes.len() && !bytes[i + 1].is_ascii_whitespace() {
                i += 1;
                break;
            }
            i += 1;
        }
        let word = &line[start..i];
        let space_after = i < bytes.len() && bytes[i].is_ascii_whitespace();
        out.push(Token {
            text: mask_word(word),
            space_after,
        });
    }
}

const LEAD: &[u8] = b"([{<\"'`";
const TRAIL: &[u8] = b")]}>\"'`,;:.!?";

/// Mask one whitespace-free word (see the module docs).
pub fn mask_word(word: &str) -> Cow<'_, str> {
    let b = word.as_bytes();
    // fast path: a word without digits or slashes is a constant
    if !b.iter().any(|c| c.is_ascii_digit() || *c == b'/') {
        return Cow::Borrowed(word);
    }
    // opening brackets, then key=value and "key":value keep their key
    let open = b
        .iter()
        .take_while(|c| matches!(c, b'(' | b'[' | b'<'))
        .count();
    let key_end = open + key_split(&b[open..]);
    let (key, rest) = word.split_at(key_end);
    let rb = rest.as_bytes();
    let mut s = 0;
    while s < rb.len() && LEAD.contains(&rb[s]) {
        s += 1;
    }
    let mut e = rb.len();
    while e > s && TRAIL.contains(&rb[e - 1]) {
        e -= 1;
    }
    let core = &rest[s..e];
    if !is_variable(core) {
        return Cow::Borrowed(word);
    }
    let mut out = String::with_capacity(key.len() + 3 + (rb.len() - e) + s);
    out.push_str(key);
    out.push_str(&rest[..s]);
    out.push_str(WILDCARD);
    out.push_str(&rest[e..]);
    Cow::Owned(out)
}

/// Where the value of `key=value` or `"key":value` starts (0: no key).
fn key_split(b: &[u8]) -> usize {
    // `"key":` — a quoted key followed by a colon
    if b.first() == Some(&b'"') || b.first() == Some(&b'{') {
        let off = usize::from(b.first() == Some(&b'{'));
        if b.get(off) == Some(&b'"')
            && let Some(q) = b[off + 1..].iter().position(|&c| c == b'"')
        {
            let colon = off + 1 + q + 1;
            if b.get(colon) == Some(&b':') {
                return colon + 1;
            }
        }
    }
    // `key=value` with an identifier-like key
    if let Some(eq) = b.iter().position(|&c| c == b'=')
        && eq > 0
        && b[..eq]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        && !b[..eq].iter().all(u8::is_ascii_digit)
    {
        return eq + 1;
    }
    0
}

/// Whether a token core is a variable: digits (but not a short word like `v2`), a path or a
/// URL.
fn is_variable(core: &str) -> bool {
    let b = core.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().any(u8::is_ascii_digit) {
        let short_word = b.len() <= 3 && b.iter().any(u8::is_ascii_alphabetic);
        return !short_word;
    }
    if core.contains("://") {
        return true;
    }
    b[0] == b'/' && b.len() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(line: &str) -> String {
        let mut v = Vec::new();
        tokenize(line, 256, &mut v);
        let mut s = String::new();
        for t in &v {
            s.push_str(&t.text);
            if t.space_after {
                s.push(' ');
            }
        }
        s
    }

    #[test]
    fn masks_variables_and_keeps_keys_and_punctuation() {
        assert_eq!(
            masked("user 42 logged in from 10.1.2.3:8080 in 35ms"),
            "user <*> logged in from <*> in <*>"
        );
        assert_eq!(
            masked("[2019-04-05T14:54:23Z] req_id=9f86d081 path=/var/lib/kubelet done."),
            "[<*>] req_id=<*> path=<*> done."
        );
        assert_eq!(
            masked("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106"),
            "Receiving block <*> src: <*>"
        );
        assert_eq!(
            masked(r#"{"level":"info","path":"/api/v1/x","status":200}"#),
            r#"{"level":"info","path":"<*>","status":<*>}"#
        );
        assert_eq!(masked("upgrade to v2 via e2e"), "upgrade to v2 via e2e");
        assert_eq!(
            masked("id 123e4567-e89b-12d3-a456-426614174000 at 0x7ffe12"),
            "id <*> at <*>"
        );
        assert_eq!(masked("GET https://x.io/a ok"), "GET <*> ok");
    }

    #[test]
    fn first_line_and_token_cap() {
        assert_eq!(first_line("a b\r\n\tat x"), "a b");
        let mut v = Vec::new();
        tokenize("a b c d e f", 3, &mut v);
        let t: Vec<&str> = v.iter().map(|t| t.text.as_ref()).collect();
        assert_eq!(t, ["a", "b", WILDCARD]);
    }
}
