//! Result formats: table, vertical, csv, tsv, json, ndjson, markdown, parquet.

use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use parquet::arrow::ArrowWriter;

/// Output format of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Boxed table (default in a terminal).
    Table,
    /// One `column | value` line per field, records separated by a header (psql `\x`).
    Vertical,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// GitHub-flavoured Markdown table.
    Markdown,
    /// Apache Parquet (only with `--output FILE`).
    Parquet,
}

impl Format {
    /// Parse a format name (used by `\format`).
    pub fn parse(s: &str) -> Option<Format> {
        <Format as clap::ValueEnum>::from_str(s.trim(), true).ok()
    }

    /// Whether this format is written batch by batch (no need to hold all rows).
    pub fn streams(self) -> bool {
        matches!(
            self,
            Format::Csv | Format::Tsv | Format::Ndjson | Format::Parquet
        )
    }
}

type Result<T> = std::result::Result<T, DataFusionError>;

fn io(e: std::io::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn format_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("NULL")
        .with_display_error(true)
}

/// Render one cell as text.
fn cells(batch: &RecordBatch) -> Result<Vec<ArrayFormatter<'_>>> {
    let opts = format_options();
    batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).map_err(DataFusionError::from))
        .collect()
}

/// How results are printed: the format, a row limit and, for a boxed table on a terminal, the
/// width to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultShape {
    pub format: Format,
    pub max_rows: Option<usize>,
    pub max_width: Option<usize>,
}

/// A writer of one result set in one format. `begin` is called once with the schema, then
/// `batch` for every batch, then `finish`.
pub struct ResultWriter<'w> {
    format: Format,
    out: Option<&'w mut Out>,
    schema: Option<SchemaRef>,
    buffered: Vec<RecordBatch>,
    parquet: Option<ArrowWriter<&'w mut Out>>,
    header_done: bool,
    max_width: Option<usize>,
}

/// Where results go.
pub type Out = dyn Write + Send;

impl<'w> ResultWriter<'w> {
    pub fn new(format: Format, out: &'w mut Out) -> Self {
        Self {
            format,
            out: Some(out),
            schema: None,
            buffered: Vec::new(),
            parquet: None,
            header_done: false,
            max_width: None,
        }
    }

    /// Fit a boxed table to `width` characters (the terminal's): wide values are cut with `…`
    /// ([`crate::fit`]). Other formats are never cut.
    pub fn with_max_width(mut self, width: Option<usize>) -> Self {
        self.max_width = width;
        self
    }

    pub fn begin(&mut self, schema: SchemaRef) -> Result<()> {
        if self.format == Format::Parquet {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            if let Some(out) = self.out.take() {
                self.parquet = Some(ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))?);
            }
        }
        self.schema = Some(schema);
        Ok(())
    }

    pub fn batch(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 && self.format != Format::Parquet {
            return Ok(());
        }
        let batch = match self.format {
            Format::Table | Format::Vertical | Format::Markdown => readable_intervals(batch)?,
            _ => batch,
        };
        let Some(out) = self.out.as_deref_mut() else {
            if let Some(w) = self.parquet.as_mut() {
                w.write(&batch)?;
            }
            return Ok(());
        };
        match self.format {
            Format::Csv | Format::Tsv => {
                let delim = if self.format == Format::Csv {
                    b','
                } else {
                    b'\t'
                };
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(!self.header_done)
                    .with_delimiter(delim)
                    .with_null(String::new())
                    .build(&mut *out);
                w.write(&batch)?;
                self.header_done = true;
            }
            Format::Ndjson => {
                // every selected column in every row, `null` where null (as DuckDB and Spark)
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut *out);
                w.write(&batch)?;
                w.finish()?;
            }
            Format::Parquet => {}
            _ => self.buffered.push(batch),
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if self.format == Format::Parquet {
            if let Some(w) = self.parquet.take() {
                let out = w.into_inner()?;
                out.flush().map_err(io)?;
            }
            return Ok(());
        }
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let schema = match &self.schema {
            Some(s) => Arc::clone(s),
            None => return Ok(()),
        };
        let batches = &self.buffered;
        match self.format {
            Format::Table => write_table(out, &schema, batches, self.max_width)?,
            Format::Vertical => write_vertical(out, &schema, batches)?,
            Format::Json => write_json(out, batches)?,
            Format::Markdown => write_markdown(out, &schema, batches)?,
            Format::Csv | Format::Tsv => {
                if !self.header_done {
                    write_delimited_header(out, &schema, self.format)?;
                }
            }
            Format::Ndjson => {}
            Format::Parquet => {}
        }
        out.flush().map_err(io)?;
        Ok(())
    }
}

/// A boxed table of the buffered batches (the header alone when there are none), fitted to
/// `max_width` when given.
fn write_table(
    out: &mut Out,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_width: Option<usize>,
) -> Result<()> {
    let t = if batches.is_empty() {
        let empty = RecordBatch::new_empty(Arc::clone(schema));
        arrow::util::pretty::pretty_format_batches_with_options(&[empty], &format_options())?
    } else if let Some(w) = max_width {
        let (_, fitted) = crate::fit::fit_batches(schema, batches, w, &format_options())?;
        arrow::util::pretty::pretty_format_batches_with_options(&fitted, &format_options())?
    } else {
        arrow::util::pretty::pretty_format_batches_with_options(batches, &format_options())?
    };
    writeln!(out, "{t}").map_err(io)?;
    Ok(())
}

