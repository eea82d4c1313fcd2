//! The `container` table: the row model every container decoder fills ([`Row`], [`Col`]), the
//! Arrow builder with the common enrichment ([`builder`]), and the JSON envelope decoders
//! (`fluentbit`, `filebeat`, `vector`, `ilogtail`: [`envelope`], with each collector's field
//! mapping in [`collectors`]).

mod builder;
mod collectors;
mod envelope;
mod msg_json;

use std::borrow::Cow;
use std::fmt::Write as _;

use arrow::array::StringBuilder;

use crate::event_time::{EventTime, parse_any_ts, parse_epoch};
use crate::json::JVal;

pub(crate) use builder::{ContainerBuilder, finish_output, new_map_builder};
pub(crate) use envelope::{JsonDecoder, JsonFlavor};

/// Key of an `attrs` entry: one string, or a dotted path stored in [`Row::parts`].
#[derive(Debug, Clone)]
pub(crate) enum AKey<'a> {
    One(Cow<'a, str>),
    Parts(u32, u32),
}

/// The string columns of the container schema that decoders set by name ([`COL_NAMES`] gives
/// each its schema column; `finish` places every builder by that name, so the order here is
/// free).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Cluster = 0,
    Namespace,
    Pod,
    Container,
    Node,
    App,
    Service,
    Stream,
    Level,
    TraceId,
    SpanId,
    PodUid,
    ContainerId,
    Image,
    ImageId,
}
const NCOLS: usize = 15;

/// The schema column of each [`Col`], by its discriminant.
const COL_NAMES: [&str; NCOLS] = [
    "cluster",
    "namespace",
    "pod",
    "container",
    "node",
    "app",
    "service",
    "stream",
    "level",
    "trace_id",
    "span_id",
    "pod_uid",
    "container_id",
    "image",
    "image_id",
];

/// One decoded row before it is appended to the builders.
#[derive(Debug, Default)]
pub(crate) struct Row<'a> {
    pub cols: [Option<Cow<'a, str>>; NCOLS],
    pub message: Option<Cow<'a, str>>,
    /// `message` stands for its text plus a final `"\n"` (see [`Parser::object_nl`]).
    pub(crate) msg_nl: bool,
    pub(crate) msg_prio: u8,
    pub(crate) msg_key: Option<AKey<'a>>,
    pub ts_us: Option<i64>,
    /// Nanoseconds within `ts_us`'s microsecond, when a time source had them (`ts_nanos`).
    pub ts_nanos: Option<i16>,
    pub(crate) ts_prio: u8,
    pub(crate) ts_key: Option<(AKey<'a>, Cow<'a, str>)>,
    /// A kubelet log path seen in the envelope: fills namespace/pod/container when missing.
    pub path: Option<Cow<'a, str>>,
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub attrs: Vec<(AKey<'a>, Option<Cow<'a, str>>)>,
    pub(crate) parts: Vec<Cow<'a, str>>,
    /// Extra `loglake.*` flags (key, value).
    pub flags: Vec<(&'static str, Cow<'a, str>)>,
    pub lossy: bool,
}

/// The vectors of the row model, kept between records: cleared, not reallocated.
#[derive(Debug, Default)]
pub(crate) struct RowBufs {
    labels: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    attrs: Vec<(AKey<'static>, Option<Cow<'static, str>>)>,
    parts: Vec<Cow<'static, str>>,
    flags: Vec<(&'static str, Cow<'static, str>)>,
}

/// Empties `v` and hands its allocation to a vector of another element type of the same size and
/// alignment (here: the same type with another lifetime). No unsafe: std's in-place `collect`
/// reuses the source buffer (checked by `recycle_keeps_the_allocation`).
pub(crate) fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

impl RowBufs {
    /// A new empty row that uses these buffers.
    fn row<'a>(&mut self, lossy: bool) -> Row<'a> {
        Row {
            lossy,
            labels: recycle(std::mem::take(&mut self.labels)),
            attrs: recycle(std::mem::take(&mut self.attrs)),
            parts: recycle(std::mem::take(&mut self.parts)),
            flags: recycle(std::mem::take(&mut self.flags)),
            ..Row::default()
        }
    }

    /// Takes the buffers back from a row that is done with.
    fn keep(&mut self, row: Row<'_>) {
        self.labels = recycle(row.labels);
        self.attrs = recycle(row.attrs);
        self.parts = recycle(row.parts);
        self.flags = recycle(row.flags);
    }
}

