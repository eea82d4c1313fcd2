//! Where an export writes: a local folder or an object store prefix (S3), behind one small API
//! of whole-object puts, gets, listings, deletes and renames, paths relative to the root.
//!
//! Local folders are written with `std::fs` (on the blocking pool): a file is written to a
//! hidden `.<name>.<uuid>.tmp` beside it and renamed, so a killed export leaves only hidden
//! files (which Spark, Hive and ML loaders skip) and the next export's clean-up, which lists
//! every file, hidden ones included, removes them. Object stores get a single PUT (multipart
//! beyond 10 MiB), which is atomic: an interrupted upload leaves no object.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::ExportError;

/// An object below the root: its path relative to the root (`/`-separated) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub rel: String,
    pub size: u64,
}

enum Backend {
    Local(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
    },
}

/// The root an export writes under.
pub struct Target {
    url: Url,
    backend: Backend,
}

fn blocking_err(e: tokio::task::JoinError) -> ExportError {
    ExportError::Internal(format!("blocking task failed: {e}"))
}

impl Target {
    /// Opens `location` (a URL or a local path; nothing is created yet).
    pub fn open(
        location: &str,
        storage_options: &HashMap<String, String>,
    ) -> Result<Target, ExportError> {
        loglake_lake::register_object_stores();
        let url = loglake_lake::location_url(location, false)?;
        Self::from_url(url, storage_options)
    }

    /// Opens the root at `url`.
    pub fn from_url(
        url: Url,
        storage_options: &HashMap<String, String>,
    ) -> Result<Target, ExportError> {
        let mut url = url;
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let backend = if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| ExportError::Usage(format!("target {url}: not a local path")))?;
            Backend::Local(dir)
        } else {
            let (store, prefix) = loglake_lake::object_store_for(&url, storage_options)?;
            Backend::Store { store, prefix }
        };
        Ok(Target { url, backend })
    }

    /// The root's URL (ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL of `rel` below the root.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}{rel}", self.url)
    }

    fn local(root: &Path, rel: &str) -> PathBuf {
        rel.split('/').fold(root.to_path_buf(), |p, s| p.join(s))
    }

    fn obj(prefix: &ObjPath, rel: &str) -> Result<ObjPath, ExportError> {
        let full = if prefix.as_ref().is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", prefix.as_ref())
        };
        ObjPath::parse(&full).map_err(|e| ExportError::store("naming", &full, e))
    }

    /// Writes `rel` whole (replacing it).
    pub async fn put(&self, rel: &str, data: Bytes) -> Result<(), ExportError> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::local(root, rel);
                tokio::task::spawn_blocking(move || write_local(&path, &data))
                    .await
                    .map_err(blocking_err)?
            }
            Backend::Store { store, prefix } => {
                let path = Self::obj(prefix, rel)?;
                let mut w = object_store::buffered::BufWriter::with_capacity(
                    Arc::clone(store),
                    path.clone(),
                    10 << 20,
                );
                use tokio::io::AsyncWriteExt;
                let res = async {
                    w.write_all(&data).await?;
                    w.shutdown().await
                }
                .await;
                if let Err(e) = res {
                    let _ = w.abort().await;
                    return Err(ExportError::store("writing", self.url_of(rel), e));
                }
                Ok(())
            }
        }
    }

    /// Reads `rel`; `None` when it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, ExportError> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::local(root, rel);
                let shown = self.url_of(rel);
                tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(ExportError::store("reading", shown, e)),
                })
                .await
                .map_err(blocking_err)?
            }
            Backend::Store { store, prefix } => {
                let path = Self::obj(prefix, rel)?;
                match store.get(&path).await {
                    Ok(r) => {
                        Ok(Some(r.bytes().await.map_err(|e| {
                            ExportError::store("reading", self.url_of(rel), e)
                        })?))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(ExportError::store("reading", self.url_of(rel), e)),
                }
            }
        }
    }

    /// Every object below `rel_prefix` (`""`: the whole root), hidden and temporary files
    /// included, sorted by path.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<Listed>, ExportError> {
        let mut out = match &self.backend {
            Backend::Local(root) => {
                let base = if rel_prefix.is_empty() {
                    root.clone()
                } else {
                    Self::local(root, rel_prefix.trim_end_matches('/'))
                };
                let root = root.clone();
                let shown = self.url_of(rel_prefix);
                tokio::task::spawn_blocking(move || list_local(&root, &base))
                    .await
                    .map_err(blocking_err)?
                    .map_err(|e| ExportError::store("listing", shown, e))?
            }
            Backend::Store { store, prefix } => {
                let p = if rel_prefix.is_empty() {
                    prefix.clone()
                } else {
                    Self::obj(prefix, rel_prefix.trim_end_matches('/'))?
                };
                let metas: Vec<_> = store
                    .list(Some(&p))
                    .try_collect()
                    .await
                    .map_err(|e| ExportError::store("listing", self.url_of(rel_prefix), e))?;
                let base = prefix.as_ref();
                metas
                    .into_iter()
                    .map(|m| {
                        let full = m.location.as_ref();
                        let rel = if base.is_empty() {
                            full
                        } else {
                            full.strip_prefix(base)
                                .unwrap_or(full)
                                .trim_start_matches('/')
                        };
                        Listed {
                            rel: rel.to_string(),
                            size: m.size,
                        }
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// Deletes `rel` (nothing when it does not exist).
    pub async fn delete(&self, rel: &str) -> Result<(), ExportError> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::local(root, rel);
                let shown = self.url_of(rel);
                tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
                    Ok(()) => {
                        // an emptied partition folder goes too (Spark would list it)
                        if let Some(parent) = path.parent() {
                            let _ = std::fs::remove_dir(parent);
                        }
                        Ok(())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(ExportError::store("deleting", shown, e)),
                })
                .await
                .map_err(blocking_err)?
            }
            Backend::Store { store, prefix } => {
                let path = Self::obj(prefix, rel)?;
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(ExportError::store("deleting", self.url_of(rel), e)),
                }
            }
        }
    }

    /// Moves `from` to `to` (replacing `to`): a rename on a local folder, a copy and a delete
    /// on an object store.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ExportError> {
        match &self.backend {
            Backend::Local(root) => {
                let (a, b) = (Self::local(root, from), Self::local(root, to));
                let shown = self.url_of(to);
                tokio::task::spawn_blocking(move || {
                    if let Some(parent) = b.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::rename(&a, &b)
                })
                .await
                .map_err(blocking_err)?
                .map_err(|e| ExportError::store("renaming to", shown, e))
            }
            Backend::Store { store, prefix } => {
                let (a, b) = (Self::obj(prefix, from)?, Self::obj(prefix, to)?);
                store
                    .copy(&a, &b)
                    .await
                    .map_err(|e| ExportError::store("copying to", self.url_of(to), e))?;
                self.delete(from).await
            }
        }
    }
}

