//! SQL generation for the log table functions `log_context(...)` and `correlate(...)`.
//!
//! Both are rewritten into plain SQL (window + equi-join with a range filter), so DataFusion
//! plans them as hash joins on the key columns with a time/row-number range filter — never a
//! cross join — and partition pruning on the source still applies.

use datafusion::error::{DataFusionError, Result};

/// One argument of a table function call, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A (possibly qualified) identifier, i.e. a table name.
    Ident(String),
    /// Any other expression, kept as SQL text (e.g. `INTERVAL '10 seconds'`).
    Sql(String),
}

impl Arg {
    /// The argument as SQL text usable in an expression position.
    pub fn sql(&self) -> String {
        match self {
            Arg::Str(s) => format!("'{}'", s.replace('\'', "''")),
            Arg::Int(i) => i.to_string(),
            Arg::Ident(s) | Arg::Sql(s) => s.clone(),
        }
    }
    /// A relation: a table name (identifier or string without spaces) or a query (string).
    pub fn relation(&self) -> String {
        match self {
            Arg::Ident(s) => s.clone(),
            Arg::Str(s) => {
                let t = s.trim();
                let lower = t.to_ascii_lowercase();
                if lower.starts_with("select")
                    || lower.starts_with("with")
                    || lower.starts_with("values")
                {
                    format!("({t})")
                } else {
                    t.to_string()
                }
            }
            other => format!("({})", other.sql()),
        }
    }
    /// A text argument (string literal or identifier).
    pub fn text(&self) -> String {
        match self {
            Arg::Str(s) | Arg::Ident(s) | Arg::Sql(s) => s.clone(),
            Arg::Int(i) => i.to_string(),
        }
    }
}

/// Positional and named arguments of a call.
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub positional: Vec<Arg>,
    pub named: Vec<(String, Arg)>,
}

