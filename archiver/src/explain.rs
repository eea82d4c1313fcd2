//! `loglake archive --explain-etl FILE`: what each table's filter, derived columns and
//! redactions do to sample records, before and after, without Kafka or a store.

use std::io::Write;
use std::path::Path;

use arrow::array::RecordBatch;
use loglake_schemas::RawRecord;
use serde_json::{Value, json};

use crate::archive::ArchiveConfig;
use crate::error::ArchiveError;

/// The rows of `batch` as JSON objects (null columns left out).
fn rows(batch: &RecordBatch) -> Result<Vec<Value>, ArchiveError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    let bytes = w.into_inner();
    match serde_json::from_slice(&bytes) {
        Ok(Value::Array(v)) => Ok(v),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(ArchiveError::Other(format!("rendering rows as JSON: {e}"))),
    }
}

/// Only the columns of `after` that differ from `before` (or are new).
fn changes(before: &Value, after: &Value) -> Value {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return after.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.insert(k.clone(), Value::Null);
    }
    Value::Object(out)
}

/// Prints one JSON line per (table with an ETL, record of `input`): the decoded rows
/// (`before`), the rows written (`after`), the columns that changed, and whether the filter
/// dropped the record or an expression failed on it. Returns the number of lines printed.
pub fn explain(
    cfg: &ArchiveConfig,
    input: &Path,
    out: &mut impl Write,
) -> Result<u64, ArchiveError> {
    let text = std::fs::read(input)
        .map_err(|e| ArchiveError::Config(format!("--explain-etl {}: {e}", input.display())))?;
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let mut printed = 0u64;
    let mut any = false;
    for t in &cfg.tables {
        let Some(etl) = t.compile_etl(&cfg.decoder_options)? else {
            continue;
        };
        any = true;
        let topic = t.topics.first().map(String::as_str).unwrap_or("sample");
        let mut decoder = t.decoder(&cfg.decoder_options)?;
        for (i, line) in lines.iter().enumerate() {
            let rec = RawRecord::new(topic, 0, i as i64, line);
            let decoded = decoder.decode(std::slice::from_ref(&rec));
            let before = rows(&decoded.batch)?;
            let mut entry = json!({"table": t.name, "line": i + 1, "before": before});
            if let Some(e) = decoded.errors.first() {
                entry["dead_letter"] = json!(format!("decoder: {}", e.reason));
            }
            let o = etl.apply(&decoded.batch)?;
            let after = rows(&o.batch)?;
            if before.len() == after.len() {
                entry["changed"] = Value::Array(
                    before
                        .iter()
                        .zip(&after)
                        .map(|(b, a)| changes(b, a))
                        .collect(),
                );
            }
            entry["after"] = Value::Array(after);
            let routed: Vec<Value> = etl
                .route_tables()
                .iter()
                .zip(&o.routed)
                .filter(|(_, b)| b.num_rows() > 0)
                .map(|((t, moves), b)| {
                    json!({"table": t, "rows": b.num_rows(), "mode": if *moves { "move" } else { "copy" }})
                })
                .collect();
            if !routed.is_empty() {
                entry["routed"] = Value::Array(routed);
            }
            if o.filtered_rows > 0 {
                entry["filtered_rows"] = json!(o.filtered_rows);
            }
            if let Some((_, _, _, why)) = o.failed.first() {
                entry["dead_letter"] = json!(why);
            }
            let labels = etl.redaction_labels();
            let red: serde_json::Map<String, Value> = labels
                .iter()
                .zip(&o.redactions)
                .filter(|(_, n)| **n > 0)
                .map(|(l, n)| (l.clone(), json!(n)))
                .collect();
            if !red.is_empty() {
                entry["redactions"] = Value::Object(red);
            }
            writeln!(out, "{entry}").map_err(|source| ArchiveError::Io {
                what: "writing the explanation".into(),
                source,
            })?;
            printed += 1;
        }
    }
    if !any {
        return Err(ArchiveError::Config(
            "--explain-etl: no table has a filter, derived columns or redactions".into(),
        ));
    }
    Ok(printed)
}
