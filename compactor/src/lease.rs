//! One maintenance writer per table: a lease made of put-if-absent objects.
//!
//! deltalake 1.1.3's conflict checker ignores another commit's `dataChange=false` removes, so two
//! compactions of the same files would both commit (rows duplicated), and a delete planned before
//! a compaction could commit after it. Every maintenance writer of a table therefore holds its
//! lease while it plans and commits (DESIGN.md I6); archiver appends never look at it.
//!
//! The lease is a sequence of objects `_loglake/lease/<n>.json` under the table root (`_`-prefixed,
//! so Delta, Spark and Hive readers ignore it), each `{owner, expires_ms, released}`. The newest
//! entry decides: a writer may take the lease when there is none, or the newest is released or
//! expired, by creating entry `n + 1` with put-if-absent — of two writers racing for it exactly
//! one wins, on every store that loglake commits to (DESIGN.md I1). The holder renews by creating
//! the next entry before its own expires; if that entry exists, someone took an expired lease
//! over and the holder has lost it ([`LeaseError::Lost`]). Only put-if-absent, list and get are
//! used: no conditional overwrite, which the local file system store lacks.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;

const PREFIX: &str = "_loglake/lease";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("maintenance lease of {table}: {path}: {source}")]
    Store {
        table: String,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("maintenance lease of {table}: {path} is not a lease entry: {reason}")]
    Corrupt {
        table: String,
        path: String,
        reason: String,
    },
    #[error(
        "maintenance lease of {table}: lost to {owner} (entry {entry}): another maintenance \
         writer took it over after ours expired; nothing more is committed"
    )]
    Lost {
        table: String,
        owner: String,
        entry: u64,
    },
}

/// One lease entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub owner: String,
    /// Milliseconds since the epoch when the lease lapses unless renewed.
    pub expires_ms: i64,
    #[serde(default)]
    pub released: bool,
}

/// Who holds a table's lease, when another writer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub expires_ms: i64,
}

/// A lease owner's name: host (`HOSTNAME`, else `/etc/hostname`, else `localhost`), pid and
/// `run` (a run id or a random suffix), e.g. `loglake-nightly-x7k2p:1:20261207T0300Z-1a2b3c4d`.
pub fn owner_name(run: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{run}", std::process::id())
}

/// The lease of one table, held (or not yet) by `owner`.
pub struct Lease {
    table: String,
    store: Arc<dyn ObjectStore>,
    owner: String,
    ttl: Duration,
    /// The entry number this writer last wrote while holding the lease.
    held: Option<u64>,
    expires_ms: i64,
}