/// One `-[ RECORD n ]` header per row, then one `column | value` line per field.
fn write_vertical(out: &mut Out, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let width = schema
        .fields()
        .iter()
        .map(|f| f.name().chars().count())
        .max()
        .unwrap_or(0);
    let mut rec = 0usize;
    for b in batches {
        let fmts = cells(b)?;
        for row in 0..b.num_rows() {
            rec += 1;
            writeln!(
                out,
                "-[ RECORD {rec} ]{}",
                "-".repeat(width.saturating_sub(8) + 4)
            )
            .map_err(io)?;
            for (f, c) in schema.fields().iter().zip(&fmts) {
                writeln!(out, "{:<width$} | {}", f.name(), c.value(row)).map_err(io)?;
            }
        }
    }
    if rec == 0 {
        writeln!(out, "(0 rows)").map_err(io)?;
    }
    Ok(())
}

/// One JSON array of objects (`[]` for no rows), nulls written out.
fn write_json(out: &mut Out, batches: &[RecordBatch]) -> Result<()> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(&mut *out);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        // ArrayWriter writes nothing for zero rows
        write!(out, "[]").map_err(io)?;
    }
    writeln!(out).map_err(io)?;
    Ok(())
}

/// A GitHub-flavoured Markdown table (`|` escaped, newlines as spaces).
fn write_markdown(out: &mut Out, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| md_escape(f.name()))
        .collect();
    writeln!(out, "| {} |", names.join(" | ")).map_err(io)?;
    writeln!(out, "|{}", names.iter().map(|_| "---|").collect::<String>()).map_err(io)?;
    for b in batches {
        let fmts = cells(b)?;
        for row in 0..b.num_rows() {
            let vals: Vec<String> = fmts
                .iter()
                .map(|c| md_escape(&c.value(row).to_string()))
                .collect();
            writeln!(out, "| {} |", vals.join(" | ")).map_err(io)?;
        }
    }
    Ok(())
}

