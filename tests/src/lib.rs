//! Test harness: real services for loglake's integration tests.
//!
//! Every integration test talks to a real Kafka-protocol broker and a real S3-compatible server:
//!
//! * Kafka: `LOGLAKE_TEST_KAFKA_BROKERS` if set (any Kafka), otherwise a `tansu` broker with SQLite
//!   storage that this harness starts on a free 127.0.0.1 port (binary from `LOGLAKE_TANSU_BIN`,
//!   installed by `scripts/install-test-deps.sh`).
//! * S3: `LOGLAKE_TEST_S3_ENDPOINT` (+ the standard `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_REGION`, and `LOGLAKE_TEST_S3_BUCKET` naming an existing bucket) if set, otherwise a `moto`
//!   server (`LOGLAKE_MOTO_BIN`) that this harness starts on a free 127.0.0.1 port.
//!
//! Services are started lazily, once per test process, and are stopped when the process exits:
//! they are spawned from a dedicated thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills them even if the test binary panics or is
//! killed. Each test gets its own topic names and its own S3 prefix ([`unique_name`]).

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod archive;
pub mod fault;

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;

pub const TANSU_VERSION: &str = "0.6.0";
pub const MOTO_VERSION: &str = "5.2.5";

/// Writes a line to the real stderr, bypassing libtest's output capture, so that the test log
/// always shows which services a run used.
pub fn announce(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "loglake-tests: {msg}");
}

/// A name unique to this process and call: `prefix-<pid>-<n>-<nanos>`, usable as a Kafka topic,
/// consumer group, S3 prefix or table name.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