fn entry_path(n: u64) -> Path {
    Path::from(format!("{PREFIX}/{n:020}.json"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Lease {
    /// The lease of the table whose root is `store` (the table's own object store), for `owner`
    /// (a name that says who: host, pid and run), lapsing `ttl` after each renewal.
    pub fn new(table: &str, store: Arc<dyn ObjectStore>, owner: String, ttl: Duration) -> Self {
        Lease {
            table: table.to_string(),
            store,
            owner,
            ttl,
            held: None,
            expires_ms: 0,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn store_error(&self, path: &Path) -> impl Fn(object_store::Error) -> LeaseError + '_ {
        let path = path.to_string();
        move |source| LeaseError::Store {
            table: self.table.clone(),
            path: path.clone(),
            source: Box::new(source),
        }
    }

    /// The newest entry and its number.
    async fn newest(&self) -> Result<Option<(u64, Entry)>, LeaseError> {
        let prefix = Path::from(PREFIX);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.store_error(&prefix))?;
        let Some(n) = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .max()
        else {
            return Ok(None);
        };
        let path = entry_path(n);
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(self.store_error(&path))?
            .bytes()
            .await
            .map_err(self.store_error(&path))?;
        let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| LeaseError::Corrupt {
            table: self.table.clone(),
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some((n, entry)))
    }

    /// Writes entry `n` if it does not exist yet: `Ok(false)` when another writer has it.
    async fn create(&self, n: u64, entry: &Entry) -> Result<bool, LeaseError> {
        let path = entry_path(n);
        let body = serde_json::to_vec(entry).unwrap_or_default();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.store_error(&path)(e)),
        }
    }

    /// Takes the lease if it is free (none, released or expired): `Ok(None)` when taken,
    /// `Ok(Some(holder))` when another writer holds it.
    pub async fn try_acquire(&mut self) -> Result<Option<Holder>, LeaseError> {
        loop {
            let newest = self.newest().await?;
            let next = match &newest {
                Some((_, e)) if !e.released && e.expires_ms > now_ms() && e.owner != self.owner => {
                    return Ok(Some(Holder {
                        owner: e.owner.clone(),
                        expires_ms: e.expires_ms,
                    }));
                }
                Some((n, _)) => n + 1,
                None => 1,
            };
            let entry = Entry {
                owner: self.owner.clone(),
                expires_ms: now_ms() + self.ttl.as_millis() as i64,
                released: false,
            };
            if self.create(next, &entry).await? {
                self.held = Some(next);
                self.expires_ms = entry.expires_ms;
                self.prune(next).await;
                return Ok(None);
            }
            // another writer created `next` first: look again
        }
    }

    /// Waits up to `wait` for the lease (polling every second): `Ok(None)` when taken.
    pub async fn acquire(&mut self, wait: Duration) -> Result<Option<Holder>, LeaseError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.try_acquire().await? {
                None => return Ok(None),
                Some(h) if tokio::time::Instant::now() >= deadline => return Ok(Some(h)),
                Some(h) => {
                    tracing::info!(table = %self.table, holder = %h.owner, "maintenance lease held by another writer; waiting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Renews a held lease (a new entry with a new expiry). [`LeaseError::Lost`] when another
    /// writer wrote the next entry (ours had expired and it took over).
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let Some(n) = self.held else {
            return Err(LeaseError::Lost {
                table: self.table.clone(),
                owner: "nobody (never acquired)".into(),
                entry: 0,
            });
        };
        let entry = Entry {
            owner: self.owner.clone(),
            expires_ms: now_ms() + self.ttl.as_millis() as i64,
            released: false,
        };
        if self.create(n + 1, &entry).await? {
            self.held = Some(n + 1);
            self.expires_ms = entry.expires_ms;
            self.prune(n + 1).await;
            return Ok(());
        }
        self.held = None;
        let owner = match self.newest().await? {
            Some((_, e)) => e.owner,
            None => "unknown".into(),
        };
        Err(LeaseError::Lost {
            table: self.table.clone(),
            owner,
            entry: n + 1,
        })
    }

    /// Checks before a commit that the lease is ours for at least `margin` more: renews it when
    /// less is left (one entry per renewal, not per commit).
    pub async fn ensure(&mut self, margin: Duration) -> Result<(), LeaseError> {
        if self.held.is_none() || self.expires_ms - now_ms() < margin.as_millis() as i64 {
            self.renew().await?;
        }
        Ok(())
    }

    /// Releases a held lease (an entry marked released), so the next writer need not wait for
    /// it to expire. Best effort: an expired lease is free anyway.
    pub async fn release(&mut self) {
        let Some(n) = self.held.take() else { return };
        let entry = Entry {
            owner: self.owner.clone(),
            expires_ms: now_ms(),
            released: true,
        };
        match self.create(n + 1, &entry).await {
            Ok(true) => self.prune(n + 1).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(table = %self.table, error = %e, "could not release the maintenance lease (it expires by itself)")
            }
        }
    }

    /// Deletes entries older than `n - 1` (best effort; the newest decides, old ones are noise).
    async fn prune(&self, n: u64) {
        for old in n.saturating_sub(3)..n.saturating_sub(1) {
            if old > 0 {
                let _ = self.store.delete(&entry_path(old)).await;
            }
        }
    }
}

/// A held lease renewed in the background (every third of its ttl) while an operation runs that
/// cannot call [`Lease::ensure`] between steps (a vacuum inside deltalake).
pub struct KeptLease {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Lease, Option<LeaseError>)>,
}

impl Lease {
    /// Renews this (held) lease in the background until [`KeptLease::release`].
    pub fn keep_alive(mut self) -> KeptLease {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            let mut lost = None;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every), if lost.is_none() => {
                        if let Err(e) = self.renew().await {
                            tracing::warn!(error = %e, "maintenance lease not renewed");
                            lost = Some(e);
                        }
                    }
                }
            }
            (self, lost)
        });
        KeptLease { stop, task }
    }
}

impl KeptLease {
    /// Stops renewing and releases the lease; the error if it was lost meanwhile.
    pub async fn release(self) -> Option<LeaseError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok((mut lease, lost)) => {
                lease.release().await;
                lost
            }
            Err(e) => {
                tracing::warn!(error = %e, "maintenance lease keeper failed (the lease expires by itself)");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("store"))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let ttl = Duration::from_secs(60);
        let mut a = Lease::new("t", store(&dir), "a".into(), ttl);
        let mut b = Lease::new("t", store(&dir), "b".into(), ttl);
        assert_eq!(a.try_acquire().await.expect("a"), None);
        let held = b.try_acquire().await.expect("b").expect("held by a");
        assert_eq!(held.owner, "a");
        // renewing keeps it a's
        a.renew().await.expect("renew");
        assert_eq!(
            b.try_acquire().await.expect("b").map(|h| h.owner),
            Some("a".into())
        );
        a.release().await;
        assert_eq!(b.try_acquire().await.expect("b"), None);
        assert_eq!(
            a.try_acquire().await.expect("a").map(|h| h.owner),
            Some("b".into())
        );
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_learns_it_lost() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = Lease::new("t", store(&dir), "a".into(), Duration::from_millis(1));
        let mut b = Lease::new("t", store(&dir), "b".into(), Duration::from_secs(60));
        assert_eq!(a.try_acquire().await.expect("a"), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.try_acquire().await.expect("b takes over"), None);
        match a.ensure(Duration::from_secs(1)).await {
            Err(LeaseError::Lost { owner, .. }) => assert_eq!(owner, "b"),
            other => panic!("a still thinks it holds the lease: {other:?}"),
        }
    }

    /// Many writers racing for a free lease: exactly one gets it.
    #[tokio::test]
    async fn racing_writers_one_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = store(&dir);
            tasks.push(tokio::spawn(async move {
                let mut l = Lease::new("t", s, format!("w{i}"), Duration::from_secs(60));
                l.try_acquire().await.expect("acquire").is_none()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.expect("task"));
        }
        assert_eq!(winners, 1);
    }
}
