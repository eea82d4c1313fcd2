//! The log query benchmark (issue 5): 12 analyst queries over a generated Delta table, run in the
//! same process run by three engines on the same Parquet files:
//!
//! * **loglake**: `loglake query`'s engine (Delta table from `--lake`, log-friendly settings);
//! * **datafusion**: a plain `SessionContext` with default settings over the table's Parquet files
//!   (a listing table with hive partitions `dt`, `hour`), with loglake's functions registered so
//!   every query runs (DataFusion has no `log_template` or DuckDB-style `regexp_extract`);
//! * **duckdb**: the `duckdb` Python package (pinned in `scripts/requirements-bench.txt`)
//!   reading the same files with `read_parquet(…, hive_partitioning = true)`.
//!
//! The table is the archiver's: `loglake_archiver::fixture` writes Fluent Bit records of 100
//! namespaces (1,800 pods) spread over one day, decoded and laid out as `loglake archive` writes
//! the shipped `containers` table (26 columns, `dt`/`hour` partitions, bloom filters on
//! `trace_id` and `pod`, the archiver's encodings), in 10 commits.
//!
//! "cold" is the first run on a fresh session/connection (no metadata or statistics caches; the
//! OS page cache is warm for all three, the data having just been written or read), "hot" the
//! median of the next `--runs` runs on the same session. Every engine's answer is compared
//! (row count and first row) so the timings are of equal work.
//!
//! ```sh
//! cargo bench --workspace --bench queries -- --rows 50000000 --dir /tmp/loglake-bench
//! ```
//! Options: `--rows N` (default 50 M), `--dir D` (default `target/bench-lake`; the table is
//! generated once and reused while the generator settings recorded next to it,
//! `logs.fixture.json`, match), `--runs N` (hot runs, default 3),
//! `--python P` (default `$LOGLAKE_BENCH_PYTHON` or `python3`), `--only a,b` (query names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use loglake_archiver::fixture::{FixtureOptions, write_container_table};
use loglake_query::engine::{Engine, EngineOptions};
use loglake_query::script::Statement;

struct Query {
    name: &'static str,
    /// loglake and plain DataFusion
    sql: String,
    /// DuckDB's dialect of the same question
    duck: String,
    /// loglake's own form where it has one (table functions); defaults to `sql`
    loglake: Option<String>,
    /// false where DuckDB computes a different (emulated) answer
    compare_duck: bool,
    /// approximate answers: compare the row count and the first column only
    approx: bool,
}

