//! The lake catalog: discovery of Delta tables under `--lake`, lazy loading, time travel, and the
//! scan bookkeeping that lets `EXPLAIN` show how many files Delta statistics let us skip.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTableBuilder;
use loglake_lake::LakeError;
use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use url::Url;

/// Which snapshot of a Delta table to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TimeTravel {
    Latest,
    Version(i64),
    /// RFC 3339 timestamp: the last version committed at or before it.
    Timestamp(String),
}

/// Storage options for reading the lake: the `AWS_*` environment variables, resolved as every
/// stage resolves them (`loglake_lake::storage`). `loglake query` has no `[storage]` file.
pub fn storage_options() -> HashMap<String, String> {
    loglake_lake::storage_options(&HashMap::new())
}

/// A lake error as a DataFusion error: a bad location is a planning error, the rest external.
pub fn lake_error(e: LakeError) -> DataFusionError {
    match e {
        LakeError::Location { .. } => DataFusionError::Plan(e.to_string()),
        e => DataFusionError::External(Box::new(e)),
    }
}

/// Turn a user path or URL into a URL (relative local paths are resolved against the cwd;
/// nothing is created).
pub fn to_url(location: &str) -> Result<Url> {
    loglake_lake::location_url(location, false).map_err(lake_error)
}

/// Every Delta table under the lake root `root` (name → URL; see `loglake_lake::discover`).
pub async fn discover(root: &Url) -> Result<BTreeMap<String, Url>> {
    loglake_lake::discover(root, &storage_options())
        .await
        .map_err(lake_error)
}

/// An object store for an `s3://bucket/prefix` URL configured from `AWS_*` variables.
pub fn object_store_for(url: &Url) -> Result<(Arc<dyn ObjectStore>, ObjPath)> {
    loglake_lake::object_store_for(url, &storage_options()).map_err(lake_error)
}

/// Open a Delta table at `url` at the requested snapshot and return a provider registered with
/// the session's object stores.
pub async fn open_delta(
    state: &datafusion::execution::SessionState,
    url: &Url,
    at: &TimeTravel,
    name: &str,
    scans: &ScanLog,
) -> Result<Arc<dyn TableProvider>> {
    let err = |e: deltalake::DeltaTableError| {
        DataFusionError::Plan(format!("Delta table {name} ({url}): {e}"))
    };
    let mut b = DeltaTableBuilder::from_url(url.clone())
        .map_err(err)?
        .with_storage_options(storage_options());
    match at {
        TimeTravel::Latest => {}
        TimeTravel::Version(v) => {
            if *v < 0 {
                return Err(DataFusionError::Plan(format!(
                    "Delta version must be >= 0, got {v}"
                )));
            }
            b = b.with_version(*v as _)
        }
        TimeTravel::Timestamp(ts) => b = b.with_datestring(ts).map_err(err)?,
    }
    let table = match b.load().await {
        Ok(t) => t,
        Err(e) => {
            // "LogSegment end version 0 not the same as the specified end version 9" → say it
            if let TimeTravel::Version(v) = at
                && let Ok(latest) = DeltaTableBuilder::from_url(url.clone())
                    .map_err(err)?
                    .with_storage_options(storage_options())
                    .load()
                    .await
                && let Some(l) = latest.version()
                && (l as i64) < *v
            {
                return Err(DataFusionError::Plan(format!(
                    "Delta table {name} has no version {v}; its latest version is {l}"
                )));
            }
            return Err(err(e));
        }
    };
    if let TimeTravel::Timestamp(ts) = at {
        check_committed_by(&table, ts, name).await?;
    }
    table.update_datafusion_session(state).map_err(err)?;
    let total_files = table
        .snapshot()
        .map(|s| s.log_data().num_files())
        .unwrap_or(0);
    let version = table.version().map(|v| v as i64);
    let inner = table
        .table_provider()
        .with_session(Arc::new(state.clone()))
        .await?;
    Ok(Arc::new(DeltaLakeTable {
        name: name.to_string(),
        version,
        total_files,
        inner,
        scans: scans.clone(),
    }))
}

/// delta-rs resolves a timestamp older than the table to its first version; an analyst asking
/// for the table "as of" a time before it existed gets an error instead of rows written later.
/// The commit time is the commit file's modification time, as delta-rs's own resolution uses.
async fn check_committed_by(table: &deltalake::DeltaTable, ts: &str, name: &str) -> Result<()> {
    let Some(v) = table.version() else {
        return Ok(());
    };
    let target = chrono::DateTime::parse_from_rfc3339(ts)
        .map_err(|e| DataFusionError::Plan(format!("TIMESTAMP AS OF '{ts}': {e}")))?;
    use object_store::ObjectStoreExt as _;
    let store = table.log_store().object_store(None);
    let commit = object_store::path::Path::from(format!("_delta_log/{v:020}.json"));
    // a commit file cleaned up after a checkpoint has no time to check: trust delta-rs
    if let Ok(meta) = store.head(&commit).await
        && meta.last_modified > target
    {
        return Err(DataFusionError::Plan(format!(
            "Delta table {name} has no version committed at or before {ts} \
             (its oldest readable version {v} was committed at {})",
            meta.last_modified.to_rfc3339()
        )));
    }
    Ok(())
}

