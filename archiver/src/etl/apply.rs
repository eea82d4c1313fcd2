//! Applying a compiled ETL to one decoded batch ([`Etl::apply`]), column-wise: filter, derive,
//! redact, then routes; the records an expression failed on are taken out whole.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, new_null_array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::error::ArrowError;

use super::{Compiled, Etl, EtlOutput};

/// The attrs key under which a reassembled line lists its fragments' offsets.
const FRAGMENT_OFFSETS: &str = "loglake.fragment_offsets";

/// A (topic, partition, offset) record key.
type RecordKey = (String, i32, i64);

/// What the filter left of a batch.
struct Filtered {
    /// The rows kept (those the filter failed on included: their records go to the dead
    /// letters whole).
    kept: RecordBatch,
    /// Rows the filter dropped.
    filtered_rows: u64,
    /// The records left without any row (with their fragments' offsets).
    filtered_offsets: Vec<RecordKey>,
    /// The rows the filter failed on, as positions in `kept`, with the reason.
    failed: Vec<(usize, String)>,
}

impl Etl {
    /// Evaluates `c` on `batch`; when the whole batch fails, row by row, so that only the rows
    /// that fail are named (their value is null in the result).
    fn evaluate(
        &self,
        c: &Compiled,
        batch: &RecordBatch,
        failed: &mut Vec<(usize, String)>,
    ) -> Result<ArrayRef, arrow::error::ArrowError> {
        let n = batch.num_rows();
        let whole = c.expr.evaluate(batch).and_then(|v| v.into_array(n));
        if let Ok(a) = whole {
            return Ok(a);
        }
        let t = c
            .expr
            .data_type(batch.schema_ref())
            .map_err(|e| arrow::error::ArrowError::ComputeError(e.to_string()))?;
        let mut parts: Vec<ArrayRef> = Vec::with_capacity(n);
        for r in 0..n {
            match c
                .expr
                .evaluate(&batch.slice(r, 1))
                .and_then(|v| v.into_array(1))
            {
                Ok(a) => parts.push(a),
                Err(e) => {
                    failed.push((
                        r,
                        format!(
                            "etl: table {}, {} `{}`: {}",
                            self.table,
                            c.key,
                            c.sql,
                            e.strip_backtrace()
                        ),
                    ));
                    parts.push(new_null_array(&t, 1));
                }
            }
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        if refs.is_empty() {
            return Ok(new_null_array(&t, 0));
        }
        arrow::compute::concat(&refs)
    }

    /// Filters, derives and redacts one decoded batch (of the input schema).
    pub fn apply(&self, batch: &RecordBatch) -> Result<EtlOutput, ArrowError> {
        // 1. filter (rows where it is NULL or false are dropped)
        let Filtered {
            kept,
            filtered_rows,
            filtered_offsets,
            failed: mut failed_kept,
        } = self.filter_rows(batch)?;
        // 2. derive
        let mut columns = self.derive_columns(&kept, &mut failed_kept)?;
        // 3. redact
        let redactions = self.redact_columns(&mut columns)?;
        let out = RecordBatch::try_new(self.output.clone(), columns)?;
        // 4. routes, on the transformed rows: their failures join the others
        let masks = self.route_masks(&out, &mut failed_kept)?;
        let (out, failed, masks) = self.drop_failed(&kept, out, &failed_kept, masks)?;
        let (routed, moved) = self.route_rows(&out, &masks)?;
        let (out, moved_offsets) = without_moved(out, &moved)?;
        Ok(EtlOutput {
            batch: out,
            filtered_rows,
            filtered_offsets,
            failed,
            redactions,
            routed,
            moved_offsets,
        })
    }

    /// Step 1: drops the rows where the filter is NULL or false, and names the records left
    /// without any row.
    fn filter_rows(&self, batch: &RecordBatch) -> Result<Filtered, ArrowError> {
        let Some(c) = &self.filter else {
            return Ok(Filtered {
                kept: batch.clone(),
                filtered_rows: 0,
                filtered_offsets: Vec::new(),
                failed: Vec::new(),
            });
        };
        let mut failed_rows: Vec<(usize, String)> = Vec::new();
        let v = self.evaluate(c, batch, &mut failed_rows)?;
        let mask = v
            .as_boolean_opt()
            .ok_or_else(|| ArrowError::ComputeError(format!("{} is not boolean", c.key)))?;
        let failed: HashSet<usize> = failed_rows.iter().map(|(r, _)| *r).collect();
        // Failed rows are kept here so that their records go to the dead letters whole.
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|r| Some(failed.contains(&r) || (mask.is_valid(r) && mask.value(r))))
            .collect();
        let idx: Vec<usize> = (0..batch.num_rows()).filter(|&r| keep.value(r)).collect();
        let filtered_rows = (batch.num_rows() - idx.len()) as u64;
        let filtered_offsets = match Coords::of(batch) {
            Some(co) if filtered_rows > 0 => dropped_records(&co, &idx, &keep),
            _ => Vec::new(),
        };
        let kept = filter_record_batch(batch, &keep)?;
        // failed rows' positions in `kept`
        let failed = failed_rows
            .into_iter()
            .filter_map(|(r, why)| idx.binary_search(&r).ok().map(|k| (k, why)))
            .collect();
        Ok(Filtered {
            kept,
            filtered_rows,
            filtered_offsets,
            failed,
        })
    }

