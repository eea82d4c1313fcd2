//! Generated container-log tables written the way `loglake archive` writes them, without Kafka:
//! the one generator of the query tests, the query benchmark, the insights tests and
//! `loglake gen --table`.
//!
//! Records come from [`FluentBitGen`] (realistic Fluent Bit JSON, see `loglake_schemas::gen`),
//! get synthetic Kafka coordinates (record `i` goes to partition `i % partitions` at offset
//! `i / partitions`, its Kafka timestamp 1–3 s after its event time), are decoded by the table's
//! own decoder ([`TableTarget::decoder`]) and written through the archiver's writer path:
//! [`WriterSet`] (the table's partitioning, Parquet writer properties, bloom filter columns and
//! target file size, [`RollPolicy::for_table`]), the byte budget's [`budget_victims`], and
//! [`DeltaSink`] (the table's creation, uploads, and commits carrying the offsets as txn
//! actions, resume points included). The table definition defaults to the shipped
//! `schemas/tables/containers.toml`, as `loglake archive --tables-dir schemas/tables` uses it.
//!
//! The archive loop itself (`crate::archive`) is bound to a Kafka consumer, so the rows take the
//! writer path below it: what differs from a real run is only where the records come from, when
//! commits happen (every `rows / commits` records instead of every roll interval) and
//! `ingest_ts`, which is the synthetic Kafka timestamp instead of the wall clock so that the same
//! options always give the same rows.
//!
//! Memory is bounded: records are generated, decoded and written `batch_records` at a time, and
//! the open files are held to the policy's byte budget as in the archiver. Decoding and encoding
//! run on tokio's blocking pool; only uploads and commits run on the async runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use deltalake::kernel::Add;
use loglake_lake::{CommitOutcome, DeltaSink, LakeError, OffsetAdvance, resume_app_id};
use loglake_schemas::r#gen::{FluentBitGen, GenOptions};
use loglake_schemas::{Decoder, DecoderOptions, RawRecord, TableDef, parse_table_def};
use url::Url;

use crate::TableTarget;
use crate::error::ArchiveError;
use crate::writer::{ClosedFile, RollPolicy, WriterSet, budget_victims};

/// The shipped definition of the container-log table (`schemas/tables/containers.toml`).
const CONTAINERS_TOML: &str = include_str!("../../schemas/tables/containers.toml");

/// The shipped `containers` table definition: partitioned by `dt`, `hour`; bloom filters on
/// `trace_id` and `pod`; 256 MiB files; decoder `fluentbit`; topic `k8s-logs`.
pub fn containers_definition() -> Result<TableDef, FixtureError> {
    parse_table_def(CONTAINERS_TOML, Path::new("schemas/tables/containers.toml"))
        .map_err(|e| FixtureError::Options(e.to_string()))
}

/// What to generate and how to write it.
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// Records (= rows) to write.
    pub rows: u64,
    /// Random seed: the same options give the same rows.
    pub seed: u64,
    /// Namespaces (`team-0` …); each runs 6 apps x 3 replicas x 3 containers.
    pub namespaces: usize,
    /// Event time of the first record, Unix seconds.
    pub start_unix_secs: i64,
    /// Records per second of event time (e.g. `rows.div_ceil(86_400)` for one day).
    pub records_per_second: u64,
    /// Commits, each of `rows / commits` records (rounded up); at least one.
    pub commits: u64,
    /// Kafka topic of the synthetic coordinates (default: the definition's first topic).
    pub topic: Option<String>,
    /// Kafka partitions the records are spread over, round robin.
    pub partitions: i32,
    /// The table definition: partitioning, bloom filters, target file size, decoder options.
    /// Its decoder must be `fluentbit`; archive-time ETL is not applied (rejected).
    pub table: TableDef,
    /// Roll and budget policy, as `loglake archive`'s defaults unless changed.
    pub policy: RollPolicy,
    /// Records generated, decoded and written at a time (`loglake archive`'s poll batch).
    pub batch_records: usize,
    /// `cluster` of the rows (`loglake archive --cluster`).
    pub cluster: Option<String>,
    /// Storage options over the `AWS_*` environment (S3 tables).
    pub storage_options: HashMap<String, String>,
}

