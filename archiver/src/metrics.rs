//! The archiver's metrics ([`ArchiverMetrics`], OpenMetrics text through `prometheus-client`),
//! registered in the process's [`Telemetry`] (`loglake_lake::telemetry`), which serves
//! `/metrics` and `/healthz`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use loglake_lake::telemetry::{Health, OPENMETRICS_CONTENT_TYPE, StageMetrics, Telemetry};

/// Upper bounds (seconds) of the flush-latency histogram buckets.
pub const FLUSH_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    table: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedactionLabels {
    table: String,
    pattern: String,
}

/// A gauge of a count or a byte size.
type U64Gauge = Gauge<u64, AtomicU64>;

/// The archiver's metrics (`loglake archive`). Counters are exposed with a `_total` suffix
/// (OpenMetrics): the field `commits` is `loglake_commits_total`.
#[derive(Debug)]
pub struct ArchiverMetrics {
    /// Kafka records accepted for decoding (`loglake_records_in_total`).
    pub records_in: Counter,
    /// Payload bytes of those records (`loglake_bytes_in_total`).
    pub bytes_in: Counter,
    /// Parquet files uploaded (`loglake_files_written_total`).
    pub files_written: Counter,
    /// Bytes of those files (`loglake_bytes_written_total`).
    pub bytes_written: Counter,
    /// Rows committed to the data tables (`loglake_rows_written_total`).
    pub rows_written: Counter,
    /// Delta commits, data and dead-letter tables (`loglake_commits_total`).
    pub commits: Counter,
    /// Partition revocations and assignments (`loglake_rebalances_total`).
    pub rebalances: Counter,
    /// Rows whose Kafka time is more than `--late-after` after their event time
    /// (`loglake_late_rows_total`).
    pub late_rows: Counter,
    /// Open files closed early by the memory budget (`loglake_budget_flushes_total`).
    pub budget_flushes: Counter,
    /// Commits refused because another writer advanced our partitions' offsets
    /// (`loglake_offset_conflicts_total`).
    pub offset_conflicts: Counter,
    /// Records that failed to decode (`loglake_dead_letters_total`).
    pub dead_letters: Counter,
    /// Dead letters committed to the dead-letter table (`loglake_dead_letters_committed_total`).
    pub dead_letters_committed: Counter,
    /// Bytes held by open files and buffers (`loglake_buffered_bytes`).
    pub buffered_bytes: U64Gauge,
    /// Per assigned (topic, partition): high watermark minus committed offset
    /// (`loglake_consumer_lag{topic,partition}`).
    consumer_lag: Family<PartitionLabels, Gauge>,
    /// Seconds from the start of a commit round to its end (`loglake_flush_seconds`).
    flush_seconds: Histogram,
    /// 1 while the archiver is stalled, else 0 (`loglake_stalled`).
    stalled: Gauge,
    /// Per table: records still to archive (`loglake_records_remaining{table}`).
    records_remaining: Family<TableLabels, U64Gauge>,
    /// Per table: rows the archive-time filter dropped (`loglake_etl_rows_filtered_total{table}`).
    etl_rows_filtered: Family<TableLabels, Counter>,
    /// Per table and pattern: redactions applied (`loglake_etl_redactions_total{table,pattern}`).
    etl_redactions: Family<RedactionLabels, Counter>,
    /// Per table: records an ETL expression failed on, sent to the dead letters
    /// (`loglake_etl_failures_total{table}`).
    etl_failures: Family<TableLabels, Counter>,
    /// Per source table and route table: rows committed to the route table
    /// (`loglake_etl_rows_routed_total{table,route}`).
    etl_rows_routed: Family<RouteLabels, Counter>,
    health: Health,
}

impl Default for ArchiverMetrics {
    /// Metrics with a health of their own (nothing serves them): for runs without an endpoint.
    fn default() -> Self {
        Self::new(Health::default())
    }
}

