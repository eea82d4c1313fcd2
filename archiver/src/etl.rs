//! Archive-time ETL: `filter`, `[derive]` and `redact` of a table definition, applied to each
//! decoded Arrow batch before it is buffered (README, "Transform at archive time").
//!
//! The SQL expressions are parsed and planned once per table at start ([`Etl::compile`]) into
//! DataFusion physical expressions against the decoder's schema, type-checked and tried on an
//! empty batch; every batch is then evaluated column-wise ([`Etl::apply`]), never per record.
//! Order: the filter (on the decoded columns) drops rows, the derived columns are computed on
//! what is left (each from the decoded columns, not from one another), then the redactions run
//! on the result (so they can mask a derived column too); last, each `[[route]]`'s `when` picks
//! the rows copied (or moved) to its table.
//!
//! Exactly-once (DESIGN.md, "Archive-time ETL"): a record whose rows are all dropped by the
//! filter is *filtered*; the archive loop records its offset in the commit info of the commit
//! that advances its partition past it, and `loglake audit` counts it as covered. A record on
//! whose rows an expression fails at run time goes to the dead-letter table, with the table,
//! the key and the error in its `error` column.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, StringBuilder, new_null_array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use loglake_schemas::{RedactEntry, RedactRule, RouteDef, TableDef};
use regex::Regex;

/// The ETL keys of one table definition (or of the single-table form's flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtlSpec {
    pub filter: Option<String>,
    pub derive: BTreeMap<String, String>,
    pub redact: Vec<RedactEntry>,
    /// `[[route]]` tables: rows for which `when` is true are copied (or moved) to another table.
    pub routes: Vec<RouteDef>,
}

impl EtlSpec {
    pub fn from_def(def: &TableDef) -> Self {
        EtlSpec {
            filter: def.filter.clone(),
            derive: def.derive.clone(),
            redact: def.redact.clone(),
            routes: def.route.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_none()
            && self.derive.is_empty()
            && self.redact.is_empty()
            && self.routes.is_empty()
    }
}

/// A definition that cannot work: names the table, its file, the key and the reason (with the
/// position in the expression where DataFusion gives one).
#[derive(Debug, thiserror::Error)]
#[error("table `{table}`{}: `{key}`: {reason}", file.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
pub struct EtlError {
    pub table: String,
    pub file: Option<String>,
    pub key: String,
    pub reason: String,
}

/// Columns an expression may not overwrite: the Kafka coordinates are the exactly-once record.
const COORDINATES: &[&str] = &["kafka_topic", "kafka_partition", "kafka_offset"];

/// A named pattern of the redaction library.
struct NamedPattern {
    name: &'static str,
    regex: &'static str,
    replace: &'static str,
    /// A value without any of these substrings cannot match (checked before the regex).
    needles: &'static [&'static str],
    /// Matches must pass the Luhn check (card numbers).
    luhn: bool,
}

/// The named patterns (`redact = ["email", …]`).
const NAMED_PATTERNS: &[NamedPattern] = &[
    NamedPattern {
        name: "email",
        regex: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        replace: "<email>",
        needles: &["@"],
        luhn: false,
    },
    NamedPattern {
        name: "ipv4",
        regex: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        replace: "<ipv4>",
        needles: &["."],
        luhn: false,
    },
    NamedPattern {
        name: "ipv6",
        // full form, or `::`-compressed with at least two groups in all
        regex: r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|(?:\b[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5}\b)?",
        replace: "<ipv6>",
        needles: &[":"],
        luhn: false,
    },
    NamedPattern {
        name: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        replace: "<jwt>",
        needles: &["eyJ"],
        luhn: false,
    },
    NamedPattern {
        name: "bearer",
        regex: r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}",
        replace: "${1}<token>",
        needles: &["earer", "EARER"],
        luhn: false,
    },
    NamedPattern {
        name: "aws_key",
        regex: r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|(?i)(aws_secret_access_key[\x22']?\s*[=:]\s*[\x22']?)[A-Za-z0-9/+=]{40}",
        replace: "${1}<aws-key>",
        needles: &["AKIA", "ASIA", "ecret_access_key", "ECRET_ACCESS_KEY"],
        luhn: false,
    },
    NamedPattern {
        name: "credit_card",
        regex: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        replace: "<card>",
        needles: &[],
        luhn: true,
    },
];

/// The names of the redaction library.
pub fn named_patterns() -> Vec<&'static str> {
    NAMED_PATTERNS.iter().map(|p| p.name).collect()
}