impl Args {
    /// The argument named `name`, or else the positional one at `pos`.
    pub fn get(&self, name: &str, pos: Option<usize>) -> Option<&Arg> {
        self.named
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, a)| a)
            .or_else(|| pos.and_then(|p| self.positional.get(p)))
    }
    fn check_names(&self, func: &str, allowed: &[&str]) -> Result<()> {
        for (n, _) in &self.named {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(n)) {
                return Err(DataFusionError::Plan(format!(
                    "{func}: unknown argument {n:?}; expected one of {}",
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }
    fn int(&self, func: &str, name: &str, pos: Option<usize>, default: i64) -> Result<i64> {
        match self.get(name, pos) {
            None => Ok(default),
            Some(Arg::Int(i)) if *i >= 0 => Ok(*i),
            Some(a) => Err(DataFusionError::Plan(format!(
                "{func}: {name} must be a non-negative integer, got {}",
                a.sql()
            ))),
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn split_cols(s: &str) -> Vec<String> {
    s.split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// `log_context(table, predicate [, before => 5] [, after => 5] [, partition_by => 'namespace, pod, container']
/// [, order_by => 'ts'] [, filter => 'dt = ''2024-05-01''']`
///
/// For each row matching `predicate`, the `before` rows preceding and `after` rows following it
/// within the same partition (pod/container stream) ordered by `order_by`. Output: `hit` (1-based
/// number of the matching row, in time order), `offset` (position relative to the hit, 0 = the hit
/// itself), then the source columns. `columns` are the source's column names.
pub fn log_context_sql(args: &Args, columns: &[String]) -> Result<(String, String)> {
    let lc = LogContext::from_args(args, columns)?;
    Ok((lc.sql(columns), lc.source()))
}

/// The arguments of `log_context`, defaults applied.
struct LogContext {
    table: String,
    predicate: String,
    before: i64,
    after: i64,
    order_by: String,
    /// The partition columns: `partition_by`, else those of namespace, pod, container present.
    partition: Vec<String>,
    filter: Option<String>,
}

impl LogContext {
    fn from_args(args: &Args, columns: &[String]) -> Result<LogContext> {
        const F: &str = "log_context";
        args.check_names(
            F,
            &[
                "table",
                "predicate",
                "before",
                "after",
                "partition_by",
                "order_by",
                "filter",
            ],
        )?;
        let table = args
            .get("table", Some(0))
            .ok_or_else(|| DataFusionError::Plan(format!("{F}: missing the table argument")))?
            .relation();
        let predicate = args
            .get("predicate", Some(1))
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{F}: missing the predicate argument (a SQL string)"
                ))
            })?
            .text();
        let before = args.int(F, "before", Some(2), 5)?;
        let after = args.int(F, "after", Some(3), 5)?;
        let order_by = args
            .get("order_by", None)
            .map(|a| a.text())
            .unwrap_or_else(|| "ts".to_string());
        let partition: Vec<String> = match args.get("partition_by", None) {
            Some(a) => split_cols(&a.text()),
            None => ["namespace", "pod", "container"]
                .iter()
                .filter(|c| columns.iter().any(|x| x == *c))
                .map(|c| c.to_string())
                .collect(),
        };
        let filter = args.get("filter", None).map(|a| a.text());
        Ok(LogContext {
            table,
            predicate,
            before,
            after,
            order_by,
            partition,
            filter,
        })
    }

    /// The source rows: the table, filtered by `filter`.
    fn source(&self) -> String {
        let table = &self.table;
        match &self.filter {
            Some(f) => format!("SELECT * FROM {table} WHERE {f}"),
            None => format!("SELECT * FROM {table}"),
        }
    }

    /// The source restricted to the partitions holding a hit (all of it without partitions).
    fn hit_partitions(&self) -> String {
        if self.partition.is_empty() {
            return "__src s".to_string();
        }
        let son: Vec<String> = self
            .partition
            .iter()
            .map(|c| format!("s.{c} = k.{c}"))
            .collect();
        format!(
            "__src s LEFT SEMI JOIN (SELECT DISTINCT {cols} FROM __src WHERE {predicate}) k ON {on}",
            cols = self.partition.join(", "),
            predicate = self.predicate,
            on = son.join(" AND ")
        )
    }

    /// The whole query: number rows per partition, number the hits, join each hit to its
    /// neighbours.
    fn sql(&self, columns: &[String]) -> String {
        let (partition, predicate, order_by) = (&self.partition, &self.predicate, &self.order_by);
        let (before, after) = (self.before, self.after);
        let part_by = if partition.is_empty() {
            String::new()
        } else {
            format!("PARTITION BY {}", partition.join(", "))
        };
        let on: Vec<String> = partition.iter().map(|c| format!("n.{c} = h.{c}")).collect();
        let hit_on = if on.is_empty() {
            String::new()
        } else {
            format!("{} AND ", on.join(" AND "))
        };
        let out_cols: Vec<String> = columns
            .iter()
            .map(|c| format!("n.{}", quote_ident(c)))
            .collect();
        format!(
            "WITH __src AS ({source}), \
             __n AS (SELECT s.*, CAST(row_number() OVER ({part_by} ORDER BY {order_by}) AS BIGINT) AS __rn, ({predicate}) IS TRUE AS __is_hit FROM {semi}), \
             __h AS (SELECT {hcols}__rn AS __hit_rn, CAST(row_number() OVER (ORDER BY {order_by}{hpart}) AS BIGINT) AS __hit FROM __n WHERE __is_hit) \
             SELECT h.__hit AS hit, n.__rn - h.__hit_rn AS \"offset\", {out} \
             FROM __n n JOIN __h h ON {hit_on}n.__rn BETWEEN h.__hit_rn - {before} AND h.__hit_rn + {after} \
             ORDER BY hit, \"offset\"",
            source = self.source(),
            semi = self.hit_partitions(),
            hcols = partition
                .iter()
                .map(|c| format!("{c}, "))
                .collect::<String>(),
            hpart = partition
                .iter()
                .map(|c| format!(", {c}"))
                .collect::<String>(),
            out = out_cols.join(", "),
        )
    }
}

/// The relation text of the first argument of `log_context` / `correlate` (for schema lookup).
pub fn relation_of(args: &Args, name: &str, pos: usize) -> Option<String> {
    args.get(name, Some(pos)).map(|a| a.relation())
}

/// `correlate(left, right, key => 'trace_id', within => INTERVAL '10 seconds' [, before => INTERVAL …]
/// [, after => INTERVAL …] [, time => 'ts'] [, right_time => 'ts'])`
///
/// Every pair (l, r) with equal key(s) and `r.time` in `[l.time - before, l.time + after]` (both
/// default to `within`). `key` may list several columns (`'node, namespace'`) or map differently
/// named columns (`'request_id = req_id'`). Output: the left columns, the right columns prefixed
/// with `r_`, and `lag` = `r.time - l.time`.
pub fn correlate_sql(args: &Args, left_cols: &[String], right_cols: &[String]) -> Result<String> {
    const F: &str = "correlate";
    args.check_names(
        F,
        &[
            "left",
            "right",
            "key",
            "within",
            "before",
            "after",
            "time",
            "right_time",
        ],
    )?;
    let left = args
        .get("left", Some(0))
        .ok_or_else(|| DataFusionError::Plan(format!("{F}: missing left")))?
        .relation();
    let right = args
        .get("right", Some(1))
        .ok_or_else(|| DataFusionError::Plan(format!("{F}: missing right")))?
        .relation();
    let key = args
        .get("key", Some(2))
        .ok_or_else(|| DataFusionError::Plan(format!("{F}: missing key => 'column'")))?
        .text();
    let within = args.get("within", Some(3));
    let before = args.get("before", None).or(within).map(|a| a.sql());
    let after = args.get("after", None).or(within).map(|a| a.sql());
    let (Some(before), Some(after)) = (before, after) else {
        return Err(DataFusionError::Plan(format!(
            "{F}: give within => INTERVAL '…' (or before/after)"
        )));
    };
    let lt = args
        .get("time", None)
        .map(|a| a.text())
        .unwrap_or_else(|| "ts".into());
    let rt = args
        .get("right_time", None)
        .map(|a| a.text())
        .unwrap_or_else(|| lt.clone());
    let mut on = Vec::new();
    for k in split_cols(&key) {
        let (l, r) = match k.split_once('=') {
            Some((l, r)) => (l.trim().to_string(), r.trim().to_string()),
            None => (k.clone(), k.clone()),
        };
        on.push(format!("l.{l} = r.{r}"));
    }
    if on.is_empty() {
        return Err(DataFusionError::Plan(format!("{F}: key names no column")));
    }
    let lsel: Vec<String> = left_cols
        .iter()
        .map(|c| format!("l.{}", quote_ident(c)))
        .collect();
    let rsel: Vec<String> = right_cols
        .iter()
        .map(|c| format!("r.{} AS {}", quote_ident(c), quote_ident(&format!("r_{c}"))))
        .collect();
    Ok(format!(
        "SELECT {lsel}, {rsel}, r.{rt} - l.{lt} AS lag \
         FROM {left} l JOIN {right} r ON {on} \
         AND r.{rt} >= l.{lt} - {before} AND r.{rt} <= l.{lt} + {after}",
        lsel = lsel.join(", "),
        rsel = rsel.join(", "),
        on = on.join(" AND "),
    ))
}
