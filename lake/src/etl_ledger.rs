//! The ETL offsets ledger: the offsets an archive-time filter dropped (`loglake.filtered`) or
//! whose rows all moved to route tables (`loglake.moved`), kept after the commits that list them
//! are cleaned from the log (DESIGN.md, "Archive-time ETL: filtered records and exactly-once").
//!
//! Each archiver commit lists those offsets in its `commitInfo`
//! (`[{"topic", "partition", "ranges": [[start, end), …]}, …]`, [`offset_list`]). Log cleanup
//! (`loglake checkpoint`, the post-commit hook of deltalake's `VACUUM START` commit) deletes
//! commit files, so before any cleanup the maintenance side *folds* the commits not folded yet
//! ([`fold`]): one immutable object `_loglake/etl_offsets/<from:020>.json` per fold, holding the
//! versions `from..=to` it covers, their offsets merged per (topic, partition), and the versions
//! whose commit file was already gone (`unverifiable_versions`: nobody can vouch for them).
//! Objects are created with put-if-absent and keyed by their first version, so the objects form
//! one chain `0..=a, a+1..=b, …`: two folds starting at the same version race for the same key
//! and exactly one wins; the loser re-reads the chain and folds what is left.
//!
//! [`coverage`] is what `loglake audit` reads: the ledger objects for the versions they cover and
//! the commit files of the other versions, each version counted once.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::{Value, json};
use url::Url;

use crate::error::LakeError;

/// The commit-info key under which a commit lists the offsets its filter dropped.
pub const FILTERED_INFO_KEY: &str = "loglake.filtered";
/// The commit-info key under which a commit lists the offsets whose rows all moved to route
/// tables.
pub const MOVED_INFO_KEY: &str = "loglake.moved";
/// Where the ledger objects live under a table (`_`-prefixed: vacuum and readers skip it).
pub const LEDGER_PREFIX: &str = "_loglake/etl_offsets";
const LOG_PREFIX: &str = "_delta_log";
/// The ledger objects' format version.
const FORMAT: u64 = 1;
/// Commit files or ledger objects read at once.
const READS: usize = 16;
/// Folds lost to another fold before giving up.
const ATTEMPTS: u32 = 10;

/// Half-open offset ranges `[start, end)` per (topic, partition).
pub type RangeMap = BTreeMap<(String, i32), Vec<(i64, i64)>>;

/// The filtered and moved offsets of one or more commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtlOffsets {
    pub filtered: RangeMap,
    pub moved: RangeMap,
}

impl EtlOffsets {
    /// Adds `other`'s ranges (kept as they are: an offset listed twice stays listed twice).
    pub fn extend(&mut self, other: EtlOffsets) {
        for (mine, theirs) in [
            (&mut self.filtered, other.filtered),
            (&mut self.moved, other.moved),
        ] {
            for (k, v) in theirs {
                mine.entry(k).or_default().extend(v);
            }
        }
    }

