//! Deterministic train/validation/… splits by a key column.
//!
//! A row's split depends on its key alone: `h` = the first 8 bytes of SHA-256 of the key's
//! text (UTF-8; NULL as the empty string), big-endian; `u = (h >> 11) / 2^53` (in [0, 1));
//! the row goes to the first split whose cumulative weight share exceeds `u`. Every row of a
//! key lands in one split, on every run and machine, and anyone can recompute it (Python:
//! `int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") >> 11`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use sha2::{Digest, Sha256};

use crate::error::ExportError;

/// The name of the SQL function that assigns a split to a key.
pub const SPLIT_UDF: &str = "loglake_export_split";

/// A split: name and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub name: String,
    pub weight: f64,
}

/// Parses `train=0.9,validation=0.1` (weights positive; they are normalised to sum 1).
pub fn parse_splits(s: &str) -> Result<Vec<Split>, ExportError> {
    let mut out: Vec<Split> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').ok_or_else(|| {
            ExportError::Usage(format!("--split {s:?}: expected NAME=WEIGHT, got {part:?}"))
        })?;
        let name = name.trim();
        let weight: f64 = w.trim().parse().map_err(|_| {
            ExportError::Usage(format!(
                "--split {s:?}: weight of {name} is not a number: {w:?}"
            ))
        })?;
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(ExportError::Usage(format!(
                "--split {s:?}: weight of {name} must be positive"
            )));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(ExportError::Usage(format!(
                "--split {s:?}: split name {name:?} must be letters, digits, `_` or `.`"
            )));
        }
        if out.iter().any(|x| x.name == name) {
            return Err(ExportError::Usage(format!(
                "--split {s:?}: {name} given twice"
            )));
        }
        out.push(Split {
            name: name.to_string(),
            weight,
        });
    }
    if out.is_empty() {
        return Err(ExportError::Usage(format!("--split {s:?}: no split")));
    }
    let total: f64 = out.iter().map(|x| x.weight).sum();
    for x in &mut out {
        x.weight /= total;
    }
    Ok(out)
}

/// `u` in [0, 1) of a key (see the module docs).
pub fn key_fraction(key: &[u8]) -> f64 {
    let d = Sha256::digest(key);
    let mut h = [0u8; 8];
    h.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(h) >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the split of `key`.
pub fn split_of(splits: &[Split], key: &[u8]) -> usize {
    let u = key_fraction(key);
    let mut cum = 0.0;
    for (i, s) in splits.iter().enumerate() {
        cum += s.weight;
        if u < cum {
            return i;
        }
    }
    splits.len() - 1
}

/// The SQL function `loglake_export_split(key_text)` → split name.
pub fn split_udf(splits: Vec<Split>) -> ScalarUDF {
    let splits = Arc::new(splits);
    let fun = Arc::new(move |args: &[ColumnarValue]| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let keys = arrays[0].as_string::<i32>();
        let out: StringArray = (0..keys.len())
            .map(|i| {
                let k = if keys.is_null(i) { "" } else { keys.value(i) };
                Some(splits[split_of(&splits, k.as_bytes())].name.as_str())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    });
    create_udf(
        SPLIT_UDF,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        fun,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_specs() {
        let s = parse_splits("train=0.9, validation=0.1").expect("parse");
        assert_eq!(s.len(), 2);
        assert!((s[0].weight - 0.9).abs() < 1e-12);
        let s = parse_splits("a=3,b=1").expect("parse");
        assert!((s[0].weight - 0.75).abs() < 1e-12);
        for bad in ["", "train", "train=x", "train=-1", "a=1,a=2", "a b=1"] {
            assert!(parse_splits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        let d = Sha256::digest(b"pod-1");
        let h = u64::from_be_bytes(d[..8].try_into().expect("8"));
        assert_eq!(
            key_fraction(b"pod-1"),
            (h >> 11) as f64 / 9007199254740992.0
        );
        let s = parse_splits("train=0.5,validation=0.5").expect("parse");
        let i = split_of(&s, b"pod-1");
        assert_eq!(i, usize::from(key_fraction(b"pod-1") >= 0.5));
    }

    proptest! {
        #[test]
        fn shares_follow_the_weights(seed in 0u64..1000) {
            let s = parse_splits("train=0.8,validation=0.2").expect("parse");
            let n = 2000;
            let train = (0..n)
                .filter(|i| split_of(&s, format!("k{seed}-{i}").as_bytes()) == 0)
                .count();
            // 2,000 keys at p = 0.8: the share is within 5 standard deviations
            prop_assert!((train as f64 / n as f64 - 0.8).abs() < 0.045, "{train}");
        }
    }
}