/// The CSV/TSV header row of an empty result.
fn write_delimited_header(out: &mut Out, schema: &SchemaRef, format: Format) -> Result<()> {
    let delim = if format == Format::Csv { b',' } else { b'\t' };
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .with_delimiter(delim)
        .build(&mut *out);
    w.write(&RecordBatch::new_empty(Arc::clone(schema)))?;
    Ok(())
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Plain column headers, as DuckDB prints them: `min(logs.ts)` → `min(ts)`, `Int64(1)` → `1`,
/// `Utf8("x")` → `'x'`. Only expression names change (a column named `a.b` stays); a rename
/// that would make two headers equal is not done.
pub fn plain_headers(schema: &SchemaRef) -> SchemaRef {
    let renamed: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| plain_header(f.name()))
        .collect();
    let fields: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .zip(&renamed)
        .map(|(f, r)| {
            let unique = renamed.iter().filter(|x| *x == r).count() == 1
                && !schema.fields().iter().any(|g| g.name() == r && g != f);
            if r != f.name() && unique {
                Arc::new(f.as_ref().clone().with_name(r.clone()))
            } else {
                Arc::clone(f)
            }
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// One header: literals as SQL, qualifiers dropped (outside quotes).
pub fn plain_header(name: &str) -> String {
    if !(name.contains('(') || name.contains(' ')) {
        return name.to_string();
    }
    static LITERALS: std::sync::OnceLock<Vec<(regex::Regex, &'static str)>> =
        std::sync::OnceLock::new();
    let rules = LITERALS.get_or_init(|| {
        [
            (
                r"\b(?:Int8|Int16|Int32|Int64|UInt8|UInt16|UInt32|UInt64|Float16|Float32|Float64)\((-?[0-9][0-9.eE+-]*)\)",
                "$1",
            ),
            (r#"\b(?:Utf8|Utf8View|LargeUtf8)\("([^"]*)"\)"#, "'$1'"),
            (r"\bBoolean\((true|false)\)", "$1"),
            (r#"\bDate32\("([^"]*)"\)"#, "DATE '$1'"),
        ]
        .into_iter()
        .filter_map(|(p, r)| regex::Regex::new(p).ok().map(|re| (re, r)))
        .collect()
    });
    let mut s = name.to_string();
    for (re, rep) in rules {
        s = re.replace_all(&s, *rep).into_owned();
    }
    drop_qualifiers(&s)
}

/// `min(logs.ts) - lake.logs.x` → `min(ts) - x`, leaving quoted text alone.
fn drop_qualifiers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        let at_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if at_start && (c.is_alphabetic() || c == '_') {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let followed = j + 1 < chars.len()
                && chars[j] == '.'
                && (chars[j + 1].is_alphabetic() || chars[j + 1] == '_' || chars[j + 1] == '"');
            if !followed {
                out.extend(&chars[i..j]);
            }
            i = if followed { j + 1 } else { j };
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Durations and intervals as people read them (`-00:00:19.935063`, `1 day 02:00:00`,
/// `1 year 2 months`) instead of ISO 8601 (`-PT19.935063S`); for the human formats only.
fn readable_intervals(batch: RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{Array, ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
    let needs = |t: &DataType| matches!(t, DataType::Duration(_) | DataType::Interval(_));
    if !batch.schema().fields().iter().any(|f| needs(f.data_type())) {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if !needs(f.data_type()) {
            fields.push(Arc::clone(f));
            cols.push(Arc::clone(c));
            continue;
        }
        // a duration's value in its unit (one cast for the column)
        let ints = match f.data_type() {
            DataType::Duration(_) => Some(arrow::compute::cast(c, &DataType::Int64)?),
            _ => None,
        };
        let ints = ints
            .as_ref()
            .and_then(|a| a.as_any().downcast_ref::<arrow::array::Int64Array>());
        let text: Vec<Option<String>> = (0..c.len())
            .map(|i| {
                if c.is_null(i) {
                    return None;
                }
                Some(match f.data_type() {
                    DataType::Duration(u) => {
                        let v = ints?.value(i);
                        let nanos = match u {
                            TimeUnit::Second => v as i128 * 1_000_000_000,
                            TimeUnit::Millisecond => v as i128 * 1_000_000,
                            TimeUnit::Microsecond => v as i128 * 1_000,
                            TimeUnit::Nanosecond => v as i128,
                        };
                        format_interval(0, 0, nanos)
                    }
                    DataType::Interval(IntervalUnit::MonthDayNano) => {
                        let v = c
                            .as_any()
                            .downcast_ref::<arrow::array::IntervalMonthDayNanoArray>()?
                            .value(i);
                        format_interval(v.months, v.days, v.nanoseconds as i128)
                    }
                    DataType::Interval(IntervalUnit::DayTime) => {
                        let v = c
                            .as_any()
                            .downcast_ref::<arrow::array::IntervalDayTimeArray>()?
                            .value(i);
                        format_interval(0, v.days, v.milliseconds as i128 * 1_000_000)
                    }
                    DataType::Interval(IntervalUnit::YearMonth) => {
                        let v = c
                            .as_any()
                            .downcast_ref::<arrow::array::IntervalYearMonthArray>()?
                            .value(i);
                        format_interval(v, 0, 0)
                    }
                    _ => return None,
                })
            })
            .collect();
        fields.push(Arc::new(Field::new(f.name(), DataType::Utf8, true)));
        cols.push(Arc::new(StringArray::from(text)));
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// DuckDB's interval text: `[N year[s] ][N month[s] ][N day[s] ]HH:MM:SS[.fraction]`, the clock
/// part left out when zero and something else is shown.
pub fn format_interval(months: i32, days: i32, nanos: i128) -> String {
    let plural = |n: i64, w: &str| {
        if n.abs() == 1 {
            format!("{n} {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    let mut parts = Vec::new();
    let (y, m) = (months / 12, months % 12);
    if y != 0 {
        parts.push(plural(y as i64, "year"));
    }
    if m != 0 {
        parts.push(plural(m as i64, "month"));
    }
    // whole days of a duration are shown as days too
    let day_nanos: i128 = 86_400 * 1_000_000_000;
    let (extra_days, rest) = if months == 0 && days == 0 {
        (nanos / day_nanos, nanos % day_nanos)
    } else {
        (0, nanos)
    };
    let d = days as i64 + extra_days as i64;
    if d != 0 {
        parts.push(plural(d, "day"));
    }
    if rest != 0 || parts.is_empty() {
        let sign = if rest < 0 { "-" } else { "" };
        let r = rest.unsigned_abs();
        let secs = r / 1_000_000_000;
        let frac = r % 1_000_000_000;
        let mut clock = format!(
            "{sign}{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        );
        if frac != 0 {
            let f = format!("{frac:09}");
            clock.push('.');
            clock.push_str(f.trim_end_matches('0'));
        }
        parts.push(clock);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_plain() {
        assert_eq!(plain_header("min(container_logs.ts)"), "min(ts)");
        assert_eq!(plain_header("Int64(1)"), "1");
        assert_eq!(
            plain_header(r#"json_get_str(app.message,Utf8("a.b"))"#),
            "json_get_str(message,'a.b')"
        );
        assert_eq!(
            plain_header("max(lake.logs.ts) - min(logs.ts)"),
            "max(ts) - min(ts)"
        );
        assert_eq!(plain_header("a.b"), "a.b");
        assert_eq!(plain_header("count(*)"), "count(*)");
    }

    #[test]
    fn intervals_read_like_duckdb() {
        assert_eq!(format_interval(0, 0, -19_935_063_000), "-00:00:19.935063");
        assert_eq!(format_interval(0, 0, 5_000_000_000), "00:00:05");
        assert_eq!(
            format_interval(0, 0, (86_400 + 7_200) as i128 * 1_000_000_000),
            "1 day 02:00:00"
        );
        assert_eq!(format_interval(14, 3, 0), "1 year 2 months 3 days");
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
    }
}
