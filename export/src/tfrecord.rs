//! TFRecord files of `tf.train.Example` protos (no TensorFlow needed).
//!
//! A record is `u64 length (LE)`, `u32 masked CRC32C of the length bytes (LE)`, the payload,
//! `u32 masked CRC32C of the payload (LE)`; the mask is `((crc >> 15) | (crc << 17)) +
//! 0xa282ead8`. The protos are `tensorflow/core/example/{example,feature}.proto`, encoded with
//! prost; features are kept in name order (a `BTreeMap`), so equal rows give equal bytes.
//!
//! Column → feature: integers, booleans, dates (days since 1970-01-01) and timestamps
//! (microseconds since the epoch, UTC) → `int64_list`; floats → `float_list` (f32, as TF
//! stores them); strings and binaries → `bytes_list` of one value; lists → the list of their
//! elements; maps and structs → `bytes_list` of one JSON object (`{"key":"value",…}`). A NULL
//! becomes an empty list of the column's kind.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::DataType;

/// `tf.train.BytesList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tf.train.FloatList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tf.train.Int64List`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

/// `tf.train.Feature`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Feature {
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    pub kind: Option<Kind>,
}

/// `tf.train.Feature.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

/// `tf.train.Features`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Features {
    #[prost(btree_map = "string, message", tag = "1")]
    pub feature: BTreeMap<String, Feature>,
}

/// `tf.train.Example`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Example {
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

const MASK_DELTA: u32 = 0xa282_ead8;

/// TFRecord's masked CRC32C.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one framed record holding `payload` to `out`.
pub fn write_record(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
}

/// Reads the framed records of `data`, checking both CRCs; an error names the record and
/// byte offset.
pub fn read_records(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rec = out.len();
        let head = data
            .get(at..at + 12)
            .ok_or_else(|| format!("record {rec} at byte {at}: truncated header"))?;
        let len_bytes = &head[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| "header")?) as usize;
        let crc = u32::from_le_bytes(head[8..12].try_into().map_err(|_| "header")?);
        if crc != masked_crc32c(len_bytes) {
            return Err(format!("record {rec} at byte {at}: bad length CRC"));
        }
        let payload = data
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| format!("record {rec} at byte {at}: truncated payload"))?;
        let tail = data
            .get(at + 12 + len..at + 16 + len)
            .ok_or_else(|| format!("record {rec} at byte {at}: truncated CRC"))?;
        let crc = u32::from_le_bytes(tail.try_into().map_err(|_| "crc")?);
        if crc != masked_crc32c(payload) {
            return Err(format!("record {rec} at byte {at}: bad payload CRC"));
        }
        out.push(payload);
        at += 16 + len;
    }
    Ok(out)
}

fn bytes1(v: Vec<u8>) -> Kind {
    Kind::BytesList(BytesList { value: vec![v] })
}

fn empty_of(dt: &DataType) -> Kind {
    match dt {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            Kind::FloatList(FloatList::default())
        }
        DataType::List(f) | DataType::LargeList(f) => empty_of(f.data_type()),
        d if int_like(d) => Kind::Int64List(Int64List::default()),
        _ => Kind::BytesList(BytesList::default()),
    }
}

fn int_like(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Timestamp(_, _)
    )
}

/// The scalar at `row` of `a` as an i64 (integers, booleans, dates, timestamps in µs).
fn int_value(a: &ArrayRef, row: usize) -> Result<i64, String> {
    use arrow::datatypes::*;
    Ok(match a.data_type() {
        DataType::Boolean => a.as_boolean().value(row) as i64,
        DataType::Int8 => a.as_primitive::<Int8Type>().value(row) as i64,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(row) as i64,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row) as i64,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(row) as i64,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(row) as i64,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(row) as i64,
        DataType::UInt64 => i64::try_from(a.as_primitive::<UInt64Type>().value(row))
            .map_err(|_| "UInt64 value above i64::MAX".to_string())?,
        DataType::Date32 => a.as_primitive::<Date32Type>().value(row) as i64,
        DataType::Timestamp(unit, _) => match unit {
            arrow::datatypes::TimeUnit::Second => {
                a.as_primitive::<TimestampSecondType>().value(row) * 1_000_000
            }
            arrow::datatypes::TimeUnit::Millisecond => {
                a.as_primitive::<TimestampMillisecondType>().value(row) * 1_000
            }
            arrow::datatypes::TimeUnit::Microsecond => {
                a.as_primitive::<TimestampMicrosecondType>().value(row)
            }
            arrow::datatypes::TimeUnit::Nanosecond => a
                .as_primitive::<TimestampNanosecondType>()
                .value(row)
                .div_euclid(1_000),
        },
        other => return Err(format!("{other} is not an integer type")),
    })
}

fn float_value(a: &ArrayRef, row: usize) -> Result<f32, String> {
    use arrow::datatypes::*;
    Ok(match a.data_type() {
        DataType::Float32 => a.as_primitive::<Float32Type>().value(row),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(row) as f32,
        DataType::Float16 => a.as_primitive::<Float16Type>().value(row).to_f32(),
        other => return Err(format!("{other} is not a float type")),
    })
}

fn bytes_value(a: &ArrayRef, row: usize) -> Result<Vec<u8>, String> {
    Ok(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(row).as_bytes().to_vec(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(row).as_bytes().to_vec(),
        DataType::Utf8View => a.as_string_view().value(row).as_bytes().to_vec(),
        DataType::Binary => a.as_binary::<i32>().value(row).to_vec(),
        DataType::LargeBinary => a.as_binary::<i64>().value(row).to_vec(),
        DataType::BinaryView => a.as_binary_view().value(row).to_vec(),
        _ => json_value(a, row)?.to_string().into_bytes(),
    })
}

