//! A Delta table the archiver appends to: created on first use, files uploaded through the
//! table's object store, and commits that carry the Kafka offsets as `txn` actions.
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
use std::sync::{Arc, Once};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::ArchiveError;
use crate::stats::delta_stats;
use crate::writer::ClosedFile;

/// Resolves a table location (`s3://bucket/prefix`, `file:///abs`, or a local path) to a URL.
pub fn table_url(location: &str) -> Result<Url, ArchiveError> {
    if location.contains("://") {
        return Url::parse(location)
            .map_err(|e| ArchiveError::Config(format!("table URI {location}: {e}")));
    }
    let path = std::path::Path::new(location);
    std::fs::create_dir_all(path)
        .map_err(|e| ArchiveError::Config(format!("creating {location}: {e}")))?;
    let abs = path
        .canonicalize()
        .map_err(|e| ArchiveError::Config(format!("resolving {location}: {e}")))?;
    Url::from_directory_path(&abs)
        .map_err(|_| ArchiveError::Config(format!("bad table path {location}")))
}

/// Registers deltalake's S3 support (once per process).
pub fn register_object_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

/// The txn app id under which the archiver records the next offset to read of one Kafka
/// partition for one table.
pub fn app_id(table: &str, topic: &str, partition: i32) -> String {
    format!("loglake-archiver:{table}:{topic}:{partition}")
}

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
    /// timestampNtz) so Spark, Trino, DuckDB and delta-rs all read it.
    pub async fn open_or_create(
        name: &str,
        url: &Url,
        storage_options: &HashMap<String, String>,
        schema: &SchemaRef,
        partition_by: &[String],
        file_schema: SchemaRef,
    ) -> Result<Self, ArchiveError> {
        register_object_stores();
        let err = |source| ArchiveError::Delta {
            table: name.to_string(),
            source,
        };
        let mut table =
            DeltaTable::try_from_url_with_storage_options(url.clone(), storage_options.clone())
                .await
                .map_err(err)?;
        if table.version().is_none() {
            let columns: StructType = StructType::try_from_arrow(schema.as_ref())?;
            // Version 0 only, no retry: when another archiver creates the table at the same
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
                    // Another archiver created it first: use theirs.
                    table = DeltaTable::try_from_url_with_storage_options(
                        url.clone(),
                        storage_options.clone(),
                    )
                    .await
                    .map_err(err)?;
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
            .map_err(err)?
            .metadata()
            .partition_columns();
        if have != partition_by {
            return Err(ArchiveError::Config(format!(
                "table {name} ({url}) is partitioned by [{}], not [{}] as configured: \
                 a table keeps the partition columns it was created with (configure those, or \
                 archive into a new table)",
                have.join(", "),
                partition_by.join(", ")
            )));
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

    fn err(&self, source: DeltaTableError) -> ArchiveError {
        ArchiveError::Delta {
            table: self.name.clone(),
            source,
        }
    }

    /// Re-reads the latest version of the table.
    pub async fn refresh(&mut self) -> Result<(), ArchiveError> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| ArchiveError::Delta {
                table: self.name.clone(),
                source: e,
            })
    }

    /// The committed next-offset of each (topic, partition), from the table's txn actions.
    pub async fn committed_offsets(
        &self,
        parts: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), Option<i64>>, ArchiveError> {
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

    /// Uploads a closed file (one PUT; files are bounded by the roll size) and returns its Add.
    pub async fn upload(&self, file: ClosedFile) -> Result<Add, ArchiveError> {
        let size = file.bytes.len() as i64;
        let path = object_store::path::Path::from(file.path.as_str());
        self.store
            .put(&path, PutPayload::from(file.bytes))
            .await
            .map_err(|source| ArchiveError::Upload {
                table: self.name.clone(),
                path: file.path.clone(),
                source,
            })?;
        let stats = delta_stats(&self.file_schema, &file.metadata);
        let modification_time = chrono::Utc::now().timestamp_millis();
        Ok(Add {
            path: file.path,
            size,
            partition_values: file.partition_values.into_iter().collect(),
            modification_time,
            data_change: true,
            stats: Some(stats.to_string()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        })
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

    /// Commits `adds` together with the new end offsets (see the module docs for the protocol),
    /// plus `extra` txn versions that are recorded but not checked (resume points).
    pub async fn commit(
        &mut self,
        adds: Vec<Add>,
        offsets: &[OffsetAdvance],
        extra: Vec<(String, i64)>,
    ) -> Result<CommitOutcome, ArchiveError> {
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(50);
        loop {
            attempts += 1;
            self.refresh().await?;
            let parts: Vec<(String, i32)> = offsets
                .iter()
                .map(|o| (o.topic.clone(), o.partition))
                .collect();
            let current = self.committed_offsets(&parts).await?;
            let conflicts: Vec<(String, i32, Option<i64>)> = offsets
                .iter()
                .filter_map(|o| {
                    let found = current
                        .get(&(o.topic.clone(), o.partition))
                        .copied()
                        .flatten();
                    (found != o.from).then(|| (o.topic.clone(), o.partition, found))
                })
                .collect();
            if !conflicts.is_empty() {
                return Ok(CommitOutcome::Conflict {
                    partitions: conflicts,
                });
            }
            let now = chrono::Utc::now().timestamp_millis();
            let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
            for o in offsets {
                actions.push(Action::Txn(Transaction::new_with_last_update(
                    app_id(&self.name, &o.topic, o.partition),
                    o.to,
                    Some(now),
                )));
            }
            for (id, v) in &extra {
                actions.push(Action::Txn(Transaction::new_with_last_update(
                    id.clone(),
                    *v,
                    Some(now),
                )));
            }
            let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
            let operation = DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: format!("loglake-archiver:{}", self.name),
                epoch_id: snapshot.version() as i64 + 1,
            };
            let result = CommitBuilder::default()
                .with_actions(actions)
                .with_max_retries(0)
                .build(Some(snapshot), self.table.log_store(), operation)
                .await;
            match result {
                Ok(done) => {
                    let version = done.version();
                    self.refresh().await?;
                    return Ok(CommitOutcome::Committed { version, attempts });
                }
                Err(e) if is_lost_race(&e) && attempts < self.max_attempts => {
                    tracing::debug!(table = %self.name, attempt = attempts, "lost a commit race; re-reading the table");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) if is_lost_race(&e) => {
                    return Err(ArchiveError::CommitRetriesExhausted {
                        table: self.name.clone(),
                        attempts,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }
}

fn is_lost_race(e: &DeltaTableError) -> bool {
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

/// Refuses stores that do not enforce put-if-absent: two PUTs with `If-None-Match: *` on a probe
/// object under `_delta_log/`; the second must fail. Without this, two concurrent commits of the
/// same version could both "succeed" and one would be silently lost.
pub async fn check_put_if_absent(
    url: &Url,
    storage_options: &HashMap<String, String>,
) -> Result<(), ArchiveError> {
    use object_store::{PutMode, PutOptions};
    register_object_stores();
    let name = url.to_string();
    let table = DeltaTable::try_from_url_with_storage_options(url.clone(), storage_options.clone())
        .await
        .map_err(|source| ArchiveError::Delta {
            table: name.clone(),
            source,
        })?;
    let store = table.log_store().object_store(None);
    let probe = object_store::path::Path::from(format!(
        "_delta_log/_loglake_put_if_absent_probe_{}",
        uuid::Uuid::new_v4()
    ));
    let opts = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&probe, PutPayload::from_static(b"1"), opts())
        .await
        .map_err(|source| ArchiveError::Upload {
            table: name.clone(),
            path: probe.to_string(),
            source,
        })?;
    let second = store
        .put_opts(&probe, PutPayload::from_static(b"2"), opts())
        .await;
    let _ = store.delete(&probe).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => Ok(()),
        Ok(_) => Err(ArchiveError::Config(format!(
            "{name}: the S3 store accepted a second If-None-Match create of the same object, so it does not enforce put-if-absent; \
             concurrent Delta commits could be lost. Use a store that does (AWS S3, MinIO, moto), or pass --allow-unsafe-store \
             if exactly one writer ever touches these tables."
        ))),
        Err(e) => Err(ArchiveError::Upload {
            table: name,
            path: probe.to_string(),
            source: e,
        }),
    }
}

/// The columns of `schema` that the table's Delta schema lacks (by name).
pub fn missing_columns(table_columns: &[String], schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| !table_columns.iter().any(|c| c == f.name()))
        .map(|f| f.name().clone())
        .collect()
}

/// Brings a table created by an older loglake up to the current schema: nullable columns the
/// table lacks are added with one `ADD COLUMNS` commit (older files read them as null). A
/// missing NOT NULL column cannot be added to existing data: that is an error naming it. Two
/// archivers evolving the same table at once: the loser re-reads the table and finds the
/// columns there.
async fn evolve_schema(
    name: &str,
    mut table: DeltaTable,
    url: &Url,
    schema: &SchemaRef,
) -> Result<DeltaTable, ArchiveError> {
    const ATTEMPTS: u32 = 5;
    let err = |source| ArchiveError::Delta {
        table: name.to_string(),
        source,
    };
    let mut attempt = 1;
    loop {
        let have: Vec<String> = table
            .snapshot()
            .map_err(err)?
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        let missing = missing_columns(&have, schema);
        if missing.is_empty() {
            return Ok(table);
        }
        let mut fields = Vec::new();
        for m in &missing {
            let f = schema.field_with_name(m)?;
            if !f.is_nullable() {
                return Err(ArchiveError::Config(format!(
                    "table {name} ({url}) lacks the NOT NULL column {m} of loglake's schema; \
                     it cannot be added to existing data: archive into a new table"
                )));
            }
            fields.push(f.clone());
        }
        let columns: StructType =
            StructType::try_from_arrow(&arrow::datatypes::Schema::new(fields))?;
        tracing::info!(table = %name, columns = ?missing, "adding the columns of a newer schema");
        match table
            .clone()
            .add_columns()
            .with_fields(columns.fields().cloned().collect::<Vec<_>>())
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await
        {
            Ok(t) => return Ok(t),
            // The last attempt's error is deltalake's own, with its version and cause.
            Err(e) if attempt >= ATTEMPTS => return Err(err(e)),
            Err(e) => {
                tracing::info!(table = %name, attempt, error = %e,
                    "adding columns failed (most likely raced another writer); re-reading the table");
                // The losing commit leaves our snapshot stale: re-read the same table and look
                // again (the winner may have added the columns already).
                table.load().await.map_err(err)?;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use loglake_schemas::{TableKind, table_schema};

    #[test]
    fn missing_columns_by_name() {
        let schema = table_schema(TableKind::Container);
        let all: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        assert!(missing_columns(&all, &schema).is_empty());
        let old: Vec<String> = all
            .iter()
            .filter(|c| !matches!(c.as_str(), "image" | "pod_uid"))
            .cloned()
            .collect();
        assert_eq!(missing_columns(&old, &schema), ["pod_uid", "image"]);
    }

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
