//! What `loglake archive` (and the nightly job's archive stage) checks before it consumes
//! anything: a broker address that does not resolve or a `--until-end` run's missing topic is one
//! clear error at once (exit 2) instead of a minute of librdkafka retries ending in a stall; brokers
//! that do not answer within [`PREFLIGHT_TIMEOUT`] (or the stall timeout, if shorter) get one
//! warning naming what to check, and the run goes on to its stall timeout. Also the readable
//! summary of a run's configuration that it logs at start (credentials never shown).

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::metadata::Metadata;

use crate::archive::ArchiveConfig;
use crate::error::ArchiveError;

/// How long the brokers have to answer a metadata request at start.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(15);

/// Keeps librdkafka's log lines (instead of printing each retry) so the error can quote the
/// last one.
#[derive(Default)]
struct Quiet {
    last: Mutex<Option<String>>,
}

impl Quiet {
    fn keep(&self, line: String) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(line);
        }
    }
}

impl ClientContext for Quiet {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.keep(format!("{fac}: {log_message}"));
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.keep(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Quiet {}

/// The entries of a `bootstrap.servers` list (`host:port`, `[v6]:port`, `PROTO://host:port`,
/// or a bare host for port 9092) that do not resolve to an address, with the resolver's error.
fn unresolved(brokers: &str) -> Vec<String> {
    use std::net::ToSocketAddrs;
    brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .filter_map(|b| {
            let addr = b.rsplit("://").next().unwrap_or(b);
            let addr = if addr.ends_with(']') || !addr.contains(':') {
                format!("{addr}:9092")
            } else {
                addr.to_string()
            };
            match addr.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(_)) => None,
                Ok(None) => Some(format!("{b}: no address")),
                Err(e) => Some(format!("{b}: {e}")),
            }
        })
        .collect()
}

/// The broker addresses resolve, the brokers answer a metadata request within
/// [`PREFLIGHT_TIMEOUT`] (else a warning), and every topic of the run exists there (a missing topic fails a `--until-end` run and is a warning otherwise: a
/// continuous archiver may start before its topics are created).
pub fn check_kafka(cfg: &ArchiveConfig) -> Result<(), ArchiveError> {
    check_resolves(&cfg.brokers)?;
    let Some(metadata) = fetch_metadata(cfg)? else {
        return Ok(());
    };
    let present: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let missing = missing_topics(cfg, &present);
    if missing.is_empty() {
        return Ok(());
    }
    let text = format!(
        "topic(s) {} do not exist on the brokers {} ({} topic(s) there)",
        missing.join(", "),
        cfg.brokers,
        present.len()
    );
    if cfg.until_end {
        return Err(ArchiveError::Config(format!(
            "{text}; a --until-end run has nothing to archive from them"
        )));
    }
    tracing::warn!("{text}; archiving them once they are created");
    Ok(())
}

/// An error when none of the entries of the `bootstrap.servers` list resolves.
fn check_resolves(brokers: &str) -> Result<(), ArchiveError> {
    let bad = unresolved(brokers);
    if bad.len() == brokers.split(',').filter(|b| !b.trim().is_empty()).count() {
        return Err(ArchiveError::Config(format!(
            "none of the Kafka brokers resolves to an address ({}); check --brokers \
             (LOGLAKE_BROKERS, `brokers` in lake.toml)",
            bad.join("; ")
        )));
    }
    Ok(())
}

/// The brokers' metadata: short requests, with the client's events (its log and error
/// callbacks) pumped between them, up to [`PREFLIGHT_TIMEOUT`] (or the stall timeout). `None`
/// (after one warning naming what to check) when the brokers did not answer in time.
fn fetch_metadata(cfg: &ArchiveConfig) -> Result<Option<Metadata>, ArchiveError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.kafka_properties {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<Quiet> =
        cc.create_with_context(Quiet::default())
            .map_err(|source| ArchiveError::Kafka {
                context: format!("Kafka client for brokers {}", cfg.brokers),
                source,
            })?;
    let started = std::time::Instant::now();
    let bound = PREFLIGHT_TIMEOUT.min(cfg.stall_timeout);
    let fetched = loop {
        match consumer.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(m) => break Ok(m),
            Err(e) if started.elapsed() >= bound => break Err(e),
            Err(_) => {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        }
    };
    match fetched {
        Ok(m) => Ok(Some(m)),
        Err(source) => {
            let last = consumer
                .context()
                .last
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_else(|| source.to_string());
            // Not an error of its own: a broker that is down for a while is what the stall
            // timeout is for (a --until-end run ends with the stall error, exit 4; a continuous
            // archiver waits, unhealthy). One line now says what to check.
            tracing::warn!(
                "the Kafka brokers {} did not answer within {}s (last: {last}); check --brokers \
                 (LOGLAKE_BROKERS, `brokers` in lake.toml), the network, and the SASL/TLS \
                 settings (-X, [kafka]); waiting for them up to --stall-timeout",
                cfg.brokers,
                bound.as_secs()
            );
            Ok(None)
        }
    }
}

/// The run's topics missing from `present`, sorted, each once.
fn missing_topics<'a>(cfg: &'a ArchiveConfig, present: &[&str]) -> Vec<&'a str> {
    let mut missing: Vec<&str> = cfg
        .tables
        .iter()
        .flat_map(|t| t.topics.iter().map(String::as_str))
        .filter(|t| !present.contains(t))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

/// The configuration a run logs at start, readable, without credentials: brokers, group,
/// tables with their topics, decoder and location, dead letters, mode and budget.
pub fn summary(cfg: &ArchiveConfig) -> String {
    let tables: Vec<String> = cfg
        .tables
        .iter()
        .map(|t| {
            format!(
                "{} <- {} ({}) at {}",
                t.name,
                t.topics.join(","),
                t.decoder,
                t.url
            )
        })
        .collect();
    format!(
        "brokers {}, group {}{}; tables: {}; dead letters: {}; {}; memory budget {} MiB; \
         {} Kafka properties and {} storage options set (values not shown)",
        cfg.brokers,
        cfg.group,
        cfg.instance_id
            .as_ref()
            .map(|i| format!(" (instance {i})"))
            .unwrap_or_default(),
        tables.join("; "),
        cfg.dlq
            .as_ref()
            .map_or_else(|| "none".to_string(), |u| u.to_string()),
        if cfg.until_end {
            "until the ends frozen at start"
        } else {
            "continuous"
        },
        cfg.policy.memory_budget_bytes >> 20,
        cfg.kafka_properties.len(),
        cfg.storage_options.len()
    )
}

#[cfg(test)]
mod tests {
    use super::unresolved;

    #[test]
    fn broker_entries_that_do_not_resolve_are_named() {
        assert!(unresolved("127.0.0.1:9092, localhost:9093,[::1]:9094").is_empty());
        assert!(unresolved("SASL_SSL://127.0.0.1:9092,127.0.0.1").is_empty());
        let bad = unresolved("127.0.0.1:9092,nosuchhost.invalid:9092");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("nosuchhost.invalid:9092: "), "{bad:?}");
    }
}
