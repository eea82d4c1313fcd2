//! Errors of the lake code. Each variant names the table (and its URL), the commit version or
//! the object path it is about, so a failure in a nightly job names what to look at. URLs are
//! kept as strings and sources boxed, so that a `Result<_, LakeError>` stays small. The stage
//! crates wrap it into their own error type (`ArchiveError::Lake`, a DataFusion error in
//! `loglake query`).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LakeError {
    /// A table or lake location that is not a URL or a usable local path.
    #[error("table location {location}: {reason}")]
    Location { location: String, reason: String },

    /// A storage option that would replace put-if-absent commits (DESIGN.md I1).
    #[error(
        "storage option {key}: AWS_S3_ALLOW_UNSAFE_RENAME / AWS_S3_LOCKING_PROVIDER are not supported: loglake commits with put-if-absent only"
    )]
    UnsafeStorageOption { key: String },

    #[error("Delta table {table} ({url}): {source}")]
    Delta {
        table: String,
        url: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    #[error("Delta table {table} ({url}): committing version {version}: {source}")]
    Commit {
        table: String,
        url: String,
        version: u64,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    #[error(
        "Delta table {table} ({url}): commit failed after {attempts} attempts (the last at version {version}): {reason}"
    )]
    CommitRetriesExhausted {
        table: String,
        url: String,
        version: u64,
        attempts: u32,
        reason: String,
    },

    /// An object-store call on one path of a table (upload, probe).
    #[error("Delta table {table} ({url}): {path}: {source}")]
    Store {
        table: String,
        url: String,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// A ledger object or commit file the ETL offsets ledger cannot use (`etl_ledger`).
    #[error("Delta table {table} ({url}): ETL offsets ledger: {path}: {reason}")]
    EtlLedger {
        table: String,
        url: String,
        path: String,
        reason: String,
    },

    #[error("lake {url}: listing {path}: {source}")]
    List {
        url: String,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error(
        "table {table} ({url}) is partitioned by [{}], not [{}] as configured: a table keeps the \
         partition columns it was created with (configure those, or archive into a new table)",
        found.join(", "),
        configured.join(", ")
    )]
    PartitionColumns {
        table: String,
        url: String,
        found: Vec<String>,
        configured: Vec<String>,
    },

    #[error(
        "table {table} ({url}) lacks the NOT NULL column {column} of loglake's schema; it cannot \
         be added to existing data: archive into a new table"
    )]
    NotNullColumn {
        table: String,
        url: String,
        column: String,
    },

    #[error(
        "{url}: the S3 store accepted a second If-None-Match create of the same object, so it does not enforce put-if-absent; \
         concurrent Delta commits could be lost. Use a store that does (AWS S3, MinIO, moto), or pass --allow-unsafe-store \
         if exactly one writer ever touches these tables."
    )]
    PutIfAbsentNotEnforced { url: String },

    /// The store refused or could not be reached for a reason the operator must fix: missing
    /// or wrong credentials, no such bucket, an unreachable endpoint ([`access_problem`]).
    #[error("{url}: {problem}: {hint} ({detail})")]
    StoreAccess {
        url: String,
        problem: &'static str,
        hint: &'static str,
        detail: String,
    },

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl LakeError {
    /// Whether retrying cannot help: the configuration (location, storage options, credentials,
    /// bucket, endpoint, table layout) must change. Stages map it to exit code 2.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            LakeError::Location { .. }
                | LakeError::UnsafeStorageOption { .. }
                | LakeError::PartitionColumns { .. }
                | LakeError::NotNullColumn { .. }
                | LakeError::PutIfAbsentNotEnforced { .. }
                | LakeError::StoreAccess { .. }
        )
    }

    /// `self`, or a [`LakeError::StoreAccess`] when its text shows an access problem.
    pub fn classified(self, url: &str) -> Self {
        if matches!(self, LakeError::StoreAccess { .. }) {
            return self;
        }
        let text = self.to_string();
        match access_problem(&text) {
            Some((problem, hint)) => LakeError::StoreAccess {
                url: url.to_string(),
                problem,
                hint,
                detail: text,
            },
            None => self,
        }
    }
}

/// What an object-store error's text says is wrong, and what to set or check: credentials the
/// AWS chain could not find or the store rejected, a bucket that does not exist, an endpoint
/// that does not answer. `None` for anything else (a retry may help).
pub fn access_problem(text: &str) -> Option<(&'static str, &'static str)> {
    let t = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if has(&[
        "loading credentials",
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
        "expiredtoken",
        "invalidtoken",
        "no credentials",
    ]) {
        Some((
            "no usable S3 credentials",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or a web identity \
             token: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), and AWS_REGION; for MinIO or \
             another S3-compatible store also AWS_ENDPOINT_URL",
        ))
    } else if has(&[
        "nosuchbucket",
        "bucket does not exist",
        "specified bucket does not exist",
    ]) {
        Some((
            "the bucket does not exist",
            "create it, or check the bucket name in the URL and AWS_ENDPOINT_URL",
        ))
    } else if has(&[
        "connection refused",
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "error trying to connect",
        "tcp connect error",
    ]) {
        Some((
            "the S3 endpoint cannot be reached",
            "check AWS_ENDPOINT_URL (or the [storage] section of lake.toml) and the network",
        ))
    } else if has(&["accessdenied", "access denied", "403 forbidden"]) {
        Some((
            "access denied by the store",
            "check that the credentials may read and write this bucket and prefix",
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_problems_are_named_and_are_configuration_errors() {
        let e = LakeError::Location {
            location: "x".into(),
            reason: "Kernel error: Error interacting with object store: Operation not \
                     supported: an error occurred while loading credentials"
                .into(),
        }
        .classified("s3://bucket/x");
        let text = e.to_string();
        assert!(
            text.starts_with("s3://bucket/x: no usable S3 credentials: set AWS_ACCESS_KEY_ID"),
            "{text}"
        );
        assert!(e.is_configuration());
        assert_eq!(
            access_problem("Error performing PUT http://localhost:1/b/k: tcp connect error: Connection refused (os error 111)")
                .map(|p| p.0),
            Some("the S3 endpoint cannot be reached")
        );
        assert_eq!(
            access_problem("<Code>NoSuchBucket</Code>").map(|p| p.0),
            Some("the bucket does not exist")
        );
        assert_eq!(
            access_problem("Generic S3 error: 500 Internal Server Error"),
            None
        );
        let other = LakeError::CommitRetriesExhausted {
            table: "t".into(),
            url: "u".into(),
            version: 1,
            attempts: 2,
            reason: "lost races".into(),
        };
        assert!(!other.classified("u").is_configuration());
    }
}
