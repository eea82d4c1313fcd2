//! `loglake quickstart`: the whole path on embedded defaults, with no service installed.
//!
//! 1. starts an embedded Kafka (librdkafka's mock cluster) and creates three topics;
//! 2. produces real sample logs written by others (`tests/data/corpus`: Fluent Bit's Kubernetes
//!    docker json-file logs plus Elastic's corrupted docker log, Falco's audit events, an nginx
//!    access log), each container line with the kubelet log path as a header;
//! 3. archives them with `--until-end` into a local lake (three tables + dead letters);
//! 4. prints what was written and the answers of a few example queries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::datafusion::prelude::SessionContext;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::archive::{ArchiveConfig, TableTarget};
use crate::delta::table_url;
use crate::error::ArchiveError;
use crate::writer::RollPolicy;

/// `loglake quickstart`: archive bundled real logs from an embedded Kafka and query them.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// Where to write the lake (recreated on every run).
    #[arg(long, default_value = "quickstart-lake")]
    pub lake: PathBuf,
    /// Folder with the sample logs.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/corpus"))]
    pub samples: PathBuf,
}

const MARKER: &str = ".loglake-quickstart";

struct Sample {
    topic: &'static str,
    payload: Vec<u8>,
    path: Option<String>,
}

fn read_lines(path: &Path) -> Result<Vec<Vec<u8>>, ArchiveError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ArchiveError::Config(format!("reading sample {}: {e}", path.display())))?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
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

fn load_samples(dir: &Path) -> Result<Vec<Sample>, ArchiveError> {
    let mut out = Vec::new();
    for f in files(
        &dir.join("fluent-bit/tests/runtime/data/kubernetes/log"),
        "log",
    )? {
        let path = kubelet_path(&f);
        for line in read_lines(&f)? {
            out.push(Sample {
                topic: "k8s-container-logs",
                payload: line,
                path: path.clone(),
            });
        }
    }
    let corrupted = dir.join("beats/docker_corrupted.log");
    for line in read_lines(&corrupted)? {
        out.push(Sample {
            topic: "k8s-container-logs",
            payload: line,
            path: Some(format!(
                "/var/log/containers/shop-web-7d9f_shop_nginx-{:064x}.log",
                7
            )),
        });
    }
    for f in files(&dir.join("falco-k8s-audit/k8s_audit"), "json")? {
        for line in read_lines(&f)? {
            out.push(Sample {
                topic: "k8s-audit",
                payload: line,
                path: None,
            });
        }
    }
    for line in read_lines(&dir.join("beats/nginx_access_test.log"))? {
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
    let samples = load_samples(&args.samples)?;

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
        assignment_timeout: Duration::from_secs(30),
        watermark_timeout: Duration::from_secs(30),
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

    // 4. Query.
    rt.block_on(query(&lake))?;
    println!(
        "\nThe lake is at {lake}/ — Delta tables readable by Spark, DuckDB, polars and delta-rs.\n\
         Explore it with SQL: cargo run -- query --lake {lake}"
    );
    Ok(std::process::ExitCode::SUCCESS)
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
