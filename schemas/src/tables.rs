//! Declarative table definitions (`schemas/tables/*.toml`).
//!
//! ```toml
//! name = "containers"                 # [a-z][a-z0-9_]*, unique
//! topics = ["k8s-logs"]               # Kafka topics, at least one
//! decoder = "fluentbit"               # one of DECODER_NAMES
//! partition_by = ["dt", "hour"]       # default; columns of the table, e.g. add "namespace"
//! sort_by = ["namespace", "pod", "ts"]            # for the compactor (default: none)
//! bloom_filter_columns = ["trace_id"]             # for the compactor (default: none)
//! target_file_size_bytes = 268435456  # default 256 MiB
//! retention_days = 30                 # optional; absent = keep forever
//! [retention_by_namespace]            # optional per-namespace (tenant) days, longer or shorter
//! payments = 365
//! description = "…"                   # optional
//! json_message_attrs = false          # also copy a JSON message's fields into attrs
//! # Transform at archive time (the archiver's `etl` module; SQL expressions of DataFusion):
//! filter = "NOT (level = 'debug' AND namespace = 'kube-system')"   # rows that fail are dropped
//! redact = ["email", "jwt"]           # named patterns on `message`, or [[redact]] tables
//! [derive]                            # new or overwritten columns
//! tenant = "split_part(namespace, '-', 1)"
//! [[route]]                           # copy (or mode = "move") matching rows to LAKE/<table>
//! when = "namespace = 'security'"
//! table = "security_events"
//! ```
//! Unknown keys and wrong types are rejected; the error names the file and the key.

use std::path::{Path, PathBuf};

use arrow::datatypes::DataType;
use serde::Deserialize;

use crate::{DECODER_NAMES, SchemaError, TableKind, table_schema};

pub const DEFAULT_TARGET_FILE_SIZE_BYTES: u64 = 256 * 1024 * 1024;

fn default_partition_by() -> Vec<String> {
    vec!["dt".into(), "hour".into()]
}

fn default_target() -> u64 {
    DEFAULT_TARGET_FILE_SIZE_BYTES
}

/// One table definition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    pub name: String,
    pub topics: Vec<String>,
    pub decoder: String,
    #[serde(default = "default_partition_by")]
    pub partition_by: Vec<String>,
    #[serde(default)]
    pub sort_by: Vec<String>,
    #[serde(default)]
    pub bloom_filter_columns: Vec<String>,
    #[serde(default = "default_target")]
    pub target_file_size_bytes: u64,
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Days per namespace (tenant), overriding `retention_days` for that namespace's rows.
    #[serde(default)]
    pub retention_by_namespace: std::collections::BTreeMap<String, u32>,
    #[serde(default)]
    pub description: Option<String>,
    /// Copy the fields of a JSON message into `attrs` as well (default false: they stay in
    /// `message` only, where `json_get_*` reads them; copied, they are stored twice).
    #[serde(default)]
    pub json_message_attrs: bool,
    /// Rows for which this SQL expression is not true are dropped at archive time (their
    /// offsets still advance; they are recorded as filtered in the commit info).
    #[serde(default)]
    pub filter: Option<String>,
    /// Derived columns: name → SQL expression over the decoded columns. A new name joins the
    /// table schema (nullable, typed from the expression); an existing one is overwritten
    /// (cast to its type).
    #[serde(default)]
    pub derive: std::collections::BTreeMap<String, String>,
    /// Regex masking: named patterns (`"email"`) or `{ column, pattern, replace }` tables.
    #[serde(default)]
    pub redact: Vec<RedactEntry>,
    /// Copy or move matching rows to another table of the lake.
    #[serde(default)]
    pub route: Vec<RouteDef>,
    /// The file it was loaded from (not a TOML key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One `redact` entry: a named pattern (`"email"`, applied to `message`) or a table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedactEntry {
    Named(String),
    Rule(RedactRule),
}

