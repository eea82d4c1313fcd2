//! The Hive layout, as pure functions: partition folder names with Spark's escaping, Hive column
//! types of Arrow types, and the DDL a Hive or Spark user runs.

use arrow::datatypes::{DataType, Field, TimeUnit};

/// The folder value Hive and Spark write for a NULL (or empty string) partition value.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Whether Spark escapes `c` in a partition folder name (`ExternalCatalogUtils.charToEscape`:
/// the control characters 0x01-0x1F, `"#%'*/:=?\` DEL `{[]^`).
fn needs_escaping(c: char) -> bool {
    matches!(c, '\u{01}'..='\u{1F}')
        || matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7F}'
                | '{'
                | '['
                | ']'
                | '^'
        )
}

/// Spark's `escapePathName`: each character that needs escaping becomes `%XX` (upper-case hex
/// of its code); everything else, non-ASCII included, stays.
pub fn escape_path_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if needs_escaping(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Spark's `unescapePathName` (the tests' check that escaping round-trips).
pub fn unescape_path_name(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `name=value` folder: both escaped, a NULL or empty value as
/// [`HIVE_DEFAULT_PARTITION`].
pub fn partition_dir(name: &str, value: Option<&str>) -> String {
    let v = match value {
        None | Some("") => HIVE_DEFAULT_PARTITION.to_string(),
        Some(v) => escape_path_name(v),
    };
    format!("{}={v}", escape_path_name(name))
}

/// The Hive type of an Arrow type, as written in `CREATE TABLE` (and read back by Spark from
/// the Parquet files). `None`: no Hive type (the export refuses the column, naming it).
pub fn hive_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("ARRAY<{}>", hive_type(f.data_type())?)
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return None;
            };
            if kv.len() != 2 {
                return None;
            }
            format!(
                "MAP<{},{}>",
                hive_type(kv[0].data_type())?,
                hive_type(kv[1].data_type())?
            )
        }
        DataType::Struct(fields) => {
            let parts: Option<Vec<String>> = fields
                .iter()
                .map(|f| Some(format!("`{}`:{}", f.name(), hive_type(f.data_type())?)))
                .collect();
            format!("STRUCT<{}>", parts?.join(","))
        }
        DataType::Dictionary(_, v) => hive_type(v)?,
        _ => return None,
    })
}

/// The type a column is written with for Spark, Hive and ML readers: views, large and
/// dictionary types as their plain type, timestamps as microseconds in UTC (Spark rejects
/// nanoseconds), nested types likewise.
pub fn export_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, v) => export_type(v),
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        // Parquet's (and Delta's) names: `element` for list items, `key_value` with `key` and
        // `value` for map entries, whatever the engine called them
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => DataType::List(
            Field::new("element", export_type(f.data_type()), f.is_nullable()).into(),
        ),
        DataType::Map(f, sorted) => match f.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                let key = Field::new("key", export_type(kv[0].data_type()), false);
                let value =
                    Field::new("value", export_type(kv[1].data_type()), kv[1].is_nullable());
                DataType::Map(
                    Field::new(
                        "key_value",
                        DataType::Struct(vec![key, value].into()),
                        false,
                    )
                    .into(),
                    *sorted,
                )
            }
            _ => DataType::Map(export_field(f).into(), *sorted),
        },
        DataType::Struct(fs) => DataType::Struct(
            fs.iter()
                .map(|f| export_field(f))
                .collect::<Vec<_>>()
                .into(),
        ),
        other => other.clone(),
    }
}

fn export_field(f: &Field) -> Field {
    Field::new(f.name(), export_type(f.data_type()), f.is_nullable())
}

/// A SQL string literal (single quotes doubled).
pub fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A back-quoted identifier for Hive/Spark SQL.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `CREATE EXTERNAL TABLE IF NOT EXISTS db.table (cols) PARTITIONED BY (parts) STORED AS
/// PARQUET LOCATION 'location'`; `columns` and `partitions` are (name, Hive type).
pub fn create_table_ddl(
    db: &str,
    table: &str,
    columns: &[(String, String)],
    partitions: &[(String, String)],
    location: &str,
) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(n, t)| format!("  {} {t}", ident(n)))
        .collect();
    let parts: Vec<String> = partitions
        .iter()
        .map(|(n, t)| format!("{} {t}", ident(n)))
        .collect();
    format!(
        "CREATE DATABASE IF NOT EXISTS {db_i};\n\
         CREATE EXTERNAL TABLE IF NOT EXISTS {db_i}.{t_i} (\n{}\n)\n\
         PARTITIONED BY ({})\nSTORED AS PARQUET\nLOCATION {};\n",
        cols.join(",\n"),
        parts.join(", "),
        sql_string(location),
        db_i = ident(db),
        t_i = ident(table),
    )
}

/// A partition spec `(dt='2024-05-01', hour=5)`: string, date and timestamp values quoted,
/// numbers bare, NULL as Hive's default partition name.
pub fn partition_spec(partitions: &[(String, String)], values: &[Option<String>]) -> String {
    let parts: Vec<String> = partitions
        .iter()
        .zip(values)
        .map(|((n, t), v)| {
            let v = match v {
                None => sql_string(HIVE_DEFAULT_PARTITION),
                Some(v) if is_numeric_hive(t) => v.clone(),
                Some(v) => sql_string(v),
            };
            format!("{}={v}", ident(n))
        })
        .collect();
    format!("({})", parts.join(", "))
}

