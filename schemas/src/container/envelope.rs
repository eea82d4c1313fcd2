//! The JSON envelope decoders of the `container` table: one [`JsonDecoder`] per collector
//! ([`JsonFlavor`]), parsing each record's envelope with that collector's field mapping.

use std::borrow::Cow;

use arrow::datatypes::SchemaRef;

use super::collectors::{
    MapFn, NlFn, fluentbit_nl, map_filebeat, map_fluentbit, map_ilogtail, map_vector, no_nl,
};
use super::{ContainerBuilder, Row, finish_output, recycle};
use crate::json::{JVal, Parser};
use crate::{
    DecodeOutput, Decoder, DecoderOptions, RawRecord, TableKind, decode_each, table_schema,
    with_text,
};

/// Which collector wrote the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonFlavor {
    FluentBit,
    Filebeat,
    Vector,
    Ilogtail,
}

pub(crate) struct JsonDecoder {
    flavor: JsonFlavor,
    opts: DecoderOptions,
    builder: ContainerBuilder,
    /// The parser's key path, reused between records.
    path: Vec<Cow<'static, str>>,
}

impl JsonDecoder {
    pub fn new(flavor: JsonFlavor, opts: DecoderOptions) -> Self {
        JsonDecoder {
            flavor,
            opts,
            builder: ContainerBuilder::new(),
            path: Vec::new(),
        }
    }
}

/// Parses one envelope into `row`. Accepts a JSON object, or Fluent Bit's `[ts, {record}]` /
/// `[[ts, {meta}], {record}]` forms.
fn parse_envelope<'a>(
    text: &'a str,
    row: &mut Row<'a>,
    path: &mut Vec<Cow<'a, str>>,
    map: MapFn,
    nl_ok: NlFn,
) -> Result<(), String> {
    let mut p = Parser::new(text);
    p.ws();
    match p.peek() {
        Some(b'{') => {
            p.object_nl(path, &nl_ok, &mut |path, v, nl| map(row, path, v, nl))
                .map_err(|e| e.to_string())?;
        }
        Some(b'[') => {
            p.expect(b'[').map_err(|e| e.to_string())?;
            p.ws();
            let ts = if p.peek() == Some(b'[') {
                p.expect(b'[').map_err(|e| e.to_string())?;
                let ts = p.value().map_err(|e| e.to_string())?;
                p.expect(b',').map_err(|e| e.to_string())?;
                let meta = p.raw_value().map_err(|e| e.to_string())?;
                p.expect(b']').map_err(|e| e.to_string())?;
                if meta.trim() != "{}" {
                    row.attr("fluentbit.metadata", Some(Cow::Borrowed(meta)));
                }
                ts
            } else {
                p.value().map_err(|e| e.to_string())?
            };
            if !matches!(ts, JVal::Num(_)) {
                return Err("expected [timestamp, {record}]".into());
            }
            row.ts(4, &[Cow::Borrowed("fluentbit.time")], ts);
            p.expect(b',').map_err(|e| e.to_string())?;
            p.ws();
            p.object_nl(path, &nl_ok, &mut |path, v, nl| map(row, path, v, nl))
                .map_err(|e| e.to_string())?;
            p.expect(b']').map_err(|e| e.to_string())?;
        }
        _ => return Err("payload is not a JSON object".into()),
    }
    p.end().map_err(|e| e.to_string())?;
    if p.lossy {
        row.lossy = true;
    }
    Ok(())
}