/// Files each Delta scan of the current statement reads, for `EXPLAIN`.
#[derive(Debug, Clone, Default)]
pub struct ScanLog(Arc<Mutex<Vec<String>>>);

impl ScanLog {
    pub fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
    fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
}

/// EXPLAIN's `delta_files` lines, saying so when the answer comes from statistics: when the
/// explained physical plan reads no file at all (DataFusion answered `count(*)`, `min`, `max`
/// from the Delta log's file statistics: no `DataSourceExec` left, only a placeholder row), the
/// line says "no file read" instead of a misleading "0 of 3 files scanned".
pub fn statistics_notes(notes: Vec<String>, explain: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    use datafusion::common::display::PlanType;
    use datafusion::physical_plan::explain::ExplainExec;
    let Some(x) = explain.downcast_ref::<ExplainExec>() else {
        return notes;
    };
    let Some(physical) = x
        .stringified_plans()
        .iter()
        .find(|p| p.plan_type == PlanType::FinalPhysicalPlan)
    else {
        return notes;
    };
    let from_stats =
        !physical.plan.contains("DataSourceExec") && physical.plan.contains("PlaceholderRowExec");
    if !from_stats {
        return notes;
    }
    notes
        .into_iter()
        .map(|n| {
            let (table, rest) = n.split_once(": ").unwrap_or((n.as_str(), ""));
            let filters = rest
                .find("; filters: ")
                .map(|i| &rest[i..])
                .unwrap_or_default();
            format!(
                "{table}: no file read, the answer comes from the Delta log's file statistics{filters}"
            )
        })
        .collect()
}

/// A Delta table provider that reports how many of the snapshot's files a scan reads.
#[derive(Debug)]
pub struct DeltaLakeTable {
    name: String,
    version: Option<i64>,
    total_files: usize,
    inner: Arc<dyn TableProvider>,
    scans: ScanLog,
}

/// Count the files a physical plan reads.
pub fn count_files(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut n = 0;
    if let Some(ds) = plan.downcast_ref::<DataSourceExec>()
        && let Some(cfg) = ds.data_source().downcast_ref::<FileScanConfig>()
    {
        n += cfg.file_groups.iter().map(|g| g.len()).sum::<usize>();
    }
    for c in plan.children() {
        n += count_files(c);
    }
    n
}

#[async_trait::async_trait]
impl TableProvider for DeltaLakeTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }
    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        self.note(&plan, filters);
        Ok(plan)
    }
    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: datafusion::catalog::ScanArgs<'a>,
    ) -> Result<datafusion::catalog::ScanResult> {
        let filters: Vec<Expr> = args.filters().map(|f| f.to_vec()).unwrap_or_default();
        let res = self.inner.scan_with_args(state, args).await?;
        self.note(res.plan(), &filters);
        Ok(res)
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.insert_into(state, input, insert_op).await
    }
}

impl DeltaLakeTable {
    fn note(&self, plan: &Arc<dyn ExecutionPlan>, filters: &[Expr]) {
        let scanned = count_files(plan);
        let v = self.version.map(|v| format!("@v{v}")).unwrap_or_default();
        let f: Vec<String> = filters.iter().map(|e| e.to_string()).collect();
        self.scans.push(format!(
            "{}{v}: {scanned} of {} files scanned ({} skipped by partition values and file statistics){}",
            self.name,
            self.total_files,
            self.total_files.saturating_sub(scanned),
            if f.is_empty() { String::new() } else { format!("; filters: {}", f.join(" AND ")) }
        ));
    }
}

/// The `lake` schema: the discovered Delta tables (opened on first use) plus tables registered
/// in the session (`CREATE EXTERNAL TABLE`, `CREATE TABLE AS`).
#[derive(Debug)]
pub struct LakeSchema {
    pub discovered: BTreeMap<String, Url>,
    loaded: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    registered: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    state: Mutex<Option<datafusion::execution::SessionState>>,
    scans: ScanLog,
}

impl LakeSchema {
    pub fn new(discovered: BTreeMap<String, Url>, scans: ScanLog) -> Self {
        Self {
            discovered,
            loaded: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            state: Mutex::new(None),
            scans,
        }
    }

    /// The session the lake's tables are read with (set once the context exists).
    pub fn set_state(&self, state: datafusion::execution::SessionState) {
        if let Ok(mut s) = self.state.lock() {
            *s = Some(state);
        }
    }