    /// The same offsets with each list merged by [`merge_ranges`].
    pub fn merged(self) -> Self {
        let merge = |m: RangeMap| -> RangeMap {
            m.into_iter()
                .map(|(k, v)| (k, merge_ranges(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect()
        };
        EtlOffsets {
            filtered: merge(self.filtered),
            moved: merge(self.moved),
        }
    }

    /// The number of ranges held (filtered and moved).
    pub fn range_count(&self) -> u64 {
        self.filtered
            .values()
            .chain(self.moved.values())
            .map(|v| v.len() as u64)
            .sum()
    }
}

/// Merges half-open ranges without losing multiplicity: every offset is covered by as many
/// output ranges as input ranges (so an offset recorded twice, which the audit must report as a
/// duplicate, is still recorded twice). The first "layer" is the sorted union with touching
/// ranges joined; offsets covered k times also appear in layers 2..=k. Empty ranges vanish.
pub fn merge_ranges(ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut events: Vec<(i64, i64)> = ranges
        .iter()
        .filter(|(a, b)| a < b)
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    events.sort_unstable();
    // maximal segments of constant positive multiplicity, in order
    let mut segments: Vec<(i64, i64, i64)> = Vec::new();
    let (mut depth, mut prev) = (0i64, i64::MIN);
    for (x, d) in events {
        if x > prev && depth > 0 {
            segments.push((prev, x, depth));
        }
        depth += d;
        prev = x;
    }
    let layers = segments.iter().map(|s| s.2).max().unwrap_or(0);
    let mut out = Vec::new();
    for k in 1..=layers {
        let mut layer: Vec<(i64, i64)> = Vec::new();
        for &(a, b, m) in &segments {
            if m < k {
                continue;
            }
            match layer.last_mut() {
                Some((_, end)) if *end == a => *end = b,
                _ => layer.push((a, b)),
            }
        }
        out.extend(layer);
    }
    out
}

/// Inclusive version ranges, sorted, overlapping and adjacent ones joined.
pub fn merge_versions(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(a, b)| a <= b);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The number of versions in inclusive ranges.
pub fn version_count(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(a, b)| b - a + 1).sum()
}

/// The inclusive ranges of versions in `from..=to` that `covered` (inclusive ranges, any order)
/// does not cover.
pub fn uncovered(from: u64, to: u64, covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if from > to {
        return out;
    }
    let mut next = from;
    for (a, b) in merge_versions(covered.to_vec()) {
        if b < next {
            continue;
        }
        if a > to {
            break;
        }
        if a > next {
            out.push((next, a - 1));
        }
        next = match b.checked_add(1) {
            Some(n) => n,
            None => return out,
        };
        if next > to {
            return out;
        }
    }
    out.push((next, to));
    out
}

/// The versions in `from..=to` missing from `present`, as inclusive ranges.
pub fn version_gaps(from: u64, to: u64, present: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let covered: Vec<(u64, u64)> = present.range(from..=to).map(|&v| (v, v)).collect();
    uncovered(from, to, &covered)
}

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

/// What one [`fold`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldOutcome {
    /// Versions folded by this call (0: the ledger was already at `up_to`).
    pub versions: u64,
    /// Ranges (filtered + moved) in the object written.
    pub ranges: u64,
    /// Versions whose commit file was gone, recorded as unverifiable.
    pub unverifiable_versions: u64,
    /// The object written, if any.
    pub object: Option<String>,
    /// The last version folded into the ledger (by this call or an earlier one).
    pub folded_to: Option<u64>,
}

/// The store of one table, with its name and URL for errors.
struct Ledger<'a> {
    store: &'a dyn ObjectStore,
    table: &'a str,
    url: &'a Url,
}

