//! A Delta table a stage appends to: created on first use, files uploaded through the table's
//! object store, and commits that carry the Kafka offsets as `txn` actions.
//!
//! Exactly-once (DESIGN.md I2, I3) is enforced in [`DeltaSink::commit`]:
//! 1. re-read the latest table version;
//! 2. check that every (topic, partition) we commit still has the txn version we started from —
//!    if another writer moved it, that writer owns the partition: return
//!    [`CommitOutcome::Conflict`] and write nothing;
//! 3. commit data files + txn actions at exactly `latest + 1` (deltalake `max_retries = 0`), so
//!    put-if-absent decides the race; on losing it, back off and go to 1.
//!
//! A compaction that rewrote files (`dataChange=false`) in between does not touch txn versions,
//! so step 2 passes and the append simply lands on top of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::file::metadata::ParquetMetaData;
use url::Url;

use crate::error::LakeError;
use crate::stats::add_action;
use crate::table::{app_id, delta_error, evolve_schema, open_table};

/// The end offset (exclusive) committed for one Kafka partition, before and after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAdvance {
    pub topic: String,
    pub partition: i32,
    /// The txn version this writer read when it started the partition (None: none yet).
    pub from: Option<i64>,
    /// The next offset to read after this commit.
    pub to: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        version: u64,
        attempts: u32,
    },
    /// Another writer advanced these partitions: nothing was committed.
    Conflict {
        partitions: Vec<(String, i32, Option<i64>)>,
    },
}

/// A finished Parquet file, in memory, ready to upload.
pub struct DataFile {
    /// Path relative to the table root, e.g. `dt=2024-01-01/hour=07/part-….zstd.parquet`.
    pub path: String,
    pub bytes: Vec<u8>,
    /// Delta partition values (column → serialized value, `None` for null).
    pub partition_values: Vec<(String, Option<String>)>,
    /// The footer the writer returned (the source of the Add's statistics).
    pub metadata: ParquetMetaData,
}

pub struct DeltaSink {
    name: String,
    url: Url,
    table: DeltaTable,
    store: Arc<dyn ObjectStore>,
    file_schema: SchemaRef,
    max_attempts: u32,
}

