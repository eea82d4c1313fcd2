//! Restarts and stalls, as operators meet them (issue 17): a run whose broker stops answering
//! ends with the stall error (exit 4) and the next run resumes; a final run in the group of
//! killed members gets their partitions back (static membership), or says what it waits for.
//!
//! The stall test freezes a broker of its own (SIGSTOP: connections stay open, nothing answers,
//! as when packets are dropped), so the shared broker of the other tests keeps working. It
//! freezes the broker before the run starts: tansu answers a fetch with everything a partition
//! holds whatever the fetch's byte limits, so no run can be caught reliably mid-partition. The
//! continuous-mode `/healthz` rule (lag without progress) is covered by the watchdog's unit and
//! property tests (`archiver/src/watch.rs`) and the endpoint's own test (`metrics.rs`).

use std::time::{Duration, Instant};

use loglake_tests::archive::{Archive, COMMIT_LOGS};
use loglake_tests::{PrivateKafka, Proc, kafka, private_kafka, s3, unique_name};
use rdkafka::producer::FutureProducer;

use crate::archiver::{audit_at, fluentbit_record, send_all, table_version};

/// Records in the restart tests' topics.
const RECORDS: usize = 30_000;
/// Records in the stall tests' topic (one per record batch).
const STALL_RECORDS: usize = 10_000;

/// An idempotent producer to `k`.
fn stall_producer(k: &PrivateKafka) -> FutureProducer {
    k.config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .create()
        .expect("producer")
}

/// A topic of 2 partitions on `k` holding [`STALL_RECORDS`] Fluent Bit records.
async fn topic_with_records(k: &PrivateKafka) -> String {
    let topic = unique_name("stall");
    k.create_topic(&topic, 2).await.expect("topic");
    let producer = stall_producer(k);
    send_all(&producer, &topic, 0..STALL_RECORDS, |i| {
        fluentbit_record(i, false)
    })
    .await;
    topic
}

