//! Errors of `loglake nightly`, each naming the stage and table concerned, and the exit codes a
//! Kubernetes `podFailurePolicy` acts on.

use thiserror::Error;

/// Exit code: the run finished (every stage succeeded or had nothing to do).
pub const EXIT_OK: u8 = 0;
/// Exit code: a stage failed; running again resumes (retryable).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad configuration (flags, `lake.toml`, table definitions): retrying cannot help.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: another runner holds the lake's lease (a second CronJob pod): nothing was done.
pub const EXIT_LEASE_HELD: u8 = 3;

#[derive(Debug, Error)]
pub enum JobError {
    #[error("configuration: {0}")]
    Config(String),

    #[error(
        "another nightly runner holds the lease of lake {lake}: {owner} (until {expires}); \
         nothing was done. A runner killed without releasing it frees it when it expires."
    )]
    LeaseHeld {
        lake: String,
        owner: String,
        expires: String,
    },

    #[error("stage {stage} of table {table}: {message}")]
    Stage {
        stage: String,
        table: String,
        message: String,
    },

    #[error("run ledger {url}: {message}")]
    Ledger { url: String, message: String },

    #[error("{0}")]
    Internal(String),
}

impl JobError {
    pub fn exit_code(&self) -> u8 {
        match self {
            JobError::Config(_) => EXIT_CONFIG,
            JobError::LeaseHeld { .. } => EXIT_LEASE_HELD,
            _ => EXIT_FAILED,
        }
    }

    /// A stage's failure; one whose text shows a store access problem (credentials, bucket,
    /// endpoint: [`loglake_lake::access_problem`]) is a configuration error (exit 2).
    pub(crate) fn stage(stage: &str, table: &str, e: impl std::fmt::Display) -> Self {
        let message = e.to_string();
        if loglake_lake::access_problem(&message).is_some() {
            return JobError::Config(format!("stage {stage} of table {table}: {message}"));
        }
        JobError::Stage {
            stage: stage.to_string(),
            table: table.to_string(),
            message,
        }
    }
}
