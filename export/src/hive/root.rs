//! Claiming an export root: the marker that names a folder as a loglake export.

use bytes::Bytes;

use super::MARKER;
use super::manifest::RootMarker;
use crate::error::ExportError;
use crate::target::Target;

/// Checks that `target` is empty or an export of `kind` from `source_url`; writes the marker
/// of a new root.
pub async fn claim_root(
    target: &Target,
    kind: &'static str,
    table: &str,
    source_url: &str,
) -> Result<(), ExportError> {
    match target.get(MARKER).await? {
        Some(bytes) => {
            let m: RootMarker = serde_json::from_slice(&bytes).map_err(|e| {
                ExportError::Usage(format!(
                    "{}: not a loglake export marker: {e}",
                    target.url_of(MARKER)
                ))
            })?;
            if m.kind != kind || m.source_url != source_url {
                return Err(ExportError::Usage(format!(
                    "target {} is a {} export of {} ({}), not a {kind} export of {table} ({source_url})",
                    target.url(),
                    m.kind,
                    m.table,
                    m.source_url
                )));
            }
            Ok(())
        }
        None => {
            let existing = target.list("").await?;
            if let Some(first) = existing.first() {
                return Err(ExportError::NotAnExport {
                    target: target.url().to_string(),
                    kind,
                    found: format!("{} object(s), e.g. {}", existing.len(), first.rel),
                    marker: MARKER,
                });
            }
            let m = RootMarker {
                kind: kind.to_string(),
                table: table.to_string(),
                source_url: source_url.to_string(),
            };
            let json = serde_json::to_vec_pretty(&m)
                .map_err(|e| ExportError::Internal(format!("marker: {e}")))?;
            target.put(MARKER, Bytes::from(json)).await
        }
    }
}
