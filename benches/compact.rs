//! The compaction benchmark (issue 19): `loglake compact` against delta-rs's `optimize` on copies
//! of one table as the archiver leaves it, then the same three queries on every result.
//!
//! 1. **input**: seeded container logs (`loglake gen`, Fluent Bit JSON, event time spread over
//!    `--hours` hours of 1 May 2024, so every partition is long closed) in a 6-partition topic of
//!    a real Kafka-protocol broker (tansu, started by the test harness), archived by the real
//!    `loglake archive --until-end` into a Delta table **on the local filesystem** with a short
//!    roll (`--roll-interval 2s --target-file-size 64KiB --poll-batch-bytes 1MiB`): thousands of
//!    small files in arrival order, as a continuously running archiver leaves them. The table
//!    is copied three times (`cp -r`), so every contender starts from identical input.
//! 2. **compaction**, each a child process measured with `wait4` (wall, user+sys CPU):
//!    * copy A: `loglake compact --sort-by namespace,pod,ts --bloom-filter-columns trace_id
//!      --settle 0s --target-file-size 128MiB --memory-budget 512MiB` (it also checkpoints);
//!    * copy B: delta-rs `DeltaTable.optimize.compact(target_size=128MiB)` (Python `deltalake`);
//!    * copy C: delta-rs `DeltaTable.optimize.z_order(["namespace", "pod"], target_size=128MiB)`;
//!
//!    both delta-rs runs with `WriterProperties(compression="ZSTD", compression_level=3)` (the
//!    archiver's codec) and a bloom filter on `trace_id` (delta-rs's defaults: 1 M distinct
//!    values, fpp 0.05). Peak RSS: `ru_maxrss` of the loglake child (it may start at the bench
//!    process's own RSS, inherited through the spawn: printed for reference), the Python
//!    process's own `VmHWM`. Files, bytes and rows out: the active files of the Delta log
//!    (`DeltaTable.get_add_actions`), not what lies in the folder.
//! 3. **queries** on the original and on each result, with `loglake query --lake <copy> -c SQL`
//!    (one process per run; the statement's time from `--timing`) and DuckDB (one fresh
//!    connection per run; `delta_scan` of the delta extension loaded from the
//!    `duckdb-extension-delta` wheel as tests/python/readers.py does, or — when the Python has no
//!    such wheel — `read_parquet` over the Delta log's active files): a pod lookup (count,
//!    min/max ts), a `trace_id` lookup (the row) and a 10-minute time slice (count). The pod,
//!    trace id and slice are picked from the original table. Each query runs `--runs` times; the
//!    median is reported (the files are in the page cache: warm runs). Bytes read: `rchar` of
//!    `/proc/<pid>/io` (bytes returned by read syscalls, page cache or not; both engines read
//!    files with `pread`, no mmap). For `loglake query` the child's `rchar` at exit (read while it
//!    is a zombie) minus that of a `SELECT 1` run on the same lake (start-up reads); for DuckDB
//!    the difference around the query in the Python process. Both include the Delta log. For
//!    loglake query the bench also splits that up: the size of the Delta log a reader replays
//!    (last checkpoint and later commits) and the `bytes_scanned` metrics of the Parquet scans in
//!    one more run under `EXPLAIN ANALYZE`. Every engine must return the same counts on every
//!    table, or the bench fails.
//!
//! ```sh
//! eval "$(scripts/install-test-deps.sh)"     # tansu (and the test venv: deltalake + DuckDB)
//! cargo bench -p loglake --bench compact -- --gb 2
//! ```
//! Options: `--gb N` (raw JSON, default 2), `--hours H` (event-time span, default 6), `--runs R`
//! (per query, default 3), `--memory-budget SIZE` (loglake compact's, default 512MiB),
//! `--python P` (needs `deltalake` and `duckdb`; default `$LOGLAKE_TEST_VENV/bin/python`, then
//! `$LOGLAKE_BENCH_PYTHON`, then `python3`), `--dir D` (work folder, kept; default a temporary
//! folder, removed at the end).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use loglake_tests::{kafka, unique_name};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

