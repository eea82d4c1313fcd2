//! The miner as SQL functions for `loglake query` (and any DataFusion session):
//!
//! * `log_templates(query [, options])` — table function. Runs `query` (a SQL string, or a table
//!   name meaning `SELECT message FROM name`), mines its `message` column and returns one row per
//!   template: the `by` columns, `template_id`, `template`, `count`, `example`. Options are
//!   `key=value` pairs (see [`TemplateOptions::parse`]): the Drain settings and `by=col` (repeat
//!   it, or join columns with `+`) to mine each group of rows separately.
//! * `log_template_id(message [, options]) OVER (PARTITION BY …)` and
//!   `drain_template(message [, options]) OVER (…)` — window functions: the rows of each window
//!   partition are mined together (in the partition's order: add `ORDER BY ts` for a
//!   deterministic result), and each row gets the id / text of the template its cluster has at the
//!   end of the partition. Without `PARTITION BY` the whole result is one partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    Expr, PartitionEvaluator, Signature, TableType, TypeSignature, Volatility, WindowUDF,
    WindowUDFImpl,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::drain::{Drain, DrainConfig, MinedTemplate, template_id};

/// Register `log_templates`, `log_template_id` and `drain_template` on a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udtf("log_templates", Arc::new(LogTemplatesFn));
    ctx.register_udwf(WindowUDF::new_from_impl(MinedWindow::new(WindowOutput::Id)));
    ctx.register_udwf(WindowUDF::new_from_impl(MinedWindow::new(
        WindowOutput::Template,
    )));
}

/// Names of the functions [`register`] adds.
pub const FUNCTIONS: &[&str] = &["log_templates", "log_template_id", "drain_template"];

// ---------------------------------------------------------------- options

/// Options of `log_templates`: the miner's settings plus grouping columns and the message
/// column.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateOptions {
    pub drain: DrainConfig,
    pub by: Vec<String>,
    pub message: String,
}

impl Default for TemplateOptions {
    fn default() -> Self {
        Self {
            drain: DrainConfig::default(),
            by: Vec::new(),
            message: "message".into(),
        }
    }
}

impl TemplateOptions {
    /// Parse `by=namespace+service, message=msg, similarity=0.4, depth=4, …`.
    pub fn parse(options: &str) -> std::result::Result<Self, String> {
        let mut by = Vec::new();
        let mut message = "message".to_string();
        let mut rest = Vec::new();
        for kv in options
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            match kv.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("by") => by.extend(
                    v.split('+')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                Some((k, v)) if k.eq_ignore_ascii_case("message") => message = v.trim().into(),
                _ => rest.push(kv),
            }
        }
        for c in by.iter().chain(std::iter::once(&message)) {
            if !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') || c.is_empty() {
                return Err(format!(
                    "column name {c:?}: letters, digits and _ only (quote-free)"
                ));
            }
        }
        let drain = DrainConfig::parse(&rest.join(","))?;
        Ok(Self { drain, by, message })
    }
}

// ---------------------------------------------------------------- mining record batches

/// Templates mined per group of rows (the values of the `by` columns).
#[derive(Debug)]
pub struct GroupedMiner {
    cfg: DrainConfig,
    groups: BTreeMap<Vec<Option<String>>, Drain>,
}

impl GroupedMiner {
    /// An empty miner.
    pub fn new(cfg: DrainConfig) -> Self {
        Self {
            cfg,
            groups: BTreeMap::new(),
        }
    }

    /// The miner of one group, created (and seeded by the caller) on first use.
    pub fn group_mut(&mut self, key: Vec<Option<String>>) -> &mut Drain {
        let cfg = &self.cfg;
        self.groups
            .entry(key)
            .or_insert_with(|| Drain::new(cfg.clone()))
    }

