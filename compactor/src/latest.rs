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
//!   version taken) is recognised as the operation's own commit, not re-decided.

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
    for attempt in 1..=ATTEMPTS {
        refresh(name, url, table).await?;
        if let Some((v, out)) = ambiguous.take() {
            let ours = committed_by(table, v, &token)
                .await
                .map_err(delta_err(name, url, "reading", v))?;
            if ours {
                tracing::warn!(table = %name, version = v,
                    "a commit reported as lost had landed (its answer was lost); it stands");
                return Ok(Committed {
                    out,
                    version: Some(v),
                    retries: attempt - 1,
                });
            }
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
            Err(e) if loglake_lake::sink::is_lost_race(&e) && attempt < ATTEMPTS => {
                // another writer's commit, or ours with its answer lost: looked at first in
                // the next round
                ambiguous = Some((version + 1, out));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(delta_err(name, url, "committing", version + 1)(e)),
        }
    }
    Err(CompactError::Internal(format!(
        "table {name}: commit retries exhausted"
    )))
}