impl FixtureOptions {
    /// `rows` records with the shipped `containers` definition and the generator's defaults
    /// (seed, 24 namespaces, 2024-05-01T10:00:00Z, 50 records per second), one commit, 12
    /// Kafka partitions.
    pub fn new(rows: u64) -> Result<Self, FixtureError> {
        let g = GenOptions::default();
        Ok(FixtureOptions {
            rows,
            seed: g.seed,
            namespaces: g.namespaces,
            start_unix_secs: g.start_unix_secs,
            records_per_second: g.records_per_second,
            commits: 1,
            topic: None,
            partitions: 12,
            table: containers_definition()?,
            policy: RollPolicy::default(),
            batch_records: 20_000,
            cluster: None,
            storage_options: HashMap::new(),
        })
    }

    /// The generator settings of these options (no malformed records: every record decodes).
    pub fn gen_options(&self) -> GenOptions {
        GenOptions {
            seed: self.seed,
            namespaces: self.namespaces,
            start_unix_secs: self.start_unix_secs,
            records_per_second: self.records_per_second.max(1),
            malformed_per_mille: 0,
        }
    }

    /// The Kafka topic of the records.
    pub fn topic(&self) -> String {
        self.topic
            .clone()
            .or_else(|| self.table.topics.first().cloned())
            .unwrap_or_else(|| "k8s-logs".into())
    }

    /// Records per commit.
    pub fn rows_per_commit(&self) -> u64 {
        self.rows.div_ceil(self.commits.max(1)).max(1)
    }

    fn check(&self) -> Result<(), FixtureError> {
        let bad = |m: String| Err(FixtureError::Options(m));
        if self.table.decoder != "fluentbit" {
            return bad(format!(
                "table {}: decoder {} (the generator writes Fluent Bit records: decoder fluentbit)",
                self.table.name, self.table.decoder
            ));
        }
        if self.table.has_etl() {
            return bad(format!(
                "table {}: archive-time ETL (filter, derive, redact, route) is not applied by the generator",
                self.table.name
            ));
        }
        if self.partitions < 1 {
            return bad(format!("partitions {} (at least 1)", self.partitions));
        }
        if self.batch_records == 0 {
            return bad("batch_records 0 (at least 1)".into());
        }
        Ok(())
    }
}

/// What a generated table got.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FixtureReport {
    pub rows: u64,
    pub commits: u64,
    pub files: u64,
    /// Parquet bytes uploaded.
    pub bytes: u64,
    /// The table's version after the last commit (version 0 is its creation).
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("generator options: {0}")]
    Options(String),

    #[error(
        "{url} already holds a Delta table (version {version}): the generator writes new tables only"
    )]
    Exists { url: String, version: u64 },

    #[error("generated record {topic}[{partition}]@{offset} did not decode: {reason}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },

    #[error(
        "commit of {url} found partitions advanced by another writer: {partitions:?} (topic, partition, txn version)"
    )]
    Conflict {
        url: String,
        partitions: Vec<(String, i32, Option<i64>)>,
    },

    /// The archiver's writer (encoding, partitioning) failed.
    #[error(transparent)]
    Archive(Box<ArchiveError>),

    /// Opening, uploading to or committing to the table failed.
    #[error(transparent)]
    Lake(Box<LakeError>),

    #[error("generator task: {0}")]
    Task(String),
}

impl From<ArchiveError> for FixtureError {
    fn from(e: ArchiveError) -> Self {
        FixtureError::Archive(Box::new(e))
    }
}

impl From<LakeError> for FixtureError {
    fn from(e: LakeError) -> Self {
        FixtureError::Lake(Box::new(e))
    }
}