    /// Mine a batch whose first `by` columns are the group key and whose column `by` is the
    /// message (all strings); NULL messages are skipped.
    pub fn add_batch(&mut self, batch: &RecordBatch, by: usize) -> Result<()> {
        let cols: Vec<StrCol<'_>> = batch
            .columns()
            .iter()
            .map(|c| StrCol::new(c.as_ref()))
            .collect::<Result<_>>()?;
        let Some(msg) = cols.get(by) else {
            return exec_err!("log_templates: the batch has no message column");
        };
        let mut key: Vec<Option<String>> = Vec::with_capacity(by);
        for row in 0..batch.num_rows() {
            let Some(m) = msg.get(row) else { continue };
            key.clear();
            key.extend(cols[..by].iter().map(|c| c.get(row).map(str::to_string)));
            match self.groups.get_mut(&key) {
                Some(d) => {
                    d.add(m);
                }
                None => {
                    self.group_mut(key.clone()).add(m);
                }
            }
        }
        Ok(())
    }

    /// The groups and their miners.
    pub fn groups(&self) -> &BTreeMap<Vec<Option<String>>, Drain> {
        &self.groups
    }

    /// Every group's templates, most frequent first within a group.
    pub fn templates(&self) -> Vec<(Vec<Option<String>>, MinedTemplate)> {
        let mut out = Vec::new();
        for (k, d) in &self.groups {
            for t in d.templates() {
                out.push((k.clone(), t));
            }
        }
        out
    }
}

/// A string column of any of Arrow's string layouts.
enum StrCol<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
    Null,
}

impl<'a> StrCol<'a> {
    fn new(a: &'a dyn Array) -> Result<Self> {
        Ok(match a.data_type() {
            DataType::Utf8 => StrCol::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => StrCol::Large(a.as_string::<i64>()),
            DataType::Utf8View => StrCol::View(a.as_string_view()),
            DataType::Null => StrCol::Null,
            other => return exec_err!("expected a string column, got {other}"),
        })
    }
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrCol::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::View(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Null => None,
        }
    }
}

/// The output schema of `log_templates` for these grouping columns.
pub fn templates_schema(by: &[String]) -> SchemaRef {
    let mut f: Vec<Field> = by
        .iter()
        .map(|c| Field::new(c, DataType::Utf8, true))
        .collect();
    f.push(Field::new("template_id", DataType::Utf8, false));
    f.push(Field::new("template", DataType::Utf8, false));
    f.push(Field::new("count", DataType::Int64, false));
    f.push(Field::new("example", DataType::Utf8, false));
    Arc::new(Schema::new(f))
}

/// The templates of a miner as one batch of [`templates_schema`].
pub fn templates_batch(by: &[String], miner: &GroupedMiner) -> Result<RecordBatch> {
    let rows = miner.templates();
    let mut keys: Vec<StringBuilder> = by.iter().map(|_| StringBuilder::new()).collect();
    let mut id = StringBuilder::new();
    let mut tpl = StringBuilder::new();
    let mut count = Int64Builder::new();
    let mut ex = StringBuilder::new();
    for (k, t) in &rows {
        for (b, v) in keys.iter_mut().zip(k) {
            b.append_option(v.as_deref());
        }
        id.append_value(&t.template_id);
        tpl.append_value(&t.template);
        count.append_value(t.count as i64);
        ex.append_value(&t.example);
    }
    let mut cols: Vec<ArrayRef> = keys
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    cols.push(Arc::new(id.finish()));
    cols.push(Arc::new(tpl.finish()));
    cols.push(Arc::new(count.finish()));
    cols.push(Arc::new(ex.finish()));
    Ok(RecordBatch::try_new(templates_schema(by), cols)?)
}

/// The SQL `log_templates` runs: the `by` columns and the message as strings, from `query` (a
/// SQL query, or a table name).
pub fn source_sql(query: &str, opts: &TemplateOptions) -> String {
    let q = query.trim().trim_end_matches(';');
    let inner = if q.split_whitespace().count() == 1 {
        format!("SELECT * FROM {q}")
    } else {
        q.to_string()
    };
    let mut cols: Vec<String> = opts
        .by
        .iter()
        .map(|c| format!("CAST(\"{c}\" AS VARCHAR) AS \"{c}\""))
        .collect();
    cols.push(format!("CAST(\"{0}\" AS VARCHAR) AS \"{0}\"", opts.message));
    format!(
        "SELECT {} FROM ({inner}) AS __log_templates",
        cols.join(", ")
    )
}