    fn session_state(&self) -> Result<datafusion::execution::SessionState> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(|| {
                DataFusionError::Internal("lake schema used before its session was set".into())
            })
    }

    /// Names registered in this session (including temporaries).
    pub fn registered_names(&self) -> Result<Vec<String>> {
        let r = self
            .registered
            .lock()
            .map_err(|_| DataFusionError::Internal("poisoned lock".into()))?;
        Ok(r.keys().cloned().collect())
    }

    /// Open a discovered table at a given snapshot (not cached unless `Latest`).
    pub async fn open(
        &self,
        name: &str,
        at: &TimeTravel,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(url) = self.discovered.get(name).cloned() else {
            return Ok(None);
        };
        if *at == TimeTravel::Latest
            && let Some(t) = self.loaded.lock().ok().and_then(|m| m.get(name).cloned())
        {
            return Ok(Some(t));
        }
        let state = self.session_state()?;
        let t = open_delta(&state, &url, at, name, &self.scans).await?;
        if *at == TimeTravel::Latest
            && let Ok(mut m) = self.loaded.lock()
        {
            m.insert(name.to_string(), Arc::clone(&t));
        }
        Ok(Some(t))
    }
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.discovered.keys().cloned().collect();
        if let Ok(r) = self.registered.lock() {
            names.extend(r.keys().filter(|k| !k.starts_with("__lq_")).cloned());
        }
        names.sort();
        names.dedup();
        names
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self
            .registered
            .lock()
            .ok()
            .and_then(|r| r.get(name).cloned())
        {
            return Ok(Some(t));
        }
        self.open(name, &TimeTravel::Latest).await
    }
    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        if let Some(t) = self
            .registered
            .lock()
            .ok()
            .and_then(|r| r.get(name).cloned())
        {
            return Ok(Some(t.table_type()));
        }
        Ok(self
            .discovered
            .contains_key(name)
            .then_some(TableType::Base))
    }
    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let mut r = self
            .registered
            .lock()
            .map_err(|_| DataFusionError::Internal("poisoned lock".into()))?;
        Ok(r.insert(name, table))
    }
    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let mut r = self
            .registered
            .lock()
            .map_err(|_| DataFusionError::Internal("poisoned lock".into()))?;
        Ok(r.remove(name))
    }
    fn table_exist(&self, name: &str) -> bool {
        self.discovered.contains_key(name)
            || self
                .registered
                .lock()
                .map(|r| r.contains_key(name))
                .unwrap_or(false)
    }
}

/// Where `loglake nightly` writes a table's completeness markers (jobs/src/complete.rs).
const MARKERS: &str = "_loglake/complete";

/// `lake_status()`: per table of the lake, the days `loglake nightly` marked complete
/// (`<table>/_loglake/complete/dt=<day>/manifest.json`): the newest (`complete_through`), how
/// many, and the newest one's event-time watermark and row count. A table without markers has
/// NULLs: nothing says any of its days is complete.
pub async fn lake_status(tables: &BTreeMap<String, Url>) -> Result<RecordBatch> {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let mut names = Vec::new();
    let mut through: Vec<Option<String>> = Vec::new();
    let mut days = Vec::new();
    let mut watermarks: Vec<Option<String>> = Vec::new();
    let mut rows: Vec<Option<i64>> = Vec::new();
    for (name, url) in tables {
        let (store, prefix) = object_store_for(url)?;
        let markers = ObjPath::from(
            format!("{}/{MARKERS}", prefix.as_ref().trim_end_matches('/')).trim_start_matches('/'),
        );
        let listed: Vec<object_store::ObjectMeta> = store
            .list(Some(&markers))
            .try_collect()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut complete: Vec<(String, ObjPath)> = listed
            .into_iter()
            .filter(|m| m.location.filename() == Some("manifest.json"))
            .filter_map(|m| {
                let day = m
                    .location
                    .parts()
                    .filter_map(|p| p.as_ref().strip_prefix("dt=").map(str::to_string))
                    .next()?;
                Some((day, m.location))
            })
            .collect();
        complete.sort();
        names.push(name.clone());
        days.push(complete.len() as i64);
        match complete.last() {
            Some((day, path)) => {
                through.push(Some(day.clone()));
                let manifest: Option<serde_json::Value> = match store.get(path).await {
                    Ok(r) => r
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok()),
                    Err(_) => None,
                };
                watermarks.push(
                    manifest
                        .as_ref()
                        .and_then(|m| m["watermark"].as_str().map(str::to_string)),
                );
                rows.push(manifest.as_ref().and_then(|m| m["rows"].as_i64()));
            }
            None => {
                through.push(None);
                watermarks.push(None);
                rows.push(None);
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("complete_through", DataType::Utf8, true),
        Field::new("days_complete", DataType::Int64, false),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("rows_on_last_day", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(through)),
            Arc::new(Int64Array::from(days)),
            Arc::new(StringArray::from(watermarks)),
            Arc::new(Int64Array::from(rows)),
        ],
    )
    .map_err(|e| DataFusionError::External(Box::new(e)))
}