// ------------------------------------------------------------------------------------------------
// Process ownership
// ------------------------------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the keeper thread, which never exits before the process does. Children get
/// `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the *thread* that forked them dies — hence one
/// long-lived thread rather than whichever test thread happened to start the service.
fn spawn_owned(cmd: Command) -> Result<Child> {
    static KEEPER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("loglake-service-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    #[cfg(target_os = "linux")]
                    unsafe {
                        use std::os::unix::process::CommandExt;
                        cmd.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so the loop above only ends at process exit;
                // park to be safe.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn keeper thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    keeper
        .send((cmd, tx))
        .map_err(|_| anyhow!("service keeper thread is gone"))?;
    rx.recv()
        .map_err(|_| anyhow!("service keeper thread is gone"))?
        .context("spawning service")
}

/// How long a broker or S3 call in the tests may keep failing before the test fails: a loaded
/// 2-core machine (a build beside the suite, a heavy test) makes single calls time out.
pub const SERVICE_DEADLINE: Duration = Duration::from_secs(120);

/// Calls `f` until it succeeds or [`SERVICE_DEADLINE`] has passed, pausing 100 ms, 200 ms, …
/// (at most 5 s) between attempts and logging each failure with `what`. For idempotent calls
/// only (reads, offset commits of the same offsets).
pub fn retry<T, E: std::fmt::Display>(what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if start.elapsed() + pause < SERVICE_DEADLINE => {
                announce(&format!("{what}: {e}; retrying in {pause:?}"));
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => panic!("{what}: {e} (still failing after {:?})", start.elapsed()),
        }
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Scratch directory for this process's services, under the system temp dir. Directories of
/// earlier runs whose process is gone are removed.
fn run_dir() -> Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let base = std::env::temp_dir().join("loglake-tests");
    std::fs::create_dir_all(&base)?;
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name
                .strip_prefix("run-")
                .and_then(|p| p.parse::<i32>().ok())
            {
                let alive = unsafe { libc::kill(pid, 0) } == 0;
                if !alive {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = base.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(DIR.get_or_init(|| dir))
}

fn wait_for_tcp(addr: &str, child: &mut Child, log: &Path, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "service exited with {status} before listening on {addr}; log {}:\n{}",
                log.display(),
                tail(log)
            );
        }
        if start.elapsed() > deadline {
            bail!(
                "service not listening on {addr} after {deadline:?}; log {}:\n{}",
                log.display(),
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn bin_from_env(var: &str, fallback: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    // Same cache layout as scripts/install-test-deps.sh.
    let cache = std::env::var_os("LOGLAKE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/loglake")))
        .unwrap_or_else(|| PathBuf::from(".cache/loglake"));
    cache.join(fallback)
}

// ------------------------------------------------------------------------------------------------
// Kafka
// ------------------------------------------------------------------------------------------------

/// A Kafka-protocol broker for the tests.
#[derive(Debug)]
pub struct Kafka {
    /// `host:port` bootstrap list.
    pub brokers: String,
    /// What the broker is, for logs: e.g. `tansu 0.6.0 (sqlite), started by the harness`.
    pub description: String,
    _child: Option<std::sync::Mutex<Child>>,
}

/// The broker for this test process (started on first use).
pub fn kafka() -> &'static Kafka {
    static K: OnceLock<Kafka> = OnceLock::new();
    K.get_or_init(|| match start_kafka() {
        Ok(k) => {
            announce(&format!("Kafka broker {} at {}", k.description, k.brokers));
            k
        }
        Err(e) => panic!("cannot provide a Kafka broker for the tests: {e:#}"),
    })
}

fn start_kafka() -> Result<Kafka> {
    if let Ok(brokers) = std::env::var("LOGLAKE_TEST_KAFKA_BROKERS") {
        return Ok(Kafka {
            description: "from LOGLAKE_TEST_KAFKA_BROKERS".into(),
            brokers,
            _child: None,
        });
    }
    let bin = bin_from_env("LOGLAKE_TANSU_BIN", "tansu-0.6.0/bin/tansu");
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version (install it with scripts/install-test-deps.sh, \
                 or set LOGLAKE_TEST_KAFKA_BROKERS)",
                bin.display()
            )
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !version.contains(TANSU_VERSION) {
        bail!(
            "{} reports {version:?}, expected {TANSU_VERSION}",
            bin.display()
        );
    }
    let (child, addr) = spawn_tansu(&bin, &run_dir()?.join("tansu"))?;
    Ok(Kafka {
        brokers: addr,
        description: format!("{version} (sqlite storage), started by the harness"),
        _child: Some(std::sync::Mutex::new(child)),
    })
}

/// Starts tansu (SQLite storage in `dir`) on a free 127.0.0.1 port and waits until it answers a
/// metadata request: the child and its `host:port`.
fn spawn_tansu(bin: &Path, dir: &Path) -> Result<(Child, String)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let log_path = dir.join("tansu.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir)
        .arg("broker")
        .arg("--listener-url")
        .arg(format!("tcp://{addr}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://{addr}"))
        // tansu requires a relative path for SQLite storage; cwd is the run dir.
        .arg("--storage-engine")
        .arg("sqlite://tansu.db")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "warn");
    let mut child = spawn_owned(cmd)?;
    wait_for_tcp(&addr, &mut child, &log_path, Duration::from_secs(30))?;
    // Listening is not enough: wait until the broker answers a metadata request.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .context("creating metadata client")?;
    let start = Instant::now();
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(md) if !md.brokers().is_empty() => break,
            Ok(_) | Err(_) if start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(_) => bail!(
                "broker at {addr} reports no brokers; log:\n{}",
                tail(&log_path)
            ),
            Err(e) => bail!("broker at {addr} not ready: {e}; log:\n{}", tail(&log_path)),
        }
    }
    Ok((child, addr))
}

/// A tansu broker of one test's own, which the test may freeze ([`PrivateKafka::pause`]: the
/// process is stopped, connections stay open and nothing answers, as when packets are dropped)
/// and thaw again. Killed when dropped. Needs the harness's tansu (not
/// `LOGLAKE_TEST_KAFKA_BROKERS`): use [`private_kafka`], which says when it cannot.
pub struct PrivateKafka {
    pub brokers: String,
    child: std::sync::Mutex<Child>,
}

/// A private broker, or `None` (announced) when the suite runs against an external Kafka.
pub fn private_kafka() -> Result<Option<PrivateKafka>> {
    if std::env::var_os("LOGLAKE_TEST_KAFKA_BROKERS").is_some() {
        announce("an external Kafka cannot be paused: skipping the broker-stall part");
        return Ok(None);
    }
    let bin = bin_from_env("LOGLAKE_TANSU_BIN", "tansu-0.6.0/bin/tansu");
    let dir = run_dir()?.join(unique_name("tansu-private"));
    let (child, brokers) = spawn_tansu(&bin, &dir)?;
    Ok(Some(PrivateKafka {
        brokers,
        child: std::sync::Mutex::new(child),
    }))
}

