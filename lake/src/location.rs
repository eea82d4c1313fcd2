//! Table and lake locations: a URL (`s3://bucket/prefix`, `file:///abs`) or a local path, and
//! the discovery of the Delta tables under a lake root.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use url::Url;

use crate::error::LakeError;
use crate::storage::object_store_for;

/// How deep below a lake root [`discover`] looks for `_delta_log` folders.
pub const MAX_DISCOVERY_DEPTH: usize = 6;

fn location_error(location: &str, reason: impl Into<String>) -> LakeError {
    LakeError::Location {
        location: location.to_string(),
        reason: reason.into(),
    }
}

/// A location as a URL: anything with `://` is parsed as a URL; a local path (relative ones
/// against the current directory) becomes a `file://` directory URL, canonical when it exists.
/// With `create`, a local path's directory is created first (a table a writer is about to
/// create); readers pass `false`.
pub fn location_url(location: &str, create: bool) -> Result<Url, LakeError> {
    if location.contains("://") {
        return Url::parse(location)
            .map_err(|e| location_error(location, format!("invalid URL: {e}")));
    }
    let path = Path::new(location);
    if create {
        std::fs::create_dir_all(path)
            .map_err(|e| location_error(location, format!("creating it: {e}")))?;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| location_error(location, format!("no current directory: {e}")))?
            .join(path)
    };
    let abs = abs.canonicalize().unwrap_or(abs);
    Url::from_directory_path(&abs).map_err(|_| location_error(location, "invalid path"))
}

/// The URL of a table a writer appends to (a local table's directory is created).
pub fn table_url(location: &str) -> Result<Url, LakeError> {
    location_url(location, true)
}

fn dir_url(mut u: Url) -> Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

/// Finds every Delta table (a folder holding `_delta_log/`) under `root`, at most
/// [`MAX_DISCOVERY_DEPTH`] folders down, skipping hidden (`.x`), `_x` and Hive partition
/// (`k=v`) folders. Returns name → URL, where the name is the table's folder name; when two
/// tables share a folder name both are named by their relative path with `/` replaced by `_`.
pub async fn discover(
    root: &Url,
    storage_options: &HashMap<String, String>,
) -> Result<BTreeMap<String, Url>, LakeError> {
    let root = dir_url(root.clone());
    let rels: Vec<String> = if root.scheme() == "file" {
        let base = root
            .to_file_path()
            .map_err(|_| location_error(root.as_str(), "invalid lake path"))?;
        tokio::task::spawn_blocking(move || discover_local(&base))
            .await
            .map_err(|e| location_error(root.as_str(), format!("discovery failed: {e}")))??
    } else {
        let (store, prefix) = object_store_for(&root, storage_options)?;
        discover_store(store.as_ref(), &root, &prefix).await?
    };
    let mut by_leaf: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rel in rels {
        let leaf = rel
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let leaf = if leaf.is_empty() {
            root_name(&root)
        } else {
            leaf
        };
        by_leaf.entry(leaf).or_default().push(rel);
    }
    let mut out = BTreeMap::new();
    for (leaf, rels) in by_leaf {
        for rel in &rels {
            let name = if rels.len() == 1 {
                leaf.clone()
            } else {
                rel.trim_end_matches('/').replace('/', "_")
            };
            let url = if rel.is_empty() {
                root.clone()
            } else {
                root.join(&format!("{}/", rel.trim_end_matches('/')))
                    .map_err(|e| location_error(rel, format!("bad table path: {e}")))?
            };
            out.insert(name, url);
        }
    }
    Ok(out)
}

fn root_name(root: &Url) -> String {
    root.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("lake")
        .to_string()
}

/// Hidden, `_delta_log`-like and Hive partition folders hold no tables.
fn may_hold_tables(name: &str) -> bool {
    !(name.starts_with('.') || name.starts_with('_') || name.contains('='))
}

fn discover_local(base: &Path) -> Result<Vec<String>, LakeError> {
    let mut out = Vec::new();
    let mut stack = vec![(base.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if dir.join("_delta_log").is_dir() {
            out.push(rel);
            continue;
        }
        if depth >= MAX_DISCOVERY_DEPTH {
            continue;
        }
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if depth == 0 => {
                return Err(location_error(
                    &dir.display().to_string(),
                    format!("cannot read lake: {e}"),
                ));
            }
            Err(_) => continue,
        };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().to_string();
            // a symlink to a folder is followed (a lake assembled from several disks or
            // checkouts), as DuckDB and datafusion-cli do; the depth limit bounds cycles
            let is_dir = ft.is_dir() || (ft.is_symlink() && entry.path().is_dir());
            if !is_dir || !may_hold_tables(&name) {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            stack.push((entry.path(), r, depth + 1));
        }
    }
    out.sort();
    Ok(out)
}

async fn discover_store(
    store: &dyn ObjectStore,
    root: &Url,
    prefix: &ObjPath,
) -> Result<Vec<String>, LakeError> {
    let mut out = Vec::new();
    let mut stack: Vec<(ObjPath, String, usize)> = vec![(prefix.clone(), String::new(), 0)];
    while let Some((p, rel, depth)) = stack.pop() {
        let listing = store
            .list_with_delimiter(Some(&p))
            .await
            .map_err(|source| LakeError::List {
                url: root.to_string(),
                path: p.to_string(),
                source: Box::new(source),
            })?;
        let children: Vec<ObjPath> = listing.common_prefixes;
        if children.iter().any(|c| c.filename() == Some("_delta_log")) {
            out.push(rel);
            continue;
        }
        if depth >= MAX_DISCOVERY_DEPTH {
            continue;
        }
        for c in children {
            let Some(name) = c.filename().map(str::to_string) else {
                continue;
            };
            if !may_hold_tables(&name) {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            stack.push((c, r, depth + 1));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_local_paths() {
        let u = location_url("s3://bucket/lake/logs", false).expect("url");
        assert_eq!(u.as_str(), "s3://bucket/lake/logs");
        let e = location_url("http://[::1", false).expect_err("bad URL");
        assert!(e.to_string().contains("http://[::1: invalid URL"), "{e}");
        let dir = tempfile::tempdir().expect("tmp");
        let t = dir.path().join("a/b");
        // a reader does not create it
        let u = location_url(&t.to_string_lossy(), false).expect("url");
        assert!(u.path().ends_with("/a/b/"), "{u}");
        assert!(!t.exists());
        // a writer does
        let u = table_url(&t.to_string_lossy()).expect("url");
        assert!(t.is_dir());
        assert_eq!(
            u,
            Url::from_directory_path(t.canonicalize().expect("canonical")).expect("url")
        );
    }

    #[tokio::test]
    async fn discovery_names_tables_by_folder_and_skips_partitions() {
        let dir = tempfile::tempdir().expect("tmp");
        for t in [
            "containers",
            "team_a/access",
            "team_b/access",
            "containers/dt=2024-01-01/nested", // inside a table: not looked at
            ".hidden/x",
            "_tmp/y",
        ] {
            std::fs::create_dir_all(dir.path().join(t).join("_delta_log")).expect("mkdir");
        }
        let root = location_url(&dir.path().to_string_lossy(), false).expect("url");
        let found = discover(&root, &HashMap::new()).await.expect("discover");
        let names: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(names, ["containers", "team_a_access", "team_b_access"]);
        assert!(found["team_a_access"].path().ends_with("/team_a/access/"));
        let e = discover(
            &Url::from_directory_path(dir.path().join("missing")).expect("url"),
            &HashMap::new(),
        )
        .await
        .expect_err("no lake");
        assert!(e.to_string().contains("cannot read lake"), "{e}");
    }
}
