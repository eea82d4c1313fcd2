//! nginx / Apache combined (and common) access log lines into the `access` table.
//!
//! `<addr…> <ident> <user> [<time>] "<request>" <status> <bytes> ["<referer>" "<user agent>"] [extras…]`
//! where `<addr…>` may be an address chain (`10.0.0.2, 10.0.0.1, 127.0.0.1`, optionally quoted,
//! as written by `$http_x_forwarded_for $remote_addr` formats) and extras are nginx additions:
//! a quoted `$http_x_forwarded_for`, a bare `$request_time`, or `key=value` pairs (`rt=0.012`).
//! The payload is the line itself, or a JSON envelope whose `log`/`message` holds it.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, MapBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use chrono::DateTime;

use crate::container::{clean_message, finish_output, new_map_builder};
use crate::event_time::dt_hour;
use crate::json::{JVal, flatten_object, join_path};
use crate::kubelet_path::parse_k8s_log_path;
use crate::{
    DecodeOutput, Decoder, DecoderOptions, RawRecord, TableKind, decode_each, table_schema,
    with_text,
};

#[derive(Debug, Default, PartialEq)]
pub(crate) struct AccessLine<'a> {
    pub ts_us: i64,
    pub remote_addr: Option<&'a str>,
    pub remote_user: Option<&'a str>,
    pub method: Option<Cow<'a, str>>,
    pub path: Option<Cow<'a, str>>,
    pub protocol: Option<Cow<'a, str>>,
    pub request: Option<Cow<'a, str>>,
    pub status: Option<i32>,
    pub bytes: Option<i64>,
    pub referer: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    pub request_time: Option<f64>,
    pub xff: Option<String>,
    pub extras: Vec<(String, String)>,
}

/// Reads a `"…"` field at the start of `s` (after whitespace); `\"` and `\\` are unescaped.
fn quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let s = s.trim_start();
    let body = s.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => {
                escaped = true;
                i += 2;
                continue;
            }
            b'"' => {
                let raw = &body[..i];
                let v = if escaped {
                    Cow::Owned(raw.replace("\\\"", "\"").replace("\\\\", "\\"))
                } else {
                    Cow::Borrowed(raw)
                };
                return Some((v, &body[i + 1..]));
            }
            _ => i += 1,
        }
    }
    None
}

fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// `METHOD path HTTP/x` (or HTTP/0.9's `METHOD path`).
fn split_request(r: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut it = r.split(' ').filter(|p| !p.is_empty());
    let m = it.next()?;
    let p = it.next()?;
    let proto = it.next();
    if it.next().is_some() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    match proto {
        Some(pr) if !pr.starts_with("HTTP/") => None,
        pr => Some((m, p, pr)),
    }
}

fn dash<'a>(v: Cow<'a, str>) -> Option<Cow<'a, str>> {
    if v.is_empty() || v == "-" {
        None
    } else {
        Some(v)
    }
}

const NOT: &str = "not an access log line";

pub(crate) fn parse_access_line(line: &str) -> Result<AccessLine<'_>, String> {
    let (lb, rb, ts_us) = find_time(line)?;
    let mut out = AccessLine {
        ts_us,
        ..AccessLine::default()
    };
    out.read_client(line[..lb].trim_end())?;
    let after = &line[rb + 1..];
    let (request, after) = quoted(after).ok_or_else(|| format!("{NOT}: no quoted request"))?;
    out.set_request(request);
    let after = out.read_status_and_bytes(after)?;
    let after = out.read_referer_and_agent(after);
    out.read_extras(after);
    Ok(out)
}

/// The timestamp: the first `[…]` that parses as `%d/%b/%Y:%H:%M:%S %z`, with the positions of
/// its brackets.
fn find_time(line: &str) -> Result<(usize, usize, i64), String> {
    let mut search = 0;
    loop {
        let lb = line[search..]
            .find('[')
            .map(|i| i + search)
            .ok_or_else(|| format!("{NOT}: no [time]"))?;
        let rb = line[lb..]
            .find(']')
            .map(|i| i + lb)
            .ok_or_else(|| format!("{NOT}: no [time]"))?;
        if let Ok(t) = DateTime::parse_from_str(&line[lb + 1..rb], "%d/%b/%Y:%H:%M:%S %z") {
            return Ok((lb, rb, t.timestamp_micros()));
        }
        search = lb + 1;
    }
}

