use std::path::PathBuf;

/// Errors of this crate (decoding problems of single records are [`crate::RecordError`]s, not
/// these).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown decoder `{name}` (known: {known})")]
    UnknownDecoder { name: String, known: String },

    #[error("cannot read table file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML for a table definition (unknown key, wrong type, missing key);
    /// `message` is toml's, which names the key and shows the line.
    #[error("invalid table file {path}: {message}")]
    TableParse { path: PathBuf, message: String },

    /// The file parses but a value is not acceptable.
    #[error("invalid table file {path}: key `{key}`: {reason}")]
    TableInvalid {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error("duplicate table name `{name}` in {first} and {second}")]
    DuplicateTable {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