/// Run `sql` on `ctx` (read-only) and mine it: the first `by` columns group, the next is the
/// message. Mining runs on the blocking pool, one batch at a time.
pub async fn mine_sql(
    ctx: &SessionContext,
    sql: &str,
    by: usize,
    miner: GroupedMiner,
) -> Result<GroupedMiner> {
    let df = ctx.sql_with_options(sql, read_only()).await?;
    let mut stream = df.execute_stream().await?;
    let mut miner = miner;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        miner = tokio::task::spawn_blocking(move || {
            miner.add_batch(&batch, by)?;
            Ok::<_, DataFusionError>(miner)
        })
        .await
        .map_err(|e| DataFusionError::Execution(format!("template mining failed: {e}")))??;
    }
    Ok(miner)
}

// ---------------------------------------------------------------- log_templates(...)

#[derive(Debug)]
struct LogTemplatesFn;

fn literal_str(e: &Expr, what: &str) -> Result<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(s)), _) => Ok(s.clone()),
        Expr::Column(c) => Ok(c.name.clone()),
        other => plan_err!("log_templates: {what} must be a string literal, got {other}"),
    }
}

impl TableFunctionImpl for LogTemplatesFn {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let (query, options) = match exprs {
            [q] => (literal_str(q, "the query")?, String::new()),
            [q, o] => (literal_str(q, "the query")?, literal_str(o, "the options")?),
            _ => {
                return plan_err!(
                    "log_templates(query [, options]) takes one or two arguments, got {}",
                    exprs.len()
                );
            }
        };
        let opts = TemplateOptions::parse(&options)
            .map_err(|e| DataFusionError::Plan(format!("log_templates: {e}")))?;
        Ok(Arc::new(LogTemplatesTable {
            schema: templates_schema(&opts.by),
            sql: source_sql(&query, &opts),
            opts,
        }))
    }
}

#[derive(Debug)]
struct LogTemplatesTable {
    schema: SchemaRef,
    sql: String,
    opts: TemplateOptions,
}

#[async_trait]
impl TableProvider for LogTemplatesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return plan_err!("log_templates needs a DataFusion SessionState");
        };
        let ctx = SessionContext::new_with_state(state.clone());
        let miner = GroupedMiner::new(self.opts.drain.clone());
        let miner = mine_sql(&ctx, &self.sql, self.opts.by.len(), miner)
            .await
            .map_err(|e| e.context(format!("log_templates: running {}", self.sql)))?;
        let batch = templates_batch(&self.opts.by, &miner)?;
        let exec = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

// ---------------------------------------------------------------- window functions

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WindowOutput {
    Id,
    Template,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct MinedWindow {
    out: WindowOutput,
    signature: Signature,
}

impl MinedWindow {
    fn new(out: WindowOutput) -> Self {
        Self {
            out,
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::String(2)],
                Volatility::Immutable,
            ),
        }
    }
}

impl WindowUDFImpl for MinedWindow {
    fn name(&self) -> &str {
        match self.out {
            WindowOutput::Id => "log_template_id",
            WindowOutput::Template => "drain_template",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(MinedEvaluator { out: self.out }))
    }
    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Utf8,
            true,
        )))
    }
}

#[derive(Debug)]
struct MinedEvaluator {
    out: WindowOutput,
}

