//! What to compact: a pure function from a table's files to groups of files to rewrite.
//!
//! Rules (DESIGN.md, "Compaction"):
//! - only **closed** partitions: their event-time span (from the `dt`/`hour` partition values,
//!   else the newest `ts` of their files) ended at least `settle` before `now`;
//! - a file the compactor wrote with the table's current layout (sort keys) is **settled**; every
//!   other file (the archiver's, another writer's, one sorted by older keys) is **fresh**;
//! - a partition without fresh files is done: a second run over an unchanged table plans nothing;
//! - the candidates of a partition with fresh files are its fresh files plus its settled files
//!   under `min_size` (late data merges into the small tail of an earlier compaction);
//! - candidates are packed first-fit-decreasing into groups of at most `target_size` input bytes
//!   (a file larger than that is a group of its own), so at most one group of a partition is
//!   under half the target;
//! - in a table without sort keys a fresh file of at least `min_size` counts as settled (a rewrite
//!   would only copy it);
//! - a group of one settled file gains nothing and is dropped.
//!
//! So every fresh file of a closed partition is planned, and a second run over the result plans
//! nothing (a property test checks both).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// One data file of a table, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Path relative to the table root, as in the Delta log.
    pub path: String,
    pub size: u64,
    /// `numRecords` from the file's statistics, when present.
    pub rows: Option<u64>,
    /// Written by the compactor with the table's current layout.
    pub settled: bool,
}

/// One partition of a table: its values (in the table's partition-column order), the end of its
/// event-time span if known, and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub values: Vec<(String, Option<String>)>,
    pub end: Option<DateTime<Utc>>,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Group input up to this many bytes (the table's `target_file_size_bytes`).
    pub target_size: u64,
    /// Settled files under this size are merged again when fresh files arrive.
    pub min_size: u64,
    /// A partition is closed once its span ended this long ago.
    pub settle: Duration,
    pub now: DateTime<Utc>,
    /// The table has sort keys: rewriting a lone fresh file sorts it (a gain).
    pub sorts: bool,
}

/// Files to rewrite into one sorted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub files: Vec<FileInfo>,
}

impl Group {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    pub fn rows(&self) -> Option<u64> {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// The groups of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionPlan {
    pub values: Vec<(String, Option<String>)>,
    pub groups: Vec<Group>,
}

/// The plan of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub partitions: Vec<PartitionPlan>,
    pub partitions_seen: usize,
    /// Partitions still open (their span ended less than `settle` ago).
    pub skipped_open: usize,
    /// Closed partitions where a rewrite gains nothing (no fresh files, or nothing to merge).
    pub skipped_done: usize,
}

impl Plan {
    pub fn groups(&self) -> impl Iterator<Item = (&PartitionPlan, &Group)> {
        self.partitions
            .iter()
            .flat_map(|p| p.groups.iter().map(move |g| (p, g)))
    }
}

/// The end of a partition's event-time span from its `dt` (`YYYY-MM-DD`) and `hour` (0–23)
/// values: the next hour, or the next day without `hour`. `None` without a parsable `dt`.
pub fn partition_end(values: &[(String, Option<String>)]) -> Option<DateTime<Utc>> {
    let get = |name: &str| {
        values
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    };
    let day = NaiveDate::parse_from_str(get("dt")?, "%Y-%m-%d").ok()?;
    let start = day.and_hms_opt(0, 0, 0)?.and_utc();
    match get("hour").map(|h| h.parse::<u32>()) {
        Some(Ok(h)) if h < 24 => Some(start + chrono::Duration::hours(i64::from(h) + 1)),
        Some(_) => None,
        None => Some(start + chrono::Duration::days(1)),
    }
}

/// Plans one table (see the module docs). Partitions come out in the order given.
pub fn plan(partitions: Vec<PartitionInfo>, opts: &PlanOptions) -> Plan {
    let mut out = Plan {
        partitions_seen: partitions.len(),
        ..Plan::default()
    };
    let settle = chrono::Duration::from_std(opts.settle).unwrap_or(chrono::Duration::MAX);
    for p in partitions {
        let closed = match p.end {
            Some(end) => end
                .checked_add_signed(settle)
                .is_some_and(|t| t <= opts.now),
            // no event time to go by (a table without dt/hour or ts): treated as closed
            None => true,
        };
        if !closed {
            out.skipped_open += 1;
            continue;
        }
        let groups = plan_partition(&p.files, opts);
        if groups.is_empty() {
            out.skipped_done += 1;
        } else {
            out.partitions.push(PartitionPlan {
                values: p.values,
                groups,
            });
        }
    }
    out
}

