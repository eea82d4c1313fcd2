//! What every maintenance operation (compact, retention, delete, vacuum, checkpoint) does around
//! its own work, in one place:
//!
//! - [`open_existing`]: open a table that must exist (`NoTable` otherwise);
//! - [`take_lease`]: take the table's maintenance lease (DESIGN.md I8), or learn who holds it;
//! - [`refresh`]: re-read the log to its latest version;
//! - [`commit_at_latest`]: commit at exactly latest + 1, deciding the actions on the latest
//!   snapshot each attempt. deltalake 1.1's conflict checker ignores another commit's
//!   `dataChange=false` removes, so loglake never lets it rebase a commit: the commit is built
//!   with `max_retries(0)` and, after a lost race, re-decided on the new latest snapshot, where
//!   the operation itself checks that the files it removes are still there. Each commit carries
//!   a token in its `commitInfo`: a put whose answer was lost (the store's retry then finds the
//!   version taken) is recognised as the operation's own commit, not re-decided;
//! - [`removes`]: the remove actions for the files still in that latest snapshot — the one
//!   place compact, delete and retention take their removes from.

use std::collections::HashSet;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::table::state::DeltaTableState;
use loglake_lake::open_table;
use loglake_lake::sink::{commit_token, committed_by, no_log_maintenance};
use url::Url;

use crate::error::{CompactError, delta_err};
use crate::lease::Lease;

/// Commit attempts before giving up (each after a lost race).
const ATTEMPTS: usize = 50;

/// Opens the table `name` at `url`, which must exist; with its version.
pub(crate) async fn open_existing(
    name: &str,
    url: &Url,
    storage_options: &std::collections::HashMap<String, String>,
) -> Result<(DeltaTable, u64), CompactError> {
    let table = open_table(name, url, storage_options).await?;
    match table.version() {
        Some(v) => Ok((table, v)),
        None => Err(CompactError::NoTable {
            table: name.to_string(),
            url: url.to_string(),
        }),
    }
}

/// Re-reads the table's log up to its latest version.
pub(crate) async fn refresh(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
) -> Result<(), CompactError> {
    let v = table.version().unwrap_or(0);
    table
        .update_incremental(None)
        .await
        .map_err(delta_err(name, url, "re-reading", v))
}

/// The table's loaded snapshot.
pub(crate) fn snapshot<'a>(
    name: &str,
    url: &Url,
    table: &'a DeltaTable,
) -> Result<&'a DeltaTableState, CompactError> {
    let v = table.version().unwrap_or(0);
    table.snapshot().map_err(delta_err(name, url, "reading", v))
}

/// How taking the maintenance lease went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Took {
    /// A dry run takes no lease.
    DryRun,
    /// Another writer holds it (its owner): the operation skips the table.
    HeldBy(String),
    /// Taken; the table was re-read (the wait may have let other commits in).
    Acquired,
}

impl Took {
    /// The reports' `lease` field.
    pub(crate) fn text(&self) -> String {
        match self {
            Took::DryRun => "not taken (dry run)".into(),
            Took::HeldBy(owner) => format!("held by {owner}"),
            Took::Acquired => "acquired".into(),
        }
    }
}

/// Takes `lease` (waiting up to `wait`) unless `dry_run`; once taken, re-reads the table so the
/// operation plans on the latest version.
pub(crate) async fn take_lease(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    lease: &mut Lease,
    dry_run: bool,
    wait: Duration,
) -> Result<Took, CompactError> {
    if dry_run {
        return Ok(Took::DryRun);
    }
    if let Some(holder) = lease.acquire(wait).await? {
        tracing::warn!(table = %name, holder = %holder.owner,
            "another maintenance writer holds the table's lease; skipping it");
        return Ok(Took::HeldBy(holder.owner));
    }
    refresh(name, url, table).await?;
    Ok(Took::Acquired)
}

/// The removes an operation can commit on one snapshot: see [`removes`].
#[derive(Debug)]
pub(crate) struct Removes {
    /// A remove action (with the asked `dataChange`) per file of the paths still in the snapshot.
    pub actions: Vec<Action>,
    /// Those paths.
    pub found: HashSet<String>,
    /// The paths the snapshot no longer has (another writer removed them), sorted.
    pub missing: Vec<String>,
}

/// The removes of those of `paths` that are in `state`, and which are not. Operations build
/// their removes from the latest snapshot with this and decide on what is missing: a file another
/// writer removed since is never removed again (deltalake 1.1's conflict checker would let that
/// commit through).
pub(crate) fn removes(
    state: &DeltaTableState,
    paths: &HashSet<&str>,
    data_change: bool,
) -> Removes {
    let mut actions = Vec::new();
    let mut found = HashSet::new();
    for view in state.log_data().iter() {
        let p = view.path();
        if paths.contains(&*p) {
            actions.push(Action::Remove(view.remove_action(data_change)));
            found.insert(p.to_string());
        }
    }
    let mut missing: Vec<String> = paths
        .iter()
        .filter(|p| !found.contains(**p))
        .map(|p| p.to_string())
        .collect();
    missing.sort();
    Removes {
        actions,
        found,
        missing,
    }
}