/// Whether the digits of `s` (separators ignored) pass the Luhn check.
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 13 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[derive(Debug)]
struct Compiled {
    /// `filter` or `derive.NAME`.
    key: String,
    sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

#[derive(Debug)]
struct Derived {
    compiled: Compiled,
    name: String,
    /// Position in the output schema.
    out_index: usize,
    nullable: bool,
}

#[derive(Debug)]
struct Route {
    when: Compiled,
    table: String,
    moves: bool,
}

#[derive(Debug)]
struct Redaction {
    /// The pattern's name (`email`) or `redact[i]` for a custom one: the metric's label.
    label: String,
    column: String,
    out_index: usize,
    regex: Regex,
    replace: String,
    needles: Vec<String>,
    luhn: bool,
}

/// One table's compiled ETL.
#[derive(Debug)]
pub struct Etl {
    table: String,
    input: SchemaRef,
    output: SchemaRef,
    filter: Option<Compiled>,
    derive: Vec<Derived>,
    redact: Vec<Redaction>,
    routes: Vec<Route>,
}

/// What [`Etl::apply`] did to one batch.
#[derive(Debug)]
pub struct EtlOutput {
    /// The rows to write, in the output schema.
    pub batch: RecordBatch,
    /// Rows the filter dropped.
    pub filtered_rows: u64,
    /// (topic, partition, offset) of the records left without any row by the filter (with the
    /// fragment offsets of reassembled lines): covered by no table, recorded in the commit info.
    pub filtered_offsets: Vec<(String, i32, i64)>,
    /// Records on whose rows an expression failed: (topic, partition, offset, reason). None of
    /// their rows is in `batch`; they go to the dead-letter table.
    pub failed: Vec<(String, i32, i64, String)>,
    /// Replacements made per redaction, in [`Etl::redaction_labels`] order.
    pub redactions: Vec<u64>,
    /// Per route ([`Etl::route_tables`] order): the rows it copies or moves (output schema).
    pub routed: Vec<RecordBatch>,
    /// (topic, partition, offset) of the records whose rows all moved to route tables (none left
    /// in `batch`): recorded in the commit info like filtered ones.
    pub moved_offsets: Vec<(String, i32, i64)>,
}

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

/// The attrs key under which a reassembled line lists its fragments' offsets.
const FRAGMENT_OFFSETS: &str = "loglake.fragment_offsets";

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
        let err = |key: &str, reason: String| EtlError {
            table: table.to_string(),
            file: source.map(|p| p.display().to_string()),
            key: key.to_string(),
            reason,
        };
        let ctx = SessionContext::new();
        let dfs = df_schema(&input).map_err(|e| err("schema", e))?;
        let plan = |key: &str, sql: &str, cast: Option<&DataType>| -> Result<Compiled, EtlError> {
            plan_on(&ctx, key, sql, &dfs, cast).map_err(|reason| err(key, reason))
        };
        let filter = match &spec.filter {
            Some(sql) => {
                let c = plan("filter", sql, None)?;
                let t = c
                    .expr
                    .data_type(&input)
                    .map_err(|e| err("filter", format!("`{sql}`: {}", e.strip_backtrace())))?;
                if t != DataType::Boolean {
                    return Err(err(
                        "filter",
                        format!("`{sql}` is of type {t}, not a boolean condition"),
                    ));
                }
                Some(c)
            }
            None => None,
        };
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut derive = Vec::new();
        for (name, sql) in &spec.derive {
            let key = format!("derive.{name}");
            if COORDINATES.contains(&name.as_str()) {
                return Err(err(
                    &key,
                    format!("`{name}` is a Kafka coordinate of the row and cannot be overwritten"),
                ));
            }
            let existing = input.index_of(name).ok();
            let cast = existing.map(|i| input.field(i).data_type().clone());
            let c = plan(&key, sql, cast.as_ref())?;
            let t = c
                .expr
                .data_type(&input)
                .map_err(|e| err(&key, format!("`{sql}`: {}", e.strip_backtrace())))?;
            let (out_index, nullable) = match existing {
                Some(i) => (i, input.field(i).is_nullable()),
                None => {
                    fields.push(Field::new(name, t.clone(), true));
                    (fields.len() - 1, true)
                }
            };
            if partition_by.contains(name)
                && !matches!(t, DataType::Utf8 | DataType::Int32 | DataType::Date32)
            {
                return Err(err(
                    &key,
                    format!(
                        "`{name}` partitions the table but `{sql}` is of type {t}: a partition column must be a string, an Int32 or a date (cast it)"
                    ),
                ));
            }
            derive.push(Derived {
                compiled: c,
                name: name.clone(),
                out_index,
                nullable,
            });
        }
        let output: SchemaRef =
            Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let mut redact = Vec::new();
        for (i, entry) in spec.redact.iter().enumerate() {
            let key = format!("redact[{i}]");
            let rule = match entry {
                RedactEntry::Named(n) => RedactRule {
                    column: None,
                    name: Some(n.clone()),
                    pattern: None,
                    replace: None,
                },
                RedactEntry::Rule(r) => r.clone(),
            };
            let column = rule.column.clone().unwrap_or_else(|| "message".into());
            let Ok(out_index) = output.index_of(&column) else {
                return Err(err(
                    &key,
                    format!("no column `{column}` to redact in table `{table}`"),
                ));
            };
            if output.field(out_index).data_type() != &DataType::Utf8 {
                return Err(err(
                    &key,
                    format!(
                        "column `{column}` is of type {}; only string columns can be redacted",
                        output.field(out_index).data_type()
                    ),
                ));
            }
            let (label, regex, replace, needles, luhn) = match (&rule.name, &rule.pattern) {
                (Some(n), None) => {
                    let Some(p) = NAMED_PATTERNS.iter().find(|p| p.name == n.as_str()) else {
                        return Err(err(
                            &key,
                            format!(
                                "unknown pattern `{n}` (known: {})",
                                named_patterns().join(", ")
                            ),
                        ));
                    };
                    (
                        p.name.to_string(),
                        p.regex.to_string(),
                        rule.replace
                            .clone()
                            .unwrap_or_else(|| p.replace.to_string()),
                        p.needles.iter().map(|s| s.to_string()).collect(),
                        p.luhn,
                    )
                }
                (None, Some(pattern)) => (
                    format!("redact[{i}]"),
                    pattern.clone(),
                    rule.replace.clone().unwrap_or_else(|| "<redacted>".into()),
                    Vec::new(),
                    false,
                ),
                _ => {
                    return Err(err(
                        &key,
                        "give either `name` (a named pattern) or `pattern` (a regex)".into(),
                    ));
                }
            };
            let regex = Regex::new(&regex).map_err(|e| err(&key, format!("bad regex: {e}")))?;
            redact.push(Redaction {
                label,
                column,
                out_index,
                regex,
                replace,
                needles,
                luhn,
            });
        }
        let mut routes = Vec::new();
        if !spec.routes.is_empty() {
            let out_dfs = df_schema(&output).map_err(|e| err("schema", e))?;
            for (i, r) in spec.routes.iter().enumerate() {
                let key = format!("route[{i}]");
                let moves = match r.mode.as_deref() {
                    None | Some("copy") => false,
                    Some("move") => true,
                    Some(other) => {
                        return Err(err(
                            &key,
                            format!("mode `{other}` must be `copy` (the default) or `move`"),
                        ));
                    }
                };
                if r.table == table {
                    return Err(err(&key, format!("`{table}` routes to itself")));
                }
                let when = plan_on(&ctx, &key, &r.when, &out_dfs, None)
                    .map_err(|reason| err(&key, reason))?;
                let t = when
                    .expr
                    .data_type(&output)
                    .map_err(|e| err(&key, format!("`{}`: {}", r.when, e.strip_backtrace())))?;
                if t != DataType::Boolean {
                    return Err(err(
                        &key,
                        format!(
                            "`when = {}` is of type {t}, not a boolean condition",
                            r.when
                        ),
                    ));
                }
                routes.push(Route {
                    when,
                    table: r.table.clone(),
                    moves,
                });
            }
        }
        let etl = Etl {
            table: table.to_string(),
            input: input.clone(),
            output,
            filter,
            derive,
            redact,
            routes,
        };
        // Tried on an empty batch: a type error the planner let through shows now, not at 3 a.m.
        let empty = RecordBatch::new_empty(input);
        for c in etl
            .filter
            .iter()
            .chain(etl.derive.iter().map(|d| &d.compiled))
        {
            c.expr
                .evaluate(&empty)
                .and_then(|v| v.into_array(0))
                .map_err(|e| err(&c.key, format!("`{}`: {}", c.sql, e.strip_backtrace())))?;
        }
        etl.apply(&empty)
            .map_err(|e| err("etl", format!("on an empty batch: {e}")))?;
        Ok(etl)
    }

    /// The schema of the rows written: the decoder's, with the new derived columns at the end.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    pub fn input_schema(&self) -> &SchemaRef {
        &self.input
    }

    /// The tables rows are routed to, and whether each route moves them, in
    /// [`EtlOutput::routed`]'s order.
    pub fn route_tables(&self) -> Vec<(String, bool)> {
        self.routes
            .iter()
            .map(|r| (r.table.clone(), r.moves))
            .collect()
    }

    /// The redactions' labels (pattern name or `redact[i]`), in [`EtlOutput::redactions`]'s
    /// order.
    pub fn redaction_labels(&self) -> Vec<String> {
        self.redact.iter().map(|r| r.label.clone()).collect()
    }

    /// Evaluates `c` on `batch`; when the whole batch fails, row by row, so that only the rows
    /// that fail are named (their value is null in the result).
    fn evaluate(
        &self,
        c: &Compiled,
        batch: &RecordBatch,
        failed: &mut Vec<(usize, String)>,
    ) -> Result<ArrayRef, arrow::error::ArrowError> {
        let n = batch.num_rows();
        let whole = c.expr.evaluate(batch).and_then(|v| v.into_array(n));
        if let Ok(a) = whole {
            return Ok(a);
        }
        let t = c
            .expr
            .data_type(batch.schema_ref())
            .map_err(|e| arrow::error::ArrowError::ComputeError(e.to_string()))?;
        let mut parts: Vec<ArrayRef> = Vec::with_capacity(n);
        for r in 0..n {
            match c
                .expr
                .evaluate(&batch.slice(r, 1))
                .and_then(|v| v.into_array(1))
            {
                Ok(a) => parts.push(a),
                Err(e) => {
                    failed.push((
                        r,
                        format!(
                            "etl: table {}, {} `{}`: {}",
                            self.table,
                            c.key,
                            c.sql,
                            e.strip_backtrace()
                        ),
                    ));
                    parts.push(new_null_array(&t, 1));
                }
            }
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        if refs.is_empty() {
            return Ok(new_null_array(&t, 0));
        }
        arrow::compute::concat(&refs)
    }

    /// Filters, derives and redacts one decoded batch (of the input schema).
    pub fn apply(&self, batch: &RecordBatch) -> Result<EtlOutput, arrow::error::ArrowError> {
        let coords = Coords::of(batch);
        let mut filtered_rows = 0u64;
        let mut filtered_offsets = Vec::new();
        let mut failed_rows: Vec<(usize, String)> = Vec::new();
        // 1. filter (rows where it is NULL or false are dropped)
        let (kept, kept_idx): (RecordBatch, Option<Vec<usize>>) = match &self.filter {
            Some(c) => {
                let v = self.evaluate(c, batch, &mut failed_rows)?;
                let mask = v.as_boolean_opt().ok_or_else(|| {
                    arrow::error::ArrowError::ComputeError(format!("{} is not boolean", c.key))
                })?;
                let failed: HashSet<usize> = failed_rows.iter().map(|(r, _)| *r).collect();
                // Failed rows are kept here so that their records go to the dead letters whole.
                let keep: BooleanArray = (0..batch.num_rows())
                    .map(|r| Some(failed.contains(&r) || (mask.is_valid(r) && mask.value(r))))
                    .collect();
                let idx: Vec<usize> = (0..batch.num_rows()).filter(|&r| keep.value(r)).collect();
                filtered_rows = (batch.num_rows() - idx.len()) as u64;
                if let Some(co) = &coords
                    && filtered_rows > 0
                {
                    let kept_records: HashSet<(&str, i32, i64)> =
                        idx.iter().map(|&r| co.key(r)).collect();
                    let mut seen = HashSet::new();
                    for r in (0..batch.num_rows()).filter(|&r| !keep.value(r)) {
                        let k = co.key(r);
                        if kept_records.contains(&k) {
                            continue;
                        }
                        if seen.insert(k) {
                            filtered_offsets.push((k.0.to_string(), k.1, k.2));
                        }
                        for o in co.fragments(r) {
                            if seen.insert((k.0, k.1, o)) {
                                filtered_offsets.push((k.0.to_string(), k.1, o));
                            }
                        }
                    }
                }
                (filter_record_batch(batch, &keep)?, Some(idx))
            }
            None => (batch.clone(), None),
        };
        // failed rows' positions in `kept`
        let mut failed_kept: Vec<(usize, String)> = match &kept_idx {
            Some(idx) => failed_rows
                .into_iter()
                .filter_map(|(r, why)| idx.binary_search(&r).ok().map(|k| (k, why)))
                .collect(),
            None => failed_rows,
        };
        // 2. derive
        let mut columns: Vec<ArrayRef> = kept.columns().to_vec();
        columns.resize(
            self.output.fields().len(),
            new_null_array(&DataType::Null, 0),
        );
        for d in &self.derive {
            let mut f = Vec::new();
            let v = self.evaluate(&d.compiled, &kept, &mut f)?;
            if !d.nullable && v.null_count() > 0 {
                for r in (0..v.len()).filter(|&r| v.is_null(r)) {
                    if !f.iter().any(|(x, _)| *x == r) {
                        f.push((
                            r,
                            format!(
                                "etl: table {}, {} `{}`: NULL for the non-nullable column `{}`",
                                self.table, d.compiled.key, d.compiled.sql, d.name
                            ),
                        ));
                    }
                }
            }
            failed_kept.extend(f);
            columns[d.out_index] = v;
        }
        // 3. redact
        let mut redactions = vec![0u64; self.redact.len()];
        for (i, r) in self.redact.iter().enumerate() {
            let col = columns[r.out_index].clone();
            let Some(strings) = col.as_string_opt::<i32>() else {
                return Err(arrow::error::ArrowError::ComputeError(format!(
                    "redact column {} is not a string column",
                    r.column
                )));
            };
            if let Some((a, n)) = r.apply(strings) {
                columns[r.out_index] = Arc::new(a);
                redactions[i] = n;
            }
        }
        let out = RecordBatch::try_new(self.output.clone(), columns)?;
        // 4. routes, on the transformed rows: their failures join the others
        let mut masks: Vec<ArrayRef> = Vec::with_capacity(self.routes.len());
        for r in &self.routes {
            let mut f = Vec::new();
            masks.push(self.evaluate(&r.when, &out, &mut f)?);
            failed_kept.extend(f);
        }
        let (out, failed, masks) = self.drop_failed(&kept, out, &failed_kept, masks)?;
        let mut routed = Vec::with_capacity(self.routes.len());
        let mut moved = vec![false; out.num_rows()];
        for (r, m) in self.routes.iter().zip(&masks) {
            let m = m.as_boolean_opt().ok_or_else(|| {
                arrow::error::ArrowError::ComputeError(format!("{} is not boolean", r.when.key))
            })?;
            // NULL is not a match
            let m: BooleanArray = (0..m.len())
                .map(|i| Some(m.is_valid(i) && m.value(i)))
                .collect();
            if r.moves {
                for (i, x) in moved.iter_mut().enumerate() {
                    *x |= m.value(i);
                }
            }
            routed.push(filter_record_batch(&out, &m)?);
        }
        let mut moved_offsets = Vec::new();
        let out = if moved.iter().any(|m| *m) {
            if let Some(co) = Coords::of(&out) {
                let staying: HashSet<(&str, i32, i64)> = (0..out.num_rows())
                    .filter(|&i| !moved[i])
                    .map(|i| co.key(i))
                    .collect();
                let mut seen = HashSet::new();
                for i in (0..out.num_rows()).filter(|&i| moved[i]) {
                    let k = co.key(i);
                    if !staying.contains(&k) && seen.insert(k) {
                        moved_offsets.push((k.0.to_string(), k.1, k.2));
                        for o in co.fragments(i) {
                            if seen.insert((k.0, k.1, o)) {
                                moved_offsets.push((k.0.to_string(), k.1, o));
                            }
                        }
                    }
                }
            }
            let keep: BooleanArray = moved.iter().map(|m| Some(!m)).collect();
            filter_record_batch(&out, &keep)?
        } else {
            out
        };
        Ok(EtlOutput {
            batch: out,
            filtered_rows,
            filtered_offsets,
            failed,
            redactions,
            routed,
            moved_offsets,
        })
    }

    /// Drops the rows of every record with a failed row (`failed_kept`: positions in `kept`,
    /// the rows before derive, aligned with `out`) from `out` and the route masks; the failed
    /// records with the first reason each.
    #[allow(clippy::type_complexity)]
    fn drop_failed(
        &self,
        kept: &RecordBatch,
        out: RecordBatch,
        failed_kept: &[(usize, String)],
        masks: Vec<ArrayRef>,
    ) -> Result<
        (RecordBatch, Vec<(String, i32, i64, String)>, Vec<ArrayRef>),
        arrow::error::ArrowError,
    > {
        let mut out = out;
        let mut masks = masks;
        let mut failed = Vec::new();
        if !failed_kept.is_empty() {
            let kc = Coords::of(kept);
            let mut bad: BTreeMap<(String, i32, i64), String> = BTreeMap::new();
            for (r, why) in failed_kept {
                let k = match &kc {
                    Some(c) => {
                        let (t, p, o) = c.key(*r);
                        (t.to_string(), p, o)
                    }
                    None => (String::new(), -1, *r as i64),
                };
                bad.entry(k).or_insert_with(|| why.clone());
            }
            let keep: BooleanArray = (0..out.num_rows())
                .map(|r| {
                    Some(match &kc {
                        Some(c) => {
                            let (t, p, o) = c.key(r);
                            !bad.contains_key(&(t.to_string(), p, o))
                        }
                        None => !failed_kept.iter().any(|(x, _)| *x == r),
                    })
                })
                .collect();
            out = filter_record_batch(&out, &keep)?;
            masks = masks
                .iter()
                .map(|m| arrow::compute::filter(m, &keep))
                .collect::<Result<_, _>>()?;
            failed = bad
                .into_iter()
                .map(|((t, p, o), why)| (t, p, o, why))
                .collect();
        }
        Ok((out, failed, masks))
    }
}

