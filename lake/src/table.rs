//! Opening Delta tables, the txn offsets they hold, the put-if-absent probe and additive schema
//! evolution.
//!
//! Offsets are Delta `txn` actions (DESIGN.md I2): per table, Kafka topic and partition, the app
//! id [`app_id`] holds W (every record below is committed) and [`resume_app_id`] holds R (where
//! to seek, ≤ W).

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::error::LakeError;
use crate::storage::register_object_stores;

/// The txn app id under which the archiver records the next offset to read (W) of one Kafka
/// partition for one table.
pub fn app_id(table: &str, topic: &str, partition: i32) -> String {
    format!("loglake-archiver:{table}:{topic}:{partition}")
}

/// The txn app id of the resume point R of one Kafka partition for one table.
pub fn resume_app_id(table: &str, topic: &str, partition: i32) -> String {
    format!("{}:resume", app_id(table, topic, partition))
}

/// (W, R) txn versions of one Kafka partition.
pub type TxnPair = (Option<i64>, Option<i64>);

pub(crate) fn delta_error(
    table: &str,
    url: &Url,
) -> impl Fn(deltalake::DeltaTableError) -> LakeError {
    move |source| {
        LakeError::Delta {
            table: table.to_string(),
            url: url.to_string(),
            source: Box::new(source),
        }
        .classified(url.as_str())
    }
}

/// Opens the Delta table at `url` (a missing table opens with no version); `name` is for errors.
pub async fn open_table(
    name: &str,
    url: &Url,
    storage_options: &HashMap<String, String>,
) -> Result<DeltaTable, LakeError> {
    register_object_stores();
    DeltaTable::try_from_url_with_storage_options(url.clone(), storage_options.clone())
        .await
        .map_err(delta_error(name, url))
}

/// Reads the (W, R) txn versions of `parts` from the table `name` at `url` (R only
/// `with_resume`; a missing table → none).
pub async fn read_offsets(
    name: &str,
    url: &Url,
    storage_options: &HashMap<String, String>,
    parts: &[(String, i32)],
    with_resume: bool,
) -> Result<HashMap<(String, i32), TxnPair>, LakeError> {
    let err = delta_error(name, url);
    let table = open_table(name, url, storage_options).await?;
    let mut out = HashMap::new();
    if table.version().is_none() {
        for k in parts {
            out.insert(k.clone(), (None, None));
        }
        return Ok(out);
    }
    let snapshot = table.snapshot().map_err(&err)?;
    let log_store = table.log_store();
    for (t, p) in parts {
        let w = snapshot
            .transaction_version(log_store.as_ref(), app_id(name, t, *p))
            .await
            .map_err(&err)?;
        let r = if with_resume {
            snapshot
                .transaction_version(log_store.as_ref(), resume_app_id(name, t, *p))
                .await
                .map_err(&err)?
        } else {
            None
        };
        out.insert((t.clone(), *p), (w, r));
    }
    Ok(out)
}

/// Refuses stores that do not enforce put-if-absent: two PUTs with `If-None-Match: *` on a probe
/// object under `_delta_log/`; the second must fail. Without this, two concurrent commits of the
/// same version could both "succeed" and one would be silently lost.
pub async fn check_put_if_absent(
    url: &Url,
    storage_options: &HashMap<String, String>,
) -> Result<(), LakeError> {
    let name = url.to_string();
    let table = open_table(&name, url, storage_options).await?;
    let store = table.log_store().object_store(None);
    let probe = object_store::path::Path::from(format!(
        "_delta_log/_loglake_put_if_absent_probe_{}",
        uuid::Uuid::new_v4()
    ));
    let opts = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let store_error = |source| {
        LakeError::Store {
            table: name.clone(),
            url: url.to_string(),
            path: probe.to_string(),
            source: Box::new(source),
        }
        .classified(url.as_str())
    };
    store
        .put_opts(&probe, PutPayload::from_static(b"1"), opts())
        .await
        .map_err(store_error)?;
    let second = store
        .put_opts(&probe, PutPayload::from_static(b"2"), opts())
        .await;
    let _ = store.delete(&probe).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => Ok(()),
        Ok(_) => Err(LakeError::PutIfAbsentNotEnforced {
            url: url.to_string(),
        }),
        Err(e) => Err(store_error(e)),
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
/// writers evolving the same table at once: the loser re-reads the table and finds the
/// columns there.
pub(crate) async fn evolve_schema(
    name: &str,
    mut table: DeltaTable,
    url: &Url,
    schema: &SchemaRef,
) -> Result<DeltaTable, LakeError> {
    const ATTEMPTS: u32 = 5;
    let err = delta_error(name, url);
    let mut attempt = 1;
    loop {
        let have: Vec<String> = table
            .snapshot()
            .map_err(&err)?
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
                return Err(LakeError::NotNullColumn {
                    table: name.to_string(),
                    url: url.to_string(),
                    column: m.clone(),
                });
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
            .with_commit_properties(crate::sink::no_log_maintenance().with_max_retries(0))
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
                table.load().await.map_err(&err)?;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_schemas::{TableKind, table_schema};

    #[test]
    fn app_ids_are_the_archivers() {
        assert_eq!(app_id("c", "k8s-logs", 3), "loglake-archiver:c:k8s-logs:3");
        assert_eq!(
            resume_app_id("c", "k8s-logs", 3),
            "loglake-archiver:c:k8s-logs:3:resume"
        );
    }

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
    async fn offsets_of_a_missing_table_are_none() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = crate::location::table_url(&dir.path().to_string_lossy()).expect("url");
        let parts = [("t".to_string(), 0), ("t".to_string(), 1)];
        let got = read_offsets("c", &url, &HashMap::new(), &parts, true)
            .await
            .expect("read");
        assert_eq!(got.len(), 2);
        assert!(got.values().all(|v| *v == (None, None)));
    }
}