/// Kafka coordinates of generated record `i`: (partition, offset, Kafka timestamp in ms).
/// The timestamp is 1 to 3 s after the record's event second (its event time is within that
/// second), from a hash of `seed` and `i`.
pub fn coordinates(opts: &FixtureOptions, i: u64) -> (i32, i64, i64) {
    let p = opts.partitions.max(1) as u64;
    let sec = opts.start_unix_secs + (i / opts.records_per_second.max(1)) as i64;
    let delay_ms = 1000 + (splitmix(opts.seed ^ i) % 2000) as i64;
    ((i % p) as i32, (i / p) as i64, sec * 1000 + delay_ms)
}

/// The next offset of `partition` once `records` records have been generated.
pub fn end_offset(partitions: i32, records: u64, partition: i32) -> i64 {
    let (p, k) = (partitions.max(1) as u64, partition as u64);
    if records <= k {
        0
    } else {
        (records - k).div_ceil(p) as i64
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// All `opts.rows` rows decoded in memory, in record (Kafka) order, without a table: for tests
/// that compute their expected values from the rows themselves. Holds every row: small tables
/// only.
pub fn generated_rows(opts: &FixtureOptions) -> Result<RecordBatch, FixtureError> {
    opts.check()?;
    let url =
        Url::parse("memory:///generated/").map_err(|e| FixtureError::Options(e.to_string()))?;
    let mut decoder = target("generated", &url, opts).decoder(&decoder_options(opts))?;
    let mut generator = FluentBitGen::new(opts.gen_options());
    decode_records(
        opts,
        &mut generator,
        decoder.as_mut(),
        &opts.topic(),
        0,
        opts.rows,
    )
}

fn decoder_options(opts: &FixtureOptions) -> DecoderOptions {
    DecoderOptions {
        cluster: opts.cluster.clone(),
        ..DecoderOptions::default()
    }
}

/// The generated rows of records `from..from + n`, decoded by `decoder`, as the table schema's
/// batch (with `ingest_ts` set to the Kafka timestamp).
fn decode_records(
    opts: &FixtureOptions,
    generator: &mut FluentBitGen,
    decoder: &mut dyn Decoder,
    topic: &str,
    from: u64,
    n: u64,
) -> Result<RecordBatch, FixtureError> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|_| generator.next_record()).collect();
    let coords: Vec<(i32, i64, i64)> = (from..from + n).map(|i| coordinates(opts, i)).collect();
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .zip(&coords)
        .map(|(payload, &(partition, offset, ts))| RawRecord {
            timestamp_ms: Some(ts),
            ..RawRecord::new(topic, partition, offset, payload)
        })
        .collect();
    let out = decoder.decode(&records);
    if let Some(e) = out.errors.into_iter().next() {
        return Err(FixtureError::Decode {
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
            reason: e.reason,
        });
    }
    if out.batch.num_rows() != records.len() {
        let (partition, offset, _) = coords.first().copied().unwrap_or_default();
        return Err(FixtureError::Decode {
            topic: topic.to_string(),
            partition,
            offset,
            reason: format!(
                "{} records from here gave {} rows",
                records.len(),
                out.batch.num_rows()
            ),
        });
    }
    with_ingest_ts(out.batch, coords.iter().map(|c| c.2 * 1000))
}

/// `batch` with its `ingest_ts` column replaced by `micros`.
fn with_ingest_ts(
    batch: RecordBatch,
    micros: impl Iterator<Item = i64>,
) -> Result<RecordBatch, FixtureError> {
    let schema = batch.schema();
    let idx = schema
        .index_of("ingest_ts")
        .map_err(|e| FixtureError::Options(format!("the table has no ingest_ts: {e}")))?;
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols[idx] = Arc::new(TimestampMicrosecondArray::from_iter_values(micros).with_timezone("UTC"));
    RecordBatch::try_new(schema, cols).map_err(|e| ArchiveError::Arrow(e).into())
}

/// The CPU side (generation, decoding, encoding): moved to the blocking pool for each step.
struct Producer {
    opts: FixtureOptions,
    topic: String,
    generator: FluentBitGen,
    decoder: Box<dyn Decoder>,
    writers: WriterSet,
    /// Records generated so far.
    next: u64,
}

