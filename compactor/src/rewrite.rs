//! Rewriting one group: read its files, sort by the table's `sort_by`, write one Parquet file
//! with the table's writer properties (lake::files) through a streaming multipart upload.
//!
//! The sort is DataFusion's `SortExec` over a `DataSourceExec` of exactly the group's files
//! (their paths and sizes from the Delta log: no listing, no footer guessing), in a session whose
//! memory pool is the `--memory-budget`: past it the sort spills sorted runs to local disk and
//! merges them, so a group of any size runs in bounded memory. Files of an older schema read
//! with the table's current one (missing nullable columns as nulls).

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use url::Url;

use crate::error::CompactError;
use crate::plan::Group;

/// A file the rewrite wrote.
pub struct Written {
    /// Path relative to the table root.
    pub path: String,
    pub size: u64,
    pub rows: u64,
    pub metadata: ParquetMetaData,
}

/// The DataFusion session of one table's rewrites: the table's object store under a private URL,
/// one partition (one sorted stream per group), the memory budget as a fair spill pool.
pub struct Rewriter {
    ctx: SessionContext,
    url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    table: String,
}

impl Rewriter {
    pub fn new(
        table: &str,
        store: Arc<dyn ObjectStore>,
        memory_budget: usize,
        spill_dir: Option<&std::path::Path>,
    ) -> Result<Self, CompactError> {
        let err = |e: datafusion::error::DataFusionError| CompactError::DataFusion {
            table: table.to_string(),
            what: "setting up the rewrite".into(),
            source: Box::new(e),
        };
        let mut rt = RuntimeEnvBuilder::new().with_memory_limit(memory_budget, 1.0);
        if let Some(dir) = spill_dir {
            rt = rt.with_temp_file_path(dir);
        }
        let runtime = rt.build_arc().map_err(err)?;
        // One output stream per group; batches of 8k rows; a sort that must spill reserves a
        // little of the budget up front for its merge.
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(8192);
        config.options_mut().execution.sort_spill_reservation_bytes =
            (memory_budget / 8).min(64 << 20);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let raw = "loglake-table://compact/";
        let url = ObjectStoreUrl::parse(raw).map_err(err)?;
        let registered = Url::parse(raw).map_err(|e| CompactError::Internal(e.to_string()))?;
        ctx.register_object_store(&registered, store.clone());
        Ok(Rewriter {
            ctx,
            url,
            store,
            table: table.to_string(),
        })
    }

    /// Reads `group`, sorts it by `sort_by` (ascending, nulls first; no sort when empty) and
    /// writes it to `out_path` with `props`.
    pub async fn rewrite(
        &self,
        group: &Group,
        file_schema: &SchemaRef,
        sort_by: &[String],
        props: WriterProperties,
        out_path: &str,
    ) -> Result<Written, CompactError> {
        let df_err = |what: &str| {
            let what = format!("{what} ({} files into {out_path})", group.files.len());
            let table = self.table.clone();
            move |e: datafusion::error::DataFusionError| CompactError::DataFusion {
                table: table.clone(),
                what: what.clone(),
                source: Box::new(e),
            }
        };
        let files: Vec<PartitionedFile> = group
            .files
            .iter()
            .map(|f| PartitionedFile::new(f.path.clone(), f.size))
            .collect();
        let source = Arc::new(ParquetSource::new(file_schema.clone()));
        let scan_config = FileScanConfigBuilder::new(self.url.clone(), source)
            .with_file_group(FileGroup::new(files))
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(scan_config);
        let plan: Arc<dyn ExecutionPlan> = match sort_exprs(sort_by, file_schema) {
            Some(ordering) => Arc::new(SortExec::new(ordering, scan)),
            None => scan,
        };
        self.write_plan(plan, file_schema, props, out_path, &df_err)
            .await
    }

    /// Rewrites one file keeping only the rows for which `keep` is true, in their order (a
    /// delete): its rows out and the written file.
    pub async fn filter_file(
        &self,
        path: &str,
        size: u64,
        file_schema: &SchemaRef,
        keep: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        props: WriterProperties,
        out_path: &str,
    ) -> Result<Written, CompactError> {
        let df_err = |what: &str| {
            let what = format!("{what} ({path} into {out_path})");
            let table = self.table.clone();
            move |e: datafusion::error::DataFusionError| CompactError::DataFusion {
                table: table.clone(),
                what: what.clone(),
                source: Box::new(e),
            }
        };
        let source = Arc::new(ParquetSource::new(file_schema.clone()));
        let scan_config = FileScanConfigBuilder::new(self.url.clone(), source)
            .with_file_group(FileGroup::new(vec![PartitionedFile::new(
                path.to_string(),
                size,
            )]))
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(scan_config);
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::filter::FilterExec::try_new(keep, scan)
                .map_err(df_err("planning the filter"))?,
        );
        self.write_plan(plan, file_schema, props, out_path, &df_err)
            .await
    }

    /// Runs `plan` (one partition) into a Parquet file at `out_path`, uploaded in parts.
    async fn write_plan<F, E>(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        file_schema: &SchemaRef,
        props: WriterProperties,
        out_path: &str,
        df_err: &F,
    ) -> Result<Written, CompactError>
    where
        F: Fn(&str) -> E,
        E: Fn(datafusion::error::DataFusionError) -> CompactError,
    {
        let mut stream = plan
            .execute(0, self.ctx.task_ctx())
            .map_err(df_err("planning"))?;

        let path = Path::from(out_path);
        let object_writer = BufWriter::new(self.store.clone(), path.clone());
        let parquet_err = |e: parquet::errors::ParquetError| CompactError::Parquet {
            table: self.table.clone(),
            path: out_path.to_string(),
            source: Box::new(e),
        };
        let mut writer = AsyncArrowWriter::try_new(object_writer, file_schema.clone(), Some(props))
            .map_err(parquet_err)?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df_err("reading"))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await.map_err(parquet_err)?;
        }
        let metadata = writer.finish().await.map_err(parquet_err)?;
        let size = writer.bytes_written() as u64;
        Ok(Written {
            path: out_path.to_string(),
            size,
            rows,
            metadata,
        })
    }
}

fn sort_exprs(sort_by: &[String], schema: &SchemaRef) -> Option<LexOrdering> {
    let exprs: Vec<PhysicalSortExpr> = sort_by
        .iter()
        .filter_map(|c| col(c, schema).ok())
        .map(|e| {
            PhysicalSortExpr::new(
                e,
                SortOptions {
                    descending: false,
                    nulls_first: true,
                },
            )
        })
        .collect();
    LexOrdering::new(exprs)
}