impl Ledger<'_> {
    fn store_error(&self, path: &ObjPath, source: object_store::Error) -> LakeError {
        LakeError::Store {
            table: self.table.to_string(),
            url: self.url.to_string(),
            path: path.to_string(),
            source: Box::new(source),
        }
        .classified(self.url.as_str())
    }

    fn bad(&self, path: &ObjPath, reason: String) -> LakeError {
        LakeError::EtlLedger {
            table: self.table.to_string(),
            url: self.url.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    /// The ledger objects' first versions and paths, in version order.
    async fn keys(&self) -> Result<Vec<(u64, ObjPath)>, LakeError> {
        let prefix = ObjPath::from(LEDGER_PREFIX);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(&prefix, e))?;
        let mut keys: Vec<(u64, ObjPath)> = listed
            .into_iter()
            .filter_map(|m| LedgerEntry::from_of(&m.location).map(|v| (v, m.location)))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn get(&self, path: &ObjPath) -> Result<Option<Vec<u8>>, LakeError> {
        match self.store.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.store_error(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(path, e)),
        }
    }

    async fn entry(&self, from: u64, path: &ObjPath) -> Result<LedgerEntry, LakeError> {
        let bytes = self
            .get(path)
            .await?
            .ok_or_else(|| self.bad(path, "listed but gone: a ledger object was deleted".into()))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| self.bad(path, format!("not JSON: {e}")))?;
        let e = LedgerEntry::from_json(&v).map_err(|r| self.bad(path, r))?;
        if e.from != from {
            return Err(self.bad(path, format!("holds versions from {} on", e.from)));
        }
        Ok(e)
    }

    /// Every ledger object, in version order.
    async fn entries(&self, keys: &[(u64, ObjPath)]) -> Result<Vec<LedgerEntry>, LakeError> {
        futures::stream::iter(keys.iter().map(|(v, p)| self.entry(*v, p)))
            .buffered(READS)
            .try_collect()
            .await
    }

    /// The versions in `from..=to` that have a commit file.
    async fn log_versions(&self, from: u64, to: u64) -> Result<BTreeSet<u64>, LakeError> {
        let prefix = ObjPath::from(LOG_PREFIX);
        // every name of version ≥ from sorts after `<from:020>` (and those below before it)
        let offset = ObjPath::from(format!("{LOG_PREFIX}/{from:020}"));
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list_with_offset(Some(&prefix), &offset)
            .try_collect()
            .await
            .map_err(|e| self.store_error(&prefix, e))?;
        Ok(listed
            .iter()
            .filter_map(|m| commit_version(&m.location))
            .filter(|v| (from..=to).contains(v))
            .collect())
    }

    /// The offsets of the commits `versions` (their lists concatenated) and the versions whose
    /// file vanished since it was listed.
    async fn commits(&self, versions: &BTreeSet<u64>) -> Result<(EtlOffsets, Vec<u64>), LakeError> {
        let read = |v: u64| async move {
            let path = ObjPath::from(format!("{LOG_PREFIX}/{v:020}.json"));
            let Some(bytes) = self.get(&path).await? else {
                return Ok::<_, LakeError>((v, None));
            };
            let offsets = commit_file_offsets(&bytes)
                .map_err(|r| self.bad(&path, format!("version {v}: {r}")))?;
            Ok((v, Some(offsets)))
        };
        let read: Vec<(u64, Option<EtlOffsets>)> =
            futures::stream::iter(versions.iter().map(|&v| read(v)))
                .buffered(READS)
                .try_collect()
                .await?;
        let mut out = EtlOffsets::default();
        let mut vanished = Vec::new();
        for (v, o) in read {
            match o {
                Some(o) => out.extend(o),
                None => vanished.push(v),
            }
        }
        Ok((out, vanished))
    }

    /// The offsets of the commit files in `from..=to` and the versions without one.
    async fn log_range(
        &self,
        from: u64,
        to: u64,
    ) -> Result<(EtlOffsets, Vec<(u64, u64)>), LakeError> {
        let mut present = self.log_versions(from, to).await?;
        let (offsets, vanished) = self.commits(&present).await?;
        for v in vanished {
            present.remove(&v);
        }
        Ok((offsets, version_gaps(from, to, &present)))
    }
}

