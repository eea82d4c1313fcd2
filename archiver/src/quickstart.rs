//! `loglake quickstart`: the whole path on embedded defaults, with no service installed.
//!
//! 1. starts an embedded Kafka (librdkafka's mock cluster) and creates three topics;
//! 2. produces real sample logs written by others (`tests/data/corpus`, built into the binary with
//!    their SOURCE.md/LICENSE notes, all Apache-2.0: Fluent Bit's Kubernetes docker json-file
//!    logs plus Elastic's corrupted docker log, Falco's audit events, an nginx access log), each
//!    container line with the kubelet log path as a header;
//! 3. archives them with `--until-end` into a local lake (three tables + dead letters);
//! 4. compacts every table (one file per partition, sorted by the shipped definitions' keys, with
//!    their bloom filters) and checkpoints it, printing files before and after;
//! 5. prints what was written and the answers of a few example queries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::datafusion::prelude::SessionContext;
use loglake_compactor::{Layout, Settings, compact_table};
use loglake_lake::table_url;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::archive::{ArchiveConfig, TableTarget};
use crate::error::ArchiveError;
use crate::writer::RollPolicy;

/// `loglake quickstart`: archive bundled real logs from an embedded Kafka and query them.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// Where to write the lake (recreated on every run).
    #[arg(long, default_value = "quickstart-lake")]
    pub lake: PathBuf,
    /// Folder with the sample logs, laid out as the repository's `tests/data/corpus` (default:
    /// the copy built into the binary).
    #[arg(long)]
    pub samples: Option<PathBuf>,
}

/// The repository's `tests/data/corpus` (1.3 MB, license notes included), so that an installed
/// or containerised binary runs the quickstart without a checkout.
static CORPUS: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../tests/data/corpus");

/// Where the samples come from: a folder, or the copy in the binary.
enum Corpus<'a> {
    Folder(&'a Path),
    BuiltIn,
}

