//! Raw node log lines: CRI (`<RFC3339Nano> <stream> <P|F> <msg>`) and docker json-file
//! (`{"log":…,"stream":…,"time":…}`), with partial-line reassembly keyed by
//! (topic, partition, source, stream).
//!
//! The source is the kubelet log path when the record carries one (a JSON envelope's
//! `file`/`path`/`filename` key, a header from [`DecoderOptions::path_headers`], or a Kafka key
//! ending in `.log`), else the Kafka key, else empty.

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::datatypes::SchemaRef;

use crate::container::{Col, ContainerBuilder, Row, finish_output};
use crate::event_time::{EventTime, parse_rfc3339};
use crate::json::{JVal, flatten_object, join_path};
use crate::{
    DecodeOutput, Decoder, DecoderOptions, RawRecord, TableKind, decode_each, table_schema,
    with_text,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFormat {
    Cri,
    Docker,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PKey {
    topic: String,
    partition: i32,
    source: String,
    stream: String,
}

#[derive(Debug)]
struct Partial {
    ts: EventTime,
    buf: Vec<u8>,
    offsets: Vec<i64>,
    path: Option<String>,
    kafka_ts_ms: Option<i64>,
    attrs: Vec<(String, Option<String>)>,
}

/// One parsed line (owned: lines are short and the envelope may be lossy-decoded).
struct Line {
    ts: EventTime,
    stream: String,
    partial: bool,
    msg: Vec<u8>,
    path: Option<String>,
    attrs: Vec<(String, Option<String>)>,
    lossy: bool,
}

pub(crate) struct LineDecoder {
    fmt: LineFormat,
    opts: DecoderOptions,
    builder: ContainerBuilder,
    partials: HashMap<PKey, Partial>,
}

/// A whole line ready to become a row: a final line, joined to its fragments when it had any,
/// or a pending line emitted at its size limit (flagged partial).
struct Whole<'a> {
    ts: EventTime,
    stream: &'a str,
    msg: Vec<u8>,
    path: Option<&'a str>,
    attrs: &'a [(String, Option<String>)],
    /// Offsets of the fragments before the last one (recorded as `loglake.fragment_offsets`).
    earlier: &'a [i64],
    partial_flag: bool,
    lossy: bool,
}

fn is_path_key(k: &str) -> bool {
    matches!(
        k,
        "file" | "path" | "filename" | "filepath" | "log.file.path" | "log_path"
    )
}

/// Parses a CRI line (bytes: the message may be invalid UTF-8).
fn parse_cri(line: &[u8]) -> Result<(EventTime, &str, bool, &[u8]), String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut it = line.splitn(4, |&b| b == b' ');
    let ts = it.next().unwrap_or_default();
    let stream = it.next().ok_or("not a CRI line: missing stream")?;
    let tag = it.next().ok_or("not a CRI line: missing P/F tag")?;
    let msg = it.next().unwrap_or_default();
    let ts = std::str::from_utf8(ts)
        .ok()
        .and_then(parse_rfc3339)
        .ok_or("not a CRI line: invalid timestamp")?;
    let stream = match stream {
        b"stdout" => "stdout",
        b"stderr" => "stderr",
        _ => return Err("not a CRI line: stream must be stdout or stderr".into()),
    };
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err("not a CRI line: tag must be P or F".into()),
    };
    Ok((ts, stream, partial, msg))
}

fn parse_line(fmt: LineFormat, payload: &[u8], docker_split_min: usize) -> Result<Line, String> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match (fmt, first) {
        (LineFormat::Cri, Some(b'{')) => parse_cri_envelope(payload),
        (LineFormat::Cri, _) => {
            let (ts, stream, partial, msg) = parse_cri(payload)?;
            Ok(Line {
                ts,
                stream: stream.to_owned(),
                partial,
                msg: msg.to_vec(),
                path: None,
                attrs: Vec::new(),
                lossy: false,
            })
        }
        (LineFormat::Docker, _) => parse_docker(payload, docker_split_min),
    }
}

/// A collector envelope carrying the CRI line in `log`/`message`.
fn parse_cri_envelope(payload: &[u8]) -> Result<Line, String> {
    with_text(payload, |text, lossy| {
        let mut raw: Option<String> = None;
        let mut path = None;
        let mut attrs = Vec::new();
        let l2 = flatten_object(text, &mut |p, v| {
            let k = join_path(p);
            match (&*k, v) {
                ("log" | "message", JVal::Str(s)) if raw.is_none() => raw = Some(s.into_owned()),
                (pk, JVal::Str(s)) if is_path_key(pk) && path.is_none() => {
                    path = Some(s.clone().into_owned());
                    attrs.push((k.into_owned(), Some(s.into_owned())));
                }
                (_, v) => attrs.push((k.into_owned(), v.into_text().map(Cow::into_owned))),
            }
        })
        .map_err(|e| e.to_string())?;
        let raw = raw.ok_or("CRI envelope has no `log`/`message` string")?;
        let (ts, stream, partial, msg) = parse_cri(raw.as_bytes())?;
        Ok(Line {
            ts,
            stream: stream.to_owned(),
            partial,
            msg: msg.to_vec(),
            path,
            attrs,
            lossy: lossy || l2,
        })
    })
}

