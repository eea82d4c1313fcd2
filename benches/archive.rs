//! The archiver benchmark (issue 4): seeded container logs (`loglake gen`, Fluent Bit JSON) in a
//! real Kafka-protocol broker, archived by the real `loglake archive --until-end` into a Delta
//! table on the S3 server, and two baselines on the same payload in the same run:
//!
//! * **naive**: `serde_json::Value` -> Arrow builders (same container schema and mapping) ->
//!   parquet's default `ArrowWriter` -> one PUT to the same S3 server
//!   (`schemas/benches/common/naive.rs`, shared with the decoder benchmark);
//! * **duckdb**: DuckDB (`scripts/requirements-bench.txt`) converting the same JSON to Parquet
//!   (`COPY (SELECT * FROM read_json(…)) TO … (FORMAT parquet)`, local file), with its default
//!   codec (Snappy) — the baseline the ratios are computed against — and once more with
//!   `COMPRESSION zstd`, the codec loglake writes, for comparison.
//!
//! Both baselines read the payload from a local NDJSON file written by `loglake gen --output`
//! with the same seed (byte-identical records), so they skip the Kafka fetch and decompression
//! the archiver pays for: the comparison favours them. What that fetch costs is measured in the
//! same run: a third stage, **kafka fetch only**, consumes the topic with the archiver's consumer
//! settings (librdkafka fetches and decompresses every zstd record set; the payloads are only
//! counted), so its CPU is the floor of any Kafka-fed pipeline here.
//!
//! Reported: raw payload MB per CPU-second and per wall second, output bytes (compression vs the
//! raw JSON), peak RSS (`ru_maxrss` of the archiver child; DuckDB's own `VmHWM`, because a
//! child's `ru_maxrss` starts at the RSS of the bench process it was forked from; for the
//! in-process naive pipeline the bench process's own peak).
//!
//! ```sh
//! eval "$(scripts/install-test-deps.sh)"     # tansu + moto, as the tests use
//! cargo bench -p loglake --bench archive -- --gb 2
//! ```
//! Options: `--gb N` (default 2), `--python P` (default `$LOGLAKE_BENCH_PYTHON` or `python3`),
//! `--skip-duckdb`, `--etl` (also archive the topic once more with the archive-time ETL rule set
//! [`ETL_ARGS`] — one filter, two derived columns, three redactions — and print its CPU against
//! the plain run's), `--etl-only` (that comparison only, no fetch-only stage or baselines).

#[path = "../schemas/benches/common/naive.rs"]
mod naive;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use loglake_tests::archive::Archive;
use loglake_tests::{kafka, loglake_cmd, s3, unique_name};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Default, Clone)]
struct Run {
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
    out_bytes: u64,
}

fn rusage(who: i32) -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(u.ru_utime) + tv(u.ru_stime), u.ru_maxrss as f64 / 1024.0)
}

/// Run a child to completion and return (wall s, CPU s, peak RSS MB, stdout) from wait4.
fn run_child(mut cmd: Command) -> Result<(f64, f64, f64, String), BoxErr> {
    let t0 = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id() as i32;
    let mut stdout = String::new();
    if let Some(out) = child.stdout {
        for line in BufReader::new(out).lines() {
            stdout.push_str(&line?);
            stdout.push('\n');
        }
    }
    let mut status = 0;
    // SAFETY: wait4 on our own child; fills status and rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut u) };
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        // program and arguments only: the command's environment holds the S3 credentials
        return Err(format!(
            "{:?} {:?} failed (status {status})",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        )
        .into());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        t0.elapsed().as_secs_f64(),
        tv(u.ru_utime) + tv(u.ru_stime),
        u.ru_maxrss as f64 / 1024.0,
        stdout,
    ))
}