impl DeltaSink {
    /// Opens the table at `url`, creating it with `schema` partitioned by `partition_by` if it
    /// does not exist. Protocol stays at reader 1 / writer 2 (no deletion vectors, no
    /// timestampNtz) so Spark, Trino, DuckDB and delta-rs all read it. `file_schema` (the schema
    /// without the partition columns) is what the uploaded files hold.
    pub async fn open_or_create(
        name: &str,
        url: &Url,
        storage_options: &HashMap<String, String>,
        schema: &SchemaRef,
        partition_by: &[String],
        file_schema: SchemaRef,
    ) -> Result<Self, LakeError> {
        let err = delta_error(name, url);
        let mut table = open_table(name, url, storage_options).await?;
        if table.version().is_none() {
            let columns: StructType = StructType::try_from_arrow(schema.as_ref())?;
            // Version 0 only, no retry: when another writer creates the table at the same
            // time, deltalake would otherwise either fail ("already exists", if it saw theirs) or
            // commit a second CREATE TABLE at version 1 over theirs (if it lost the race for 0).
            let created = table
                .create()
                .with_table_name(name)
                .with_columns(columns.fields().cloned())
                .with_partition_columns(partition_by.to_vec())
                .with_comment(format!("written by loglake {}", env!("CARGO_PKG_VERSION")))
                .with_commit_properties(CommitProperties::default().with_max_retries(0))
                .await;
            match created {
                Ok(t) => table = t,
                Err(e) => {
                    // Another writer created it first: use theirs.
                    table = open_table(name, url, storage_options).await?;
                    if table.version().is_none() {
                        return Err(err(e));
                    }
                    tracing::info!(table = %name, "created concurrently by another writer; using it");
                }
            }
        }
        // Files are written under the partition columns asked for; a table created with others
        // (another --partition-by, or an edited `partition_by`) would get paths and partition
        // values its metadata does not declare.
        let have = table
            .snapshot()
            .map_err(&err)?
            .metadata()
            .partition_columns();
        if have != partition_by {
            return Err(LakeError::PartitionColumns {
                table: name.to_string(),
                url: url.to_string(),
                found: have.to_vec(),
                configured: partition_by.to_vec(),
            });
        }
        let table = evolve_schema(name, table, url, schema).await?;
        let store = table.log_store().object_store(None);
        Ok(DeltaSink {
            name: name.to_string(),
            url: url.clone(),
            table,
            store,
            file_schema,
            max_attempts: 50,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    fn err(&self, source: DeltaTableError) -> LakeError {
        delta_error(&self.name, &self.url)(source)
    }

    /// Re-reads the latest version of the table.
    pub async fn refresh(&mut self) -> Result<(), LakeError> {
        let err = delta_error(&self.name, &self.url);
        self.table.update_incremental(None).await.map_err(err)
    }

    /// The committed next-offset of each (topic, partition), from the table's txn actions.
    pub async fn committed_offsets(
        &self,
        parts: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), Option<i64>>, LakeError> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let log_store = self.table.log_store();
        let mut out = HashMap::new();
        for (topic, p) in parts {
            let v = snapshot
                .transaction_version(log_store.as_ref(), app_id(&self.name, topic, *p))
                .await
                .map_err(|e| self.err(e))?;
            out.insert((topic.clone(), *p), v);
        }
        Ok(out)
    }

    /// Uploads a finished file (one PUT; files are bounded by the roll size) and returns its Add
    /// (`dataChange=true`, statistics from the file's footer).
    pub async fn upload(&self, file: impl Into<DataFile>) -> Result<Add, LakeError> {
        let file = file.into();
        let size = file.bytes.len() as i64;
        let path = object_store::path::Path::from(file.path.as_str());
        self.store
            .put(&path, PutPayload::from(file.bytes))
            .await
            .map_err(|source| LakeError::Store {
                table: self.name.clone(),
                url: self.url.to_string(),
                path: file.path.clone(),
                source: Box::new(source),
            })?;
        Ok(add_action(
            &self.file_schema,
            file.path,
            size,
            file.partition_values,
            &file.metadata,
            true,
        ))
    }

    /// Best-effort removal of files that were uploaded but will not be committed.
    pub async fn delete_uncommitted(&self, adds: &[Add]) {
        for a in adds {
            let path = object_store::path::Path::from(a.path.as_str());
            if let Err(e) = self.store.delete(&path).await {
                tracing::warn!(table = %self.name, path = %a.path, error = %e, "could not delete uncommitted file (vacuum will)");
            }
        }
    }

    /// The partitions of `offsets` whose committed txn version is no longer the one this writer
    /// started from (read from the current snapshot), with the version found.
    async fn conflicts(
        &self,
        offsets: &[OffsetAdvance],
    ) -> Result<Vec<(String, i32, Option<i64>)>, LakeError> {
        let parts: Vec<(String, i32)> = offsets
            .iter()
            .map(|o| (o.topic.clone(), o.partition))
            .collect();
        let current = self.committed_offsets(&parts).await?;
        Ok(offsets
            .iter()
            .filter_map(|o| {
                let found = current
                    .get(&(o.topic.clone(), o.partition))
                    .copied()
                    .flatten();
                (found != o.from).then(|| (o.topic.clone(), o.partition, found))
            })
            .collect())
    }

    /// The actions of one commit: the files, then a txn per partition (its new end offset), then
    /// the `extra` txn versions, all stamped `now`.
    fn actions(
        &self,
        adds: &[Add],
        offsets: &[OffsetAdvance],
        extra: &[(String, i64)],
    ) -> Vec<Action> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        for o in offsets {
            actions.push(Action::Txn(Transaction::new_with_last_update(
                app_id(&self.name, &o.topic, o.partition),
                o.to,
                Some(now),
            )));
        }
        for (id, v) in extra {
            actions.push(Action::Txn(Transaction::new_with_last_update(
                id.clone(),
                *v,
                Some(now),
            )));
        }
        actions
    }

    /// Commits `adds` together with the new end offsets (see the module docs for the protocol),
    /// plus `extra` txn versions that are recorded but not checked (resume points).
    pub async fn commit(
        &mut self,
        adds: Vec<Add>,
        offsets: &[OffsetAdvance],
        extra: Vec<(String, i64)>,
    ) -> Result<CommitOutcome, LakeError> {
        self.commit_with_info(adds, offsets, extra, HashMap::new())
            .await
    }

    /// [`DeltaSink::commit`] with `info` added to the commit's `commitInfo` (e.g. the archiver's
    /// per-commit record of filtered offsets, which `loglake audit` reads back).
    pub async fn commit_with_info(
        &mut self,
        adds: Vec<Add>,
        offsets: &[OffsetAdvance],
        extra: Vec<(String, i64)>,
        info: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome, LakeError> {
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(50);
        let (token_key, token) = commit_token();
        let mut info = info;
        info.insert(token_key, serde_json::Value::String(token.clone()));
        // the version of an attempt whose answer may have been lost (see below)
        let mut ambiguous: Option<u64> = None;
        loop {
            attempts += 1;
            self.refresh().await?;
            if let Some(v) = ambiguous.take()
                && self.landed(v, &token).await?
            {
                tracing::warn!(table = %self.name, version = v, "a commit reported as lost had landed (its answer was lost); it stands");
                return Ok(CommitOutcome::Committed {
                    version: v,
                    attempts,
                });
            }
            let conflicts = self.conflicts(offsets).await?;
            if !conflicts.is_empty() {
                return Ok(CommitOutcome::Conflict {
                    partitions: conflicts,
                });
            }
            let (version, result) = self.try_commit(&adds, offsets, &extra, &info).await?;
            match result {
                Ok(version) => {
                    self.refresh().await?;
                    return Ok(CommitOutcome::Committed { version, attempts });
                }
                Err(e) if is_lost_race(&e) && attempts < self.max_attempts => {
                    // Another writer took the version, or our own put landed and only its
                    // answer was lost (the store's retry then finds the version taken): the
                    // next round reads that version's commitInfo for our token first.
                    ambiguous = Some(version);
                    tracing::debug!(table = %self.name, attempt = attempts, "lost a commit race; re-reading the table");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.commit_error(version, attempts, e)),
            }
        }
    }

    /// Whether the commit at `version`, whose answer was lost, carried `token` (it landed).
    async fn landed(&self, version: u64, token: &str) -> Result<bool, LakeError> {
        committed_by(&self.table, version, token)
            .await
            .map_err(|e| self.err(e))
    }

    /// One attempt to commit at the version after the current snapshot (without retries):
    /// that version, and the version committed or the store's refusal.
    async fn try_commit(
        &self,
        adds: &[Add],
        offsets: &[OffsetAdvance],
        extra: &[(String, i64)],
        info: &HashMap<String, serde_json::Value>,
    ) -> Result<(u64, Result<u64, DeltaTableError>), LakeError> {
        let actions = self.actions(adds, offsets, extra);
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let version = snapshot.version() + 1;
        let operation = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: format!("loglake-archiver:{}", self.name),
            epoch_id: version as i64,
        };
        let result = CommitBuilder::from(
            no_log_maintenance()
                .with_max_retries(0)
                .with_metadata(info.clone()),
        )
        .with_actions(actions)
        .build(Some(snapshot), self.table.log_store(), operation)
        .await;
        Ok((version, result.map(|done| done.version())))
    }

    /// The error of an attempt at `version` that is not retried: a race lost once too often,
    /// or any other failure.
    fn commit_error(&self, version: u64, attempts: u32, e: DeltaTableError) -> LakeError {
        if is_lost_race(&e) {
            return LakeError::CommitRetriesExhausted {
                table: self.name.clone(),
                url: self.url.to_string(),
                version,
                attempts,
                reason: e.to_string(),
            };
        }
        LakeError::Commit {
            table: self.name.clone(),
            url: self.url.to_string(),
            version,
            source: Box::new(e),
        }
    }
}

/// The `commitInfo` key of a commit's token: a fresh UUID per commit ([`commit_token`]).
pub const COMMIT_TOKEN_KEY: &str = "loglake.commitToken";

/// A fresh token for one commit, as the `commitInfo` entry to add.
pub fn commit_token() -> (String, String) {
    (
        COMMIT_TOKEN_KEY.to_string(),
        uuid::Uuid::new_v4().simple().to_string(),
    )
}

/// Whether version `version` of `table` is the commit that carried `token`. A put-if-absent
/// commit whose answer was lost is retried by the object store, which then finds the version
/// taken — by the writer itself: without this check the writer would take its own commit for
/// another's, re-plan, and delete the files that commit references.
pub async fn committed_by(
    table: &DeltaTable,
    version: u64,
    token: &str,
) -> Result<bool, DeltaTableError> {
    let entry = table.log_store().read_commit_entry(version).await?;
    Ok(entry.is_some_and(|bytes| memchr::memmem::find(&bytes, token.as_bytes()).is_some()))
}

/// Commit properties of a writer that leaves the log to maintenance (DESIGN.md I7): no
/// checkpoint and no expired-log cleanup after the commit. deltalake's default cleans the log
/// after every commit (a LIST of `_delta_log` each time) unless the table disables it;
/// `loglake compact` and `loglake checkpoint` do both, under the table's lease.
pub fn no_log_maintenance() -> CommitProperties {
    CommitProperties::default()
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

/// Whether a commit failed because another writer committed that version first (retry on the
/// latest version).
pub fn is_lost_race(e: &DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    match e {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => {
            matches!(
                source,
                TransactionError::VersionAlreadyExists(_) | TransactionError::MaxCommitAttempts(_)
            )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::table_url;
    use crate::table::missing_columns;
    use arrow::datatypes::Schema;
    use loglake_schemas::{TableKind, table_schema};

    #[tokio::test]
    async fn an_existing_table_must_be_opened_with_its_own_partition_columns() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = table_url(&dir.path().to_string_lossy()).expect("url");
        let schema = table_schema(TableKind::Container);
        let opts = HashMap::new();
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let open = |parts: Vec<String>| {
            let (url, opts, schema) = (url.clone(), opts.clone(), schema.clone());
            async move {
                DeltaSink::open_or_create("c", &url, &opts, &schema, &parts, schema.clone()).await
            }
        };
        let created = open(cols(&["dt", "hour", "namespace"]))
            .await
            .expect("create");
        assert_eq!(created.version(), Some(0));
        open(cols(&["dt", "hour", "namespace"]))
            .await
            .expect("reopen");
        for other in [cols(&["dt", "hour"]), cols(&["dt", "namespace", "hour"])] {
            let e = open(other.clone())
                .await
                .err()
                .unwrap_or_else(|| panic!("opened with {other:?}"))
                .to_string();
            assert!(
                e.contains("partitioned by [dt, hour, namespace]")
                    && e.contains(&format!("not [{}]", other.join(", "))),
                "{e}"
            );
        }
    }

    /// I3 (DESIGN.md): a commit whose partitions' txn offsets moved since this writer read them
    /// is refused as a conflict and writes nothing; another writer's commits of other
    /// partitions are no conflict (`commit` re-reads the table first). The lost-race retry
    /// (another commit between that re-read and ours) is not forced here.
    #[tokio::test]
    async fn a_commit_over_offsets_another_writer_advanced_is_a_conflict_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = table_url(&dir.path().to_string_lossy()).expect("url");
        let schema = table_schema(TableKind::Container);
        let parts = vec!["dt".to_string(), "hour".to_string()];
        let opts = HashMap::new();
        let open = || DeltaSink::open_or_create("c", &url, &opts, &schema, &parts, schema.clone());
        let mut a = open().await.expect("create");
        let mut b = open().await.expect("open");
        assert_eq!((a.version(), b.version()), (Some(0), Some(0)));
        let adv = |partition: i32, from: Option<i64>, to: i64| OffsetAdvance {
            topic: "t".into(),
            partition,
            from,
            to,
        };

        // A takes partition 0 to offset 100
        let done = a
            .commit(Vec::new(), &[adv(0, None, 100)], Vec::new())
            .await
            .expect("commit a");
        assert_eq!(
            done,
            CommitOutcome::Committed {
                version: 1,
                attempts: 1
            }
        );
        // B read partition 0 before that (from None): its commit is refused, naming what it found
        let refused = b
            .commit(Vec::new(), &[adv(0, None, 50), adv(1, None, 7)], Vec::new())
            .await
            .expect("commit b");
        assert_eq!(
            refused,
            CommitOutcome::Conflict {
                partitions: vec![("t".into(), 0, Some(100))]
            }
        );
        b.refresh().await.expect("refresh");
        assert_eq!(b.version(), Some(1), "the refused commit wrote nothing");
        let offsets = b
            .committed_offsets(&[("t".into(), 0), ("t".into(), 1)])
            .await
            .expect("offsets");
        assert_eq!(offsets[&("t".to_string(), 0)], Some(100));
        assert_eq!(offsets[&("t".to_string(), 1)], None);

        // partition 1 alone is B's: committed on top of A's version
        let done = b
            .commit(Vec::new(), &[adv(1, None, 7)], Vec::new())
            .await
            .expect("commit b again");
        assert_eq!(
            done,
            CommitOutcome::Committed {
                version: 2,
                attempts: 1
            }
        );
        // and A, whose snapshot is now stale, continues partition 0 from its own offset
        let done = a
            .commit(Vec::new(), &[adv(0, Some(100), 180)], Vec::new())
            .await
            .expect("commit a again");
        assert_eq!(
            done,
            CommitOutcome::Committed {
                version: 3,
                attempts: 1
            }
        );
    }

    /// A table created by an older loglake (without the container metadata columns) gets them
    /// added on open, keeping its version history; a second open changes nothing.
    #[tokio::test]
    async fn opening_a_table_of_an_older_schema_adds_the_new_nullable_columns() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = table_url(&dir.path().to_string_lossy()).expect("url");
        let schema = table_schema(TableKind::Container);
        let new_cols = ["pod_uid", "container_id", "image", "image_id"];
        let old = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !new_cols.contains(&f.name().as_str()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let parts = vec!["dt".to_string(), "hour".to_string()];
        let opts = HashMap::new();
        let sink = DeltaSink::open_or_create("c", &url, &opts, &old, &parts, old.clone())
            .await
            .expect("create old");
        assert_eq!(sink.table.version(), Some(0));
        let sink = DeltaSink::open_or_create("c", &url, &opts, &schema, &parts, schema.clone())
            .await
            .expect("evolve");
        assert_eq!(sink.table.version(), Some(1), "one ADD COLUMNS commit");
        let have: Vec<String> = sink
            .table
            .snapshot()
            .expect("snapshot")
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        assert!(missing_columns(&have, &schema).is_empty(), "{have:?}");
        let again = DeltaSink::open_or_create("c", &url, &opts, &schema, &parts, schema.clone())
            .await
            .expect("reopen");
        assert_eq!(
            again.table.version(),
            Some(1),
            "nothing to add the second time"
        );

        // a NOT NULL column cannot be added to existing rows: a clear error
        let mut strict: Vec<_> = schema.fields().iter().cloned().collect();
        strict.push(Arc::new(arrow::datatypes::Field::new(
            "required_x",
            arrow::datatypes::DataType::Utf8,
            false,
        )));
        let strict = Arc::new(Schema::new(strict));
        let e = DeltaSink::open_or_create("c", &url, &opts, &strict, &parts, strict.clone())
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("required_x"), "{e}");
    }
}
