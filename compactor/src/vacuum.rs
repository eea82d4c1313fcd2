//! `loglake vacuum`: deletes the data files no version within the retention needs.
//!
//! deltalake's full-mode vacuum (1.1.3) does the work: it deletes files removed longer ago than
//! the retention (their `remove` tombstone's deletion time) and files no version references
//! (orphans: uploads of crashed archivers and compactions) whose object is older than the
//! retention, so an upload a live writer is about to commit is never touched; `_`-prefixed
//! directories (`_delta_log`, `_loglake`) are never listed for deletion. loglake adds:
//! - the maintenance lease (DESIGN.md I8), renewed in the background while deltalake deletes;
//! - a retention below the table's `delta.deletedFileRetentionDuration` (7 days by default) is
//!   refused unless `--unsafe-short-retention`: with it, a version inside the retention may lose
//!   files (time travel fails) and a slow writer's pending upload may be deleted;
//! - the `VACUUM END` commit without log cleanup (deltalake's `VACUUM START` commit runs its
//!   default hooks: a checkpoint every 100 versions and the cleanup of log files past
//!   `delta.logRetentionDuration`, as `loglake checkpoint` does — maintenance owns both, I7);
//!   so before it, the commits up to the vacuum's version are folded into the ETL offsets ledger
//!   (`loglake_lake::etl_ledger::fold`), as `checkpoint_table` does before its cleanup;
//! - a report with files and bytes deleted (`--dry-run`: the files that would go, with sizes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt;
use futures::TryStreamExt;
use loglake_lake::etl_ledger;
use loglake_lake::sink::no_log_maintenance;
use object_store::ObjectStore;
use serde::Serialize;
use url::Url;

use crate::error::{CompactError, delta_err};
use crate::latest::{Took, open_existing, refresh, snapshot, take_lease};
use crate::lease::Lease;

/// How a vacuum runs (the flags of `loglake vacuum`).
#[derive(Debug, Clone)]
pub struct VacuumSettings {
    /// Default: the table's `delta.deletedFileRetentionDuration` (7 days).
    pub retention: Option<Duration>,
    pub unsafe_short_retention: bool,
    pub dry_run: bool,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
    pub owner: String,
}

/// A file a dry run would delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VacuumFile {
    pub path: String,
    /// Bytes (`None`: the object was gone when listed).
    pub size: Option<u64>,
}

/// What one table's vacuum did (one JSON object per table on stdout).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VacuumReport {
    pub table: String,
    pub url: String,
    /// `acquired`, `held by <owner>` (nothing done) or `not taken (dry run)`.
    pub lease: String,
    pub version: u64,
    pub retention_secs: u64,
    pub dry_run: bool,
    pub files_deleted: usize,
    pub bytes_deleted: u64,
    /// With `--dry-run`: what would be deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<VacuumFile>,
    pub duration_ms: u64,
    /// Versions whose filtered/moved offsets were folded into the ETL ledger before deltalake's
    /// `VACUUM START` commit (whose hooks may clean the log); 0 on a dry run or when the ledger
    /// was already at the version.
    pub etl_versions_folded: u64,
    /// Offset ranges (filtered + moved) in the ledger object written.
    pub etl_ranges_folded: u64,
    /// Folded versions whose commit file was already gone (the audit cannot vouch for them).
    pub etl_unverifiable_versions: u64,
}