impl<'a> AccessLine<'a> {
    /// `<addr…> <ident> <user>` before the time: the last address is `remote_addr`, earlier
    /// ones are the forwarded-for chain.
    fn read_client(&mut self, prefix: &'a str) -> Result<(), String> {
        let (rest, user) = prefix
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("{NOT}: no user field"))?;
        let (addrs, _ident) = rest
            .trim_end()
            .rsplit_once(char::is_whitespace)
            .map(|(a, i)| (a, Some(i)))
            .unwrap_or((rest, None));
        let list: Vec<&str> = addrs
            .split([',', ' ', '"'])
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "-")
            .collect();
        let Some((&last, earlier)) = list.split_last() else {
            return Err(format!("{NOT}: no remote address"));
        };
        self.remote_addr = Some(last);
        if !earlier.is_empty() {
            self.xff = Some(earlier.join(", "));
        }
        self.remote_user = (user != "-").then_some(user);
        Ok(())
    }

    /// The request line: method, path and protocol, or the whole text in `request` when it is
    /// malformed (nothing when it is empty).
    fn set_request(&mut self, request: Cow<'a, str>) {
        if request.is_empty() {
            return;
        }
        match request {
            Cow::Borrowed(r) => match split_request(r) {
                Some((m, p, pr)) => {
                    self.method = Some(Cow::Borrowed(m));
                    self.path = Some(Cow::Borrowed(p));
                    self.protocol = pr.map(Cow::Borrowed);
                }
                None => self.request = Some(Cow::Borrowed(r)),
            },
            Cow::Owned(r) => match split_request(&r) {
                Some((m, p, pr)) => {
                    self.method = Some(Cow::Owned(m.to_owned()));
                    self.path = Some(Cow::Owned(p.to_owned()));
                    self.protocol = pr.map(|x| Cow::Owned(x.to_owned()));
                }
                None => self.request = Some(Cow::Owned(r.clone())),
            },
        }
    }

    /// The status and byte count after the request; returns the rest of the line.
    fn read_status_and_bytes(&mut self, after: &'a str) -> Result<&'a str, String> {
        let (status, after) = token(after).ok_or_else(|| format!("{NOT}: no status"))?;
        self.status = match status {
            "-" => None,
            s => Some(
                s.parse::<i32>()
                    .map_err(|_| format!("{NOT}: invalid status `{s}`"))?,
            ),
        };
        let (bytes, after) = token(after).ok_or_else(|| format!("{NOT}: no byte count"))?;
        self.bytes = match bytes {
            "-" => Some(0),
            b => Some(
                b.parse::<i64>()
                    .map_err(|_| format!("{NOT}: invalid byte count `{b}`"))?,
            ),
        };
        Ok(after)
    }

    /// The quoted referer and user agent of the combined format, when present; returns the
    /// rest of the line.
    fn read_referer_and_agent(&mut self, mut after: &'a str) -> &'a str {
        if let Some((r, a)) = quoted(after) {
            self.referer = dash(r);
            after = a;
            if let Some((ua, a)) = quoted(after) {
                self.user_agent = dash(ua);
                after = a;
            }
        }
        after
    }

    /// nginx extras after the combined format: the first quoted field is `$http_x_forwarded_for`,
    /// a bare or `rt=`/`request_time=`/`rqt=` number the request time, other `key=value` pairs
    /// and fields go to `extras` (`extra.<n>` when unnamed).
    fn read_extras(&mut self, mut after: &'a str) {
        let mut tail_xff_seen = false;
        let mut n = 0;
        loop {
            let t = after.trim_start();
            if t.is_empty() {
                break;
            }
            if t.starts_with('"') {
                let Some((v, a)) = quoted(t) else {
                    self.extras.push((format!("extra.{n}"), t.to_owned()));
                    break;
                };
                after = a;
                if !tail_xff_seen {
                    tail_xff_seen = true;
                    if v != "-" && !v.is_empty() {
                        self.xff = Some(v.into_owned());
                    }
                } else {
                    self.extras.push((format!("extra.{n}"), v.into_owned()));
                }
            } else if let Some((tok, a)) = token(t) {
                after = a;
                self.read_extra_token(tok, n);
            } else {
                break;
            }
            n += 1;
        }
    }

    /// One unquoted extra field (the `n`th).
    fn read_extra_token(&mut self, tok: &str, n: usize) {
        match tok.split_once('=') {
            Some(("rt" | "request_time" | "rqt", v))
                if self.request_time.is_none() && v.parse::<f64>().is_ok() =>
            {
                self.request_time = v.parse().ok();
            }
            Some((k, v)) => self
                .extras
                .push((k.to_owned(), v.trim_matches('"').to_owned())),
            None => match tok.parse::<f64>() {
                Ok(f) if self.request_time.is_none() && f.is_finite() => {
                    self.request_time = Some(f)
                }
                _ => self.extras.push((format!("extra.{n}"), tok.to_owned())),
            },
        }
    }
}

pub(crate) struct AccessDecoder {
    opts: DecoderOptions,
    ts: TimestampMicrosecondBuilder,
    ingest_ts: TimestampMicrosecondBuilder,
    s: Vec<StringBuilder>,
    status: Int32Builder,
    bytes: Int64Builder,
    request_time: Float64Builder,
    attrs: MapBuilder<StringBuilder, StringBuilder>,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    dt: Date32Builder,
    hour: Int32Builder,
}

// string columns
const CLUSTER: usize = 0;
const NAMESPACE: usize = 1;
const POD: usize = 2;
const CONTAINER: usize = 3;
const REMOTE: usize = 4;
const USER: usize = 5;
const METHOD: usize = 6;
const PATH: usize = 7;
const PROTO: usize = 8;
const REFERER: usize = 9;
const UA: usize = 10;
const XFF: usize = 11;
const REQUEST: usize = 12;
const NS: usize = 13;

#[derive(Default)]
struct Envelope {
    line: Option<String>,
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    cluster: Option<String>,
    path: Option<String>,
    attrs: Vec<(String, Option<String>)>,
    lossy: bool,
}

fn parse_envelope(text: &str) -> Result<Envelope, String> {
    let mut e = Envelope::default();
    let lossy = flatten_object(text, &mut |p, v| {
        let k = join_path(p);
        let slot = match &*k {
            "log" | "message" | "content" if e.line.is_none() => &mut e.line,
            "kubernetes.namespace_name"
            | "kubernetes.pod_namespace"
            | "kubernetes.namespace"
            | "_namespace_" => &mut e.namespace,
            "kubernetes.pod_name" | "kubernetes.pod.name" | "_pod_name_" => &mut e.pod,
            "kubernetes.container_name" | "kubernetes.container.name" | "_container_name_" => {
                &mut e.container
            }
            "orchestrator.cluster.name" | "cluster" | "kubernetes.cluster_name" => &mut e.cluster,
            "file" | "path" | "filename" | "log.file.path" if e.path.is_none() => {
                e.path = v.as_str().map(str::to_owned);
                e.attrs
                    .push((k.into_owned(), v.into_text().map(Cow::into_owned)));
                return;
            }
            _ => {
                e.attrs
                    .push((k.into_owned(), v.into_text().map(Cow::into_owned)));
                return;
            }
        };
        match v {
            JVal::Str(s) if slot.is_none() => *slot = Some(s.into_owned()),
            v => e
                .attrs
                .push((k.into_owned(), v.into_text().map(Cow::into_owned))),
        }
    })
    .map_err(|e| e.to_string())?;
    e.lossy = lossy;
    if let Some(p) = &e.path
        && let Some(m) = parse_k8s_log_path(p)
    {
        e.namespace = e.namespace.take().or(m.namespace.map(str::to_owned));
        e.pod = e.pod.take().or(m.pod.map(str::to_owned));
        e.container = e.container.take().or(m.container.map(str::to_owned));
    }
    Ok(e)
}

impl AccessDecoder {
    pub fn new(opts: DecoderOptions) -> Self {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        AccessDecoder {
            opts,
            ts: ts(),
            ingest_ts: ts(),
            s: (0..NS).map(|_| StringBuilder::new()).collect(),
            status: Int32Builder::new(),
            bytes: Int64Builder::new(),
            request_time: Float64Builder::new(),
            attrs: new_map_builder(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            dt: Date32Builder::new(),
            hour: Int32Builder::new(),
        }
    }

    fn decode_one(
        &mut self,
        text: &str,
        lossy: bool,
        rec: &RawRecord<'_>,
        ingest: i64,
    ) -> Result<(), String> {
        let first = text.trim_start().as_bytes().first().copied();
        let env = if first == Some(b'{') {
            let e = parse_envelope(text)?;
            if e.line.is_none() {
                return Err("JSON envelope has no `log`/`message` string".into());
            }
            Some(e)
        } else {
            None
        };
        let line_src: &str = match &env {
            Some(Envelope { line: Some(l), .. }) => l,
            _ => text,
        };
        let line = clean_message(Cow::Borrowed(line_src));
        let a = parse_access_line(&line)?;
        let mut cols: [Option<&str>; NS] = [None; NS];
        let env_ref = env.as_ref();
        cols[CLUSTER] = env_ref
            .and_then(|e| e.cluster.as_deref())
            .or(self.opts.cluster.as_deref());
        cols[NAMESPACE] = env_ref.and_then(|e| e.namespace.as_deref());
        cols[POD] = env_ref.and_then(|e| e.pod.as_deref());
        cols[CONTAINER] = env_ref.and_then(|e| e.container.as_deref());
        cols[REMOTE] = a.remote_addr;
        cols[USER] = a.remote_user;
        cols[METHOD] = a.method.as_deref();
        cols[PATH] = a.path.as_deref();
        cols[PROTO] = a.protocol.as_deref();
        cols[REFERER] = a.referer.as_deref();
        cols[UA] = a.user_agent.as_deref();
        cols[XFF] = a.xff.as_deref();
        cols[REQUEST] = a.request.as_deref();
        for (b, v) in self.s.iter_mut().zip(cols) {
            b.append_option(v);
        }
        self.status.append_option(a.status);
        self.bytes.append_option(a.bytes);
        self.request_time.append_option(a.request_time);
        for (k, v) in &a.extras {
            self.attrs.keys().append_value(k);
            self.attrs.values().append_value(v);
        }
        if let Some(e) = &env {
            for (k, v) in &e.attrs {
                self.attrs.keys().append_value(k);
                self.attrs.values().append_option(v.as_deref());
            }
        }
        if lossy || env.as_ref().is_some_and(|e| e.lossy) {
            self.attrs.keys().append_value("loglake.invalid_utf8");
            self.attrs.values().append_value("true");
        }
        let _ = self.attrs.append(true);
        self.ts.append_value(a.ts_us);
        self.ingest_ts.append_value(ingest);
        self.topic.append_value(rec.topic);
        self.partition.append_value(rec.partition);
        self.offset.append_value(rec.offset);
        let (dt, hour) = dt_hour(a.ts_us);
        self.dt.append_value(dt);
        self.hour.append_value(hour);
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut s: Vec<ArrayRef> = self
            .s
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let mut take =
            |i: usize| std::mem::replace(&mut s[i], Arc::new(StringBuilder::new().finish()));
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.ingest_ts.finish()),
            take(CLUSTER),
            take(NAMESPACE),
            take(POD),
            take(CONTAINER),
            take(REMOTE),
            take(USER),
            take(METHOD),
            take(PATH),
            take(PROTO),
            Arc::new(self.status.finish()),
            Arc::new(self.bytes.finish()),
            take(REFERER),
            take(UA),
            Arc::new(self.request_time.finish()),
            take(XFF),
            take(REQUEST),
            Arc::new(self.attrs.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.dt.finish()),
            Arc::new(self.hour.finish()),
        ];
        RecordBatch::try_new(table_schema(TableKind::Access), arrays)
    }
}

