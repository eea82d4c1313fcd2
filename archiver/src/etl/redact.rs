//! The redaction library and one `redact` entry's compiled form: named patterns (`email`,
//! `ipv4`, …, card numbers with the Luhn check) or a custom regex, applied to a string column.

use arrow::array::{Array, StringArray, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use loglake_schemas::{RedactEntry, RedactRule};
use regex::Regex;

/// A named pattern of the redaction library.
struct NamedPattern {
    name: &'static str,
    regex: &'static str,
    replace: &'static str,
    /// A value without any of these substrings cannot match (checked before the regex).
    needles: &'static [&'static str],
    /// Matches must pass the Luhn check (card numbers).
    luhn: bool,
}

/// The named patterns (`redact = ["email", …]`).
const NAMED_PATTERNS: &[NamedPattern] = &[
    NamedPattern {
        name: "email",
        regex: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        replace: "<email>",
        needles: &["@"],
        luhn: false,
    },
    NamedPattern {
        name: "ipv4",
        regex: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        replace: "<ipv4>",
        needles: &["."],
        luhn: false,
    },
    NamedPattern {
        name: "ipv6",
        // full form, or `::`-compressed with at least two groups in all
        regex: r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?:\b[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5}\b)?",
        replace: "<ipv6>",
        needles: &[":"],
        luhn: false,
    },
    NamedPattern {
        name: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        replace: "<jwt>",
        needles: &["eyJ"],
        luhn: false,
    },
    NamedPattern {
        name: "bearer",
        regex: r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}",
        replace: "${1}<token>",
        needles: &["earer", "EARER"],
        luhn: false,
    },
    NamedPattern {
        name: "aws_key",
        regex: r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|(?i)(aws_secret_access_key[\x22']?\s*[=:]\s*[\x22']?)[A-Za-z0-9/+=]{40}",
        replace: "${1}<aws-key>",
        needles: &["AKIA", "ASIA", "ecret_access_key", "ECRET_ACCESS_KEY"],
        luhn: false,
    },
    NamedPattern {
        name: "credit_card",
        regex: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        replace: "<card>",
        needles: &[],
        luhn: true,
    },
];

/// The names of the redaction library.
pub fn named_patterns() -> Vec<&'static str> {
    NAMED_PATTERNS.iter().map(|p| p.name).collect()
}

/// Whether the digits of `s` (separators ignored) pass the Luhn check.
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// One compiled `redact` entry.
#[derive(Debug)]
pub(super) struct Redaction {
    /// The pattern's name (`email`) or `redact[i]` for a custom one: the metric's label.
    pub(super) label: String,
    pub(super) column: String,
    pub(super) out_index: usize,
    regex: Regex,
    replace: String,
    needles: Vec<String>,
    luhn: bool,
}

/// What a `redact` entry resolves to: (label, regex, replacement, needles, Luhn check).
type PatternParts = (String, String, String, Vec<String>, bool);

impl Redaction {
    /// Compiles `redact[i]` against the output schema of `table`; the error is the reason
    /// (the caller names the key).
    pub(super) fn compile(
        i: usize,
        entry: &RedactEntry,
        table: &str,
        output: &SchemaRef,
    ) -> Result<Redaction, String> {
        let rule = match entry {
            RedactEntry::Named(n) => RedactRule {
                column: None,
                name: Some(n.clone()),
                pattern: None,
                replace: None,
            },
            RedactEntry::Rule(r) => r.clone(),
        };
        let column = rule.column.clone().unwrap_or_else(|| "message".into());
        let Ok(out_index) = output.index_of(&column) else {
            return Err(format!("no column `{column}` to redact in table `{table}`"));
        };
        if output.field(out_index).data_type() != &DataType::Utf8 {
            return Err(format!(
                "column `{column}` is of type {}; only string columns can be redacted",
                output.field(out_index).data_type()
            ));
        }
        let (label, regex, replace, needles, luhn) = pattern_parts(i, &rule)?;
        let regex = Regex::new(&regex).map_err(|e| format!("bad regex: {e}"))?;
        Ok(Redaction {
            label,
            column,
            out_index,
            regex,
            replace,
            needles,
            luhn,
        })
    }

