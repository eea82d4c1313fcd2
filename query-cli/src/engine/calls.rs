//! The table-function rewrite: every call of a loglake table function (`delta_scan`,
//! `log_context`, …) in a statement is replaced by a placeholder table name, and the calls are
//! returned with their arguments and source positions for the engine to resolve.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName, Spanned, TableFactor,
    UnaryOperator, Value, VisitMut, VisitorMut,
};

use super::TABLE_FUNCTIONS;
use crate::tablefns::{Arg, Args};

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// A table function call found in a statement.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) id: String,
    pub(super) func: String,
    pub(super) args: Args,
    pub(super) spans: crate::tfcheck::ArgSpans,
}

struct CallCollector {
    calls: Vec<Call>,
    error: Option<String>,
}

fn to_arg(e: &SqlExpr) -> Arg {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Arg::Str(s.clone()),
            Value::Number(n, _) => n
                .parse::<i64>()
                .map(Arg::Int)
                .unwrap_or_else(|_| Arg::Sql(n.clone())),
            _ => Arg::Sql(e.to_string()),
        },
        SqlExpr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match to_arg(expr) {
            Arg::Int(i) => Arg::Int(-i),
            _ => Arg::Sql(e.to_string()),
        },
        SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_) => Arg::Ident(e.to_string()),
        _ => Arg::Sql(e.to_string()),
    }
}

impl VisitorMut for CallCollector {
    type Break = ();
    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(targs),
            alias,
            ..
        } = tf
        else {
            return ControlFlow::Continue(());
        };
        let func = name.to_string().to_ascii_lowercase();
        if !TABLE_FUNCTIONS.contains(&func.as_str()) {
            return ControlFlow::Continue(());
        }
        let mut args = Args::default();
        let mut spans = crate::tfcheck::ArgSpans {
            call: Some(name.span()),
            ..Default::default()
        };
        for a in &targs.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                    args.positional.push(to_arg(e));
                    spans.positional.push(e.span());
                }
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => {
                    args.named.push((name.value.clone(), to_arg(e)));
                    spans.named.push((name.value.clone(), e.span()));
                }
                other => {
                    self.error = Some(format!("{func}: unsupported argument {other}"));
                    return ControlFlow::Break(());
                }
            }
        }
        let id = format!("__lq_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let alias = alias.take().or_else(|| {
            Some(datafusion::sql::sqlparser::ast::TableAlias {
                name: Ident::new(func.clone()),
                columns: vec![],
                explicit: true,
                at: None,
            })
        });
        *tf = TableFactor::Table {
            name: ObjectName::from(vec![Ident::new(id.clone())]),
            alias,
            args: None,
            with_hints: vec![],
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: None,
            index_hints: vec![],
        };
        self.calls.push(Call {
            id,
            func,
            args,
            spans,
        });
        ControlFlow::Continue(())
    }
}

/// Replace every table function call by a placeholder table name and return the calls.
pub(super) fn collect_calls(st: &mut DFStatement) -> Result<Vec<Call>> {
    let mut c = CallCollector {
        calls: Vec::new(),
        error: None,
    };
    visit_df(st, &mut c);
    match c.error {
        Some(e) => Err(DataFusionError::Plan(e)),
        None => Ok(c.calls),
    }
}

fn visit_df(st: &mut DFStatement, v: &mut CallCollector) {
    match st {
        DFStatement::Statement(s) => {
            let _ = s.visit(v);
        }
        DFStatement::Explain(e) => visit_df(&mut e.statement, v),
        DFStatement::CopyTo(c) => {
            if let CopyToSource::Query(q) = &mut c.source {
                let _ = q.visit(v);
            }
        }
        _ => {}
    }
}
