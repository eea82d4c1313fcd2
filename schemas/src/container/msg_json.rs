//! A message that is one JSON object: flattened in one pass into the row's attrs, its level,
//! trace id and span id offered to the columns.

use std::borrow::Cow;

use arrow::array::{MapBuilder, StringBuilder};

use super::{Col, Row, recycle};
use crate::DecoderOptions;
use crate::json::{JVal, Parser};

/// Key of a field of a JSON message: one key, or a dotted path joined in [`MsgJson::keys`].
enum MKey<'a> {
    One(Cow<'a, str>),
    Joined(u32, u32),
}

/// Scratch for flattening a JSON message in one pass, reused between rows.
struct MsgJson<'a> {
    path: Vec<Cow<'a, str>>,
    entries: Vec<(MKey<'a>, JVal<'a>)>,
    keys: String,
}

impl<'a> MsgJson<'a> {
    /// Flattens the object `t` into `entries` (keys joined with '.'). Returns whether `t` is one
    /// valid JSON object, exactly as `Parser::skip_value(0)` + `end` would judge it.
    fn flatten(&mut self, t: &'a str) -> bool {
        self.path.clear();
        self.entries.clear();
        self.keys.clear();
        let MsgJson {
            path,
            entries,
            keys,
        } = self;
        let mut p = Parser::new(t);
        p.ws();
        if p.peek() != Some(b'{') {
            return false;
        }
        let mut depth_ok = true;
        let res = p.object(path, &mut |path, v| {
            // `object` skips a raw value (array, object nested too deep) from nesting depth 0;
            // `skip_value` over the whole document counts from the top: check it the same way
            if let JVal::Raw(r) = &v
                && depth_ok
            {
                depth_ok = Parser::new(r).skip_value(path.len()).is_ok();
            }
            let key = match path {
                [one] => MKey::One(one.clone()),
                _ => {
                    let start = keys.len() as u32;
                    for (i, part) in path.iter().enumerate() {
                        if i > 0 {
                            keys.push('.');
                        }
                        keys.push_str(part);
                    }
                    MKey::Joined(start, keys.len() as u32)
                }
            };
            entries.push((key, v));
        });
        res.is_ok() && p.end().is_ok() && depth_ok
    }
}

/// What a JSON message says for the level, trace id and span id columns.
#[derive(Debug, Default)]
pub(super) struct JsonHints<'m> {
    pub(super) level: Option<&'m str>,
    pub(super) trace: Option<&'m str>,
    pub(super) span: Option<&'m str>,
}

/// Holder of a [`MsgJson`] between rows (its lifetime differs for each row).
#[derive(Default)]
pub(super) struct MsgJsonBufs {
    path: Vec<Cow<'static, str>>,
    entries: Vec<(MKey<'static>, JVal<'static>)>,
    keys: String,
}

impl MsgJsonBufs {
    fn take<'a>(&mut self) -> MsgJson<'a> {
        MsgJson {
            path: recycle(std::mem::take(&mut self.path)),
            entries: recycle(std::mem::take(&mut self.entries)),
            keys: std::mem::take(&mut self.keys),
        }
    }

    fn keep(&mut self, m: MsgJson<'_>) {
        self.path = recycle(m.path);
        self.entries = recycle(m.entries);
        self.keys = m.keys;
    }

    /// Adds to the row's attrs the fields of a message that is one JSON object (flattened in one
    /// pass, kept only when the whole object is valid; fields the record has itself win); its
    /// level and its trace and span ids (unless the record has them) are returned for the
    /// columns instead, the ids not repeated in attrs (copied verbatim: nothing is lost).
    pub(super) fn append_fields<'m>(
        &mut self,
        attrs: &mut MapBuilder<StringBuilder, StringBuilder>,
        row: &Row<'_>,
        message: &'m str,
        opts: &DecoderOptions,
    ) -> JsonHints<'m> {
        let mut hints = JsonHints::default();
        let t = message.trim();
        if !(t.len() >= 2 && t.starts_with('{') && t.ends_with('}')) {
            return hints;
        }
        let has_trace = row.get(Col::TraceId).is_some();
        let has_span = row.get(Col::SpanId).is_some();
        let mut scratch = self.take();
        if scratch.flatten(t) {
            let MsgJson { entries, keys, .. } = &mut scratch;
            for (k, v) in entries.drain(..) {
                let k: &str = match &k {
                    MKey::One(c) => c,
                    MKey::Joined(a, b) => keys.get(*a as usize..*b as usize).unwrap_or(""),
                };
                if row.has_attr(k) {
                    continue;
                }
                match (k, &v) {
                    (
                        "level" | "lvl" | "severity" | "log.level" | "loglevel" | "log_level",
                        JVal::Str(Cow::Borrowed(x)),
                    ) if hints.level.is_none() => hints.level = Some(*x),
                    ("trace_id" | "traceId" | "trace.id", JVal::Str(Cow::Borrowed(x)))
                        if hints.trace.is_none() && !has_trace =>
                    {
                        hints.trace = Some(*x);
                        continue;
                    }
                    ("span_id" | "spanId" | "span.id", JVal::Str(Cow::Borrowed(x)))
                        if hints.span.is_none() && !has_span =>
                    {
                        hints.span = Some(*x);
                        continue;
                    }
                    _ => {}
                }
                if opts.json_message_attrs {
                    attrs.keys().append_value(k);
                    attrs.values().append_option(v.into_text().as_deref());
                }
            }
        }
        self.keep(scratch);
        hints
    }
}
