"""Reads a loglake table with the engines data teams use, and prints what each one sees.

    python readers.py TABLE_URI DLQ_URI TABLE_DIR DLQ_DIR

TABLE_URI is a container-log Delta table written by `loglake archive` (s3://… or a path),
DLQ_URI its dead-letter table, TABLE_DIR and DLQ_DIR local copies of them. Storage options for
s3:// URIs (the standard AWS_* names) come as a JSON object in LOGLAKE_READERS_STORAGE_OPTIONS.
Prints one JSON object: {reader: {...}} with the same aggregates from every reader:
  * deltalake  - delta-rs's Python package (its DataFusion QueryBuilder), from TABLE_URI
  * polars     - polars.scan_delta, from TABLE_URI
  * duckdb     - DuckDB with the delta extension (Delta Kernel), loaded from the
                 duckdb-extension-delta wheel's file, from TABLE_DIR (the extension's S3 support
                 needs httpfs, which DuckDB downloads: not possible offline)
  * spark      - PySpark, reading TABLE_DIR's Parquet files (Spark's Delta and S3A jars are not
                 installable here), with Hive partition discovery (dt=…/hour=…)
Each reader's entry has the row count, distinct pods and namespaces, the sum of Kafka offsets,
min/max event time in epoch microseconds, the ERROR count, the distinct trace ids and the
message bytes (the last two read the DELTA_LENGTH_BYTE_ARRAY columns). `dead_letters` holds the same
for the dead-letter table (count and offset sum) from the two Delta readers.
A reader that fails reports {"error": "..."}; the caller decides (the Rust test fails on it).
"""

import json
import os
import sys
import traceback

TABLE_URI, DLQ_URI, TABLE, DLQ = sys.argv[1:5]
OPTIONS = json.loads(os.environ.get("LOGLAKE_READERS_STORAGE_OPTIONS", "{}"))

AGG = (
    "SELECT count(*) AS n, count(DISTINCT pod) AS pods, count(DISTINCT namespace) AS namespaces, "
    "sum(kafka_offset) AS offset_sum, {us_min} AS min_us, {us_max} AS max_us, "
    "sum(CASE WHEN level = 'error' THEN 1 ELSE 0 END) AS errors, "
    "count(DISTINCT trace_id) AS traces, sum({bytes}(message)) AS message_bytes FROM {t}"
)
DLQ_AGG = "SELECT count(*) AS n, sum(kafka_offset) AS offset_sum FROM {t}"


def plain(row):
    return {k: (int(v) if v is not None else None) for k, v in row.items()}


def deltalake_reader():
    import deltalake
    import polars as pl

    dt = deltalake.DeltaTable(TABLE_URI, storage_options=OPTIONS)
    p = dt.protocol()
    qb = deltalake.QueryBuilder().register("t", dt)
    # DataFusion: a microsecond timestamp cast to BIGINT is its epoch microseconds
    sql = AGG.format(
        us_min="CAST(min(ts) AS BIGINT)", us_max="CAST(max(ts) AS BIGINT)", t="t",
        bytes="octet_length",
    )
    row = pl.DataFrame(qb.execute(sql).read_all()).to_dicts()[0]
    out = plain(row)
    out["protocol"] = [p.min_reader_version, p.min_writer_version]
    out["version"] = dt.version()
    d = deltalake.DeltaTable(DLQ_URI, storage_options=OPTIONS)
    q = deltalake.QueryBuilder().register("d", d)
    dead = pl.DataFrame(q.execute(DLQ_AGG.format(t="d")).read_all()).to_dicts()[0]
    return out, plain(dead)


def duckdb_reader():
    import duckdb
    import duckdb_extension_delta

    ext_dir = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions")
    (ver,) = os.listdir(ext_dir)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.load_extension(os.path.join(ext_dir, ver, "delta.duckdb_extension"))
    cur = con.execute(AGG.format(
            us_min="epoch_us(min(ts))", us_max="epoch_us(max(ts))", t=f"delta_scan('{TABLE}')",
            bytes="strlen",
        ))
    cols = [c[0] for c in cur.description]
    out = plain(dict(zip(cols, cur.fetchone())))
    cur = con.execute(DLQ_AGG.format(t=f"delta_scan('{DLQ}')"))
    cols = [c[0] for c in cur.description]
    dead = plain(dict(zip(cols, cur.fetchone())))
    return out, dead


def polars_reader():
    import polars as pl

    lf = pl.scan_delta(TABLE_URI, storage_options=OPTIONS)
    row = (
        lf.select(
            pl.len().alias("n"),
            pl.col("pod").n_unique().alias("pods"),
            pl.col("namespace").n_unique().alias("namespaces"),
            pl.col("kafka_offset").sum().alias("offset_sum"),
            pl.col("ts").min().dt.epoch("us").alias("min_us"),
            pl.col("ts").max().dt.epoch("us").alias("max_us"),
            (pl.col("level") == "error").sum().alias("errors"),
            pl.col("trace_id").drop_nulls().n_unique().alias("traces"),
            pl.col("message").str.len_bytes().sum().alias("message_bytes"),
        )
        .collect()
        .to_dicts()[0]
    )
    return plain(row), None


def spark_reader():
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("loglake-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    try:
        df = spark.read.parquet(TABLE)
        df.createOrReplaceTempView("t")
        row = spark.sql(AGG.format(
            us_min="unix_micros(min(ts))", us_max="unix_micros(max(ts))", t="t", bytes="octet_length"
        )).collect()[0].asDict()
        out = plain(row)
        out["ts_type"] = df.schema["ts"].dataType.simpleString()
        return out, None
    finally:
        spark.stop()


result = {}
for name, f in [
    ("deltalake", deltalake_reader),
    ("duckdb", duckdb_reader),
    ("polars", polars_reader),
    ("spark", spark_reader),
]:
    try:
        out, dead = f()
        if dead is not None:
            out["dead_letters"] = dead
        result[name] = out
    except Exception as e:  # reported, and the Rust test fails on it
        result[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
print(json.dumps(result))