impl Producer {
    /// Generates and writes the next `n` records; returns the files closed by the size roll or
    /// the byte budget (the largest first, down to 3/4 of it, as the archiver does).
    fn step(&mut self, n: u64) -> Result<Vec<ClosedFile>, FixtureError> {
        let batch = decode_records(
            &self.opts,
            &mut self.generator,
            self.decoder.as_mut(),
            &self.topic,
            self.next,
            n,
        )?;
        self.next += n;
        let budget = self.opts.policy.memory_budget_bytes;
        let mut headroom = budget.saturating_sub(self.writers.memory());
        let mut closed = self.writers.write(&batch, &mut headroom)?;
        if self.writers.memory() > budget {
            let (keys, sizes): (Vec<_>, Vec<_>) = self.writers.sizes().into_iter().unzip();
            for v in budget_victims(&sizes, budget, budget / 4 * 3) {
                closed.extend(self.writers.close(&keys[v])?);
            }
        }
        Ok(closed)
    }
}

/// Runs `f` on the producer on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    mut p: Box<Producer>,
    f: impl FnOnce(&mut Producer) -> Result<T, FixtureError> + Send + 'static,
) -> Result<(Box<Producer>, T), FixtureError> {
    tokio::task::spawn_blocking(move || f(&mut p).map(|t| (p, t)))
        .await
        .map_err(|e| FixtureError::Task(e.to_string()))?
}

/// Writes `opts.rows` generated container-log rows to a new Delta table at `location` (a local
/// path or a URL), committing `opts.commits` times. Fails if a table is already there.
pub async fn write_container_table(
    location: &str,
    opts: &FixtureOptions,
) -> Result<FixtureReport, FixtureError> {
    opts.check()?;
    let url = loglake_lake::table_url(location)?;
    let storage = loglake_lake::writer_storage_options(&opts.storage_options)?;
    let name = crate::archive::name_from_url(&url);
    let existing = loglake_lake::open_table(&name, &url, &storage).await?;
    if let Some(version) = existing.version() {
        return Err(FixtureError::Exists {
            url: url.to_string(),
            version,
        });
    }
    let target = target(&name, &url, opts);
    let decoder = target.decoder(&decoder_options(opts))?;
    let schema = decoder.schema();
    let writers = WriterSet::new(
        schema.clone(),
        &target.partition_by,
        opts.policy.for_table(&target),
        &target.bloom_filter_columns,
    )?;
    let mut sink = DeltaSink::open_or_create(
        &name,
        &url,
        &storage,
        &schema,
        &target.partition_by,
        writers.file_schema().clone(),
    )
    .await?;
    let mut producer = Box::new(Producer {
        opts: opts.clone(),
        topic: opts.topic(),
        generator: FluentBitGen::new(opts.gen_options()),
        decoder,
        writers,
        next: 0,
    });
    let mut report = FixtureReport::default();
    let mut committed: Vec<Option<i64>> = vec![None; opts.partitions as usize];
    let per_commit = opts.rows_per_commit();
    let mut pending: Vec<Add> = Vec::new();
    while producer.next < opts.rows {
        let commit_end = (producer.next + per_commit).min(opts.rows);
        while producer.next < commit_end {
            let n = (opts.batch_records as u64).min(commit_end - producer.next);
            let (p, closed) = blocking(producer, move |p| p.step(n)).await?;
            producer = p;
            upload(&sink, closed, &mut pending, &mut report).await?;
        }
        // Close the files one at a time, each uploaded before the next is finished.
        loop {
            let (p, file) = blocking(producer, |p| Ok(p.writers.close_next()?)).await?;
            producer = p;
            let Some(file) = file else { break };
            upload(&sink, vec![file], &mut pending, &mut report).await?;
        }
        let version = commit(
            &mut sink,
            &producer,
            std::mem::take(&mut pending),
            &mut committed,
        )
        .await?;
        report.commits += 1;
        report.version = version;
        report.rows = producer.next;
        tracing::debug!(table = %name, version, rows = report.rows, "generated rows committed");
    }
    Ok(report)
}

