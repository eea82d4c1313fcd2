//! Planning one table's ETL at start ([`Etl::compile`]): each expression parsed, planned into a
//! DataFusion physical expression against the decoder's schema, type-checked, and tried on an
//! empty batch.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::prelude::SessionContext;
use loglake_schemas::RouteDef;

use super::redact::Redaction;
use super::{COORDINATES, Compiled, Derived, Etl, EtlError, EtlSpec, Route};

fn df_schema(schema: &SchemaRef) -> Result<DFSchema, String> {
    DFSchema::try_from(schema.as_ref().clone()).map_err(|e| e.to_string())
}

/// Plans `sql` against `dfs` into a physical expression (cast to `cast` when given); the error
/// quotes the expression.
fn plan_on(
    ctx: &SessionContext,
    key: &str,
    sql: &str,
    dfs: &DFSchema,
    cast: Option<&DataType>,
) -> Result<Compiled, String> {
    let at = |e: String| format!("`{sql}`: {e}");
    let mut expr = ctx
        .parse_sql_expr(sql, dfs)
        .map_err(|e| at(e.strip_backtrace()))?;
    if let Some(t) = cast {
        expr = expr.cast_to(t, dfs).map_err(|e| at(e.strip_backtrace()))?;
    }
    // Coerced and simplified as a query's expressions are (`coalesce`, `arrow_cast`, … only
    // exist in simplified form).
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(dfs.clone()))
            .with_config_options(Arc::clone(ctx.state().config_options()))
            .build(),
    );
    let expr = simplifier
        .coerce(expr, dfs)
        .and_then(|e| simplifier.simplify(e))
        .map_err(|e| at(e.strip_backtrace()))?;
    let phys = ctx
        .create_physical_expr(expr, dfs)
        .map_err(|e| at(e.strip_backtrace()))?;
    Ok(Compiled {
        key: key.to_string(),
        sql: sql.to_string(),
        expr: phys,
    })
}

/// An [`EtlError`] of `table` (defined in `source`) at `key`.
fn etl_error(table: &str, source: Option<&Path>, key: &str, reason: String) -> EtlError {
    EtlError {
        table: table.to_string(),
        file: source.map(|p| p.display().to_string()),
        key: key.to_string(),
        reason,
    }
}

/// What the steps of [`Etl::compile`] share: the table and its file (for errors), the session
/// that plans, and the decoder's schema.
struct Planner<'a> {
    table: &'a str,
    source: Option<&'a Path>,
    ctx: SessionContext,
    input: &'a SchemaRef,
    dfs: DFSchema,
}

impl<'a> Planner<'a> {
    fn new(
        table: &'a str,
        source: Option<&'a Path>,
        input: &'a SchemaRef,
    ) -> Result<Self, EtlError> {
        let ctx = SessionContext::new();
        let dfs = df_schema(input).map_err(|e| etl_error(table, source, "schema", e))?;
        Ok(Planner {
            table,
            source,
            ctx,
            input,
            dfs,
        })
    }

    fn err(&self, key: &str, reason: String) -> EtlError {
        etl_error(self.table, self.source, key, reason)
    }

    /// Plans `sql` against the decoder's schema (see [`plan_on`]).
    fn plan(&self, key: &str, sql: &str, cast: Option<&DataType>) -> Result<Compiled, EtlError> {
        plan_on(&self.ctx, key, sql, &self.dfs, cast).map_err(|reason| self.err(key, reason))
    }

    /// The `filter`: a boolean condition on the decoded columns.
    fn filter(&self, sql: &str) -> Result<Compiled, EtlError> {
        let c = self.plan("filter", sql, None)?;
        let t = c
            .expr
            .data_type(self.input)
            .map_err(|e| self.err("filter", format!("`{sql}`: {}", e.strip_backtrace())))?;
        if t != DataType::Boolean {
            return Err(self.err(
                "filter",
                format!("`{sql}` is of type {t}, not a boolean condition"),
            ));
        }
        Ok(c)
    }

    /// The `[derive]` columns and the output schema: the decoder's, with the new derived
    /// columns at the end.
    fn derive(
        &self,
        spec: &EtlSpec,
        partition_by: &[String],
    ) -> Result<(Vec<Derived>, SchemaRef), EtlError> {
        let input = self.input;
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut derive = Vec::new();
        for (name, sql) in &spec.derive {
            derive.push(self.derived(name, sql, partition_by, &mut fields)?);
        }
        let output: SchemaRef =
            Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok((derive, output))
    }