fn gen_args(gb: f64) -> Vec<String> {
    [
        "gen",
        "--bytes",
        &format!("{}", (gb * 1e9) as u64),
        "--start",
        "2024-05-01T00:00:00Z",
        // ~2.3 M records over a day of event time: 24 hourly partitions
        "--records-per-second",
        &format!("{}", ((gb * 1e9 / 900.0) / 86_400.0).ceil().max(1.0) as u64),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Consumes every record of `topic` (all partitions, from the beginning up to the high watermarks
/// read at start) with the archiver's consumer settings and nothing else: the CPU any Kafka-fed
/// pipeline pays before its first byte is decoded. Returns the run and the records and payload
/// bytes seen (checked against the payload by the caller).
fn kafka_fetch_only(topic: &str, partitions: i32) -> Result<(Run, u64, u64), BoxErr> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::Duration;
    let (c0, _) = rusage(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let cc =
        loglake_archiver::archive::consumer_config(&kafka().brokers, &unique_name("fetch-only"));
    let consumer: BaseConsumer = cc.create()?;
    let mut remaining = std::collections::HashMap::new();
    {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(300))?;
            if high > 0 {
                remaining.insert(p, high);
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        // the list is dropped before the consumer (a live list makes the drop hang)
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut idle = Instant::now();
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload().map_or(0, |p| p.len()) as u64;
                if m.offset() + 1 >= remaining.get(&m.partition()).copied().unwrap_or(0) {
                    remaining.remove(&m.partition());
                }
                idle = Instant::now();
            }
            Some(Err(e)) => return Err(format!("fetch-only consumer: {e}").into()),
            None if idle.elapsed() > Duration::from_secs(300) => {
                return Err(format!(
                    "fetch-only consumer: no record for 300 s, {remaining:?} left"
                )
                .into());
            }
            None => {}
        }
    }
    drop(consumer);
    let (c1, _) = rusage(libc::RUSAGE_SELF);
    let run = Run {
        wall_s: t0.elapsed().as_secs_f64(),
        cpu_s: c1 - c0,
        peak_rss_mb: f64::NAN,
        out_bytes: 0,
    };
    Ok((run, records, bytes))
}

async fn s3_bytes(prefix_url: &str) -> Result<u64, BoxErr> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let store = s3().object_store()?;
    let path = url::Url::parse(prefix_url)?
        .path()
        .trim_start_matches('/')
        .to_string();
    let objs: Vec<object_store::ObjectMeta> = store
        .list(Some(&object_store::path::Path::from(path)))
        .try_collect()
        .await?;
    Ok(objs
        .iter()
        .filter(|o| o.location.as_ref().ends_with(".parquet"))
        .map(|o| o.size)
        .sum())
}

async fn naive(ndjson: &Path, dest_url: &str) -> Result<Run, BoxErr> {
    use object_store::ObjectStoreExt as _;
    let (c0, _) = rusage(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let f = std::fs::File::open(ndjson)?;
    let lines = BufReader::with_capacity(1 << 20, f).split(b'\n');
    let mut writer: Option<parquet::arrow::ArrowWriter<Vec<u8>>> = None;
    let mut write = |chunk: &[Vec<u8>]| -> Result<(), BoxErr> {
        let batch = naive::serde_baseline(chunk);
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(parquet::arrow::ArrowWriter::try_new(
                Vec::new(),
                batch.schema(),
                None,
            )?),
        };
        w.write(&batch)?;
        Ok(())
    };
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(8192);
    for line in lines {
        chunk.push(line?);
        if chunk.len() == 8192 {
            write(&chunk)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        write(&chunk)?;
    }
    let buf = match writer {
        Some(w) => w.into_inner()?,
        None => Vec::new(),
    };
    let out_bytes = buf.len() as u64;
    let store = s3().object_store()?;
    let path = url::Url::parse(dest_url)?
        .path()
        .trim_start_matches('/')
        .to_string();
    store
        .put(
            &object_store::path::Path::from(format!("{path}/part-0.parquet")),
            buf.into(),
        )
        .await?;
    let (c1, rss) = rusage(libc::RUSAGE_SELF);
    Ok(Run {
        wall_s: t0.elapsed().as_secs_f64(),
        cpu_s: c1 - c0,
        peak_rss_mb: rss,
        out_bytes,
    })
}

/// DuckDB's JSON -> Parquet conversion; `options` is appended to `FORMAT parquet`.
fn duckdb(python: &str, ndjson: &Path, out: &Path, options: &str) -> Result<Run, BoxErr> {
    let script = format!(
        r#"
import duckdb, resource, time, json, os
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
t0 = time.perf_counter()
con.execute("COPY (SELECT * FROM read_json('{src}', format = 'newline_delimited')) TO '{dst}' (FORMAT parquet{options})")
wall = time.perf_counter() - t0
r = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM: this process's own peak (ru_maxrss would start at the bench's RSS, inherited at fork)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]
print(json.dumps({{"wall": wall, "cpu": r.ru_utime + r.ru_stime, "rss_mb": int(hwm) / 1024, "bytes": os.path.getsize('{dst}')}}))
"#,
        src = ndjson.display(),
        dst = out.display(),
    );
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(script);
    let (_, cpu, _, stdout) = run_child(cmd)?;
    // the last line: DuckDB may print progress or notices before it
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).map_err(|e| format!("DuckDB runner output {stdout:?}: {e}"))?;
    Ok(Run {
        wall_s: v["wall"].as_f64().unwrap_or(f64::NAN),
        // the whole interpreter's CPU (import + COPY): within a second of the COPY alone
        cpu_s: cpu,
        peak_rss_mb: v["rss_mb"].as_f64().unwrap_or(f64::NAN),
        out_bytes: v["bytes"].as_u64().unwrap_or(0),
    })
}

