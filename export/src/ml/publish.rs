//! Putting an attempt's shards in place of the previous export's, then the dataset card and
//! the manifest (written last).

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::SchemaRef;
use bytes::Bytes;

use super::{
    Column, MANIFEST, MANIFEST_FORMAT, MlFormat, MlManifest, MlOptions, SplitEntry, TableVersion,
};
use crate::error::ExportError;
use crate::hive::FileEntry;
use crate::split::Split;
use crate::target::Target;

const TFRECORD_DOC: &str = "integers, booleans, dates (days since 1970-01-01) and timestamps \
    (microseconds since the epoch, UTC) -> int64_list; floats -> float_list (f32); strings and \
    binaries -> bytes_list of one value; lists -> the list of their elements; maps and structs -> \
    bytes_list of one JSON object; NULL -> an empty list";
const SPLIT_HASH_DOC: &str = "first 8 bytes of SHA-256 of the key's text (NULL: empty), \
    big-endian, >> 11, / 2^53; first split whose cumulative weight exceeds it";

/// Best effort after a failed pass 2: this attempt's shards go (they are hidden under `_tmp/`
/// anyway).
pub(super) async fn discard_attempt(target: &Target, attempt: &str) {
    if let Ok(objs) = target.list(&format!("_tmp/{attempt}/")).await {
        for o in objs {
            let _ = target.delete(&o.rel).await;
        }
    }
}

/// Each split's entry with its shards' final names (`data/<split>-<i>-of-<k>.<ext>`), and the
/// renames from `_tmp/` that put them there.
pub(super) fn final_names(
    splits: &[Split],
    per_split: &BTreeMap<String, Vec<FileEntry>>,
    format: MlFormat,
) -> (Vec<SplitEntry>, Vec<(String, String)>) {
    let mut entries = Vec::new();
    let mut renames = Vec::new();
    for s in splits {
        let tmp = per_split.get(&s.name).cloned().unwrap_or_default();
        let k = tmp.len();
        let mut shards = Vec::new();
        for (i, f) in tmp.into_iter().enumerate() {
            let final_name = format!("data/{}-{i:05}-of-{k:05}.{}", s.name, format.ext());
            renames.push((f.path.clone(), final_name.clone()));
            shards.push(FileEntry {
                path: final_name,
                ..f
            });
        }
        entries.push(SplitEntry {
            name: s.name.clone(),
            weight: s.weight,
            rows: shards.iter().map(|f| f.rows).sum(),
            shards,
        });
    }
    (entries, renames)
}

/// Deletes the previous export's shards that `renames` do not replace, renames this attempt's
/// shards into place and clears `_tmp/`.
pub(super) async fn replace_shards(
    target: &Target,
    renames: &[(String, String)],
) -> Result<(), ExportError> {
    let keep: BTreeSet<&str> = renames.iter().map(|(_, b)| b.as_str()).collect();
    for o in target.list("data/").await? {
        if !keep.contains(o.rel.as_str()) {
            target.delete(&o.rel).await?;
        }
    }
    for (from, to) in renames {
        target.rename(from, to).await?;
    }
    for o in target.list("_tmp/").await? {
        target.delete(&o.rel).await?;
    }
    Ok(())
}

/// The manifest of the rows of `query` (reading `tables`) in `splits`, ordered by `order`,
/// with the shards' `schema`.
pub(super) fn manifest(
    opts: &MlOptions,
    query: String,
    tables: BTreeMap<String, TableVersion>,
    order: Vec<String>,
    schema: &SchemaRef,
    splits: Vec<SplitEntry>,
) -> MlManifest {
    let columns: Vec<Column> = schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect();
    let rows: u64 = splits.iter().map(|s| s.rows).sum();
    MlManifest {
        format: MANIFEST_FORMAT.into(),
        query,
        tables,
        view: opts.view,
        file_format: opts.format,
        split_by: opts.split_by.clone(),
        split_hash: SPLIT_HASH_DOC.into(),
        order,
        schema: columns,
        rows,
        splits,
        tfrecord_features: (opts.format == MlFormat::Tfrecord).then(|| TFRECORD_DOC.to_string()),
    }
}

