//! Running one statement: execute it (cancellable by Ctrl-C), stream its batches to a
//! [`ResultWriter`] under the row limit, report progress.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::output::{self, Format, ResultShape, ResultWriter};
use crate::script::Statement;
use crate::{Engine, QueryError, diagnose, progress};

/// What every statement of a run shares: the runtime, the engine, how results are printed and
/// the notifier that cancels the running statement (None: not cancellable).
pub struct StatementContext<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub engine: &'a Engine,
    pub shape: &'a ResultShape,
    pub cancel: Option<&'a tokio::sync::Notify>,
}

impl StatementContext<'_> {
    /// Run `fut` on the runtime; None when the cancel notifier fires first.
    fn block_on_cancellable<F: Future>(&self, fut: F) -> Option<F::Output> {
        match self.cancel {
            Some(n) => self.rt.block_on(async {
                tokio::select! {
                    r = fut => Some(r),
                    _ = n.notified() => None,
                }
            }),
            None => Some(self.rt.block_on(fut)),
        }
    }
}

/// Execute one statement and write its result. Returns the number of rows written.
/// `wrote_parquet` is shared by the statements of one script: Parquet output holds one result.
pub fn run_statement(
    ctx: &StatementContext<'_>,
    stmt: &Statement,
    out: &mut output::Out,
    err: &mut dyn Write,
    wrote_parquet: &mut bool,
) -> Result<usize, QueryError> {
    let mut progress = progress::Progress::start(progress::wanted(std::io::stderr().is_terminal()));
    let r = run_statement_inner(ctx, stmt, out, err, wrote_parquet, &mut progress);
    progress.stop();
    r
}

fn run_statement_inner(
    ctx: &StatementContext<'_>,
    stmt: &Statement,
    out: &mut output::Out,
    err: &mut dyn Write,
    wrote_parquet: &mut bool,
    progress: &mut progress::Progress,
) -> Result<usize, QueryError> {
    let named = statement_error(ctx.engine, stmt);
    let res = ctx
        .block_on_cancellable(ctx.engine.execute(stmt))
        .ok_or_else(|| cancelled(stmt))?
        .map_err(&named)?;
    progress.set_plan(Arc::clone(&res.plan));
    if res.schema.fields().is_empty() {
        // DDL and the like: drain, print nothing
        let mut stream = res.stream;
        while let Some(b) = ctx.rt.block_on(stream.next()) {
            b.map_err(&named)?;
        }
        return Ok(0);
    }
    claim_parquet_output(ctx.shape.format, wrote_parquet, stmt)?;
    // plain headers: `min(ts)`, not `min(logs.ts)`
    let schema = output::plain_headers(&res.schema);
    let mut w = ResultWriter::new(ctx.shape.format, out).with_max_width(ctx.shape.max_width);
    w.begin(Arc::clone(&schema)).map_err(&named)?;
    let streamed = write_stream(ctx, stmt, res.stream, &schema, &mut w, progress)?;
    let mut rows = streamed.rows;
    if let Some(t) = res.trailer {
        rows += t.num_rows();
        w.batch(with_schema(&schema, t).map_err(|e| named(e.into()))?)
            .map_err(&named)?;
    }
    progress.stop();
    w.finish().map_err(&named)?;
    if streamed.truncated
        && let Some(m) = ctx.shape.max_rows
    {
        let _ = writeln!(
            err,
            "(statement {}: output limited to {m} rows; --max-rows or \\maxrows changes it)",
            stmt.index
        );
    }
    Ok(rows)
}

/// Turns an engine error into a statement error naming the statement and position.
fn statement_error<'a>(
    engine: &'a Engine,
    stmt: &'a Statement,
) -> impl Fn(DataFusionError) -> QueryError + 'a {
    move |e| QueryError::Statement(diagnose::describe(stmt, &e, &diagnose::names_of(engine)))
}

fn cancelled(stmt: &Statement) -> QueryError {
    QueryError::Statement(format!("statement {}: cancelled", stmt.index))
}

/// Parquet output holds one result: the first query of a script claims it, a second one fails.
fn claim_parquet_output(
    format: Format,
    wrote_parquet: &mut bool,
    stmt: &Statement,
) -> Result<(), QueryError> {
    if format == Format::Parquet {
        if *wrote_parquet {
            return Err(QueryError::Statement(format!(
                "statement {}: Parquet output holds one result; the script has several queries",
                stmt.index
            )));
        }
        *wrote_parquet = true;
    }
    Ok(())
}

/// The batch with the (plain-header) schema of the result.
fn with_schema(schema: &SchemaRef, b: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let opts = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), b.columns().to_vec(), &opts)
}

/// Rows written from the stream, and whether the row limit cut it.
struct Streamed {
    rows: usize,
    truncated: bool,
}

/// Write the stream's batches until it ends, the row limit is reached or the statement is
/// cancelled. The stream is dropped before returning.
fn write_stream(
    ctx: &StatementContext<'_>,
    stmt: &Statement,
    mut stream: SendableRecordBatchStream,
    schema: &SchemaRef,
    w: &mut ResultWriter<'_>,
    progress: &mut progress::Progress,
) -> Result<Streamed, QueryError> {
    let named = statement_error(ctx.engine, stmt);
    let max_rows = ctx.shape.max_rows;
    let mut rows = 0usize;
    let mut truncated = false;
    loop {
        let next = ctx.block_on_cancellable(stream.next());
        let Some(next) = next.ok_or_else(|| cancelled(stmt))? else {
            break;
        };
        let mut batch = with_schema(schema, next.map_err(&named)?).map_err(|e| named(e.into()))?;
        if let Some(m) = max_rows
            && rows + batch.num_rows() > m
        {
            batch = batch.slice(0, m - rows);
            truncated = true;
        }
        rows += batch.num_rows();
        progress.add_rows(batch.num_rows() as u64);
        w.batch(batch).map_err(&named)?;
        if truncated {
            break;
        }
    }
    Ok(Streamed { rows, truncated })
}
