//! `loglake archive` configuration: flags > `LOGLAKE_*` environment > TOML file > defaults.
//!
//! S3 settings come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`), which a
//! `[storage]` table in the file can override (`loglake_lake::storage`). Secrets are never
//! logged or printed.
//!
//! Where the parts are: [`flags`] (`ArchiveArgs`, the clap flags), [`file`] (`FileConfig`, the
//! TOML file), [`resolve`] (`ArchiveArgs::resolve` and its steps, into an
//! [`ArchiveConfig`](crate::ArchiveConfig)).

mod file;
mod flags;
mod resolve;

#[cfg(test)]
mod cli_tests;
#[cfg(test)]
mod tests;

pub use file::{FileConfig, SecretTable, read_file_config};
pub use flags::ArchiveArgs;
pub(crate) use flags::parse_kv;
pub use loglake_lake::units::{parse_bytes, parse_duration};
pub use resolve::single_table_partition_by;