    /// Step 2: the output columns: `kept`'s, with the derived ones computed (null columns
    /// before); the rows a derived value fails on (or is NULL for a non-nullable column) join
    /// `failed_kept`.
    fn derive_columns(
        &self,
        kept: &RecordBatch,
        failed_kept: &mut Vec<(usize, String)>,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        let mut columns: Vec<ArrayRef> = kept.columns().to_vec();
        columns.resize(
            self.output.fields().len(),
            new_null_array(&DataType::Null, 0),
        );
        for d in &self.derive {
            let mut f = Vec::new();
            let v = self.evaluate(&d.compiled, kept, &mut f)?;
            if !d.nullable && v.null_count() > 0 {
                for r in (0..v.len()).filter(|&r| v.is_null(r)) {
                    if !f.iter().any(|(x, _)| *x == r) {
                        f.push((
                            r,
                            format!(
                                "etl: table {}, {} `{}`: NULL for the non-nullable column `{}`",
                                self.table, d.compiled.key, d.compiled.sql, d.name
                            ),
                        ));
                    }
                }
            }
            failed_kept.extend(f);
            columns[d.out_index] = v;
        }
        Ok(columns)
    }

    /// Step 3: runs the redactions on `columns`; the replacements made by each.
    fn redact_columns(&self, columns: &mut [ArrayRef]) -> Result<Vec<u64>, ArrowError> {
        let mut redactions = vec![0u64; self.redact.len()];
        for (i, r) in self.redact.iter().enumerate() {
            let col = columns[r.out_index].clone();
            let Some(strings) = col.as_string_opt::<i32>() else {
                return Err(ArrowError::ComputeError(format!(
                    "redact column {} is not a string column",
                    r.column
                )));
            };
            if let Some((a, n)) = r.apply(strings) {
                columns[r.out_index] = Arc::new(a);
                redactions[i] = n;
            }
        }
        Ok(redactions)
    }

    /// Step 4: each route's `when` on the transformed rows; the rows it fails on join
    /// `failed_kept`.
    fn route_masks(
        &self,
        out: &RecordBatch,
        failed_kept: &mut Vec<(usize, String)>,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        let mut masks: Vec<ArrayRef> = Vec::with_capacity(self.routes.len());
        for r in &self.routes {
            let mut f = Vec::new();
            masks.push(self.evaluate(&r.when, out, &mut f)?);
            failed_kept.extend(f);
        }
        Ok(masks)
    }

    /// The rows each route copies or moves (NULL is not a match), and which rows of `out` some
    /// route moves.
    fn route_rows(
        &self,
        out: &RecordBatch,
        masks: &[ArrayRef],
    ) -> Result<(Vec<RecordBatch>, Vec<bool>), ArrowError> {
        let mut routed = Vec::with_capacity(self.routes.len());
        let mut moved = vec![false; out.num_rows()];
        for (r, m) in self.routes.iter().zip(masks) {
            let m = m.as_boolean_opt().ok_or_else(|| {
                ArrowError::ComputeError(format!("{} is not boolean", r.when.key))
            })?;
            // NULL is not a match
            let m: BooleanArray = (0..m.len())
                .map(|i| Some(m.is_valid(i) && m.value(i)))
                .collect();
            if r.moves {
                for (i, x) in moved.iter_mut().enumerate() {
                    *x |= m.value(i);
                }
            }
            routed.push(filter_record_batch(out, &m)?);
        }
        Ok((routed, moved))
    }