/// A `[[redact]]` table: `name` (a named pattern) or `pattern` (a regex), on `column`
/// (default `message`), replaced by `replace` (default: the named pattern's, or `<redacted>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    #[serde(default)]
    pub column: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub replace: Option<String>,
}

/// A `[[route]]` table: rows for which `when` is true go to the lake's table `table` (copied,
/// or moved with `mode = "move"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    pub when: String,
    pub table: String,
    #[serde(default)]
    pub mode: Option<String>,
}

impl TableDef {
    /// Whether the definition transforms rows at archive time.
    pub fn has_etl(&self) -> bool {
        self.filter.is_some()
            || !self.derive.is_empty()
            || !self.redact.is_empty()
            || !self.route.is_empty()
    }

    /// The kind of table (and so the schema) its decoder writes.
    pub fn kind(&self) -> TableKind {
        TableKind::for_decoder(&self.decoder).unwrap_or(TableKind::Container)
    }
}

/// Whether a column of this type can partition a table (its value becomes a path segment).
fn partitionable(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Int32 | DataType::Date32)
}

/// Columns whose value is new in (nearly) every record: as a partition column each would write
/// about one file per record, so they are refused. Free text, ids of one request or trace, and
/// the errors of dead letters.
const PER_RECORD_COLUMNS: &[&str] = &[
    "message",
    "trace_id",
    "span_id",
    "audit_id",
    "request_uri",
    "request_object",
    "response_object",
    "path",
    "request",
    "referer",
    "user_agent",
    "x_forwarded_for",
    "error",
];

/// The columns of `kind`'s table that can be partition columns (Utf8, Int32 or Date32, and not a
/// per-record value such as `message` or `trace_id`), in schema order.
pub fn partition_column_candidates(kind: TableKind) -> Vec<String> {
    table_schema(kind)
        .fields()
        .iter()
        .filter(|f| {
            partitionable(f.data_type()) && !PER_RECORD_COLUMNS.contains(&f.name().as_str())
        })
        .map(|f| f.name().clone())
        .collect()
}

/// Checks partition columns for a table of `kind`, as `partition_by` of a table file and the
/// archiver's `--partition-by` use them: at least one, each a column of the table with a
/// partitionable type (see [`partition_column_candidates`]), none twice. The error is the reason
/// only (it names the column and lists the valid ones); the caller adds the file, key or flag.
pub fn check_partition_by(kind: TableKind, columns: &[String]) -> Result<(), String> {
    let valid = || partition_column_candidates(kind).join(", ");
    if columns.is_empty() {
        return Err("at least one partition column is required (default: dt, hour)".into());
    }
    let schema = table_schema(kind);
    for (i, c) in columns.iter().enumerate() {
        let Ok(field) = schema.field_with_name(c) else {
            return Err(format!(
                "no column `{c}` in the {} table (partition columns can be: {})",
                kind.as_str(),
                valid()
            ));
        };
        if !partitionable(field.data_type()) {
            return Err(format!(
                "column `{c}` ({}) cannot be a partition column (partition columns can be: {})",
                field.data_type(),
                valid()
            ));
        }
        if PER_RECORD_COLUMNS.contains(&c.as_str()) {
            return Err(format!(
                "column `{c}` has a new value in nearly every record: as a partition column it \
                 would write about one file per record (partition columns can be: {})",
                valid()
            ));
        }
        if columns[..i].contains(c) {
            return Err(format!("column `{c}` is listed twice"));
        }
    }
    // `hour` is the hour of the day: without `dt` every day's 10:00 would share one partition
    if columns.iter().any(|c| c == "hour") && !columns.iter().any(|c| c == "dt") {
        return Err(
            "`hour` without `dt` would put the same hour of every day in one partition: add `dt`"
                .into(),
        );
    }
    Ok(())
}

