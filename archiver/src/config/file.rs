//! The configuration file (TOML). Its `[kafka]` and `[storage]` tables may hold credentials:
//! neither its `Debug` nor its errors ever show their values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::ArchiveError;

/// The TOML file form. Its `Debug` shows the keys of `kafka` and `storage` but not their values
/// (credentials).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub group: Option<String>,
    pub instance_id: Option<String>,
    pub stall_timeout: Option<String>,
    pub lake: Option<String>,
    pub tables_dir: Option<PathBuf>,
    pub dlq_table: Option<String>,
    pub target_file_size: Option<String>,
    pub roll_interval: Option<String>,
    pub memory_budget: Option<String>,
    pub poll_batch_bytes: Option<String>,
    pub watermark_timeout: Option<String>,
    pub late_after: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub cluster: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    /// librdkafka properties.
    #[serde(default, deserialize_with = "kafka_table")]
    pub kafka: SecretTable,
    /// Storage options (AWS_* names) overriding the environment.
    #[serde(default, deserialize_with = "storage_table")]
    pub storage: SecretTable,
    /// `[nightly]`: the settings of `loglake nightly` (read by the jobs crate; the archiver
    /// ignores them).
    #[serde(default)]
    pub nightly: Option<toml::Table>,
}

/// A `[kafka]` or `[storage]` table of the file: string values that may be credentials
/// (`sasl.password`, `AWS_SECRET_ACCESS_KEY`), so its `Debug` shows the keys only.
#[derive(Default)]
pub struct SecretTable(pub HashMap<String, String>);

impl std::fmt::Debug for SecretTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_set().entries(keys).finish()
    }
}

/// A `[table]` of string values whose type errors name the key but never the value: `[storage]`
/// and `[kafka]` hold credentials (`AWS_SECRET_ACCESS_KEY`, `sasl.password`), and serde's own
/// message would quote a non-string value (`invalid type: integer `1234``).
fn string_table<'de, D: Deserializer<'de>>(
    d: D,
    table: &str,
) -> Result<HashMap<String, String>, D::Error> {
    // Any value first: serde's error for a non-table (`kafka = "sasl.password=…"`) would quote it.
    let raw = match toml::Value::deserialize(d)? {
        toml::Value::Table(t) => t,
        other => {
            return Err(serde::de::Error::custom(format!(
                "`{table}` must be a table (`[{table}]` with `key = \"value\"` lines), found a value of type {}",
                other.type_str()
            )));
        }
    };
    let mut out = HashMap::with_capacity(raw.len());
    for (k, v) in raw {
        match v {
            toml::Value::String(s) => {
                out.insert(k, s);
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "[{table}] `{k}` must be a string (quote the value), found a value of type {}",
                    other.type_str()
                )));
            }
        }
    }
    Ok(out)
}

fn kafka_table<'de, D: Deserializer<'de>>(d: D) -> Result<SecretTable, D::Error> {
    string_table(d, "kafka").map(SecretTable)
}

fn storage_table<'de, D: Deserializer<'de>>(d: D) -> Result<SecretTable, D::Error> {
    string_table(d, "storage").map(SecretTable)
}

/// Reads the configuration file. Errors name the file, line, column and key but, unlike toml's
/// own rendering, do not quote the line: it may hold a credential.
pub fn read_file_config(path: &Path) -> Result<FileConfig, ArchiveError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ArchiveError::Config(format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // A syntax error may point into a (multi-line) string value; a type error of a
        // well-formed file points at a value, which starts on its key's line.
        let well_formed = toml::from_str::<toml::Table>(&text).is_ok();
        let at = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| {
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let line = before.matches('\n').count() + 1;
                let column = before[line_start..].chars().count() + 1;
                // The key of the line (`key = value`), never its value.
                let key = text[line_start..]
                    .lines()
                    .next()
                    .filter(|_| well_formed)
                    .and_then(|l| l.split_once('='))
                    .map(|(k, _)| k.trim())
                    .filter(|k| !k.is_empty())
                    .map(|k| format!(" (`{k}`)"))
                    .unwrap_or_default();
                format!(" line {line}, column {column}{key}:")
            })
            .unwrap_or_default();
        ArchiveError::Config(format!(
            "{}:{at} {}",
            path.display(),
            e.message().trim_end()
        ))
    })
}