    /// The redacted column and the number of replacements, or `None` when nothing matched.
    pub(super) fn apply(&self, strings: &StringArray) -> Option<(StringArray, u64)> {
        let mut count = 0u64;
        let mut changed: Vec<(usize, String)> = Vec::new();
        for (r, v) in strings.iter().enumerate() {
            let Some(v) = v else { continue };
            if !self.needles.is_empty() && !self.needles.iter().any(|n| v.contains(n.as_str())) {
                continue;
            }
            let mut n = 0u64;
            let replaced = self.regex.replace_all(v, |caps: &regex::Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                if self.luhn && !luhn_valid(whole) {
                    return whole.to_string();
                }
                n += 1;
                let mut dst = String::new();
                caps.expand(&self.replace, &mut dst);
                dst
            });
            if n > 0 {
                count += n;
                changed.push((r, replaced.into_owned()));
            }
        }
        if changed.is_empty() {
            return None;
        }
        let mut b = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
        let mut next = changed.iter().peekable();
        for (r, v) in strings.iter().enumerate() {
            match next.peek() {
                Some((cr, s)) if *cr == r => {
                    b.append_value(s);
                    next.next();
                }
                _ => b.append_option(v),
            }
        }
        Some((b.finish(), count))
    }
}

/// The pattern of `redact[i]`: a named one (its replacement overridable) or a custom regex.
fn pattern_parts(i: usize, rule: &RedactRule) -> Result<PatternParts, String> {
    match (&rule.name, &rule.pattern) {
        (Some(n), None) => {
            let Some(p) = NAMED_PATTERNS.iter().find(|p| p.name == n.as_str()) else {
                return Err(format!(
                    "unknown pattern `{n}` (known: {})",
                    named_patterns().join(", ")
                ));
            };
            Ok((
                p.name.to_string(),
                p.regex.to_string(),
                rule.replace
                    .clone()
                    .unwrap_or_else(|| p.replace.to_string()),
                p.needles.iter().map(|s| s.to_string()).collect(),
                p.luhn,
            ))
        }
        (None, Some(pattern)) => Ok((
            format!("redact[{i}]"),
            pattern.clone(),
            rule.replace.clone().unwrap_or_else(|| "<redacted>".into()),
            Vec::new(),
            false,
        )),
        _ => Err("give either `name` (a named pattern) or `pattern` (a regex)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_patterns_mask_what_they_name_and_leave_the_rest() {
        let cases = [
            (
                "email",
                "mail ann.b+x@mail.example.co.uk now",
                "mail <email> now",
            ),
            ("ipv4", "from 10.1.2.3:80 v1.2.3", "from <ipv4>:80 v1.2.3"),
            (
                "ipv6",
                "from 2001:db8::1 and fe80:0:0:0:0:0:0:1 at 12:30",
                "from <ipv6> and <ipv6> at 12:30",
            ),
            (
                "jwt",
                "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_abc-1 done",
                "t=<jwt> done",
            ),
            (
                "bearer",
                "Authorization: Bearer abc.def-123456",
                "Authorization: Bearer <token>",
            ),
            (
                "aws_key",
                "id AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "id <aws-key> aws_secret_access_key=<aws-key>",
            ),
            (
                "credit_card",
                "pay 5555-5555-5555-4444 id 1234567890123",
                "pay <card> id 1234567890123",
            ),
        ];
        for (name, input, want) in cases {
            let p = NAMED_PATTERNS
                .iter()
                .find(|p| p.name == name)
                .expect("pattern");
            let r = Redaction {
                label: name.into(),
                column: "message".into(),
                out_index: 0,
                regex: Regex::new(p.regex).expect("regex"),
                replace: p.replace.into(),
                needles: p.needles.iter().map(|s| s.to_string()).collect(),
                luhn: p.luhn,
            };
            let a = StringArray::from(vec![Some(input), None, Some("nothing here")]);
            let (out, n) = r.apply(&a).unwrap_or_else(|| panic!("{name}: no match"));
            assert_eq!(out.value(0), want, "{name}");
            assert!(out.is_null(1) && out.value(2) == "nothing here");
            assert!(n >= 1);
        }
    }
}