/// Writes the dataset card, then the manifest.
pub(super) async fn write_manifest(target: &Target, m: &MlManifest) -> Result<(), ExportError> {
    target
        .put("README.md", Bytes::from(dataset_card(m)))
        .await?;
    let json = serde_json::to_vec_pretty(m)
        .map_err(|e| ExportError::Internal(format!("manifest: {e}")))?;
    target.put(MANIFEST, Bytes::from(json)).await
}

/// The dataset card: a Hugging Face style README with the splits' files.
fn dataset_card(m: &MlManifest) -> String {
    let ext = match m.file_format {
        MlFormat::Parquet => "parquet",
        MlFormat::Tfrecord => "tfrecord",
    };
    let mut s = String::from("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for sp in &m.splits {
        s.push_str(&format!(
            "  - split: {}\n    path: data/{}-*.{ext}\n",
            sp.name, sp.name
        ));
    }
    s.push_str("---\n\n# loglake export\n\n");
    s.push_str(&format!("Rows of:\n\n```sql\n{}\n```\n\n", m.query));
    if !m.tables.is_empty() {
        s.push_str("Lake tables read (rebuild with `VERSION AS OF`):\n\n");
        for (n, t) in &m.tables {
            s.push_str(&format!("- `{n}` version {} ({})\n", t.version, t.url));
        }
        s.push('\n');
    }
    s.push_str("| split | weight | rows | shards |\n|---|---|---|---|\n");
    for sp in &m.splits {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            sp.name,
            sp.weight,
            sp.rows,
            sp.shards.len()
        ));
    }
    s.push_str(&format!(
        "\nSplit by {} (hash: {}).\nFormat: {ext}. `manifest.json` has the schema, the rows and SHA-256 of every shard.\n",
        m.split_by.as_deref().unwrap_or("(none: one split)"),
        m.split_hash
    ));
    if let Some(doc) = &m.tfrecord_features {
        s.push_str(&format!(
            "\nTFRecord shards hold one `tf.train.Example` per row: {doc}.\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, rows: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            rows,
            bytes: 10 * rows,
            sha256: format!("h{rows}"),
        }
    }

    #[test]
    fn shards_get_numbered_final_names_in_the_splits_order() {
        let splits = vec![
            Split {
                name: "train".into(),
                weight: 0.8,
            },
            Split {
                name: "test".into(),
                weight: 0.2,
            },
        ];
        let per_split = BTreeMap::from([
            (
                "train".to_string(),
                vec![
                    entry("_tmp/a/train-00000.parquet", 3),
                    entry("_tmp/a/train-00001.parquet", 2),
                ],
            ),
            (
                "test".to_string(),
                vec![entry("_tmp/a/test-00000.parquet", 1)],
            ),
        ]);
        let (entries, renames) = final_names(&splits, &per_split, MlFormat::Parquet);
        assert_eq!(
            renames,
            [
                (
                    "_tmp/a/train-00000.parquet".to_string(),
                    "data/train-00000-of-00002.parquet".to_string()
                ),
                (
                    "_tmp/a/train-00001.parquet".to_string(),
                    "data/train-00001-of-00002.parquet".to_string()
                ),
                (
                    "_tmp/a/test-00000.parquet".to_string(),
                    "data/test-00000-of-00001.parquet".to_string()
                ),
            ]
        );
        let got: Vec<(&str, u64, usize)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.rows, e.shards.len()))
            .collect();
        assert_eq!(got, [("train", 5, 2), ("test", 1, 1)]);
        assert_eq!(
            entries[0].shards[1],
            entry("data/train-00001-of-00002.parquet", 2)
        );
    }
}
