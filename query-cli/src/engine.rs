//! The query engine: a DataFusion session over the lake with log-friendly settings, the table
//! functions, the read-only guard, and statement execution with positioned errors.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::config::Dialect;
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

mod calls;
mod guard;

use crate::lake::{self, LakeSchema, ScanLog, TimeTravel};
use crate::script::{self, Statement};
use crate::tablefns::{self, Arg, Args};
use calls::{Call, collect_calls};
use guard::{check_read_only, write_error};

/// Engine settings (from the command line).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// `--lake`: URL or path under which every Delta table is registered by folder name.
    pub lake: Option<String>,
    /// `--memory-limit` in bytes; operators spill to disk beyond it.
    pub memory_limit: Option<usize>,
    /// Folder for spill files (default: the OS temp dir).
    pub temp_dir: Option<std::path::PathBuf>,
    /// `--allow-write`: permit COPY TO, INSERT, UPDATE, DELETE, MERGE.
    pub allow_write: bool,
    /// Parallelism (default: number of cores).
    pub target_partitions: Option<usize>,
}

/// Names of the table functions handled by the rewrite.
pub const TABLE_FUNCTIONS: &[&str] = &[
    "delta_scan",
    "read_parquet",
    "read_csv",
    "read_json",
    "read_ndjson",
    "log_context",
    "correlate",
    "lake_status",
];

/// The result of one statement.
pub struct StatementResult {
    pub schema: SchemaRef,
    pub stream: SendableRecordBatchStream,
    /// Extra rows to append after the stream (EXPLAIN's Delta file counts).
    pub trailer: Option<RecordBatch>,
    /// The physical plan the stream runs (its scan metrics feed the progress line).
    pub plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
}

/// The query engine.
pub struct Engine {
    pub ctx: SessionContext,
    pub lake: Arc<LakeSchema>,
    scans: ScanLog,
    opts: EngineOptions,
}

/// The default schema all lake tables live in.
pub const LAKE_SCHEMA: &str = "lake";
/// The default catalog.
pub const CATALOG: &str = "loglake";

impl Engine {
    /// Build the session and discover the lake's tables.
    pub async fn new(opts: EngineOptions) -> Result<Engine> {
        loglake_lake::register_object_stores();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, LAKE_SCHEMA)
            .with_target_partitions(opts.target_partitions.unwrap_or(cores));
        {
            let o = config.options_mut();
            // log-friendly scan defaults: late materialisation of selective filters, page index,
            // bloom filters (trace ids), dynamic filters from joins and TopK into the scan
            o.execution.parquet.pushdown_filters = true;
            o.execution.parquet.reorder_filters = true;
            o.execution.parquet.enable_page_index = true;
            o.execution.parquet.bloom_filter_on_read = true;
            o.optimizer.enable_dynamic_filter_pushdown = true;
            o.sql_parser.collect_spans = true;
            o.execution.collect_statistics = true;
        }
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = opts.memory_limit {
            let pool = TrackConsumersPool::new(
                FairSpillPool::new(limit),
                std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
            );
            rt = rt.with_memory_pool(Arc::new(pool));
        }
        if let Some(dir) = &opts.temp_dir {
            rt = rt.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
        let runtime = rt.build_arc()?;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        state.table_factories_mut().insert(
            "DELTA".to_string(),
            Arc::new(deltalake::delta_datafusion::DeltaTableFactory {}),
        );
        let mut ctx = SessionContext::new_with_state(state);
        crate::functions::register(&mut ctx)?;
        crate::sqltypes::register(&ctx);

        let discovered = match &opts.lake {
            Some(l) => lake::discover(&lake::to_url(l)?).await?,
            None => Default::default(),
        };
        let scans = ScanLog::default();
        let lake = Arc::new(LakeSchema::new(discovered, scans.clone()));
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
        catalog.register_schema(LAKE_SCHEMA, Arc::clone(&lake) as _)?;
        lake.set_state(ctx.state());
        Ok(Engine {
            ctx,
            lake,
            scans,
            opts,
        })
    }

    /// Names of the tables in the lake schema.
    pub fn table_names(&self) -> Vec<String> {
        use datafusion::catalog::SchemaProvider;
        self.lake.table_names()
    }

    /// Parse, rewrite and plan one statement of a script.
    pub async fn plan_statement(&self, stmt: &Statement) -> Result<LogicalPlan> {
        let text = stmt.positioned_text();
        let text = script::rewrite_time_travel(&text).unwrap_or(text);
        self.plan_sql(&text, true).await
    }

