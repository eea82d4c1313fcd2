//! loglake's integration tests, one binary (one link, one set of services per run).
//! The services are real: a Kafka-protocol broker and an S3-compatible server, started by the
//! harness in `tests/src/lib.rs` (or taken from `LOGLAKE_TEST_KAFKA_BROKERS` /
//! `LOGLAKE_TEST_S3_ENDPOINT`).

mod archiver;
mod archiver_ops;
mod compactor;
mod deploy;
mod etl;
mod etl_ledger;
mod export;
mod faults;
mod generator;
mod insights;
mod kafka_smoke;
mod maintenance;
mod nightly;
mod operator;
mod quickstart;
mod readers;
mod restart;
mod s3_smoke;
