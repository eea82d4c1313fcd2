//! Seeded synthetic Kafka payloads in the shape real collectors write, for benchmarks and load
//! tests (`loglake gen`, `cargo bench -p loglake-schemas --bench decode`).
//!
//! [`FluentBitGen`] yields Fluent Bit JSON records as its kubernetes filter + Kafka output write
//! them (`@timestamp`, `log`, `stream`, `time`, `kubernetes{pod_name, namespace_name, labels,
//! annotations, host, container_name, docker_id, container_image…}`), with message shapes,
//! lengths, label cardinalities and a level mix modelled on the corpus (fluent-bit's kubernetes
//! suite, lnav's samples): plain text with a level (60 %), JSON structured logs with trace ids
//! (25 %), klog lines (10 %) and multi-line Java stack traces (5 %); about 10 % WARN/ERROR/FATAL.
//! Each namespace runs 6 apps x 3 replicas with 3 containers each (`app` logs 80 % of the lines);
//! pod ids, docker ids, image hashes, hosts and labels are fixed per container, as on a cluster.
//! The same seed always gives the same bytes.

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Random seed.
    pub seed: u64,
    /// Number of namespaces (`team-0` …); pods are drawn per namespace.
    pub namespaces: usize,
    /// Event time of the first record, Unix seconds.
    pub start_unix_secs: i64,
    /// Records per second of event time (the time axis advances by one second every this many
    /// records).
    pub records_per_second: u64,
    /// Records per thousand that are deliberately malformed (truncated JSON), to exercise dead
    /// letters.
    pub malformed_per_mille: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            seed: 0x5EED_1234_ABCD_0001,
            namespaces: 24,
            // 2024-05-01T10:00:00Z
            start_unix_secs: 1_714_557_600,
            records_per_second: 50,
            malformed_per_mille: 0,
        }
    }
}

/// An endless, deterministic stream of Fluent Bit JSON records (see the module docs).
#[derive(Debug, Clone)]
pub struct FluentBitGen {
    rng: Rng,
    opts: GenOptions,
    containers: Vec<Container>,
    i: u64,
    malformed: u64,
}

/// One running container: its namespace, pod and the Fluent Bit `kubernetes` object rendered
/// once (pod ids, docker ids, image hashes and labels belong to the container, not the record).
#[derive(Debug, Clone)]
struct Container {
    kubernetes: String,
}

/// 6 apps x 3 replicas x 3 containers per namespace, with stable ids drawn from the seed.
fn containers(r: &mut Rng, namespaces: usize) -> Vec<Container> {
    let mut out = Vec::new();
    for n in 0..namespaces.max(1) {
        let ns = format!("team-{n}");
        for a in 0..6 {
            let app = format!("{ns}-svc{a}");
            let template = r.below(1 << 32);
            let version = r.below(4);
            let image_minor = r.below(30);
            let annotations = if r.below(3) == 0 {
                ",\"annotations\":{\"prometheus.io/scrape\":\"true\",\"prometheus.io/port\":\"9090\"}"
            } else {
                ""
            };
            for _ in 0..3 {
                let pod = format!("{app}-{template:x}-{:05x}", r.below(1 << 20));
                let pod_id = r.below(1 << 32);
                let host = format!(
                    "ip-10-49-{}-{}.eu-west-1.compute.internal",
                    r.below(16),
                    r.below(256)
                );
                for container in ["app", "istio-proxy", "sidecar"] {
                    let kubernetes = format!(
                        "{{\"pod_name\":\"{pod}\",\"namespace_name\":\"{ns}\",\"pod_id\":\"{pod_id:08x}-55f2-11e9-84c5-02e422b8a84a\",\"labels\":{{\"app\":\"{app}\",\"app.kubernetes.io/name\":\"{app}\",\"pod-template-hash\":\"{template:x}\",\"version\":\"v{version}\"}}{annotations},\"host\":\"{host}\",\"container_name\":\"{container}\",\"docker_id\":\"{:016x}{:016x}{:016x}{:016x}\",\"container_hash\":\"registry.example.com/{app}@sha256:{:016x}\",\"container_image\":\"registry.example.com/{app}:1.{image_minor}.0\"}}",
                        r.next_u64(),
                        r.next_u64(),
                        r.next_u64(),
                        r.next_u64(),
                        r.next_u64(),
                    );
                    out.push(Container { kubernetes });
                }
            }
        }
    }
    out
}

impl FluentBitGen {
    /// A generator with these settings.
    pub fn new(opts: GenOptions) -> Self {
        let mut rng = Rng::new(opts.seed);
        let containers = containers(&mut rng, opts.namespaces);
        Self {
            rng,
            opts,
            containers,
            i: 0,
            malformed: 0,
        }
    }

    /// The next record's bytes.
    pub fn next_record(&mut self) -> Vec<u8> {
        let sec = self.opts.start_unix_secs + (self.i / self.opts.records_per_second.max(1)) as i64;
        self.i += 1;
        // the app container logs most; sidecars (istio-proxy, sidecar) a fifth of the lines
        let r = &mut self.rng;
        let pod = r.below((self.containers.len() / 3) as u64) as usize;
        let c = if r.below(5) == 0 {
            1 + r.below(2) as usize
        } else {
            0
        };
        let rec = record(r, sec, &self.containers[pod * 3 + c]);
        if self.opts.malformed_per_mille > 0 && self.rng.below(1000) < self.opts.malformed_per_mille
        {
            // cut inside the envelope: never valid JSON
            self.malformed += 1;
            let cut = rec.len() / 2;
            return rec.as_bytes()[..cut].to_vec();
        }
        rec.into_bytes()
    }