/// Parses and validates a table definition; `path` is only used in error messages.
pub fn parse_table_def(text: &str, path: &Path) -> Result<TableDef, SchemaError> {
    let mut def: TableDef = toml::from_str(text).map_err(|e| SchemaError::TableParse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    validate(&def).map_err(|(key, reason)| SchemaError::TableInvalid {
        path: path.to_owned(),
        key: key.to_owned(),
        reason,
    })?;
    def.source = Some(path.to_owned());
    Ok(def)
}

/// A key of a table file and why its value is refused.
type Invalid = (&'static str, String);

/// Checks a parsed definition, key by key in this order (the first fault is reported).
fn validate(def: &TableDef) -> Result<(), Invalid> {
    check_name(&def.name).map_err(|r| ("name", r))?;
    check_topics(&def.topics).map_err(|r| ("topics", r))?;
    let kind = decoder_kind(&def.decoder).map_err(|r| ("decoder", r))?;
    check_table_partition_by(def, kind).map_err(|r| ("partition_by", r))?;
    check_derive_names(&def.derive).map_err(|r| ("derive", r))?;
    check_compactor_columns(def, kind)?;
    check_size_and_retention(def)
}

fn check_name(name: &str) -> Result<(), String> {
    let name_ok = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_lowercase() || (i > 0 && (b.is_ascii_digit() || b == b'_')));
    if name.is_empty() || !name_ok {
        return Err(format!("`{name}` must match [a-z][a-z0-9_]*"));
    }
    Ok(())
}

fn check_topics(topics: &[String]) -> Result<(), String> {
    if topics.is_empty() {
        return Err("at least one topic is required".into());
    }
    if let Some(t) = topics.iter().find(|t| t.is_empty() || t.len() > 249) {
        return Err(format!("invalid topic name `{t}`"));
    }
    Ok(())
}

fn decoder_kind(decoder: &str) -> Result<TableKind, String> {
    TableKind::for_decoder(decoder).ok_or_else(|| {
        format!(
            "unknown decoder `{decoder}` (known: {})",
            DECODER_NAMES.join(", ")
        )
    })
}

/// [`check_partition_by`] for a table file, whose derived columns may partition the table too
/// (their type is checked by the archiver, which types the expressions).
fn check_table_partition_by(def: &TableDef, kind: TableKind) -> Result<(), String> {
    let base_partitions: Vec<String> = def
        .partition_by
        .iter()
        .filter(|c| !def.derive.contains_key(*c))
        .cloned()
        .collect();
    if base_partitions.len() == def.partition_by.len() {
        return check_partition_by(kind, &def.partition_by);
    }
    if let Some((_, c)) = def
        .partition_by
        .iter()
        .enumerate()
        .find(|(i, c)| def.partition_by[..*i].contains(c))
    {
        return Err(format!("column `{c}` is listed twice"));
    }
    if !base_partitions.is_empty() {
        check_partition_by(kind, &base_partitions)?;
    }
    Ok(())
}

fn check_derive_names(derive: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    for name in derive.keys() {
        let ok = name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b == b'_' || (i > 0 && b.is_ascii_digit()));
        if name.is_empty() || !ok {
            return Err(format!("column name `{name}` must match [a-z_][a-z0-9_]*"));
        }
    }
    Ok(())
}