/// The archiver's view of the table (as `loglake archive --lake … --tables-dir …` builds it).
fn target(name: &str, url: &Url, opts: &FixtureOptions) -> TableTarget {
    // the definition's ETL was refused in `check`: none is applied
    TableTarget {
        name: name.to_string(),
        topics: vec![opts.topic()],
        etl: Default::default(),
        ..TableTarget::from_def(&opts.table, url.clone(), Vec::new())
    }
}

async fn upload(
    sink: &DeltaSink,
    closed: Vec<ClosedFile>,
    pending: &mut Vec<Add>,
    report: &mut FixtureReport,
) -> Result<(), FixtureError> {
    for f in closed {
        report.files += 1;
        report.bytes += f.bytes.len() as u64;
        pending.push(sink.upload(f).await?);
    }
    Ok(())
}

/// Commits `adds` with every partition's new end offset and resume point (as the archiver's
/// commit does); returns the version.
async fn commit(
    sink: &mut DeltaSink,
    producer: &Producer,
    adds: Vec<Add>,
    committed: &mut [Option<i64>],
) -> Result<u64, FixtureError> {
    let topic = &producer.topic;
    let mut offsets = Vec::new();
    let mut resumes = Vec::new();
    for (p, from) in committed.iter().enumerate() {
        let p = p as i32;
        let to = end_offset(producer.opts.partitions, producer.next, p);
        if from.is_none_or(|w| to > w) && to > 0 {
            offsets.push(OffsetAdvance {
                topic: topic.clone(),
                partition: p,
                from: *from,
                to,
            });
            let r = producer
                .decoder
                .pending_min_offset(topic, p)
                .map_or(to, |o| o.min(to));
            resumes.push((resume_app_id(sink.name(), topic, p), r));
        }
    }
    match sink.commit(adds.clone(), &offsets, resumes).await? {
        CommitOutcome::Committed { version, .. } => {
            for o in &offsets {
                committed[o.partition as usize] = Some(o.to);
            }
            Ok(version)
        }
        CommitOutcome::Conflict { partitions } => {
            sink.delete_uncommitted(&adds).await;
            Err(FixtureError::Conflict {
                url: sink.url().to_string(),
                partitions,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;
    use datafusion::prelude::SessionContext;
    use loglake_schemas::{TableKind, table_schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use proptest::prelude::*;

    /// 2024-05-01T00:35:00Z: at one record per second, 1,500 records in hour 0 and 1,500 in
    /// hour 1.
    const START: i64 = 1_714_523_700;

    fn options(rows: u64, commits: u64) -> FixtureOptions {
        FixtureOptions {
            start_unix_secs: START,
            records_per_second: 1,
            commits,
            batch_records: 700,
            ..FixtureOptions::new(rows).expect("options")
        }
    }

    async fn query(location: &Path, sql: &str) -> Vec<RecordBatch> {
        let url = loglake_lake::location_url(location.to_str().expect("utf8"), false).expect("url");
        let table = loglake_lake::open_table("t", &url, &HashMap::new())
            .await
            .expect("open");
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .expect("session");
        ctx.register_table("t", table.table_provider().await.expect("provider"))
            .expect("register");
        ctx.sql(sql)
            .await
            .expect("sql")
            .collect()
            .await
            .expect("collect")
    }

    fn int_rows(batches: &[RecordBatch]) -> Vec<Vec<i64>> {
        let mut out = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                out.push(
                    b.columns()
                        .iter()
                        .map(|c| {
                            let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64)
                                .expect("cast");
                            c.as_primitive::<Int64Type>().value(r)
                        })
                        .collect(),
                );
            }
        }
        out
    }

    fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
        out.sort();
        out
    }

    /// The table has the container schema and the shipped definition's layout (dt/hour
    /// partitions, bloom filters on trace_id and pod, the archiver's encodings), one file per
    /// hour and commit, every Kafka offset once, and the offsets committed as txn versions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_table_is_what_the_archiver_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let loc = dir.path().join("logs");
        let opts = options(3000, 2);
        let report = write_container_table(loc.to_str().expect("utf8"), &opts)
            .await
            .expect("generate");
        // version 0 creates the table, 1 and 2 are the commits of 1,500 records each
        assert_eq!(
            (report.rows, report.commits, report.files, report.version),
            (3000, 2, 2, 2)
        );

        let url = loglake_lake::location_url(loc.to_str().expect("utf8"), false).expect("url");
        let table = loglake_lake::open_table("logs", &url, &HashMap::new())
            .await
            .expect("open");
        let snapshot = table.snapshot().expect("snapshot");
        assert_eq!(snapshot.metadata().partition_columns(), &["dt", "hour"]);
        let provider_schema = table.table_provider().await.expect("provider").schema();
        let want = table_schema(TableKind::Container);
        let names = |s: &arrow::datatypes::Schema| -> Vec<String> {
            s.fields().iter().map(|f| f.name().clone()).collect()
        };
        let mut have = names(&provider_schema);
        let mut expected = names(&want);
        have.sort();
        expected.sort();
        assert_eq!(have, expected);
        assert_eq!(want.fields().len(), 26);

        // rows per hour: 1,500 seconds of hour 0 (00:35–00:59) and 1,500 of hour 1
        let per_hour = query(
            &loc,
            "SELECT hour, count(*), count(DISTINCT kafka_partition * 1000000 + kafka_offset) FROM t GROUP BY hour ORDER BY hour",
        )
        .await;
        assert_eq!(
            int_rows(&per_hour),
            vec![vec![0, 1500, 1500], vec![1, 1500, 1500]]
        );
        // record i is at partition i % 12, offset i / 12; ingest_ts is 1–3 s after the event
        let coords = query(
            &loc,
            "SELECT kafka_partition, min(kafka_offset), max(kafka_offset), count(*), \
             min(arrow_cast(ingest_ts, 'Int64') - arrow_cast(ts, 'Int64')), \
             max(arrow_cast(ingest_ts, 'Int64') - arrow_cast(ts, 'Int64')) \
             FROM t GROUP BY kafka_partition ORDER BY kafka_partition",
        )
        .await;
        let coords = int_rows(&coords);
        assert_eq!(coords.len(), 12);
        for (p, row) in coords.iter().enumerate() {
            assert_eq!(row[..4], [p as i64, 0, 249, 250], "partition {p}");
            assert!(row[4] > 0 && row[5] < 3_000_000, "{row:?}");
        }
        // the Kafka offsets are committed as the archiver's txn versions
        let parts: Vec<(String, i32)> = (0..12).map(|p| ("k8s-logs".to_string(), p)).collect();
        let sink = DeltaSink::open_or_create(
            "logs",
            &url,
            &HashMap::new(),
            &want,
            &["dt".to_string(), "hour".to_string()],
            want.clone(),
        )
        .await
        .expect("sink");
        let offsets = sink.committed_offsets(&parts).await.expect("offsets");
        for (k, v) in offsets {
            assert_eq!(v, Some(250), "{k:?}");
        }

        let files = parquet_files(&loc);
        assert_eq!(files.len(), 2);
        for f in files {
            let reader =
                SerializedFileReader::new(std::fs::File::open(&f).expect("open")).expect("parquet");
            let rg = reader.metadata().row_group(0);
            let col = |name: &str| {
                rg.columns()
                    .iter()
                    .find(|c| c.column_path().string() == name)
                    .unwrap_or_else(|| panic!("no column {name}"))
            };
            for c in ["trace_id", "pod"] {
                assert!(col(c).bloom_filter_offset().is_some(), "{c} in {f:?}");
            }
            assert!(col("message").bloom_filter_offset().is_none());
            assert!(
                col("ts")
                    .encodings()
                    .any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED)
            );
            assert_eq!(reader.metadata().file_metadata().num_rows(), 1500);
        }
    }

    /// The same options give the same rows (every column); another seed other messages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_same_options_give_the_same_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut tables = Vec::new();
        for (name, seed) in [("a", 1), ("b", 1), ("c", 2)] {
            let loc = dir.path().join(name);
            let opts = FixtureOptions {
                seed,
                ..options(900, 3)
            };
            let report = write_container_table(loc.to_str().expect("utf8"), &opts)
                .await
                .expect("generate");
            assert_eq!((report.rows, report.commits, report.version), (900, 3, 3));
            let rows = query(
                &loc,
                "SELECT * FROM t ORDER BY kafka_partition, kafka_offset",
            )
            .await;
            tables.push(arrow::compute::concat_batches(&rows[0].schema(), &rows).expect("concat"));
        }
        assert_eq!(tables[0].num_rows(), 900);
        assert_eq!(tables[0], tables[1]);
        let messages = |b: &RecordBatch| b.column_by_name("message").cloned();
        assert_ne!(messages(&tables[0]), messages(&tables[2]));
        // the rows are the records decoded in memory, in Kafka order
        let direct = generated_rows(&FixtureOptions {
            seed: 1,
            ..options(900, 3)
        })
        .expect("decode");
        assert_eq!(direct.num_rows(), 900);
        let offsets = tables[0]
            .column_by_name("kafka_offset")
            .expect("kafka_offset")
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64")
            .clone();
        // table row (partition 0, offset 1) is record 12
        assert_eq!(offsets.value(1), 1);
        for c in ["ts", "message", "pod", "level", "trace_id", "ingest_ts"] {
            let t = tables[0].column_by_name(c).expect("column");
            let d = direct.column_by_name(c).expect("column");
            let text = |a: &ArrayRef, i: usize| {
                let a = arrow::compute::cast(&a.slice(i, 1), &arrow::datatypes::DataType::Utf8)
                    .expect("cast");
                a.as_string::<i32>()
                    .iter()
                    .next()
                    .flatten()
                    .map(str::to_string)
            };
            assert_eq!(text(t, 1), text(d, 12), "{c}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_options_and_existing_tables_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let loc = dir.path().join("t");
        let loc = loc.to_str().expect("utf8");
        let mut opts = options(10, 1);
        opts.table.decoder = "docker".into();
        let e = write_container_table(loc, &opts).await.expect_err("docker");
        assert!(e.to_string().contains("decoder docker"), "{e}");
        let mut opts = options(10, 1);
        opts.table.filter = Some("level = 'error'".into());
        let e = write_container_table(loc, &opts).await.expect_err("etl");
        assert!(e.to_string().contains("ETL"), "{e}");
        let opts = FixtureOptions {
            partitions: 0,
            ..options(10, 1)
        };
        let e = write_container_table(loc, &opts)
            .await
            .expect_err("partitions");
        assert!(e.to_string().contains("partitions 0"), "{e}");
        write_container_table(loc, &options(10, 1))
            .await
            .expect("first");
        let e = write_container_table(loc, &options(10, 1))
            .await
            .expect_err("second");
        assert!(matches!(e, FixtureError::Exists { version: 1, .. }), "{e}");
    }

    #[test]
    fn the_shipped_definition_is_the_default() {
        let d = containers_definition().expect("definition");
        assert_eq!(d.name, "containers");
        assert_eq!(d.decoder, "fluentbit");
        assert_eq!(d.bloom_filter_columns, ["trace_id", "pod"]);
        let o = FixtureOptions::new(10).expect("options");
        assert_eq!(o.topic(), "k8s-logs");
        assert_eq!(
            FixtureOptions {
                commits: 3,
                ..options(10, 1)
            }
            .rows_per_commit(),
            4
        );
    }

    proptest! {
        /// `end_offset` is one past the last offset `coordinates` gave each partition.
        #[test]
        fn end_offsets_follow_the_coordinates(records in 0u64..500, partitions in 1i32..20) {
            let opts = FixtureOptions { partitions, ..options(records, 1) };
            let mut next = vec![0i64; partitions as usize];
            for i in 0..records {
                let (p, o, _) = coordinates(&opts, i);
                prop_assert_eq!(o, next[p as usize]);
                next[p as usize] += 1;
            }
            for p in 0..partitions {
                prop_assert_eq!(end_offset(partitions, records, p), next[p as usize]);
            }
        }
    }
}
