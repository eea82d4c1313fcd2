//! Decoder throughput: `cargo bench -p loglake-schemas --bench decode`
//!
//! Generates >= 100 MB of realistic Fluent Bit JSON (what its kubernetes filter + Kafka output
//! write), seeded, with message lengths, label cardinalities and a level mix modelled on the
//! corpus (fluent-bit kubernetes suite, lnav samples), then decodes the same bytes with:
//!   1. loglake's `fluentbit` decoder (to the canonical container schema, with enrichment),
//!   2. a plain `serde_json::Value` -> Arrow builders baseline (same target schema, same mapping),
//!   3. arrow-json's stock reader (to the raw nested Fluent Bit schema: no mapping at all).
//!
//! Single thread, so MB/s is MB/s per core. Env: `LOGLAKE_BENCH_MB` (default 100), `LOGLAKE_BENCH_RUNS` (3).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Fields, Schema};
use loglake_schemas::r#gen::{FluentBitGen, GenOptions};
use loglake_schemas::{DecoderOptions, RawRecord, decoder_for};

#[path = "common/naive.rs"]
mod naive;
use naive::serde_baseline;

fn generate(target_bytes: usize) -> Vec<Vec<u8>> {
    FluentBitGen::new(GenOptions::default()).take_bytes(target_bytes)
}

fn raw_fluentbit_schema() -> Arc<Schema> {
    let m = || {
        DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("keys", DataType::Utf8, false),
                    Field::new("values", DataType::Utf8, true),
                ])),
                false,
            )),
            false,
        )
    };
    let k8s = DataType::Struct(Fields::from(vec![
        Field::new("pod_name", DataType::Utf8, true),
        Field::new("namespace_name", DataType::Utf8, true),
        Field::new("pod_id", DataType::Utf8, true),
        Field::new("labels", m(), true),
        Field::new("annotations", m(), true),
        Field::new("host", DataType::Utf8, true),
        Field::new("container_name", DataType::Utf8, true),
        Field::new("docker_id", DataType::Utf8, true),
        Field::new("container_hash", DataType::Utf8, true),
        Field::new("container_image", DataType::Utf8, true),
    ]));
    Arc::new(Schema::new(vec![
        Field::new("@timestamp", DataType::Float64, true),
        Field::new("log", DataType::Utf8, true),
        Field::new("stream", DataType::Utf8, true),
        Field::new("time", DataType::Utf8, true),
        Field::new("kubernetes", k8s, true),
    ]))
}

const BATCH: usize = 8192;

fn main() {
    let mb: usize = std::env::var("LOGLAKE_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let runs: usize = std::env::var("LOGLAKE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let t0 = Instant::now();
    let records = generate(mb * 1_000_000);
    let bytes: usize = records.iter().map(Vec::len).sum();
    let avg = bytes / records.len();
    println!(
        "generated {} Fluent Bit records, {:.1} MB (avg {avg} B/record) in {:.1}s",
        records.len(),
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    // newline-delimited copy for arrow-json (it reads a stream)
    let mut ndjson = Vec::with_capacity(bytes + records.len());
    for r in &records {
        ndjson.extend_from_slice(r);
        ndjson.push(b'\n');
    }

    // LOGLAKE_BENCH_ONLY=ours: run only loglake's decoder (for profiling)
    let only_ours = std::env::var("LOGLAKE_BENCH_ONLY").is_ok_and(|v| v == "ours");
    let mut best = [f64::MAX; 3];
    let mut rows = [0usize; 3];
    for run in 0..runs {
        // 1. ours
        let mut d = decoder_for("fluentbit", &DecoderOptions::default()).expect("decoder");
        let t = Instant::now();
        let mut n = 0;
        for (ci, chunk) in records.chunks(BATCH).enumerate() {
            let recs: Vec<RawRecord<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(i, p)| RawRecord::new("bench", 0, (ci * BATCH + i) as i64, p))
                .collect();
            let o = d.decode(&recs);
            assert!(o.errors.is_empty());
            n += black_box(o.batch).num_rows();
        }
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        rows[0] = n;
        if only_ours {
            eprintln!(
                "run {} done: {:.1} MB/s",
                run + 1,
                bytes as f64 / 1e6 / best[0]
            );
            continue;
        }

        // 2. serde_json::Value baseline
        let t = Instant::now();
        let mut n = 0;
        for chunk in records.chunks(BATCH) {
            n += black_box(serde_baseline(chunk)).num_rows();
        }
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        rows[1] = n;

        // 3. arrow-json stock reader
        let t = Instant::now();
        let mut n = 0;
        let mut dec = arrow_json::ReaderBuilder::new(raw_fluentbit_schema())
            .with_batch_size(BATCH)
            .build_decoder()
            .expect("arrow-json decoder");
        let mut buf = &ndjson[..];
        while !buf.is_empty() {
            let read = dec.decode(buf).expect("arrow-json decode");
            buf = &buf[read..];
            if let Some(b) = dec.flush().expect("arrow-json flush") {
                n += black_box(b).num_rows();
            }
        }
        if let Some(b) = dec.flush().expect("arrow-json flush") {
            n += b.num_rows();
        }
        best[2] = best[2].min(t.elapsed().as_secs_f64());
        rows[2] = n;
        eprintln!("run {} done", run + 1);
    }
    let mbps = |secs: f64| bytes as f64 / 1e6 / secs;
    println!("best of {runs} runs, 1 thread (MB/s per core), batches of {BATCH} records:");
    for (i, name) in [
        "loglake fluentbit decoder (-> container schema)",
        "serde_json::Value -> Arrow builders (-> container schema)",
        "arrow-json stock reader (-> raw nested schema)",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {name:<60} {:>8.1} MB/s  {:>9.0} records/s  ({} rows)",
            mbps(best[i]),
            rows[i] as f64 / best[i],
            rows[i]
        );
    }
    println!(
        "  ratio vs arrow-json: {:.2}x (goal >= 2x)",
        best[2] / best[0]
    );
    println!(
        "  ratio vs serde_json baseline: {:.2}x (goal >= 5x)",
        best[1] / best[0]
    );
}