impl Decoder for JsonDecoder {
    fn name(&self) -> &'static str {
        match self.flavor {
            JsonFlavor::FluentBit => "fluentbit",
            JsonFlavor::Filebeat => "filebeat",
            JsonFlavor::Vector => "vector",
            JsonFlavor::Ilogtail => "ilogtail",
        }
    }

    fn schema(&self) -> SchemaRef {
        table_schema(TableKind::Container)
    }

    fn decode(&mut self, records: &[RawRecord<'_>]) -> DecodeOutput {
        let ingest = crate::now_us();
        let (map, nl_ok): (MapFn, NlFn) = match self.flavor {
            JsonFlavor::FluentBit => (map_fluentbit, fluentbit_nl),
            JsonFlavor::Filebeat => (map_filebeat, no_nl),
            JsonFlavor::Vector => (map_vector, no_nl),
            JsonFlavor::Ilogtail => (map_ilogtail, no_nl),
        };
        let errors = decode_each(records, |rec, payload| {
            let b = &mut self.builder;
            let opts = &self.opts;
            let path_buf = &mut self.path;
            with_text(payload, |text, lossy| {
                let mut row = b.new_row(lossy);
                let mut path = recycle(std::mem::take(path_buf));
                let res = parse_envelope(text, &mut row, &mut path, map, nl_ok);
                *path_buf = recycle(path);
                match res {
                    Ok(()) => {
                        b.append(row, rec, ingest, opts);
                        Ok(())
                    }
                    Err(e) => {
                        b.discard_row(row);
                        Err(e)
                    }
                }
            })
        });
        finish_output(self.builder.finish(), self.schema(), errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder_for;
    use arrow::array::{Array, AsArray};

    type Attrs = Vec<(String, Option<String>)>;
    /// (message, level, attrs) of one row.
    type Decoded = (Option<String>, Option<String>, Attrs);

    /// (message, level, attrs) of each row, and the error reasons.
    fn decode_fb(payloads: &[&str]) -> (Vec<Decoded>, Vec<String>) {
        // with the message's JSON fields copied into attrs, so the tests see what was parsed
        let opts = DecoderOptions {
            json_message_attrs: true,
            ..DecoderOptions::default()
        };
        let mut d = decoder_for("fluentbit", &opts).expect("decoder");
        let recs: Vec<RawRecord<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord {
                timestamp_ms: Some(1000),
                ..RawRecord::new("t", 0, i as i64, p.as_bytes())
            })
            .collect();
        let out = d.decode(&recs);
        let b = &out.batch;
        let col = |name: &str| {
            b.column_by_name(name)
                .expect("column")
                .as_string::<i32>()
                .clone()
        };
        let (msg, lvl) = (col("message"), col("level"));
        let attrs = b.column_by_name("attrs").expect("attrs").as_map().clone();
        let rows = (0..b.num_rows())
            .map(|r| {
                let e = attrs.value(r);
                let (k, v) = (
                    e.column(0).as_string::<i32>(),
                    e.column(1).as_string::<i32>(),
                );
                // loglake's own flags (`loglake.ts_source`) left out
                let kv = (0..e.len())
                    .filter(|&i| !k.value(i).starts_with("loglake."))
                    .map(|i| {
                        (
                            k.value(i).to_owned(),
                            v.is_valid(i).then(|| v.value(i).to_owned()),
                        )
                    })
                    .collect();
                let s =
                    |a: &arrow::array::StringArray| a.is_valid(r).then(|| a.value(r).to_owned());
                (s(&msg), s(&lvl), kv)
            })
            .collect();
        (rows, out.errors.into_iter().map(|e| e.reason).collect())
    }

    fn attr<'x>(a: &'x Attrs, k: &str) -> Option<&'x Option<String>> {
        a.iter().find(|(x, _)| x == k).map(|(_, v)| v)
    }

    #[test]
    fn log_ending_in_an_escaped_newline_decodes_as_before() {
        let (rows, errors) = decode_fb(&[
            r#"{"log":"hello\n"}"#,
            r#"{"log":"a\r\n"}"#,
            r#"{"log":"x\ry\r\n"}"#,
            r#"{"log":"\n"}"#,
            r#"{"log":"a\nb\n"}"#,
            r#"{"log":"plain"}"#,
            r#"{"log":"first\n","log":"second\n"}"#,
            r#"{"msg":"low\n","message":"mid\n","log":"high\n","stream":"x\n"}"#,
            r#"{"log":"unterminated\n"#,
            r#"{"log":"x\n" }"#,
            r#"{"log":"bad escape\q\n"}"#,
        ]);
        let msgs: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
        assert_eq!(
            msgs,
            [
                Some("hello"),
                Some("a"),
                Some("x\ry"),
                Some(""),
                Some("a\nb"),
                Some("plain"),
                Some("first"),
                Some("high"),
                Some("x"),
            ]
        );
        // a `log` that loses to another message candidate keeps its line end in attrs
        assert_eq!(attr(&rows[6].2, "log"), Some(&Some("second\n".to_owned())));
        assert_eq!(attr(&rows[7].2, "msg"), Some(&Some("low\n".to_owned())));
        assert_eq!(attr(&rows[7].2, "message"), Some(&Some("mid\n".to_owned())));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn json_message_is_flattened_in_one_pass_all_or_nothing() {
        let deep = |n: usize| format!("{{\\\"a\\\":{}{}}}", "[".repeat(n), "]".repeat(n));
        let (rows, errors) = decode_fb(&[
            r#"{"log":"{\"level\":\"WARN\",\"x\":{\"y\":1,\"z\":[1,{}]},\"e\":{},\"n\":null}\n","x.y":"envelope"}"#,
            r#"{"log":"{\"level\":\"warn\",\"a\":1,}\n"}"#,
            r#"{"x":"kept","log":" {\"x\":\"dropped\",\"trace_id\":\"abc\"} \n"}"#,
            &format!(r#"{{"log":"{}"}}"#, deep(128)),
            &format!(r#"{{"log":"{}"}}"#, deep(129)),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let (_, level, a) = &rows[0];
        assert_eq!(level.as_deref(), Some("warn"));
        // the envelope's `x.y` wins over the message's
        let keys: Vec<&str> = a.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["x.y", "level", "x.z", "e", "n"]);
        assert_eq!(attr(a, "x.y"), Some(&Some("envelope".to_owned())));
        assert_eq!(attr(a, "x.z"), Some(&Some("[1,{}]".to_owned())));
        assert_eq!(attr(a, "n"), Some(&None));
        // invalid JSON: nothing from the message, the level is detected in the text
        assert_eq!(rows[1].2, vec![]);
        assert_eq!(rows[1].1.as_deref(), Some("warn"));
        // envelope keys win; trimmed message
        assert_eq!(rows[2].2.iter().filter(|(k, _)| k == "x").count(), 1);
        // a trace id promoted to its column is not repeated in attrs
        assert_eq!(attr(&rows[2].2, "trace_id"), None);
        // nesting is limited (128) from the top of the message, as when it was validated first
        // with `skip_value(0)`
        let validated = |n: usize| {
            let t = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
            let mut p = Parser::new(&t);
            p.skip_value(0).is_ok() && p.end().is_ok()
        };
        assert!(validated(128) && !validated(129));
        assert_eq!(rows[3].2.len(), 1);
        assert_eq!(rows[4].2, vec![]);
    }

    #[test]
    fn reused_row_buffers_do_not_leak_between_records() {
        let (rows, errors) = decode_fb(&[
            r#"{"log":"a","k1":"1","kubernetes":{"labels":{"l":"v"},"pod_id":"p"}}"#,
            r#"{"log":"b","k2":"2","kubernetes":{"x":"#,
            r#"{"log":"c","k3":"3"}"#,
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(rows.len(), 2);
        let keys: Vec<&str> = rows[1].2.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["k3"]);
    }
}
