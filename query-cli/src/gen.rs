//! Deterministic synthetic container logs in the canonical loglake shape (ts, ingest_ts, cluster,
//! namespace, pod, container, node, app, service, stream, level, message, trace_id, span_id,
//! labels, attrs, kafka_topic/partition/offset, dt, hour), written as a Delta table partitioned by
//! `dt` and `hour`. Used by the tests (small tables) and the benchmark (50 M+ rows); other stages
//! can call [`write_delta`] too.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Total rows.
    pub rows: usize,
    /// First timestamp, microseconds since the epoch (UTC).
    pub start_micros: i64,
    /// Time span covered, seconds.
    pub span_secs: i64,
    /// Number of pods.
    pub pods: usize,
    /// Random seed.
    pub seed: u64,
    /// Rows per record batch.
    pub batch_rows: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            rows: 10_000,
            // 2024-05-01T00:00:00Z
            start_micros: 1_714_521_600_000_000,
            span_secs: 86_400,
            pods: 200,
            seed: 42,
            batch_rows: 65_536,
        }
    }
}

/// The canonical container-log schema (timestamps in microseconds UTC).
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let map = || {
        DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        Field::new("ts", ts.clone(), false),
        Field::new("ingest_ts", ts, false),
        Field::new("cluster", DataType::Utf8, false),
        Field::new("namespace", DataType::Utf8, false),
        Field::new("pod", DataType::Utf8, false),
        Field::new("container", DataType::Utf8, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("app", DataType::Utf8, true),
        Field::new("service", DataType::Utf8, true),
        Field::new("stream", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("labels", map(), true),
        Field::new("attrs", map(), true),
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("dt", DataType::Date32, false),
        Field::new("hour", DataType::Int32, false),
    ]))
}

/// xorshift64*: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

const NAMESPACES: &[&str] = &[
    "payments",
    "checkout",
    "search",
    "auth",
    "ingress",
    "kube-system",
    "monitoring",
    "orders",
];
const CONTAINERS: &[&str] = &["app", "sidecar", "envoy"];
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/pay",
    "/healthz",
    "/api/v2/search",
    "/login",
    "/metrics",
];

fn level_of(r: u64) -> &'static str {
    match r % 1000 {
        0..=9 => "ERROR",
        10..=49 => "WARN",
        50..=199 => "DEBUG",
        _ => "INFO",
    }
}

/// Generate the rows as record batches of `cfg.batch_rows`, in time order per batch.
pub fn batches(cfg: &GenConfig) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
    let schema = schema();
    let mut rng = Rng::new(cfg.seed);
    let mut done = 0usize;
    let step = (cfg.span_secs.max(1) as f64 * 1e6) / cfg.rows.max(1) as f64;
    let mut offsets = vec![0i64; 12];
    std::iter::from_fn(move || {
        if done >= cfg.rows {
            return None;
        }
        let n = cfg.batch_rows.min(cfg.rows - done);
        let r = build_batch(&schema, cfg, &mut rng, done, n, step, &mut offsets);
        done += n;
        Some(r)
    })
}