    /// How many of the records so far were malformed on purpose.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Records until their total size reaches `bytes`.
    pub fn take_bytes(&mut self, bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut total = 0;
        while total < bytes {
            let r = self.next_record();
            total += r.len();
            out.push(r);
        }
        out
    }
}

impl Iterator for FluentBitGen {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        Some(self.next_record())
    }
}

/// xorshift64*: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; 0 is mapped to a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// One element of `v` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "request",
    "user",
    "order",
    "payment",
    "cache",
    "miss",
    "hit",
    "connection",
    "timeout",
    "retry",
    "upstream",
    "handler",
    "completed",
    "started",
    "GET",
    "POST",
    "/api/v1/orders",
    "/healthz",
    "db",
    "query",
    "took",
    "ms",
    "session",
    "token",
    "refresh",
    "pool",
    "worker",
    "job",
    "queue",
    "shard",
    "replica",
    "leader",
    "elected",
    "sync",
];

fn sentence(r: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(r.pick(WORDS));
        if r.below(8) == 0 {
            s.push_str(&format!(" {}", r.below(100_000)));
        }
    }
    s
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// One Fluent Bit record as its Kafka output writes it (format json, timestamp_key @timestamp),
/// with event time `sec` (Unix seconds).
fn record(r: &mut Rng, sec: i64, c: &Container) -> String {
    let levels = [
        "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR",
    ];
    let level = if r.below(100) == 0 {
        "FATAL"
    } else {
        levels[r.below(10) as usize]
    };
    let micros = r.below(1_000_000);
    let time = chrono::DateTime::from_timestamp(sec, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    // message shapes: plain text with a level (60%), JSON structured log (25%), klog (10%), stack trace (5%)
    let shape = r.below(100);
    let msg = if shape < 60 {
        let n = 4 + r.below(20) as usize;
        format!(
            "{time}.{micros:06}Z {level} [{}] {}",
            r.pick(WORDS),
            sentence(r, n)
        )
    } else if shape < 85 {
        let n = 3 + r.below(12) as usize;
        format!(
            "{{\"level\":\"{}\",\"msg\":{},\"trace_id\":\"{:032x}\",\"duration_ms\":{},\"user_id\":{}}}",
            level.to_lowercase(),
            json_escape(&sentence(r, n)),
            (r.next_u64() as u128) << 64 | r.next_u64() as u128,
            r.below(5000),
            r.below(1_000_000)
        )
    } else if shape < 95 {
        let n = 5 + r.below(10) as usize;
        format!(
            "{}0501 10:00:00.{micros:06}       1 main.go:{}] {}",
            &level[..1],
            r.below(900),
            sentence(r, n)
        )
    } else {
        let mut s = format!(
            "{level} Exception in thread \"main\" java.lang.IllegalStateException: {}",
            sentence(r, 6)
        );
        for _ in 0..(10 + r.below(30)) {
            s.push_str(&format!(
                "\n\tat com.example.{}.{}(App.java:{})",
                r.pick(WORDS),
                r.pick(WORDS),
                r.below(500)
            ));
        }
        s
    };
    format!(
        "{{\"@timestamp\":{sec}.{micros:06},\"log\":{},\"stream\":\"{}\",\"time\":\"{time}.{micros:06}123Z\",\"kubernetes\":{}}}",
        json_escape(&format!("{msg}\n")),
        if r.below(5) == 0 { "stderr" } else { "stdout" },
        c.kubernetes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecoderOptions, RawRecord, decoder_for};

    #[test]
    fn same_seed_same_bytes_and_every_record_decodes() {
        let a: Vec<Vec<u8>> = FluentBitGen::new(GenOptions::default()).take(500).collect();
        let b: Vec<Vec<u8>> = FluentBitGen::new(GenOptions::default()).take(500).collect();
        assert_eq!(a, b);
        let mut dec = decoder_for("fluentbit", &DecoderOptions::default()).expect("decoder");
        let recs: Vec<RawRecord<'_>> = a
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord::new("logs", 0, i as i64, p))
            .collect();
        let out = dec.decode(&recs);
        assert_eq!(out.batch.num_rows(), 500);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }

    #[test]
    fn malformed_records_are_counted_and_event_time_advances() {
        let opts = GenOptions {
            malformed_per_mille: 100,
            records_per_second: 10,
            ..GenOptions::default()
        };
        let recs: Vec<Vec<u8>> = FluentBitGen::new(opts).take(1000).collect();
        let bad = recs
            .iter()
            .filter(|r| serde_json::from_slice::<serde_json::Value>(r).is_err())
            .count();
        assert!((50..=150).contains(&bad), "{bad} malformed of 1000");
        let last: serde_json::Value = recs
            .iter()
            .rev()
            .find_map(|r| serde_json::from_slice(r).ok())
            .expect("a valid record");
        // 1000 records at 10 per second: the last is 99 s after the start
        let ts = last["@timestamp"].as_f64().expect("@timestamp") as i64;
        assert_eq!(ts, 1_714_557_600 + 99);
        assert!(
            last["time"]
                .as_str()
                .expect("time")
                .starts_with("2024-05-01T10:01:39.")
        );
    }
}