/// The version of a commit file's path (`_delta_log/<20 digits>.json`).
fn commit_version(path: &ObjPath) -> Option<u64> {
    let name = path.filename()?;
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Folds the commits after the ledger's last version up to `up_to` into one new ledger object
/// of the table whose root `store` is (`DeltaTable::log_store().object_store(None)`). Always
/// writes an object when there is a version to fold, even without ranges: it records how far the
/// ledger goes. Versions whose commit file is already gone are recorded as unverifiable (with a
/// warning). Call it before anything that may clean the log up to `up_to`.
pub async fn fold(
    store: &dyn ObjectStore,
    table: &str,
    url: &Url,
    up_to: u64,
) -> Result<FoldOutcome, LakeError> {
    let ledger = Ledger { store, table, url };
    for _ in 0..ATTEMPTS {
        let keys = ledger.keys().await?;
        let folded_to = match keys.last() {
            Some((v, p)) => Some(ledger.entry(*v, p).await?.to),
            None => None,
        };
        let from = folded_to.map_or(0, |t| t + 1);
        if from > up_to {
            return Ok(FoldOutcome {
                folded_to,
                ..Default::default()
            });
        }
        let (offsets, gaps) = ledger.log_range(from, up_to).await?;
        let entry = LedgerEntry {
            from,
            to: up_to,
            offsets: offsets.merged(),
            unverifiable: gaps,
        };
        let path = LedgerEntry::path(from);
        let body =
            serde_json::to_vec(&entry.to_json()).map_err(|e| ledger.bad(&path, e.to_string()))?;
        let put = store
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match put {
            Ok(_) => {
                let unverifiable = version_count(&entry.unverifiable);
                if unverifiable > 0 {
                    tracing::warn!(table, versions = ?entry.unverifiable,
                        "commit files already cleaned from the log before their filtered/moved \
                         offsets were folded into the ETL ledger: the audit cannot vouch for \
                         those versions");
                }
                let outcome = FoldOutcome {
                    versions: up_to - from + 1,
                    ranges: entry.offsets.range_count(),
                    unverifiable_versions: unverifiable,
                    object: Some(path.to_string()),
                    folded_to: Some(up_to),
                };
                tracing::info!(
                    table,
                    from,
                    to = up_to,
                    ranges = outcome.ranges,
                    "ETL ledger fold"
                );
                return Ok(outcome);
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                tracing::info!(
                    table,
                    from,
                    "another fold wrote this ledger object first; re-reading"
                );
            }
            Err(e) => return Err(ledger.store_error(&path, e)),
        }
    }
    Err(ledger.bad(
        &ObjPath::from(LEDGER_PREFIX),
        format!("lost the race to write the next object {ATTEMPTS} times"),
    ))
}

/// The filtered and moved offsets a table records for versions `0..=latest` (and any later
/// version already folded), each version read once: from the ledger where it covers the
/// version, from the version's commit file otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtlCoverage {
    /// The ranges, concatenated (not merged across sources: an offset recorded twice stays so).
    pub offsets: EtlOffsets,
    /// Versions whose offsets nobody can vouch for (inclusive ranges): recorded as such by a
    /// fold, or neither in the ledger nor in the log.
    pub unverifiable: Vec<(u64, u64)>,
    /// Ledger objects read and the versions they cover.
    pub ledger_objects: usize,
    pub ledger_versions: u64,
    /// Commit files read.
    pub log_versions: u64,
}

/// Checks that ledger entries (in `from` order) cover each version at most once.
pub fn check_chain(entries: &[LedgerEntry]) -> Result<(), String> {
    for w in entries.windows(2) {
        if w[1].from <= w[0].to {
            return Err(format!(
                "objects {} and {} overlap (versions {}..={} and {}..={})",
                LedgerEntry::path(w[0].from),
                LedgerEntry::path(w[1].from),
                w[0].from,
                w[0].to,
                w[1].from,
                w[1].to
            ));
        }
    }
    Ok(())
}