impl ArchiverMetrics {
    /// The archiver's metrics, reporting into `health` (usually [`Telemetry::health`]).
    pub fn new(health: Health) -> Self {
        Self {
            records_in: Counter::default(),
            bytes_in: Counter::default(),
            files_written: Counter::default(),
            bytes_written: Counter::default(),
            rows_written: Counter::default(),
            commits: Counter::default(),
            rebalances: Counter::default(),
            late_rows: Counter::default(),
            budget_flushes: Counter::default(),
            offset_conflicts: Counter::default(),
            dead_letters: Counter::default(),
            dead_letters_committed: Counter::default(),
            buffered_bytes: U64Gauge::default(),
            consumer_lag: Family::default(),
            flush_seconds: Histogram::new(FLUSH_BUCKETS),
            stalled: Gauge::default(),
            records_remaining: Family::default(),
            etl_rows_filtered: Family::default(),
            etl_redactions: Family::default(),
            etl_failures: Family::default(),
            etl_rows_routed: Family::default(),
            health,
        }
    }

    /// The health `/healthz` reports: the consumer loop makes it unhealthy with
    /// `metrics.health().set_unhealthy(reason)` (e.g. together with `set_stalled(true)`) and
    /// healthy again with `set_healthy()`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Sets `loglake_consumer_lag{topic,partition}`.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_string(),
                partition,
            })
            .set(lag);
    }

    /// Forgets every partition's lag (on a rebalance: the partitions may now be someone else's).
    pub fn clear_lag(&self) {
        self.consumer_lag.clear();
    }

    /// Counts one commit round's duration in `loglake_flush_seconds`.
    pub fn observe_flush(&self, d: Duration) {
        self.flush_seconds.observe(d.as_secs_f64());
    }

    /// Sets `loglake_stalled` to 1 (`true`) or 0: whether the archiver is stalled (makes no
    /// progress although records are waiting). The gauge only; to fail `/healthz` as well, call
    /// [`Health::set_unhealthy`] on [`ArchiverMetrics::health`].
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.set(i64::from(stalled));
    }

    /// Sets `loglake_records_remaining{table}`: how many records of the topics feeding `table`
    /// are still to be archived (e.g. high watermarks minus committed offsets).
    pub fn set_records_remaining(&self, table: &str, n: u64) {
        self.records_remaining
            .get_or_create(&TableLabels {
                table: table.to_string(),
            })
            .set(n);
    }
}

impl ArchiverMetrics {
    /// Counts rows the archive-time filter of `table` dropped.
    pub fn add_etl_filtered(&self, table: &str, n: u64) {
        self.etl_rows_filtered
            .get_or_create(&TableLabels {
                table: table.to_string(),
            })
            .inc_by(n);
    }

    /// Counts redactions of `pattern` (a named pattern, or `redact[i]`) in `table`.
    pub fn add_etl_redactions(&self, table: &str, pattern: &str, n: u64) {
        self.etl_redactions
            .get_or_create(&RedactionLabels {
                table: table.to_string(),
                pattern: pattern.to_string(),
            })
            .inc_by(n);
    }

    /// Counts rows of `table` committed to its route table `route`.
    pub fn add_etl_routed(&self, table: &str, route: &str, n: u64) {
        self.etl_rows_routed
            .get_or_create(&RouteLabels {
                table: table.to_string(),
                route: route.to_string(),
            })
            .inc_by(n);
    }

    /// Counts records of `table` that an ETL expression failed on (sent to the dead letters).
    pub fn add_etl_failures(&self, table: &str, n: u64) {
        self.etl_failures
            .get_or_create(&TableLabels {
                table: table.to_string(),
            })
            .inc_by(n);
    }
}

impl StageMetrics for ArchiverMetrics {
    fn register(&self, r: &mut Registry) {
        for (name, help, counter) in self.counters() {
            r.register(name, help, counter.clone());
        }
        self.register_gauges(r);
        self.register_etl(r);
    }
}

