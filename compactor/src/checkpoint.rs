//! Delta checkpoints and the cleanup of expired log files: the maintenance side owns both
//! (DESIGN.md I7); the archiver's commits do neither.
//!
//! Before the cleanup, the commits up to the checkpoint are folded into the ETL offsets ledger
//! (`loglake_lake::etl_ledger`): the offsets archive-time filters dropped or routes moved, which
//! the commits list in their `commitInfo`, outlive the commit files.
//!
//! A checkpoint holds the newest `txn` of every app id, so the archiver's offsets survive it, as
//! long as nobody sets `delta.setTransactionRetentionDuration` (then checkpoints drop old txns
//! and exactly-once is gone): a table with that property is refused.

use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::checkpoints::{cleanup_expired_logs_for, create_checkpoint};
use deltalake::table::config::TablePropertiesExt;
use loglake_lake::etl_ledger;
use object_store::ObjectStoreExt;
use serde::Serialize;
use url::Url;

use crate::error::{CompactError, delta_err};

/// The table property that would make checkpoints drop the archiver's txn offsets.
pub const TXN_RETENTION: &str = "delta.setTransactionRetentionDuration";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointMetrics {
    /// The table version the checkpoint is at.
    pub version: u64,
    /// False when a checkpoint at that version existed already.
    pub created: bool,
    /// Commit and checkpoint files older than the retention and the checkpoint, removed.
    pub log_files_removed: usize,
    pub log_retention_secs: u64,
    /// Versions whose filtered/moved offsets were folded into the ETL ledger before the cleanup
    /// (`loglake_lake::etl_ledger::fold`; 0: the ledger was already at this version).
    pub etl_versions_folded: u64,
    /// Offset ranges (filtered + moved) in the ledger object written.
    pub etl_ranges_folded: u64,
    /// Folded versions whose commit file was already gone (the audit cannot vouch for them).
    pub etl_unverifiable_versions: u64,
}

/// The version of the table's newest checkpoint (`_delta_log/_last_checkpoint`), if any.
async fn last_checkpoint(table: &DeltaTable) -> Option<u64> {
    let store = table.log_store().object_store(None);
    let path = object_store::path::Path::from("_delta_log/_last_checkpoint");
    let bytes = store.get(&path).await.ok()?.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("version")?.as_u64()
}

/// Checkpoints the latest version of `table` (unless it has one) and removes the log files
/// older than both that checkpoint and `retention` (default: the table's
/// `delta.logRetentionDuration`, 30 days unless set).
pub async fn checkpoint_table(
    name: &str,
    url: &Url,
    table: &mut DeltaTable,
    retention: Option<Duration>,
) -> Result<CheckpointMetrics, CompactError> {
    crate::latest::refresh(name, url, table).await?;
    let state = crate::latest::snapshot(name, url, table)?;
    let version = state.version();
    if let Some(value) = state.metadata().configuration().get(TXN_RETENTION) {
        return Err(CompactError::Config(format!(
            "table {name} ({url}) sets {TXN_RETENTION}={value}: a checkpoint would drop the \
             archiver's txn offsets (exactly-once); unset it before checkpointing"
        )));
    }
    let retention = retention.unwrap_or_else(|| state.table_config().log_retention_duration());
    let created = last_checkpoint(table).await != Some(version);
    if created {
        create_checkpoint(table, None).await.map_err(delta_err(
            name,
            url,
            "writing the checkpoint",
            version,
        ))?;
    }
    // The filtered/moved offsets of every commit up to the checkpoint go to the ETL ledger
    // before the cleanup may delete commit files (never after: a failed fold cleans nothing).
    let store = table.log_store().object_store(None);
    let fold = etl_ledger::fold(store.as_ref(), name, url, version).await?;
    let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
    let removed = cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None)
        .await
        .map_err(delta_err(name, url, "removing expired log files", version))?;
    if removed > 0 {
        table
            .load()
            .await
            .map_err(delta_err(name, url, "re-reading", version))?;
    }
    tracing::info!(table = %name, version, created, log_files_removed = removed, "checkpoint");
    Ok(CheckpointMetrics {
        version,
        created,
        log_files_removed: removed,
        log_retention_secs: retention.as_secs(),
        etl_versions_folded: fold.versions,
        etl_ranges_folded: fold.ranges,
        etl_unverifiable_versions: fold.unverifiable_versions,
    })
}