/// A docker json-file record; a `log` without its final `"\n"` of at least `docker_split_min`
/// bytes is a fragment of a longer line.
fn parse_docker(payload: &[u8], docker_split_min: usize) -> Result<Line, String> {
    with_text(payload, |text, lossy| {
        let mut log: Option<Result<String, ()>> = None;
        let mut time: Option<Option<EventTime>> = None;
        let mut stream: Option<String> = None;
        let mut path = None;
        let mut attrs = Vec::new();
        let l2 = flatten_object(text, &mut |p, v| {
            let k = join_path(p);
            match (&*k, v) {
                ("log", v) if log.is_none() => {
                    log = Some(match v {
                        JVal::Str(s) => Ok(s.into_owned()),
                        _ => Err(()),
                    })
                }
                ("time", v) if time.is_none() => time = Some(v.as_str().and_then(parse_rfc3339)),
                ("stream", JVal::Str(s)) if stream.is_none() => stream = Some(s.into_owned()),
                (pk, JVal::Str(s)) if is_path_key(pk) && path.is_none() => {
                    path = Some(s.clone().into_owned());
                    attrs.push((k.into_owned(), Some(s.into_owned())));
                }
                (_, v) => attrs.push((k.into_owned(), v.into_text().map(Cow::into_owned))),
            }
        })
        .map_err(|e| e.to_string())?;
        let log = match log {
            Some(Ok(l)) => l,
            Some(Err(())) => return Err("docker record: `log` is not a string".into()),
            None => return Err("docker record: no `log` field".into()),
        };
        let ts = match time {
            Some(Some(t)) => t,
            Some(None) => {
                return Err("docker record: `time` is not an RFC 3339 timestamp".into());
            }
            None => return Err("docker record: no `time` field".into()),
        };
        let partial = !log.ends_with('\n') && log.len() >= docker_split_min;
        Ok(Line {
            ts,
            stream: stream.unwrap_or_default(),
            partial,
            msg: log.into_bytes(),
            path,
            attrs,
            lossy: lossy || l2,
        })
    })
}

/// The reassembly key of a line: its topic, partition, source (the kubelet path, else the Kafka
/// key, else empty) and stream.
fn reassembly_key(rec: &RawRecord<'_>, path: Option<&str>, stream: &str) -> PKey {
    let source = match (path, rec.key) {
        (Some(p), _) => p.to_owned(),
        (None, Some(k)) => String::from_utf8_lossy(k).into_owned(),
        (None, None) => String::new(),
    };
    PKey {
        topic: rec.topic.to_owned(),
        partition: rec.partition,
        source,
        stream: stream.to_owned(),
    }
}

impl LineDecoder {
    pub fn new(fmt: LineFormat, opts: DecoderOptions) -> Self {
        LineDecoder {
            fmt,
            opts,
            builder: ContainerBuilder::new(),
            partials: HashMap::new(),
        }
    }

    fn path_of(&self, rec: &RawRecord<'_>) -> Option<String> {
        for h in &self.opts.path_headers {
            if let Some(v) = rec.header(h) {
                return Some(String::from_utf8_lossy(v).into_owned());
            }
        }
        match rec.key {
            Some(k) if k.ends_with(b".log") => Some(String::from_utf8_lossy(k).into_owned()),
            _ => None,
        }
    }

    /// Appends one whole line as a row at `rec`'s offset.
    fn emit(&mut self, rec: &RawRecord<'_>, line: Whole<'_>, ingest: i64) {
        let Whole {
            ts,
            stream,
            msg,
            path,
            attrs,
            earlier,
            partial_flag,
            lossy,
        } = line;
        let (text, bad) = match String::from_utf8(msg) {
            Ok(s) => (s, false),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
        };
        let mut row = Row {
            lossy: lossy || bad,
            ..Row::default()
        };
        row.ts_us = Some(ts.us);
        row.ts_nanos = ts.sub_us_ns;
        if !stream.is_empty() {
            row.set(Col::Stream, stream);
        }
        row.message = Some(Cow::Borrowed(text.as_str()));
        row.path = path.map(Cow::Borrowed);
        for (k, v) in attrs {
            row.attr(k.as_str(), v.as_deref().map(Cow::Borrowed));
        }
        if !earlier.is_empty() {
            let list = earlier
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            row.flags
                .push(("loglake.fragment_offsets", Cow::Owned(list)));
        }
        if partial_flag {
            row.flags.push(("loglake.partial", Cow::Borrowed("true")));
        }
        self.builder.append(row, rec, ingest, &self.opts);
    }

