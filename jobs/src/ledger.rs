//! The run ledger: a Delta table under the lake (`_loglake/runs`), one row per stage, table and
//! attempt of a nightly run. Read it with `loglake query`
//! (`SELECT * FROM delta_scan('<lake>/_loglake/runs')`).
//!
//! The runner asks it whether a stage already succeeded for a date, table and input
//! fingerprint ([`Ledger::succeeded`]) and skips it then; every attempt, skipped or not, adds a
//! row. Only the runner that holds the lake's lease writes it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use serde::Serialize;
use url::Url;

use crate::error::JobError;

/// Where the ledger lives under the lake root.
pub const LEDGER_PATH: &str = "_loglake/runs";

/// What a stage attempt ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Skipped,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub run_id: String,
    pub date: String,
    pub stage: String,
    /// The table, or `*` for a stage over the whole lake (archive).
    pub table: String,
    pub attempt: i32,
    pub status: Status,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// What the stage's input was (table version, frozen offsets): a success with the same
    /// fingerprint makes a later attempt a skip.
    pub fingerprint: String,
    pub output_version: Option<i64>,
    /// The stage's report (JSON).
    pub metrics: String,
    pub error: Option<String>,
}

fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("date", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("attempt", DataType::Int32, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("ended_at", ts, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("output_version", DataType::Int64, true),
        Field::new("metrics", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

fn batch(rows: &[Entry]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let s = |f: fn(&Entry) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let ts = |f: fn(&Entry) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"),
        )
    };
    RecordBatch::try_new(
        schema(),
        vec![
            s(|e| &e.run_id),
            s(|e| &e.date),
            s(|e| &e.stage),
            s(|e| &e.table),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|e| e.attempt))),
            s(|e| e.status.as_str()),
            ts(|e| e.started_at.timestamp_micros()),
            ts(|e| e.ended_at.timestamp_micros()),
            s(|e| &e.fingerprint),
            Arc::new(Int64Array::from_iter(rows.iter().map(|e| e.output_version))),
            s(|e| &e.metrics),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|e| e.error.as_deref()),
            )),
        ],
    )
}

/// The ledger of one lake, with the rows of one date loaded.
pub struct Ledger {
    url: Url,
    options: HashMap<String, String>,
    /// (stage, table, fingerprint) of the date's successes.
    successes: std::collections::HashSet<(String, String, String)>,
    /// (stage, table) → attempts so far for the date.
    attempts: HashMap<(String, String), i32>,
}

impl Ledger {
    /// The ledger under `lake` (`<lake>/_loglake/runs`), with `date`'s rows read.
    pub async fn open(
        lake: &Url,
        options: &HashMap<String, String>,
        date: &str,
    ) -> Result<Self, JobError> {
        // a trailing slash, or `join` would replace the lake's last path segment
        let mut base = lake.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let url = base
            .join(LEDGER_PATH)
            .map_err(|e| JobError::Config(format!("lake {lake}: {e}")))?;
        // a local lake: the table's folder must exist before delta-rs opens (and creates) it;
        // object stores have no folders
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir).map_err(|e| JobError::Ledger {
                url: url.to_string(),
                message: format!("creating {}: {e}", dir.display()),
            })?;
        }
        let mut ledger = Ledger {
            url,
            options: options.clone(),
            successes: Default::default(),
            attempts: Default::default(),
        };
        ledger.load(date).await?;
        Ok(ledger)
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    fn err(&self, e: impl std::fmt::Display) -> JobError {
        JobError::Ledger {
            url: self.url.to_string(),
            message: e.to_string(),
        }
    }

    async fn table(&self) -> Result<DeltaTable, JobError> {
        loglake_lake::open_table("runs", &self.url, &self.options)
            .await
            .map_err(|e| self.err(e))
    }

    async fn load(&mut self, date: &str) -> Result<(), JobError> {
        let table = self.table().await?;
        if table.version().is_none() {
            return Ok(());
        }
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| self.err(e))?;
        let provider = table.table_provider().await.map_err(|e| self.err(e))?;
        ctx.register_table("runs", provider)
            .map_err(|e| self.err(e))?;
        let date_lit = date.replace('\'', "''");
        let batches = ctx
            .sql(&format!(
                "SELECT stage, \"table\", fingerprint, status FROM runs WHERE date = '{date_lit}'"
            ))
            .await
            .map_err(|e| self.err(e))?
            .collect()
            .await
            .map_err(|e| self.err(e))?;
        for b in batches {
            let cols: Vec<ArrayRef> = b
                .columns()
                .iter()
                .map(|c| arrow::compute::cast(c, &DataType::Utf8))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e))?;
            let (stage, table, fp, status) = (
                cols[0].as_string::<i32>(),
                cols[1].as_string::<i32>(),
                cols[2].as_string::<i32>(),
                cols[3].as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                let key = (stage.value(i).to_string(), table.value(i).to_string());
                *self.attempts.entry(key.clone()).or_default() += 1;
                if status.value(i) == Status::Success.as_str() {
                    self.successes
                        .insert((key.0, key.1, fp.value(i).to_string()));
                }
            }
        }
        Ok(())
    }

    /// Whether `stage` of `table` already succeeded on this input.
    pub fn succeeded(&self, stage: &str, table: &str, fingerprint: &str) -> bool {
        self.successes.contains(&(
            stage.to_string(),
            table.to_string(),
            fingerprint.to_string(),
        ))
    }

    /// The attempt number of the next run of `stage` on `table` (1 for the first).
    pub fn next_attempt(&mut self, stage: &str, table: &str) -> i32 {
        let n = self
            .attempts
            .entry((stage.to_string(), table.to_string()))
            .or_default();
        *n += 1;
        *n
    }

    /// Appends `rows` (one commit).
    pub async fn append(&mut self, rows: &[Entry]) -> Result<(), JobError> {
        if rows.is_empty() {
            return Ok(());
        }
        for e in rows.iter().filter(|e| e.status == Status::Success) {
            self.successes
                .insert((e.stage.clone(), e.table.clone(), e.fingerprint.clone()));
        }
        let b = batch(rows).map_err(|e| self.err(e))?;
        let table = self.table().await?;
        table
            .write(vec![b])
            .with_save_mode(SaveMode::Append)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