/// A value as JSON (maps as objects with string keys, lists as arrays, structs as objects).
fn json_value(a: &ArrayRef, row: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if a.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Map(_, _) => {
            let m = a.as_map();
            let entries = m.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut obj = serde_json::Map::new();
            for i in 0..entries.len() {
                let k = match json_value(keys, i)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(k, json_value(values, i)?);
            }
            Value::Object(obj)
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(row);
            Value::Array(
                (0..l.len())
                    .map(|i| json_value(&l, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut obj = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                obj.insert(f.name().clone(), json_value(c, row)?);
            }
            Value::Object(obj)
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            serde_json::Number::from_f64(float_value(a, row)? as f64)
                .map_or(Value::Null, Value::Number)
        }
        d if int_like(d) && !matches!(d, DataType::Boolean) => Value::from(int_value(a, row)?),
        DataType::Boolean => Value::Bool(a.as_boolean().value(row)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Value::String(String::from_utf8_lossy(&bytes_value(a, row)?).into_owned())
        }
        _ => Value::String(
            arrow::util::display::array_value_to_string(a, row).map_err(|e| e.to_string())?,
        ),
    })
}

/// The feature of column `a` at `row`.
fn feature(a: &ArrayRef, row: usize) -> Result<Feature, String> {
    let dt = a.data_type();
    let kind = if a.is_null(row) {
        empty_of(dt)
    } else {
        match dt {
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                Kind::FloatList(FloatList {
                    value: vec![float_value(a, row)?],
                })
            }
            d if int_like(d) => Kind::Int64List(Int64List {
                value: vec![int_value(a, row)?],
            }),
            DataType::List(f) => {
                let l = a.as_list::<i32>().value(row);
                let valid = (0..l.len()).filter(|&i| !l.is_null(i));
                match f.data_type() {
                    DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                        Kind::FloatList(FloatList {
                            value: valid
                                .map(|i| float_value(&l, i))
                                .collect::<Result<_, _>>()?,
                        })
                    }
                    d if int_like(d) => Kind::Int64List(Int64List {
                        value: valid.map(|i| int_value(&l, i)).collect::<Result<_, _>>()?,
                    }),
                    _ => Kind::BytesList(BytesList {
                        value: valid
                            .map(|i| bytes_value(&l, i))
                            .collect::<Result<_, _>>()?,
                    }),
                }
            }
            _ => bytes1(bytes_value(a, row)?),
        }
    };
    Ok(Feature { kind: Some(kind) })
}

/// Appends one framed `tf.train.Example` per row of `batch` to `out`.
pub fn write_batch(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<(), String> {
    use prost::Message;
    let schema = batch.schema();
    let mut buf = Vec::new();
    for row in 0..batch.num_rows() {
        let mut features = BTreeMap::new();
        for (f, c) in schema.fields().iter().zip(batch.columns()) {
            let feat =
                feature(c, row).map_err(|e| format!("column {}, row {row}: {e}", f.name()))?;
            features.insert(f.name().clone(), feat);
        }
        let ex = Example {
            features: Some(Features { feature: features }),
        };
        buf.clear();
        ex.encode(&mut buf).map_err(|e| e.to_string())?;
        write_record(out, &buf);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, StringArray, StringBuilder};
    use prost::Message;
    use std::sync::Arc;

    #[test]
    #[allow(clippy::manual_rotate)] // the mask as TensorFlow's crc32c.h writes it
    fn framing_has_the_published_crcs() {
        // crc32c("123456789") = 0xE3069283 (the CRC-32C check value)
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let crc = 0xE306_9283u32;
        assert_eq!(
            masked_crc32c(b"123456789"),
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
        let mut out = Vec::new();
        write_record(&mut out, b"hello");
        write_record(&mut out, b"");
        assert_eq!(out.len(), 16 + 5 + 16);
        assert_eq!(&out[..8], &5u64.to_le_bytes());
        let recs = read_records(&out).expect("read");
        assert_eq!(recs, vec![&b"hello"[..], &b""[..]]);
        let mut bad = out.clone();
        bad[13] ^= 1;
        assert!(read_records(&bad).expect_err("crc").contains("record 0"));
    }

    #[test]
    fn rows_become_examples() {
        let mut mb = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        mb.keys().append_value("k");
        mb.values().append_value("v");
        mb.append(true).expect("map");
        mb.append(true).expect("map");
        let batch = RecordBatch::try_from_iter(vec![
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(7), None])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), Some("b")])) as ArrayRef,
            ),
            ("m", Arc::new(mb.finish()) as ArrayRef),
        ])
        .expect("batch");
        let mut out = Vec::new();
        write_batch(&mut out, &batch).expect("write");
        let recs = read_records(&out).expect("read");
        assert_eq!(recs.len(), 2);
        let ex = Example::decode(recs[0]).expect("decode");
        let f = ex.features.expect("features").feature;
        assert_eq!(
            f["n"].kind,
            Some(Kind::Int64List(Int64List { value: vec![7] }))
        );
        assert_eq!(f["s"].kind, Some(bytes1(b"a".to_vec())));
        assert_eq!(f["m"].kind, Some(bytes1(br#"{"k":"v"}"#.to_vec())));
        let ex = Example::decode(recs[1]).expect("decode");
        let f = ex.features.expect("features").feature;
        assert_eq!(f["n"].kind, Some(Kind::Int64List(Int64List::default())));
        assert_eq!(f["m"].kind, Some(bytes1(b"{}".to_vec())));
    }
}
