//! SQL names of Arrow types for people (`\d TABLE`): `VARCHAR`, `TIMESTAMP`,
//! `MAP(VARCHAR, VARCHAR)` instead of `Utf8View`, `Timestamp(µs, "UTC")`, `Map("key_value"…)`.
//! Timestamps follow Delta Lake and Spark: `TIMESTAMP` is an instant (Arrow type with a time
//! zone), `TIMESTAMP_NTZ` a wall-clock time without one.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::{DataType, IntervalUnit};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// The SQL name of an Arrow type.
pub fn sql_type(t: &DataType) -> String {
    use DataType::*;
    match t {
        Null => "NULL".into(),
        Boolean => "BOOLEAN".into(),
        Int8 => "TINYINT".into(),
        Int16 => "SMALLINT".into(),
        Int32 => "INTEGER".into(),
        Int64 => "BIGINT".into(),
        UInt8 => "UTINYINT".into(),
        UInt16 => "USMALLINT".into(),
        UInt32 => "UINTEGER".into(),
        UInt64 => "UBIGINT".into(),
        Float16 => "HALF".into(),
        Float32 => "FLOAT".into(),
        Float64 => "DOUBLE".into(),
        Utf8 | Utf8View | LargeUtf8 => "VARCHAR".into(),
        Binary | BinaryView | LargeBinary | FixedSizeBinary(_) => "BLOB".into(),
        Date32 | Date64 => "DATE".into(),
        Time32(_) | Time64(_) => "TIME".into(),
        Timestamp(_, Some(_)) => "TIMESTAMP".into(),
        Timestamp(_, None) => "TIMESTAMP_NTZ".into(),
        Duration(_) | Interval(IntervalUnit::MonthDayNano | IntervalUnit::DayTime) => {
            "INTERVAL".into()
        }
        Interval(IntervalUnit::YearMonth) => "INTERVAL".into(),
        Decimal32(p, s) | Decimal64(p, s) => format!("DECIMAL({p}, {s})"),
        Decimal128(p, s) | Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) | FixedSizeList(f, _) => {
            format!("{}[]", sql_type(f.data_type()))
        }
        Struct(fields) => format!(
            "STRUCT({})",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Map(entries, _) => match entries.data_type() {
            Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                sql_type(kv[0].data_type()),
                sql_type(kv[1].data_type())
            ),
            other => format!("MAP({})", sql_type(other)),
        },
        Dictionary(_, v) => sql_type(v),
        RunEndEncoded(_, v) => sql_type(v.data_type()),
        Union(..) => "UNION".into(),
    }
}

/// The SQL name for an Arrow type's text (`information_schema.columns.data_type`); the text
/// itself when it does not parse.
pub fn sql_type_of_text(arrow_type: &str) -> String {
    DataType::from_str(arrow_type)
        .map(|t| sql_type(&t))
        .unwrap_or_else(|_| arrow_type.to_string())
}

/// Register `sql_type(arrow_type_text)`, e.g. `sql_type(arrow_typeof(ts))` → `TIMESTAMP`.
pub fn register(ctx: &SessionContext) {
    let f = |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let Some(a) = arrays.first() else {
            return Ok(ColumnarValue::Array(Arc::new(StringArray::from(Vec::<
                Option<String>,
            >::new(
            )))));
        };
        let a = arrow::compute::cast(a, &DataType::Utf8)?;
        let s = a
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("sql_type".into()))?;
        let out: StringArray = (0..s.len())
            .map(|i| (!s.is_null(i)).then(|| sql_type_of_text(s.value(i))))
            .collect();
        let out: ArrayRef = Arc::new(out);
        Ok(
            if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&out, 0)?)
            } else {
                ColumnarValue::Array(out)
            },
        )
    };
    ctx.register_udf(create_udf(
        "sql_type",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(f),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Fields, TimeUnit};

    #[test]
    fn sql_names() {
        assert_eq!(sql_type(&DataType::Utf8View), "VARCHAR");
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(sql_type_of_text(&ts.to_string()), "TIMESTAMP");
        let map = DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Utf8, true),
                ])),
                false,
            )),
            false,
        );
        assert_eq!(sql_type_of_text(&map.to_string()), "MAP(VARCHAR, VARCHAR)");
        assert_eq!(sql_type_of_text("not a type"), "not a type");
    }
}