impl ArchiverMetrics {
    /// The plain counters: (name without `_total`, help, counter), in registration order.
    fn counters(&self) -> [(&'static str, &'static str, &Counter); 12] {
        [
            (
                "loglake_records_in",
                "Kafka records accepted for decoding",
                &self.records_in,
            ),
            (
                "loglake_bytes_in",
                "Payload bytes of the Kafka records accepted",
                &self.bytes_in,
            ),
            (
                "loglake_files_written",
                "Parquet files uploaded",
                &self.files_written,
            ),
            (
                "loglake_bytes_written",
                "Bytes of the Parquet files uploaded",
                &self.bytes_written,
            ),
            (
                "loglake_rows_written",
                "Rows committed to the data tables",
                &self.rows_written,
            ),
            (
                "loglake_commits",
                "Delta commits (data and dead-letter tables)",
                &self.commits,
            ),
            (
                "loglake_rebalances",
                "Partition revocations and assignments",
                &self.rebalances,
            ),
            (
                "loglake_late_rows",
                "Rows whose Kafka timestamp is more than --late-after after their event time",
                &self.late_rows,
            ),
            (
                "loglake_budget_flushes",
                "Open files closed early by the memory budget",
                &self.budget_flushes,
            ),
            (
                "loglake_offset_conflicts",
                "Commits refused because another writer advanced the partitions' offsets",
                &self.offset_conflicts,
            ),
            (
                "loglake_dead_letters",
                "Records that failed to decode",
                &self.dead_letters,
            ),
            (
                "loglake_dead_letters_committed",
                "Dead letters committed to the dead-letter table",
                &self.dead_letters_committed,
            ),
        ]
    }

    /// The gauges, the per-partition lag and the flush histogram.
    fn register_gauges(&self, r: &mut Registry) {
        r.register(
            "loglake_buffered_bytes",
            "Bytes held by open files and buffers",
            self.buffered_bytes.clone(),
        );
        r.register(
            "loglake_consumer_lag",
            "High watermark minus committed offset, per assigned partition",
            self.consumer_lag.clone(),
        );
        r.register(
            "loglake_flush_seconds",
            "Duration of a commit round (finish files, upload, commit)",
            self.flush_seconds.clone(),
        );
        r.register(
            "loglake_stalled",
            "1 while the archiver is stalled, else 0",
            self.stalled.clone(),
        );
        r.register(
            "loglake_records_remaining",
            "Records still to archive, per table",
            self.records_remaining.clone(),
        );
    }

