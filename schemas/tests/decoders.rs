//! Envelope decoders on the shapes each collector documents, table files, and schema docs.

mod common;

use common::*;
use loglake_schemas::{
    DECODER_NAMES, DecoderOptions, RawRecord, SchemaError, TableKind, decoder_for, load_table_dir,
    load_table_file, parse_table_def, table_schema,
};

#[test]
fn filebeat_ecs_envelope() {
    let p = br#"{"@timestamp":"2024-05-01T10:00:00.123456Z","message":"GET /healthz 200","stream":"stdout","log":{"level":"INFO","file":{"path":"/var/log/containers/web-0_shop_nginx-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log"}},"kubernetes":{"namespace":"shop","pod":{"name":"web-0","uid":"u1"},"container":{"name":"nginx"},"node":{"name":"node-a"},"labels":{"app":"web"}},"orchestrator":{"cluster":{"name":"prod"}},"trace":{"id":"abc"},"agent":{"type":"filebeat","version":"8.13.0"}}"#;
    let mut d = decoder("filebeat");
    let o = decode_payloads(d.as_mut(), &[p.to_vec()]);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    assert_eq!(tsv(b, "ts", 0), Some(us("2024-05-01T10:00:00.123456Z")));
    assert_eq!(s(b, "message", 0).as_deref(), Some("GET /healthz 200"));
    assert_eq!(s(b, "level", 0).as_deref(), Some("info"));
    assert_eq!(s(b, "namespace", 0).as_deref(), Some("shop"));
    assert_eq!(s(b, "pod", 0).as_deref(), Some("web-0"));
    assert_eq!(s(b, "container", 0).as_deref(), Some("nginx"));
    assert_eq!(s(b, "node", 0).as_deref(), Some("node-a"));
    assert_eq!(s(b, "cluster", 0).as_deref(), Some("prod"));
    assert_eq!(s(b, "app", 0).as_deref(), Some("web"));
    assert_eq!(s(b, "trace_id", 0).as_deref(), Some("abc"));
    assert_eq!(
        map(b, "labels", 0),
        vec![("app".to_owned(), Some("web".to_owned()))]
    );
    assert_eq!(
        map_get(b, "attrs", 0, "agent.version").as_deref(),
        Some("8.13.0")
    );
    // container metadata gets its own columns, not attrs
    assert_eq!(s(b, "pod_uid", 0).as_deref(), Some("u1"));
    assert_eq!(map_get(b, "attrs", 0, "kubernetes.pod.uid"), None);
    assert_eq!(i32v(b, "hour", 0), Some(10));
}

#[test]
fn vector_kubernetes_logs_envelope() {
    let p = br#"{"file":"/var/log/pods/kube-system_coredns-5d78c9869d-abcde_9f0e/coredns/0.log","kubernetes":{"container_id":"containerd://x","container_image":"coredns:1.10","container_name":"coredns","namespace_labels":{"kubernetes.io/metadata.name":"kube-system"},"pod_labels":{"k8s-app":"kube-dns","pod-template-hash":"5d78c9869d"},"pod_name":"coredns-5d78c9869d-abcde","pod_namespace":"kube-system","pod_node_name":"node-b","pod_uid":"9f0e"},"message":"[ERROR] plugin/errors: 2 example.org. A: read udp: i/o timeout","source_type":"kubernetes_logs","stream":"stderr","timestamp":"2024-05-01T10:00:01.000000999Z"}"#;
    let mut d = decoder("vector");
    let o = decode_payloads(d.as_mut(), &[p.to_vec()]);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    assert_eq!(s(b, "namespace", 0).as_deref(), Some("kube-system"));
    assert_eq!(s(b, "pod", 0).as_deref(), Some("coredns-5d78c9869d-abcde"));
    assert_eq!(s(b, "container", 0).as_deref(), Some("coredns"));
    assert_eq!(s(b, "node", 0).as_deref(), Some("node-b"));
    assert_eq!(s(b, "pod_uid", 0).as_deref(), Some("9f0e"));
    assert_eq!(s(b, "container_id", 0).as_deref(), Some("containerd://x"));
    assert_eq!(s(b, "image", 0).as_deref(), Some("coredns:1.10"));
    assert_eq!(s(b, "image_id", 0), None);
    assert_eq!(map_get(b, "attrs", 0, "kubernetes.container_image"), None);
    assert_eq!(s(b, "stream", 0).as_deref(), Some("stderr"));
    assert_eq!(s(b, "app", 0).as_deref(), Some("kube-dns"));
    assert_eq!(s(b, "level", 0).as_deref(), Some("error")); // detected in the message
    assert_eq!(tsv(b, "ts", 0), Some(us("2024-05-01T10:00:01.000000Z")));
    assert_eq!(
        map_get(b, "labels", 0, "pod-template-hash").as_deref(),
        Some("5d78c9869d")
    );
    assert_eq!(
        map_get(b, "attrs", 0, "source_type").as_deref(),
        Some("kubernetes_logs")
    );
    assert_eq!(
        map_get(
            b,
            "attrs",
            0,
            "kubernetes.namespace_labels.kubernetes.io/metadata.name"
        )
        .as_deref(),
        Some("kube-system")
    );
}

