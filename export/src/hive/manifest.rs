//! The records of a Hive export: the root marker, the day's manifest and its partition and
//! file entries.

use serde::{Deserialize, Serialize};

/// The root marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootMarker {
    pub kind: String,
    pub table: String,
    pub source_url: String,
}

/// One exported file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the export root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// One Hive partition of the day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// Values of the partition columns (NULL: Hive's default partition).
    pub values: Vec<Option<String>>,
    /// Folder relative to the export root.
    pub path: String,
    pub rows: u64,
    pub files: Vec<FileEntry>,
}

/// `dt=<date>/_manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HiveManifest {
    pub format: String,
    pub table: String,
    pub source_url: String,
    pub source_version: i64,
    pub date: String,
    pub attempt: String,
    pub hive_db: String,
    pub hive_table: String,
    pub partition_columns: Vec<String>,
    pub columns: Vec<(String, String)>,
    pub rows: u64,
    pub partitions: Vec<PartitionEntry>,
    /// The last attempt added the rows of the versions after this one (`--from-version`).
    #[serde(default)]
    pub from_version: Option<i64>,
}
