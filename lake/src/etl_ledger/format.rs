//! The JSON forms the ledger reads and writes: the offset lists of a commit's info (and of a
//! commit file's `commitInfo` line), and the ledger objects ([`LedgerEntry`]).

use object_store::path::Path as ObjPath;
use serde_json::{Value, json};

use super::{EtlOffsets, FILTERED_INFO_KEY, FORMAT, LEDGER_PREFIX, MOVED_INFO_KEY, RangeMap};

/// The list form of `map` (`[{"topic", "partition", "ranges": [[start, end), …]}, …]`), as the
/// archiver writes it into a commit's info and the ledger into its objects; empty lists are
/// left out.
pub fn offset_list(map: &RangeMap) -> Value {
    Value::Array(
        map.iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|((t, p), r)| {
                json!({
                    "topic": t,
                    "partition": p,
                    "ranges": r.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// Adds the ranges of a list in [`offset_list`]'s form to `into`; an error names the entry and
/// what is wrong with it.
pub fn parse_offset_list(list: &Value, into: &mut RangeMap) -> Result<(), String> {
    let entries = list
        .as_array()
        .ok_or_else(|| format!("not a list of offset ranges: {list}"))?;
    for (i, e) in entries.iter().enumerate() {
        let bad = |what: &str| format!("entry {i} ({e}): {what}");
        let topic = e
            .get("topic")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no string `topic`"))?;
        let partition = e
            .get("partition")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| bad("no 32-bit integer `partition`"))?;
        let ranges = e
            .get("ranges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no list `ranges`"))?;
        let out = into.entry((topic.to_string(), partition)).or_default();
        for r in ranges {
            match (
                r.as_array().map(Vec::len),
                r.get(0).and_then(Value::as_i64),
                r.get(1).and_then(Value::as_i64),
            ) {
                (Some(2), Some(a), Some(b)) if a <= b => out.push((a, b)),
                _ => {
                    return Err(bad(&format!(
                        "range {r} is not [start, end) with start ≤ end"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The filtered and moved offsets of one commit's info (its `commitInfo` object).
pub fn commit_info_offsets(info: &serde_json::Map<String, Value>) -> Result<EtlOffsets, String> {
    let mut out = EtlOffsets::default();
    if let Some(list) = info.get(FILTERED_INFO_KEY) {
        parse_offset_list(list, &mut out.filtered)
            .map_err(|e| format!("{FILTERED_INFO_KEY}: {e}"))?;
    }
    if let Some(list) = info.get(MOVED_INFO_KEY) {
        parse_offset_list(list, &mut out.moved).map_err(|e| format!("{MOVED_INFO_KEY}: {e}"))?;
    }
    Ok(out)
}

/// The filtered and moved offsets in the `commitInfo` action of a commit file (newline-delimited
/// JSON actions); none when the commit has no `commitInfo`. Only lines that mention
/// `commitInfo` are parsed (a commit of many files has long `add` lines).
pub fn commit_file_offsets(bytes: &[u8]) -> Result<EtlOffsets, String> {
    let finder = memchr::memmem::Finder::new(b"\"commitInfo\"");
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if finder.find(line).is_none() {
            continue;
        }
        let action: Value = serde_json::from_slice(line)
            .map_err(|e| format!("line {}: not a JSON action: {e}", n + 1))?;
        if let Some(info) = action.get("commitInfo") {
            let info = info
                .as_object()
                .ok_or_else(|| format!("line {}: commitInfo is not an object", n + 1))?;
            return commit_info_offsets(info).map_err(|e| format!("line {}: {e}", n + 1));
        }
    }
    Ok(EtlOffsets::default())
}

/// One ledger object: the offsets of versions `from..=to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub from: u64,
    pub to: u64,
    pub offsets: EtlOffsets,
    /// Versions in `from..=to` whose commit file was gone when folded (inclusive ranges).
    pub unverifiable: Vec<(u64, u64)>,
}

impl LedgerEntry {
    /// The object's path under the table: `_loglake/etl_offsets/<from:020>.json`.
    pub fn path(from: u64) -> ObjPath {
        ObjPath::from(format!("{LEDGER_PREFIX}/{from:020}.json"))
    }

    /// The first version of a ledger object's path (`None`: not a ledger object's name).
    pub fn from_of(path: &ObjPath) -> Option<u64> {
        let name = path.filename()?;
        let digits = name.strip_suffix(".json")?;
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "format": FORMAT,
            "from": self.from,
            "to": self.to,
            "filtered": offset_list(&self.offsets.filtered),
            "moved": offset_list(&self.offsets.moved),
            "unverifiable_versions": self.unverifiable.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
            "written_at": chrono::Utc::now().to_rfc3339(),
        })
    }

    pub fn from_json(v: &Value) -> Result<Self, String> {
        let format = v.get("format").and_then(Value::as_u64);
        if format != Some(FORMAT) {
            return Err(format!(
                "format {format:?}: this loglake reads format {FORMAT}"
            ));
        }
        let version = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("no version `{k}`"))
        };
        let (from, to) = (version("from")?, version("to")?);
        if from > to {
            return Err(format!("from {from} > to {to}"));
        }
        let mut offsets = EtlOffsets::default();
        let list = |k: &str| v.get(k).ok_or_else(|| format!("no `{k}`"));
        parse_offset_list(list("filtered")?, &mut offsets.filtered)
            .map_err(|e| format!("filtered: {e}"))?;
        parse_offset_list(list("moved")?, &mut offsets.moved).map_err(|e| format!("moved: {e}"))?;
        let mut unverifiable = Vec::new();
        for r in list("unverifiable_versions")?
            .as_array()
            .ok_or("unverifiable_versions is not a list")?
        {
            match (
                r.get(0).and_then(Value::as_u64),
                r.get(1).and_then(Value::as_u64),
            ) {
                (Some(a), Some(b)) if from <= a && a <= b && b <= to => unverifiable.push((a, b)),
                _ => {
                    return Err(format!(
                        "unverifiable_versions: {r} is not [first, last] within {from}..={to}"
                    ));
                }
            }
        }
        Ok(LedgerEntry {
            from,
            to,
            offsets,
            unverifiable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_bad_ones_name_the_entry() {
        let mut m = RangeMap::new();
        m.insert(("t".into(), 1), vec![(2, 3), (7, 9)]);
        m.insert(("u".into(), 0), vec![]);
        let list = offset_list(&m);
        assert_eq!(
            list,
            json!([{"topic": "t", "partition": 1, "ranges": [[2, 3], [7, 9]]}])
        );
        let mut back = RangeMap::new();
        parse_offset_list(&list, &mut back).expect("parse");
        m.remove(&("u".to_string(), 0));
        assert_eq!(back, m);
        let e = parse_offset_list(
            &json!([{"topic": "t", "partition": 0, "ranges": [[1, 2]]},
                     {"topic": "t", "partition": 0, "ranges": [[5, 3]]}]),
            &mut RangeMap::new(),
        )
        .expect_err("bad range");
        assert!(e.starts_with("entry 1 ") && e.contains("[5,3]"), "{e}");
        let e = parse_offset_list(&json!([{"topic": "t", "ranges": []}]), &mut RangeMap::new())
            .expect_err("no partition");
        assert!(e.contains("partition"), "{e}");
    }

    #[test]
    fn the_commit_info_line_of_a_commit_file() {
        let file = concat!(
            r#"{"add":{"path":"a.parquet","size":1,"commitInfo_like":"\"commitInfo\""}}"#,
            "\n",
            r#"{"commitInfo":{"operation":"STREAMING UPDATE","loglake.filtered":[{"topic":"t","partition":0,"ranges":[[3,5]]}],"loglake.moved":[{"topic":"t","partition":2,"ranges":[[7,8]]}]}}"#,
            "\n"
        );
        let o = commit_file_offsets(file.as_bytes()).expect("parse");
        assert_eq!(o.filtered[&("t".to_string(), 0)], vec![(3, 5)]);
        assert_eq!(o.moved[&("t".to_string(), 2)], vec![(7, 8)]);
        assert_eq!(
            commit_file_offsets(b"{\"add\":{\"path\":\"x\"}}\n").expect("none"),
            EtlOffsets::default()
        );
        let e =
            commit_file_offsets(b"{\"commitInfo\": {\"loglake.filtered\": 3}}").expect_err("bad");
        assert!(e.starts_with("line 1: loglake.filtered: not a list"), "{e}");
    }
}