fn queries(trace_id: &str) -> Vec<Query> {
    let q = |name, sql: &str, duck: &str| Query {
        name,
        sql: sql.to_string(),
        duck: duck.to_string(),
        loglake: None,
        compare_duck: true,
        approx: false,
    };
    let same = |name, sql: &str| q(name, sql, sql);
    let mut v = vec![
        same(
            "count_by_level_per_hour",
            "SELECT dt, hour, level, count(*) AS n FROM logs GROUP BY dt, hour, level ORDER BY dt, hour, level",
        ),
        same(
            "top_namespaces_by_errors",
            "SELECT namespace, count(*) AS n FROM logs WHERE level = 'fatal' GROUP BY namespace ORDER BY n DESC, namespace LIMIT 10",
        ),
        same(
            "like_timeout_scan",
            "SELECT count(*) AS n FROM logs WHERE message LIKE '%upstream timeout%'",
        ),
        same(
            "regexp_group_by",
            "SELECT regexp_extract(message, '\\[([A-Za-z/0-9]+)\\]', 1) AS tag, count(*) AS n FROM logs WHERE level = 'warn' GROUP BY tag ORDER BY n DESC, tag LIMIT 20",
        ),
        same(
            "grep_topk_latest",
            "SELECT ts, pod, message FROM logs WHERE message LIKE '%IllegalStateException: timeout%' ORDER BY ts DESC, pod LIMIT 100",
        ),
        same(
            "trace_id_point_lookup",
            &format!(
                "SELECT ts, namespace, pod, message FROM logs WHERE trace_id = '{trace_id}' ORDER BY ts, pod"
            ),
        ),
        same(
            "one_hour_slice_two_predicates",
            "SELECT pod, count(*) AS n FROM logs WHERE ts >= TIMESTAMP '2024-05-01 13:00:00+00' AND ts < TIMESTAMP '2024-05-01 14:00:00+00' AND namespace = 'team-3' AND stream = 'stderr' GROUP BY pod ORDER BY n DESC, pod LIMIT 20",
        ),
        Query {
            approx: true,
            ..q(
                "approx_percentile_ingest_delay",
                "SELECT namespace, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY arrow_cast(ingest_ts, 'Int64') - arrow_cast(ts, 'Int64')) AS p99_us FROM logs GROUP BY namespace ORDER BY namespace",
                "SELECT namespace, approx_quantile(epoch_us(ingest_ts) - epoch_us(ts), 0.99) AS p99_us FROM logs GROUP BY namespace ORDER BY namespace",
            )
        },
        same("distinct_pods", "SELECT count(DISTINCT pod) AS pods FROM logs"),
        q(
            "json_field_extraction",
            "SELECT json_get_str(message, 'level') AS lvl, count(*) AS n, sum(json_get_int(message, 'duration_ms')) AS duration FROM logs WHERE message LIKE '{%' GROUP BY lvl ORDER BY lvl",
            "SELECT json_extract_string(message, '$.level') AS lvl, count(*) AS n, sum(CAST(json_extract(message, '$.duration_ms') AS BIGINT)) AS duration FROM logs WHERE message LIKE '{%' GROUP BY lvl ORDER BY lvl",
        ),
        Query {
            loglake: Some(
                "SELECT count(*) AS pairs, count(DISTINCT r_pod) AS pods FROM correlate('SELECT * FROM logs WHERE level = ''fatal'' AND trace_id IS NOT NULL', 'SELECT * FROM logs WHERE trace_id IS NOT NULL', key => 'trace_id', within => INTERVAL '10 seconds')".into(),
            ),
            ..same(
                "correlate_trace_within_10s",
                "SELECT count(*) AS pairs, count(DISTINCT b.pod) AS pods FROM logs a JOIN logs b ON a.trace_id = b.trace_id AND b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND a.ts + INTERVAL '10 seconds' WHERE a.level = 'fatal' AND a.trace_id IS NOT NULL AND b.trace_id IS NOT NULL",
            )
        },
        Query {
            compare_duck: false,
            ..q(
                "log_template_top_k",
                "SELECT log_template(message) AS template, count(*) AS n FROM logs WHERE level IN ('error', 'warn') AND stream = 'stderr' GROUP BY template ORDER BY n DESC, template LIMIT 10",
                // DuckDB has no template function: the nearest regexp masking
                "SELECT regexp_replace(regexp_replace(message, '[0-9a-f]{8,}', '<HEX>', 'g'), '[0-9]+', '<NUM>', 'g') AS template, count(*) AS n FROM logs WHERE level IN ('error', 'warn') AND stream = 'stderr' GROUP BY template ORDER BY n DESC, template LIMIT 10",
            )
        },
    ];
    v.shrink_to_fit();
    v
}