/// What an operation decides on the latest snapshot.
pub(crate) enum Decision<T> {
    /// Commit these actions (removes taken from this snapshot) as `operation`.
    Commit {
        actions: Vec<Action>,
        operation: Box<DeltaOperation>,
        out: T,
    },
    /// Nothing to commit (e.g. every file is gone already, or another writer won).
    Stop(T),
}

/// The result of [`commit_at_latest`].
#[derive(Debug)]
pub(crate) struct Committed<T> {
    pub out: T,
    /// The committed version (`None`: the decision was to stop).
    pub version: Option<u64>,
    /// Lost races before it.
    pub retries: usize,
}

/// Re-reads the table, lets `decide` plan on the latest snapshot and commits its actions at
/// exactly latest + 1 with `metadata` (e.g. `operationMetrics`) in the commit info; after a lost
/// race it backs off and decides again on the new latest snapshot.
pub(crate) async fn commit_at_latest<T>(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    metadata: Option<(String, serde_json::Value)>,
    mut decide: impl FnMut(&DeltaTableState) -> Result<Decision<T>, CompactError>,
) -> Result<Committed<T>, CompactError> {
    let mut backoff = Duration::from_millis(50);
    let (token_key, token) = commit_token();
    // the version of an attempt whose answer may have been lost, and what it decided
    let mut ambiguous: Option<(u64, T)> = None;
    // one round more than ATTEMPTS: the last only looks whether the last attempt landed
    for attempt in 1..=ATTEMPTS + 1 {
        refresh(name, url, table).await?;
        if let Some((v, out)) = ambiguous.take()
            && landed(name, url, table, v, &token).await?
        {
            return Ok(Committed {
                out,
                version: Some(v),
                retries: attempt - 1,
            });
        }
        if attempt > ATTEMPTS {
            break;
        }
        let state = snapshot(name, url, table)?;
        let version = state.version();
        let (actions, operation, out) = match decide(state)? {
            Decision::Stop(out) => {
                return Ok(Committed {
                    out,
                    version: None,
                    retries: attempt - 1,
                });
            }
            Decision::Commit {
                actions,
                operation,
                out,
            } => (actions, operation, out),
        };
        let mut info = vec![(token_key.clone(), serde_json::Value::String(token.clone()))];
        info.extend(metadata.iter().cloned());
        let props = no_log_maintenance().with_max_retries(0).with_metadata(info);
        let result = CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(state), table.log_store(), *operation)
            .await;
        match result {
            Ok(done) => {
                let committed = done.version();
                table
                    .update_incremental(Some(committed))
                    .await
                    .map_err(delta_err(name, url, "re-reading", committed))?;
                return Ok(Committed {
                    out,
                    version: Some(committed),
                    retries: attempt - 1,
                });
            }
            Err(e) if loglake_lake::sink::is_lost_race(&e) => {
                // another writer's commit, or ours with its answer lost: looked at first in
                // the next round
                ambiguous = Some((version + 1, out));
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            Err(e) => return Err(delta_err(name, url, "committing", version + 1)(e)),
        }
    }
    Err(CompactError::RetriesExhausted {
        table: name.to_string(),
        attempts: ATTEMPTS,
        version: table.version().unwrap_or(0),
    })
}