    /// Drops the rows of every record with a failed row (`failed_kept`: positions in `kept`,
    /// the rows before derive, aligned with `out`) from `out` and the route masks; the failed
    /// records with the first reason each.
    #[allow(clippy::type_complexity)]
    fn drop_failed(
        &self,
        kept: &RecordBatch,
        out: RecordBatch,
        failed_kept: &[(usize, String)],
        masks: Vec<ArrayRef>,
    ) -> Result<
        (RecordBatch, Vec<(String, i32, i64, String)>, Vec<ArrayRef>),
        arrow::error::ArrowError,
    > {
        let mut out = out;
        let mut masks = masks;
        let mut failed = Vec::new();
        if !failed_kept.is_empty() {
            let kc = Coords::of(kept);
            let mut bad: BTreeMap<(String, i32, i64), String> = BTreeMap::new();
            for (r, why) in failed_kept {
                let k = match &kc {
                    Some(c) => {
                        let (t, p, o) = c.key(*r);
                        (t.to_string(), p, o)
                    }
                    None => (String::new(), -1, *r as i64),
                };
                bad.entry(k).or_insert_with(|| why.clone());
            }
            let keep: BooleanArray = (0..out.num_rows())
                .map(|r| {
                    Some(match &kc {
                        Some(c) => {
                            let (t, p, o) = c.key(r);
                            !bad.contains_key(&(t.to_string(), p, o))
                        }
                        None => !failed_kept.iter().any(|(x, _)| *x == r),
                    })
                })
                .collect();
            out = filter_record_batch(&out, &keep)?;
            masks = masks
                .iter()
                .map(|m| arrow::compute::filter(m, &keep))
                .collect::<Result<_, _>>()?;
            failed = bad
                .into_iter()
                .map(|((t, p, o), why)| (t, p, o, why))
                .collect();
        }
        Ok((out, failed, masks))
    }
}

/// The Kafka coordinates (and reassembled lines' fragment offsets) of a batch's rows.
struct Coords<'a> {
    topics: &'a StringArray,
    parts: &'a arrow::array::Int32Array,
    offsets: &'a arrow::array::Int64Array,
    attrs: Option<&'a arrow::array::MapArray>,
}

impl<'a> Coords<'a> {
    fn of(batch: &'a RecordBatch) -> Option<Coords<'a>> {
        Some(Coords {
            topics: batch
                .column_by_name("kafka_topic")?
                .as_string_opt::<i32>()?,
            parts: batch
                .column_by_name("kafka_partition")?
                .as_primitive_opt::<Int32Type>()?,
            offsets: batch
                .column_by_name("kafka_offset")?
                .as_primitive_opt::<Int64Type>()?,
            attrs: batch.column_by_name("attrs").and_then(|a| a.as_map_opt()),
        })
    }

    fn key(&self, r: usize) -> (&'a str, i32, i64) {
        (
            self.topics.value(r),
            self.parts.value(r),
            self.offsets.value(r),
        )
    }

    /// The offsets listed in the row's `attrs['loglake.fragment_offsets']`.
    fn fragments(&self, r: usize) -> Vec<i64> {
        let Some(m) = self.attrs else {
            return Vec::new();
        };
        if m.is_null(r) {
            return Vec::new();
        }
        let entries = m.value(r);
        let (Some(keys), Some(values)) = (
            entries.column(0).as_string_opt::<i32>(),
            entries.column(1).as_string_opt::<i32>(),
        ) else {
            return Vec::new();
        };
        (0..keys.len())
            .filter(|&i| keys.value(i) == FRAGMENT_OFFSETS && values.is_valid(i))
            .flat_map(|i| {
                values
                    .value(i)
                    .split(',')
                    .filter_map(|s| s.trim().parse::<i64>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The records of the rows `keep` drops that no kept row (`idx`) belongs to, each once, with
/// the offsets of their fragments, in row order.
fn dropped_records(co: &Coords<'_>, idx: &[usize], keep: &BooleanArray) -> Vec<RecordKey> {
    let kept_records: HashSet<(&str, i32, i64)> = idx.iter().map(|&r| co.key(r)).collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for r in (0..keep.len()).filter(|&r| !keep.value(r)) {
        let k = co.key(r);
        if kept_records.contains(&k) {
            continue;
        }
        if seen.insert(k) {
            out.push((k.0.to_string(), k.1, k.2));
        }
        for o in co.fragments(r) {
            if seen.insert((k.0, k.1, o)) {
                out.push((k.0.to_string(), k.1, o));
            }
        }
    }
    out
}

/// `out` without the rows a route moved, and the records whose rows all moved (with their
/// fragments' offsets).
fn without_moved(
    out: RecordBatch,
    moved: &[bool],
) -> Result<(RecordBatch, Vec<RecordKey>), ArrowError> {
    let mut moved_offsets = Vec::new();
    if !moved.iter().any(|m| *m) {
        return Ok((out, moved_offsets));
    }
    if let Some(co) = Coords::of(&out) {
        let staying: HashSet<(&str, i32, i64)> = (0..out.num_rows())
            .filter(|&i| !moved[i])
            .map(|i| co.key(i))
            .collect();
        let mut seen = HashSet::new();
        for i in (0..out.num_rows()).filter(|&i| moved[i]) {
            let k = co.key(i);
            if !staying.contains(&k) && seen.insert(k) {
                moved_offsets.push((k.0.to_string(), k.1, k.2));
                for o in co.fragments(i) {
                    if seen.insert((k.0, k.1, o)) {
                        moved_offsets.push((k.0.to_string(), k.1, o));
                    }
                }
            }
        }
    }
    let keep: BooleanArray = moved.iter().map(|m| Some(!m)).collect();
    Ok((filter_record_batch(&out, &keep)?, moved_offsets))
}