    /// `derive.NAME`: overwrites the decoder's column `name` (cast to its type) or adds a
    /// nullable column at the end of `fields`.
    fn derived(
        &self,
        name: &str,
        sql: &str,
        partition_by: &[String],
        fields: &mut Vec<Field>,
    ) -> Result<Derived, EtlError> {
        let input = self.input;
        let key = format!("derive.{name}");
        if COORDINATES.contains(&name) {
            return Err(self.err(
                &key,
                format!("`{name}` is a Kafka coordinate of the row and cannot be overwritten"),
            ));
        }
        let existing = input.index_of(name).ok();
        let cast = existing.map(|i| input.field(i).data_type().clone());
        let c = self.plan(&key, sql, cast.as_ref())?;
        let t = c
            .expr
            .data_type(input)
            .map_err(|e| self.err(&key, format!("`{sql}`: {}", e.strip_backtrace())))?;
        let (out_index, nullable) = match existing {
            Some(i) => (i, input.field(i).is_nullable()),
            None => {
                fields.push(Field::new(name, t.clone(), true));
                (fields.len() - 1, true)
            }
        };
        if partition_by.iter().any(|p| p == name)
            && !matches!(t, DataType::Utf8 | DataType::Int32 | DataType::Date32)
        {
            return Err(self.err(
                &key,
                format!(
                    "`{name}` partitions the table but `{sql}` is of type {t}: a partition column must be a string, an Int32 or a date (cast it)"
                ),
            ));
        }
        Ok(Derived {
            compiled: c,
            name: name.to_string(),
            out_index,
            nullable,
        })
    }

    /// The `redact` entries, against the output schema.
    fn redactions(&self, spec: &EtlSpec, output: &SchemaRef) -> Result<Vec<Redaction>, EtlError> {
        spec.redact
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                Redaction::compile(i, entry, self.table, output)
                    .map_err(|reason| self.err(&format!("redact[{i}]"), reason))
            })
            .collect()
    }

    /// The `[[route]]` tables, their `when` planned against the output schema.
    fn routes(&self, spec: &EtlSpec, output: &SchemaRef) -> Result<Vec<Route>, EtlError> {
        if spec.routes.is_empty() {
            return Ok(Vec::new());
        }
        let out_dfs = df_schema(output).map_err(|e| self.err("schema", e))?;
        spec.routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let key = format!("route[{i}]");
                self.route(&key, r, &out_dfs, output)
                    .map_err(|reason| self.err(&key, reason))
            })
            .collect()
    }

    /// One route (`key`: `route[i]`); the error is the reason (the caller names the key).
    fn route(
        &self,
        key: &str,
        r: &RouteDef,
        out_dfs: &DFSchema,
        output: &SchemaRef,
    ) -> Result<Route, String> {
        let moves = match r.mode.as_deref() {
            None | Some("copy") => false,
            Some("move") => true,
            Some(other) => {
                return Err(format!(
                    "mode `{other}` must be `copy` (the default) or `move`"
                ));
            }
        };
        if r.table == self.table {
            return Err(format!("`{}` routes to itself", self.table));
        }
        let when = plan_on(&self.ctx, key, &r.when, out_dfs, None)?;
        let t = when
            .expr
            .data_type(output)
            .map_err(|e| format!("`{}`: {}", r.when, e.strip_backtrace()))?;
        if t != DataType::Boolean {
            return Err(format!(
                "`when = {}` is of type {t}, not a boolean condition",
                r.when
            ));
        }
        Ok(Route {
            when,
            table: r.table.clone(),
            moves,
        })
    }

    /// Tries the filter and the derived columns, then the whole ETL, on an empty batch: a type
    /// error the planner let through shows now, not at 3 a.m.
    fn try_on_empty(&self, etl: &Etl) -> Result<(), EtlError> {
        let empty = RecordBatch::new_empty(Arc::clone(&etl.input));
        for c in etl
            .filter
            .iter()
            .chain(etl.derive.iter().map(|d| &d.compiled))
        {
            c.expr
                .evaluate(&empty)
                .and_then(|v| v.into_array(0))
                .map_err(|e| self.err(&c.key, format!("`{}`: {}", c.sql, e.strip_backtrace())))?;
        }
        etl.apply(&empty)
            .map_err(|e| self.err("etl", format!("on an empty batch: {e}")))?;
        Ok(())
    }
}

impl Etl {
    /// Parses, plans, type-checks and tries every expression of `spec` against `input` (the
    /// decoder's schema). `source` (the definition's file) is only for errors.
    pub fn compile(
        table: &str,
        source: Option<&Path>,
        spec: &EtlSpec,
        input: SchemaRef,
        partition_by: &[String],
    ) -> Result<Etl, EtlError> {
        let planner = Planner::new(table, source, &input)?;
        let filter = match &spec.filter {
            Some(sql) => Some(planner.filter(sql)?),
            None => None,
        };
        let (derive, output) = planner.derive(spec, partition_by)?;
        let redact = planner.redactions(spec, &output)?;
        let routes = planner.routes(spec, &output)?;
        let etl = Etl {
            table: table.to_string(),
            input: Arc::clone(&input),
            output,
            filter,
            derive,
            redact,
            routes,
        };
        planner.try_on_empty(&etl)?;
        Ok(etl)
    }
}