    /// The archive-time ETL's per-table families.
    fn register_etl(&self, r: &mut Registry) {
        r.register(
            "loglake_etl_rows_filtered",
            "Rows dropped by a table's archive-time filter",
            self.etl_rows_filtered.clone(),
        );
        r.register(
            "loglake_etl_redactions",
            "Redactions applied at archive time, per table and pattern",
            self.etl_redactions.clone(),
        );
        r.register(
            "loglake_etl_failures",
            "Records an archive-time expression failed on (sent to the dead letters)",
            self.etl_failures.clone(),
        );
        r.register(
            "loglake_etl_rows_routed",
            "Rows committed to a route table, per source table and route table",
            self.etl_rows_routed.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::header::CONTENT_TYPE;
    use hyper::{Method, Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    fn registered() -> (Arc<Telemetry>, Arc<ArchiverMetrics>) {
        let t = Arc::new(Telemetry::new());
        let m = Arc::new(ArchiverMetrics::new(t.health()));
        t.register(&*m);
        (t, m)
    }

    /// The sample lines (not `#` lines) of the exposition.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn the_exposition_keeps_every_metric_name() {
        let (t, m) = registered();
        m.commits.inc();
        m.commits.inc();
        m.bytes_in.inc_by(1234);
        m.buffered_bytes.set(4096);
        m.set_lag("k8s-logs", 3, 17);
        m.set_stalled(true);
        m.set_records_remaining("containers", 99);
        m.observe_flush(Duration::from_millis(300));
        let text = t.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let lines = samples(&text);
        for expected in [
            "loglake_records_in_total 0",
            "loglake_bytes_in_total 1234",
            "loglake_files_written_total 0",
            "loglake_bytes_written_total 0",
            "loglake_rows_written_total 0",
            "loglake_commits_total 2",
            "loglake_rebalances_total 0",
            "loglake_late_rows_total 0",
            "loglake_budget_flushes_total 0",
            "loglake_offset_conflicts_total 0",
            "loglake_dead_letters_total 0",
            "loglake_dead_letters_committed_total 0",
            "loglake_buffered_bytes 4096",
            "loglake_consumer_lag{topic=\"k8s-logs\",partition=\"3\"} 17",
            "loglake_flush_seconds_sum 0.3",
            "loglake_flush_seconds_count 1",
            "loglake_flush_seconds_bucket{le=\"0.25\"} 0",
            "loglake_flush_seconds_bucket{le=\"0.5\"} 1",
            "loglake_flush_seconds_bucket{le=\"60.0\"} 1",
            "loglake_flush_seconds_bucket{le=\"+Inf\"} 1",
            "loglake_stalled 1",
            "loglake_records_remaining{table=\"containers\"} 99",
        ] {
            assert!(lines.contains(&expected), "no {expected:?} in\n{text}");
        }
        // Exactly the buckets of FLUSH_BUCKETS, plus +Inf.
        let buckets = lines
            .iter()
            .filter(|l| l.starts_with("loglake_flush_seconds_bucket"))
            .count();
        assert_eq!(buckets, FLUSH_BUCKETS.len() + 1, "{text}");
        assert!(text.contains("# TYPE loglake_commits counter\n"), "{text}");
        assert!(
            text.contains("# TYPE loglake_flush_seconds histogram\n"),
            "{text}"
        );
    }

    #[test]
    fn a_rebalance_forgets_the_lag_and_gauges_can_go_back() {
        let (t, m) = registered();
        m.set_lag("t", 0, 5);
        m.set_lag("t", 1, 6);
        m.clear_lag();
        m.set_lag("t", 1, 0);
        m.set_stalled(true);
        m.set_stalled(false);
        m.set_records_remaining("a", 10);
        m.set_records_remaining("a", 0);
        let text = t.encode();
        let lines = samples(&text);
        assert!(!text.contains("partition=\"0\""), "{text}");
        for expected in [
            "loglake_consumer_lag{topic=\"t\",partition=\"1\"} 0",
            "loglake_stalled 0",
            "loglake_records_remaining{table=\"a\"} 0",
        ] {
            assert!(lines.contains(&expected), "no {expected:?} in\n{text}");
        }
    }

    #[test]
    fn healthz_answers_the_health_state_and_flips_back() {
        let (t, m) = registered();
        let body = |r: &Response<Full<Bytes>>| {
            use http_body_util::BodyExt;
            let b = r.body().clone();
            let bytes = futures::executor::block_on(b.collect())
                .expect("infallible")
                .to_bytes();
            String::from_utf8(bytes.to_vec()).expect("utf-8")
        };
        let r = t.respond(&Method::GET, "/healthz");
        assert_eq!((r.status(), body(&r).as_str()), (StatusCode::OK, "ok\n"));

        m.set_stalled(true);
        m.health()
            .set_unhealthy("stalled: no progress for 10m on containers");
        let r = t.respond(&Method::GET, "/healthz");
        assert_eq!(
            (r.status(), body(&r).as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "stalled: no progress for 10m on containers\n"
            )
        );
        // Telemetry's handle and the metrics' share one state.
        t.health().set_healthy();
        let r = t.respond(&Method::GET, "/healthz");
        assert_eq!((r.status(), body(&r).as_str()), (StatusCode::OK, "ok\n"));

        let r = t.respond(&Method::GET, "/metrics");
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body(&r).ends_with("# EOF\n"));
        assert_eq!(
            t.respond(&Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            t.respond(&Method::POST, "/metrics").status(),
            StatusCode::NOT_FOUND
        );
    }

    /// Over TCP, with hyper's client: the server answers, and a taken address is an error that
    /// names it.
    #[tokio::test]
    async fn the_endpoint_serves_over_http_and_names_an_address_it_cannot_bind() {
        let (t, m) = registered();
        m.rows_written.inc_by(7);
        let addr = t
            .clone()
            .serve("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let get = |path: &'static str| async move {
            use http_body_util::BodyExt;
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let req = Request::get(path)
                .header(hyper::header::HOST, addr.to_string())
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("request");
            let resp = sender.send_request(req).await.expect("response");
            let status = resp.status();
            let ct = resp.headers()[CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .to_string();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, ct, String::from_utf8(body.to_vec()).expect("utf-8"))
        };
        let (status, ct, body) = get("/metrics").await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::OK, OPENMETRICS_CONTENT_TYPE)
        );
        assert!(body.contains("\nloglake_rows_written_total 7\n"), "{body}");
        m.health().set_unhealthy("broken");
        let (status, _, body) = get("/healthz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "broken\n")
        );
        assert_eq!(get("/").await.0, StatusCode::NOT_FOUND);

        let err = t.serve(addr).await.expect_err("address in use");
        assert!(
            err.to_string().contains(&addr.to_string()),
            "error does not name {addr}: {err}"
        );
    }
}