#[test]
fn ilogtail_envelopes() {
    let v1 = br#"{"__time__":1714557600,"__tag__:__hostname__":"node-c","__topic__":"","_container_name_":"api","_pod_name_":"api-7f9c","_namespace_":"pay","_pod_uid_":"u9","_source_":"stdout","_time_":"2024-05-01T10:00:00.5Z","content":"{\"level\":\"warn\",\"msg\":\"slow\",\"trace_id\":\"t1\"}"}"#;
    let v2 = br#"{"time":1714557600,"contents":{"content":"hello","_pod_name_":"api-1","_namespace_":"pay","_container_name_":"api"},"tags":{"__hostname__":"node-d"}}"#;
    let mut d = decoder("ilogtail");
    let o = decode_payloads(d.as_mut(), &[v1.to_vec(), v2.to_vec()]);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    assert_eq!(tsv(b, "ts", 0), Some(us("2024-05-01T10:00:00.5Z")));
    assert_eq!(s(b, "pod", 0).as_deref(), Some("api-7f9c"));
    assert_eq!(s(b, "namespace", 0).as_deref(), Some("pay"));
    assert_eq!(s(b, "container", 0).as_deref(), Some("api"));
    assert_eq!(s(b, "node", 0).as_deref(), Some("node-c"));
    assert_eq!(s(b, "stream", 0).as_deref(), Some("stdout"));
    // JSON in the message: level and trace id taken from it, fields in attrs
    assert_eq!(s(b, "level", 0).as_deref(), Some("warn"));
    assert_eq!(s(b, "trace_id", 0).as_deref(), Some("t1"));
    assert_eq!(
        map_get(b, "attrs", 0, "trace_id"),
        None,
        "promoted, not repeated"
    );
    // the message's other fields stay in the message only (DecoderOptions::json_message_attrs)
    assert_eq!(map_get(b, "attrs", 0, "msg"), None);
    assert_eq!(
        s(b, "message", 0).as_deref(),
        Some(r#"{"level":"warn","msg":"slow","trace_id":"t1"}"#)
    );
    assert_eq!(s(b, "pod_uid", 0).as_deref(), Some("u9"));
    assert_eq!(map_get(b, "attrs", 0, "_pod_uid_"), None);
    assert_eq!(tsv(b, "ts", 1), Some(1_714_557_600_000_000));
    assert_eq!(s(b, "message", 1).as_deref(), Some("hello"));
    assert_eq!(s(b, "pod", 1).as_deref(), Some("api-1"));
    assert_eq!(s(b, "node", 1).as_deref(), Some("node-d"));
    // with `json_message_attrs`, they are copied into attrs as well
    let opts = DecoderOptions {
        json_message_attrs: true,
        ..DecoderOptions::default()
    };
    let mut d = decoder_for("ilogtail", &opts).expect("decoder");
    let o = decode_payloads(d.as_mut(), &[v1.to_vec()]);
    let b = &o.batch;
    assert_eq!(map_get(b, "attrs", 0, "msg").as_deref(), Some("slow"));
    assert_eq!(map_get(b, "attrs", 0, "trace_id"), None);
    assert_eq!(s(b, "trace_id", 0).as_deref(), Some("t1"));
}

#[test]
fn kafka_timestamp_fallback_is_flagged_and_tombstones_are_errors() {
    let mut d = decoder("fluentbit");
    let payload = br#"{"log":"no time here\r\n"}"#;
    let recs = [
        RawRecord {
            timestamp_ms: Some(1_700_000_000_123),
            ..RawRecord::new("t", 3, 42, payload)
        },
        RawRecord {
            payload: None,
            ..RawRecord::new("t", 3, 43, b"")
        },
    ];
    let o = d.decode(&recs);
    assert_eq!(o.batch.num_rows(), 1);
    assert_eq!(tsv(&o.batch, "ts", 0), Some(1_700_000_000_123_000));
    assert_eq!(
        map_get(&o.batch, "attrs", 0, "loglake.ts_source").as_deref(),
        Some("kafka")
    );
    assert_eq!(s(&o.batch, "message", 0).as_deref(), Some("no time here"));
    assert_eq!(
        (
            i32v(&o.batch, "kafka_partition", 0),
            i64v(&o.batch, "kafka_offset", 0)
        ),
        (Some(3), Some(42))
    );
    assert_eq!(o.errors.len(), 1);
    assert_eq!((o.errors[0].index, o.errors[0].offset), (1, 43));
}

#[test]
fn nanoseconds_are_kept_and_a_redundant_time_field_is_not() {
    // Fluent Bit: `@timestamp` (µs) wins; `time` names the same instant with nanoseconds: its
    // nanoseconds go to `ts_nanos` and it is not repeated in attrs. A `time` naming another
    // instant is kept in attrs.
    let same = br#"{"@timestamp":1714557600.123456,"log":"a\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}"#;
    let other =
        br#"{"@timestamp":1714557600.123456,"log":"b\n","time":"2024-05-01T10:00:05.000000001Z"}"#;
    let micros =
        br#"{"@timestamp":1714557600.123456,"log":"c\n","time":"2024-05-01T10:00:00.123456Z"}"#;
    // the lower priority first: the same rule the other way round
    let reversed =
        br#"{"time":"2024-05-01T10:00:00.123456789Z","log":"d\n","@timestamp":1714557600.123456}"#;
    let mut d = decoder("fluentbit");
    let o = decode_payloads(
        d.as_mut(),
        &[
            same.to_vec(),
            other.to_vec(),
            micros.to_vec(),
            reversed.to_vec(),
        ],
    );
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    let ts = us("2024-05-01T10:00:00.123456Z");
    for row in 0..4 {
        assert_eq!(tsv(b, "ts", row), Some(ts), "row {row}");
    }
    assert_eq!(i16v(b, "ts_nanos", 0), Some(789));
    assert_eq!(map(b, "attrs", 0), vec![]);
    assert_eq!(i16v(b, "ts_nanos", 1), None);
    assert_eq!(
        map_get(b, "attrs", 1, "time").as_deref(),
        Some("2024-05-01T10:00:05.000000001Z")
    );
    assert_eq!(i16v(b, "ts_nanos", 2), None);
    assert_eq!(map(b, "attrs", 2), vec![]);
    assert_eq!(i16v(b, "ts_nanos", 3), Some(789));
    assert_eq!(map(b, "attrs", 3), vec![]);

    // CRI and docker lines and Vector's timestamp carry nanoseconds
    let mut d = decoder("cri");
    let o = decode_payloads(
        d.as_mut(),
        &[b"2024-05-01T10:00:00.123456789Z stdout F x".to_vec()],
    );
    assert_eq!(tsv(&o.batch, "ts", 0), Some(ts));
    assert_eq!(i16v(&o.batch, "ts_nanos", 0), Some(789));
    let mut d = decoder("docker");
    let o = decode_payloads(
        d.as_mut(),
        &[br#"{"log":"x\n","stream":"stdout","time":"2024-05-01T10:00:00.1234567Z"}"#.to_vec()],
    );
    assert_eq!(tsv(&o.batch, "ts", 0), Some(ts));
    assert_eq!(i16v(&o.batch, "ts_nanos", 0), Some(700));
    let mut d = decoder("vector");
    let o = decode_payloads(
        d.as_mut(),
        &[br#"{"message":"x","timestamp":"2024-05-01T10:00:00.123456999Z"}"#.to_vec()],
    );
    assert_eq!(i16v(&o.batch, "ts_nanos", 0), Some(999));
    assert_eq!(map_get(&o.batch, "attrs", 0, "timestamp"), None);
}

#[test]
fn cri_state_is_per_source_and_stream() {
    // two pods interleaving partial lines on one partition, sources told apart by the path header
    let h1 = [("path", Some(&b"/var/log/containers/a-0_ns_c-0000000000000000000000000000000000000000000000000000000000000000.log"[..]))];
    let h2 = [("path", Some(&b"/var/log/containers/b-0_ns_c-0000000000000000000000000000000000000000000000000000000000000000.log"[..]))];
    let l = [
        &b"2024-01-01T00:00:00Z stdout P a1 "[..],
        b"2024-01-01T00:00:00Z stdout P b1 ",
        b"2024-01-01T00:00:01Z stdout F a2",
        b"2024-01-01T00:00:01Z stdout F b2",
    ];
    let recs = [
        RawRecord {
            headers: &h1,
            ..RawRecord::new("t", 0, 10, l[0])
        },
        RawRecord {
            headers: &h2,
            ..RawRecord::new("t", 0, 11, l[1])
        },
        RawRecord {
            headers: &h1,
            ..RawRecord::new("t", 0, 12, l[2])
        },
    ];
    let mut d = decoder("cri");
    let o = d.decode(&recs);
    assert_eq!(o.batch.num_rows(), 1);
    assert_eq!(s(&o.batch, "message", 0).as_deref(), Some("a1 a2"));
    assert_eq!(s(&o.batch, "pod", 0).as_deref(), Some("a-0"));
    assert_eq!(d.pending_min_offset("t", 0), Some(11));
    let o = d.decode(&[RawRecord {
        headers: &h2,
        ..RawRecord::new("t", 0, 13, l[3])
    }]);
    assert_eq!(s(&o.batch, "message", 0).as_deref(), Some("b1 b2"));
    assert_eq!(
        map_get(&o.batch, "attrs", 0, "loglake.fragment_offsets").as_deref(),
        Some("11")
    );
    assert_eq!(d.pending_min_offset("t", 0), None);
}

#[test]
fn max_partial_bytes_bounds_buffering() {
    let opts = DecoderOptions {
        max_partial_bytes: 10,
        ..DecoderOptions::default()
    };
    let mut d = decoder_for("cri", &opts).unwrap();
    let o = decode_payloads(
        d.as_mut(),
        &[
            b"2024-01-01T00:00:00Z stdout P 0123456".to_vec(),
            b"2024-01-01T00:00:00Z stdout P 789abc".to_vec(),
        ],
    );
    assert_eq!(o.batch.num_rows(), 1);
    assert_eq!(s(&o.batch, "message", 0).as_deref(), Some("0123456789abc"));
    assert_eq!(
        map_get(&o.batch, "attrs", 0, "loglake.partial").as_deref(),
        Some("true")
    );
    assert_eq!(d.pending_min_offset("t", 0), None);
}

#[test]
fn decoder_names_and_schemas() {
    for name in DECODER_NAMES {
        let d = decoder_for(name, &DecoderOptions::default()).unwrap();
        assert_eq!(d.name(), name);
        assert_eq!(
            d.schema(),
            table_schema(TableKind::for_decoder(name).unwrap())
        );
    }
    let err = decoder_for("nope", &DecoderOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, SchemaError::UnknownDecoder { .. }));
    assert!(err.to_string().contains("fluentbit"));
}

/// Every column of every schema is documented in the crate docs.
#[test]
fn every_column_is_documented() {
    let docs = include_str!("../src/lib.rs");
    for kind in TableKind::ALL {
        for f in table_schema(kind).fields() {
            assert!(
                docs.contains(&format!("`{}`", f.name())),
                "{}.{} undocumented",
                kind.as_str(),
                f.name()
            );
        }
    }
}

#[test]
fn shipped_table_files_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tables");
    let defs = load_table_dir(&dir).unwrap();
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["access", "containers", "k8s_audit", "otel_logs"]
    );
    let c = defs.iter().find(|d| d.name == "containers").unwrap();
    assert_eq!(c.decoder, "fluentbit");
    assert_eq!(c.topics, vec!["k8s-logs".to_owned()]);
    assert_eq!(c.partition_by, vec!["dt".to_owned(), "hour".to_owned()]);
    assert_eq!(c.target_file_size_bytes, 268_435_456);
    assert_eq!(c.retention_days, Some(30));
    assert_eq!(c.kind(), TableKind::Container);
    let o = defs.iter().find(|d| d.name == "otel_logs").unwrap();
    assert_eq!(o.partition_by, vec!["dt", "hour", "namespace"]);
    assert_eq!(
        defs.iter().find(|d| d.name == "k8s_audit").unwrap().kind(),
        TableKind::K8sAudit
    );
    let one = load_table_file(dir.join("access.toml")).unwrap();
    assert_eq!(one.kind(), TableKind::Access);
}