    /// Parse and plan SQL text (a single statement), resolving the table functions.
    pub fn plan_sql<'a>(
        &'a self,
        sql: &'a str,
        top: bool,
    ) -> futures::future::BoxFuture<'a, Result<LogicalPlan>> {
        Box::pin(async move {
            let state = self.ctx.state();
            let mut st = state.sql_to_statement(sql, &Dialect::Generic)?;
            if top && !self.opts.allow_write {
                check_read_only(&st)?;
            }
            let calls = collect_calls(&mut st)?;
            for call in calls {
                let provider = self
                    .resolve_call(&call)
                    .await
                    .map_err(|e| crate::tfcheck::at_position_of_call(e, &call.spans))?;
                datafusion::catalog::SchemaProvider::register_table(
                    self.lake.as_ref(),
                    call.id.clone(),
                    provider,
                )?;
            }
            let plan = state.statement_to_plan(st).await?;
            Ok(plan)
        })
    }

    /// Execute one statement of a script.
    pub async fn execute(&self, stmt: &Statement) -> Result<StatementResult> {
        let _ = self.scans.take();
        let plan = self.plan_statement(stmt).await;
        let res = match plan {
            Ok(plan) => self.execute_plan(plan).await,
            Err(e) => Err(e),
        };
        self.drop_temporaries();
        res
    }

    async fn execute_plan(&self, plan: LogicalPlan) -> Result<StatementResult> {
        let is_explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        if !self.opts.allow_write {
            datafusion::execution::context::SQLOptions::new()
                .with_allow_dml(false)
                .verify_plan(&plan)
                .map_err(|_| write_error("this statement"))?;
        }
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let task_ctx = Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await?;
        let stream = datafusion::physical_plan::execute_stream(Arc::clone(&physical), task_ctx)?;
        let trailer = if is_explain {
            let notes = crate::lake::statistics_notes(self.scans.take(), &physical);
            if notes.is_empty() || schema.fields().len() != 2 {
                None
            } else {
                let kinds: Vec<&str> = notes.iter().map(|_| "delta_files").collect();
                let cols: Vec<arrow::array::ArrayRef> = vec![
                    Arc::new(StringArray::from(kinds)),
                    Arc::new(StringArray::from(
                        notes.iter().map(String::as_str).collect::<Vec<_>>(),
                    )),
                ];
                let cols = cols
                    .into_iter()
                    .zip(schema.fields())
                    .map(|(c, f)| arrow::compute::cast(&c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Some(RecordBatch::try_new(Arc::clone(&schema), cols)?)
            }
        } else {
            None
        };
        Ok(StatementResult {
            schema,
            stream,
            trailer,
            plan: physical,
        })
    }

    fn drop_temporaries(&self) {
        use datafusion::catalog::SchemaProvider;
        if let Ok(names) = self.lake.registered_names() {
            for n in names.into_iter().filter(|n| n.starts_with("__lq_")) {
                let _ = self.lake.deregister_table(&n);
            }
        }
    }

    async fn resolve_call(&self, call: &Call) -> Result<Arc<dyn TableProvider>> {
        let f = call.func.as_str();
        let a = &call.args;
        let first = || {
            a.get("location", Some(0))
                .map(|x| x.text())
                .ok_or_else(|| DataFusionError::Plan(format!("{f}: missing the location argument")))
        };
        match f {
            "lake_status" => {
                let batch = lake::lake_status(&self.lake.discovered).await?;
                let table =
                    datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
                Ok(Arc::new(table))
            }
            "delta_scan" => self.delta_scan(a, first()?).await,
            "read_parquet" | "read_csv" | "read_json" | "read_ndjson" => {
                self.read_files(f, first()?).await
            }
            "log_context" => self.log_context(call).await,
            "correlate" => self.correlate(call).await,
            other => Err(DataFusionError::Plan(format!(
                "unknown table function {other}"
            ))),
        }
    }

    /// `delta_scan(location [, version | timestamp])`: a lake table by name, else a Delta table
    /// at a path or URL, at the version asked for.
    async fn delta_scan(&self, a: &Args, loc: String) -> Result<Arc<dyn TableProvider>> {
        let at = delta_scan_version(a)?;
        let bare = loc.rsplit('.').next().unwrap_or(&loc).to_string();
        if !loc.contains('/')
            && !loc.contains("://")
            && self.lake.discovered.contains_key(&bare)
            && let Some(t) = self.lake.open(&bare, &at).await?
        {
            return Ok(t);
        }
        let url = lake::to_url(&loc)?;
        lake::open_delta(&self.ctx.state(), &url, &at, &loc, &self.scans).await
    }

    /// `read_parquet`, `read_csv`, `read_json`, `read_ndjson` of a file or folder (local or S3).
    async fn read_files(&self, f: &str, loc: String) -> Result<Arc<dyn TableProvider>> {
        self.ensure_object_store(&loc)?;
        let df = match f {
            "read_parquet" => {
                self.ctx
                    .read_parquet(loc.as_str(), ParquetReadOptions::default())
                    .await?
            }
            "read_csv" => self.ctx.read_csv(loc.as_str(), Default::default()).await?,
            _ => {
                let opts = datafusion::prelude::JsonReadOptions::default().file_extension(
                    if loc.ends_with(".ndjson") {
                        ".ndjson"
                    } else {
                        ".json"
                    },
                );
                self.ctx.read_json(loc.as_str(), opts).await?
            }
        };
        Ok(df.into_view())
    }

    /// `log_context(...)`: a view over the SQL of [`tablefns::log_context_sql`].
    async fn log_context(&self, call: &Call) -> Result<Arc<dyn TableProvider>> {
        let (f, a) = (call.func.as_str(), &call.args);
        tablefns::relation_of(a, "table", 0).ok_or_else(|| {
            DataFusionError::Plan("log_context: missing the table argument".into())
        })?;
        // each argument checked on its own: errors point at the argument, not the generated SQL
        let cols = crate::tfcheck::log_context(self, a, &call.spans).await?;
        let at_call = |e| crate::tfcheck::at_call(self, f, &call.spans, e);
        let (sql, _) = tablefns::log_context_sql(a, &cols).map_err(at_call)?;
        let plan = self.plan_sql(&sql, false).await.map_err(at_call)?;
        Ok(Arc::new(ViewTable::new(plan, Some(sql))))
    }

    /// `correlate(...)`: a view over the SQL of [`tablefns::correlate_sql`].
    async fn correlate(&self, call: &Call) -> Result<Arc<dyn TableProvider>> {
        let (f, a) = (call.func.as_str(), &call.args);
        tablefns::relation_of(a, "left", 0)
            .ok_or_else(|| DataFusionError::Plan("correlate: missing the left argument".into()))?;
        tablefns::relation_of(a, "right", 1)
            .ok_or_else(|| DataFusionError::Plan("correlate: missing the right argument".into()))?;
        let (lc, rc) = crate::tfcheck::correlate(self, a, &call.spans).await?;
        let at_call = |e| crate::tfcheck::at_call(self, f, &call.spans, e);
        let sql = tablefns::correlate_sql(a, &lc, &rc).map_err(at_call)?;
        let plan = self.plan_sql(&sql, false).await.map_err(at_call)?;
        Ok(Arc::new(ViewTable::new(plan, Some(sql))))
    }

    /// Register an S3 object store for `s3://bucket/...` locations read by table functions.
    fn ensure_object_store(&self, loc: &str) -> Result<()> {
        if !loc.starts_with("s3://") && !loc.starts_with("s3a://") {
            return Ok(());
        }
        let url = url::Url::parse(loc)
            .map_err(|e| DataFusionError::Plan(format!("invalid URL {loc}: {e}")))?;
        let base = url::Url::parse(&format!(
            "{}://{}/",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ))
        .map_err(|e| DataFusionError::Plan(format!("invalid URL {loc}: {e}")))?;
        let osu = datafusion::execution::object_store::ObjectStoreUrl::parse(base.as_str())?;
        if self.ctx.runtime_env().object_store(&osu).is_ok() {
            return Ok(());
        }
        let (store, _) = lake::object_store_for(&base)?;
        self.ctx.register_object_store(&base, store);
        Ok(())
    }
}

/// Turn an error into a message naming the statement and the position (without the lake's
/// names for suggestions; see [`crate::diagnose::describe`]).
pub fn describe_error(stmt: &Statement, e: &DataFusionError) -> String {
    crate::diagnose::describe(stmt, e, &Default::default())
}
/// The version `delta_scan` asks for: its second argument (a version or a timestamp), or a
/// `timestamp =>` argument, which wins.
fn delta_scan_version(a: &Args) -> Result<TimeTravel> {
    let at = match a.get("version", Some(1)) {
        None => TimeTravel::Latest,
        Some(Arg::Int(v)) => TimeTravel::Version(*v),
        Some(Arg::Str(ts)) => TimeTravel::Timestamp(ts.clone()),
        Some(other) => {
            return Err(DataFusionError::Plan(format!(
                "delta_scan: the second argument is a version (integer) or a timestamp (string), got {}",
                other.sql()
            )));
        }
    };
    Ok(match a.get("timestamp", None) {
        Some(ts) => TimeTravel::Timestamp(ts.text()),
        None => at,
    })
}