impl PrivateKafka {
    fn signal(&self, sig: i32) -> Result<()> {
        let child = self.child.lock().map_err(|_| anyhow!("poisoned"))?;
        // SAFETY: kill(2) on our own, not yet reaped, child.
        if unsafe { libc::kill(child.id() as i32, sig) } != 0 {
            bail!(
                "signal {sig} to tansu {}: {}",
                child.id(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Freezes the broker (SIGSTOP): it accepts nothing and answers nothing.
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    /// Creates `topic` with `partitions` partitions (see [`Kafka::create_topic`]).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        create_topic_on(self.config(), topic, partitions).await
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Kafka {
    /// A client config pointing at this broker.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    /// An idempotent producer for this broker (no duplicates on retry, so tests can count
    /// offsets exactly); `props` add or override librdkafka settings (default `linger.ms` 10).
    pub fn idempotent_producer(&self, props: &[(&str, &str)]) -> FutureProducer {
        let mut c = self.config();
        c.set("enable.idempotence", "true").set("linger.ms", "10");
        for (k, v) in props {
            c.set(*k, *v);
        }
        c.create().expect("creating an idempotent producer")
    }

    /// Creates `topic` with `partitions` partitions and waits until its metadata shows them all.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        create_topic_on(self.config(), topic, partitions).await
    }
}

/// Creates `topic` on the broker of `config` (see [`Kafka::create_topic`]).
async fn create_topic_on(config: ClientConfig, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("create_topics")?;
    for r in results {
        r.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
    }
    let consumer: BaseConsumer = config.create()?;
    let start = Instant::now();
    loop {
        // A busy broker (a loaded CI machine) can time a metadata request out: retry until
        // the deadline rather than fail the test on the first timeout.
        let n = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.partitions().len())
                .unwrap_or(0),
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                eprintln!("metadata of {topic}: {e}; retrying");
                0
            }
            Err(e) => return Err(e.into()),
        };
        if n == partitions as usize {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("topic {topic} shows {n} partitions, expected {partitions}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------------------------------------
// S3
// ------------------------------------------------------------------------------------------------

/// An S3-compatible server for the tests.
#[derive(Debug)]
pub struct S3 {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The bucket the tests write into, each under its own prefix.
    pub bucket: String,
    pub description: String,
    _child: Option<std::sync::Mutex<Child>>,
}

/// The S3 server for this test process (started on first use).
pub fn s3() -> &'static S3 {
    static S: OnceLock<S3> = OnceLock::new();
    S.get_or_init(|| match start_s3() {
        Ok(s) => {
            announce(&format!(
                "S3 server {} at {} (bucket {})",
                s.description, s.endpoint, s.bucket
            ));
            s
        }
        Err(e) => panic!("cannot provide an S3 server for the tests: {e:#}"),
    })
}

fn start_s3() -> Result<S3> {
    if let Ok(endpoint) = std::env::var("LOGLAKE_TEST_S3_ENDPOINT") {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        return Ok(S3 {
            endpoint,
            region: var("AWS_REGION", "us-east-1"),
            access_key_id: var("AWS_ACCESS_KEY_ID", ""),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY", ""),
            bucket: var("LOGLAKE_TEST_S3_BUCKET", "loglake-test"),
            description: "from LOGLAKE_TEST_S3_ENDPOINT".into(),
            _child: None,
        });
    }
    let bin = bin_from_env("LOGLAKE_MOTO_BIN", "moto_server");
    let venv_python = bin.with_file_name("python");
    let version = Command::new(&venv_python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .with_context(|| {
            format!(
                "running {} (install moto with scripts/install-test-deps.sh, or set \
                 LOGLAKE_TEST_S3_ENDPOINT)",
                venv_python.display()
            )
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if version != MOTO_VERSION {
        bail!(
            "{} has moto {version:?}, expected {MOTO_VERSION}",
            venv_python.display()
        );
    }
    let dir = run_dir()?.join("moto");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let log_path = dir.join("moto.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(&bin);
    cmd.current_dir(&dir)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = spawn_owned(cmd)?;
    wait_for_tcp(&addr, &mut child, &log_path, Duration::from_secs(30))?;
    let s3 = S3 {
        endpoint: format!("http://{addr}"),
        region: "us-east-1".into(),
        access_key_id: "loglake-test".into(),
        secret_access_key: "loglake-test-secret".into(),
        bucket: "loglake-test".into(),
        description: format!("moto {version} (server mode), started by the harness"),
        _child: Some(std::sync::Mutex::new(child)),
    };
    create_bucket_unsigned(&addr, &s3.bucket)
        .with_context(|| format!("creating bucket on moto; log:\n{}", tail(&log_path)))?;
    Ok(s3)
}

/// `PUT /<bucket>` against moto, which does not check signatures by default. (object_store has
/// no create-bucket call; against a real S3 or MinIO the bucket must exist beforehand.)
fn create_bucket_unsigned(addr: &str, bucket: &str) -> Result<()> {
    use std::io::Read;
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        bail!("PUT /{bucket}: {status}");
    }
    Ok(())
}

impl S3 {
    /// `s3://bucket/prefix` for a fresh prefix.
    pub fn unique_url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, unique_name(prefix))
    }

    /// Storage options in the form deltalake and object_store understand (the standard `AWS_*`
    /// names). No locking provider and no unsafe rename: commits rely on put-if-absent.
    pub fn storage_options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("AWS_ENDPOINT_URL".to_string(), self.endpoint.clone()),
            ("AWS_REGION".to_string(), self.region.clone()),
            ("AWS_ACCESS_KEY_ID".to_string(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                self.secret_access_key.clone(),
            ),
            ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
            (
                "AWS_VIRTUAL_HOSTED_STYLE_REQUEST".to_string(),
                "false".to_string(),
            ),
        ])
    }

    /// An object_store client for the test bucket.
    pub fn object_store(&self) -> Result<AmazonS3> {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&self.bucket)
            .build()
            .context("building S3 client")
    }

    /// Lists every object key under `prefix` (recursively).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let store = self.object_store()?;
        let p = object_store::path::Path::from(prefix);
        let metas: Vec<_> = store.list(Some(&p)).try_collect().await?;
        let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        Ok(keys)
    }
}

// ------------------------------------------------------------------------------------------------
// The loglake binary
// ------------------------------------------------------------------------------------------------

/// Path of the `loglake` binary built from this workspace (`cargo build --bin loglake`, which
/// `scripts/test.sh` runs before the tests). Honours `LOGLAKE_BIN` and `CARGO_TARGET_DIR`.
pub fn loglake_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOGLAKE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/loglake");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --bin loglake` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A `loglake` command with the test S3 server's credentials in the standard `AWS_*` variables.
pub fn loglake_cmd() -> Command {
    let mut c = Command::new(loglake_bin());
    for (k, v) in s3().storage_options() {
        c.env(k, v);
    }
    c.env("LOGLAKE_LOG", "warn");
    c
}

/// `loglake ARGS` run to its end off the async runtime (the binary blocks until it exits);
/// asserts it succeeded, naming the arguments and showing its stderr otherwise.
pub async fn loglake_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = loglake_cmd().args(&args).output().expect("run loglake");
        assert!(
            out.status.success(),
            "loglake {args:?} failed: {}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    })
    .await
    .expect("join")
}

// ------------------------------------------------------------------------------------------------
// Processes under test
// ------------------------------------------------------------------------------------------------

/// How a [`Proc`] ended, with everything it wrote.
#[derive(Debug)]
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A child process (typically a continuous `loglake archive`) whose stdout and stderr are
/// collected by two threads, that can be signalled, and that is SIGKILLed and reaped if it is
/// dropped still running (a failing test leaves no archiver behind).
pub struct Proc {
    child: Child,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    done: bool,
}

fn collect(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr piped (and collected).
    pub fn spawn(mut cmd: Command) -> Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(collect);
        Ok(Proc {
            child,
            stdout,
            stderr,
            done: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        if self.done || unsafe { libc::kill(self.child.id() as i32, signal) } != 0 {
            bail!("signal {signal} to {}: process gone", self.child.id());
        }
        Ok(())
    }

    /// Whether the process is still running (does not reap it).
    pub fn running(&mut self) -> bool {
        !self.done && matches!(self.child.try_wait(), Ok(None))
    }

    fn finished(&mut self, status: std::process::ExitStatus) -> Finished {
        self.done = true;
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        Finished {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }

    /// Waits up to `deadline` for the process to exit; `None` if it is still running then.
    pub async fn wait_within(&mut self, deadline: Duration) -> Result<Option<Finished>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(self.finished(status)));
            }
            if start.elapsed() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A response of [`http_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: String,
}

/// `GET http://{addr}{path}` (reqwest; no proxy, 10 s timeout).
pub async fn http_get(addr: &str, path: &str) -> Result<HttpResponse> {
    // One client for the process. Each test has its own tokio runtime: a pooled connection
    // would belong to the runtime that opened it, so none is kept.
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = match CLIENT.get() {
        Some(c) => c,
        None => {
            let c = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the HTTP client")?;
            CLIENT.get_or_init(|| c)
        }
    };
    let url = format!("http://{addr}{path}");
    let resp = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = resp
        .text()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?;
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

/// The samples of an OpenMetrics text exposition (what `/metrics` serves):
/// `name{labels}` (exactly as written) → value.
///
/// Strict, so that a malformed exposition fails the test: every line is a `# HELP`, `# TYPE` or
/// `# UNIT` line or a sample of the metric family declared last (counters: `_total`,
/// `_created`; histograms: `_bucket`, `_count`, `_sum`, `_created`; ...), label values are
/// quoted (escapes `\\`, `\"`, `\n`), a sample appears once, and the text ends with `# EOF`
/// and nothing after it. Timestamps and exemplars (`# {...} value`) are accepted and ignored.
/// (No maintained Rust crate parses OpenMetrics text: `prometheus-parse` reads the older
/// Prometheus format without `# EOF`, and skips lines it cannot parse.)
pub fn parse_openmetrics(text: &str) -> Result<std::collections::BTreeMap<String, f64>> {
    use std::collections::BTreeMap;
    let mut out = BTreeMap::new();
    // The current family: its name and type.
    let mut family: Option<(String, String)> = None;
    let mut lines = text.split('\n');
    let mut eof = false;
    for line in lines.by_ref() {
        if line == "# EOF" {
            eof = true;
            break;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let rest = parts.next();
            check_metric_name(name).with_context(|| format!("in {line:?}"))?;
            match kind {
                "TYPE" => {
                    let ty = rest.unwrap_or("");
                    const TYPES: [&str; 8] = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !TYPES.contains(&ty) {
                        bail!("unknown metric type in {line:?}");
                    }
                    family = Some((name.to_string(), ty.to_string()));
                }
                "HELP" | "UNIT" => {}
                _ => bail!("not an OpenMetrics line: {line:?}"),
            }
            continue;
        }
        let (key, name, value) = parse_sample(line).with_context(|| format!("in {line:?}"))?;
        let Some((fam, ty)) = &family else {
            bail!("sample before any # TYPE: {line:?}");
        };
        let suffixes: &[&str] = match ty.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => {
                &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
            }
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        if !suffixes
            .iter()
            .any(|s| name.strip_suffix(s) == Some(fam.as_str()))
        {
            bail!("sample {line:?} is not of the family {fam} ({ty})");
        }
        if out.insert(key, value).is_some() {
            bail!("duplicate sample {line:?}");
        }
    }
    if !eof {
        bail!("no # EOF line at the end of the exposition");
    }
    match lines.collect::<Vec<_>>().as_slice() {
        [] | [""] => Ok(out),
        rest => bail!("text after # EOF: {rest:?}"),
    }
}

fn check_metric_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        bail!("bad metric name {name:?}")
    }
}

/// One sample line: (`name{labels}` as written, name, value).
fn parse_sample(line: &str) -> Result<(String, &str, f64)> {
    let name_end = line.find(['{', ' ']).ok_or_else(|| anyhow!("no value"))?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        // Labels: name="value" pairs separated by commas; a value may hold escaped quotes.
        let bytes = rest.as_bytes();
        let mut i = 1;
        let mut in_value = false;
        loop {
            match bytes.get(i) {
                None => bail!("unterminated label set"),
                Some(b'\\') if in_value => i += 1,
                Some(b'"') => in_value = !in_value,
                Some(b'}') if !in_value => break,
                _ => {}
            }
            i += 1;
        }
        check_labels(&rest[1..i])?;
        rest = &rest[i + 1..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| anyhow!("no space before the value"))?;
    // `value [timestamp] [# exemplar]`
    let (sample, exemplar) = match rest.split_once(" # ") {
        Some((s, e)) => (s, Some(e)),
        None => (rest, None),
    };
    if let Some(e) = exemplar
        && !e.starts_with('{')
    {
        bail!("bad exemplar {e:?}");
    }
    let mut fields = sample.split(' ');
    let value = parse_value(fields.next().unwrap_or(""))?;
    if let Some(ts) = fields.next() {
        parse_value(ts).with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        bail!("more than a value and a timestamp");
    }
    Ok((line[..line.len() - rest.len() - 1].to_string(), name, value))
}

/// `a="x",b="y"`: names valid, values quoted with valid escapes, no duplicate names.
fn check_labels(labels: &str) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| anyhow!("bad label set {labels:?}"))?;
        check_metric_name(name).with_context(|| format!("label name in {labels:?}"))?;
        if name.contains(':') || !seen.insert(name) {
            bail!("bad or repeated label name {name:?}");
        }
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => bail!("unterminated label value in {labels:?}"),
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    other => bail!("bad escape {other:?} in {labels:?}"),
                },
                Some((i, '"')) => break i,
                Some(_) => {}
            }
        };
        rest = &after[end + 1..];
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| anyhow!("bad label set {labels:?}"))?;
        }
    }
    Ok(())
}

