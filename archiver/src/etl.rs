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
//!
//! Where the parts are: [`compile`] (planning at start), [`apply`] (one batch), [`redact`] (the
//! redaction library), [`commit_info`] (the filtered and moved offsets a commit's info records).

mod apply;
mod commit_info;
mod compile;
mod redact;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use loglake_schemas::{RedactEntry, RouteDef, TableDef};

pub use commit_info::{
    FILTERED_INFO_KEY, FILTERED_ROWS_INFO_KEY, MOVED_INFO_KEY, filtered_info, moved_info,
    offset_ranges, parse_filtered_info, parse_offsets_info,
};
pub use redact::{luhn_valid, named_patterns};

use redact::Redaction;

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

impl Etl {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use loglake_schemas::{DecoderOptions, RawRecord, RedactRule, decoder_for};

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