#[allow(clippy::too_many_arguments)]
fn build_batch(
    schema: &SchemaRef,
    cfg: &GenConfig,
    rng: &mut Rng,
    first: usize,
    n: usize,
    step: f64,
    offsets: &mut [i64],
) -> Result<RecordBatch> {
    let tz: Arc<str> = "UTC".into();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(Arc::clone(&tz));
    let mut ingest = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(tz);
    let mut s: Vec<StringBuilder> = (0..12)
        .map(|_| StringBuilder::with_capacity(n, n * 12))
        .collect();
    let mut message = StringBuilder::with_capacity(n, n * 80);
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut labels = MapBuilder::new(
        Some(names.clone()),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut attrs = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    let mut kpart = Int32Builder::with_capacity(n);
    let mut koff = Int64Builder::with_capacity(n);
    let mut dt = Date32Builder::with_capacity(n);
    let mut hour = Int32Builder::with_capacity(n);
    for i in 0..n {
        let row = first + i;
        let t = cfg.start_micros + (row as f64 * step) as i64 + rng.below(1000) as i64;
        let pod_i = rng.below(cfg.pods as u64) as usize;
        let ns = NAMESPACES[pod_i % NAMESPACES.len()];
        let app = format!("{ns}-svc{}", pod_i % 5);
        let pod = format!(
            "{app}-{:08x}-{:05x}",
            (pod_i as u64).wrapping_mul(2_654_435_761) & 0xffff_ffff,
            pod_i
        );
        let container =
            CONTAINERS[(rng.below(10) as usize).min(2) * usize::from(rng.below(4) == 0)];
        let node = format!("node-{:03}", pod_i % 40);
        let r = rng.next_u64();
        let level = level_of(r);
        // one in five requests carries a trace; trace ids repeat across services in a window
        let trace = r.is_multiple_of(5).then(|| {
            format!(
                "{:032x}",
                (row as u64 / 7).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
        });
        let span = trace.as_ref().map(|_| format!("{:016x}", rng.next_u64()));
        let msg = match (level, r % 7) {
            ("ERROR", 0) => format!(
                "OOMKilled: container {container} exceeded memory limit {} Mi",
                256 << (r % 3)
            ),
            ("ERROR", 1 | 2) => format!(
                "request {} failed: upstream timeout after {}ms host=10.{}.{}.{}:8080",
                (row as u64).wrapping_mul(0x5851_F42D_4C95_7F2D) >> 32,
                100 + r % 900,
                r % 250,
                (r >> 8) % 250,
                (r >> 16) % 250
            ),
            ("ERROR", _) => format!(
                "error writing /var/lib/app/data/{}.db: disk quota exceeded",
                r % 100
            ),
            ("WARN", _) => format!(
                "slow query took {}ms rows={} table=orders_{}",
                500 + r % 5000,
                r % 10_000,
                r % 16
            ),
            (_, 0 | 1) => format!(
                "{{\"level\":\"{}\",\"msg\":\"request done\",\"path\":\"{}\",\"status\":{},\"latency_ms\":{},\"user_id\":{}}}",
                level.to_ascii_lowercase(),
                PATHS[(r % 6) as usize],
                [200, 200, 200, 201, 404, 500][((r >> 4) % 6) as usize],
                r % 2000,
                (r >> 20) % 100_000
            ),
            _ => format!(
                "GET {} 200 {}ms user={} req_id={:016x}",
                PATHS[(r % 6) as usize],
                r % 300,
                (r >> 12) % 50_000,
                rng.next_u64()
            ),
        };
        ts.append_value(t);
        ingest.append_value(t + 200_000 + (r % 3_000_000) as i64);
        s[0].append_value("prod-eu-1");
        s[1].append_value(ns);
        s[2].append_value(&pod);
        s[3].append_value(container);
        s[4].append_value(&node);
        s[5].append_value(&app);
        s[6].append_value(&app);
        s[7].append_value(if level == "ERROR" || level == "WARN" {
            "stderr"
        } else {
            "stdout"
        });
        s[8].append_value(level);
        message.append_value(&msg);
        match &trace {
            Some(tr) => s[9].append_value(tr),
            None => s[9].append_null(),
        }
        match &span {
            Some(sp) => s[10].append_value(sp),
            None => s[10].append_null(),
        }
        labels.keys().append_value("app");
        labels.values().append_value(&app);
        labels.keys().append_value("team");
        labels.values().append_value(ns);
        labels.append(true).map_err(DataFusionError::from)?;
        attrs.keys().append_value("logger");
        attrs
            .values()
            .append_value(if r.is_multiple_of(2) { "http" } else { "db" });
        attrs.append(true).map_err(DataFusionError::from)?;
        let part = (pod_i % 12) as i32;
        s[11].append_value("k8s-logs");
        kpart.append_value(part);
        offsets[part as usize] += 1;
        koff.append_value(offsets[part as usize]);
        let secs = t.div_euclid(1_000_000);
        dt.append_value(secs.div_euclid(86_400) as i32);
        hour.append_value((secs.rem_euclid(86_400) / 3600) as i32);
    }
    let a: Vec<ArrayRef> = s
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let [
        cluster,
        ns,
        pod,
        container,
        node,
        app,
        service,
        stream,
        level,
        trace,
        span,
        topic,
    ] = <[ArrayRef; 12]>::try_from(a)
        .map_err(|_| DataFusionError::Internal("12 string columns".into()))?;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(ingest.finish()),
        cluster,
        ns,
        pod,
        container,
        node,
        app,
        service,
        stream,
        level,
        Arc::new(message.finish()),
        trace,
        span,
        Arc::new(labels.finish()),
        Arc::new(attrs.finish()),
        topic,
        Arc::new(kpart.finish()),
        Arc::new(koff.finish()),
        Arc::new(dt.finish()),
        Arc::new(hour.finish()),
    ];
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}

/// Write `cfg.rows` generated rows to a Delta table at `location` (created if missing),
/// partitioned by `dt` and `hour`, committing every `rows_per_commit` rows.
pub async fn write_delta(location: &str, cfg: &GenConfig, rows_per_commit: usize) -> Result<u64> {
    if !location.contains("://") {
        std::fs::create_dir_all(location).map_err(|e| DataFusionError::External(Box::new(e)))?;
    }
    let url = crate::lake::to_url(location)?;
    let de = |e: deltalake::DeltaTableError| DataFusionError::External(Box::new(e));
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut version = 0u64;
    let mut it = batches(cfg).peekable();
    while let Some(b) = it.next() {
        let b = b?;
        pending_rows += b.num_rows();
        pending.push(b);
        if pending_rows >= rows_per_commit || it.peek().is_none() {
            let table = deltalake::DeltaTable::try_from_url_with_storage_options(
                url.clone(),
                crate::lake::storage_options(),
            )
            .await
            .map_err(de)?;
            let t = table
                .write(std::mem::take(&mut pending))
                .with_partition_columns(["dt", "hour"])
                .with_save_mode(deltalake::protocol::SaveMode::Append)
                .await
                .map_err(de)?;
            version = t.version().unwrap_or(0) as u64;
            pending_rows = 0;
        }
    }
    Ok(version)
}