const TARGET: u64 = 128 << 20;
const START: &str = "2024-05-01T00:00:00Z";

/// A finished child: wall s, user+sys CPU s, `ru_maxrss` MB, `rchar` bytes, stdout, stderr.
struct Child {
    wall_s: f64,
    cpu_s: f64,
    maxrss_mb: f64,
    rchar: u64,
    stdout: String,
    stderr: String,
}

fn describe(cmd: &Command) -> String {
    format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn proc_field(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

/// Runs a child to completion: its figures from wait4, and its `rchar` read from
/// `/proc/<pid>/io` while it is a zombie (waitid with WNOWAIT), before it is reaped.
fn run_child(mut cmd: Command) -> Result<Child, BoxErr> {
    let what = describe(&cmd);
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let pid = child.id() as i32;
    let mut err_pipe = child.stderr.take().ok_or("no stderr pipe")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)
            .map_err(|e| format!("reading the output of {what}: {e}"))?;
    }
    // SAFETY: waitid on our own child, leaving it waitable (WNOWAIT).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return Err(format!("waitid for {what}: {}", std::io::Error::last_os_error()).into());
    }
    let rchar = proc_field(&format!("/proc/{pid}/io"), "rchar:").unwrap_or(0);
    let mut status = 0;
    // SAFETY: wait4 on our own child; fills status and rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut u) };
    let wall_s = t0.elapsed().as_secs_f64();
    let stderr = err_reader.join().unwrap_or_default();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let tail: String = {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        return Err(format!("{what} failed (status {status}); its stderr ends:\n{tail}").into());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Child {
        wall_s,
        cpu_s: tv(u.ru_utime) + tv(u.ru_stime),
        maxrss_mb: u.ru_maxrss as f64 / 1024.0,
        rchar,
        stdout,
        stderr,
    })
}

/// The last line of `text` that is a JSON object.
fn last_json(text: &str, what: &str) -> Result<serde_json::Value, BoxErr> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("{what}: no JSON line in its output {text:?}"))?;
    serde_json::from_str(line).map_err(|e| format!("{what}: output {line:?}: {e}").into())
}

fn loglake() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loglake"));
    c.env("LOGLAKE_LOG", "warn,buoyant_kernel=off");
    c
}

/// The Python side: delta-rs's optimize, Delta log statistics, query parameters and DuckDB runs.
const PY: &str = r#"
import json, os, resource, statistics, sys, time

def proc(path, key):
    for line in open(path):
        if line.startswith(key):
            return int(line.split()[1])
    return 0

def rchar():
    return proc('/proc/self/io', 'rchar:')

def stats(path):
    from deltalake import DeltaTable
    dt = DeltaTable(path)
    a = dt.get_add_actions(flatten=True)
    sizes = a.column('size_bytes').to_pylist()
    rows = a.column('num_records').to_pylist()
    parts = set(zip(a.column('partition.dt').to_pylist(), a.column('partition.hour').to_pylist()))
    return {'version': dt.version(), 'files': len(sizes), 'bytes': sum(sizes),
            'rows': sum(r or 0 for r in rows), 'partitions': len(parts)}

class Duck:
    def __init__(self):
        import duckdb
        self.duckdb = duckdb
        self.ext = None
        try:
            import duckdb_extension_delta
            d = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), 'extensions')
            self.ext = os.path.join(d, sorted(os.listdir(d))[-1], 'delta.duckdb_extension')
            self.method = 'delta_scan (delta extension %s)' % sorted(os.listdir(d))[-1]
        except ImportError:
            self.method = "read_parquet over the Delta log's active files"

    def connect(self):
        con = self.duckdb.connect()
        con.execute('SET enable_progress_bar = false')
        if self.ext:
            con.load_extension(self.ext)
        return con

    def source(self, path):
        if self.ext:
            return "delta_scan('%s')" % path
        from deltalake import DeltaTable
        files = DeltaTable(path).file_uris()
        return 'read_parquet([%s], hive_partitioning = false)' % ', '.join("'%s'" % f for f in files)