#[test]
fn bad_table_files_are_rejected_naming_file_and_key() {
    let path = std::path::Path::new("tables/bad.toml");
    let base = "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"cri\"\n";
    let cases = [
        (format!("{base}retention_dayz = 3\n"), "retention_dayz"),
        (format!("{base}retention_days = \"30\"\n"), "retention_days"),
        (
            format!("{base}target_file_size_bytes = -1\n"),
            "target_file_size_bytes",
        ),
        ("name = \"t\"\ndecoder = \"cri\"\n".to_owned(), "topics"),
        (
            "name = \"t\"\ntopics = [\"x\"]\ndecoder = \"syslog\"\n".to_owned(),
            "decoder",
        ),
        (
            format!("{base}partition_by = [\"dt\", \"labels\"]\n"),
            "partition_by",
        ),
        (
            format!("{base}partition_by = [\"tenant\"]\n"),
            "partition_by",
        ),
        (format!("{base}sort_by = [\"nope\"]\n"), "sort_by"),
        (
            format!("{base}bloom_filter_columns = [\"attrs\"]\n"),
            "bloom_filter_columns",
        ),
        (
            "name = \"Bad-Name\"\ntopics = [\"x\"]\ndecoder = \"cri\"\n".to_owned(),
            "name",
        ),
        (format!("{base}retention_days = 0\n"), "retention_days"),
    ];
    for (text, key) in cases {
        let err = parse_table_def(&text, path)
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        let msg = err.to_string();
        assert!(msg.contains("tables/bad.toml"), "{msg}");
        assert!(msg.contains(key), "{key}: {msg}");
    }
    // a good minimal file gets the defaults
    let d = parse_table_def(base, path).unwrap();
    assert_eq!(d.partition_by, vec!["dt", "hour"]);
    assert_eq!(
        d.target_file_size_bytes,
        loglake_schemas::DEFAULT_TARGET_FILE_SIZE_BYTES
    );
    assert_eq!(d.retention_days, None);
    assert!(!d.json_message_attrs);
    let d = parse_table_def(&format!("{base}json_message_attrs = true\n"), path).unwrap();
    assert!(d.json_message_attrs);
    // a missing file is an I/O error naming it
    let e = load_table_file("/nonexistent/x.toml").err().unwrap();
    assert!(e.to_string().contains("/nonexistent/x.toml"));
}