/// The archive-time ETL of the `--etl` run (issue 24): a realistic rule set.
const ETL_ARGS: [&str; 8] = [
    "--filter",
    "NOT (level = 'debug' AND namespace = 'kube-system')",
    "--derive",
    "service=coalesce(labels['app.kubernetes.io/name'], labels['app'], container)",
    "--derive",
    "tenant=split_part(namespace, '-', 1)",
    "--redact",
    "email,bearer,ipv4",
];

/// The benchmark's `loglake archive --until-end` of `topic` into `table` (dead letters in
/// `lake`), in a fresh group.
fn bench_archive(topic: &str, lake: &str, table: &str) -> Archive {
    Archive::topic(topic, table)
        .fresh_group()
        .dlq(&format!("{lake}/dead_letters"))
        .until_end()
        .env("LOGLAKE_LOG", "warn,buoyant_kernel=off")
}

/// `loglake archive --until-end` of `topic` into `table` (with `extra` flags): (wall, CPU, RSS,
/// report).
fn archive_run(
    topic: &str,
    lake: &str,
    table: &str,
    extra: &[&str],
) -> Result<(f64, f64, f64, serde_json::Value), BoxErr> {
    let cmd = bench_archive(topic, lake, table).args(extra).command();
    let (wall, cpu, rss, stdout) = run_child(cmd)?;
    Ok((wall, cpu, rss, serde_json::from_str(stdout.trim())?))
}

