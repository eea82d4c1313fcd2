"""DuckDB side of the loglake query benchmark (query-cli/benches/queries.rs).

Reads {"dir": ..., "runs": N, "queries": [{"name": ..., "sql": ...}]} on stdin and prints one JSON
object per query: cold wall ms (first run on a fresh connection), hot wall ms (median of the next
N runs), CPU seconds of all runs, result row count and the first row as strings.
"""
import json
import resource
import statistics
import sys
import time

import duckdb


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    spec = json.load(sys.stdin)
    glob = spec["dir"].rstrip("/") + "/*/*/*.parquet"
    view = (
        f"CREATE VIEW logs AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
        "hive_types = {'dt': DATE, 'hour': INTEGER})"
    )
    for q in spec["queries"]:
        con = duckdb.connect()
        con.execute(view)
        c0 = cpu()
        t0 = time.perf_counter()
        rows = con.execute(q["sql"]).fetchall()
        cold = (time.perf_counter() - t0) * 1000
        hot = []
        for _ in range(spec["runs"]):
            t0 = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            hot.append((time.perf_counter() - t0) * 1000)
        c1 = cpu()
        con.close()
        print(json.dumps({
            "name": q["name"],
            "cold_ms": cold,
            "hot_ms": statistics.median(hot) if hot else cold,
            "cpu_s": c1 - c0,
            "rows": len(rows),
            "first": [str(v) for v in rows[0]] if rows else [],
        }), flush=True)


if __name__ == "__main__":
    main()
