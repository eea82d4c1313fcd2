//! An S3 fault proxy for the tests: an HTTP/1.1 proxy on 127.0.0.1 between loglake and the
//! test S3 server that, at a chosen rate, answers a request itself instead of forwarding it —
//! `503 SlowDown`, `500 InternalError` (S3's XML error bodies), or a connection closed without
//! an answer — or forwards it late. A faulted request never reaches the store, so what the test
//! checks is that loglake's retries (object_store's, then its own commit protocol) lose and
//! duplicate nothing; answers lost *after* the store acted are not injected (yet).
//!
//! Deterministic: request `n` gets the fault its place in a fixed schedule gives it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the proxy did, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub slow_down: AtomicU64,
    pub internal_error: AtomicU64,
    pub reset: AtomicU64,
    pub delayed: AtomicU64,
    /// Answers lost after the store acted.
    pub lost: AtomicU64,
    /// Delta commits (PUTs of `_delta_log/*.json`) seen.
    pub commits: AtomicU64,
}

impl FaultCounts {
    /// (requests, 503s, 500s, resets, delays).
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            g(&self.requests),
            g(&self.slow_down),
            g(&self.internal_error),
            g(&self.reset),
            g(&self.delayed),
        )
    }

    /// Faults answered instead of forwarding (503 + 500 + resets).
    pub fn refused(&self) -> u64 {
        let (_, a, b, c, _) = self.snapshot();
        a + b + c
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// The endpoint URL to give loglake (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    SlowDown,
    InternalError,
    Reset,
    Delay,
    /// Forwarded, then the connection is closed instead of passing the store's answer on.
    LostAnswer,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fault of request `n`: in every run of `period` requests (offset by `seed`), one 503,
/// one 500 and one reset, spread out, and as many delays: `3 / period` of the requests are
/// refused (`period` 60: 5 %), each kind once in any `period` consecutive requests.
fn fault_for(seed: u64, n: u64, period: u64, lost_answers: bool) -> Fault {
    let period = period.max(6);
    let third = period / 3;
    match (n + seed) % period {
        x if x == 7 % period => Fault::SlowDown,
        x if x == (7 + third) % period => Fault::InternalError,
        x if x == (7 + 2 * third) % period => Fault::Reset,
        x if x % third == (13 % third) => Fault::Delay,
        x if lost_answers && x == (7 + third / 2) % period => Fault::LostAnswer,
        _ => Fault::None,
    }
}

fn s3_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the loglake test fault proxy</Message></Error>"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.context("request body")?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?;
    let mut out = client.request(method, format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if k != hyper::header::HOST && k != hyper::header::CONNECTION {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = out.body(body).send().await.context("upstream")?;
    let status = StatusCode::from_u16(resp.status().as_u16())?;
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.context("upstream body")?;
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    for (k, v) in &headers {
        if k.as_str() == "transfer-encoding" || k.as_str() == "connection" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.as_str().as_bytes()),
            hyper::header::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            r.headers_mut().append(name, value);
        }
    }
    Ok(r)
}

/// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:PORT`) refusing 3 of every `period`
/// requests (and delaying 3 by up to `max_delay`), deterministically for `seed`.
pub async fn start(
    upstream: &str,
    period: u64,
    max_delay: Duration,
    seed: u64,
    lost_answers: bool,
) -> Result<FaultProxy> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(FaultCounts::default());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let upstream = upstream.trim_end_matches('/').to_string();
    let c = counts.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (client, upstream, counts) = (client.clone(), upstream.clone(), c.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, upstream, counts) =
                        (client.clone(), upstream.clone(), counts.clone());
                    async move {
                        let n = counts.requests.fetch_add(1, Ordering::Relaxed);
                        let mut fault = fault_for(seed, n, period, lost_answers);
                        // the ambiguous case of a Delta commit: the store wrote the version, the
                        // writer never heard: the answer of every third commit is lost
                        let commit = req.method() == hyper::Method::PUT
                            && req.uri().path().contains("/_delta_log/")
                            && req.uri().path().ends_with(".json");
                        if lost_answers && commit {
                            let k = counts.commits.fetch_add(1, Ordering::Relaxed);
                            fault = if k % 3 == 1 {
                                Fault::LostAnswer
                            } else {
                                Fault::None
                            };
                        }
                        match fault {
                            Fault::SlowDown => {
                                counts.slow_down.fetch_add(1, Ordering::Relaxed);
                                return Ok(s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"));
                            }
                            Fault::InternalError => {
                                counts.internal_error.fetch_add(1, Ordering::Relaxed);
                                return Ok(s3_error(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "InternalError",
                                ));
                            }
                            Fault::Reset => {
                                counts.reset.fetch_add(1, Ordering::Relaxed);
                                // an error from the service: hyper closes the connection
                                // without an answer
                                return Err(anyhow::anyhow!("injected reset"));
                            }
                            Fault::Delay => {
                                counts.delayed.fetch_add(1, Ordering::Relaxed);
                                let ms = splitmix(seed ^ n) % (max_delay.as_millis() as u64 + 1);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            Fault::None | Fault::LostAnswer => {}
                        }
                        let answer = forward(&client, &upstream, req).await;
                        if fault == Fault::LostAnswer {
                            counts.lost.fetch_add(1, Ordering::Relaxed);
                            return Err(anyhow::anyhow!("injected lost answer"));
                        }
                        match answer {
                            Ok(r) => Ok(r),
                            Err(e) => Ok(s3_error(
                                StatusCode::BAD_GATEWAY,
                                &format!("ProxyUpstream: {e}"),
                            )),
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(FaultProxy { addr, counts, task })
}

#[cfg(test)]
mod tests {
    use super::{Fault, fault_for};

    #[test]
    fn three_in_sixty_are_refused_one_of_each_kind() {
        let faults: Vec<Fault> = (0..6_000).map(|i| fault_for(5, i, 60, false)).collect();
        let count = |f: Fault| faults.iter().filter(|x| **x == f).count();
        for f in [Fault::SlowDown, Fault::InternalError, Fault::Reset] {
            assert_eq!(count(f), 100, "{f:?}");
        }
        assert_eq!(count(Fault::Delay), 300);
        for f in [Fault::SlowDown, Fault::InternalError, Fault::Reset] {
            assert!(
                faults[17..77].contains(&f),
                "{f:?} not in 60 consecutive requests"
            );
        }
    }
}
