//! Reading and writing one table's ledger objects and commit files in its object store.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::Value;
use url::Url;

use super::{
    EtlOffsets, LEDGER_PREFIX, LOG_PREFIX, LedgerEntry, READS, commit_file_offsets, version_gaps,
};
use crate::error::LakeError;

/// The store of one table, with its name and URL for errors.
pub(super) struct Ledger<'a> {
    pub(super) store: &'a dyn ObjectStore,
    pub(super) table: &'a str,
    pub(super) url: &'a Url,
}

impl Ledger<'_> {
    pub(super) fn store_error(&self, path: &ObjPath, source: object_store::Error) -> LakeError {
        LakeError::Store {
            table: self.table.to_string(),
            url: self.url.to_string(),
            path: path.to_string(),
            source: Box::new(source),
        }
        .classified(self.url.as_str())
    }

    pub(super) fn bad(&self, path: &ObjPath, reason: String) -> LakeError {
        LakeError::EtlLedger {
            table: self.table.to_string(),
            url: self.url.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    /// The ledger objects' first versions and paths, in version order.
    pub(super) async fn keys(&self) -> Result<Vec<(u64, ObjPath)>, LakeError> {
        let prefix = ObjPath::from(LEDGER_PREFIX);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(&prefix, e))?;
        let mut keys: Vec<(u64, ObjPath)> = listed
            .into_iter()
            .filter_map(|m| LedgerEntry::from_of(&m.location).map(|v| (v, m.location)))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn get(&self, path: &ObjPath) -> Result<Option<Vec<u8>>, LakeError> {
        match self.store.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.store_error(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(path, e)),
        }
    }

    pub(super) async fn entry(&self, from: u64, path: &ObjPath) -> Result<LedgerEntry, LakeError> {
        let bytes = self
            .get(path)
            .await?
            .ok_or_else(|| self.bad(path, "listed but gone: a ledger object was deleted".into()))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| self.bad(path, format!("not JSON: {e}")))?;
        let e = LedgerEntry::from_json(&v).map_err(|r| self.bad(path, r))?;
        if e.from != from {
            return Err(self.bad(path, format!("holds versions from {} on", e.from)));
        }
        Ok(e)
    }

    /// The last version of the last ledger object (`None`: no object yet).
    pub(super) async fn folded_to(&self) -> Result<Option<u64>, LakeError> {
        let keys = self.keys().await?;
        Ok(match keys.last() {
            Some((v, p)) => Some(self.entry(*v, p).await?.to),
            None => None,
        })
    }

    /// Writes `entry` as a new object (put-if-absent): its path, or `None` when another fold
    /// wrote an object with the same first version first.
    pub(super) async fn create(&self, entry: &LedgerEntry) -> Result<Option<ObjPath>, LakeError> {
        let path = LedgerEntry::path(entry.from);
        let body =
            serde_json::to_vec(&entry.to_json()).map_err(|e| self.bad(&path, e.to_string()))?;
        let put = self
            .store
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match put {
            Ok(_) => Ok(Some(path)),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(self.store_error(&path, e)),
        }
    }

    /// Every ledger object, in version order.
    pub(super) async fn entries(
        &self,
        keys: &[(u64, ObjPath)],
    ) -> Result<Vec<LedgerEntry>, LakeError> {
        futures::stream::iter(keys.iter().map(|(v, p)| self.entry(*v, p)))
            .buffered(READS)
            .try_collect()
            .await
    }

    /// The versions in `from..=to` that have a commit file.
    async fn log_versions(&self, from: u64, to: u64) -> Result<BTreeSet<u64>, LakeError> {
        let prefix = ObjPath::from(LOG_PREFIX);
        // every name of version ≥ from sorts after `<from:020>` (and those below before it)
        let offset = ObjPath::from(format!("{LOG_PREFIX}/{from:020}"));
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list_with_offset(Some(&prefix), &offset)
            .try_collect()
            .await
            .map_err(|e| self.store_error(&prefix, e))?;
        Ok(listed
            .iter()
            .filter_map(|m| commit_version(&m.location))
            .filter(|v| (from..=to).contains(v))
            .collect())
    }

    /// The offsets of the commits `versions` (their lists concatenated) and the versions whose
    /// file vanished since it was listed.
    async fn commits(&self, versions: &BTreeSet<u64>) -> Result<(EtlOffsets, Vec<u64>), LakeError> {
        let read = |v: u64| async move {
            let path = ObjPath::from(format!("{LOG_PREFIX}/{v:020}.json"));
            let Some(bytes) = self.get(&path).await? else {
                return Ok::<_, LakeError>((v, None));
            };
            let offsets = commit_file_offsets(&bytes)
                .map_err(|r| self.bad(&path, format!("version {v}: {r}")))?;
            Ok((v, Some(offsets)))
        };
        let read: Vec<(u64, Option<EtlOffsets>)> =
            futures::stream::iter(versions.iter().map(|&v| read(v)))
                .buffered(READS)
                .try_collect()
                .await?;
        let mut out = EtlOffsets::default();
        let mut vanished = Vec::new();
        for (v, o) in read {
            match o {
                Some(o) => out.extend(o),
                None => vanished.push(v),
            }
        }
        Ok((out, vanished))
    }

    /// The offsets of the commit files in `from..=to` and the versions without one.
    pub(super) async fn log_range(
        &self,
        from: u64,
        to: u64,
    ) -> Result<(EtlOffsets, Vec<(u64, u64)>), LakeError> {
        let mut present = self.log_versions(from, to).await?;
        let (offsets, vanished) = self.commits(&present).await?;
        for v in vanished {
            present.remove(&v);
        }
        Ok((offsets, version_gaps(from, to, &present)))
    }
}

/// The version of a commit file's path (`_delta_log/<20 digits>.json`).
fn commit_version(path: &ObjPath) -> Option<u64> {
    let name = path.filename()?;
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}
