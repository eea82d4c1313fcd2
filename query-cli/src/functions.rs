//! Log functions: `regexp_extract`, `log_level`, `log_template`, `time_bucket`, plus the JSON
//! functions of `datafusion-functions-json` (`json_get`, `json_get_str`, `->`, `->>`, …).

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use regex::Regex;

/// Register all loglake functions on a context.
pub fn register(ctx: &mut SessionContext) -> Result<()> {
    datafusion_functions_json::register_all(ctx)?;
    ctx.register_udf(ScalarUDF::new_from_impl(RegexpExtract::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(StringMap::new(
        "log_level",
        log_level,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(StringMap::new(
        "log_template",
        |s| Some(log_template(s)),
    )));
    // time_bucket(INTERVAL '5 minutes', ts [, origin]) — DuckDB's name for DataFusion's date_bin.
    let date_bin = datafusion::functions::datetime::date_bin();
    ctx.register_udf(date_bin.as_ref().clone().with_aliases(["time_bucket"]));
    // Drain template mining (insights crate): log_templates(...), log_template_id/drain_template OVER (...)
    loglake_insights::sql::register(ctx);
    Ok(())
}

/// Names of the functions this crate adds (for completion and docs).
pub const LOG_FUNCTIONS: &[&str] = &[
    "regexp_extract",
    "log_level",
    "log_template",
    "time_bucket",
    "delta_scan",
    "read_parquet",
    "log_context",
    "correlate",
    "log_templates",
    "log_template_id",
    "drain_template",
];

// ---------------------------------------------------------------- log_level

static LEVEL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(fatal|panic|emerg(?:ency)?|alert|crit(?:ical)?|err(?:or)?|warn(?:ing)?|info|notice|debug|trace)\b"#,
    )
    .expect("static regex")
});
static GLOG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([IWEF])\d{4} \d{2}:\d{2}:\d{2}").expect("static regex"));

/// The severity a log line announces, normalised to FATAL, ERROR, WARN, INFO, DEBUG or TRACE;
/// `None` when the line names none. Recognises `level=error`, `"level":"warn"`, `[ERROR]`,
/// `E0512 10:00:00` (glog/klog) and bare words; the first one in the line wins.
pub fn log_level(msg: &str) -> Option<String> {
    if let Some(c) = GLOG_RE.captures(msg) {
        let l = match &c[1] {
            "I" => "INFO",
            "W" => "WARN",
            "E" => "ERROR",
            _ => "FATAL",
        };
        return Some(l.to_string());
    }
    // only look at the head of the line: the level is announced early, and the body may quote
    // other words (e.g. "retrying after error")
    let head = match msg.char_indices().nth(200) {
        Some((i, _)) => &msg[..i],
        None => msg,
    };
    let m = LEVEL_RE.find(head)?;
    let w = m.as_str().to_ascii_lowercase();
    let l = match w.as_str() {
        "fatal" | "panic" | "emerg" | "emergency" | "alert" | "crit" | "critical" => "FATAL",
        "err" | "error" => "ERROR",
        "warn" | "warning" => "WARN",
        "info" | "notice" => "INFO",
        "debug" => "DEBUG",
        _ => "TRACE",
    };
    Some(l.to_string())
}

// ---------------------------------------------------------------- log_template

static TEMPLATE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"#,
        r#"|(?P<ip>\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b)"#,
        r#"|(?P<dq>"(?:[^"\\]|\\.)*")"#,
        r#"|(?P<sq>'(?:[^'\\]|\\.)*')"#,
        r#"|(?P<url>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+)"#,
        r#"|(?P<path>(?:^|[\s=:(\[])(?:/[A-Za-z0-9._~%+-]+){2,}/?)"#,
        r#"|(?P<hex>\b0[xX][0-9a-fA-F]+\b|\b[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b|\b[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*[0-9][0-9a-fA-F]*\b)"#,
        r#"|(?P<num>[-+]?\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"#,
    ))
    .expect("static regex")
});

/// Mask the variable parts of a log line so lines of the same pattern share one template:
/// UUIDs -> `<uuid>`, IPv4[:port] -> `<ip>`, quoted values -> `"<*>"`/`'<*>'`, URLs -> `<url>`,
/// paths -> `<path>`, hex words of 6+ chars mixing digits and letters or `0x…` -> `<hex>`,
/// numbers (also inside `12ms`, `v2`) -> `<num>`.
pub fn log_template(msg: &str) -> String {
    TEMPLATE_RE
        .replace_all(msg, |c: &regex::Captures<'_>| {
            if c.name("uuid").is_some() {
                "<uuid>".to_string()
            } else if c.name("ip").is_some() {
                "<ip>".to_string()
            } else if c.name("dq").is_some() {
                "\"<*>\"".to_string()
            } else if c.name("sq").is_some() {
                "'<*>'".to_string()
            } else if c.name("url").is_some() {
                "<url>".to_string()
            } else if let Some(p) = c.name("path") {
                // keep the delimiter that precedes the path
                let s = p.as_str();
                let lead: String = s.chars().take_while(|ch| *ch != '/').collect();
                format!("{lead}<path>")
            } else if let Some(h) = c.name("hex") {
                let s = h.as_str();
                if s.starts_with("0x") || s.starts_with("0X") || s.len() >= 6 {
                    "<hex>".to_string()
                } else {
                    // short alphanumerics like "v2", "2xx", "e2e" keep their letters
                    s.chars()
                        .map(|ch| if ch.is_ascii_digit() { '#' } else { ch })
                        .collect::<String>()
                        .replace('#', "<num>")
                }
            } else {
                "<num>".to_string()
            }
        })
        .into_owned()
}

// ---------------------------------------------------------------- generic string -> string UDF

