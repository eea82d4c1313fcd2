//! Reading the lake (loglake query's DataFusion session: every lake table registered, the log
//! functions, time travel) and writing Parquet files in memory, with the column types every
//! consumer reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use loglake_query::lake::TimeTravel;
use loglake_query::{Engine, EngineOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::error::ExportError;
use crate::layout::export_type;

/// The storage options every export reads and writes with (the `AWS_*` variables).
pub fn storage_options() -> HashMap<String, String> {
    loglake_lake::storage_options(&HashMap::new())
}

/// loglake query's engine over the lake at `lake` (every Delta table under it by folder name).
pub async fn engine(lake: &str, memory_limit: Option<usize>) -> Result<Engine, ExportError> {
    Engine::new(EngineOptions {
        lake: Some(lake.to_string()),
        memory_limit,
        ..Default::default()
    })
    .await
    .map_err(|e| ExportError::Usage(format!("lake {lake}: {e}")))
}

/// The URL of the lake table `name`, or a usage error listing the lake's tables.
pub fn table_url(engine: &Engine, lake: &str, name: &str) -> Result<url::Url, ExportError> {
    engine.lake.discovered.get(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = engine.lake.discovered.keys().map(String::as_str).collect();
        ExportError::Usage(format!(
            "no table {name:?} in lake {lake} (tables: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}

/// The current version of the Delta table at `url` and its partition columns.
pub async fn table_version(name: &str, url: &url::Url) -> Result<(i64, Vec<String>), ExportError> {
    let table = loglake_lake::open_table(name, url, &storage_options()).await?;
    let version = table
        .version()
        .ok_or_else(|| ExportError::Usage(format!("table {name} ({url}) has no version")))?;
    let snapshot = table
        .snapshot()
        .map_err(|e| ExportError::Internal(format!("table {name} ({url}): {e}")))?;
    let parts = snapshot.metadata().partition_columns();
    Ok((version as i64, parts.to_vec()))
}

/// Plans `sql` (read-only; `VERSION AS OF` rewritten) on the engine.
pub async fn plan(engine: &Engine, sql: &str) -> Result<LogicalPlan, ExportError> {
    let text = loglake_query::script::rewrite_time_travel(sql).unwrap_or_else(|| sql.to_string());
    engine
        .plan_sql(&text, true)
        .await
        .map_err(|e| ExportError::query(sql, e))
}

/// The lake tables a plan reads (its table scans, subqueries included), by name.
pub fn scanned_tables(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            names.push(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names.sort();
    names.dedup();
    names
}

/// Pins every lake table `sql` reads to its current version (registered under its own name,
/// which the lake schema resolves first), so that the whole export reads one snapshot of each
/// and the manifest can say which. Returns name → (URL, version).
pub async fn pin_tables(
    engine: &Engine,
    sql: &str,
) -> Result<BTreeMap<String, (String, i64)>, ExportError> {
    let plan = plan(engine, sql).await?;
    let mut pinned = BTreeMap::new();
    for name in scanned_tables(&plan) {
        let Some(url) = engine.lake.discovered.get(&name).cloned() else {
            continue;
        };
        let (version, _) = table_version(&name, &url).await?;
        let provider = engine
            .lake
            .open(&name, &TimeTravel::Version(version))
            .await
            .map_err(|e| ExportError::query(sql, e))?
            .ok_or_else(|| ExportError::Internal(format!("table {name} vanished")))?;
        datafusion::catalog::SchemaProvider::register_table(
            engine.lake.as_ref(),
            name.clone(),
            provider,
        )
        .map_err(|e| ExportError::query(sql, e))?;
        pinned.insert(name, (url.to_string(), version));
    }
    Ok(pinned)
}

/// Runs `sql` and returns its schema and result stream.
pub async fn stream(
    engine: &Engine,
    sql: &str,
) -> Result<(SchemaRef, SendableRecordBatchStream), ExportError> {
    let plan = plan(engine, sql).await?;
    let df = engine
        .ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| ExportError::query(sql, e))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| ExportError::query(sql, e))?;
    Ok((schema, stream))
}

/// The schema a result is written with: every column's [`export_type`].
pub fn export_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), export_type(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

/// `batch` with the columns `indices` cast to the types of `to` (one field per index).
pub fn convert(
    batch: &RecordBatch,
    indices: &[usize],
    to: &SchemaRef,
) -> Result<RecordBatch, ExportError> {
    let cols: Vec<ArrayRef> = indices
        .iter()
        .zip(to.fields())
        .map(|(&i, f)| {
            let c = batch.column(i);
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type()).map_err(|e| {
                    ExportError::Internal(format!(
                        "column {}: cannot convert {} to {}: {e}",
                        f.name(),
                        c.data_type(),
                        f.data_type()
                    ))
                })
            }
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(Arc::clone(to), cols)
        .map_err(|e| ExportError::Internal(format!("building a batch: {e}")))
}

/// The Parquet properties of exported files: zstd, statistics, standard LIST/MAP names.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_coerce_types(true)
        .build()
}

/// A finished file: its bytes, rows and SHA-256 (hex).
pub struct Finished {
    pub data: Bytes,
    pub rows: u64,
    pub sha256: String,
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Parquet file written in memory, each batch encoded on the blocking pool.
pub struct ParquetFile {
    writer: Option<ArrowWriter<Vec<u8>>>,
    rows: u64,
    name: String,
}

impl ParquetFile {
    pub fn new(schema: SchemaRef, name: &str) -> Result<Self, ExportError> {
        let writer = ArrowWriter::try_new(Vec::new(), schema, Some(writer_properties()))
            .map_err(|e| ExportError::encode(name, e))?;
        Ok(ParquetFile {
            writer: Some(writer),
            rows: 0,
            name: name.to_string(),
        })
    }

    /// Encodes `batch` (on the blocking pool).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| ExportError::Internal(format!("{}: written after close", self.name)))?;
        let n = batch.num_rows() as u64;
        let (w, res) = tokio::task::spawn_blocking(move || {
            let r = w.write(&batch);
            (w, r)
        })
        .await
        .map_err(|e| ExportError::Internal(format!("encoding task: {e}")))?;
        self.writer = Some(w);
        res.map_err(|e| ExportError::encode(&self.name, e))?;
        self.rows += n;
        Ok(())
    }

    /// Bytes written so far plus the row group in progress (an estimate of the file's size).
    pub fn size(&self) -> usize {
        self.writer
            .as_ref()
            .map(|w| w.bytes_written() + w.in_progress_size())
            .unwrap_or(0)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the file (footer) and hashes it.
    pub async fn finish(mut self) -> Result<Finished, ExportError> {
        let w = self
            .writer
            .take()
            .ok_or_else(|| ExportError::Internal(format!("{}: closed twice", self.name)))?;
        let rows = self.rows;
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let data = w.into_inner().map_err(|e| ExportError::encode(&name, e))?;
            let sha256 = sha256_hex(&data);
            Ok(Finished {
                data: Bytes::from(data),
                rows,
                sha256,
            })
        })
        .await
        .map_err(|e| ExportError::Internal(format!("encoding task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{MapBuilder, MapFieldNames, StringBuilder};
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn maps_are_written_with_parquet_names_whatever_the_engine_called_them() {
        let names = MapFieldNames {
            entry: "labels".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        let mut mb = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
        mb.keys().append_value("app");
        mb.values().append_value("web");
        mb.append(true).expect("map");
        let map: ArrayRef = Arc::new(mb.finish());
        let batch = RecordBatch::try_from_iter(vec![("labels", map)]).expect("batch");
        let to = export_schema(&batch.schema());
        let converted = convert(&batch, &[0], &to).expect("convert");
        let mut f = ParquetFile::new(to, "t.parquet").expect("file");
        f.write(converted).await.expect("write");
        let done = f.finish().await.expect("finish");
        assert_eq!(done.rows, 1);
        assert_eq!(done.sha256, sha256_hex(&done.data));
        let reader = ParquetRecordBatchReaderBuilder::try_new(done.data)
            .expect("reader")
            .build()
            .expect("build");
        use arrow::array::RecordBatchReader;
        let schema = reader.schema();
        let DataType::Map(entries, _) = schema.field(0).data_type() else {
            panic!("{schema:?}")
        };
        assert_eq!(entries.name(), "key_value");
        let DataType::Struct(kv) = entries.data_type() else {
            panic!("{entries:?}")
        };
        assert_eq!(
            (kv[0].name().as_str(), kv[1].name().as_str()),
            ("key", "value")
        );
    }
}
