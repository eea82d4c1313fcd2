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

/// A writer of one result set in one format. `begin` is called once with the schema, then
/// `batch` for every batch, then `finish`.
pub struct ResultWriter<'w> {
    format: Format,
    out: Option<&'w mut Out>,
    schema: Option<SchemaRef>,
    buffered: Vec<RecordBatch>,
    parquet: Option<ArrowWriter<&'w mut Out>>,
    header_done: bool,
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
        }
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
                let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
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
        match self.format {
            Format::Table => {
                if self.buffered.is_empty() {
                    let empty = RecordBatch::new_empty(Arc::clone(&schema));
                    let t = arrow::util::pretty::pretty_format_batches_with_options(
                        &[empty],
                        &format_options(),
                    )?;
                    writeln!(out, "{t}").map_err(io)?;
                } else {
                    let t = arrow::util::pretty::pretty_format_batches_with_options(
                        &self.buffered,
                        &format_options(),
                    )?;
                    writeln!(out, "{t}").map_err(io)?;
                }
            }
            Format::Vertical => {
                let width = schema
                    .fields()
                    .iter()
                    .map(|f| f.name().chars().count())
                    .max()
                    .unwrap_or(0);
                let mut rec = 0usize;
                for b in &self.buffered {
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
            }
            Format::Json => {
                let mut w = arrow::json::ArrayWriter::new(&mut *out);
                let refs: Vec<&RecordBatch> = self.buffered.iter().collect();
                w.write_batches(&refs)?;
                w.finish()?;
                if self.buffered.iter().all(|b| b.num_rows() == 0) {
                    // ArrayWriter writes nothing for zero rows
                    write!(out, "[]").map_err(io)?;
                }
                writeln!(out).map_err(io)?;
            }
            Format::Markdown => {
                let names: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| md_escape(f.name()))
                    .collect();
                writeln!(out, "| {} |", names.join(" | ")).map_err(io)?;
                writeln!(out, "|{}", names.iter().map(|_| "---|").collect::<String>())
                    .map_err(io)?;
                for b in &self.buffered {
                    let fmts = cells(b)?;
                    for row in 0..b.num_rows() {
                        let vals: Vec<String> = fmts
                            .iter()
                            .map(|c| md_escape(&c.value(row).to_string()))
                            .collect();
                        writeln!(out, "| {} |", vals.join(" | ")).map_err(io)?;
                    }
                }
            }
            Format::Csv | Format::Tsv => {
                if !self.header_done {
                    // header for an empty result
                    let delim = if self.format == Format::Csv {
                        b','
                    } else {
                        b'\t'
                    };
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .with_delimiter(delim)
                        .build(&mut *out);
                    w.write(&RecordBatch::new_empty(Arc::clone(&schema)))?;
                }
            }
            Format::Ndjson => {}
            Format::Parquet => {}
        }
        out.flush().map_err(io)?;
        Ok(())
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