cmd = sys.argv[1]
if cmd == 'optimize':
    from deltalake import DeltaTable, WriterProperties, ColumnProperties, BloomFilterProperties
    path, mode, target = sys.argv[2], sys.argv[3], int(sys.argv[4])
    wp = WriterProperties(compression='ZSTD', compression_level=3, column_properties={
        'trace_id': ColumnProperties(bloom_filter_properties=BloomFilterProperties(True))})
    dt = DeltaTable(path)
    t0 = time.perf_counter()
    if mode == 'zorder':
        m = dt.optimize.z_order(['namespace', 'pod'], target_size=target, writer_properties=wp)
    else:
        m = dt.optimize.compact(target_size=target, writer_properties=wp)
    wall = time.perf_counter() - t0
    print(json.dumps({'wall': wall, 'rss_mb': proc('/proc/self/status', 'VmHWM:') / 1024,
                      'metrics': {k: v for k, v in m.items() if isinstance(v, (int, float, str))}}))
elif cmd == 'stats':
    print(json.dumps(stats(sys.argv[2])))
elif cmd == 'params':
    d = Duck()
    con = d.connect()
    t = d.source(sys.argv[2])
    lo, hi = con.execute('SELECT epoch_us(min(ts)), epoch_us(max(ts)) FROM %s' % t).fetchone()
    pods = con.execute('SELECT namespace, pod, count(*) AS c FROM %s GROUP BY ALL '
                       'ORDER BY c, namespace, pod' % t).fetchall()
    ns, pod, _ = pods[len(pods) // 2]
    mid = (lo + (hi - lo) // 2) // 60_000_000 * 60
    fmt = lambda s: time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(s))
    trace = con.execute("SELECT trace_id FROM %s WHERE trace_id IS NOT NULL AND ts >= '%s' "
                        'ORDER BY ts, trace_id LIMIT 1' % (t, fmt(mid))).fetchone()[0]
    print(json.dumps({'namespace': ns, 'pod': pod, 'pods': len(pods), 'trace_id': trace,
                      'from': fmt(mid), 'to': fmt(mid + 600), 'method': d.method}))
elif cmd == 'duckdb':
    path, runs = sys.argv[2], int(sys.argv[4])
    queries = json.load(open(sys.argv[3]))
    d = Duck()
    out = []
    for q in queries:
        times, reads, rows = [], [], None
        for _ in range(runs):
            con = d.connect()
            sql = q['sql'].replace('{t}', d.source(path))
            r0 = rchar()
            t0 = time.perf_counter()
            res = con.execute(sql).fetchall()
            times.append(time.perf_counter() - t0)
            reads.append(rchar() - r0)
            con.close()
            rows = res
        count = rows[0][0] if q['count'] else len(rows)
        out.append({'name': q['name'], 'seconds': statistics.median(times),
                    'rchar': statistics.median(reads), 'count': count})
    print(json.dumps({'method': d.method, 'queries': out}))
"#;

struct Py {
    python: String,
    script: PathBuf,
}

impl Py {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(&self.script).args(args);
        c
    }
    fn json(&self, args: &[&str]) -> Result<serde_json::Value, BoxErr> {
        let what = format!("python {}", args.join(" "));
        let out = run_child(self.cmd(args))?;
        last_json(&out.stdout, &what)
    }
}

#[derive(Debug, Clone)]
struct TableStats {
    files: u64,
    bytes: u64,
    rows: u64,
    partitions: u64,
}

fn table_stats(py: &Py, table: &Path) -> Result<TableStats, BoxErr> {
    let v = py.json(&["stats", &table.to_string_lossy()])?;
    let n = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("stats of {}: no {k} in {v}", table.display()))
    };
    Ok(TableStats {
        files: n("files")?,
        bytes: n("bytes")?,
        rows: n("rows")?,
        partitions: n("partitions")?,
    })
}

#[derive(Debug, Clone)]
struct Compaction {
    name: &'static str,
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
    out: TableStats,
}