/// Whether version `v`, taken while an attempt's answer was lost, is that attempt's commit (it
/// carries the operation's `token`): then it stands and is not decided again.
async fn landed(
    name: &str,
    url: &Url,
    table: &DeltaTable,
    v: u64,
    token: &str,
) -> Result<bool, CompactError> {
    let ours = committed_by(table, v, token)
        .await
        .map_err(delta_err(name, url, "reading", v))?;
    if ours {
        tracing::warn!(table = %name, version = v,
            "a commit reported as lost had landed (its answer was lost); it stands");
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::Add;
    use deltalake::protocol::SaveMode;
    use loglake_lake::{DeltaSink, table_url};
    use loglake_schemas::{TableKind, table_schema};
    use std::collections::HashMap;

    const FILES: [&str; 3] = [
        "dt=2026-12-01/hour=00/a.parquet",
        "dt=2026-12-01/hour=00/b.parquet",
        "dt=2026-12-01/hour=00/c.parquet",
    ];

    /// A container table (log only: the data files are never read) with the three `FILES` added
    /// at version 1; its URL.
    async fn table_of_three_files(dir: &tempfile::TempDir) -> (DeltaTable, Url) {
        let url = table_url(&dir.path().to_string_lossy()).expect("url");
        let schema = table_schema(TableKind::Container);
        let parts = vec!["dt".to_string(), "hour".to_string()];
        DeltaSink::open_or_create("t", &url, &HashMap::new(), &schema, &parts, schema.clone())
            .await
            .expect("create");
        let (mut table, v) = open_existing("t", &url, &HashMap::new())
            .await
            .expect("open");
        assert_eq!(v, 0);
        let adds = FILES
            .iter()
            .map(|p| {
                Action::Add(Add {
                    path: p.to_string(),
                    size: 100,
                    partition_values: [
                        ("dt".to_string(), Some("2026-12-01".to_string())),
                        ("hour".to_string(), Some("00".to_string())),
                    ]
                    .into_iter()
                    .collect(),
                    data_change: true,
                    ..Default::default()
                })
            })
            .collect();
        let mut adds = Some(adds);
        let done = commit_at_latest("t", &url, &mut table, None, |_| {
            Ok(Decision::Commit {
                actions: adds.take().expect("decided once"),
                operation: Box::new(DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: None,
                    predicate: None,
                }),
                out: (),
            })
        })
        .await
        .expect("add");
        assert_eq!((done.version, done.retries), (Some(1), 0));
        (table, url)
    }

    fn set<'a>(paths: &[&'a str]) -> HashSet<&'a str> {
        paths.iter().copied().collect()
    }

    fn remove_paths(actions: &[Action]) -> Vec<String> {
        let mut paths: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove(r) => Some(r.path.clone()),
                _ => None,
            })
            .collect();
        paths.sort();
        paths
    }

    #[tokio::test]
    async fn removes_are_taken_only_for_files_the_snapshot_has() {
        let dir = tempfile::tempdir().expect("tmp");
        let (table, url) = table_of_three_files(&dir).await;
        let state = snapshot("t", &url, &table).expect("snapshot");
        let r = removes(state, &set(&[FILES[0], FILES[2], "gone.parquet"]), false);
        assert_eq!(remove_paths(&r.actions), vec![FILES[0], FILES[2]]);
        assert_eq!(r.found, [FILES[0], FILES[2]].map(String::from).into());
        assert_eq!(r.missing, vec!["gone.parquet"]);
        for a in &r.actions {
            match a {
                Action::Remove(r) => {
                    assert!(!r.data_change, "{r:?}");
                    assert_eq!(r.size, Some(100));
                    assert_eq!(r.partition_values.as_ref().map(|p| p.len()), Some(2));
                }
                other => panic!("not a remove: {other:?}"),
            }
        }
        let r = removes(state, &set(&["gone.parquet", "also-gone.parquet"]), true);
        assert!(r.actions.is_empty() && r.found.is_empty());
        assert_eq!(r.missing, vec!["also-gone.parquet", "gone.parquet"]);
    }

    /// Another writer commits the next version (removing file a) after the operation decided on
    /// version 1: the operation's put-if-absent loses, it decides again on version 2, where a is
    /// gone, and stops; nothing of it is committed.
    #[tokio::test]
    async fn a_lost_race_is_decided_again_on_the_new_latest_snapshot() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut table, url) = table_of_three_files(&dir).await;
        let log = dir.path().join("_delta_log");
        let inputs = set(&[FILES[0], FILES[1]]);
        let mut decided_at = Vec::new();
        let done = commit_at_latest("t", &url, &mut table, None, |state| {
            decided_at.push(state.version());
            let r = removes(state, &inputs, false);
            if !r.missing.is_empty() {
                assert_eq!(r.missing, vec![FILES[0]]);
                return Ok(Decision::Stop(false));
            }
            if decided_at.len() == 1 {
                // the other writer's commit lands between this decision and its commit
                let remove = serde_json::json!({"remove": {
                    "path": FILES[0], "deletionTimestamp": 1, "dataChange": false}});
                std::fs::write(log.join(format!("{:020}.json", 2)), format!("{remove}\n"))
                    .expect("other writer");
            }
            Ok(Decision::Commit {
                actions: r.actions,
                operation: Box::new(DeltaOperation::Optimize {
                    predicate: None,
                    target_size: 1,
                }),
                out: true,
            })
        })
        .await
        .expect("commit_at_latest");
        assert_eq!(decided_at, vec![1, 2]);
        assert!(!done.out);
        assert_eq!((done.version, done.retries), (None, 1));
        assert_eq!(table.version(), Some(2));
        let state = snapshot("t", &url, &table).expect("snapshot");
        let r = removes(state, &set(&FILES), false);
        assert_eq!(r.found, [FILES[1], FILES[2]].map(String::from).into());
    }
}