/// Writes `data` to a hidden temporary file beside `path`, syncs it and renames it over `path`.
fn write_local(path: &Path, data: &[u8]) -> Result<(), ExportError> {
    use std::io::Write;
    let shown = path.display().to_string();
    let err = |e: std::io::Error| ExportError::store("writing", &shown, e);
    let dir = path
        .parent()
        .ok_or_else(|| ExportError::store("writing", &shown, "no parent folder"))?;
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

fn list_local(root: &Path, base: &Path) -> std::io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let ft = entry.file_type()?;
            let p = entry.path();
            if ft.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(Listed {
                    rel: rel.join("/"),
                    size: entry.metadata()?.len(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_puts_lists_renames_and_deletes() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = Target::open(&dir.path().display().to_string(), &HashMap::new()).expect("open");
        assert!(t.list("").await.expect("list").is_empty());
        t.put("dt=2024-05-01/hour=1/a.parquet", Bytes::from_static(b"abc"))
            .await
            .expect("put");
        t.put("dt=2024-05-01/_SUCCESS", Bytes::new())
            .await
            .expect("put");
        // a killed writer's leftover is listed (and so removed by the clean-up)
        std::fs::write(dir.path().join("dt=2024-05-01/hour=1/.x.tmp"), b"zz").expect("w");
        let l = t.list("dt=2024-05-01/").await.expect("list");
        let names: Vec<&str> = l.iter().map(|x| x.rel.as_str()).collect();
        assert_eq!(
            names,
            [
                "dt=2024-05-01/_SUCCESS",
                "dt=2024-05-01/hour=1/.x.tmp",
                "dt=2024-05-01/hour=1/a.parquet"
            ]
        );
        assert_eq!(l[2].size, 3);
        assert_eq!(
            t.get("dt=2024-05-01/hour=1/a.parquet")
                .await
                .expect("get")
                .as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(t.get("nope").await.expect("get"), None);
        t.rename("dt=2024-05-01/hour=1/a.parquet", "data/b.parquet")
            .await
            .expect("rename");
        t.delete("dt=2024-05-01/hour=1/.x.tmp")
            .await
            .expect("delete");
        t.delete("missing").await.expect("delete missing");
        assert!(!dir.path().join("dt=2024-05-01/hour=1").exists());
        let names: Vec<String> = t
            .list("")
            .await
            .expect("list")
            .into_iter()
            .map(|l| l.rel)
            .collect();
        assert_eq!(names, ["data/b.parquet", "dt=2024-05-01/_SUCCESS"]);
    }
}