impl<'a> Row<'a> {
    pub fn key_for(&mut self, path: &[Cow<'a, str>]) -> AKey<'a> {
        match path {
            [one] => AKey::One(one.clone()),
            _ => {
                let start = self.parts.len() as u32;
                self.parts.extend(path.iter().cloned());
                AKey::Parts(start, path.len() as u32)
            }
        }
    }

    pub fn attr_path(&mut self, path: &[Cow<'a, str>], v: JVal<'a>) {
        let k = self.key_for(path);
        self.attrs.push((k, v.into_text()));
    }

    pub fn attr(&mut self, key: impl Into<Cow<'a, str>>, v: Option<Cow<'a, str>>) {
        self.attrs.push((AKey::One(key.into()), v));
    }

    /// Sets a string column; if it is already set (or the value is null), the field goes to attrs.
    pub fn col(&mut self, c: Col, path: &[Cow<'a, str>], v: JVal<'a>) {
        if self.cols[c as usize].is_none() && !matches!(v, JVal::Null | JVal::Raw(_)) {
            self.cols[c as usize] = v.into_text();
        } else {
            self.attr_path(path, v);
        }
    }

    pub fn set(&mut self, c: Col, v: impl Into<Cow<'a, str>>) {
        self.cols[c as usize] = Some(v.into());
    }

    pub fn get(&self, c: Col) -> Option<&str> {
        self.cols[c as usize].as_deref()
    }

    /// Offers a message candidate; the highest priority wins, the others go to attrs.
    pub fn message(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>) {
        self.message_nl(prio, path, v, false);
    }

    /// [`Row::message`] for a value that, when `nl`, stands for its text plus `"\n"`.
    pub(crate) fn message_nl(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>, nl: bool) {
        let JVal::Str(s) = v else {
            self.attr_path(path, v);
            return;
        };
        if self.message.is_some() && self.msg_prio >= prio {
            self.attr_path(path, JVal::Str(with_nl(s, nl)));
            return;
        }
        let key = self.key_for(path);
        if let (Some(old), Some(old_key)) = (self.message.take(), self.msg_key.take()) {
            self.attrs.push((old_key, Some(with_nl(old, self.msg_nl))));
        }
        self.message = Some(s);
        self.msg_nl = nl;
        self.msg_prio = prio;
        self.msg_key = Some(key);
    }

    /// Offers an event-time candidate (RFC 3339 text or epoch number). The highest priority
    /// wins; a candidate naming the same instant as the current `ts` is redundant and not kept
    /// (it only adds its nanoseconds when `ts` has none); any other loser goes to attrs.
    pub fn ts(&mut self, prio: u8, path: &[Cow<'a, str>], v: JVal<'a>) {
        let parsed = match &v {
            JVal::Str(s) => parse_any_ts(s),
            JVal::Num(n) => parse_epoch(n),
            _ => None,
        };
        let Some(t) = parsed else {
            self.attr_path(path, v);
            return;
        };
        if let Some(us) = self.ts_us {
            let cur = EventTime {
                us,
                sub_us_ns: self.ts_nanos,
            };
            if cur.same_instant(&t) {
                self.ts_nanos = self.ts_nanos.or(t.sub_us_ns);
                self.ts_prio = self.ts_prio.max(prio);
                return;
            }
            if self.ts_prio >= prio {
                self.attr_path(path, v);
                return;
            }
            if let Some((old_key, old)) = self.ts_key.take() {
                self.attrs.push((old_key, Some(old)));
            }
        }
        let key = self.key_for(path);
        self.ts_us = Some(t.us);
        self.ts_nanos = t.sub_us_ns;
        self.ts_prio = prio;
        if let Some(text) = v.into_text() {
            self.ts_key = Some((key, text));
        }
    }

    pub fn label(&mut self, key: Cow<'a, str>, v: JVal<'a>) {
        if let Some(t) = v.into_text() {
            self.labels.push((key, t));
        }
    }

    fn has_attr(&self, key: &str) -> bool {
        self.attrs
            .iter()
            .any(|(k, _)| matches!(k, AKey::One(k) if k == key))
    }

    fn write_key(&self, b: &mut StringBuilder, k: &AKey<'_>) {
        match k {
            AKey::One(s) => b.append_value(s),
            AKey::Parts(start, n) => {
                let parts = self
                    .parts
                    .get(*start as usize..(*start + *n) as usize)
                    .unwrap_or_default();
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        let _ = b.write_char('.');
                    }
                    let _ = b.write_str(p);
                }
                b.append_value("");
            }
        }
    }
}

/// `s`, plus `"\n"` when `nl`.
fn with_nl(s: Cow<'_, str>, nl: bool) -> Cow<'_, str> {
    if nl {
        let mut o = String::with_capacity(s.len() + 1);
        o.push_str(&s);
        o.push('\n');
        Cow::Owned(o)
    } else {
        s
    }
}

/// Removes a trailing line end and turns CRLF into LF.
pub(crate) fn clean_message(m: Cow<'_, str>) -> Cow<'_, str> {
    clean_message_nl(m, false)
}

/// [`clean_message`] of `m`, plus `"\n"` when `nl`.
fn clean_message_nl(m: Cow<'_, str>, nl: bool) -> Cow<'_, str> {
    let trimmed_len = {
        // with `nl`, the '\n' that would be stripped here is not in `m`
        let t = if nl {
            &m
        } else {
            m.strip_suffix('\n').unwrap_or(&m)
        };
        let t = t.strip_suffix('\r').unwrap_or(t);
        t.len()
    };
    let has_cr = memchr::memchr(b'\r', &m.as_bytes()[..trimmed_len]).is_some();
    match m {
        Cow::Borrowed(s) if !has_cr => Cow::Borrowed(&s[..trimmed_len]),
        Cow::Owned(mut s) if !has_cr => {
            s.truncate(trimmed_len);
            Cow::Owned(s)
        }
        m => Cow::Owned(m[..trimmed_len].replace("\r\n", "\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TableKind, table_schema};

    #[test]
    fn every_string_column_names_a_distinct_utf8_column_of_the_schema() {
        let schema = table_schema(TableKind::Container);
        let mut seen = std::collections::HashSet::new();
        for name in COL_NAMES {
            let f = schema.field_with_name(name).expect("in the schema");
            assert_eq!(f.data_type(), &arrow::datatypes::DataType::Utf8, "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
        // an empty batch has every column of the schema, in its order
        let b = ContainerBuilder::new().finish().expect("batch");
        assert_eq!(b.schema(), schema);
    }

    #[test]
    fn recycle_keeps_the_allocation() {
        let text = String::from("abc");
        let mut v: Vec<Cow<'_, str>> = Vec::with_capacity(32);
        v.push(Cow::Borrowed(text.as_str()));
        let ptr = v.as_ptr() as usize;
        let w: Vec<Cow<'static, str>> = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), 32);
        assert_eq!(w.as_ptr() as usize, ptr);
    }
}
