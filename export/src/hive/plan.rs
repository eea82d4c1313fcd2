//! The pure planning of a Hive export: names, the columns' Hive types, the day's query and the
//! partitions' DDL.

use arrow::datatypes::SchemaRef;

use super::HiveOptions;
use super::manifest::{HiveManifest, PartitionEntry};
use crate::error::ExportError;
use crate::layout::{add_partition_ddl, drop_partition_ddl, hive_type};

/// A name safe as a Hive identifier: letters, digits and `_`, lower-case.
pub fn hive_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Refuses a table not partitioned by `dt` first.
pub(super) fn check_dt_first(table: &str, partition_columns: &[String]) -> Result<(), ExportError> {
    if partition_columns.first().map(String::as_str) != Some("dt") {
        return Err(ExportError::Usage(format!(
            "table {} is partitioned by {:?}; a Hive export needs `dt` first",
            table, partition_columns
        )));
    }
    Ok(())
}

/// The export root: `--to`, or `<lake>/_export/hive/<table>`.
pub(super) fn export_root(opts: &HiveOptions) -> String {
    match &opts.to {
        Some(t) => t.clone(),
        None => format!(
            "{}/_export/hive/{}",
            opts.lake.trim_end_matches('/'),
            opts.table
        ),
    }
}

/// The table at `version`, as the query names it.
pub(super) fn table_ref(table: &str, version: i64) -> String {
    format!("delta_scan('{}', {version})", table.replace('\'', "''"))
}

/// The table's columns as the export writes them.
pub(super) struct TableShape {
    /// The data columns (every column but the partition columns), in the table's order.
    pub data_cols: Vec<String>,
    /// The data columns with their Hive types.
    pub columns: Vec<(String, String)>,
    /// The partition columns with their Hive types.
    pub part_types: Vec<(String, String)>,
}

impl TableShape {
    /// The shape of `table` (its `schema`, partitioned by `partition_columns`); refuses a column
    /// without a Hive type.
    pub(super) fn of(
        schema: &SchemaRef,
        partition_columns: &[String],
        table: &str,
    ) -> Result<TableShape, ExportError> {
        let data_cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !partition_columns.contains(n))
            .collect();
        let mut columns = Vec::new();
        for n in &data_cols {
            let f = schema
                .field_with_name(n)
                .map_err(|e| ExportError::Internal(e.to_string()))?;
            let t = hive_type(f.data_type()).ok_or_else(|| {
                ExportError::Usage(format!(
                    "column {n} of {}: type {} has no Hive equivalent",
                    table,
                    f.data_type()
                ))
            })?;
            columns.push((n.clone(), t));
        }
        let mut part_types = Vec::new();
        for n in partition_columns {
            let f = schema
                .field_with_name(n)
                .map_err(|e| ExportError::Internal(e.to_string()))?;
            let t = hive_type(f.data_type()).ok_or_else(|| {
                ExportError::Usage(format!(
                    "partition column {n}: type {} has no Hive equivalent",
                    f.data_type()
                ))
            })?;
            part_types.push((n.clone(), t));
        }
        Ok(TableShape {
            data_cols,
            columns,
            part_types,
        })
    }
}

/// The day's rows: the data columns then the partition columns of `table_ref` on `date`
/// (with `new_rows`, a filter after the `WHERE`), ordered by partition.
pub(super) fn day_query(
    table_ref: &str,
    data_cols: &[String],
    partition_columns: &[String],
    date: &str,
    new_rows: &str,
) -> String {
    let select: Vec<String> = data_cols
        .iter()
        .chain(partition_columns)
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let order: Vec<String> = partition_columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    format!(
        "SELECT {} FROM {table_ref} AS __new WHERE __new.dt = DATE '{date}'{new_rows} ORDER BY {}",
        select.join(", "),
        order.join(", ")
    )
}

/// The day's partition DDL: a DROP for each partition of `previous` that is gone, then an ADD
/// for each of `parts` (located under `root_location`).
pub(super) fn partitions_ddl(
    hive_db: &str,
    hive_table: &str,
    part_types: &[(String, String)],
    previous: Option<&HiveManifest>,
    parts: &[PartitionEntry],
    root_location: &str,
) -> String {
    let mut parts_ddl = String::new();
    if let Some(prev) = previous {
        for p in &prev.partitions {
            if !parts.iter().any(|q| q.values == p.values) {
                parts_ddl.push_str(&drop_partition_ddl(
                    hive_db, hive_table, part_types, &p.values,
                ));
            }
        }
    }
    for p in parts {
        parts_ddl.push_str(&add_partition_ddl(
            hive_db,
            hive_table,
            part_types,
            &p.values,
            &format!("{root_location}/{}", p.path),
        ));
    }
    parts_ddl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(values: &[&str], path: &str, rows: u64) -> PartitionEntry {
        PartitionEntry {
            values: values.iter().map(|v| Some(v.to_string())).collect(),
            path: path.into(),
            rows,
            files: Vec::new(),
        }
    }

    #[test]
    fn day_query_selects_data_then_partition_columns_ordered_by_partition() {
        let sql = day_query(
            "delta_scan('t', 3)",
            &["msg".into(), "a\"b".into()],
            &["dt".into(), "hour".into()],
            "2024-05-01",
            "",
        );
        assert_eq!(
            sql,
            "SELECT \"msg\", \"a\"\"b\", \"dt\", \"hour\" FROM delta_scan('t', 3) AS __new \
             WHERE __new.dt = DATE '2024-05-01' ORDER BY \"dt\", \"hour\""
        );
    }

    #[test]
    fn partitions_ddl_drops_the_gone_partitions_then_adds_every_one() {
        let types = vec![
            ("dt".to_string(), "DATE".to_string()),
            ("hour".to_string(), "INT".to_string()),
        ];
        let prev = HiveManifest {
            format: String::new(),
            table: "t".into(),
            source_url: String::new(),
            source_version: 1,
            date: "2024-05-01".into(),
            attempt: String::new(),
            hive_db: "default".into(),
            hive_table: "t".into(),
            partition_columns: vec!["dt".into(), "hour".into()],
            columns: Vec::new(),
            rows: 3,
            partitions: vec![
                part(&["2024-05-01", "1"], "dt=2024-05-01/hour=1", 1),
                part(&["2024-05-01", "2"], "dt=2024-05-01/hour=2", 2),
            ],
            from_version: None,
        };
        let parts = vec![part(&["2024-05-01", "2"], "dt=2024-05-01/hour=2", 5)];
        let ddl = partitions_ddl("default", "t", &types, Some(&prev), &parts, "s3a://b/x");
        assert_eq!(
            ddl,
            "ALTER TABLE `default`.`t` DROP IF EXISTS PARTITION (`dt`='2024-05-01', `hour`=1);\n\
             ALTER TABLE `default`.`t` ADD IF NOT EXISTS PARTITION (`dt`='2024-05-01', `hour`=2) \
             LOCATION 's3a://b/x/dt=2024-05-01/hour=2';\n"
        );
    }
}