#[derive(Debug, Clone, Default)]
struct Timing {
    cold_ms: f64,
    hot_ms: f64,
    cpu_s: f64,
    rows: usize,
    first: Vec<String>,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn first_row(batches: &[RecordBatch]) -> Vec<String> {
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Vec::new();
    };
    let opts = FormatOptions::default().with_null("None");
    b.columns()
        .iter()
        .map(|c| {
            ArrayFormatter::try_new(c.as_ref(), &opts)
                .map(|f| f.value(0).to_string())
                .unwrap_or_default()
        })
        .collect()
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

async fn run_loglake(engine: &Engine, sql: &str) -> Result<Vec<RecordBatch>, BoxErr> {
    let stmt = Statement {
        index: 1,
        line: 1,
        column: 1,
        text: sql.to_string(),
    };
    let res = engine.execute(&stmt).await?;
    let mut out = Vec::new();
    let mut s = res.stream;
    while let Some(b) = s.next().await {
        out.push(b?);
    }
    Ok(out)
}

async fn loglake_engine(lake: &Path) -> Result<Engine, BoxErr> {
    Ok(Engine::new(EngineOptions {
        lake: Some(lake.to_string_lossy().into_owned()),
        ..Default::default()
    })
    .await?)
}

async fn plain_datafusion(table: &Path) -> Result<SessionContext, BoxErr> {
    let mut ctx = SessionContext::new();
    loglake_query::functions::register(&mut ctx)?;
    // every file is written by the archiver's writer with the same schema: inferred from them
    let opts = ParquetReadOptions::default().table_partition_cols(vec![
        ("dt".into(), DataType::Date32),
        ("hour".into(), DataType::Int32),
    ]);
    ctx.register_parquet("logs", table.to_string_lossy().as_ref(), opts)
        .await?;
    Ok(ctx)
}

async fn time_loglake(lake: &Path, sql: &str, runs: usize) -> Result<Timing, BoxErr> {
    let c0 = cpu_seconds();
    let engine = loglake_engine(lake).await?;
    let t0 = Instant::now();
    let out = run_loglake(&engine, sql).await?;
    let cold_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut hot = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        run_loglake(&engine, sql).await?;
        hot.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timing {
        cold_ms,
        hot_ms: median(&mut hot).unwrap_or(cold_ms),
        cpu_s: cpu_seconds() - c0,
        rows: out.iter().map(|b| b.num_rows()).sum(),
        first: first_row(&out),
    })
}

async fn time_datafusion(table: &Path, sql: &str, runs: usize) -> Result<Timing, BoxErr> {
    let c0 = cpu_seconds();
    let ctx = plain_datafusion(table).await?;
    let t0 = Instant::now();
    let out = ctx.sql(sql).await?.collect().await?;
    let cold_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut hot = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        ctx.sql(sql).await?.collect().await?;
        hot.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timing {
        cold_ms,
        hot_ms: median(&mut hot).unwrap_or(cold_ms),
        cpu_s: cpu_seconds() - c0,
        rows: out.iter().map(|b| b.num_rows()).sum(),
        first: first_row(&out),
    })
}