impl Redaction {
    /// The redacted column and the number of replacements, or `None` when nothing matched.
    fn apply(&self, strings: &StringArray) -> Option<(StringArray, u64)> {
        let mut count = 0u64;
        let mut changed: Vec<(usize, String)> = Vec::new();
        for (r, v) in strings.iter().enumerate() {
            let Some(v) = v else { continue };
            if !self.needles.is_empty() && !self.needles.iter().any(|n| v.contains(n.as_str())) {
                continue;
            }
            let mut n = 0u64;
            let replaced = self.regex.replace_all(v, |caps: &regex::Captures<'_>| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                if self.luhn && !luhn_valid(whole) {
                    return whole.to_string();
                }
                n += 1;
                let mut dst = String::new();
                caps.expand(&self.replace, &mut dst);
                dst
            });
            if n > 0 {
                count += n;
                changed.push((r, replaced.into_owned()));
            }
        }
        if changed.is_empty() {
            return None;
        }
        let mut b = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
        let mut next = changed.iter().peekable();
        for (r, v) in strings.iter().enumerate() {
            match next.peek() {
                Some((cr, s)) if *cr == r => {
                    b.append_value(s);
                    next.next();
                }
                _ => b.append_option(v),
            }
        }
        Some((b.finish(), count))
    }
}