    /// Adds a fragment (`P` line) to its pending line; a pending line grown over
    /// [`DecoderOptions::max_partial_bytes`] is emitted, flagged partial.
    fn add_fragment(
        &mut self,
        key: PKey,
        line: Line,
        path: Option<String>,
        rec: &RawRecord<'_>,
        ingest: i64,
    ) {
        let max = self.opts.max_partial_bytes;
        let p = self.partials.entry(key.clone()).or_insert_with(|| Partial {
            ts: line.ts,
            buf: Vec::new(),
            offsets: Vec::new(),
            path,
            kafka_ts_ms: rec.timestamp_ms,
            attrs: Vec::new(),
        });
        p.buf.extend_from_slice(&line.msg);
        p.offsets.push(rec.offset);
        p.attrs = line.attrs;
        if p.buf.len() > max
            && let Some(p) = self.partials.remove(&key)
        {
            self.emit_partial(&key, p, ingest);
        }
    }

    /// Emits a final line, joined to its pending fragments when there are any.
    fn complete_line(
        &mut self,
        key: &PKey,
        line: Line,
        path: Option<&str>,
        rec: &RawRecord<'_>,
        ingest: i64,
    ) {
        match self.partials.remove(key) {
            Some(mut p) => {
                p.buf.extend_from_slice(&line.msg);
                let whole = Whole {
                    ts: p.ts,
                    stream: &line.stream,
                    msg: p.buf,
                    path,
                    attrs: &line.attrs,
                    earlier: &p.offsets,
                    partial_flag: false,
                    lossy: line.lossy,
                };
                self.emit(rec, whole, ingest);
            }
            None => {
                let whole = Whole {
                    ts: line.ts,
                    stream: &line.stream,
                    msg: line.msg,
                    path,
                    attrs: &line.attrs,
                    earlier: &[],
                    partial_flag: false,
                    lossy: line.lossy,
                };
                self.emit(rec, whole, ingest);
            }
        }
    }

    fn emit_partial(&mut self, key: &PKey, p: Partial, ingest: i64) {
        let Some((&last, earlier)) = p.offsets.split_last() else {
            return;
        };
        let rec = RawRecord {
            payload: None,
            key: None,
            headers: &[],
            timestamp_ms: p.kafka_ts_ms,
            topic: &key.topic,
            partition: key.partition,
            offset: last,
        };
        let whole = Whole {
            ts: p.ts,
            stream: &key.stream,
            msg: p.buf,
            path: p.path.as_deref(),
            attrs: &p.attrs,
            earlier,
            partial_flag: true,
            lossy: false,
        };
        self.emit(&rec, whole, ingest);
    }
}

impl Decoder for LineDecoder {
    fn name(&self) -> &'static str {
        match self.fmt {
            LineFormat::Cri => "cri",
            LineFormat::Docker => "docker",
        }
    }

    fn schema(&self) -> SchemaRef {
        table_schema(TableKind::Container)
    }

    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput {
        let ingest = crate::now_us();
        let errors = decode_each(records, |rec, payload| {
            let line = parse_line(self.fmt, payload, self.opts.docker_split_min_bytes)?;
            let path = line.path.clone().or_else(|| self.path_of(rec));
            let key = reassembly_key(rec, path.as_deref(), &line.stream);
            if line.partial {
                self.add_fragment(key, line, path, rec, ingest);
            } else {
                self.complete_line(&key, line, path.as_deref(), rec, ingest);
            }
            Ok(())
        });
        finish_output(self.builder.finish(), self.schema(), errors)
    }

    fn pending_min_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partials
            .iter()
            .filter(|(k, _)| k.topic == topic && k.partition == partition)
            .filter_map(|(_, p)| p.offsets.first().copied())
            .min()
    }

    fn flush(&mut self) -> DecodeOutput {
        let ingest = crate::now_us();
        let mut all: Vec<(PKey, Partial)> = self.partials.drain().collect();
        all.sort_by_key(|(k, p)| (k.topic.clone(), k.partition, p.offsets.first().copied()));
        for (k, p) in all {
            self.emit_partial(&k, p, ingest);
        }
        finish_output(self.builder.finish(), self.schema(), Vec::new())
    }
}