fn is_numeric_hive(t: &str) -> bool {
    matches!(t, "TINYINT" | "SMALLINT" | "INT" | "BIGINT" | "BOOLEAN")
}

/// `ALTER TABLE db.table ADD IF NOT EXISTS PARTITION (...) LOCATION '...';`
pub fn add_partition_ddl(
    db: &str,
    table: &str,
    partitions: &[(String, String)],
    values: &[Option<String>],
    location: &str,
) -> String {
    format!(
        "ALTER TABLE {}.{} ADD IF NOT EXISTS PARTITION {} LOCATION {};\n",
        ident(db),
        ident(table),
        partition_spec(partitions, values),
        sql_string(location)
    )
}

/// `ALTER TABLE db.table DROP IF EXISTS PARTITION (...);` (a partition a re-export no longer
/// has, e.g. after a GDPR delete emptied an hour).
pub fn drop_partition_ddl(
    db: &str,
    table: &str,
    partitions: &[(String, String)],
    values: &[Option<String>],
) -> String {
    format!(
        "ALTER TABLE {}.{} DROP IF EXISTS PARTITION {};\n",
        ident(db),
        ident(table),
        partition_spec(partitions, values)
    )
}

/// The location Hadoop tools use for a URL: `s3a://` for `s3://` (the open-source S3
/// connector), `file:` URLs as they are.
pub fn hadoop_location(url: &url::Url) -> String {
    let s = url.as_str().trim_end_matches('/').to_string();
    match s.strip_prefix("s3://") {
        Some(rest) => format!("s3a://{rest}"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spark_escaping_of_partition_values() {
        assert_eq!(escape_path_name("2024-05-01"), "2024-05-01");
        assert_eq!(escape_path_name("a/b:c=d"), "a%2Fb%3Ac%3Dd");
        assert_eq!(escape_path_name("100%"), "100%25");
        assert_eq!(escape_path_name("x\ny\u{7f}"), "x%0Ay%7F");
        assert_eq!(escape_path_name("{[^]}"), "%7B%5B%5E%5D}");
        assert_eq!(escape_path_name("é ü"), "é ü");
        assert_eq!(partition_dir("hour", Some("5")), "hour=5");
        assert_eq!(partition_dir("ns", None), "ns=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(
            partition_dir("ns", Some("")),
            "ns=__HIVE_DEFAULT_PARTITION__"
        );
        assert_eq!(partition_dir("a=b", Some("c")), "a%3Db=c");
    }

    proptest! {
        #[test]
        fn escaping_round_trips_and_leaves_no_separator(s in "\\PC{0,20}") {
            let e = escape_path_name(&s);
            prop_assert!(!e.contains('/'));
            prop_assert!(!e.contains('='));
            prop_assert_eq!(unescape_path_name(&e), s);
        }
    }

    #[test]
    fn hive_types_of_the_lake_schemas() {
        use std::sync::Arc;
        let map = DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(
                    vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8View, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        );
        assert_eq!(hive_type(&map).as_deref(), Some("MAP<STRING,STRING>"));
        let list = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
        assert_eq!(hive_type(&list).as_deref(), Some("ARRAY<STRING>"));
        assert_eq!(
            hive_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)).as_deref(),
            Some("TIMESTAMP")
        );
        assert_eq!(hive_type(&DataType::UInt64), None);
        assert_eq!(
            export_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let named = DataType::Map(
            Arc::new(Field::new(
                "labels",
                DataType::Struct(
                    vec![
                        Field::new("keys", DataType::Utf8View, false),
                        Field::new("values", DataType::Utf8View, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        );
        assert_eq!(export_type(&named), export_type(&map));
        let item = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(export_type(&item), list);
        let DataType::Map(f, _) = export_type(&map) else {
            panic!("map")
        };
        let DataType::Struct(kv) = f.data_type() else {
            panic!("struct")
        };
        assert_eq!(kv[1].data_type(), &DataType::Utf8);
        assert_eq!(f.name(), "key_value");
    }

    #[test]
    fn ddl_statements() {
        let cols = vec![("message".to_string(), "STRING".to_string())];
        let parts = vec![
            ("dt".to_string(), "DATE".to_string()),
            ("hour".to_string(), "INT".to_string()),
        ];
        let ddl = create_table_ddl("logs", "containers", &cols, &parts, "s3a://b/x");
        assert!(ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `logs`.`containers`"));
        assert!(ddl.contains("PARTITIONED BY (`dt` DATE, `hour` INT)"));
        assert!(ddl.contains("STORED AS PARQUET\nLOCATION 's3a://b/x';"));
        let add = add_partition_ddl(
            "logs",
            "containers",
            &parts,
            &[Some("2024-05-01".into()), Some("5".into())],
            "s3a://b/x/dt=2024-05-01/hour=5",
        );
        assert_eq!(
            add,
            "ALTER TABLE `logs`.`containers` ADD IF NOT EXISTS PARTITION (`dt`='2024-05-01', `hour`=5) \
             LOCATION 's3a://b/x/dt=2024-05-01/hour=5';\n"
        );
        assert_eq!(
            hadoop_location(&url::Url::parse("s3://b/p/").expect("url")),
            "s3a://b/p"
        );
    }
}