/// `sort_by` and `bloom_filter_columns`: columns of the table, not maps or lists.
fn check_compactor_columns(def: &TableDef, kind: TableKind) -> Result<(), Invalid> {
    let schema = table_schema(kind);
    let column = |key: &'static str, c: &str| -> Result<DataType, Invalid> {
        schema
            .field_with_name(c)
            .map(|f| f.data_type().clone())
            .map_err(|_| {
                (
                    key,
                    format!("no column `{c}` in the {} table", kind.as_str()),
                )
            })
    };
    for c in &def.sort_by {
        match column("sort_by", c)? {
            DataType::Map(..) | DataType::List(_) => {
                return Err(("sort_by", format!("column `{c}` is not sortable")));
            }
            _ => {}
        }
    }
    for c in &def.bloom_filter_columns {
        match column("bloom_filter_columns", c)? {
            DataType::Map(..) | DataType::List(_) => {
                return Err((
                    "bloom_filter_columns",
                    format!("column `{c}` cannot have a bloom filter"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `target_file_size_bytes`, `retention_days` and `retention_by_namespace`.
fn check_size_and_retention(def: &TableDef) -> Result<(), Invalid> {
    if def.target_file_size_bytes < 1024 * 1024 {
        return Err(("target_file_size_bytes", "must be at least 1 MiB".into()));
    }
    if def.retention_days == Some(0) {
        return Err((
            "retention_days",
            "must be at least 1 (omit it to keep data forever)".into(),
        ));
    }
    if let Some((ns, _)) = def.retention_by_namespace.iter().find(|(_, d)| **d == 0) {
        return Err((
            "retention_by_namespace",
            format!("`{ns}` must keep data at least 1 day"),
        ));
    }
    if !def.retention_by_namespace.is_empty()
        && table_schema(def.kind())
            .field_with_name("namespace")
            .is_err()
    {
        return Err((
            "retention_by_namespace",
            format!(
                "the {} table has no `namespace` column",
                def.kind().as_str()
            ),
        ));
    }
    Ok(())
}

/// Loads and validates one table file.
pub fn load_table_file(path: impl AsRef<Path>) -> Result<TableDef, SchemaError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_table_def(&text, path)
}

/// Loads every `*.toml` in a directory (sorted by file name); table names must be unique.
pub fn load_table_dir(dir: impl AsRef<Path>) -> Result<Vec<TableDef>, SchemaError> {
    let dir = dir.as_ref();
    let io = |source| SchemaError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    let mut defs: Vec<TableDef> = Vec::new();
    for f in files {
        let d = load_table_file(&f)?;
        if let Some(prev) = defs.iter().find(|p| p.name == d.name) {
            return Err(SchemaError::DuplicateTable {
                name: d.name,
                first: prev.source.clone().unwrap_or_default(),
                second: f,
            });
        }
        defs.push(d);
    }
    Ok(defs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn partition_columns_are_checked_against_the_table_kind() {
        let candidates = partition_column_candidates(TableKind::Container);
        for c in ["dt", "hour", "namespace", "pod", "kafka_partition"] {
            assert!(candidates.iter().any(|x| x == c), "{c}: {candidates:?}");
        }
        for c in [
            "ts",
            "labels",
            "attrs",
            "kafka_offset",
            "message",
            "trace_id",
            "span_id",
        ] {
            assert!(!candidates.iter().any(|x| x == c), "{c}: {candidates:?}");
        }
        let check = |kind, c: &[&str]| check_partition_by(kind, &cols(c));
        assert_eq!(
            check(TableKind::Container, &["dt", "hour", "namespace"]),
            Ok(())
        );
        assert_eq!(check(TableKind::K8sAudit, &["dt", "verb"]), Ok(()));
        let e = check(TableKind::Access, &["dt", "tenant"]).expect_err("unknown");
        assert!(
            e.contains("no column `tenant` in the access table")
                && e.contains("partition columns can be: ")
                && e.contains("status"),
            "{e}"
        );
        let e = check(TableKind::Container, &["dt", "ts"]).expect_err("timestamp");
        assert!(
            e.contains("`ts`") && e.contains("cannot be a partition column"),
            "{e}"
        );
        for (kind, c) in [
            (TableKind::Container, "trace_id"),
            (TableKind::Container, "message"),
            (TableKind::K8sAudit, "audit_id"),
            (TableKind::Access, "path"),
            (TableKind::DeadLetter, "error"),
        ] {
            let e = check(kind, &["dt", c]).expect_err("per-record column");
            assert!(
                e.contains(&format!("`{c}` has a new value in nearly every record"))
                    && !e.contains(&format!(" {c},")),
                "{e}"
            );
        }
        let e = check(TableKind::Container, &["dt", "dt"]).expect_err("twice");
        assert!(e.contains("`dt` is listed twice"), "{e}");
        assert!(check(TableKind::Container, &[]).is_err());
        let e = check(TableKind::Container, &["hour", "namespace"]).expect_err("hour, no dt");
        assert!(e.contains("`hour` without `dt`"), "{e}");
        assert_eq!(check(TableKind::Container, &["dt", "namespace"]), Ok(()));
    }

    /// Each per-record name is a column that would otherwise pass the type check (a name that
    /// is no such column anywhere would be a dead entry).
    #[test]
    fn per_record_columns_are_partitionable_columns_of_some_table() {
        for c in PER_RECORD_COLUMNS {
            assert!(
                TableKind::ALL.iter().any(|&k| table_schema(k)
                    .field_with_name(c)
                    .is_ok_and(|f| partitionable(f.data_type()))),
                "{c}"
            );
        }
    }

    #[test]
    fn retention_by_namespace_is_read_and_checked() {
        let base = "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"cri\"\nretention_days = 30\n";
        let def = parse_table_def(
            &format!("{base}[retention_by_namespace]\npayments = 365\n\"kube-system\" = 7\n"),
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(def.retention_days, Some(30));
        assert_eq!(
            def.retention_by_namespace.into_iter().collect::<Vec<_>>(),
            vec![
                ("kube-system".to_string(), 7),
                ("payments".to_string(), 365)
            ]
        );
        let e = parse_table_def(
            &format!("{base}[retention_by_namespace]\npayments = 0\n"),
            Path::new("t.toml"),
        )
        .expect_err("zero days")
        .to_string();
        assert!(
            e.contains("retention_by_namespace") && e.contains("`payments`"),
            "{e}"
        );
    }

    #[test]
    fn etl_keys_are_read_and_a_derived_column_may_partition_the_table() {
        let text = "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"fluentbit\"\n\
                    partition_by = [\"dt\", \"tenant\"]\n\
                    filter = \"level <> 'DEBUG'\"\n\
                    redact = [\"email\", { column = \"pod\", pattern = \"[0-9]+\", replace = \"#\" }]\n\
                    [derive]\ntenant = \"split_part(namespace, '-', 1)\"\n\
                    [[route]]\nwhen = \"level = 'ERROR'\"\ntable = \"errors\"\n";
        let def = parse_table_def(text, Path::new("t.toml")).expect("valid");
        assert!(def.has_etl());
        assert_eq!(def.filter.as_deref(), Some("level <> 'DEBUG'"));
        assert_eq!(
            def.derive.get("tenant").map(String::as_str),
            Some("split_part(namespace, '-', 1)")
        );
        assert_eq!(def.redact.len(), 2);
        assert_eq!(def.redact[0], RedactEntry::Named("email".into()));
        assert!(
            matches!(&def.redact[1], RedactEntry::Rule(r) if r.column.as_deref() == Some("pod"))
        );
        assert_eq!(def.route[0].table, "errors");
        // without the derived column, `tenant` is not a column of the table
        let e = parse_table_def(
            "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"fluentbit\"\npartition_by = [\"dt\", \"tenant\"]\n",
            Path::new("t.toml"),
        )
        .expect_err("unknown column")
        .to_string();
        assert!(e.contains("`tenant`"), "{e}");
        // an unknown key of a [[redact]] table is refused
        let e = parse_table_def(
            "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"cri\"\n[[redact]]\ncolum = \"message\"\n",
            Path::new("t.toml"),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("redact"), "{e}");
        // a definition without them has no ETL
        let def = parse_table_def(
            "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"cri\"\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        assert!(!def.has_etl());
    }

    #[test]
    fn a_table_file_with_a_repeated_partition_column_is_rejected() {
        let text = "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"cri\"\n\
                    partition_by = [\"dt\", \"hour\", \"dt\"]\n";
        let e = parse_table_def(text, Path::new("tables/t.toml"))
            .expect_err("repeated column")
            .to_string();
        assert!(
            e.contains("tables/t.toml") && e.contains("partition_by") && e.contains("twice"),
            "{e}"
        );
    }
}
