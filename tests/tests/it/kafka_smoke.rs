//! Proves the broker is real: partitions, keys, headers, consumer groups, committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use loglake_tests::{kafka, retry, unique_name};

const PARTITIONS: i32 = 3;

/// Produces `n` keyed messages with headers (idempotent producer), numbered from `first`.
/// Returns (partition, offset) → message number as acknowledged by the broker.
async fn produce(topic: &str, first: usize, n: usize) -> BTreeMap<(i32, i64), usize> {
    let producer = kafka().idempotent_producer(&[("linger.ms", "5")]);
    let mut acks = BTreeMap::new();
    let mut pending = Vec::with_capacity(n);
    for i in first..first + n {
        let producer = producer.clone();
        let topic = topic.to_string();
        pending.push(async move {
            let key = format!("pod-{}", i % 17);
            let payload = format!("{{\"n\":{i},\"log\":\"line {i}\"}}");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "n",
                    value: Some(i.to_string().as_bytes()),
                })
                .insert(Header {
                    key: "source",
                    value: Some(b"smoke".as_slice()),
                });
            let rec = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            let (p, o) = producer
                .send(rec, Duration::from_secs(30))
                .await
                .map(|d| (d.partition, d.offset))
                .unwrap_or_else(|(e, _)| panic!("delivery of message {i} failed: {e}"));
            ((p, o), i)
        });
    }
    for (po, i) in futures::future::join_all(pending).await {
        assert!(
            acks.insert(po, i).is_none(),
            "broker acknowledged {po:?} twice"
        );
    }
    acks
}

/// Consumes from `topic` in `group` until `expect` messages arrived (or 60 s passed), committing
/// offsets synchronously every 1000 messages and at the end. Returns (partition, offset) →
/// message number, asserting that no (partition, offset) arrives twice.
fn consume(topic: &str, group: &str, expect: usize) -> BTreeMap<(i32, i64), usize> {
    let consumer: BaseConsumer = kafka()
        .config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = BTreeMap::new();
    let start = Instant::now();
    while seen.len() < expect && start.elapsed() < Duration::from_secs(60) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.expect("consume error");
        let payload = std::str::from_utf8(msg.payload().expect("payload")).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(payload).expect("json payload");
        let n = v["n"].as_u64().expect("n") as usize;
        assert_eq!(
            msg.key(),
            Some(format!("pod-{}", n % 17).as_bytes()),
            "key of message {n}"
        );
        let headers = msg.headers().expect("headers");
        assert_eq!(headers.count(), 2, "headers of message {n}");
        assert_eq!(headers.get(0).key, "n");
        assert_eq!(headers.get(0).value, Some(n.to_string().as_bytes()));
        assert_eq!(headers.get(1).value, Some(b"smoke".as_slice()));
        let po = (msg.partition(), msg.offset());
        assert!(seen.insert(po, n).is_none(), "{po:?} delivered twice");
        if seen.len() % 1000 == 0 {
            retry("commit", || consumer.commit_message(&msg, CommitMode::Sync));
        }
    }
    retry("final commit", || {
        consumer.commit_consumer_state(CommitMode::Sync)
    });
    seen
}

/// Committed offsets of `group` on `topic`, copied into plain data (a live TopicPartitionList
/// must not outlive its consumer: dropping the consumer would hang).
fn committed(topic: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = kafka()
        .config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let out = {
        let c = retry("committed offsets", || {
            consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))
        });
        c.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                other => panic!(
                    "partition {} has no committed offset: {other:?}",
                    e.partition()
                ),
            })
            .collect()
    };
    drop(consumer);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_messages_with_headers_exactly_once_through_a_consumer_group() {
    let topic = unique_name("smoke");
    let group = unique_name("smoke-group");
    kafka()
        .create_topic(&topic, PARTITIONS)
        .await
        .expect("create topic");

    let produced = produce(&topic, 0, 10_000).await;
    assert_eq!(produced.len(), 10_000);
    let partitions: BTreeSet<i32> = produced.keys().map(|(p, _)| *p).collect();
    assert_eq!(
        partitions,
        BTreeSet::from([0, 1, 2]),
        "keys spread over all 3 partitions"
    );
    // Offsets per partition are dense from 0.
    for p in 0..PARTITIONS {
        let offs: Vec<i64> = produced
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offs,
            (0..offs.len() as i64).collect::<Vec<_>>(),
            "partition {p} offsets"
        );
    }

    let t2 = topic.clone();
    let g2 = group.clone();
    let consumed = tokio::task::spawn_blocking(move || consume(&t2, &g2, 10_000))
        .await
        .unwrap();
    // Every (partition, offset) exactly once, carrying the message the broker acknowledged there.
    assert_eq!(consumed, produced);

    let t2 = topic.clone();
    let g2 = group.clone();
    let commits = tokio::task::spawn_blocking(move || committed(&t2, &g2))
        .await
        .unwrap();
    let mut ends = BTreeMap::new();
    for (p, o) in produced.keys() {
        let e = ends.entry(*p).or_insert(0i64);
        *e = (*e).max(o + 1);
    }
    assert_eq!(
        commits, ends,
        "committed offsets read back as the end of each partition"
    );

    // Resume: 300 more messages; a new consumer in the same group gets exactly those.
    let more = produce(&topic, 10_000, 300).await;
    let t2 = topic.clone();
    let g2 = group.clone();
    let resumed = tokio::task::spawn_blocking(move || consume(&t2, &g2, 300))
        .await
        .unwrap();
    assert_eq!(
        resumed, more,
        "the group resumes from its committed offsets"
    );
}