#[derive(Debug, Clone)]
struct Query {
    name: &'static str,
    sql: String,
    /// The result's first column, `n`, is the count to compare (else: the number of rows).
    count: bool,
}

/// One engine's figures for one query on one table: median seconds, median bytes read, count.
#[derive(Debug, Clone, Copy)]
struct QueryRun {
    seconds: f64,
    read: f64,
    count: u64,
    /// loglake only: `bytes_scanned` of the Parquet scans in `EXPLAIN ANALYZE` (no Delta log).
    scanned: Option<f64>,
}

/// The sum of the `bytes_scanned=…` metrics of an `EXPLAIN ANALYZE` plan (DataFusion prints
/// counts as `452.9 K`, `1.23 M`, `4.00 B`: powers of 1,000).
fn bytes_scanned(plan: &str) -> Option<f64> {
    let mut total = None;
    for part in plan.split("bytes_scanned=").skip(1) {
        let v = part.split([',', ']']).next()?.trim();
        let (num, mult) = match v.rsplit_once(' ') {
            Some((n, "K")) => (n, 1e3),
            Some((n, "M")) => (n, 1e6),
            Some((n, "B")) => (n, 1e9),
            Some((n, "T")) => (n, 1e12),
            _ => (v, 1.0),
        };
        *total.get_or_insert(0.0) += num.parse::<f64>().ok()? * mult;
    }
    total
}

/// Bytes of the Delta log a reader replays: the last checkpoint (`_last_checkpoint` names it)
/// and the commits after it, or every commit when there is no checkpoint.
fn delta_log_bytes(table: &Path) -> Result<u64, BoxErr> {
    let log = table.join("_delta_log");
    let checkpoint = std::fs::read_to_string(log.join("_last_checkpoint"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_u64());
    let mut total = 0;
    for e in std::fs::read_dir(&log).map_err(|e| format!("listing {}: {e}", log.display()))? {
        let e = e.map_err(|e| format!("listing {}: {e}", log.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let version = name.split('.').next().and_then(|v| v.parse::<u64>().ok());
        let counted = match (version, checkpoint) {
            _ if name == "_last_checkpoint" => true,
            (Some(v), Some(c)) if name.ends_with(".json") => v > c,
            (Some(v), Some(c)) if name.contains(".checkpoint.") => v == c,
            (Some(_), None) => name.ends_with(".json"),
            _ => false,
        };
        if counted {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `loglake query --lake <lake> -c SQL --timing --format ndjson`: the statement's time and rows.
fn loglake_query(lake: &Path, sql: &str) -> Result<(f64, u64, Vec<serde_json::Value>), BoxErr> {
    let mut cmd = loglake();
    cmd.arg("query")
        .arg("--lake")
        .arg(lake)
        .args(["--timing", "--format", "ndjson", "-c", sql]);
    let c = run_child(cmd)?;
    // "statement 1: 1 row(s) in 0.064s"
    let secs = c
        .stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("statement 1: ")
                .and_then(|r| r.rsplit_once(" in "))
                .and_then(|(_, t)| t.trim().strip_suffix('s'))
                .and_then(|t| t.parse::<f64>().ok())
        })
        .ok_or_else(|| format!("loglake query {sql:?}: no timing in {:?}", c.stderr))?;
    let rows = c
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("loglake query row {l:?}: {e}")))
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    Ok((secs, c.rchar, rows))
}

fn loglake_queries(lake: &Path, queries: &[Query], runs: usize) -> Result<Vec<QueryRun>, BoxErr> {
    let baseline = (0..runs)
        .map(|_| loglake_query(lake, "SELECT 1").map(|(_, r, _)| r))
        .collect::<Result<Vec<u64>, _>>()?
        .into_iter()
        .min()
        .unwrap_or(0);
    let mut out = Vec::new();
    for q in queries {
        let (mut times, mut reads, mut count) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            let (s, rchar, rows) = loglake_query(lake, &q.sql.replace("{t}", "logs"))?;
            times.push(s);
            reads.push(rchar.saturating_sub(baseline) as f64);
            count = if q.count {
                rows.first()
                    .and_then(|r| r.get("n"))
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| format!("loglake query {}: no count in {rows:?}", q.name))?
            } else {
                rows.len() as u64
            };
        }
        let (_, _, plan) = loglake_query(
            lake,
            &format!("EXPLAIN ANALYZE {}", q.sql.replace("{t}", "logs")),
        )?;
        let plan: String = plan
            .iter()
            .filter_map(|r| r.get("plan").and_then(|p| p.as_str()))
            .collect();
        out.push(QueryRun {
            seconds: median(times),
            read: median(reads),
            count,
            scanned: bytes_scanned(&plan),
        });
    }
    Ok(out)
}

