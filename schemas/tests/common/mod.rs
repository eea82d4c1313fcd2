#![allow(dead_code)]

use std::path::PathBuf;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use loglake_schemas::{DecodeOutput, Decoder, DecoderOptions, RawRecord, decoder_for};

pub fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/corpus")
        .join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = corpus(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Lines of a file, without their `\n` (a final empty line is dropped).
pub fn lines(rel: &str) -> Vec<Vec<u8>> {
    let data = read(rel);
    let mut v: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if v.last().is_some_and(Vec::is_empty) {
        v.pop();
    }
    v
}

pub fn decoder(name: &str) -> Box<dyn Decoder> {
    decoder_for(name, &DecoderOptions::default()).unwrap()
}

/// Decodes payloads as records of topic `t`, partition 0, offsets 0.., Kafka timestamp 1000 ms.
pub fn decode_payloads(d: &mut dyn Decoder, payloads: &[Vec<u8>]) -> DecodeOutput {
    let recs: Vec<RawRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            timestamp_ms: Some(1000),
            ..RawRecord::new("t", 0, i as i64, p)
        })
        .collect();
    d.decode(&recs)
}

pub fn s(b: &RecordBatch, col: &str, row: usize) -> Option<String> {
    let a = b
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    let a = a.as_string::<i32>();
    a.is_valid(row).then(|| a.value(row).to_owned())
}

pub fn i32v(b: &RecordBatch, col: &str, row: usize) -> Option<i32> {
    let a = b.column_by_name(col).unwrap().as_primitive::<Int32Type>();
    a.is_valid(row).then(|| a.value(row))
}

pub fn i16v(b: &RecordBatch, col: &str, row: usize) -> Option<i16> {
    let a = b.column_by_name(col).unwrap().as_primitive::<Int16Type>();
    a.is_valid(row).then(|| a.value(row))
}

pub fn i64v(b: &RecordBatch, col: &str, row: usize) -> Option<i64> {
    let a = b.column_by_name(col).unwrap().as_primitive::<Int64Type>();
    a.is_valid(row).then(|| a.value(row))
}

pub fn tsv(b: &RecordBatch, col: &str, row: usize) -> Option<i64> {
    let a = b
        .column_by_name(col)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    a.is_valid(row).then(|| a.value(row))
}

pub fn map(b: &RecordBatch, col: &str, row: usize) -> Vec<(String, Option<String>)> {
    let m = b.column_by_name(col).unwrap().as_map();
    let entries = m.value(row);
    let k = entries.column(0).as_string::<i32>();
    let v = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|i| {
            (
                k.value(i).to_owned(),
                v.is_valid(i).then(|| v.value(i).to_owned()),
            )
        })
        .collect()
}

pub fn map_get(b: &RecordBatch, col: &str, row: usize, key: &str) -> Option<String> {
    map(b, col, row)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v)
}

pub fn list(b: &RecordBatch, col: &str, row: usize) -> Option<Vec<String>> {
    let l = b.column_by_name(col).unwrap().as_list::<i32>();
    if !l.is_valid(row) {
        return None;
    }
    let v = l.value(row);
    let v = v.as_string::<i32>();
    Some((0..v.len()).map(|i| v.value(i).to_owned()).collect())
}

pub fn us(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}
