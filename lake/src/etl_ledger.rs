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

mod format;
mod ranges;
mod store;

use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use url::Url;

use crate::error::LakeError;
pub use format::{
    LedgerEntry, commit_file_offsets, commit_info_offsets, offset_list, parse_offset_list,
};
pub use ranges::{
    EtlOffsets, RangeMap, merge_ranges, merge_versions, uncovered, version_count, version_gaps,
};
use store::Ledger;

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
        let folded_to = ledger.folded_to().await?;
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
        match ledger.create(&entry).await? {
            Some(path) => return Ok(folded(table, &entry, &path)),
            None => {
                tracing::info!(
                    table,
                    from,
                    "another fold wrote this ledger object first; re-reading"
                );
            }
        }
    }
    Err(ledger.bad(
        &ObjPath::from(LEDGER_PREFIX),
        format!("lost the race to write the next object {ATTEMPTS} times"),
    ))
}

/// What writing `entry` (at `path`) did, logged: a warning for unverifiable versions, then the
/// fold itself.
fn folded(table: &str, entry: &LedgerEntry, path: &ObjPath) -> FoldOutcome {
    let unverifiable = version_count(&entry.unverifiable);
    if unverifiable > 0 {
        tracing::warn!(table, versions = ?entry.unverifiable,
            "commit files already cleaned from the log before their filtered/moved \
             offsets were folded into the ETL ledger: the audit cannot vouch for \
             those versions");
    }
    let outcome = FoldOutcome {
        versions: entry.to - entry.from + 1,
        ranges: entry.offsets.range_count(),
        unverifiable_versions: unverifiable,
        object: Some(path.to_string()),
        folded_to: Some(entry.to),
    };
    tracing::info!(
        table,
        from = entry.from,
        to = entry.to,
        ranges = outcome.ranges,
        "ETL ledger fold"
    );
    outcome
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
    use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
    use serde_json::json;

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