fn time_duckdb(
    python: &str,
    table: &Path,
    qs: &[&Query],
    runs: usize,
) -> Result<BTreeMap<String, Timing>, BoxErr> {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_runner.py");
    let spec = serde_json::json!({
        "dir": table.to_string_lossy(),
        "runs": runs,
        "queries": qs.iter().map(|q| serde_json::json!({"name": q.name, "sql": q.duck})).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(&runner)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{python} {}: {e}", runner.display()))?;
    if let Some(mut si) = child.stdin.take() {
        use std::io::Write;
        si.write_all(spec.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("duckdb runner failed: {}", out.status).into());
    }
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let name = v["name"].as_str().unwrap_or_default().to_string();
        m.insert(
            name,
            Timing {
                cold_ms: v["cold_ms"].as_f64().unwrap_or(f64::NAN),
                hot_ms: v["hot_ms"].as_f64().unwrap_or(f64::NAN),
                cpu_s: v["cpu_s"].as_f64().unwrap_or(f64::NAN),
                rows: v["rows"].as_u64().unwrap_or(0) as usize,
                first: v["first"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| x.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        );
    }
    Ok(m)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn geomean(xs: &[f64]) -> f64 {
    let xs: Vec<f64> = xs
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if xs.is_empty() {
        return f64::NAN;
    }
    (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp()
}

/// Numbers compare loosely across engines (DuckDB prints 1.0 where arrow prints 1; timestamps
/// differ in format): compare the digits of each value.
fn same_answer(a: &Timing, b: &Timing, approx: bool) -> bool {
    let norm = |s: &str| -> String {
        // timestamps: DuckDB prints `2024-05-01 13:00:00+00:00`, arrow `2024-05-01T13:00:00Z`
        let s = if s.len() > 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' {
            s.replacen('T', " ", 1)
        } else {
            s.to_string()
        };
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .trim_end_matches('0')
            .to_string()
    };
    let key = |t: &Timing| {
        t.first
            .iter()
            .take(if approx { 1 } else { usize::MAX })
            .map(|s| norm(s.trim_end_matches("+00:00").trim_end_matches('Z')))
            .collect::<Vec<_>>()
    };
    a.rows == b.rows && key(a) == key(b)
}

struct Args {
    rows: usize,
    dir: PathBuf,
    runs: usize,
    python: String,
    only: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, BoxErr> {
    let mut a = Args {
        rows: 50_000_000,
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-lake"),
        runs: 3,
        python: std::env::var("LOGLAKE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--rows" => a.rows = val()?.parse()?,
            "--dir" => a.dir = PathBuf::from(val()?),
            "--runs" => a.runs = val()?.parse()?,
            "--python" => a.python = val()?,
            "--only" => a.only = Some(val()?.split(',').map(str::to_string).collect()),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// The generator settings of the benchmark's table: `rows` records over one day
/// (2024-05-01), 100 namespaces (1,800 pods), 12 Kafka partitions, 10 commits.
fn fixture_options(rows: usize) -> Result<FixtureOptions, BoxErr> {
    Ok(FixtureOptions {
        namespaces: 100,
        // 2024-05-01T00:00:00Z
        start_unix_secs: 1_714_521_600,
        records_per_second: (rows as u64).div_ceil(86_400),
        commits: 10,
        ..FixtureOptions::new(rows as u64)?
    })
}

/// What the reuse of a generated table is checked against.
fn fixture_marker(o: &FixtureOptions) -> String {
    format!(
        "{{\"generator\":\"loglake_archiver::fixture\",\"rows\":{},\"seed\":{},\"namespaces\":{},\"start\":{},\"records_per_second\":{},\"commits\":{},\"partitions\":{},\"table\":\"{}\"}}\n",
        o.rows,
        o.seed,
        o.namespaces,
        o.start_unix_secs,
        o.records_per_second,
        o.commits,
        o.partitions,
        o.table.name
    )
}

async fn ensure_table(table: &Path, rows: usize) -> Result<(), BoxErr> {
    let opts = fixture_options(rows)?;
    let marker_path = table.with_extension("fixture.json");
    let marker = fixture_marker(&opts);
    if table.join("_delta_log").exists() {
        if std::fs::read_to_string(&marker_path).ok().as_deref() == Some(marker.as_str()) {
            eprintln!("reusing {} ({rows} rows)", table.display());
            return Ok(());
        }
        eprintln!(
            "{} was generated with other settings than {}: regenerating",
            table.display(),
            marker.trim_end()
        );
        std::fs::remove_dir_all(table)?;
    }
    let _ = std::fs::remove_file(&marker_path);
    let t0 = Instant::now();
    let report = write_container_table(&table.to_string_lossy(), &opts).await?;
    std::fs::write(&marker_path, marker)?;
    eprintln!(
        "generated {rows} rows in {:.1} s: Delta version {}, {} files, {:.1} MB of Parquet",
        t0.elapsed().as_secs_f64(),
        report.version,
        report.files,
        report.bytes as f64 / 1e6
    );
    Ok(())
}

/// A trace id of a row near the middle of the table (first JSON line at or after the middle
/// offset of Kafka partition 0; the generator's trace ids are unique per line).
async fn middle_trace_id(lake: &Path, rows: usize) -> Result<String, BoxErr> {
    let engine = loglake_engine(lake).await?;
    let mid = rows / 2 / fixture_options(rows)?.partitions.max(1) as usize;
    let b = run_loglake(
        &engine,
        &format!(
            "SELECT trace_id FROM logs WHERE kafka_partition = 0 AND kafka_offset >= {mid} AND trace_id IS NOT NULL ORDER BY kafka_offset LIMIT 1"
        ),
    )
    .await?;
    let first = first_row(&b);
    first
        .into_iter()
        .next()
        .ok_or_else(|| "no row with a trace id in the second half of partition 0".into())
}

fn main() -> Result<(), BoxErr> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.dir)?;
    let lake = args.dir.canonicalize()?;
    let table = lake.join("logs");
    rt.block_on(ensure_table(&table, args.rows))?;
    let trace = rt.block_on(middle_trace_id(&lake, args.rows))?;
    let all = queries(&trace);
    let qs: Vec<&Query> = all
        .iter()
        .filter(|q| {
            args.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == q.name))
        })
        .collect();

    let duck = time_duckdb(&args.python, &table, &qs, args.runs)?;
    let mut rows_out = Vec::new();
    let (mut r_duck, mut r_df, mut r_duck_cold, mut r_df_cold) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cpu = [0.0f64; 3];
    for q in &qs {
        let ll_sql = q.loglake.as_deref().unwrap_or(&q.sql);
        let ll = rt.block_on(time_loglake(&lake, ll_sql, args.runs))?;
        let df = rt.block_on(time_datafusion(&table, &q.sql, args.runs))?;
        let dk = duck.get(q.name).cloned().unwrap_or_default();
        let df_ok = same_answer(&ll, &df, q.approx);
        let dk_ok = !q.compare_duck || same_answer(&ll, &dk, q.approx);
        if !df_ok || !dk_ok {
            eprintln!(
                "ANSWERS DIFFER for {}: loglake {:?} ({} rows), datafusion {:?} ({} rows), duckdb {:?} ({} rows)",
                q.name, ll.first, ll.rows, df.first, df.rows, dk.first, dk.rows
            );
        }
        cpu[0] += ll.cpu_s;
        cpu[1] += df.cpu_s;
        cpu[2] += dk.cpu_s;
        r_duck.push(ll.hot_ms / dk.hot_ms);
        r_df.push(ll.hot_ms / df.hot_ms);
        r_duck_cold.push(ll.cold_ms / dk.cold_ms);
        r_df_cold.push(ll.cold_ms / df.cold_ms);
        eprintln!(
            "{:<32} loglake {:>8.0} / {:>8.0} ms   datafusion {:>8.0} / {:>8.0} ms   duckdb {:>8.0} / {:>8.0} ms  (hot / cold)",
            q.name, ll.hot_ms, ll.cold_ms, df.hot_ms, df.cold_ms, dk.hot_ms, dk.cold_ms
        );
        rows_out.push(format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} |",
            q.name,
            ll.hot_ms,
            ll.cold_ms,
            df.hot_ms,
            df.cold_ms,
            dk.hot_ms,
            dk.cold_ms,
            ll.hot_ms / dk.hot_ms,
            ll.hot_ms / df.hot_ms,
            match (df_ok, dk_ok, q.compare_duck) {
                (true, true, true) if q.approx => "all 3 agree (approximate: rows and keys)",
                (true, true, true) => "all 3 equal",
                (true, true, false) => "loglake = datafusion (duckdb: different function)",
                _ => "DIFFER",
            }
        ));
    }
    println!(
        "\n{} rows, {} hot runs; times in ms (hot = median of the hot runs, cold = first run on a fresh session)\n",
        args.rows, args.runs
    );
    println!(
        "| query | loglake hot | loglake cold | datafusion hot | datafusion cold | duckdb hot | duckdb cold | loglake/duckdb (hot) | loglake/datafusion (hot) | answers |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows_out {
        println!("{r}");
    }
    println!(
        "\ngeomean loglake/duckdb: hot {:.2}, cold {:.2}; loglake/datafusion: hot {:.2}, cold {:.2}",
        geomean(&r_duck),
        geomean(&r_duck_cold),
        geomean(&r_df),
        geomean(&r_df_cold)
    );
    println!(
        "CPU seconds over all runs: loglake {:.1}, datafusion {:.1}, duckdb {:.1}",
        cpu[0], cpu[1], cpu[2]
    );
    Ok(())
}
