//! Fitting a boxed table to the terminal's width, as DuckDB's CLI does: when the natural table
//! is wider than the terminal, the widest columns are cut to a common cap (values end in `…`),
//! narrow columns keep their full text, and no column goes below [`MIN_WIDTH`] (a table that
//! cannot fit even then is left to the pager's horizontal scrolling).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::{DataFusionError, Result};

/// No column is cut below this many characters.
pub const MIN_WIDTH: usize = 8;

/// The characters a boxed table adds around `n` columns: `| a | b |` is 3 per column plus 1.
fn frame(n: usize) -> usize {
    3 * n + 1
}

/// The width of each column so the table fits in `max_total` characters: `natural[i]` is the
/// widest cell or header of column i. The result is the natural width capped at the largest
/// common cap that fits (never below [`MIN_WIDTH`], never above the natural width).
pub fn fit_widths(natural: &[usize], max_total: usize) -> Vec<usize> {
    let total = |cap: usize| -> usize {
        natural.iter().map(|w| (*w).min(cap)).sum::<usize>() + frame(natural.len())
    };
    let widest = natural.iter().copied().max().unwrap_or(0);
    if total(widest) <= max_total || widest <= MIN_WIDTH {
        return natural.to_vec();
    }
    // the largest cap in [MIN_WIDTH, widest) whose table fits; MIN_WIDTH when none does
    let (mut lo, mut hi) = (MIN_WIDTH, widest);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if total(mid) <= max_total {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    natural.iter().map(|w| (*w).min(lo)).collect()
}

/// `s` cut to `width` characters, ending in `…` when it was longer.
pub fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The cells of `batches` as text, cut so the boxed table is at most `max_total` characters
/// wide. Nulls stay null (the table prints them as `NULL`); headers are cut like values.
pub fn fit_batches(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_total: usize,
    opts: &FormatOptions<'_>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let n = schema.fields().len();
    let mut text: Vec<Vec<Vec<Option<String>>>> = Vec::with_capacity(batches.len());
    let mut natural: Vec<usize> = schema
        .fields()
        .iter()
        .map(|f| f.name().chars().count())
        .collect();
    for b in batches {
        let mut cols = Vec::with_capacity(n);
        for (i, c) in b.columns().iter().enumerate() {
            let f = ArrayFormatter::try_new(c.as_ref(), opts).map_err(DataFusionError::from)?;
            let mut vals = Vec::with_capacity(b.num_rows());
            for row in 0..b.num_rows() {
                if c.is_null(row) {
                    vals.push(None);
                    continue;
                }
                let v = f.value(row).to_string();
                let w = v.lines().map(|l| l.chars().count()).max().unwrap_or(0);
                natural[i] = natural[i].max(w);
                vals.push(Some(v));
            }
            cols.push(vals);
        }
        text.push(cols);
    }
    let widths = fit_widths(&natural, max_total);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(&widths)
        .map(|(f, w)| Field::new(cut(f.name(), *w), DataType::Utf8, true))
        .collect();
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(text.len());
    for cols in text {
        let arrays: Vec<ArrayRef> = cols
            .into_iter()
            .zip(&widths)
            .map(|(vals, w)| {
                let mut b = StringBuilder::new();
                for v in vals {
                    b.append_option(v.map(|s| cut_lines(&s, *w)));
                }
                Arc::new(b.finish()) as ArrayRef
            })
            .collect();
        out.push(RecordBatch::try_new(Arc::clone(&out_schema), arrays)?);
    }
    Ok((out_schema, out))
}

/// Each line of a (possibly multi-line) value cut to `width`.
fn cut_lines(s: &str, width: usize) -> String {
    if !s.contains('\n') {
        return cut(s, width);
    }
    s.split('\n')
        .map(|l| cut(l, width))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_table_that_fits_is_left_alone() {
        assert_eq!(fit_widths(&[5, 10, 3], 80), vec![5, 10, 3]);
    }

    #[test]
    fn the_widest_columns_are_cut_to_a_common_cap() {
        // frame of 3 columns = 10; 80 - 10 = 70 for the text: 5 + 2 * cap <= 70 -> cap 32
        assert_eq!(fit_widths(&[5, 200, 100], 80), vec![5, 32, 32]);
        assert_eq!(cut("abcdefghij", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut_lines("abcdef\nxy", 4), "abc…\nxy");
    }

    #[test]
    fn no_column_goes_below_the_minimum() {
        let w = fit_widths(&[50; 30], 80);
        assert!(w.iter().all(|w| *w == MIN_WIDTH), "{w:?}");
        assert_eq!(fit_widths(&[3, 50], 10), vec![3, MIN_WIDTH]);
    }

    #[test]
    fn cut_values_end_in_an_ellipsis_and_nulls_stay_null() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("message", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![1, 2])),
                Arc::new(arrow::array::StringArray::from(vec![
                    Some("x".repeat(100)),
                    None,
                ])),
            ],
        )
        .expect("batch");
        let opts = FormatOptions::default().with_null("NULL");
        let (s, out) = fit_batches(&schema, &[b], 40, &opts).expect("fit");
        let t = arrow::util::pretty::pretty_format_batches_with_options(&out, &opts)
            .expect("pretty")
            .to_string();
        assert_eq!(s.field(1).name(), "message");
        assert!(t.lines().all(|l| l.chars().count() <= 40), "{t}");
        assert!(t.contains(&format!("{}…", "x".repeat(29))), "{t}");
        assert!(t.contains("NULL"), "{t}");
    }

    proptest! {
        #[test]
        fn widths_fit_when_they_can_and_never_grow(
            natural in proptest::collection::vec(0usize..300, 1..20),
            max_total in 20usize..300,
        ) {
            let w = fit_widths(&natural, max_total);
            prop_assert_eq!(w.len(), natural.len());
            for (a, n) in w.iter().zip(&natural) {
                prop_assert!(a <= n);
                prop_assert!(*a >= (*n).min(MIN_WIDTH));
            }
            let floor: usize = natural.iter().map(|n| (*n).min(MIN_WIDTH)).sum::<usize>()
                + frame(natural.len());
            if floor <= max_total {
                prop_assert!(w.iter().sum::<usize>() + frame(natural.len()) <= max_total);
            }
        }
    }
}