/// The groups of one closed partition.
fn plan_partition(files: &[FileInfo], opts: &PlanOptions) -> Vec<Group> {
    let settled = |f: &FileInfo| f.settled || (!opts.sorts && f.size >= opts.min_size);
    if files.iter().all(settled) {
        return Vec::new();
    }
    let mut candidates: Vec<&FileInfo> = files
        .iter()
        .filter(|f| !settled(f) || f.size < opts.min_size)
        .collect();
    // first-fit decreasing; ties by path so the plan is deterministic
    candidates.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let mut bins: Vec<(u64, Vec<FileInfo>)> = Vec::new();
    for f in candidates {
        match bins
            .iter_mut()
            .find(|(used, _)| used.saturating_add(f.size) <= opts.target_size)
        {
            Some((used, members)) => {
                *used += f.size;
                members.push(f.clone());
            }
            None => bins.push((f.size, vec![f.clone()])),
        }
    }
    bins.into_iter()
        .filter(|(_, members)| match members.as_slice() {
            [only] => !settled(only),
            _ => true,
        })
        .map(|(_, mut files)| {
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Group { files }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const MIB: u64 = 1 << 20;

    fn now() -> DateTime<Utc> {
        "2024-05-02T12:00:00Z".parse().expect("time")
    }

    fn opts(sorts: bool) -> PlanOptions {
        PlanOptions {
            target_size: 100 * MIB,
            min_size: 50 * MIB,
            settle: Duration::from_secs(3600),
            now: now(),
            sorts,
        }
    }

    fn file(path: &str, mib: u64, settled: bool) -> FileInfo {
        FileInfo {
            path: path.into(),
            size: mib * MIB,
            rows: Some(mib * 1000),
            settled,
        }
    }

    fn part(dt: &str, hour: &str, files: Vec<FileInfo>) -> PartitionInfo {
        let values = vec![
            ("dt".to_string(), Some(dt.to_string())),
            ("hour".to_string(), Some(hour.to_string())),
        ];
        PartitionInfo {
            end: partition_end(&values),
            values,
            files,
        }
    }

    #[test]
    fn partition_ends() {
        let v = |dt: &str, hour: Option<&str>| {
            let mut v = vec![("dt".to_string(), Some(dt.to_string()))];
            if let Some(h) = hour {
                v.push(("hour".to_string(), Some(h.to_string())));
            }
            partition_end(&v)
        };
        assert_eq!(
            v("2024-05-01", Some("07")),
            Some("2024-05-01T08:00:00Z".parse().expect("t"))
        );
        assert_eq!(
            v("2024-05-01", Some("23")),
            Some("2024-05-02T00:00:00Z".parse().expect("t"))
        );
        assert_eq!(
            v("2024-05-01", None),
            Some("2024-05-02T00:00:00Z".parse().expect("t"))
        );
        assert_eq!(v("2024-05-01", Some("24")), None);
        assert_eq!(v("yesterday", Some("1")), None);
        assert_eq!(
            partition_end(&[("namespace".into(), Some("a".into()))]),
            None
        );
    }

    #[test]
    fn open_partitions_wait_for_settle() {
        // 10:00–11:00 ended 1h before now (closed); 11:00–12:00 ended just now (open)
        let parts = vec![
            part(
                "2024-05-02",
                "10",
                vec![file("a", 1, false), file("b", 1, false)],
            ),
            part(
                "2024-05-02",
                "11",
                vec![file("c", 1, false), file("d", 1, false)],
            ),
        ];
        let p = plan(parts, &opts(true));
        assert_eq!(
            (p.partitions_seen, p.skipped_open, p.skipped_done),
            (2, 1, 0)
        );
        assert_eq!(p.partitions.len(), 1);
        assert_eq!(p.partitions[0].values[1].1.as_deref(), Some("10"));
        assert_eq!(p.partitions[0].groups.len(), 1);
        assert_eq!(p.partitions[0].groups[0].files.len(), 2);
    }

    #[test]
    fn groups_are_packed_up_to_the_target() {
        let files = vec![
            file("a", 60, false),
            file("b", 50, false),
            file("c", 40, false),
            file("d", 30, false),
            file("e", 150, false),
        ];
        let p = plan(vec![part("2024-05-01", "00", files)], &opts(true));
        let groups: Vec<Vec<&str>> = p.partitions[0]
            .groups
            .iter()
            .map(|g| g.files.iter().map(|f| f.path.as_str()).collect())
            .collect();
        // 150 alone; 60 + 40; 50 + 30
        assert_eq!(groups, vec![vec!["e"], vec!["a", "c"], vec!["b", "d"]]);
    }

    #[test]
    fn settled_partitions_and_lone_settled_files_are_skipped() {
        let done = part(
            "2024-05-01",
            "00",
            vec![file("s1", 90, true), file("s2", 10, true)],
        );
        let one_late = part(
            "2024-05-01",
            "01",
            vec![file("s1", 90, true), file("late", 1, false)],
        );
        let big_late = part(
            "2024-05-01",
            "02",
            vec![file("s1", 90, true), file("late", 60, false)],
        );
        let p = plan(vec![done, one_late, big_late], &opts(true));
        assert_eq!(p.skipped_done, 1);
        // the late file joins nothing (s1 is not small) but is sorted on its own
        let groups: Vec<Vec<&str>> = p
            .groups()
            .map(|(_, g)| g.files.iter().map(|f| f.path.as_str()).collect())
            .collect();
        assert_eq!(groups, vec![vec!["late"], vec!["late"]]);
        // without sort keys a fresh file of min_size or more is left as it is
        let unsorted = plan(
            vec![part(
                "2024-05-01",
                "01",
                vec![file("s1", 90, true), file("late", 60, false)],
            )],
            &opts(false),
        );
        assert_eq!((unsorted.partitions.len(), unsorted.skipped_done), (0, 1));
        // a small settled file merges with late data
        let small = part(
            "2024-05-01",
            "03",
            vec![file("s1", 20, true), file("late", 1, false)],
        );
        let p = plan(vec![small], &opts(false));
        assert_eq!(p.partitions[0].groups[0].files.len(), 2);
    }

    fn arb_partition(i: usize) -> impl Strategy<Value = PartitionInfo> {
        (
            prop::collection::vec((1u64..=250, any::<bool>()), 0..12),
            any::<bool>(),
        )
            .prop_map(move |(sizes, open)| {
                let files = sizes
                    .into_iter()
                    .enumerate()
                    .map(|(j, (mib, settled))| FileInfo {
                        path: format!("p{i}/f{j}"),
                        size: mib * MIB,
                        rows: Some(mib),
                        settled,
                    })
                    .collect();
                // one partition per index (hour = i); the day decides open or closed
                let dt = if open { "2024-05-03" } else { "2024-05-01" };
                part(dt, &format!("{i:02}"), files)
            })
    }

    fn arb_table() -> impl Strategy<Value = Vec<PartitionInfo>> {
        (0usize..6).prop_flat_map(|n| (0..n).map(arb_partition).collect::<Vec<_>>())
    }

    /// The table after a plan ran: each group's files replaced by one settled file, whose size
    /// is the input's scaled by `ratio` percent (sorting usually compresses better).
    fn apply(parts: &[PartitionInfo], plan: &Plan, ratio: u64) -> Vec<PartitionInfo> {
        let mut out = parts.to_vec();
        for pp in &plan.partitions {
            let Some(p) = out.iter_mut().find(|p| p.values == pp.values) else {
                continue;
            };
            for (k, g) in pp.groups.iter().enumerate() {
                let gone: HashSet<&str> = g.files.iter().map(|f| f.path.as_str()).collect();
                p.files.retain(|f| !gone.contains(f.path.as_str()));
                p.files.push(FileInfo {
                    path: format!("compacted-{k}-{}", p.files.len()),
                    size: (g.bytes() * ratio / 100).max(1),
                    rows: g.rows(),
                    settled: true,
                });
            }
        }
        out
    }

    proptest! {
        #[test]
        fn plans_are_sound(parts in arb_table(), sorts in any::<bool>(), ratio in 20u64..=100) {
            let o = opts(sorts);
            let p = plan(parts.clone(), &o);
            prop_assert_eq!(p.partitions_seen, parts.len());
            prop_assert_eq!(
                p.skipped_open + p.skipped_done + p.partitions.len(),
                parts.len()
            );
            let mut seen = HashSet::new();
            for pp in &p.partitions {
                let src = parts.iter().find(|x| x.values == pp.values).expect("partition");
                // only closed partitions
                let end = src.end.expect("end");
                prop_assert!(end + chrono::Duration::hours(1) <= o.now);
                let mut small_groups = 0;
                for g in &pp.groups {
                    prop_assert!(!g.files.is_empty());
                    // within the target unless a lone file
                    prop_assert!(g.files.len() == 1 || g.bytes() <= o.target_size);
                    // a group always gains: merges files, or sorts (settles) a fresh one
                    let lone = &g.files[0];
                    prop_assert!(
                        g.files.len() > 1
                            || !lone.settled && (sorts || lone.size < o.min_size)
                    );
                    if g.bytes() * 2 < o.target_size {
                        small_groups += 1;
                    }
                    for f in &g.files {
                        // every file once, from its own partition, a candidate
                        prop_assert!(seen.insert(f.path.clone()));
                        prop_assert!(src.files.contains(f));
                        // settled files are planned only when small
                        prop_assert!(!f.settled || f.size < o.min_size);
                    }
                }
                prop_assert!(small_groups <= 1, "{} groups under half the target", small_groups);
            }
            // every fresh file of a closed partition is planned (without sort keys: every
            // fresh file under min_size)
            for src in &parts {
                let closed = src.end.is_some_and(|e| e + chrono::Duration::hours(1) <= o.now);
                if !closed { continue; }
                for f in src.files.iter().filter(|f| !f.settled) {
                    let planned = seen.contains(&f.path);
                    prop_assert!(
                        planned || !sorts && f.size >= o.min_size,
                        "fresh file {} not planned", f.path
                    );
                }
            }
            // a second run over the result plans nothing
            let again = plan(apply(&parts, &p, ratio), &o);
            let left: Vec<_> = again.groups().map(|(_, g)| g.clone()).collect();
            prop_assert!(left.is_empty(), "second run planned {:?}", left);
        }
    }

    #[test]
    fn rows_add_up() {
        let g = Group {
            files: vec![file("a", 1, false), file("b", 2, false)],
        };
        assert_eq!((g.bytes(), g.rows()), (3 * MIB, Some(3000)));
        let mut h = g.clone();
        h.files[0].rows = None;
        assert_eq!(h.rows(), None);
    }
}