/// `loglake archive` of `topic` on `brokers` into `table` (+ `-dlq`), group `group`, plus
/// `extra`.
fn archive_on(brokers: &str, topic: &str, group: &str, table: &str, extra: &[&str]) -> Proc {
    Archive::topic(topic, table)
        .brokers(brokers)
        .group(group)
        .dlq(&format!("{table}-dlq"))
        .args(extra)
        .logs(COMMIT_LOGS)
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_broker_stops_answering_ends_with_the_stall_error_and_the_next_resumes() {
    let Some(k) = private_kafka().expect("private broker") else {
        return;
    };
    let topic = topic_with_records(&k).await;
    let table = s3().unique_url("stall-table");
    let group = unique_name("g");
    // A first run archives what the topic holds.
    let mut first = archive_on(&k.brokers, &topic, &group, &table, &["--until-end"]);
    let done = first
        .wait_within(Duration::from_secs(300))
        .await
        .expect("wait")
        .expect("the first run did not finish within 5 min");
    assert!(done.status.success(), "{}", done.stderr_text());
    let committed = table_version(&table).await;
    assert!(committed >= 1);
    // More records, then the broker freezes: the next run cannot join, fetch or read metadata.
    let producer = stall_producer(&k);
    send_all(&producer, &topic, STALL_RECORDS..2 * STALL_RECORDS, |i| {
        fluentbit_record(i, false)
    })
    .await;
    k.pause().expect("SIGSTOP tansu");
    let mut stalled = archive_on(
        &k.brokers,
        &topic,
        &group,
        &table,
        &["--until-end", "--stall-timeout", "10s"],
    );
    let done = match stalled
        .wait_within(Duration::from_secs(180))
        .await
        .expect("wait")
    {
        Some(d) => d,
        None => {
            stalled.signal(libc::SIGKILL).expect("SIGKILL");
            let d = stalled
                .wait_within(Duration::from_secs(10))
                .await
                .expect("wait");
            panic!(
                "the stalled run still ran 3 min after its start:\n{}",
                d.map(|d| d.stderr_text()).unwrap_or_default()
            );
        }
    };
    let log = done.stderr_text();
    assert_eq!(done.status.code(), Some(4), "exit code; stderr:\n{log}");
    let error = log
        .lines()
        .find(|l| l.starts_with("loglake: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        error.starts_with("loglake: error: no progress for 1")
            && error.contains(&format!("(--stall-timeout) in consumer group {group}"))
            && error.contains("The broker did not answer a metadata request: "),
        "{error}"
    );
    // Nothing committed is lost, and the next run (broker back) resumes from it.
    assert_eq!(table_version(&table).await, committed);
    k.resume().expect("SIGCONT tansu");
    let mut again = archive_on(&k.brokers, &topic, &group, &table, &["--until-end"]);
    let done = again
        .wait_within(Duration::from_secs(300))
        .await
        .expect("wait")
        .expect("the resumed run did not finish within 5 min");
    assert!(done.status.success(), "{}", done.stderr_text());
    let (a, ok) = audit_at(&k.brokers, &topic, &table, &format!("{table}-dlq"));
    let n = 2 * STALL_RECORDS as u64;
    assert_eq!(
        (a.expected, a.rows, a.missing, a.duplicates),
        (n, n, 0, 0),
        "{a:?}"
    );
    assert!(ok);
}

/// A continuous archiver of `topic` into `table` in `group` on the shared broker;
/// `instance_id` makes it a static member.
fn member(topic: &str, group: &str, table: &str, instance_id: Option<&str>) -> Proc {
    let mut extra = vec!["--roll-interval", "300ms"];
    extra.extend(
        instance_id
            .map(|id| ["--instance-id", id])
            .into_iter()
            .flatten(),
    );
    archive_on(&kafka().brokers, topic, group, table, &extra)
}

/// Starts and SIGKILLs an archiver of `group` 10 times, 1–6 s apart (no LeaveGroup: the killed
/// members stay registered until their sessions time out).
async fn kill_ten_members(topic: &str, group: &str, table: &str, instance_id: Option<&str>) {
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..10 {
        let p = member(topic, group, table, instance_id);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(1000 + rng % 5000)).await;
        p.signal(libc::SIGKILL).expect("SIGKILL");
    }
}

/// `loglake archive --until-end` in `group` (+ `extra`), waited for: the finished process.
async fn final_run(
    topic: &str,
    group: &str,
    table: &str,
    extra: &[&str],
) -> loglake_tests::Finished {
    let mut p = Archive::topic(topic, table)
        .group(group)
        .dlq(&format!("{table}-dlq"))
        .args(extra)
        .until_end()
        .env("NO_COLOR", "1")
        .spawn();
    p.wait_within(Duration::from_secs(600))
        .await
        .expect("wait")
        .expect("the final run still runs after 10 min")
}

/// The final `--until-end` run of a topic whose archivers of `group` were killed, as the static
/// member `archiver-0` (`static_member`) or a dynamic one. A Kafka broker hands it the
/// partitions (at once, or after the killed members' session timeout). tansu 0.6.0 can keep the
/// group's assignment empty for ever after kills that land in a rebalance (its coordinator's
/// bugs: docs/tansu-group-restart.md); then the run must not hang: it ends within its stall
/// timeout with exit code 4 naming the partitions it waits for as not assigned to it, and a run in a fresh
/// group (tansu's only way out) finishes the topic. Either way nothing may be lost.
pub(crate) async fn finish_after_kills(topic: &str, group: &str, table: &str, static_member: bool) {
    let started = Instant::now();
    let mut args = vec!["--stall-timeout", "60s"];
    if static_member {
        args.extend(["--instance-id", "archiver-0"]);
    }
    let done = final_run(topic, group, table, &args).await;
    let log = done.stderr_text();
    match done.status.code() {
        Some(0) => loglake_tests::announce(&format!(
            "final run in group {group} (static: {static_member}) finished in {:?}",
            started.elapsed()
        )),
        Some(4) => {
            let error = log
                .lines()
                .find(|l| l.starts_with("loglake: error: no progress for "))
                .unwrap_or_else(|| panic!("no stall error:\n{log}"));
            assert!(error.contains("not assigned to this member"), "{error}");
            assert!(
                error.contains(&format!("consumer group {group};")),
                "{error}"
            );
            // tansu may hand the run some partitions (it finishes them) and keep the rest from
            // it: the error names the ones it waits for, never one archived to its end.
            assert!(error.contains(&format!("{topic}[")), "{error}");
            for part in error.split("; ") {
                if let Some(rest) = part.split("(table committed to ").nth(1) {
                    let (committed, high) = rest
                        .split_once(", broker high watermark ")
                        .unwrap_or_else(|| panic!("{part}"));
                    let high = high.split(')').next().unwrap_or_default();
                    assert!(
                        committed == "unknown" || committed != high,
                        "a partition archived to its end is named as waited for: {part}"
                    );
                }
            }
            loglake_tests::announce(&format!(
                "final run in group {group} (static: {static_member}) stalled as tansu 0.6.0 does: {error}"
            ));
            let fresh = unique_name("g-fresh");
            let done = final_run(topic, &fresh, table, &[]).await;
            assert!(done.status.success(), "{}", done.stderr_text());
        }
        other => panic!("exit code {other:?}, expected 0 or 4:\n{log}"),
    }
}

/// The audit of `table` against `topic` must show every record exactly once.
fn assert_exactly_once(topic: &str, table: &str, records: u64) {
    let (au, ok) = crate::archiver::audit(topic, table, &format!("{table}-dlq"));
    assert_eq!(
        (au.expected, au.rows, au.missing, au.duplicates),
        (records, records, 0, 0),
        "{au:?}"
    );
    assert!(ok);
}

/// The operator's check of issue 17, black box: 30,000 records in 6 partitions, an archiver of
/// group G started and SIGKILLed 10 times 1–6 s apart, then `--until-end` in group G — as one
/// static member (`--instance-id`, the pod name on Kubernetes), which takes the killed
/// incarnation's place and partitions without waiting for its session to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_after_ten_kills_finishes_exactly_once() {
    let topic = unique_name("rejoin");
    kafka().create_topic(&topic, 6).await.expect("topic");
    crate::archiver::produce(&topic, 0, RECORDS, false).await;
    let table = s3().unique_url("rejoin");
    let group = unique_name("g");
    kill_ten_members(&topic, &group, &table, Some("archiver-0")).await;
    finish_after_kills(&topic, &group, &table, true).await;
    assert_exactly_once(&topic, &table, RECORDS as u64);
}

/// The same with dynamic membership (no `--instance-id`): on tansu 0.6.0 the final run usually
/// stalls (see [`finish_after_kills`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_member_after_ten_kills_finishes_or_names_what_it_waits_for() {
    let topic = unique_name("rejoin-dyn");
    kafka().create_topic(&topic, 6).await.expect("topic");
    crate::archiver::produce(&topic, 0, RECORDS, false).await;
    let table = s3().unique_url("rejoin-dyn");
    let group = unique_name("g");
    kill_ten_members(&topic, &group, &table, None).await;
    finish_after_kills(&topic, &group, &table, false).await;
    assert_exactly_once(&topic, &table, RECORDS as u64);
}