/// The Kafka coordinates (and reassembled lines' fragment offsets) of a batch's rows.
struct Coords<'a> {
    topics: &'a StringArray,
    parts: &'a arrow::array::Int32Array,
    offsets: &'a arrow::array::Int64Array,
    attrs: Option<&'a arrow::array::MapArray>,
}

impl<'a> Coords<'a> {
    fn of(batch: &'a RecordBatch) -> Option<Coords<'a>> {
        Some(Coords {
            topics: batch
                .column_by_name("kafka_topic")?
                .as_string_opt::<i32>()?,
            parts: batch
                .column_by_name("kafka_partition")?
                .as_primitive_opt::<Int32Type>()?,
            offsets: batch
                .column_by_name("kafka_offset")?
                .as_primitive_opt::<Int64Type>()?,
            attrs: batch.column_by_name("attrs").and_then(|a| a.as_map_opt()),
        })
    }

    fn key(&self, r: usize) -> (&'a str, i32, i64) {
        (
            self.topics.value(r),
            self.parts.value(r),
            self.offsets.value(r),
        )
    }

    /// The offsets listed in the row's `attrs['loglake.fragment_offsets']`.
    fn fragments(&self, r: usize) -> Vec<i64> {
        let Some(m) = self.attrs else {
            return Vec::new();
        };
        if m.is_null(r) {
            return Vec::new();
        }
        let entries = m.value(r);
        let (Some(keys), Some(values)) = (
            entries.column(0).as_string_opt::<i32>(),
            entries.column(1).as_string_opt::<i32>(),
        ) else {
            return Vec::new();
        };
        (0..keys.len())
            .filter(|&i| keys.value(i) == FRAGMENT_OFFSETS && values.is_valid(i))
            .flat_map(|i| {
                values
                    .value(i)
                    .split(',')
                    .filter_map(|s| s.trim().parse::<i64>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Sorted, merged half-open ranges `[start, end)` of a set of offsets.
pub fn offset_ranges(mut offsets: Vec<i64>) -> Vec<(i64, i64)> {
    offsets.sort_unstable();
    offsets.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for o in offsets {
        match out.last_mut() {
            Some((_, end)) if *end == o => *end = o + 1,
            _ => out.push((o, o + 1)),
        }
    }
    out
}

/// The commit-info key under which a commit lists the offsets its filter dropped:
/// `[{"topic": …, "partition": …, "ranges": [[start, end), …]}, …]` (the form and its parser
/// live in `loglake_lake::etl_ledger`, which the maintenance side folds them into before log
/// cleanup).
pub use loglake_lake::etl_ledger::FILTERED_INFO_KEY;
/// The commit-info key under which a commit lists the offsets whose rows all moved to route
/// tables (same form as [`FILTERED_INFO_KEY`]).
pub use loglake_lake::etl_ledger::MOVED_INFO_KEY;
/// The commit-info key of the number of rows the filter dropped in a commit.
pub const FILTERED_ROWS_INFO_KEY: &str = "loglake.filtered_rows";

/// The commit info of one commit's filtered offsets (per (topic, partition)).
pub fn filtered_info(
    offsets: &BTreeMap<(String, i32), Vec<i64>>,
    rows: u64,
) -> std::collections::HashMap<String, serde_json::Value> {
    let ranges: loglake_lake::etl_ledger::RangeMap = offsets
        .iter()
        .filter(|(_, o)| !o.is_empty())
        .map(|(k, o)| (k.clone(), offset_ranges(o.clone())))
        .collect();
    let list = loglake_lake::etl_ledger::offset_list(&ranges);
    let mut info = std::collections::HashMap::new();
    if !ranges.is_empty() || rows > 0 {
        info.insert(FILTERED_INFO_KEY.to_string(), list);
        info.insert(FILTERED_ROWS_INFO_KEY.to_string(), serde_json::json!(rows));
    }
    info
}

/// The commit info of one commit's moved offsets (per (topic, partition)); empty when none.
pub fn moved_info(
    offsets: &BTreeMap<(String, i32), Vec<i64>>,
) -> std::collections::HashMap<String, serde_json::Value> {
    let mut info = filtered_info(offsets, 0);
    match info.remove(FILTERED_INFO_KEY) {
        Some(v) if v.as_array().is_some_and(|a| !a.is_empty()) => {
            std::collections::HashMap::from([(MOVED_INFO_KEY.to_string(), v)])
        }
        _ => std::collections::HashMap::new(),
    }
}

/// The (partition, start, end) ranges of `topic` in one commit's info.
pub fn parse_filtered_info(
    info: &std::collections::HashMap<String, serde_json::Value>,
    topic: &str,
) -> Vec<(i32, i64, i64)> {
    parse_offsets_info(info, FILTERED_INFO_KEY, topic)
}

/// The (partition, start, end) ranges of `topic` under `key` of one commit's info; a malformed
/// list yields the entries before the bad one (`loglake_lake::etl_ledger::parse_offset_list`
/// is the strict form, which `loglake audit` uses).
pub fn parse_offsets_info(
    info: &std::collections::HashMap<String, serde_json::Value>,
    key: &str,
    topic: &str,
) -> Vec<(i32, i64, i64)> {
    let mut ranges = loglake_lake::etl_ledger::RangeMap::new();
    if let Some(list) = info.get(key) {
        // lenient: what parsed before an error stays
        let _ = loglake_lake::etl_ledger::parse_offset_list(list, &mut ranges);
    }
    ranges
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .flat_map(|((_, p), r)| r.into_iter().map(move |(a, b)| (p, a, b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_schemas::{DecoderOptions, RawRecord, decoder_for};

    fn decoded(payloads: &[String]) -> RecordBatch {
        let mut d = decoder_for("fluentbit", &DecoderOptions::default()).expect("decoder");
        let records: Vec<RawRecord<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord::new("t", 0, i as i64, p.as_bytes()))
            .collect();
        let out = d.decode(&records);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        out.batch
    }

    fn record(ns: &str, level: &str, msg: &str, app: Option<&str>) -> String {
        let labels = app.map_or(String::new(), |a| {
            format!(",\"labels\":{{\"app\":\"{a}\"}}")
        });
        format!(
            "{{\"time\":\"2026-11-23T10:00:00Z\",\"log\":\"{level} {msg}\\n\",\"kubernetes\":{{\"namespace_name\":\"{ns}\",\"pod_name\":\"p\",\"container_name\":\"c\"{labels}}}}}"
        )
    }

    fn schema() -> SchemaRef {
        decoder_for("fluentbit", &DecoderOptions::default())
            .expect("decoder")
            .schema()
    }

    fn spec(filter: Option<&str>, derive: &[(&str, &str)], redact: &[&str]) -> EtlSpec {
        EtlSpec {
            filter: filter.map(str::to_string),
            derive: derive
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            redact: redact
                .iter()
                .map(|n| RedactEntry::Named(n.to_string()))
                .collect(),
            routes: Vec::new(),
        }
    }

    fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
        b.column_by_name(col)
            .expect("column")
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    #[test]
    fn filter_derive_and_redact_one_batch() {
        let batch = decoded(&[
            record("kube-system", "DEBUG", "probe ok", None),
            record("shop-eu", "INFO", "order by ann@example.com", Some("web")),
            record("kube-system", "INFO", "token Bearer abcdefghijkl", None),
            record(
                "pay-us",
                "DEBUG",
                "card 4111 1111 1111 1111 and 4111 1111 1111 1112",
                Some("pay"),
            ),
        ]);
        let etl = Etl::compile(
            "t",
            None,
            &spec(
                Some("NOT (level = 'debug' AND namespace = 'kube-system')"),
                &[
                    ("tenant", "split_part(namespace, '-', 1)"),
                    ("service", "coalesce(labels['app'], container)"),
                ],
                &["email", "bearer", "credit_card"],
            ),
            schema(),
            &["dt".into(), "tenant".into()],
        )
        .expect("compile");
        let out = etl.apply(&batch).expect("apply");
        assert_eq!(out.batch.num_rows(), 3);
        assert_eq!(out.filtered_rows, 1);
        assert_eq!(out.filtered_offsets, vec![("t".to_string(), 0, 0)]);
        assert!(out.failed.is_empty());
        assert_eq!(
            strings(&out.batch, "tenant"),
            vec![Some("shop".into()), Some("kube".into()), Some("pay".into())]
        );
        assert_eq!(
            strings(&out.batch, "service"),
            vec![Some("web".into()), Some("c".into()), Some("pay".into())]
        );
        let msgs = strings(&out.batch, "message");
        assert_eq!(msgs[0].as_deref(), Some("INFO order by <email>"));
        assert_eq!(msgs[1].as_deref(), Some("INFO token Bearer <token>"));
        // only the Luhn-valid number is masked
        assert_eq!(
            msgs[2].as_deref(),
            Some("DEBUG card <card> and 4111 1111 1111 1112")
        );
        assert_eq!(out.redactions, vec![1, 1, 1]);
        // `service` is a column of the container table (overwritten), `tenant` a new one
        assert_eq!(
            etl.output_schema().fields().len(),
            schema().fields().len() + 1
        );
        assert_eq!(
            etl.output_schema()
                .fields()
                .last()
                .map(|f| f.name().as_str()),
            Some("tenant")
        );
    }

    #[test]
    fn bad_definitions_name_the_key() {
        let e = |s: EtlSpec| {
            Etl::compile("t", Some(Path::new("defs/t.toml")), &s, schema(), &[])
                .expect_err("bad")
                .to_string()
        };
        let m = e(spec(Some("lvl = 'DEBUG'"), &[], &[]));
        assert!(
            m.contains("table `t` (defs/t.toml): `filter`") && m.contains("lvl"),
            "{m}"
        );
        let m = e(spec(Some("namespace"), &[], &[]));
        assert!(m.contains("`filter`") && m.contains("not a boolean"), "{m}");
        let m = e(spec(Some("level = 'x' AND"), &[], &[]));
        assert!(m.contains("`filter`"), "{m}");
        let m = e(spec(None, &[("x", "namespace + 1")], &[]));
        assert!(m.contains("`derive.x`"), "{m}");
        let m = e(spec(None, &[("kafka_offset", "1")], &[]));
        assert!(m.contains("`derive.kafka_offset`"), "{m}");
        let m = e(spec(None, &[], &["phone"]));
        assert!(m.contains("`redact[0]`") && m.contains("email"), "{m}");
        let m = e(EtlSpec {
            redact: vec![RedactEntry::Rule(RedactRule {
                column: None,
                name: None,
                pattern: Some("([a-z".into()),
                replace: None,
            })],
            ..EtlSpec::default()
        });
        assert!(m.contains("`redact[0]`") && m.contains("bad regex"), "{m}");
        let m = e(EtlSpec {
            redact: vec![RedactEntry::Rule(RedactRule {
                column: Some("ts".into()),
                name: Some("email".into()),
                pattern: None,
                replace: None,
            })],
            ..EtlSpec::default()
        });
        assert!(m.contains("only string columns"), "{m}");
        let m = Etl::compile(
            "t",
            None,
            &spec(None, &[("n", "ts")], &[]),
            schema(),
            &["dt".into(), "n".into()],
        )
        .expect_err("partition type")
        .to_string();
        assert!(m.contains("partitions the table"), "{m}");
    }

    #[test]
    fn a_failing_expression_sends_the_whole_record_to_the_dead_letters() {
        let batch = decoded(&[
            record("a", "INFO", "12", None),
            record("b", "INFO", "x", None),
            record("c", "INFO", "7", None),
        ]);
        let etl = Etl::compile(
            "t",
            None,
            &spec(
                None,
                &[("n", "arrow_cast(split_part(message, ' ', 2), 'Int64')")],
                &[],
            ),
            schema(),
            &[],
        )
        .expect("compile");
        let out = etl.apply(&batch).expect("apply");
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.failed.len(), 1);
        let (t, p, o, why) = &out.failed[0];
        assert_eq!((t.as_str(), *p, *o), ("t", 0, 1));
        assert!(why.contains("derive.n") && why.contains("table t"), "{why}");
        let n = out.batch.column_by_name("n").expect("n");
        let n = n.as_primitive::<Int64Type>();
        assert_eq!(n.values().to_vec(), vec![12, 7]);
    }

    #[test]
    fn named_patterns_mask_what_they_name_and_leave_the_rest() {
        let cases = [
            (
                "email",
                "mail ann.b+x@mail.example.co.uk now",
                "mail <email> now",
            ),
            ("ipv4", "from 10.1.2.3:80 v1.2.3", "from <ipv4>:80 v1.2.3"),
            (
                "ipv6",
                "from 2001:db8::1 and fe80:0:0:0:0:0:0:1 at 12:30",
                "from <ipv6> and <ipv6> at 12:30",
            ),
            (
                "jwt",
                "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_abc-1 done",
                "t=<jwt> done",
            ),
            (
                "bearer",
                "Authorization: Bearer abc.def-123456",
                "Authorization: Bearer <token>",
            ),
            (
                "aws_key",
                "id AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "id <aws-key> aws_secret_access_key=<aws-key>",
            ),
            (
                "credit_card",
                "pay 5555-5555-5555-4444 id 1234567890123",
                "pay <card> id 1234567890123",
            ),
        ];
        for (name, input, want) in cases {
            let p = NAMED_PATTERNS
                .iter()
                .find(|p| p.name == name)
                .expect("pattern");
            let r = Redaction {
                label: name.into(),
                column: "message".into(),
                out_index: 0,
                regex: Regex::new(p.regex).expect("regex"),
                replace: p.replace.into(),
                needles: p.needles.iter().map(|s| s.to_string()).collect(),
                luhn: p.luhn,
            };
            let a = StringArray::from(vec![Some(input), None, Some("nothing here")]);
            let (out, n) = r.apply(&a).unwrap_or_else(|| panic!("{name}: no match"));
            assert_eq!(out.value(0), want, "{name}");
            assert!(out.is_null(1) && out.value(2) == "nothing here");
            assert!(n >= 1);
        }
    }

    #[test]
    fn routes_copy_or_move_the_matching_rows() {
        let batch = decoded(&[
            record("shop-eu", "ERROR", "boom", None),
            record("pay-us", "WARN", "slow", None),
            record("pay-us", "INFO", "ok", None),
            record("kube-system", "DEBUG", "probe", None),
        ]);
        let s = EtlSpec {
            filter: Some("level <> 'debug'".into()),
            derive: [("tenant".to_string(), TENANT_SQL.to_string())].into(),
            routes: vec![
                RouteDef {
                    when: "level = 'error'".into(),
                    table: "errors".into(),
                    mode: None,
                },
                RouteDef {
                    when: "tenant = 'pay' AND level = 'warn'".into(),
                    table: "pay_warn".into(),
                    mode: Some("move".into()),
                },
            ],
            ..EtlSpec::default()
        };
        let etl = Etl::compile("t", None, &s, schema(), &[]).expect("compile");
        assert_eq!(
            etl.route_tables(),
            vec![
                ("errors".to_string(), false),
                ("pay_warn".to_string(), true)
            ]
        );
        let out = etl.apply(&batch).expect("apply");
        let offsets = |b: &RecordBatch| -> Vec<i64> {
            b.column_by_name("kafka_offset")
                .expect("offset")
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        // the error row is copied (in both), the pay warning moved (only in its route table)
        assert_eq!(offsets(&out.batch), vec![0, 2]);
        assert_eq!(offsets(&out.routed[0]), vec![0]);
        assert_eq!(offsets(&out.routed[1]), vec![1]);
        assert_eq!(strings(&out.routed[1], "tenant"), vec![Some("pay".into())]);
        assert_eq!(out.moved_offsets, vec![("t".to_string(), 0, 1)]);
        assert_eq!(out.filtered_offsets, vec![("t".to_string(), 0, 3)]);
        // a bad route names its key
        let mut bad = s.clone();
        bad.routes[1].mode = Some("teleport".into());
        let e = Etl::compile("t", None, &bad, schema(), &[])
            .expect_err("bad mode")
            .to_string();
        assert!(e.contains("`route[1]`") && e.contains("teleport"), "{e}");
        let mut bad = s.clone();
        bad.routes[0].when = "tenant".into();
        let e = Etl::compile("t", None, &bad, schema(), &[])
            .expect_err("not boolean")
            .to_string();
        assert!(
            e.contains("`route[0]`") && e.contains("not a boolean"),
            "{e}"
        );
        let mut info = moved_info(&BTreeMap::from([(("t".to_string(), 0), vec![1, 2])]));
        assert_eq!(
            parse_offsets_info(&info, MOVED_INFO_KEY, "t"),
            vec![(0, 1, 3)]
        );
        info.clear();
        assert!(moved_info(&BTreeMap::new()).is_empty());
    }

    const TENANT_SQL: &str = "split_part(namespace, '-', 1)";

    #[test]
    fn luhn_and_ranges() {
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(!luhn_valid("4111 1111 1111 1112"));
        assert!(!luhn_valid("0"));
        assert_eq!(
            offset_ranges(vec![5, 3, 4, 9, 10, 3]),
            vec![(3, 6), (9, 11)]
        );
        let mut m = BTreeMap::new();
        m.insert(("t".to_string(), 1), vec![7, 8, 2]);
        let info = filtered_info(&m, 4);
        assert_eq!(parse_filtered_info(&info, "t"), vec![(1, 2, 3), (1, 7, 9)]);
        assert!(parse_filtered_info(&info, "u").is_empty());
    }
}