fn parse_value(v: &str) -> Result<f64> {
    Ok(match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v if v.is_empty()
            || v.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            bail!("bad value {v:?}")
        }
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP loglake_commits Delta commits.\n\
        # TYPE loglake_commits counter\n\
        loglake_commits_total 2\n\
        # HELP loglake_consumer_lag Lag.\n\
        # TYPE loglake_consumer_lag gauge\n\
        loglake_consumer_lag{topic=\"a \\\"b\\\" {c}, d\",partition=\"3\"} 17\n\
        # HELP loglake_flush_seconds Flushes.\n\
        # TYPE loglake_flush_seconds histogram\n\
        # UNIT loglake_flush_seconds seconds\n\
        loglake_flush_seconds_sum 0.3\n\
        loglake_flush_seconds_count 1\n\
        loglake_flush_seconds_bucket{le=\"0.05\"} 0 1700000000.5\n\
        loglake_flush_seconds_bucket{le=\"+Inf\"} 1 # {trace_id=\"x\"} 0.3\n\
        # EOF\n";

    #[test]
    fn parses_an_openmetrics_exposition() {
        let m = parse_openmetrics(EXPOSITION).expect("parses");
        let expected: Vec<(&str, f64)> = vec![
            ("loglake_commits_total", 2.0),
            (
                "loglake_consumer_lag{topic=\"a \\\"b\\\" {c}, d\",partition=\"3\"}",
                17.0,
            ),
            ("loglake_flush_seconds_bucket{le=\"+Inf\"}", 1.0),
            ("loglake_flush_seconds_bucket{le=\"0.05\"}", 0.0),
            ("loglake_flush_seconds_count", 1.0),
            ("loglake_flush_seconds_sum", 0.3),
        ];
        let got: Vec<(&str, f64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn refuses_what_is_not_openmetrics() {
        let without_eof = EXPOSITION.trim_end_matches("# EOF\n");
        for (what, text) in [
            ("no # EOF", without_eof.to_string()),
            ("text after # EOF", format!("{EXPOSITION}x 1\n")),
            (
                "a sample of another family",
                EXPOSITION.replace("loglake_commits_total 2", "loglake_rows_total 2"),
            ),
            (
                "a counter without _total",
                EXPOSITION.replace("loglake_commits_total 2", "loglake_commits 2"),
            ),
            (
                "a bad value",
                EXPOSITION.replace("loglake_commits_total 2", "loglake_commits_total two"),
            ),
            (
                "an unquoted label value",
                EXPOSITION.replace("partition=\"3\"", "partition=3"),
            ),
            (
                "a duplicate sample",
                EXPOSITION.replace(
                    "loglake_flush_seconds_count 1\n",
                    "loglake_flush_seconds_count 1\nloglake_flush_seconds_count 1\n",
                ),
            ),
            ("a plain comment", format!("# hello\n{EXPOSITION}")),
            ("an empty line", EXPOSITION.replacen('\n', "\n\n", 1)),
        ] {
            assert!(
                parse_openmetrics(&text).is_err(),
                "accepted {what}:\n{text}"
            );
        }
    }
}
