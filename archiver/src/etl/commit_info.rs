//! What a commit's info records of the ETL: the offsets the filter dropped and those whose rows
//! all moved to route tables (`loglake.filtered`, `loglake.moved`), and their parsers.

use std::collections::BTreeMap;

/// Sorted, merged half-open ranges `[start, end)` of a set of offsets.
pub fn offset_ranges(mut offsets: Vec<i64>) -> Vec<(i64, i64)> {
    offsets.sort_unstable();
    offsets.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for o in offsets {
        match out.last_mut() {
            Some((_, end)) if *end == o => *end = o + 1,
            _ => out.push((o, o + 1)),
        }
    }
    out
}

/// The commit-info key under which a commit lists the offsets its filter dropped:
/// `[{"topic": …, "partition": …, "ranges": [[start, end), …]}, …]` (the form and its parser
/// live in `loglake_lake::etl_ledger`, which the maintenance side folds them into before log
/// cleanup).
pub use loglake_lake::etl_ledger::FILTERED_INFO_KEY;
/// The commit-info key under which a commit lists the offsets whose rows all moved to route
/// tables (same form as [`FILTERED_INFO_KEY`]).
pub use loglake_lake::etl_ledger::MOVED_INFO_KEY;
/// The commit-info key of the number of rows the filter dropped in a commit.
pub const FILTERED_ROWS_INFO_KEY: &str = "loglake.filtered_rows";

/// The commit info of one commit's filtered offsets (per (topic, partition)).
pub fn filtered_info(
    offsets: &BTreeMap<(String, i32), Vec<i64>>,
    rows: u64,
) -> std::collections::HashMap<String, serde_json::Value> {
    let ranges: loglake_lake::etl_ledger::RangeMap = offsets
        .iter()
        .filter(|(_, o)| !o.is_empty())
        .map(|(k, o)| (k.clone(), offset_ranges(o.clone())))
        .collect();
    let list = loglake_lake::etl_ledger::offset_list(&ranges);
    let mut info = std::collections::HashMap::new();
    if !ranges.is_empty() || rows > 0 {
        info.insert(FILTERED_INFO_KEY.to_string(), list);
        info.insert(FILTERED_ROWS_INFO_KEY.to_string(), serde_json::json!(rows));
    }
    info
}

/// The commit info of one commit's moved offsets (per (topic, partition)); empty when none.
pub fn moved_info(
    offsets: &BTreeMap<(String, i32), Vec<i64>>,
) -> std::collections::HashMap<String, serde_json::Value> {
    let mut info = filtered_info(offsets, 0);
    match info.remove(FILTERED_INFO_KEY) {
        Some(v) if v.as_array().is_some_and(|a| !a.is_empty()) => {
            std::collections::HashMap::from([(MOVED_INFO_KEY.to_string(), v)])
        }
        _ => std::collections::HashMap::new(),
    }
}

/// The (partition, start, end) ranges of `topic` in one commit's info.
pub fn parse_filtered_info(
    info: &std::collections::HashMap<String, serde_json::Value>,
    topic: &str,
) -> Vec<(i32, i64, i64)> {
    parse_offsets_info(info, FILTERED_INFO_KEY, topic)
}

/// The (partition, start, end) ranges of `topic` under `key` of one commit's info; a malformed
/// list yields the entries before the bad one (`loglake_lake::etl_ledger::parse_offset_list`
/// is the strict form, which `loglake audit` uses).
pub fn parse_offsets_info(
    info: &std::collections::HashMap<String, serde_json::Value>,
    key: &str,
    topic: &str,
) -> Vec<(i32, i64, i64)> {
    let mut ranges = loglake_lake::etl_ledger::RangeMap::new();
    if let Some(list) = info.get(key) {
        // lenient: what parsed before an error stays
        let _ = loglake_lake::etl_ledger::parse_offset_list(list, &mut ranges);
    }
    ranges
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .flat_map(|((_, p), r)| r.into_iter().map(move |(a, b)| (p, a, b)))
        .collect()
}