impl Corpus<'_> {
    /// The files under `sub` whose extension is `ext`, sorted by path, with their bytes.
    fn files(&self, sub: &str, ext: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, ArchiveError> {
        match self {
            Corpus::Folder(dir) => files(&dir.join(sub), ext)?
                .into_iter()
                .map(|p| {
                    let bytes = read_file(&p)?;
                    Ok((p, bytes))
                })
                .collect(),
            Corpus::BuiltIn => {
                let dir = CORPUS.get_dir(sub).ok_or_else(|| {
                    ArchiveError::Config(format!("built-in samples: no folder {sub}"))
                })?;
                let mut out = Vec::new();
                let mut stack = vec![dir];
                while let Some(d) = stack.pop() {
                    stack.extend(d.dirs());
                    for f in d.files() {
                        if f.path().extension().is_some_and(|x| x == ext) {
                            out.push((f.path().to_path_buf(), f.contents().to_vec()));
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
        }
    }

    fn file(&self, path: &str) -> Result<Vec<u8>, ArchiveError> {
        match self {
            Corpus::Folder(dir) => read_file(&dir.join(path)),
            Corpus::BuiltIn => CORPUS
                .get_file(path)
                .map(|f| f.contents().to_vec())
                .ok_or_else(|| ArchiveError::Config(format!("built-in samples: no file {path}"))),
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ArchiveError> {
    std::fs::read(path)
        .map_err(|e| ArchiveError::Config(format!("reading sample {}: {e}", path.display())))
}

const MARKER: &str = ".loglake-quickstart";

struct Sample {
    topic: &'static str,
    payload: Vec<u8>,
    path: Option<String>,
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| ArchiveError::Config(format!("reading {}: {e}", d.display())))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `<ns>_<pod>_<container>.log` (Fluent Bit's test naming) → a kubelet path
/// `/var/log/containers/<pod>_<ns>_<container>-<id>.log`.
fn kubelet_path(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let mut it = stem.splitn(3, '_');
    let (ns, pod, container) = (it.next()?, it.next()?, it.next()?);
    Some(format!(
        "/var/log/containers/{pod}_{ns}_{container}-{:064x}.log",
        stem.len()
    ))
}

fn load_samples(corpus: &Corpus<'_>) -> Result<Vec<Sample>, ArchiveError> {
    let mut out = Vec::new();
    for (f, bytes) in corpus.files("fluent-bit/tests/runtime/data/kubernetes/log", "log")? {
        let path = kubelet_path(&f);
        for line in lines(&bytes) {
            out.push(Sample {
                topic: "k8s-container-logs",
                payload: line,
                path: path.clone(),
            });
        }
    }
    for line in lines(&corpus.file("beats/docker_corrupted.log")?) {
        out.push(Sample {
            topic: "k8s-container-logs",
            payload: line,
            path: Some(format!(
                "/var/log/containers/shop-web-7d9f_shop_nginx-{:064x}.log",
                7
            )),
        });
    }
    for (_, bytes) in corpus.files("falco-k8s-audit/k8s_audit", "json")? {
        for line in lines(&bytes) {
            out.push(Sample {
                topic: "k8s-audit",
                payload: line,
                path: None,
            });
        }
    }
    for line in lines(&corpus.file("beats/nginx_access_test.log")?) {
        out.push(Sample {
            topic: "ingress-access",
            payload: line,
            path: None,
        });
    }
    Ok(out)
}

fn prepare_lake(lake: &Path) -> Result<(), ArchiveError> {
    if lake.exists() {
        let empty = std::fs::read_dir(lake)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !lake.join(MARKER).exists() {
            return Err(ArchiveError::Config(format!(
                "{} exists and was not made by the quickstart; pass --lake with a new folder",
                lake.display()
            )));
        }
        std::fs::remove_dir_all(lake)
            .map_err(|e| ArchiveError::Config(format!("clearing {}: {e}", lake.display())))?;
    }
    std::fs::create_dir_all(lake)
        .map_err(|e| ArchiveError::Config(format!("creating {}: {e}", lake.display())))?;
    std::fs::write(
        lake.join(MARKER),
        "made by `loglake quickstart`; safe to delete\n",
    )
    .map_err(|e| ArchiveError::Config(format!("writing marker: {e}")))?;
    Ok(())
}

/// Runs the quickstart and prints its results on stdout.
pub fn run(args: QuickstartArgs) -> Result<std::process::ExitCode, ArchiveError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ArchiveError::Other(e.to_string()))?;
    prepare_lake(&args.lake)?;
    let corpus = match &args.samples {
        Some(dir) => Corpus::Folder(dir),
        None => Corpus::BuiltIn,
    };
    let samples = load_samples(&corpus)?;

    // 1. Embedded Kafka.
    let cluster = MockCluster::new(1).map_err(|source| ArchiveError::Kafka {
        context: "starting mock cluster".into(),
        source,
    })?;
    for (topic, parts) in [
        ("k8s-container-logs", 3),
        ("k8s-audit", 1),
        ("ingress-access", 1),
    ] {
        cluster
            .create_topic(topic, parts, 1)
            .map_err(|source| ArchiveError::Kafka {
                context: format!("creating topic {topic}"),
                source,
            })?;
    }
    let brokers = cluster.bootstrap_servers();
    println!("== embedded Kafka (librdkafka mock cluster) at {brokers}");

    // 2. Produce.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .map_err(|source| ArchiveError::Kafka {
            context: "creating producer".into(),
            source,
        })?;
    let n = samples.len();
    rt.block_on(async {
        let mut sends = Vec::new();
        for s in &samples {
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(s.topic).payload(&s.payload);
            if let Some(p) = &s.path {
                rec = rec
                    .key(p.as_bytes())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "path",
                        value: Some(p.as_bytes()),
                    }));
            }
            sends.push(producer.send(rec, Duration::from_secs(10)));
        }
        for r in futures::future::join_all(sends).await {
            r.map_err(|(source, _)| ArchiveError::Kafka {
                context: "producing samples".into(),
                source,
            })?;
        }
        Ok::<(), ArchiveError>(())
    })?;
    let by_topic = |t: &str| samples.iter().filter(|s| s.topic == t).count();
    println!(
        "== produced {n} real sample records: k8s-container-logs {}, k8s-audit {}, ingress-access {}",
        by_topic("k8s-container-logs"),
        by_topic("k8s-audit"),
        by_topic("ingress-access")
    );

    // 3. Archive.
    let lake = args.lake.to_string_lossy().to_string();
    let table = |name: &str, topic: &str, decoder: &str| -> Result<TableTarget, ArchiveError> {
        Ok(TableTarget {
            name: name.into(),
            url: table_url(&format!("{lake}/{name}"))?,
            topics: vec![topic.into()],
            decoder: decoder.into(),
            partition_by: vec!["dt".into(), "hour".into()],
            bloom_filter_columns: vec!["trace_id".into()],
            target_file_bytes: None,
            json_message_attrs: false,
        })
    };
    let cfg = ArchiveConfig {
        brokers: brokers.clone(),
        group: "loglake-quickstart".into(),
        kafka_properties: Vec::new(),
        tables: vec![
            table("container_logs", "k8s-container-logs", "docker")?,
            table("k8s_audit", "k8s-audit", "k8s-audit")?,
            table("access", "ingress-access", "access")?,
        ],
        dlq: Some(table_url(&format!("{lake}/dead_letters"))?),
        until_end: true,
        storage_options: Default::default(),
        decoder_options: loglake_schemas::DecoderOptions {
            cluster: Some("quickstart".into()),
            ..Default::default()
        },
        policy: RollPolicy {
            memory_budget_bytes: 256 << 20,
            ..Default::default()
        },
        batch_records: 20_000,
        batch_bytes: crate::archive::default_poll_batch_bytes(256 << 20),
        shutdown: Arc::default(),
        instance_id: None,
        stall_timeout: Duration::from_secs(30),
        watermark_timeout: Duration::from_secs(30),
        late_after: crate::archive::DEFAULT_LATE_AFTER,
        shutdown_timeout: crate::archive::DEFAULT_SHUTDOWN_TIMEOUT,
        metrics: Arc::default(),
    };
    let report = crate::run_archiver(cfg, &rt)?;
    println!(
        "== archived {} records into {}: {} rows, {} dead letters, {} files, {} commits",
        report.records_in,
        lake,
        report.rows_written,
        report.dead_letters,
        report.files,
        report.commits
    );
    drop(producer);
    drop(cluster);

    // 4. Compact: one sorted file per partition (the samples are days old: every partition is
    // closed), then a checkpoint.
    rt.block_on(compact(&lake))?;

    // 5. Query.
    rt.block_on(query(&lake))?;
    println!(
        "\nThe lake is at {lake}/ — Delta tables readable by Spark, DuckDB, polars and delta-rs.\n\
         Explore it with SQL: cargo run -- query --lake {lake}"
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// The quickstart tables' layouts, as the shipped definitions (`schemas/tables`) have them.
fn layouts() -> [(&'static str, Layout); 4] {
    let layout = |sort: &[&str], bloom: &[&str]| Layout {
        sort_by: sort.iter().map(|c| c.to_string()).collect(),
        bloom_filter_columns: bloom.iter().map(|c| c.to_string()).collect(),
        target_file_size: loglake_schemas::DEFAULT_TARGET_FILE_SIZE_BYTES,
        schema: None,
    };
    [
        (
            "container_logs",
            layout(
                &["namespace", "pod", "container", "ts"],
                &["trace_id", "pod"],
            ),
        ),
        (
            "k8s_audit",
            layout(
                &["verb", "object_resource", "ts"],
                &["user", "object_name", "audit_id"],
            ),
        ),
        ("access", layout(&["path", "ts"], &["remote_addr"])),
        ("dead_letters", layout(&[], &[])),
    ]
}

async fn compact(lake: &str) -> Result<(), ArchiveError> {
    let settings = Settings {
        settle: Duration::from_secs(3600),
        min_size_fraction: 0.5,
        memory_budget: 256 << 20,
        spill_dir: None,
        lease_ttl: Duration::from_secs(120),
        lease_wait: Duration::from_secs(10),
        dry_run: false,
        checkpoint: true,
        log_retention: None,
        owner: format!("quickstart:{}", std::process::id()),
    };
    println!("== compacted (sorted files with bloom filters, one commit per partition):");
    for (name, layout) in layouts() {
        let url = table_url(&format!("{lake}/{name}"))?;
        let m = compact_table(name, &url, &Default::default(), &layout, &settings)
            .await
            .map_err(|e| ArchiveError::Other(e.to_string()))?;
        println!(
            "   table {name:<15} {} partitions: {} files ({} bytes) -> {} files ({} bytes), checkpoint at version {}",
            m.partitions_seen,
            m.files_in,
            m.bytes_in,
            m.files_out,
            m.bytes_out,
            m.checkpoint.as_ref().map_or(0, |c| c.version),
        );
    }
    Ok(())
}

async fn query(lake: &str) -> Result<(), ArchiveError> {
    let ctx = SessionContext::new();
    for name in ["container_logs", "k8s_audit", "access", "dead_letters"] {
        let url = table_url(&format!("{lake}/{name}"))?;
        let t = DeltaTable::try_from_url(url)
            .await
            .map_err(|source| ArchiveError::Delta {
                table: name.into(),
                source,
            })?;
        let files = t.snapshot().map(|s| s.log_data().num_files()).unwrap_or(0);
        t.update_datafusion_session(&ctx.state())
            .map_err(|source| ArchiveError::Delta {
                table: name.into(),
                source,
            })?;
        let p = t
            .table_provider()
            .await
            .map_err(|e| ArchiveError::Other(format!("{name}: {e}")))?;
        ctx.register_table(name, p)
            .map_err(|e| ArchiveError::Other(e.to_string()))?;
        println!(
            "   table {name:<15} version {:?}, {files} data file(s)",
            t.version()
        );
    }
    let queries = [
        (
            "rows and partitions per table",
            "SELECT 'container_logs' AS table_name, count(*) AS rows, count(DISTINCT (dt, hour)) AS partitions FROM container_logs \
          UNION ALL SELECT 'k8s_audit', count(*), count(DISTINCT (dt, hour)) FROM k8s_audit \
          UNION ALL SELECT 'access', count(*), count(DISTINCT (dt, hour)) FROM access \
          UNION ALL SELECT 'dead_letters', count(*), count(DISTINCT (dt, hour)) FROM dead_letters ORDER BY table_name",
        ),
        (
            "container log lines by namespace and level",
            "SELECT namespace, level, count(*) AS lines FROM container_logs GROUP BY namespace, level ORDER BY lines DESC, namespace, level LIMIT 10",
        ),
        (
            "who did what in the API server (audit)",
            "SELECT \"user\", verb, object_resource, count(*) AS events FROM k8s_audit GROUP BY 1, 2, 3 ORDER BY events DESC, 1, 2, 3 LIMIT 8",
        ),
        (
            "HTTP status classes at the ingress",
            "SELECT status, count(*) AS requests, sum(bytes_sent) AS bytes FROM access GROUP BY status ORDER BY status",
        ),
        (
            "dead letters (nothing is dropped)",
            "SELECT kafka_topic, kafka_partition, kafka_offset, substr(error, 1, 60) AS error FROM dead_letters ORDER BY kafka_offset",
        ),
    ];
    for (title, sql) in queries {
        println!("\n-- {title}\n{sql}");
        let df = ctx
            .sql(sql)
            .await
            .map_err(|e| ArchiveError::Other(format!("{title}: {e}")))?;
        let batches = df
            .collect()
            .await
            .map_err(|e| ArchiveError::Other(format!("{title}: {e}")))?;
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_samples_are_the_repository_corpus() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/corpus"));
        let key = |s: &Sample| (s.topic, s.payload.clone(), s.path.clone());
        let from_folder: Vec<_> = load_samples(&Corpus::Folder(dir))
            .expect("folder samples")
            .iter()
            .map(key)
            .collect();
        let built_in: Vec<_> = load_samples(&Corpus::BuiltIn)
            .expect("built-in samples")
            .iter()
            .map(key)
            .collect();
        assert_eq!(from_folder.len(), 175);
        assert_eq!(built_in, from_folder);
        let per_topic = |t: &str| built_in.iter().filter(|s| s.0 == t).count();
        assert_eq!(
            (
                per_topic("k8s-container-logs"),
                per_topic("k8s-audit"),
                per_topic("ingress-access")
            ),
            (116, 52, 7)
        );
        // the license notes travel with them
        for note in [
            "fluent-bit/SOURCE.md",
            "fluent-bit/LICENSE",
            "beats/SOURCE.md",
            "falco-k8s-audit/SOURCE.md",
        ] {
            assert!(CORPUS.get_file(note).is_some(), "{note} is not built in");
        }
    }
}
