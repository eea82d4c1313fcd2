//! Storage options and object stores: one resolution for every stage.
//!
//! S3 settings come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, …);
//! overrides (the archiver's `[storage]` table) replace them key by key. A custom endpoint
//! (MinIO, moto, Ceph…) gets path-style addressing unless the options ask otherwise. The options
//! are passed unchanged to deltalake and object_store, which both understand these names.
//!
//! Writers also refuse `AWS_S3_ALLOW_UNSAFE_RENAME=true` and `AWS_S3_LOCKING_PROVIDER`
//! ([`check_commit_safety`]): commits on S3 rely on put-if-absent alone (DESIGN.md I1).

use std::collections::HashMap;
use std::sync::{Arc, Once};

use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use url::Url;

use crate::error::LakeError;

/// Storage options from `env` (only its `AWS_*` entries), overridden key by key by
/// `overrides`; with a custom `AWS_ENDPOINT_URL` and no `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`,
/// that one is set to `false` (path-style). Pure: [`storage_options`] passes the process
/// environment.
pub fn resolve_storage_options(
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    for (k, v) in overrides {
        out.insert(k.clone(), v.clone());
    }
    if out.contains_key("AWS_ENDPOINT_URL") && !out.contains_key("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
    {
        // Custom endpoints (MinIO, moto, Ceph…) want path-style addressing.
        out.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
    }
    out
}

/// The `AWS_*` variables of this process, overridden by `overrides` (see
/// [`resolve_storage_options`]). Readers use this as it is; writers also call
/// [`check_commit_safety`] (or use [`writer_storage_options`]).
pub fn storage_options(overrides: &HashMap<String, String>) -> HashMap<String, String> {
    resolve_storage_options(std::env::vars(), overrides)
}

/// Refuses options that would make deltalake commit through an unsafe rename or an external
/// lock instead of put-if-absent: `AWS_S3_ALLOW_UNSAFE_RENAME=true`, any
/// `AWS_S3_LOCKING_PROVIDER`.
pub fn check_commit_safety(options: &HashMap<String, String>) -> Result<(), LakeError> {
    if options
        .get("AWS_S3_ALLOW_UNSAFE_RENAME")
        .is_some_and(|v| v == "true")
    {
        return Err(LakeError::UnsafeStorageOption {
            key: "AWS_S3_ALLOW_UNSAFE_RENAME".into(),
        });
    }
    if options.contains_key("AWS_S3_LOCKING_PROVIDER") {
        return Err(LakeError::UnsafeStorageOption {
            key: "AWS_S3_LOCKING_PROVIDER".into(),
        });
    }
    Ok(())
}

/// [`storage_options`] for a stage that commits: refused when [`check_commit_safety`] refuses.
pub fn writer_storage_options(
    overrides: &HashMap<String, String>,
) -> Result<HashMap<String, String>, LakeError> {
    let options = storage_options(overrides);
    check_commit_safety(&options)?;
    Ok(options)
}

/// Registers deltalake's S3 support (once per process).
pub fn register_object_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

/// An object store for a URL (`s3://bucket/prefix`, `file:///…`) configured with `options`, and
/// the URL's path within it.
pub fn object_store_for(
    url: &Url,
    options: &HashMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, ObjPath), LakeError> {
    let opts: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let (store, path) =
        object_store::parse_url_opts(url, opts).map_err(|e| LakeError::Location {
            location: url.to_string(),
            reason: format!("no object store for it: {e}"),
        })?;
    Ok((Arc::from(store), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn aws_variables_are_taken_and_overridden_key_by_key() {
        let e = env(&[
            ("AWS_ENDPOINT_URL", "http://minio.env:9000"),
            ("AWS_REGION", "eu-env-1"),
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("HOME", "/root"),
            ("LOGLAKE_BROKERS", "k:9092"),
        ]);
        // the environment alone: only AWS_*, path-style for the custom endpoint
        let got = resolve_storage_options(e.clone(), &HashMap::new());
        assert_eq!(
            got,
            map(&[
                ("AWS_ENDPOINT_URL", "http://minio.env:9000"),
                ("AWS_REGION", "eu-env-1"),
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
            ])
        );
        // overrides win key by key; keys they do not name stay
        let got = resolve_storage_options(
            e.clone(),
            &map(&[
                ("AWS_REGION", "file-region"),
                ("AWS_SECRET_ACCESS_KEY", "file-secret"),
            ]),
        );
        assert_eq!(got["AWS_REGION"], "file-region");
        assert_eq!(got["AWS_SECRET_ACCESS_KEY"], "file-secret");
        assert_eq!(got["AWS_ACCESS_KEY_ID"], "AKIAENV");
        assert_eq!(got["AWS_ENDPOINT_URL"], "http://minio.env:9000");
        // an explicit addressing style is kept, from either side
        let got = resolve_storage_options(
            e.clone(),
            &map(&[("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true")]),
        );
        assert_eq!(got["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"], "true");
        let mut hosted = e.clone();
        hosted.push(("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "true".into()));
        let got = resolve_storage_options(hosted, &HashMap::new());
        assert_eq!(got["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"], "true");
        // an endpoint from the overrides alone also gets path-style
        let got = resolve_storage_options(
            Vec::new(),
            &map(&[("AWS_ENDPOINT_URL", "https://s3.file.example")]),
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"], "false");
        // no custom endpoint: addressing left to the default
        let got = resolve_storage_options(env(&[("AWS_REGION", "r")]), &HashMap::new());
        assert_eq!(got, map(&[("AWS_REGION", "r")]));
    }

    #[test]
    fn unsafe_rename_and_locking_providers_are_refused() {
        assert!(check_commit_safety(&map(&[("AWS_REGION", "r")])).is_ok());
        // only `true` turns the unsafe rename on
        assert!(check_commit_safety(&map(&[("AWS_S3_ALLOW_UNSAFE_RENAME", "false")])).is_ok());
        let e = check_commit_safety(&map(&[("AWS_S3_ALLOW_UNSAFE_RENAME", "true")]))
            .expect_err("unsafe rename");
        assert!(
            matches!(&e, LakeError::UnsafeStorageOption { key } if key == "AWS_S3_ALLOW_UNSAFE_RENAME"),
            "{e:?}"
        );
        assert!(e.to_string().contains("put-if-absent only"), "{e}");
        // any locking provider, whatever its value
        for v in ["dynamodb", ""] {
            let e = check_commit_safety(&map(&[("AWS_S3_LOCKING_PROVIDER", v)]))
                .expect_err("locking provider");
            assert!(e.to_string().contains("AWS_S3_LOCKING_PROVIDER"), "{e}");
        }
        // an override can bring one in too: the check runs on the resolved options
        let resolved = resolve_storage_options(
            env(&[("AWS_REGION", "r")]),
            &map(&[("AWS_S3_LOCKING_PROVIDER", "dynamodb")]),
        );
        assert!(check_commit_safety(&resolved).is_err());
    }

    #[test]
    fn object_stores_come_from_the_url_and_the_options() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = Url::from_directory_path(dir.path()).expect("url");
        let (_, path) = object_store_for(&url, &HashMap::new()).expect("local store");
        assert_eq!(format!("/{path}/"), url.path());
        let (_, path) = object_store_for(
            &Url::parse("s3://bucket/lake/logs").expect("url"),
            &map(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ALLOW_HTTP", "true"),
            ]),
        )
        .expect("s3 store");
        assert_eq!(path.as_ref(), "lake/logs");
    }
}
