//! `loglake gen` into the real broker (zstd-compressed batches, the producer default), then
//! `loglake archive --until-end` and `loglake audit`: every generated record is a row or a dead
//! letter, exactly once.

use crate::archiver::{Audit, audit};
use loglake_tests::archive::Archive;
use loglake_tests::{kafka, loglake_ok, s3, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_zstd_topic_is_archived_exactly_once() {
    let topic = unique_name("gen");
    kafka().create_topic(&topic, 3).await.expect("topic");
    let out = loglake_ok(&[
        "gen",
        "--brokers",
        &kafka().brokers,
        "--topic",
        &topic,
        "--records",
        "20000",
        "--malformed-per-mille",
        "10",
        "--start",
        "2024-05-01T00:00:00Z",
        "--records-per-second",
        "2",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary in {stderr}"));
    assert_eq!(summary["records"], 20_000);
    assert_eq!(summary["failed"], 0);
    let malformed = summary["malformed"].as_u64().expect("malformed");
    assert!((100..=300).contains(&malformed), "{malformed} malformed");

    let lake = s3().unique_url("gen");
    let (table, dlq) = (format!("{lake}/logs"), format!("{lake}/dead_letters"));
    let out = Archive::topic(&topic, &table)
        .fresh_group()
        .dlq(&dlq)
        .until_end()
        .run();
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("archive report");
    assert_eq!(report["records_in"], 20_000);
    assert_eq!(report["dead_letters"], malformed);
    let (a, ok) = audit(&topic, &table, &dlq);
    assert_eq!(
        a,
        Audit {
            expected: 20_000,
            rows: 20_000 - malformed,
            dead_letters: malformed,
            missing: 0,
            duplicates: 0,
            ..Default::default()
        }
    );
    assert!(ok);
}
