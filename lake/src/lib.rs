//! # loglake-lake
//!
//! What every loglake stage that reads or writes the lake shares, so that the archiver, the
//! compactor and `loglake query` agree on it:
//!
//! - [`storage`]: storage options from the `AWS_*` variables and overrides, the refusal of
//!   unsafe-rename and locking-provider options (DESIGN.md I1), object stores;
//! - [`location`]: table and lake locations as URLs, discovery of the tables under a lake root;
//! - [`table`]: opening a Delta table, its txn offsets (`app_id`, DESIGN.md I2), the
//!   put-if-absent probe, additive schema evolution;
//! - [`sink`]: [`DeltaSink`], a table a stage appends to: create-or-open, upload, and the
//!   put-if-absent commit of files plus txn offsets with conflict detection (DESIGN.md I3);
//! - [`files`]: the Parquet writer properties of a table's files (encodings, statistics, page
//!   index, bloom filters);
//! - [`stats`]: Delta `add` actions with statistics from a written file's footer;
//! - [`etl_ledger`]: the offsets archive-time filters dropped or routes moved, folded out of the
//!   commit infos before log cleanup can delete them, and read back by `loglake audit`;
//! - [`telemetry`]: the process's metrics registry, health and `/metrics` + `/healthz` endpoint.
//!
//! Errors are [`LakeError`], naming the table, URL, version or path concerned.

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod error;
pub mod etl_ledger;
pub mod files;
pub mod location;
pub mod sink;
pub mod stats;
pub mod storage;
pub mod table;
pub mod telemetry;
pub mod units;

pub use error::{LakeError, access_problem};
pub use files::{FileSettings, table_writer_properties, writer_properties};
pub use location::{discover, location_url, table_url};
pub use sink::{CommitOutcome, DataFile, DeltaSink, OffsetAdvance};
pub use stats::{add_action, delta_stats};
pub use storage::{
    check_commit_safety, object_store_for, register_object_stores, storage_options,
    writer_storage_options,
};
pub use table::{app_id, check_put_if_absent, open_table, read_offsets, resume_app_id};
