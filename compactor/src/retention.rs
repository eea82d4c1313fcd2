//! `loglake retention`: drops the data files whose rows are all past their retention.
//!
//! A table keeps its rows `retention_days` after their partition's event time ended, and the
//! rows of a namespace listed in `retention_by_namespace` that many days instead (longer or
//! shorter). Nothing is rewritten: a file goes, as a Delta `remove` with `dataChange=true`, when
//! every row it may hold is past its days. Which namespaces a file may hold comes from its
//! statistics (`namespace` min and max; a partition value when the table is partitioned by
//! namespace): every override namespace between them counts, and so does the default unless
//! min = max names an override. A file whose rows might belong to a namespace kept for ever, or
//! whose end is unknown, stays. Mixed files of a short-lived and a long-lived namespace stay until
//! the longer days pass; the compactor's sort by namespace keeps such files few.
//!
//! [`plan_retention`] is pure and property-tested: it never drops a file before the days of any
//! row it may hold.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::protocol::DeltaOperation;
use serde::Serialize;
use url::Url;

use crate::compact::plain_path;
use crate::error::{CompactError, delta_err};
use crate::latest::{Decision, Took, commit_at_latest, open_existing, removes, take_lease};
use crate::lease::Lease;
use crate::plan::partition_end;

/// Days to keep rows: a default (`None`: for ever) and per-namespace overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    pub default_days: Option<u32>,
    pub by_namespace: BTreeMap<String, u32>,
}

impl RetentionPolicy {
    /// Whether the policy can drop anything.
    pub fn is_empty(&self) -> bool {
        self.default_days.is_none() && self.by_namespace.is_empty()
    }

    /// Days the rows of `namespace` are kept (`None`: for ever).
    pub fn days_for(&self, namespace: &str) -> Option<u32> {
        self.by_namespace
            .get(namespace)
            .copied()
            .or(self.default_days)
    }

    /// Days a file is kept whose rows' namespaces lie within `range` (min, max; `None`:
    /// unknown): the longest of the days of every namespace it may hold. `None`: for ever.
    pub fn days_for_range(&self, range: Option<(&str, &str)>) -> Option<u32> {
        match range {
            Some((lo, hi)) if lo == hi => self.days_for(lo),
            _ => {
                // the default applies to any namespace without an override in the range
                let mut days = self.default_days?;
                for (ns, d) in &self.by_namespace {
                    let inside =
                        range.is_none_or(|(lo, hi)| lo <= ns.as_str() && ns.as_str() <= hi);
                    if inside {
                        days = days.max(*d);
                    }
                }
                Some(days)
            }
        }
    }
}

/// A data file as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAge {
    pub path: String,
    pub size: u64,
    pub rows: Option<u64>,
    /// When the file's event time ends: its partition's end (dt/hour), else its max `ts`.
    pub end: Option<DateTime<Utc>>,
    /// The namespaces its rows may have: (min, max), `None` when unknown.
    pub namespaces: Option<(String, String)>,
}

/// A file past its retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expired {
    pub path: String,
    pub size: u64,
    pub rows: Option<u64>,
    pub days: u32,
}

/// The files of `files` whose every possible row is past its days at `now`.
pub fn plan_retention(
    files: &[FileAge],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Expired> {
    files
        .iter()
        .filter_map(|f| {
            let range = f.namespaces.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            let days = policy.days_for_range(range)?;
            let until = f
                .end?
                .checked_add_signed(chrono::Duration::days(i64::from(days)))?;
            (until <= now).then(|| Expired {
                path: f.path.clone(),
                size: f.size,
                rows: f.rows,
                days,
            })
        })
        .collect()
}

/// How a retention run goes (the flags of `loglake retention`).
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub dry_run: bool,
    pub lease_ttl: std::time::Duration,
    pub lease_wait: std::time::Duration,
    pub owner: String,
    /// Files removed per commit.
    pub batch: usize,
}

/// What one table's retention run did (one JSON object per table on stdout).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub table: String,
    pub url: String,
    pub lease: String,
    pub policy: RetentionPolicy,
    pub version_before: u64,
    pub version_after: u64,
    pub files_seen: usize,
    pub files_removed: usize,
    pub bytes_removed: u64,
    pub rows_removed: u64,
    /// Partitions (by values) all of whose files went.
    pub partitions_dropped: usize,
    pub commits: usize,
    /// With `--dry-run`: the files that would go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Expired>,
    pub duration_ms: u64,
}

type Values = Vec<(String, Option<String>)>;

