//! Errors of the lake code. Each variant names the table (and its URL), the commit version or
//! the object path it is about, so a failure in a nightly job names what to look at. URLs are
//! kept as strings and sources boxed, so that a `Result<_, LakeError>` stays small. The stage
//! crates wrap it into their own error type (`ArchiveError::Lake`, a DataFusion error in
//! `loglake query`).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LakeError {
    /// A table or lake location that is not a URL or a usable local path.
    #[error("table location {location}: {reason}")]
    Location { location: String, reason: String },

    /// A storage option that would replace put-if-absent commits (DESIGN.md I1).
    #[error(
        "storage option {key}: AWS_S3_ALLOW_UNSAFE_RENAME / AWS_S3_LOCKING_PROVIDER are not supported: loglake commits with put-if-absent only"
    )]
    UnsafeStorageOption { key: String },

    #[error("Delta table {table} ({url}): {source}")]
    Delta {
        table: String,
        url: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    #[error("Delta table {table} ({url}): committing version {version}: {source}")]
    Commit {
        table: String,
        url: String,
        version: u64,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    #[error(
        "Delta table {table} ({url}): commit failed after {attempts} attempts (the last at version {version}): {reason}"
    )]
    CommitRetriesExhausted {
        table: String,
        url: String,
        version: u64,
        attempts: u32,
        reason: String,
    },

    /// An object-store call on one path of a table (upload, probe).
    #[error("Delta table {table} ({url}): {path}: {source}")]
    Store {
        table: String,
        url: String,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error("lake {url}: listing {path}: {source}")]
    List {
        url: String,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error(
        "table {table} ({url}) is partitioned by [{}], not [{}] as configured: a table keeps the \
         partition columns it was created with (configure those, or archive into a new table)",
        found.join(", "),
        configured.join(", ")
    )]
    PartitionColumns {
        table: String,
        url: String,
        found: Vec<String>,
        configured: Vec<String>,
    },

    #[error(
        "table {table} ({url}) lacks the NOT NULL column {column} of loglake's schema; it cannot \
         be added to existing data: archive into a new table"
    )]
    NotNullColumn {
        table: String,
        url: String,
        column: String,
    },

    #[error(
        "{url}: the S3 store accepted a second If-None-Match create of the same object, so it does not enforce put-if-absent; \
         concurrent Delta commits could be lost. Use a store that does (AWS S3, MinIO, moto), or pass --allow-unsafe-store \
         if exactly one writer ever touches these tables."
    )]
    PutIfAbsentNotEnforced { url: String },

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