impl PartitionEvaluator for MinedEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let Some(msgs) = values.first() else {
            return exec_err!("log_template_id(message [, options]) needs a message");
        };
        let cfg = match values.get(1) {
            None => DrainConfig::default(),
            Some(o) => {
                let o = StrCol::new(o.as_ref())?;
                let text = (0..num_rows).find_map(|i| o.get(i)).unwrap_or("");
                DrainConfig::parse(text)
                    .map_err(|e| DataFusionError::Execution(format!("log_template_id: {e}")))?
            }
        };
        let msgs = StrCol::new(msgs.as_ref())?;
        let mut d = Drain::new(cfg);
        let ids: Vec<Option<u32>> = (0..num_rows)
            .map(|i| msgs.get(i).map(|m| d.add(m)))
            .collect();
        let texts: Vec<String> = d
            .clusters()
            .iter()
            .map(|c| {
                let t = c.template();
                match self.out {
                    WindowOutput::Id => template_id(&t),
                    WindowOutput::Template => t,
                }
            })
            .collect();
        let mut b = StringBuilder::with_capacity(num_rows, num_rows * 16);
        for id in ids {
            b.append_option(id.map(|i| texts[i as usize].as_str()));
        }
        Ok(Arc::new(b.finish()))
    }
}

/// Statement options for the derived SQL the stages run: queries only (no DDL, DML or `SET`).
pub(crate) fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    async fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        register(&ctx);
        let batch = RecordBatch::try_from_iter(vec![
            (
                "service",
                Arc::new(StringArray::from(vec!["a", "a", "a", "b", "b"])) as ArrayRef,
            ),
            (
                "message",
                Arc::new(StringArray::from(vec![
                    "user 1 logged in",
                    "user 2 logged in",
                    "disk full on /dev/sda1",
                    "user 3 logged in",
                    "user 4 logged out",
                ])) as ArrayRef,
            ),
        ])
        .unwrap();
        ctx.register_batch("logs", batch).unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    #[tokio::test]
    async fn log_templates_per_group() {
        let ctx = ctx().await;
        let b = rows(
            &ctx,
            "SELECT service, template, count, template_id FROM log_templates('SELECT * FROM logs', 'by=service') ORDER BY service, template",
        )
        .await;
        let b = arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
        let col = |i: usize| -> Vec<String> {
            let a = arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap();
            a.as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(col(0), ["a", "a", "b"]);
        assert_eq!(
            col(1),
            [
                "disk full on <*>",
                "user <*> logged in",
                "user <*> logged <*>"
            ]
        );
        let counts = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(counts.values(), &[1, 2, 2]);
        assert_eq!(col(3)[1], template_id("user <*> logged in"));
        // a table name means all of its rows, one group
        let b = rows(
            &ctx,
            "SELECT sum(count) AS n, count(*) AS t FROM log_templates('logs')",
        )
        .await;
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&b)
                .unwrap()
                .to_string(),
            "+---+---+\n| n | t |\n+---+---+\n| 5 | 2 |\n+---+---+"
        );
    }

    #[tokio::test]
    async fn window_functions_assign_rows_to_their_partition_template() {
        let ctx = ctx().await;
        let b = rows(
            &ctx,
            "SELECT message, drain_template(message) OVER (PARTITION BY service) AS t, \
             log_template_id(message, 'similarity=0.5') OVER (PARTITION BY service) AS id FROM logs ORDER BY message",
        )
        .await;
        let b = arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
        let t: Vec<&str> = b
            .column(1)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(
            t,
            [
                "disk full on <*>",
                "user <*> logged in",
                "user <*> logged in",
                "user <*> logged <*>",
                "user <*> logged <*>"
            ]
        );
        let id = b.column(2).as_string::<i32>().value(1);
        assert_eq!(id, template_id("user <*> logged in"));
    }

    #[tokio::test]
    async fn bad_options_are_plan_errors() {
        let ctx = ctx().await;
        let e = ctx
            .sql("SELECT * FROM log_templates('logs', 'depth=1')")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("depth must be at least 3"), "{e}");
        let e = ctx
            .sql("SELECT * FROM log_templates('logs', 'by=a;b')")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("column name"), "{e}");
    }
}