fn main() -> Result<(), BoxErr> {
    let mut gb = 2.0f64;
    let mut etl = false;
    let mut etl_only = false;
    let mut python = std::env::var("LOGLAKE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut skip_duckdb = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--gb" => gb = it.next().ok_or("--gb needs a value")?.parse()?,
            "--python" => python = it.next().ok_or("--python needs a value")?,
            "--skip-duckdb" => skip_duckdb = true,
            "--etl" => etl = true,
            "--etl-only" => (etl, etl_only) = (true, true),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // the integration-test harness starts tansu and moto; it runs the `loglake` binary built for
    // this bench (release), not the debug one
    // SAFETY: single-threaded at this point; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("LOGLAKE_BIN", env!("CARGO_BIN_EXE_loglake")) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::tempdir()?;
    let ndjson = work.path().join("payload.ndjson");

    // 1. the payload: into the broker and, byte-identical, into a local file
    let topic = unique_name("bench");
    rt.block_on(kafka().create_topic(&topic, 6))?;
    let mut cmd = loglake_cmd();
    cmd.args(gen_args(gb))
        .args(["--brokers", &kafka().brokers, "--topic", &topic]);
    let (gen_wall, _, _, _) = run_child(cmd)?;
    let mut cmd = loglake_cmd();
    cmd.args(gen_args(gb))
        .args(["--output", &ndjson.to_string_lossy()]);
    run_child(cmd)?;
    let raw = std::fs::metadata(&ndjson)?.len();
    let lines = {
        let f = std::fs::File::open(&ndjson)?;
        BufReader::new(f).split(b'\n').count() as u64
    };
    let raw_payload = raw - lines; // without the newlines the file adds
    eprintln!(
        "payload: {lines} records, {:.1} MB of JSON, produced to {topic} in {gen_wall:.0} s",
        raw_payload as f64 / 1e6
    );

    // 2. loglake archive
    let lake = s3().unique_url("bench");
    let table = format!("{lake}/logs");
    let (wall, cpu, rss, stdout) = run_child(bench_archive(&topic, &lake, &table).command())?;
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    let ours = Run {
        wall_s: wall,
        cpu_s: cpu,
        peak_rss_mb: rss,
        out_bytes: rt.block_on(s3_bytes(&table))?,
    };
    eprintln!("loglake archive report: {report}");
    // each stage's figures as soon as they exist, so a failing later stage loses nothing
    eprintln!("loglake archive: {ours:?}");
    if report["records_in"].as_u64() != Some(lines) {
        return Err(format!("archived {} of {lines} records", report["records_in"]).into());
    }

    // 2b. the same topic with the archive-time ETL rule set, into another table of the lake
    if etl {
        let etl_table = format!("{lake}/logs_etl");
        let (e_wall, e_cpu, e_rss, e_report) = archive_run(&topic, &lake, &etl_table, &ETL_ARGS)?;
        eprintln!("loglake archive with ETL report: {e_report}");
        if e_report["records_in"].as_u64() != Some(lines) {
            return Err(format!(
                "ETL run archived {} of {lines} records",
                e_report["records_in"]
            )
            .into());
        }
        println!(
            "
ETL ({}): plain {wall:.1} s wall / {cpu:.1} s CPU / {rss:.0} MB RSS; with ETL {e_wall:.1} s wall / \
             {e_cpu:.1} s CPU / {e_rss:.0} MB RSS; CPU ratio {:.3} (+{:.1} %); rows {} of {lines} kept, {} filtered, redactions {}",
            ETL_ARGS.join(" "),
            e_cpu / cpu,
            100.0 * (e_cpu / cpu - 1.0),
            e_report["rows_written"],
            e_report["rows_filtered"],
            e_report["redactions"],
        );
        if etl_only {
            return Ok(());
        }
    }

    // 3. what the Kafka fetch alone costs (the floor of a Kafka-fed pipeline)
    let (fetch, fetched_records, fetched_bytes) = kafka_fetch_only(&topic, 6)?;
    eprintln!("kafka fetch only: {fetch:?}, {fetched_records} records, {fetched_bytes} bytes");
    if fetched_records != lines || fetched_bytes != raw_payload {
        return Err(format!(
            "fetch-only consumer saw {fetched_records} records / {fetched_bytes} bytes, \
             the payload is {lines} / {raw_payload}"
        )
        .into());
    }

    // 4. baselines
    let naive_run = rt.block_on(naive(&ndjson, &format!("{lake}/naive")))?;
    eprintln!("naive: {naive_run:?}");
    let (duck, duck_zstd) = if skip_duckdb {
        (None, None)
    } else {
        let d = duckdb(&python, &ndjson, &work.path().join("duck.parquet"), "")?;
        eprintln!("duckdb: {d:?}");
        let z = duckdb(
            &python,
            &ndjson,
            &work.path().join("duck-zstd.parquet"),
            ", COMPRESSION zstd",
        )?;
        eprintln!("duckdb zstd: {z:?}");
        (Some(d), Some(z))
    };

    let mb = raw_payload as f64 / 1e6;
    println!("\n{lines} records, {mb:.1} MB of Fluent Bit JSON (seeded `loglake gen`), 2 cores\n");
    println!(
        "| pipeline | wall s | CPU s | MB/s per CPU-second | MB/s wall | output MB | compression | peak RSS MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, r: &Run| {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}x | {:.0} |",
            r.wall_s,
            r.cpu_s,
            mb / r.cpu_s,
            mb / r.wall_s,
            r.out_bytes as f64 / 1e6,
            raw_payload as f64 / r.out_bytes.max(1) as f64,
            r.peak_rss_mb
        )
    };
    row("loglake archive (Kafka -> Delta on S3)", &ours);
    println!(
        "| kafka fetch only (librdkafka, archiver's settings; no decode, no output) | {:.1} | {:.1} | {:.1} | {:.1} | - | - | - |",
        fetch.wall_s,
        fetch.cpu_s,
        mb / fetch.cpu_s,
        mb / fetch.wall_s
    );
    row(
        "naive (serde_json::Value -> ArrowWriter -> 1 PUT)",
        &naive_run,
    );
    if let Some(d) = &duck {
        row("DuckDB read_json -> Parquet (local file)", d);
    }
    if let Some(d) = &duck_zstd {
        row(
            "DuckDB read_json -> Parquet, COMPRESSION zstd (local file)",
            d,
        );
    }
    println!(
        "\nper CPU-second: loglake / naive = {:.2}x{}",
        naive_run.cpu_s / ours.cpu_s,
        duck.as_ref()
            .zip(duck_zstd.as_ref())
            .map(|(d, z)| format!(
                ", loglake / DuckDB = {:.2}x (DuckDB with zstd: {:.2}x)",
                d.cpu_s / ours.cpu_s,
                z.cpu_s / ours.cpu_s
            ))
            .unwrap_or_default()
    );
    let after = (ours.cpu_s - fetch.cpu_s).max(1e-9);
    println!(
        "without the Kafka fetch (loglake CPU - fetch-only CPU = {after:.1} s): {:.1} MB/s per CPU-second, \
         {:.2}x naive{}; the fetch is {:.0} % of loglake's CPU",
        mb / after,
        naive_run.cpu_s / after,
        duck.as_ref()
            .map(|d| format!(", {:.2}x DuckDB", d.cpu_s / after))
            .unwrap_or_default(),
        100.0 * fetch.cpu_s / ours.cpu_s
    );
    Ok(())
}
