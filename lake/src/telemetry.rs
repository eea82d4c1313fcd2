//! The process's metrics registry (OpenMetrics text through `prometheus-client`), its health,
//! and the `/metrics` + `/healthz` endpoint (hyper, on the tokio runtime), shared by every stage.
//!
//! A [`Telemetry`] owns the process's [`Registry`] and its [`Health`]. Each stage keeps its
//! metrics in one typed struct (the archiver's `ArchiverMetrics`, the compactor's
//! `CompactorMetrics`) and registers it with [`Telemetry::register`]; [`Telemetry::serve`] answers
//!
//! - `GET /metrics`: every registered metric, content type [`OPENMETRICS_CONTENT_TYPE`];
//! - `GET /healthz`: `200 ok`, or `503` with the reason given to [`Health::set_unhealthy`];
//! - anything else: `404`.
//!
//! The metrics are atomics (prometheus-client's `Counter`, `Gauge`, `Family`, `Histogram`):
//! updating one takes no lock the HTTP task could hold across an `.await`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;

/// The content type of `/metrics`: what `prometheus_client::encoding::text::encode` writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send its request head (a stuck client holds no more than its
/// own connection task).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the process is healthy, shared by everything that can make `/healthz` fail. Clones
/// share one state. The last `set_unhealthy` or `set_healthy` wins.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<Option<String>>>);

impl Health {
    /// `/healthz` answers `503` with `reason` (and a newline) until [`Health::set_healthy`].
    pub fn set_unhealthy(&self, reason: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    /// `/healthz` answers `200 ok` again.
    pub fn set_healthy(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// `None` when healthy, else the reason given to [`Health::set_unhealthy`].
    pub fn unhealthy_reason(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A stage's metrics struct: registers each of its metrics (handles sharing their values) into
/// the process's registry.
pub trait StageMetrics {
    fn register(&self, registry: &mut Registry);
}

/// The process's metrics registry and health, and the HTTP endpoint that exposes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    registry: RwLock<Registry>,
    health: Health,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The health `/healthz` reports (a clone shares the state).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Adds a stage's metrics to `/metrics` (also after [`Telemetry::serve`] started).
    pub fn register(&self, stage: &impl StageMetrics) {
        stage.register(&mut self.registry.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The OpenMetrics text exposition of every registered metric, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail; the encoders of the metrics used here do not either.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// The answer to one request (routing only; no I/O).
    pub fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (method, path) {
            (&Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS_CONTENT_TYPE, self.encode()),
            (&Method::GET, "/healthz") => match self.health.unhealthy_reason() {
                None => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
                Some(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("{why}\n"),
                ),
            },
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n".into(),
            ),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }

    /// Binds `addr` and serves `/metrics` and `/healthz` (HTTP/1.1) on the current tokio runtime
    /// until it shuts down. Returns the bound address (`addr` may have port 0); a binding error
    /// names `addr`.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let with_addr = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("binding metrics address {addr}: {e}"))
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(with_addr)?;
        let local = listener.local_addr().map_err(with_addr)?;
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin.
                        tracing::warn!(%local, "metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let telemetry = self.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let resp = telemetry.respond(req.method(), req.uri().path());
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let served = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!("metrics endpoint: connection: {e}");
                    }
                });
            }
        });
        Ok(local)
    }

    /// Writes [`Telemetry::encode`] to `path` atomically (a temporary file beside it, renamed):
    /// for a batch run's metrics, read by a textfile collector or the nightly runner.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let named = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("writing metrics to {}: {e}", path.display()),
            )
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.encode()).map_err(named)?;
        std::fs::rename(&tmp, path).map_err(named)
    }
}
