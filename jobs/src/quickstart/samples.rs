//! The quickstart's sample logs: real logs written by others (`tests/data/corpus`, built into
//! the binary with their license notes), as the records the embedded Kafka is fed.

use std::path::{Path, PathBuf};

use crate::JobError;

/// The repository's `tests/data/corpus` (1.3 MB, license notes included), so that an installed
/// or containerised binary runs the quickstart without a checkout.
static CORPUS: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../tests/data/corpus");

/// Where the samples come from: a folder, or the copy in the binary.
pub(super) enum Corpus<'a> {
    Folder(&'a Path),
    BuiltIn,
}

impl Corpus<'_> {
    /// The files under `sub` whose extension is `ext`, sorted by path, with their bytes.
    fn files(&self, sub: &str, ext: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, JobError> {
        match self {
            Corpus::Folder(dir) => files(&dir.join(sub), ext)?
                .into_iter()
                .map(|p| {
                    let bytes = read_file(&p)?;
                    Ok((p, bytes))
                })
                .collect(),
            Corpus::BuiltIn => {
                let dir = CORPUS.get_dir(sub).ok_or_else(|| {
                    JobError::Config(format!("built-in samples: no folder {sub}"))
                })?;
                let mut out = Vec::new();
                let mut stack = vec![dir];
                while let Some(d) = stack.pop() {
                    stack.extend(d.dirs());
                    for f in d.files() {
                        if f.path().extension().is_some_and(|x| x == ext) {
                            out.push((f.path().to_path_buf(), f.contents().to_vec()));
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    fn file(&self, path: &str) -> Result<Vec<u8>, JobError> {
        match self {
            Corpus::Folder(dir) => read_file(&dir.join(path)),
            Corpus::BuiltIn => CORPUS
                .get_file(path)
                .map(|f| f.contents().to_vec())
                .ok_or_else(|| JobError::Config(format!("built-in samples: no file {path}"))),
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, JobError> {
    std::fs::read(path)
        .map_err(|e| JobError::Config(format!("reading sample {}: {e}", path.display())))
}

/// One record to produce: its topic, payload and (container logs) kubelet log path.
pub(super) struct Sample {
    pub(super) topic: &'static str,
    pub(super) payload: Vec<u8>,
    pub(super) path: Option<String>,
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, JobError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| JobError::Config(format!("reading {}: {e}", d.display())))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `<ns>_<pod>_<container>.log` (Fluent Bit's test naming) → a kubelet path
/// `/var/log/containers/<pod>_<ns>_<container>-<id>.log`.
fn kubelet_path(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let mut it = stem.splitn(3, '_');
    let (ns, pod, container) = (it.next()?, it.next()?, it.next()?);
    Some(format!(
        "/var/log/containers/{pod}_{ns}_{container}-{:064x}.log",
        stem.len()
    ))
}

/// Every sample record of the corpus, by topic in a fixed order.
pub(super) fn load_samples(corpus: &Corpus<'_>) -> Result<Vec<Sample>, JobError> {
    let mut out = Vec::new();
    for (f, bytes) in corpus.files("fluent-bit/tests/runtime/data/kubernetes/log", "log")? {
        let path = kubelet_path(&f);
        for line in lines(&bytes) {
            out.push(Sample {
                topic: "k8s-container-logs",
                payload: line,
                path: path.clone(),
            });
        }
    }
    for line in lines(&corpus.file("beats/docker_corrupted.log")?) {
        out.push(Sample {
            topic: "k8s-container-logs",
            payload: line,
            path: Some(format!(
                "/var/log/containers/shop-web-7d9f_shop_nginx-{:064x}.log",
                7
            )),
        });
    }
    for (_, bytes) in corpus.files("falco-k8s-audit/k8s_audit", "json")? {
        for line in lines(&bytes) {
            out.push(Sample {
                topic: "k8s-audit",
                payload: line,
                path: None,
            });
        }
    }
    for line in lines(&corpus.file("beats/nginx_access_test.log")?) {
        out.push(Sample {
            topic: "ingress-access",
            payload: line,
            path: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_samples_are_the_repository_corpus() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/corpus"));
        let key = |s: &Sample| (s.topic, s.payload.clone(), s.path.clone());
        let from_folder: Vec<_> = load_samples(&Corpus::Folder(dir))
            .expect("folder samples")
            .iter()
            .map(key)
            .collect();
        let built_in: Vec<_> = load_samples(&Corpus::BuiltIn)
            .expect("built-in samples")
            .iter()
            .map(key)
            .collect();
        assert_eq!(from_folder.len(), 175);
        assert_eq!(built_in, from_folder);
        let per_topic = |t: &str| built_in.iter().filter(|s| s.0 == t).count();
        assert_eq!(
            (
                per_topic("k8s-container-logs"),
                per_topic("k8s-audit"),
                per_topic("ingress-access")
            ),
            (116, 52, 7)
        );
        // the license notes travel with them
        for note in [
            "fluent-bit/SOURCE.md",
            "fluent-bit/LICENSE",
            "beats/SOURCE.md",
            "falco-k8s-audit/SOURCE.md",
        ] {
            assert!(CORPUS.get_file(note).is_some(), "{note} is not built in");
        }
    }
}
