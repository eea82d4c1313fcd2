//! Reading the lake for insights: a DataFusion session with every Delta table of the lake
//! registered by name (as `loglake query` names them), the completeness markers of a day, and the
//! data files per partition of a day (compaction state).

use std::collections::{BTreeMap, HashMap};

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use url::Url;

use crate::error::InsightsError;

/// Where `loglake nightly` writes a table's completeness markers (jobs/src/complete.rs).
pub const MARKERS_PATH: &str = "_loglake/complete";

/// The lake's tables (name -> URL) and a session over them.
pub struct LakeSession {
    pub root: Url,
    pub tables: BTreeMap<String, Url>,
    pub ctx: SessionContext,
    opened: BTreeMap<String, DeltaTable>,
}

/// Storage options from the `AWS_*` environment, as every stage reads them.
pub fn storage_options() -> HashMap<String, String> {
    loglake_lake::storage_options(&HashMap::new())
}

impl LakeSession {
    /// Discover the Delta tables under `lake` and register each (latest version) in a fresh
    /// session with the miner's SQL functions.
    pub async fn open(lake: &str) -> Result<Self, InsightsError> {
        loglake_lake::register_object_stores();
        let root = loglake_lake::location_url(lake, false)?;
        let opts = storage_options();
        let tables = loglake_lake::discover(&root, &opts).await?;
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        crate::sql::register(&ctx);
        let mut opened = BTreeMap::new();
        for (name, url) in &tables {
            let t = loglake_lake::open_table(name, url, &opts).await?;
            if t.version().is_none() {
                continue;
            }
            let err = |e: deltalake::DeltaTableError| InsightsError::Delta {
                table: name.clone(),
                source: e,
            };
            t.update_datafusion_session(&ctx.state()).map_err(err)?;
            let provider = t.table_provider().await.map_err(|e| InsightsError::Query {
                sql: format!("open {name}"),
                source: e,
            })?;
            ctx.register_table(name.as_str(), provider)
                .map_err(|e| InsightsError::Query {
                    sql: format!("register {name}"),
                    source: e,
                })?;
            opened.insert(name.clone(), t);
        }
        Ok(Self {
            root,
            tables,
            ctx,
            opened,
        })
    }

    /// Whether the lake has a table of this name (with at least one commit).
    pub fn has_table(&self, name: &str) -> bool {
        self.opened.contains_key(name)
    }

    /// The opened table.
    pub fn table(&self, name: &str) -> Option<&DeltaTable> {
        self.opened.get(name)
    }

    /// The column names of a table.
    pub fn columns(&self, name: &str) -> Vec<String> {
        self.opened
            .get(name)
            .and_then(|t| t.snapshot().ok())
            .map(|s| s.schema().fields().map(|f| f.name().to_string()).collect())
            .unwrap_or_default()
    }

    /// Run a read-only query and collect its batches.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, InsightsError> {
        let q = |e: datafusion::error::DataFusionError| InsightsError::Query {
            sql: sql.to_string(),
            source: e,
        };
        let df = self
            .ctx
            .sql_with_options(sql, crate::sql::read_only())
            .await
            .map_err(q)?;
        df.collect().await.map_err(q)
    }

    /// The manifest of `day`'s completeness marker of a table, if the day is marked complete.
    pub async fn marker(
        &self,
        table: &str,
        day: NaiveDate,
    ) -> Result<Option<serde_json::Value>, InsightsError> {
        let Some(url) = self.tables.get(table) else {
            return Ok(None);
        };
        let (store, prefix) = loglake_lake::object_store_for(url, &storage_options())?;
        let path = object_store::path::Path::from(
            format!(
                "{}/{MARKERS_PATH}/dt={day}/manifest.json",
                prefix.as_ref().trim_end_matches('/')
            )
            .trim_start_matches('/'),
        );
        match store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| InsightsError::Store {
                    path: path.to_string(),
                    source: e,
                })?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| InsightsError::Invalid(format!("{path}: not a manifest: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(InsightsError::Store {
                path: path.to_string(),
                source: e,
            }),
        }
    }

    /// A table's data files of `day` (partition `dt`), per `hour` partition (None: the table is
    /// not partitioned by hour): (files, bytes).
    pub fn files_of_day(&self, table: &str, day: NaiveDate) -> BTreeMap<Option<i32>, (u64, u64)> {
        let mut out: BTreeMap<Option<i32>, (u64, u64)> = BTreeMap::new();
        let Some(snapshot) = self.opened.get(table).and_then(|t| t.snapshot().ok()) else {
            return out;
        };
        let day_s = day.to_string();
        for view in snapshot.log_data().iter() {
            let map = view.partition_values_map();
            if map.get("dt").cloned().flatten().as_deref() != Some(day_s.as_str()) {
                continue;
            }
            let hour = map
                .get("hour")
                .cloned()
                .flatten()
                .and_then(|h| h.parse::<i32>().ok());
            let e = out.entry(hour).or_default();
            e.0 += 1;
            e.1 += u64::try_from(view.size()).unwrap_or(0);
        }
        out
    }
}

/// The URL of the table `name` under the lake root (a local table's folder is created: a writer
/// is about to create the table).
pub fn table_url(root: &Url, name: &str) -> Result<Url, InsightsError> {
    let base = if root.path().ends_with('/') {
        root.clone()
    } else {
        let mut u = root.clone();
        u.set_path(&format!("{}/", root.path()));
        u
    };
    let url = base
        .join(&format!("{name}/"))
        .map_err(|e| InsightsError::Invalid(format!("table {name} under {root}: {e}")))?;
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(&path).map_err(|e| InsightsError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
    }
    Ok(url)
}

/// Writes `batch` as `day`'s partition (`dt`) of the derived table `name` under the lake root,
/// replacing what an earlier run wrote for that day (the first write creates the table): every
/// nightly derivation is re-runnable. The written table.
pub async fn replace_day(
    root: &Url,
    name: &str,
    batch: RecordBatch,
    day: NaiveDate,
) -> Result<DeltaTable, InsightsError> {
    use deltalake::protocol::SaveMode;
    let url = table_url(root, name)?;
    let table = loglake_lake::open_table(name, &url, &storage_options()).await?;
    let exists = table.version().is_some();
    let mut w = table
        .write(vec![batch])
        .with_partition_columns(["dt"])
        .with_save_mode(if exists {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        });
    if exists {
        w = w.with_replace_where(format!("dt = '{day}'"));
    }
    w.await.map_err(|source| InsightsError::Delta {
        table: name.into(),
        source,
    })
}