impl Decoder for AccessDecoder {
    fn name(&self) -> &'static str {
        "access"
    }

    fn schema(&self) -> SchemaRef {
        table_schema(TableKind::Access)
    }

    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput {
        let ingest = crate::now_us();
        let errors = decode_each(records, |rec, payload| {
            with_text(payload, |t, lossy| self.decode_one(t, lossy, rec, ingest))
        });
        finish_output(self.finish(), self.schema(), errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_common_without_referer() {
        let a = parse_access_line(r#"199.72.81.55 - - [01/Jul/1995:00:00:01 -0400] "GET /history/apollo/ HTTP/1.0" 200 6245"#)
            .unwrap();
        assert_eq!(a.remote_addr, Some("199.72.81.55"));
        assert_eq!(a.path.as_deref(), Some("/history/apollo/"));
        assert_eq!(
            (a.status, a.bytes, a.referer),
            (Some(200), Some(6245), None)
        );
        assert_eq!(a.ts_us, 804_571_201_000_000);
    }

    #[test]
    fn extras_and_escapes() {
        let a = parse_access_line(
            r#"1.2.3.4 - bob [10/Oct/2000:13:55:36 +0000] "GET /a\"b HTTP/1.1" 500 - "-" "curl" "9.9.9.9" 0.123 upstream=x"#,
        )
        .unwrap();
        assert_eq!(a.remote_user, Some("bob"));
        assert_eq!(a.path.as_deref(), Some("/a\"b"));
        assert_eq!(a.bytes, Some(0));
        assert_eq!(a.xff.as_deref(), Some("9.9.9.9"));
        assert_eq!(a.request_time, Some(0.123));
        assert_eq!(a.extras, vec![("upstream".to_owned(), "x".to_owned())]);
        assert!(parse_access_line("hello world").is_err());
        assert!(parse_access_line("a b c [x] \"GET / HTTP/1.1\" 200 1").is_err());
    }
}
