//! Prometheus metrics (text exposition format) and the `/metrics` + `/healthz` endpoint.
//!
//! Counters and gauges live behind short-lived mutexes (never held across an `.await`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the flush-latency histogram buckets.
const FLUSH_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, u64>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    buffered: AtomicU64,
    flush_counts: Mutex<[u64; FLUSH_BUCKETS.len() + 1]>,
    flush_sum_us: AtomicU64,
    /// Why `/healthz` is unhealthy (`None`: healthy).
    stalled: Mutex<Option<String>>,
    remaining: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn inc(&self, name: &'static str, by: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(name).or_insert(0) += by;
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Ok(mut l) = self.lag.lock() {
            l.insert((topic.to_string(), partition), lag);
        }
    }

    /// Forgets every partition's lag (on a rebalance: the partitions may now be someone else's).
    pub fn clear_lag(&self) {
        if let Ok(mut l) = self.lag.lock() {
            l.clear();
        }
    }

    /// Makes `/healthz` answer 503 with `reason` (the archiver stalled), or 200 again (`None`);
    /// the gauge `loglake_stalled` is 1 while stalled.
    pub fn set_stalled(&self, reason: Option<String>) {
        if let Ok(mut s) = self.stalled.lock() {
            *s = reason;
        }
    }

    /// The unhealthy reason, if any.
    pub fn stalled(&self) -> Option<String> {
        self.stalled.lock().ok().and_then(|s| s.clone())
    }

    /// Records left to read in the table's assigned partitions (to the frozen ends in
    /// `--until-end` mode, to the broker's high watermarks otherwise).
    pub fn set_records_remaining(&self, table: &str, n: u64) {
        if let Ok(mut r) = self.remaining.lock() {
            r.insert(table.to_string(), n);
        }
    }

    pub fn set_buffered(&self, bytes: u64) {
        self.buffered.store(bytes, Ordering::Relaxed);
    }

    pub fn observe_flush(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = FLUSH_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(FLUSH_BUCKETS.len());
        if let Ok(mut c) = self.flush_counts.lock() {
            c[i] += 1;
        }
        self.flush_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(c) = self.counters.lock() {
            for (name, v) in c.iter() {
                out.push_str(&format!("# TYPE {name} counter\n{name} {v}\n"));
            }
        }
        out.push_str(&format!(
            "# TYPE loglake_buffered_bytes gauge\nloglake_buffered_bytes {}\n",
            self.buffered.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "# TYPE loglake_stalled gauge\nloglake_stalled {}\n",
            u8::from(self.stalled().is_some())
        ));
        if let Ok(r) = self.remaining.lock() {
            out.push_str("# TYPE loglake_records_remaining gauge\n");
            for (t, v) in r.iter() {
                out.push_str(&format!("loglake_records_remaining{{table=\"{t}\"}} {v}\n"));
            }
        }
        if let Ok(l) = self.lag.lock() {
            out.push_str("# TYPE loglake_consumer_lag gauge\n");
            for ((t, p), v) in l.iter() {
                out.push_str(&format!(
                    "loglake_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {v}\n"
                ));
            }
        }
        if let Ok(c) = self.flush_counts.lock() {
            out.push_str("# TYPE loglake_flush_seconds histogram\n");
            let mut cum = 0;
            for (i, b) in FLUSH_BUCKETS.iter().enumerate() {
                cum += c[i];
                out.push_str(&format!(
                    "loglake_flush_seconds_bucket{{le=\"{b}\"}} {cum}\n"
                ));
            }
            cum += c[FLUSH_BUCKETS.len()];
            out.push_str(&format!(
                "loglake_flush_seconds_bucket{{le=\"+Inf\"}} {cum}\n"
            ));
            out.push_str(&format!(
                "loglake_flush_seconds_sum {}\nloglake_flush_seconds_count {cum}\n",
                self.flush_sum_us.load(Ordering::Relaxed) as f64 / 1e6
            ));
        }
        out
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `addr` until the runtime shuts down.
pub async fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read until the request line is complete: a client may send it in pieces.
                let mut buf = [0u8; 2048];
                let mut n = 0;
                while n < buf.len() && !buf[..n].contains(&b'\n') {
                    match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf[n..]))
                        .await
                    {
                        Ok(Ok(0)) => break,
                        Ok(Ok(k)) => n += k,
                        _ => return,
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render()),
                    "/healthz" => match metrics.stalled() {
                        None => ("200 OK", "ok\n".to_string()),
                        Some(r) => ("503 Service Unavailable", format!("stalled: {r}\n")),
                    },
                    _ => ("404 Not Found", "not found\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(local)
}