/// The table's data files with their ends and namespace ranges, and each file's partition.
fn file_ages(
    table: &DeltaTable,
    name: &str,
    url: &Url,
) -> Result<(Vec<FileAge>, HashMap<String, Values>), CompactError> {
    let state = table
        .snapshot()
        .map_err(delta_err(name, url, "reading", 0))?;
    let columns: Vec<String> = state.metadata().partition_columns().to_vec();
    let mut ages = Vec::new();
    let mut parts = HashMap::new();
    for view in state.log_data().iter() {
        let path = view.path().to_string();
        if !plain_path(&path) {
            continue; // see compact::plain_path: a remove of the decoded path would not match
        }
        let map = view.partition_values_map();
        let values: Values = columns
            .iter()
            .map(|c| (c.clone(), map.get(c).cloned().flatten()))
            .collect();
        let stats: Option<serde_json::Value> =
            view.stats().and_then(|s| serde_json::from_str(&s).ok());
        let stat = |which: &str, col: &str| {
            stats
                .as_ref()
                .and_then(|s| s.pointer(&format!("/{which}/{col}")))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let max_ts = stat("maxValues", "ts")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        let nulls = stats
            .as_ref()
            .and_then(|s| s.pointer("/nullCount/namespace"))
            .and_then(|v| v.as_u64());
        let namespaces = match map.get("namespace") {
            Some(Some(ns)) => Some((ns.clone(), ns.clone())),
            // a null partition value: rows without a namespace, which no override names
            Some(None) => Some((String::new(), String::new())),
            None => match (
                stat("minValues", "namespace"),
                stat("maxValues", "namespace"),
                nulls,
            ) {
                // rows without a namespace too: "" widens the range so the default counts
                (Some(_), Some(hi), Some(n)) if n > 0 => Some((String::new(), hi)),
                (Some(lo), Some(hi), Some(_)) => Some((lo, hi)),
                // no statistics (or no null count): unknown, every override counts
                _ => None,
            },
        };
        ages.push(FileAge {
            path: path.clone(),
            size: view.size().max(0) as u64,
            rows: view.num_records().map(|n| n as u64),
            end: partition_end(&values).or(max_ts),
            namespaces,
        });
        parts.insert(path, values);
    }
    Ok((ages, parts))
}

/// Applies `policy` to the table `name` at `url`.
pub async fn retain_table(
    name: &str,
    url: &Url,
    storage_options: &std::collections::HashMap<String, String>,
    policy: &RetentionPolicy,
    s: &RetentionSettings,
) -> Result<RetentionReport, CompactError> {
    let started = Instant::now();
    let mut r = RetentionReport {
        table: name.to_string(),
        url: url.to_string(),
        policy: policy.clone(),
        ..Default::default()
    };
    let (mut table, v0) = open_existing(name, url, storage_options).await?;
    r.version_before = v0;
    r.version_after = v0;
    if policy.is_empty() {
        r.lease = "not needed (no retention)".into();
        return Ok(r);
    }
    let store = table.log_store().object_store(None);
    let mut lease = Lease::new(name, store, s.owner.clone(), s.lease_ttl);
    let took = take_lease(name, url, &mut table, &mut lease, s.dry_run, s.lease_wait).await?;
    r.lease = took.text();
    if matches!(took, Took::HeldBy(_)) {
        return Ok(r);
    }
    let result = retain_held(name, url, &mut table, policy, s, &mut lease, &mut r).await;
    lease.release().await;
    result?;
    r.version_after = table.version().unwrap_or(v0);
    r.duration_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

async fn retain_held(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    policy: &RetentionPolicy,
    s: &RetentionSettings,
    lease: &mut Lease,
    r: &mut RetentionReport,
) -> Result<(), CompactError> {
    let (ages, parts) = file_ages(table, name, url)?;
    r.files_seen = ages.len();
    let expired = plan_retention(&ages, policy, Utc::now());
    // partitions all of whose files expire
    let mut per_part: BTreeMap<&Values, (usize, usize)> = BTreeMap::new();
    for v in parts.values() {
        per_part.entry(v).or_default().0 += 1;
    }
    for e in &expired {
        if let Some(v) = parts.get(&e.path) {
            per_part.entry(v).or_default().1 += 1;
        }
    }
    r.partitions_dropped = per_part.values().filter(|(all, gone)| all == gone).count();
    tracing::info!(table = %name, files = ages.len(), expired = expired.len(), "retention planned");
    if s.dry_run {
        r.files_removed = expired.len();
        r.bytes_removed = expired.iter().map(|e| e.size).sum();
        r.rows_removed = expired.iter().filter_map(|e| e.rows).sum();
        r.files = expired;
        return Ok(());
    }
    let margin = s.lease_ttl / 2;
    for batch in expired.chunks(s.batch.max(1)) {
        lease.ensure(margin).await?;
        let paths: HashSet<&str> = batch.iter().map(|e| e.path.as_str()).collect();
        let removed = commit_removes(name, url, table, &paths, policy).await?;
        r.commits += usize::from(!removed.is_empty());
        for e in batch.iter().filter(|e| removed.contains(e.path.as_str())) {
            r.files_removed += 1;
            r.bytes_removed += e.size;
            r.rows_removed += e.rows.unwrap_or(0);
        }
    }
    Ok(())
}

/// Commits the removal (`dataChange=true`) of those of `paths` still in the latest snapshot,
/// at exactly latest + 1 (retried on lost races); the paths removed.
async fn commit_removes(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    paths: &HashSet<&str>,
    policy: &RetentionPolicy,
) -> Result<HashSet<String>, CompactError> {
    let predicate = format!(
        "loglake retention: default {} days, by namespace {:?}",
        policy
            .default_days
            .map_or_else(|| "for ever".to_string(), |d| d.to_string()),
        policy.by_namespace
    );
    let done = commit_at_latest(name, url, table, None, |state| {
        let r = removes(state, paths, true);
        if r.actions.is_empty() {
            return Ok(Decision::Stop(r.found));
        }
        Ok(Decision::Commit {
            actions: r.actions,
            operation: Box::new(DeltaOperation::Delete {
                predicate: Some(predicate.clone()),
            }),
            out: r.found,
        })
    })
    .await?;
    Ok(done.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day(d: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + d * 86_400, 0).expect("time")
    }

    fn file(path: &str, end_day: i64, ns: Option<(&str, &str)>) -> FileAge {
        FileAge {
            path: path.into(),
            size: 10,
            rows: Some(1),
            end: Some(day(end_day)),
            namespaces: ns.map(|(a, b)| (a.into(), b.into())),
        }
    }

    fn policy(default: Option<u32>, by: &[(&str, u32)]) -> RetentionPolicy {
        RetentionPolicy {
            default_days: default,
            by_namespace: by.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn overrides_keep_longer_and_mixed_files_wait_for_the_longest() {
        let p = policy(Some(30), &[("payments", 365), ("scratch", 3)]);
        let now = day(100);
        let files = [
            file("old-web", 60, Some(("web", "web"))), // 40 days: past 30
            file("old-payments", 60, Some(("payments", "payments"))), // 40 < 365
            file("scratch-5d", 95, Some(("scratch", "scratch"))), // 5 > 3
            file("mixed", 60, Some(("api", "web"))),   // spans payments and scratch: 365
            file("mixed-low", 60, Some(("a", "b"))),   // no override inside: 30
            file("unknown-ns", 60, None),              // every override counts: 365
            file("fresh-web", 90, Some(("web", "web"))),
        ];
        let mut no_end = file("no-end", 0, Some(("web", "web")));
        no_end.end = None;
        let mut all = files.to_vec();
        all.push(no_end);
        let got: Vec<(String, u32)> = plan_retention(&all, &p, now)
            .into_iter()
            .map(|e| (e.path, e.days))
            .collect();
        assert_eq!(
            got,
            vec![
                ("old-web".to_string(), 30),
                ("scratch-5d".to_string(), 3),
                ("mixed-low".to_string(), 30)
            ]
        );
        // no default: only the namespaces named go
        let p = policy(None, &[("scratch", 3)]);
        let got: Vec<String> = plan_retention(&all, &p, now)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(got, vec!["scratch-5d".to_string()]);
        assert!(plan_retention(&all, &RetentionPolicy::default(), now).is_empty());
    }

    proptest! {
        /// No file goes before the days of any row it holds; a single-namespace file goes once
        /// its days have passed.
        #[test]
        fn never_early_and_single_namespace_files_go(
            default in proptest::option::of(1u32..60),
            overrides in proptest::collection::btree_map("[a-e]", 1u32..400, 0..4),
            files in proptest::collection::vec(
                (proptest::collection::btree_set("[a-f]", 1..4), 0i64..500), 1..30),
            now_day in 0i64..900,
        ) {
            let p = RetentionPolicy { default_days: default, by_namespace: overrides };
            let ages: Vec<FileAge> = files.iter().enumerate().map(|(i, (ns, end))| {
                let lo = ns.iter().next().cloned().unwrap_or_default();
                let hi = ns.iter().next_back().cloned().unwrap_or_default();
                FileAge {
                    path: format!("f{i}"),
                    size: 1,
                    rows: Some(ns.len() as u64),
                    end: Some(day(*end)),
                    namespaces: Some((lo, hi)),
                }
            }).collect();
            let now = day(now_day);
            let dropped: HashSet<String> =
                plan_retention(&ages, &p, now).into_iter().map(|e| e.path).collect();
            for (i, (ns, end)) in files.iter().enumerate() {
                let path = format!("f{i}");
                let every_row_expired = ns.iter().all(|n| {
                    p.days_for(n).is_some_and(|d| day(*end + i64::from(d)) <= now)
                });
                if dropped.contains(&path) {
                    prop_assert!(every_row_expired, "{path} dropped early: {ns:?} end {end}");
                }
                if ns.len() == 1 && every_row_expired {
                    prop_assert!(dropped.contains(&path), "{path} kept: {ns:?} end {end}");
                }
            }
        }
    }
}