/// The table's [`EtlCoverage`] up to `latest` (its current version). A commit file cleaned
/// between the ledger's listing and the log's (a fold and cleanup running meanwhile) makes it
/// read the ledger again.
pub async fn coverage(
    store: &dyn ObjectStore,
    table: &str,
    url: &Url,
    latest: u64,
) -> Result<EtlCoverage, LakeError> {
    let ledger = Ledger { store, table, url };
    let mut keys = ledger.keys().await?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let entries = ledger.entries(&keys).await?;
        check_chain(&entries).map_err(|r| ledger.bad(&ObjPath::from(LEDGER_PREFIX), r))?;
        let covered: Vec<(u64, u64)> = entries.iter().map(|e| (e.from, e.to)).collect();
        let mut out = EtlCoverage {
            ledger_objects: entries.len(),
            ledger_versions: version_count(&covered),
            ..Default::default()
        };
        let mut unverifiable = Vec::new();
        for e in entries {
            out.offsets.extend(e.offsets);
            unverifiable.extend(e.unverifiable);
        }
        let mut log_gaps = Vec::new();
        for (a, b) in uncovered(0, latest, &covered) {
            let (offsets, gaps) = ledger.log_range(a, b).await?;
            out.log_versions += (b - a + 1) - version_count(&gaps);
            out.offsets.extend(offsets);
            log_gaps.extend(gaps);
        }
        if !log_gaps.is_empty() && attempt < ATTEMPTS {
            let again = ledger.keys().await?;
            if again != keys {
                keys = again;
                continue;
            }
        }
        unverifiable.extend(log_gaps);
        out.unverifiable = merge_versions(unverifiable);
        return Ok(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use proptest::prelude::*;

    /// How many of `ranges` cover `o`.
    fn depth(ranges: &[(i64, i64)], o: i64) -> usize {
        ranges.iter().filter(|(a, b)| *a <= o && o < *b).count()
    }

    proptest! {
        #[test]
        fn merging_keeps_every_offsets_multiplicity(
            ranges in prop::collection::vec((0i64..60, 0i64..8), 0..12)
        ) {
            let ranges: Vec<(i64, i64)> = ranges.into_iter().map(|(a, l)| (a, a + l)).collect();
            let merged = merge_ranges(ranges.clone());
            for o in -1..70 {
                prop_assert_eq!(depth(&merged, o), depth(&ranges, o), "offset {}", o);
            }
            prop_assert!(merged.iter().all(|(a, b)| a < b));
            // idempotent
            prop_assert_eq!(merge_ranges(merged.clone()), merged);
        }

        #[test]
        fn disjoint_ranges_merge_into_one_sorted_layer(
            mut starts in prop::collection::btree_set(0i64..200, 0..20)
        ) {
            // disjoint ranges [s, s+1) from a set, shuffled by reversing
            let ranges: Vec<(i64, i64)> = std::mem::take(&mut starts).into_iter().rev().map(|s| (s, s + 1)).collect();
            let merged = merge_ranges(ranges.clone());
            prop_assert!(merged.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", merged);
            prop_assert_eq!(
                merged.iter().map(|(a, b)| b - a).sum::<i64>(),
                ranges.len() as i64
            );
        }

        #[test]
        fn gaps_and_present_versions_partition_the_range(
            from in 0u64..20, len in 0u64..40,
            present in prop::collection::btree_set(0u64..70, 0..40)
        ) {
            let to = from + len;
            let gaps = version_gaps(from, to, &present);
            for v in from..=to {
                let in_gap = gaps.iter().any(|(a, b)| *a <= v && v <= *b);
                prop_assert_eq!(in_gap, !present.contains(&v), "version {}", v);
            }
            prop_assert!(gaps.iter().all(|(a, b)| from <= *a && a <= b && *b <= to));
            prop_assert!(gaps.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{:?}", gaps);
            prop_assert_eq!(version_count(&gaps), (from..=to).filter(|v| !present.contains(v)).count() as u64);
        }

        #[test]
        fn uncovered_is_the_complement(
            latest in 0u64..50,
            covered in prop::collection::vec((0u64..60, 0u64..10), 0..6)
        ) {
            let covered: Vec<(u64, u64)> = covered.into_iter().map(|(a, l)| (a, a + l)).collect();
            let out = uncovered(0, latest, &covered);
            for v in 0..=latest {
                let c = covered.iter().any(|(a, b)| *a <= v && v <= *b);
                let u = out.iter().any(|(a, b)| *a <= v && v <= *b);
                prop_assert_eq!(c, !u, "version {}", v);
            }
        }
    }

    #[test]
    fn merging_examples() {
        assert_eq!(
            merge_ranges(vec![(5, 7), (0, 2), (2, 3), (9, 9)]),
            vec![(0, 3), (5, 7)]
        );
        // offsets 1 and 2 listed twice stay listed twice
        assert_eq!(merge_ranges(vec![(0, 3), (1, 4)]), vec![(0, 4), (1, 3)]);
        assert_eq!(
            merge_versions(vec![(4, 5), (0, 1), (2, 3), (8, 9), (9, 9)]),
            vec![(0, 5), (8, 9)]
        );
        assert_eq!(
            uncovered(0, 9, &[(2, 3), (5, 5)]),
            vec![(0, 1), (4, 4), (6, 9)]
        );
        assert_eq!(uncovered(0, 3, &[(0, 7)]), vec![]);
    }

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

    fn url() -> Url {
        Url::parse("memory:///t").expect("url")
    }

    /// Writes commit `v` with `filtered` ranges of topic `t`, partition 0.
    async fn commit(store: &InMemory, v: u64, filtered: &[(i64, i64)], moved: &[(i64, i64)]) {
        let mut info = serde_json::Map::new();
        info.insert("operation".into(), json!("STREAMING UPDATE"));
        let one =
            |r: &[(i64, i64)]| offset_list(&RangeMap::from([(("t".to_string(), 0), r.to_vec())]));
        if !filtered.is_empty() {
            info.insert(FILTERED_INFO_KEY.into(), one(filtered));
        }
        if !moved.is_empty() {
            info.insert(MOVED_INFO_KEY.into(), one(moved));
        }
        let body = format!(
            "{}\n{}\n",
            json!({"commitInfo": info}),
            json!({"add": {"path": format!("f{v}.parquet")}})
        );
        store
            .put(
                &ObjPath::from(format!("_delta_log/{v:020}.json")),
                PutPayload::from(body.into_bytes()),
            )
            .await
            .expect("put");
    }

    async fn clean(store: &InMemory, versions: std::ops::RangeInclusive<u64>) {
        for v in versions {
            store
                .delete(&ObjPath::from(format!("_delta_log/{v:020}.json")))
                .await
                .expect("delete");
        }
    }

    /// The sorted offsets of `t`/0 the coverage holds (with repeats) and the unverifiable versions.
    fn flat(c: &EtlCoverage) -> (Vec<i64>, Vec<i64>, Vec<(u64, u64)>) {
        let key = ("t".to_string(), 0);
        let expand = |m: &RangeMap| {
            let mut v: Vec<i64> = m
                .get(&key)
                .into_iter()
                .flatten()
                .flat_map(|&(a, b)| a..b)
                .collect();
            v.sort();
            v
        };
        (
            expand(&c.offsets.filtered),
            expand(&c.offsets.moved),
            c.unverifiable.clone(),
        )
    }

    #[tokio::test]
    async fn folds_survive_cleanup_and_each_version_counts_once() {
        let store = InMemory::new();
        let u = url();
        commit(&store, 0, &[], &[]).await;
        commit(&store, 1, &[(0, 2)], &[]).await;
        commit(&store, 2, &[(2, 3), (5, 6)], &[(3, 4)]).await;
        commit(&store, 3, &[(9, 10)], &[]).await;
        let before = coverage(&store, "t", &u, 3).await.expect("coverage");
        assert_eq!(before.log_versions, 4);
        assert_eq!(flat(&before), (vec![0, 1, 2, 5, 9], vec![3], vec![]));

        let f = fold(&store, "t", &u, 2).await.expect("fold");
        assert_eq!(
            f,
            FoldOutcome {
                versions: 3,
                ranges: 3, // [0,3) and [5,6) filtered, [3,4) moved
                unverifiable_versions: 0,
                object: Some(format!("{LEDGER_PREFIX}/{:020}.json", 0)),
                folded_to: Some(2),
            }
        );
        // again: nothing to fold, nothing written
        let again = fold(&store, "t", &u, 2).await.expect("fold");
        assert_eq!(
            (again.versions, again.object, again.folded_to),
            (0, None, Some(2))
        );
        // the ledger and the log: the same offsets, each version once
        let mid = coverage(&store, "t", &u, 3).await.expect("coverage");
        assert_eq!(flat(&mid), flat(&before));
        assert_eq!((mid.ledger_versions, mid.log_versions), (3, 1));
        // the log cleaned up to version 2: nothing changes
        clean(&store, 0..=2).await;
        let after = coverage(&store, "t", &u, 3).await.expect("coverage");
        assert_eq!(flat(&after), flat(&before));
        assert_eq!((after.ledger_objects, after.log_versions), (1, 1));

        // versions 4..=6 land; 4 and 5 are cleaned by someone else before any fold
        commit(&store, 4, &[(10, 12)], &[]).await;
        commit(&store, 5, &[(12, 13)], &[]).await;
        commit(&store, 6, &[(20, 21)], &[]).await;
        clean(&store, 4..=5).await;
        let unfolded = coverage(&store, "t", &u, 6).await.expect("coverage");
        assert_eq!(flat(&unfolded).2, vec![(4, 5)]);
        let f = fold(&store, "t", &u, 6).await.expect("fold");
        assert_eq!(
            (f.versions, f.ranges, f.unverifiable_versions),
            (4, 2, 2),
            "3..=6: [9,10) and [20,21); 4 and 5 gone"
        );
        clean(&store, 3..=3).await;
        clean(&store, 6..=6).await;
        let c = coverage(&store, "t", &u, 6).await.expect("coverage");
        assert_eq!(flat(&c), (vec![0, 1, 2, 5, 9, 20], vec![3], vec![(4, 5)]));
        assert_eq!(
            (c.ledger_objects, c.ledger_versions, c.log_versions),
            (2, 7, 0)
        );
    }

    #[tokio::test]
    async fn an_offset_recorded_twice_stays_twice_through_a_fold() {
        let store = InMemory::new();
        let u = url();
        commit(&store, 0, &[(0, 3)], &[]).await;
        commit(&store, 1, &[(2, 4)], &[]).await;
        fold(&store, "t", &u, 1).await.expect("fold");
        clean(&store, 0..=1).await;
        let c = coverage(&store, "t", &u, 1).await.expect("coverage");
        assert_eq!(flat(&c).0, vec![0, 1, 2, 2, 3]);
    }

    #[tokio::test]
    async fn a_fold_that_lost_the_race_folds_only_what_is_left() {
        let store = InMemory::new();
        let u = url();
        for v in 0..5 {
            commit(&store, v, &[(v as i64, v as i64 + 1)], &[]).await;
        }
        // another fold wrote 0..=2 first: the put-if-absent key is the first version
        fold(&store, "t", &u, 2).await.expect("fold");
        let second = LedgerEntry {
            from: 0,
            to: 4,
            offsets: EtlOffsets::default(),
            unverifiable: Vec::new(),
        };
        let put = store
            .put_opts(
                &LedgerEntry::path(0),
                PutPayload::from(serde_json::to_vec(&second.to_json()).expect("json")),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        assert!(
            matches!(put, Err(object_store::Error::AlreadyExists { .. })),
            "{put:?}"
        );
        let f = fold(&store, "t", &u, 4).await.expect("fold");
        assert_eq!(
            (f.versions, f.object),
            (2, Some(LedgerEntry::path(3).to_string()))
        );
        clean(&store, 0..=4).await;
        let c = coverage(&store, "t", &u, 4).await.expect("coverage");
        assert_eq!(flat(&c).0, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn overlapping_or_corrupt_objects_are_errors_naming_them() {
        let store = InMemory::new();
        let u = url();
        commit(&store, 0, &[(0, 1)], &[]).await;
        commit(&store, 1, &[(1, 2)], &[]).await;
        fold(&store, "t", &u, 1).await.expect("fold");
        let overlapping = LedgerEntry {
            from: 1,
            to: 1,
            offsets: EtlOffsets::default(),
            unverifiable: Vec::new(),
        };
        store
            .put(
                &LedgerEntry::path(1),
                PutPayload::from(serde_json::to_vec(&overlapping.to_json()).expect("json")),
            )
            .await
            .expect("put");
        let e = coverage(&store, "t", &u, 1)
            .await
            .expect_err("overlap")
            .to_string();
        assert!(
            e.contains("overlap") && e.contains("00000000000000000001.json"),
            "{e}"
        );
        store
            .put(
                &LedgerEntry::path(1),
                PutPayload::from_static(b"{\"format\":1}"),
            )
            .await
            .expect("put");
        let e = coverage(&store, "t", &u, 1)
            .await
            .expect_err("corrupt")
            .to_string();
        assert!(
            e.contains("_loglake/etl_offsets/00000000000000000001.json")
                && e.contains("no version `from`"),
            "{e}"
        );
        // a commit file that is not JSON: named with its version
        store
            .put(
                &ObjPath::from(format!("_delta_log/{:020}.json", 2)),
                PutPayload::from_static(b"{\"commitInfo\": {oops"),
            )
            .await
            .expect("put");
        store.delete(&LedgerEntry::path(1)).await.expect("delete");
        let e = fold(&store, "t", &u, 2)
            .await
            .expect_err("bad commit")
            .to_string();
        assert!(
            e.contains("_delta_log/00000000000000000002.json") && e.contains("version 2: line 1"),
            "{e}"
        );
    }
}