#[derive(Debug)]
struct StringMap {
    name: &'static str,
    signature: Signature,
    #[allow(clippy::type_complexity)]
    f: fn(&str) -> Option<String>,
}

impl PartialEq for StringMap {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for StringMap {}
impl std::hash::Hash for StringMap {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl StringMap {
    fn new(name: &'static str, f: fn(&str) -> Option<String>) -> Self {
        Self {
            name,
            signature: Signature::string(1, Volatility::Immutable),
            f,
        }
    }
}

impl ScalarUDFImpl for StringMap {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name);
        };
        match arg {
            ColumnarValue::Scalar(s) => {
                let v = scalar_str(s)?;
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                    v.and_then(|v| (self.f)(&v)),
                )))
            }
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(map_strings(a, |s| (self.f)(s))?)),
        }
    }
}

fn scalar_str(s: &ScalarValue) -> Result<Option<String>> {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            Ok(v.clone())
        }
        ScalarValue::Null => Ok(None),
        other => exec_err!("expected a string, got {}", other.data_type()),
    }
}

/// Apply `f` to every string of a Utf8/LargeUtf8/Utf8View array.
fn map_strings(a: &ArrayRef, mut f: impl FnMut(&str) -> Option<String>) -> Result<ArrayRef> {
    let mut b = StringBuilder::with_capacity(a.len(), a.len() * 16);
    macro_rules! go {
        ($arr:expr) => {
            for v in $arr.iter() {
                match v.and_then(&mut f) {
                    Some(s) => b.append_value(s),
                    None => b.append_null(),
                }
            }
        };
    }
    match a.data_type() {
        DataType::Utf8 => go!(a.as_string::<i32>()),
        DataType::LargeUtf8 => go!(a.as_string::<i64>()),
        DataType::Utf8View => go!(a.as_string_view()),
        DataType::Null => {
            for _ in 0..a.len() {
                b.append_null();
            }
        }
        other => return exec_err!("expected a string column, got {other}"),
    }
    Ok(Arc::new(b.finish()))
}

// ---------------------------------------------------------------- regexp_extract

/// `regexp_extract(string, pattern [, group])` as in DuckDB: the text of capture `group`
/// (default 0 = whole match) of the first match, `''` when the pattern does not match, NULL for
/// NULL input.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    fn new() -> Self {
        let s = |t: DataType| {
            vec![
                TypeSignature::Exact(vec![t.clone(), DataType::Utf8]),
                TypeSignature::Exact(vec![t, DataType::Utf8, DataType::Int64]),
            ]
        };
        let mut sigs = s(DataType::Utf8);
        sigs.extend(s(DataType::Utf8View));
        sigs.extend(s(DataType::LargeUtf8));
        Self {
            signature: Signature::one_of(sigs, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let pattern = match args.args.get(1) {
            Some(ColumnarValue::Scalar(s)) => match scalar_str(s)? {
                Some(p) => p,
                None => return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
            },
            _ => return plan_err!("regexp_extract: the pattern must be a constant string"),
        };
        let group = match args.args.get(2) {
            None => 0usize,
            Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(g)))) if *g >= 0 => *g as usize,
            Some(_) => {
                return plan_err!(
                    "regexp_extract: the group must be a constant non-negative integer"
                );
            }
        };
        let re = Regex::new(&pattern).map_err(|e| {
            datafusion::error::DataFusionError::Execution(format!("regexp_extract: {e}"))
        })?;
        if group > re.captures_len().saturating_sub(1) {
            return exec_err!(
                "regexp_extract: pattern has {} groups, asked for {group}",
                re.captures_len() - 1
            );
        }
        let extract = |s: &str| -> Option<String> {
            Some(match re.captures(s) {
                Some(c) => c
                    .get(group)
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
                None => String::new(),
            })
        };
        match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => {
                let v = scalar_str(s)?;
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                    v.and_then(|v| extract(&v)),
                )))
            }
            Some(ColumnarValue::Array(a)) => {
                debug_assert_eq!(a.len(), n);
                Ok(ColumnarValue::Array(map_strings(a, extract)?))
            }
            None => exec_err!("regexp_extract takes 2 or 3 arguments"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(
            log_level("2024-05-01T10:00:00Z level=error msg=boom").as_deref(),
            Some("ERROR")
        );
        assert_eq!(
            log_level(r#"{"level":"warning","msg":"x"}"#).as_deref(),
            Some("WARN")
        );
        assert_eq!(
            log_level("E0501 10:00:00.123 1 main.go:10] failed").as_deref(),
            Some("ERROR")
        );
        assert_eq!(log_level("[INFO] started").as_deref(), Some("INFO"));
        assert_eq!(log_level("Critical: disk").as_deref(), Some("FATAL"));
        assert_eq!(log_level("GET /index.html 200"), None);
        assert_eq!(log_level("terror information"), None);
    }

    #[test]
    fn templates() {
        assert_eq!(
            log_template("user 42 logged in from 10.1.2.3:8080 in 35ms"),
            "user <num> logged in from <ip> in <num>ms"
        );
        assert_eq!(
            log_template(
                "req 123e4567-e89b-12d3-a456-426614174000 path=/var/lib/kubelet/pods failed: \"no such file\""
            ),
            "req <uuid> path=<path> failed: \"<*>\""
        );
        assert_eq!(
            log_template("sha deadbeef01 at 0x7ffe12"),
            "sha <hex> at <hex>"
        );
        assert_eq!(
            log_template("GET https://api.example.com/v1/x?id=3 -> 503"),
            "GET <url> -> <num>"
        );
        assert_eq!(log_template("retry 3 of 5"), log_template("retry 4 of 5"));
    }
}