fn duckdb_queries(
    py: &Py,
    work: &Path,
    table: &Path,
    queries: &[Query],
    runs: usize,
) -> Result<(String, Vec<QueryRun>), BoxErr> {
    let qfile = work.join("queries.json");
    let list: Vec<serde_json::Value> = queries
        .iter()
        .map(|q| serde_json::json!({"name": q.name, "sql": q.sql, "count": q.count}))
        .collect();
    std::fs::write(&qfile, serde_json::to_vec(&list)?)
        .map_err(|e| format!("writing {}: {e}", qfile.display()))?;
    let v = py.json(&[
        "duckdb",
        &table.to_string_lossy(),
        &qfile.to_string_lossy(),
        &runs.to_string(),
    ])?;
    let rows = v["queries"]
        .as_array()
        .ok_or_else(|| format!("DuckDB runner: no queries in {v}"))?;
    let runs = rows
        .iter()
        .map(|r| QueryRun {
            seconds: r["seconds"].as_f64().unwrap_or(f64::NAN),
            read: r["rchar"].as_f64().unwrap_or(f64::NAN),
            count: r["count"].as_u64().unwrap_or(u64::MAX),
            scanned: None,
        })
        .collect();
    Ok((v["method"].as_str().unwrap_or("?").to_string(), runs))
}

fn cp_r(from: &Path, to: &Path) -> Result<(), BoxErr> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut cmd = Command::new("cp");
    cmd.arg("-r").arg(from).arg(to);
    run_child(cmd)?;
    Ok(())
}