/// Vacuums the table `name` at `url`.
pub async fn vacuum_table(
    name: &str,
    url: &Url,
    storage_options: &HashMap<String, String>,
    s: &VacuumSettings,
) -> Result<VacuumReport, CompactError> {
    let started = Instant::now();
    let mut r = VacuumReport {
        table: name.to_string(),
        url: url.to_string(),
        dry_run: s.dry_run,
        ..Default::default()
    };
    let (mut table, v0) = open_existing(name, url, storage_options).await?;
    let store: Arc<dyn ObjectStore> = table.log_store().object_store(None);
    let mut lease = Lease::new(name, store.clone(), s.owner.clone(), s.lease_ttl);
    let took = take_lease(name, url, &mut table, &mut lease, s.dry_run, s.lease_wait).await?;
    r.lease = took.text();
    let kept = match took {
        Took::DryRun => None,
        Took::HeldBy(_) => {
            r.version = v0;
            r.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(r);
        }
        Took::Acquired => Some(lease.keep_alive()),
    };
    let result = vacuum_held(name, url, &mut table, s, &store, &mut r).await;
    if let Some(k) = kept
        && let Some(lost) = k.release().await
        && result.is_ok()
    {
        // deletions are safe without the lease (only unreferenced, expired files): say so
        tracing::warn!(table = %name, error = %lost, "the lease was lost during the vacuum");
    }
    result?;
    r.duration_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

async fn vacuum_held(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    s: &VacuumSettings,
    store: &Arc<dyn ObjectStore>,
    r: &mut VacuumReport,
) -> Result<(), CompactError> {
    refresh(name, url, table).await?;
    let state = snapshot(name, url, table)?;
    r.version = state.version();
    if let Some(value) = state
        .metadata()
        .configuration()
        .get(crate::checkpoint::TXN_RETENTION)
    {
        // deltalake's VACUUM START commit may checkpoint, which would drop old txn offsets
        return Err(CompactError::Config(format!(
            "table {name} ({url}) sets {}={value}: a checkpoint would drop the archiver's txn \
             offsets (exactly-once); unset it before vacuuming",
            crate::checkpoint::TXN_RETENTION
        )));
    }
    let minimum = state.table_config().deleted_file_retention_duration();
    let retention = s.retention.unwrap_or(minimum);
    r.retention_secs = retention.as_secs();
    if retention < minimum && !s.unsafe_short_retention {
        return Err(CompactError::Config(format!(
            "table {name}: a vacuum retention of {} is below the table's \
             delta.deletedFileRetentionDuration ({}): time travel to versions inside that window \
             would fail and a slow writer's upload could be deleted before it commits; pass \
             --unsafe-short-retention to do it anyway",
            humantime::format_duration(retention),
            humantime::format_duration(minimum)
        )));
    }
    let period = chrono::Duration::from_std(retention)
        .map_err(|e| CompactError::Config(format!("--retention: {e}")))?;
    if !s.dry_run {
        // the VACUUM START commit's hooks may clean the log up to the version it commits on
        let fold = etl_ledger::fold(store.as_ref(), name, url, r.version).await?;
        r.etl_versions_folded = fold.versions;
        r.etl_ranges_folded = fold.ranges;
        r.etl_unverifiable_versions = fold.unverifiable_versions;
    }
    let (after, metrics) = table
        .clone()
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(period)
        .with_enforce_retention_duration(false)
        .with_dry_run(s.dry_run)
        .with_commit_properties(no_log_maintenance())
        .await
        .map_err(delta_err(name, url, "vacuuming", r.version))?;
    r.files_deleted = metrics.files_deleted.len();
    if s.dry_run {
        let sizes = object_sizes(store.as_ref())
            .await
            .map_err(|e| CompactError::Internal(format!("table {name}: listing {url}: {e}")))?;
        r.files = metrics
            .files_deleted
            .iter()
            .map(|p| VacuumFile {
                path: p.clone(),
                size: sizes.get(p).copied(),
            })
            .collect();
        r.bytes_deleted = r.files.iter().filter_map(|f| f.size).sum();
    } else {
        r.bytes_deleted = vacuum_start_bytes(&after).await;
        *table = after;
    }
    tracing::info!(table = %name, files = r.files_deleted, bytes = r.bytes_deleted, dry_run = s.dry_run, "vacuum");
    Ok(())
}

/// Every object of the table's store, path → size.
async fn object_sizes(
    store: &dyn ObjectStore,
) -> Result<HashMap<String, u64>, object_store::Error> {
    store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
}

/// The bytes deltalake's `VACUUM START` commit (the table's newest) recorded as to be deleted.
async fn vacuum_start_bytes(table: &DeltaTable) -> u64 {
    let Ok(history) = table.history(Some(4)).try_collect::<Vec<_>>().await else {
        return 0;
    };
    history
        .iter()
        .find(|c| c.operation.as_deref() == Some("VACUUM START"))
        .and_then(|c| c.info.get("operationMetrics"))
        .and_then(|m| m.get("sizeOfDataToDelete"))
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}
