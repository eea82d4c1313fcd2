//! Decoders against real data written by others (`tests/data/corpus`, copied from shared/corpus;
//! each origin folder has its SOURCE.md / LICENSE).

mod common;

use common::*;
use loglake_schemas::RawRecord;
use serde_json::Value;

fn k8s_str(rec: &Value, key: &str) -> Option<String> {
    rec.get("kubernetes")
        .and_then(|k| k.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn trim_nl(s: &str) -> String {
    s.strip_suffix('\n').unwrap_or(s).to_owned()
}

/// Fluent Bit's kubernetes suite: every expected `out/` record (what Fluent Bit's kubernetes
/// filter emitted, i.e. what it ships to Kafka) decodes with `fluentbit` into the namespace, pod,
/// container, labels and message it carries; and the matching *input* docker json-file line,
/// decoded with `docker` and the kubelet path, yields the same namespace/pod/container/stream,
/// the same message, and — for JSON log lines — Fluent Bit's merged fields in `attrs`.
#[test]
fn fluentbit_kubernetes_suite() {
    let base = "fluent-bit/tests/runtime/data/kubernetes";
    let mut checked = 0;
    let mut with_labels = 0;
    let mut merged_checked = 0;
    let mut metadata_checked = 0;
    for group in [
        "annotations",
        "annotations-exclude",
        "annotations-parser",
        "core",
        "options",
    ] {
        let dir = corpus(&format!("{base}/out/{group}"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for out in files {
            let name = out.file_stem().unwrap().to_str().unwrap().to_owned();
            let line = std::fs::read_to_string(&out).unwrap();
            let line = line.trim_end();
            let expected: Value = serde_json::from_str(line).unwrap();
            let rec = &expected[1];

            // 1. the Fluent Bit record itself
            let mut fb = decoder("fluentbit");
            let o = decode_payloads(fb.as_mut(), &[line.as_bytes().to_vec()]);
            assert!(o.errors.is_empty(), "{name}: {:?}", o.errors);
            let b = &o.batch;
            assert_eq!(b.num_rows(), 1, "{name}");
            assert_eq!(
                s(b, "namespace", 0),
                k8s_str(rec, "namespace_name"),
                "{name}"
            );
            assert_eq!(s(b, "pod", 0), k8s_str(rec, "pod_name"), "{name}");
            assert_eq!(
                s(b, "container", 0),
                k8s_str(rec, "container_name"),
                "{name}"
            );
            // the container's runtime metadata has its own columns and is not repeated in attrs
            for (col, key) in [
                ("pod_uid", "pod_id"),
                ("container_id", "docker_id"),
                ("image", "container_image"),
                ("image_id", "container_hash"),
            ] {
                assert_eq!(s(b, col, 0), k8s_str(rec, key), "{name}: {col}");
                assert_eq!(
                    map_get(b, "attrs", 0, &format!("kubernetes.{key}")),
                    None,
                    "{name}: {key}"
                );
            }
            if k8s_str(rec, "docker_id").is_some() {
                metadata_checked += 1;
            }
            let mut want_labels: Vec<(String, Option<String>)> = rec["kubernetes"]
                .get("labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                        .collect()
                })
                .unwrap_or_default();
            want_labels.sort();
            let mut got_labels = map(b, "labels", 0);
            got_labels.sort();
            assert_eq!(got_labels, want_labels, "{name}");
            if !want_labels.is_empty() {
                with_labels += 1;
            }
            let want_msg = rec
                .get("log")
                .or_else(|| rec.get("message"))
                .and_then(Value::as_str)
                .map(trim_nl);
            assert_eq!(s(b, "message", 0), want_msg, "{name}");
            assert_eq!(
                s(b, "stream", 0).as_deref(),
                rec["stream"].as_str(),
                "{name}"
            );
            // Fluent Bit's own timestamp is the event time
            let want_ts = (expected[0].as_f64().unwrap() * 1e6).round() as i64;
            assert_eq!(tsv(b, "ts", 0), Some(want_ts), "{name}");

            // 2. the input line it came from, through the docker decoder + kubelet path
            let stem = name.rsplit_once('_').map(|(a, s)| {
                if s == "stdout" || s == "stderr" {
                    a
                } else {
                    name.as_str()
                }
            });
            let stem = stem.unwrap_or(&name);
            let input = format!("{base}/log/{group}/{stem}.log");
            let mut parts = stem.splitn(3, '_');
            let (ns, pod, container) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let path = format!(
                "/var/log/containers/{pod}_{ns}_{container}-{}.log",
                "0".repeat(64)
            );
            let in_line = lines(&input)
                .into_iter()
                .find(|l| {
                    let v: Value = serde_json::from_slice(l).unwrap();
                    v["stream"] == rec["stream"]
                })
                .unwrap_or_else(|| panic!("{name}: no input line for stream"));
            let headers = [("path", Some(path.as_bytes()))];
            let r = RawRecord {
                headers: &headers,
                ..RawRecord::new("t", 0, 0, &in_line)
            };
            // Fluent Bit's `Merge_Log` copies a JSON line's fields to the top level: compare
            // with the table option that copies them into attrs (`json_message_attrs`)
            let merge = loglake_schemas::DecoderOptions {
                json_message_attrs: true,
                ..Default::default()
            };
            let mut dk = loglake_schemas::decoder_for("docker", &merge).unwrap();
            let o = dk.decode(&[r]);
            assert!(o.errors.is_empty(), "{name}: {:?}", o.errors);
            let d = &o.batch;
            assert_eq!(d.num_rows(), 1, "{name}");
            assert_eq!(
                s(d, "namespace", 0),
                k8s_str(rec, "namespace_name"),
                "{name}"
            );
            assert_eq!(s(d, "pod", 0), k8s_str(rec, "pod_name"), "{name}");
            assert_eq!(
                s(d, "container", 0),
                k8s_str(rec, "container_name"),
                "{name}"
            );
            assert_eq!(
                s(d, "stream", 0).as_deref(),
                rec["stream"].as_str(),
                "{name}"
            );
            // the container id of the kubelet file name
            assert_eq!(s(d, "container_id", 0), Some("0".repeat(64)), "{name}");
            let in_log = serde_json::from_slice::<Value>(&in_line).unwrap()["log"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(s(d, "message", 0), Some(trim_nl(&in_log)), "{name}");
            if let Some(l) = rec.get("log").and_then(Value::as_str) {
                assert_eq!(trim_nl(l), trim_nl(&in_log), "{name}");
            }
            // JSON log lines: Fluent Bit's merged top-level fields are in our attrs
            if serde_json::from_str::<Value>(in_log.trim()).is_ok_and(|v| v.is_object()) {
                let inner: Value = serde_json::from_str(in_log.trim()).unwrap();
                for (k, v) in rec.as_object().unwrap() {
                    if matches!(k.as_str(), "log" | "stream" | "kubernetes")
                        || inner.get(k).is_none()
                    {
                        continue;
                    }
                    if let Some(v) = v.as_str() {
                        assert_eq!(
                            map_get(d, "attrs", 0, k).as_deref(),
                            Some(v),
                            "{name}: merged {k}"
                        );
                        merged_checked += 1;
                    }
                }
            }
            checked += 1;
        }
    }
    // every expected record (74 `.out` files in the five groups; kairosdb's has no input log)
    assert_eq!(checked, 74);
    assert!(
        with_labels >= 3,
        "labels were compared on {with_labels} records"
    );
    assert_eq!(merged_checked, 4, "merged fields compared");
    // the five expected records that carry a docker id (the others come from runs without it)
    assert_eq!(metadata_checked, 5, "container metadata compared");
}

#[test]
fn cri_multistream_partial_reassembly() {
    let input = lines("parser-edge-cases/cri_multistream_partial.input.log");
    let expected: Vec<String> = String::from_utf8(read(
        "parser-edge-cases/cri_multistream_partial.expected.txt",
    ))
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect();
    let mut d = decoder("cri");
    // the first two fragments alone: nothing emitted, offset 0 still pending
    let o = decode_payloads(d.as_mut(), &input[..2]);
    assert_eq!((o.batch.num_rows(), o.errors.len()), (0, 0));
    assert_eq!(d.pending_min_offset("t", 0), Some(0));
    assert_eq!(d.pending_min_offset("t", 1), None);

    let mut d = decoder("cri");
    let o = decode_payloads(d.as_mut(), &input);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    let got: Vec<String> = (0..b.num_rows())
        .map(|i| s(b, "message", i).unwrap())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(d.pending_min_offset("t", 0), None);
    assert_eq!(d.flush().batch.num_rows(), 0);
    // first row: stdout "1a", final fragment at offset 2, earlier ones 0 and 1, first fragment's time
    assert_eq!(s(b, "stream", 0).as_deref(), Some("stdout"));
    assert_eq!(i64v(b, "kafka_offset", 0), Some(2));
    assert_eq!(
        map_get(b, "attrs", 0, "loglake.fragment_offsets").as_deref(),
        Some("0,1")
    );
    assert_eq!(
        tsv(b, "ts", 0),
        Some(us("2019-05-07T18:57:50.904275+00:00"))
    );
    assert_eq!(s(b, "stream", 1).as_deref(), Some("stderr"));
    assert_eq!(
        map_get(b, "attrs", 1, "loglake.fragment_offsets").as_deref(),
        Some("3,4")
    );
    // un-fragmented lines carry no fragment list
    assert_eq!(map_get(b, "attrs", 4, "loglake.fragment_offsets"), None);
    assert_eq!(i64v(b, "kafka_offset", 4), Some(12));
}

#[test]
fn cri_vector_cases() {
    let cases = lines("parser-edge-cases/cri_vector_cases.jsonl");
    assert_eq!(cases.len(), 5);
    for c in cases {
        let c: Value = serde_json::from_slice(&c).unwrap();
        let mut d = decoder("cri");
        let o = decode_payloads(
            d.as_mut(),
            &[c["input"].as_str().unwrap().as_bytes().to_vec()],
        );
        assert!(o.errors.is_empty());
        let partial = c["partial"].as_bool().unwrap();
        let b = if partial {
            assert_eq!(o.batch.num_rows(), 0);
            assert_eq!(d.pending_min_offset("t", 0), Some(0));
            let f = d.flush();
            assert_eq!(
                map_get(&f.batch, "attrs", 0, "loglake.partial").as_deref(),
                Some("true")
            );
            f.batch
        } else {
            o.batch
        };
        assert_eq!(b.num_rows(), 1);
        assert_eq!(s(&b, "message", 0).as_deref(), c["message"].as_str());
        assert_eq!(s(&b, "stream", 0).as_deref(), c["stream"].as_str());
        assert_eq!(tsv(&b, "ts", 0), Some(us(c["timestamp"].as_str().unwrap())));
    }
}

#[test]
fn cri_invalid_utf8_partial_is_flagged_not_dropped() {
    let input = lines("parser-edge-cases/cri_invalid_utf8_partial.log");
    let mut d = decoder("cri");
    let o = decode_payloads(d.as_mut(), &input);
    assert_eq!((o.batch.num_rows(), o.errors.len()), (0, 0));
    let f = d.flush();
    let b = &f.batch;
    assert_eq!(b.num_rows(), 1);
    let m = s(b, "message", 0).unwrap();
    assert!(m.starts_with("Hello World Привет Ми"), "{m}");
    assert!(m.ends_with('\u{FFFD}'), "{m}");
    assert_eq!(
        map_get(b, "attrs", 0, "loglake.invalid_utf8").as_deref(),
        Some("true")
    );
    assert_eq!(
        map_get(b, "attrs", 0, "loglake.partial").as_deref(),
        Some("true")
    );
}

#[test]
fn docker_valid_and_invalid_records() {
    let mut d = decoder("docker");
    let o = decode_payloads(
        d.as_mut(),
        &lines("parser-edge-cases/docker_invalid_records.log"),
    );
    assert_eq!(o.batch.num_rows(), 0);
    assert_eq!(
        o.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    assert!(o.errors[0].reason.contains("time"), "{:?}", o.errors[0]);
    assert!(o.errors[4].reason.contains("log"), "{:?}", o.errors[4]);
    assert!(o.errors[5].reason.contains("log"), "{:?}", o.errors[5]);

    let mut d = decoder("docker");
    let o = decode_payloads(
        d.as_mut(),
        &lines("parser-edge-cases/docker_valid_records.log"),
    );
    assert!(o.errors.is_empty());
    let b = &o.batch;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(s(b, "message", 0).as_deref(), Some("The actual log line"));
    assert_eq!(s(b, "stream", 0).as_deref(), Some("stderr"));
    assert_eq!(tsv(b, "ts", 0), Some(us("2016-10-05T00:00:30.082640Z")));
    // no trailing newline but far below docker's 16 KiB split size: a complete line, not held back
    assert_eq!(
        s(b, "message", 1).as_deref(),
        Some("A line without newline char at the end")
    );
    assert_eq!(s(b, "stream", 1).as_deref(), Some("stdout"));
    assert_eq!(map_get(b, "attrs", 1, "loglake.partial"), None);
    assert_eq!(d.pending_min_offset("t", 0), None);
}

#[test]
fn docker_split_lines_are_joined() {
    // fluent-bit's tail `dockermode_splitted_line` input, plus the `stream`/`time` docker writes
    let input: Vec<Vec<u8>> =
        lines("fluent-bit/tests/runtime/data/tail/log/dockermode_splitted_line.log")
            .into_iter()
            .map(|l| {
                let mut v: Value = serde_json::from_slice(&l).unwrap();
                v["stream"] = "stdout".into();
                v["time"] = "2020-03-24T10:00:00.000000001Z".into();
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
    let want: Vec<String> =
        lines("fluent-bit/tests/runtime/data/tail/out/dockermode_splitted_line.out")
            .into_iter()
            .map(|l| {
                trim_nl(
                    serde_json::from_slice::<Value>(&l).unwrap()["log"]
                        .as_str()
                        .unwrap(),
                )
            })
            .collect();
    // these fragments are short: join every record without `\n` (Fluent Bit's Docker_Mode)
    let opts = loglake_schemas::DecoderOptions {
        docker_split_min_bytes: 0,
        ..Default::default()
    };
    let mut d = loglake_schemas::decoder_for("docker", &opts).unwrap();
    let o = decode_payloads(d.as_mut(), &input);
    assert!(o.errors.is_empty());
    assert_eq!(d.pending_min_offset("t", 0), None);
    let got: Vec<String> = (0..o.batch.num_rows())
        .map(|i| s(&o.batch, "message", i).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(i64v(&o.batch, "kafka_offset", 1), Some(5));
    assert_eq!(
        map_get(&o.batch, "attrs", 1, "loglake.fragment_offsets").as_deref(),
        Some("3,4")
    );
}

#[test]
fn beats_docker_corrupted_line_7() {
    let input = lines("beats/docker_corrupted.log");
    assert_eq!(input.len(), 21);
    let mut d = decoder("docker");
    let o = decode_payloads(d.as_mut(), &input);
    assert_eq!(o.batch.num_rows(), 20);
    assert_eq!(o.errors.len(), 1);
    let e = &o.errors[0];
    assert_eq!((e.index, e.offset, e.topic.as_str()), (6, 6, "t")); // line 7
    assert!(e.reason.contains("JSON"), "{}", e.reason);
    assert_eq!(s(&o.batch, "message", 6).as_deref(), Some("# binary"));
    assert_eq!(d.pending_min_offset("t", 0), None);
}

#[test]
fn falco_audit_events() {
    let dir = corpus("falco-k8s-audit/k8s_audit");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut payloads = Vec::new();
    for f in &files {
        for l in std::fs::read(f).unwrap().split(|&b| b == b'\n') {
            if !l.iter().all(u8::is_ascii_whitespace) {
                payloads.push(l.to_vec());
            }
        }
    }
    assert_eq!(payloads.len(), 52);
    let mut d = decoder("k8s-audit");
    let o = decode_payloads(d.as_mut(), &payloads);
    let b = &o.batch;
    assert_eq!(b.num_rows(), 51);
    // the one non-event: fal_01_003.json's `{"kind": 0}`
    assert_eq!(o.errors.len(), 1, "{:?}", o.errors);
    assert_eq!(payloads[o.errors[0].index], br#"{"kind": 0}"#.to_vec());
    let stripped = (0..b.num_rows())
        .filter(|&i| s(b, "api_version", i).is_none())
        .count();
    assert_eq!(stripped, 38);
    // hand-checked: create_configmap.json
    let i = (0..b.num_rows())
        .find(|&i| s(b, "audit_id", i).as_deref() == Some("155b887c-c27c-4fdb-9667-999f74512d0a"))
        .unwrap();
    assert_eq!(s(b, "verb", i).as_deref(), Some("create"));
    assert_eq!(s(b, "user", i).as_deref(), Some("minikube-user"));
    assert_eq!(
        list(b, "user_groups", i),
        Some(vec![
            "system:masters".to_owned(),
            "system:authenticated".to_owned()
        ])
    );
    assert_eq!(
        list(b, "source_ips", i),
        Some(vec!["192.168.99.1".to_owned()])
    );
    assert_eq!(s(b, "object_resource", i).as_deref(), Some("configmaps"));
    assert_eq!(s(b, "object_namespace", i).as_deref(), Some("default"));
    assert_eq!(s(b, "object_name", i).as_deref(), Some("my-config"));
    assert_eq!(i32v(b, "response_code", i), Some(201));
    assert_eq!(s(b, "stage", i).as_deref(), Some("ResponseComplete"));
    assert_eq!(s(b, "level", i).as_deref(), Some("RequestResponse"));
    assert_eq!(
        s(b, "request_uri", i).as_deref(),
        Some("/api/v1/namespaces/default/configmaps")
    );
    assert_eq!(
        tsv(b, "stage_ts", i),
        Some(us("2018-10-26T13:13:03.544952Z"))
    );
    assert_eq!(
        tsv(b, "request_received_ts", i),
        Some(us("2018-10-26T13:13:03.539180Z"))
    );
    assert_eq!(tsv(b, "ts", i), tsv(b, "stage_ts", i));
    assert_eq!(
        map_get(b, "annotations", i, "authorization.k8s.io/decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        map_get(b, "attrs", i, "metadata.creationTimestamp").as_deref(),
        Some("2018-10-26T13:13:03Z")
    );
    assert!(
        s(b, "request_object", i)
            .unwrap()
            .contains("color.good=purple")
    );
    assert_eq!(i32v(b, "hour", i), Some(13));
}

#[test]
fn beats_nginx_access_log() {
    let input = lines("beats/nginx_access_test.log");
    let mut d = decoder("access");
    let o = decode_payloads(d.as_mut(), &input);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    assert_eq!(b.num_rows(), 7);
    // line 1: an X-Forwarded-For chain before the client address
    assert_eq!(s(b, "remote_addr", 0).as_deref(), Some("127.0.0.1"));
    assert_eq!(
        s(b, "x_forwarded_for", 0).as_deref(),
        Some("10.0.0.2, 10.0.0.1")
    );
    assert_eq!(tsv(b, "ts", 0), Some(us("2016-12-07T11:05:07+01:00")));
    assert_eq!(s(b, "method", 0).as_deref(), Some("GET"));
    assert_eq!(s(b, "path", 0).as_deref(), Some("/ocelot"));
    assert_eq!(s(b, "protocol", 0).as_deref(), Some("HTTP/1.1"));
    assert_eq!(
        (i32v(b, "status", 0), i64v(b, "bytes_sent", 0)),
        (Some(200), Some(571))
    );
    assert_eq!(s(b, "referer", 0), None);
    assert_eq!(
        s(b, "user_agent", 0).as_deref(),
        Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.12; rv:49.0) Gecko/20100101 Firefox/49.0")
    );
    // line 2: trailing "-" x-forwarded-for
    assert_eq!(s(b, "remote_addr", 1).as_deref(), Some("172.17.0.1"));
    assert_eq!(s(b, "x_forwarded_for", 1), None);
    assert_eq!(i32v(b, "status", 1), Some(404));
    // line 5: quoted chain then the client address
    assert_eq!(s(b, "remote_addr", 4).as_deref(), Some("10.2.1.185"));
    assert_eq!(
        s(b, "x_forwarded_for", 4).as_deref(),
        Some("10.5.102.222, 199.96.1.1, 204.246.1.1")
    );
    assert_eq!(s(b, "path", 4).as_deref(), Some("/assets/xxxx?q=100"));
    assert_eq!(i64v(b, "bytes_sent", 4), Some(25507));
    // line 6: IPv6 in the chain
    assert_eq!(s(b, "remote_addr", 5).as_deref(), Some("10.2.2.121"));
    assert_eq!(
        s(b, "x_forwarded_for", 5).as_deref(),
        Some("2a03:0000:10ff:f00f:0000:0000:0:8000, 10.225.192.17")
    );
    // line 7: empty request, 400
    assert_eq!(
        (s(b, "method", 6), s(b, "path", 6), s(b, "request", 6)),
        (None, None, None)
    );
    assert_eq!(
        (i32v(b, "status", 6), i64v(b, "bytes_sent", 6)),
        (Some(400), Some(0))
    );
    assert_eq!(s(b, "user_agent", 6), None);
}

#[test]
fn lnav_shop_access_log() {
    let input = lines("lnav/logfile_shop_access_log.0");
    assert_eq!(input.len(), 1000);
    let mut d = decoder("access");
    let o = decode_payloads(d.as_mut(), &input);
    assert!(o.errors.is_empty(), "{:?}", o.errors.first());
    let b = &o.batch;
    assert_eq!(b.num_rows(), 1000);
    assert_eq!(s(b, "remote_addr", 0).as_deref(), Some("54.36.149.41"));
    assert_eq!(tsv(b, "ts", 0), Some(us("2019-01-22T03:56:14+03:30")));
    assert_eq!(i32v(b, "hour", 0), Some(0)); // 00:26 UTC
    assert!(
        s(b, "path", 0)
            .unwrap()
            .starts_with("/filter/27|13%20%D9%85")
    );
    assert_eq!(
        (i32v(b, "status", 0), i64v(b, "bytes_sent", 0)),
        (Some(200), Some(30577))
    );
    assert_eq!(
        s(b, "user_agent", 0).as_deref(),
        Some("Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)")
    );
    assert_eq!(s(b, "x_forwarded_for", 0), None);
    assert_eq!(s(b, "remote_addr", 1).as_deref(), Some("31.56.96.51"));
    assert_eq!(
        s(b, "path", 1).as_deref(),
        Some("/image/60844/productModel/200x200")
    );
    assert_eq!(
        s(b, "referer", 1).as_deref(),
        Some("https://www.zanbil.ir/m/filter/b113")
    );
    assert_eq!(i64v(b, "bytes_sent", 1), Some(5667));
}

/// lnav's broken inputs through every decoder: no panic, every record accounted for, and invalid
/// UTF-8 flagged when a row is produced.
#[test]
fn lnav_broken_inputs_never_panic() {
    let files = [
        "lnav/logfile_invalid_utf8.0",
        "lnav/logfile_crlf.0",
        "lnav/logfile_invalid_json.json",
        "lnav/logfile_invalid_json2.json",
    ];
    for f in files {
        let input = lines(f);
        for name in loglake_schemas::DECODER_NAMES {
            let mut d = decoder(name);
            let o = decode_payloads(d.as_mut(), &input);
            let pending = usize::from(d.pending_min_offset("t", 0).is_some());
            let rows = o.batch.num_rows();
            if !name.starts_with("otlp") {
                assert!(rows + o.errors.len() + pending <= input.len(), "{f} {name}");
                assert!(
                    rows + o.errors.len() >= input.len() - pending * input.len(),
                    "{f} {name}"
                );
            }
            let _ = d.flush();
        }
    }
    // the JSON decoders: complete lines become rows, cut lines become errors
    let input = lines("lnav/logfile_invalid_json2.json");
    let mut d = decoder("fluentbit");
    let o = decode_payloads(d.as_mut(), &input);
    assert_eq!(o.batch.num_rows(), 2);
    assert_eq!(
        o.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        map_get(&o.batch, "attrs", 0, "@fields.msg").as_deref(),
        Some("trace test")
    );
    assert_eq!(
        map_get(&o.batch, "attrs", 0, "@fields.lvl").as_deref(),
        Some("TRACE")
    );
    assert_eq!(
        tsv(&o.batch, "ts", 0),
        Some(us("2013-09-06T20:00:48.124817Z"))
    );

    // the invalid UTF-8 line as a container's output: a flagged row
    let bad = lines("lnav/logfile_invalid_utf8.0");
    let line = bad
        .iter()
        .find(|l| std::str::from_utf8(l).is_err())
        .unwrap();
    let mut cri = b"2021-01-01T00:00:00.000000001Z stdout F ".to_vec();
    cri.extend_from_slice(line);
    let mut d = decoder("cri");
    let o = decode_payloads(d.as_mut(), &[cri]);
    assert_eq!(o.batch.num_rows(), 1);
    assert_eq!(
        map_get(&o.batch, "attrs", 0, "loglake.invalid_utf8").as_deref(),
        Some("true")
    );
    assert!(s(&o.batch, "message", 0).unwrap().contains('\u{FFFD}'));

    // CRLF lines: the CR is stripped
    let crlf = lines("lnav/logfile_crlf.0");
    assert!(crlf[0].ends_with(b"\r"));
    let payloads: Vec<Vec<u8>> = crlf
        .iter()
        .map(|l| {
            let mut p = b"2021-01-01T00:00:00Z stderr F ".to_vec();
            p.extend_from_slice(l);
            p
        })
        .collect();
    let mut d = decoder("cri");
    let o = decode_payloads(d.as_mut(), &payloads);
    assert_eq!(
        s(&o.batch, "message", 0).as_deref(),
        Some("2012-07-02 10:22:40,672:DEBUG:foo bar baz")
    );
    assert_eq!(s(&o.batch, "level", 0).as_deref(), Some("debug"));
    assert_eq!(s(&o.batch, "level", 1).as_deref(), Some("warn"));
}

#[test]
fn otlp_json_and_proto_from_collector_output() {
    let input = lines("lnav/logfile_otel_collector.jsonl");
    let mut d = decoder("otlp-json");
    let o = decode_payloads(d.as_mut(), &input);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let b = &o.batch;
    let total: usize = input
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            v["resourceLogs"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["scopeLogs"].as_array().unwrap())
                .map(|s| s["logRecords"].as_array().unwrap().len())
                .sum::<usize>()
        })
        .sum();
    assert!(total >= 3);
    assert_eq!(b.num_rows(), total);
    assert_eq!(s(b, "service", 0).as_deref(), Some("payment-service"));
    assert_eq!(
        s(b, "message", 0).as_deref(),
        Some("Processing payment request")
    );
    assert_eq!(s(b, "level", 0).as_deref(), Some("info"));
    assert_eq!(s(b, "level", 1).as_deref(), Some("warn"));
    assert_eq!(
        s(b, "trace_id", 0).as_deref(),
        Some("5b8aa5a2d2c872e8321cf37308d69df2")
    );
    assert_eq!(s(b, "span_id", 0).as_deref(), Some("051581bf3cb55c13"));
    assert_eq!(tsv(b, "ts", 0), Some(1_700_000_000_000_000));
    assert_eq!(
        map_get(b, "attrs", 0, "resource.host.name").as_deref(),
        Some("prod-01")
    );
    assert_eq!(
        map_get(b, "attrs", 0, "scope.name").as_deref(),
        Some("com.example.payment")
    );

    // the same data as the kafka exporter's otlp_proto encoding
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let protos: Vec<Vec<u8>> = input
        .iter()
        .map(|l| {
            serde_json::from_slice::<ExportLogsServiceRequest>(l)
                .unwrap()
                .encode_to_vec()
        })
        .collect();
    let mut p = decoder("otlp-proto");
    let op = decode_payloads(p.as_mut(), &protos);
    assert!(op.errors.is_empty());
    assert_eq!(op.batch.num_rows(), total);
    for col in [
        "ts",
        "message",
        "level",
        "service",
        "trace_id",
        "span_id",
        "attrs",
        "kafka_offset",
    ] {
        assert_eq!(op.batch.column_by_name(col), b.column_by_name(col), "{col}");
    }
    // garbage is an error, not a panic
    let o = decode_payloads(p.as_mut(), &[b"\xff\xff\xff".to_vec()]);
    assert_eq!((o.batch.num_rows(), o.errors.len()), (0, 1));
}