fn main() -> Result<(), BoxErr> {
    let mut gb = 2.0f64;
    let mut hours = 6u64;
    let mut runs = 3usize;
    let mut budget = "512MiB".to_string();
    let mut python = std::env::var("LOGLAKE_TEST_VENV")
        .map(|v| format!("{v}/bin/python"))
        .or_else(|_| std::env::var("LOGLAKE_BENCH_PYTHON"))
        .unwrap_or_else(|_| "python3".into());
    let mut dir: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--gb" => gb = it.next().ok_or("--gb needs a value")?.parse()?,
            "--hours" => hours = it.next().ok_or("--hours needs a value")?.parse()?,
            "--runs" => runs = it.next().ok_or("--runs needs a value")?.parse()?,
            "--memory-budget" => budget = it.next().ok_or("--memory-budget needs a value")?,
            "--python" => python = it.next().ok_or("--python needs a value")?,
            "--dir" => dir = Some(it.next().ok_or("--dir needs a value")?.into()),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if runs == 0 || hours == 0 {
        return Err("--runs and --hours must be at least 1".into());
    }
    let _tmp;
    let work = match dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(&d)?.next().is_some() {
                return Err(format!("--dir {} is not empty", d.display()).into());
            }
            std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            d.canonicalize()?
        }
        None => {
            _tmp = tempfile::Builder::new().prefix("compact-bench").tempdir()?;
            _tmp.path().to_path_buf()
        }
    };
    let py = Py {
        python,
        script: work.join("bench.py"),
    };
    std::fs::write(&py.script, PY).map_err(|e| format!("writing {}: {e}", py.script.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // 1. the input: `loglake gen` into the broker, `loglake archive` with a short roll
    let topic = unique_name("compact-bench");
    rt.block_on(kafka().create_topic(&topic, 6))?;
    let bytes = (gb * 1e9) as u64;
    let rate = ((bytes as f64 / 900.0) / (hours as f64 * 3600.0))
        .ceil()
        .max(1.0) as u64;
    let mut cmd = loglake();
    cmd.args(["gen", "--brokers", &kafka().brokers, "--topic", &topic])
        .args(["--bytes", &bytes.to_string(), "--start", START])
        .args(["--records-per-second", &rate.to_string()]);
    let g = run_child(cmd)?;
    let gen_report = last_json(&g.stderr, "loglake gen")?;
    let records = gen_report["records"]
        .as_u64()
        .ok_or("loglake gen: no records")?;
    let raw = gen_report["bytes"]
        .as_u64()
        .ok_or("loglake gen: no bytes")?;
    eprintln!("gen: {gen_report} in {:.0} s", g.wall_s);

    let orig = work.join("orig/logs");
    let roll = [
        "--roll-interval",
        "2s",
        "--target-file-size",
        "64KiB",
        "--poll-batch-bytes",
        "1MiB",
    ];
    let mut cmd = loglake();
    cmd.args(["archive", "--brokers", &kafka().brokers, "--topic", &topic])
        .args(["--group", &unique_name("g"), "--decoder", "fluentbit"])
        .arg("--table")
        .arg(&orig)
        .arg("--dlq-table")
        .arg(work.join("dlq/dead_letters"))
        .arg("--until-end")
        .args(roll);
    let a = run_child(cmd)?;
    let arch = last_json(&a.stdout, "loglake archive")?;
    eprintln!("archive: {arch} in {:.0} s", a.wall_s);
    if arch["rows_written"].as_u64() != Some(records) {
        return Err(format!(
            "archived {} rows of {records} records",
            arch["rows_written"]
        )
        .into());
    }
    let input = table_stats(&py, &orig)?;
    eprintln!("input table: {input:?}");
    if input.rows != records {
        return Err(format!("the input table holds {} rows, not {records}", input.rows).into());
    }

    // 2. three identical copies
    let copies: Vec<PathBuf> = ["A", "B", "C"]
        .iter()
        .map(|c| work.join(c).join("logs"))
        .collect();
    for c in &copies {
        cp_r(&orig, c)?;
    }

    // 3. the contenders
    let bench_rss = proc_field("/proc/self/status", "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let mut results: Vec<Compaction> = Vec::new();
    let mut cmd = loglake();
    cmd.arg("compact")
        .arg("--table")
        .arg(&copies[0])
        .args([
            "--sort-by",
            "namespace,pod,ts",
            "--bloom-filter-columns",
            "trace_id",
        ])
        .args(["--settle", "0s", "--target-file-size", "128MiB"])
        .args(["--memory-budget", &budget])
        .arg("--spill-dir")
        .arg(&work);
    let c = run_child(cmd)?;
    let report = last_json(&c.stdout, "loglake compact")?;
    eprintln!("loglake compact: {report}");
    results.push(Compaction {
        name: "loglake compact (sort namespace,pod,ts; bloom trace_id; + checkpoint)",
        wall_s: c.wall_s,
        cpu_s: c.cpu_s,
        peak_rss_mb: c.maxrss_mb,
        out: table_stats(&py, &copies[0])?,
    });
    for (copy, mode, name) in [
        (
            &copies[1],
            "compact",
            "delta-rs optimize.compact (zstd(3), bloom trace_id)",
        ),
        (
            &copies[2],
            "zorder",
            "delta-rs optimize.z_order(namespace,pod) (zstd(3), bloom trace_id)",
        ),
    ] {
        let c = run_child(py.cmd(&[
            "optimize",
            &copy.to_string_lossy(),
            mode,
            &TARGET.to_string(),
        ]))?;
        let v = last_json(&c.stdout, name)?;
        eprintln!("{name}: {v}");
        results.push(Compaction {
            name,
            wall_s: c.wall_s,
            cpu_s: c.cpu_s,
            peak_rss_mb: v["rss_mb"].as_f64().unwrap_or(f64::NAN),
            out: table_stats(&py, copy)?,
        });
    }
    for r in &results {
        eprintln!("{r:?}");
        if r.out.rows != input.rows {
            return Err(format!("{}: {} rows out of {}", r.name, r.out.rows, input.rows).into());
        }
    }

    // 4. the queries
    let p = py.json(&["params", &orig.to_string_lossy()])?;
    eprintln!("query parameters: {p}");
    let s = |k: &str| {
        p[k].as_str()
            .map(|v| v.replace('\'', "''"))
            .ok_or_else(|| format!("query parameters: no {k} in {p}"))
    };
    let (ns, pod, trace, from, to) = (
        s("namespace")?,
        s("pod")?,
        s("trace_id")?,
        s("from")?,
        s("to")?,
    );
    let queries = vec![
        Query {
            name: "pod",
            sql: format!(
                "SELECT count(*) AS n, CAST(min(ts) AS VARCHAR) AS lo, CAST(max(ts) AS VARCHAR) AS hi \
                 FROM {{t}} WHERE namespace = '{ns}' AND pod = '{pod}'"
            ),
            count: true,
        },
        Query {
            name: "trace_id",
            sql: format!(
                "SELECT namespace, pod, CAST(ts AS VARCHAR) AS ts, message FROM {{t}} \
                 WHERE trace_id = '{trace}'"
            ),
            count: false,
        },
        Query {
            name: "time slice",
            sql: format!("SELECT count(*) AS n FROM {{t}} WHERE ts BETWEEN '{from}' AND '{to}'"),
            count: true,
        },
    ];
    let tables: Vec<(&str, PathBuf)> = vec![
        ("uncompacted (archiver's files)", orig.clone()),
        ("A: loglake compact", copies[0].clone()),
        ("B: delta-rs compact", copies[1].clone()),
        ("C: delta-rs z-order", copies[2].clone()),
    ];
    let mut qres: Vec<(&str, &str, Vec<QueryRun>)> = Vec::new();
    let mut duck_method = String::new();
    for (label, table) in &tables {
        let lake = table.parent().ok_or("table without a parent folder")?;
        let l = loglake_queries(lake, &queries, runs)?;
        eprintln!("loglake query on {label}: {l:?}");
        let (method, d) = duckdb_queries(&py, &work, table, &queries, runs)?;
        eprintln!("DuckDB on {label}: {d:?}");
        duck_method = method;
        qres.push((label, "loglake query", l));
        qres.push((label, "DuckDB", d));
    }
    for (i, q) in queries.iter().enumerate() {
        let want = qres[0].2[i].count;
        for (label, engine, r) in &qres {
            if r[i].count != want {
                return Err(format!(
                    "query {}: {engine} on {label} counts {}, loglake query on the original {want}",
                    q.name, r[i].count
                )
                .into());
            }
        }
    }

    // 5. the tables
    let mb = |b: f64| b / 1e6;
    let mb_in = mb(input.bytes as f64);
    println!(
        "\n{records} records, {:.1} MB of Fluent Bit JSON (seeded `loglake gen`, {hours} h of event \
         time from {START}), archived by `loglake archive --until-end {}` to a Delta table on the \
         local filesystem in {:.0} s: {} files, {:.1} MB, {} partitions (dt/hour). 2 cores.\n",
        mb(raw as f64),
        roll.join(" "),
        a.wall_s,
        input.files,
        mb_in,
        input.partitions,
    );
    println!(
        "| compaction (target 128 MiB) | wall s | CPU s | MB in per CPU-second | peak RSS MiB | files in -> out | MB out |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {} -> {} | {:.1} |",
            r.name,
            r.wall_s,
            r.cpu_s,
            mb_in / r.cpu_s,
            r.peak_rss_mb,
            input.files,
            r.out.files,
            mb(r.out.bytes as f64)
        );
    }
    println!(
        "\nQueries: median of {runs} warm runs; time = the statement (loglake `--timing`) or the \
         `execute` + fetch (DuckDB, {duck_method}), both including the Delta log; MB read = \
         `rchar` (see the doc comment). pod: `{ns}`/`{pod}` (the median of {} pods by rows), \
         trace_id `{trace}`, slice {from} .. {to}.\n",
        p["pods"]
    );
    println!(
        "| table | engine | pod s | pod MB read | trace_id s | trace_id MB read | slice s | slice MB read |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (label, engine, r) in &qres {
        println!(
            "| {label} | {engine} | {:.3} | {:.2} | {:.3} | {:.2} | {:.3} | {:.2} |",
            r[0].seconds,
            mb(r[0].read),
            r[1].seconds,
            mb(r[1].read),
            r[2].seconds,
            mb(r[2].read)
        );
    }
    println!(
        "\nrows: pod {}, trace_id {}, slice {} (the same from every engine and table)",
        qres[0].2[0].count, qres[0].2[1].count, qres[0].2[2].count
    );

    println!(
        "\nWhere loglake query's bytes go: the Delta log a reader replays (last checkpoint + later \
         commits, or every commit) and the Parquet `bytes_scanned` of `EXPLAIN ANALYZE` (one more \
         run).\n"
    );
    println!(
        "| table | Delta log MB | pod: Parquet MB scanned | trace_id: Parquet MB scanned | slice: Parquet MB scanned |"
    );
    println!("|---|---:|---:|---:|---:|");
    let scanned = |r: &QueryRun| {
        r.scanned
            .map_or("?".to_string(), |b| format!("{:.2}", mb(b)))
    };
    for ((label, table), (_, _, r)) in tables.iter().zip(qres.iter().step_by(2)) {
        println!(
            "| {label} | {:.2} | {} | {} | {} |",
            mb(delta_log_bytes(table)? as f64),
            scanned(&r[0]),
            scanned(&r[1]),
            scanned(&r[2])
        );
    }

    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    let ours = &results[0];
    let drs = &results[1];
    let speed = (mb_in / ours.cpu_s) / (mb_in / drs.cpu_s);
    println!(
        "\n- loglake compact / delta-rs compact, MB per CPU-second: {speed:.2}x (goal >= 2x: {}); \
         vs delta-rs z-order: {:.2}x",
        goal(speed >= 2.0),
        results[2].cpu_s / ours.cpu_s
    );
    let budget_mib = parse_size(&budget)? as f64 / (1 << 20) as f64;
    println!(
        "- loglake compact peak RSS {:.0} MiB vs --memory-budget {budget} ({budget_mib:.0} MiB): \
         {:.2}x the budget (its ru_maxrss; the bench process it was spawned from had a peak of \
         {bench_rss:.0} MiB)",
        ours.peak_rss_mb,
        ours.peak_rss_mb / budget_mib
    );
    let (un_l, un_d, a_l, a_d) = (&qres[0].2, &qres[1].2, &qres[2].2, &qres[3].2);
    let fewer = un_l[1].read / a_l[1].read.max(1.0);
    println!(
        "- trace_id lookup, MB read uncompacted / compacted by loglake: {fewer:.1}x with loglake \
         query (goal >= 50x: {}), {:.1}x with DuckDB; Parquet bytes scanned by loglake query \
         alone (no Delta log): {:.1}x",
        goal(fewer >= 50.0),
        un_d[1].read / a_d[1].read.max(1.0),
        un_l[1].scanned.unwrap_or(f64::NAN) / a_l[1].scanned.unwrap_or(f64::NAN).max(1.0)
    );
    for (i, name) in [(0, "pod"), (1, "trace_id")] {
        let r = a_l[i].seconds / a_d[i].seconds;
        println!(
            "- {name} lookup on loglake's compacted files, loglake query / DuckDB time: {r:.2}x \
             (goal <= 0.5x: {})",
            goal(r <= 0.5)
        );
    }
    Ok(())
}

/// `512MiB` and friends, as loglake parses them (`lake::units::parse_bytes`: binary units).
fn parse_size(s: &str) -> Result<u64, BoxErr> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|e| format!("size {s:?}: {e}"))?;
    let m: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("size {s:?}: unknown unit {other:?}").into()),
    };
    Ok(n * m)
}
