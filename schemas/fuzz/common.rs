//! Shared body of the fuzz targets: the input is split into Kafka records at '\n' (headers and
//! keys derived from the bytes), decoded in two calls (to exercise partial-line state), then
//! flushed. Checks: no panic, and every record is accounted for.

use loglake_schemas::{DecoderOptions, RawRecord, decoder_for};

pub fn run(name: &str, data: &[u8]) {
    let opts = DecoderOptions {
        max_partial_bytes: 64,
        docker_split_min_bytes: data.first().map_or(0, |b| usize::from(*b % 4) * 8),
        ..DecoderOptions::default()
    };
    let mut d = decoder_for(name, &opts).expect("decoder");
    let parts: Vec<&[u8]> = if name == "otlp-proto" {
        data.split(|&b| b == 0xFE).take(64).collect()
    } else {
        data.split(|&b| b == b'\n').take(64).collect()
    };
    let hdr_path: &[u8] = b"/var/log/containers/p_ns_c-0000000000000000000000000000000000000000000000000000000000000000.log";
    let headers_a = [("path", Some(hdr_path))];
    let headers_b: [(&str, Option<&[u8]>); 0] = [];
    let recs: Vec<RawRecord<'_>> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            payload: if p.first() == Some(&0) { None } else { Some(p) },
            key: if i % 3 == 0 { Some(b"k1") } else { None },
            headers: if i % 2 == 0 { &headers_a } else { &headers_b },
            timestamp_ms: if i % 5 == 0 { None } else { Some(i as i64 * 1000) },
            topic: "t",
            partition: (i % 2) as i32,
            offset: i as i64,
        })
        .collect();
    let mid = recs.len() / 2;
    let mut rows = 0;
    let mut errors = 0;
    for chunk in [&recs[..mid], &recs[mid..]] {
        let o = d.decode(chunk);
        assert!(o.errors.iter().all(|e| e.index < chunk.len()));
        rows += o.batch.num_rows();
        errors += o.errors.len();
    }
    let _ = d.pending_min_offset("t", 0);
    let f = d.flush();
    rows += f.batch.num_rows();
    errors += f.errors.len();
    assert!(d.pending_min_offset("t", 0).is_none() && d.pending_min_offset("t", 1).is_none());
    if !name.starts_with("otlp") {
        // one row or one error per record, fewer rows only where fragments were folded together
        assert!(rows + errors <= recs.len(), "{name}: {rows} rows + {errors} errors > {} records", recs.len());
        if !matches!(name, "cri" | "docker" | "k8s-audit") {
            assert_eq!(rows + errors, recs.len(), "{name}");
        }
    }
}
