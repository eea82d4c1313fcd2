#!/usr/bin/env python3
"""Same-group restart after SIGKILL, with a plain librdkafka consumer (no loglake): issue 17.

What it does, per scenario (each scenario uses its own new topic and consumer group):
  1. creates a topic with --partitions partitions and produces --records records to it;
  2. starts --kills consumer incarnations in that group one after another, each in a child
     process that is SIGKILLed after a random 1-6 s (no LeaveGroup, like `kill -9`);
  3. starts a final consumer in the same group and measures how long until it is assigned
     partitions, how many it gets, and whether it consumes every record (offsets are never
     committed, auto.offset.reset=earliest, so "all" means all --records records);
  4. optionally (--probe-after S) starts one more consumer in the group if the final one has not
     finished after S seconds, to see whether a newcomer unblocks the group;
  5. prints a verdict line, and a table of all scenarios at the end.

Every wait is bounded: the final phase of a scenario ends after --timeout seconds (default 120).
Children are stopped (SIGTERM -> consumer.close(), then SIGKILL) before the next scenario.

Scenarios (--scenario, repeatable; default: all):
  baseline       no kills: a fresh group, default settings (the "new group finishes in 2 s" case)
  default        librdkafka defaults (session.timeout.ms 45000, heartbeat.interval.ms 3000,
                 range,roundrobin, eager) - what loglake uses
  short-session  session.timeout.ms=6000, heartbeat.interval.ms=1000
  static         group.instance.id the same for every incarnation (static membership, KIP-345)
  static-short   static membership plus session.timeout.ms=6000, heartbeat.interval.ms=1000
  static-10s     static membership plus session.timeout.ms=10000, heartbeat.interval.ms=1000
  cooperative    partition.assignment.strategy=cooperative-sticky
  graceful       control: incarnations get SIGTERM and call consumer.close() (LeaveGroup)

The script does not start a broker. To start tansu 0.6.0 the way loglake's test harness does
(tests/src/lib.rs), in an empty temporary directory:

    dir=$(mktemp -d) && cd "$dir"
    RUST_LOG=warn ~/.cache/loglake/tansu-0.6.0/bin/tansu broker \
        --listener-url tcp://127.0.0.1:19092 \
        --advertised-listener-url tcp://127.0.0.1:19092 \
        --storage-engine sqlite://tansu.db > tansu.log 2>&1 &

(SQLite needs a relative path; the working directory is the data directory.) Then:

    python3 -m venv /tmp/repro-venv && /tmp/repro-venv/bin/pip install confluent-kafka
    /tmp/repro-venv/bin/python scripts/repro/tansu_group_restart.py 127.0.0.1:19092
    /tmp/repro-venv/bin/python scripts/repro/tansu_group_restart.py 127.0.0.1:19092 \
        --scenario default --probe-after 60 --timeout 120
    # one kill, restart 10 s later; show tansu's stored group state and librdkafka's group log
    /tmp/repro-venv/bin/python scripts/repro/tansu_group_restart.py 127.0.0.1:19092 \
        --scenario default --kills 1 --gap 10 --tansu-db "$dir/tansu.db" --debug cgrp

--tansu-db is tansu-specific (it reads the SQLite file read-only): tansu 0.6.0's DescribeGroups
fails with SQLite storage, so this is the only way to see members, last contact and assignments.

It works against any Kafka-protocol broker (e.g. a real Kafka) the same way.
"""

import argparse
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

SCENARIOS = {
    "baseline": {"conf": {}, "kills": 0},
    "default": {"conf": {}},
    "short-session": {"conf": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}},
    "static": {"conf": {}, "static": True},
    "static-short": {
        "conf": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        "static": True,
    },
    "static-10s": {
        "conf": {"session.timeout.ms": "10000", "heartbeat.interval.ms": "1000"},
        "static": True,
    },
    "cooperative": {"conf": {"partition.assignment.strategy": "cooperative-sticky"}},
    "graceful": {"conf": {}, "graceful": True},
}


# --------------------------------------------------------------------------------------------
# child: one consumer incarnation, reporting JSON lines on stdout
# --------------------------------------------------------------------------------------------
def child_main(argv):
    from confluent_kafka import Consumer, KafkaError

    p = argparse.ArgumentParser()
    p.add_argument("--conf", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--total", type=int, required=True)
    a = p.parse_args(argv)

    def emit(**kw):
        kw["t"] = time.time()
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    c = Consumer(json.loads(a.conf))
    c.subscribe([a.topic])
    emit(ev="start", pid=os.getpid())
    seen = set()
    assignment = None
    last_progress = 0.0
    complete = False
    while not stop:
        m = c.poll(0.2)
        if m is not None:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    emit(ev="error", error=str(m.error()))
            else:
                seen.add((m.partition(), m.offset()))
        try:
            cur = sorted(tp.partition for tp in c.assignment())
        except Exception as e:  # noqa: BLE001 - report, keep polling
            cur = assignment
            emit(ev="error", error=f"assignment(): {e}")
        if cur != assignment:
            assignment = cur
            emit(ev="assign", partitions=cur, count=len(seen))
        now = time.time()
        if not complete and len(seen) >= a.total:
            complete = True
            emit(ev="complete", count=len(seen))
        if now - last_progress >= 1.0:
            last_progress = now
            emit(ev="progress", count=len(seen), partitions=assignment)
    emit(ev="closing", count=len(seen))
    c.close()  # LeaveGroup for dynamic members
    emit(ev="closed")
    return 0


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
class Child:
    """A consumer incarnation in a child process; its JSON events go to a queue."""

    def __init__(self, name, conf, topic, total, logdir):
        self.name = name
        self.events = queue.Queue()
        self.stderr_path = os.path.join(logdir, f"{name}.stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "child", "--conf", json.dumps(conf),
             "--topic", topic, "--total", str(total)],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, text=True,
        )
        self.assignments = []  # (t, partitions)
        self.count = 0
        self.complete_t = None
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def drain(self):
        out = []
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return out
            out.append(ev)
            if ev["ev"] == "assign":
                self.assignments.append((ev["t"], ev["partitions"]))
            if "count" in ev:
                self.count = max(self.count, ev["count"])
            if ev["ev"] == "complete" and self.complete_t is None:
                self.complete_t = ev["t"]
            if ev["ev"] == "closed":
                self.closed = True

    def current(self):
        return self.assignments[-1][1] if self.assignments else None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, grace=10.0):
        """SIGTERM (consumer.close(), LeaveGroup), then SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.drain()
        self.stderr.close()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def setup_topic(bootstrap, topic, partitions, records):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    adm = admin(bootstrap)  # keep the handle alive until the futures resolve
    fs = adm.create_topics([NewTopic(topic, partitions, 1)], request_timeout=30)
    fs[topic].result(timeout=60)
    # wait until metadata shows every partition
    deadline = time.time() + 30
    md_client = Consumer({"bootstrap.servers": bootstrap, "group.id": "repro-md"})
    while True:
        md = md_client.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            break
        if time.time() > deadline:
            raise SystemExit(f"topic {topic}: metadata does not show {partitions} partitions")
        time.sleep(0.2)
    prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": "10"})
    for i in range(records):
        while True:
            try:
                prod.produce(topic, value=f'{{"n":{i},"msg":"repro record {i}"}}'.encode(),
                             partition=i % partitions)
                break
            except BufferError:
                prod.poll(0.1)
        if i % 1000 == 0:
            prod.poll(0)
    left = prod.flush(60)
    if left:
        raise SystemExit(f"{left} records not delivered")
    hw = 0
    for p in range(partitions):
        lo, hi = md_client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        hw += hi - lo
    md_client.close()
    if hw != records:
        raise SystemExit(f"topic {topic}: watermarks sum to {hw}, expected {records}")


def describe_group(bootstrap, group):
    """Members as the broker reports them (DescribeGroups); a string for the log."""
    try:
        adm = admin(bootstrap)  # keep the handle alive until the future resolves
        fs = adm.describe_consumer_groups([group], request_timeout=10)
        d = fs[group].result(timeout=15)
        return f"state={d.state} members={len(d.members)}"
    except Exception as e:  # noqa: BLE001 - diagnostic only
        return f"DescribeGroups failed: {str(e)[:80]}"


def _decode_assignment(b):
    """ConsumerProtocolAssignment bytes -> sorted partition list (all topics)."""
    b = bytes(b)
    if len(b) < 6:
        return []
    i = 2  # version
    n_topics = int.from_bytes(b[i:i + 4], "big", signed=True)
    i += 4
    parts = []
    for _ in range(max(n_topics, 0)):
        ln = int.from_bytes(b[i:i + 2], "big", signed=True)
        i += 2 + max(ln, 0)
        n = int.from_bytes(b[i:i + 4], "big", signed=True)
        i += 4
        for _ in range(max(n, 0)):
            parts.append(int.from_bytes(b[i:i + 4], "big", signed=True))
            i += 4
    return sorted(parts)


def tansu_group_state(db, group):
    """The group as tansu's SQLite storage holds it (tansu-specific; DescribeGroups of tansu
    0.6.0 with SQLite storage fails), one line: state, generation, leader, members with seconds
    since their last contact, and the stored assignment of each member id."""
    if not db:
        return None
    import sqlite3
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        row = con.execute(
            "select d.detail from consumer_group cg join consumer_group_detail d "
            "on d.consumer_group = cg.id where cg.name = ?", (group,)).fetchone()
        con.close()
    except Exception as e:  # noqa: BLE001 - diagnostic only
        return f"tansu db: {e}"
    if row is None:
        return "tansu db: no such group"
    d = json.loads(row[0])
    now = time.time()
    (state, st), = d["state"].items()
    leader = st.get("leader")
    short = lambda m: (m or "-")[-8:]  # noqa: E731 - last 8 chars of a member id
    members = []
    for mid, m in sorted(d["members"].items()):
        lc = m.get("last_contact")
        age = "?" if not lc else f"{now - lc['secs_since_epoch'] - lc['nanos_since_epoch'] / 1e9:.0f}s"
        inst = m["join_response"].get("group_instance_id")
        members.append(f"{short(mid)}{'(' + inst + ')' if inst else ''}:{age}")
    out = (f"tansu: {state} gen={d['generation_id']} session_timeout_ms={d['session_timeout_ms']} "
           f"leader={short(leader)} members[{len(members)}]=[{' '.join(members)}]")
    if state == "Formed":
        asg = {short(k): _decode_assignment(v) for k, v in st.get("assignments", {}).items()}
        out += f" assignments={asg}"
    return out


def fmt_t(t):
    return "-" if t is None else f"{t:.1f}s"


def run_scenario(a, name, logdir):
    spec = SCENARIOS[name]
    run_id = f"{int(time.time())}-{os.getpid()}"
    topic = f"repro-{name}-{run_id}"
    group = f"repro-{name}-{run_id}"
    kills = spec.get("kills", a.kills)
    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": group,
        "client.id": "repro-archiver",  # constant across incarnations, like loglake's
        "enable.auto.commit": "false",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": "true",
    }
    conf.update(spec["conf"])
    if spec.get("static"):
        conf["group.instance.id"] = "repro-archiver-0"
    for kv in a.set or []:
        k, v = kv.split("=", 1)
        conf[k] = v
    sdir = os.path.join(logdir, name)
    os.makedirs(sdir, exist_ok=True)
    shown = {k: v for k, v in conf.items() if k not in ("bootstrap.servers", "group.id")}
    log(f"=== scenario {name}: topic/group {topic}, {kills} kills, conf {shown}")
    setup_topic(a.bootstrap, topic, a.partitions, a.records)
    log(f"produced {a.records} records into {a.partitions} partitions")

    rng = random.Random(a.seed)
    inc_assigned = 0
    for i in range(kills):
        c = Child(f"incarnation-{i}", conf, topic, a.records, sdir)
        life = rng.uniform(a.min_life, a.max_life)
        time.sleep(life)
        c.drain()
        if spec.get("graceful"):
            c.stop(grace=15)
            how = "SIGTERM+close()"
        else:
            c.kill()
            c.drain()
            c.stderr.close()
            how = "SIGKILL"
        got = c.current()
        if got:
            inc_assigned += 1
        log(f"incarnation {i}: {how} after {life:.1f}s, assigned {got}, consumed {c.count}")
    if kills and a.gap:
        log(f"waiting {a.gap:.0f}s (--gap) before the final consumer")
        time.sleep(a.gap)
    before = describe_group(a.bootstrap, group) if kills else "fresh group"
    log(f"group before final consumer: {before}")
    if a.tansu_db:
        log(f"  {tansu_group_state(a.tansu_db, group)}")

    final_conf = dict(conf)
    if a.debug:
        final_conf["debug"] = a.debug
    t0 = time.time()
    final = Child("final", final_conf, topic, a.records, sdir)
    probe = None
    probe_t = None
    deadline = t0 + a.timeout
    last_report = t0
    while time.time() < deadline:
        final.drain()
        if probe:
            probe.drain()
        if final.complete_t is not None:
            break
        if probe and probe.complete_t is not None:
            break
        if final.proc.poll() is not None:
            final.drain()
            log(f"final consumer exited with {final.proc.returncode}")
            break
        now = time.time()
        if a.probe_after and probe is None and now - t0 >= a.probe_after:
            probe_t = now - t0
            log(f"final consumer not done after {probe_t:.0f}s: starting a probe consumer")
            probe = Child("probe", conf, topic, a.records, sdir)
        if now - last_report >= 15:
            last_report = now
            log(f"  t={now - t0:.0f}s final assigned {final.current()}, consumed {final.count}"
                + (f"; probe assigned {probe.current()}, consumed {probe.count}" if probe else ""))
            if a.tansu_db:
                log(f"  {tansu_group_state(a.tansu_db, group)}")
        time.sleep(0.2)
    end = time.time()
    final.drain()
    during = describe_group(a.bootstrap, group)

    first_nonempty = next(((t - t0, p) for t, p in final.assignments if p), None)
    max_parts = max((len(p) for _, p in final.assignments), default=0)
    history = [(round(t - t0, 1), p) for t, p in final.assignments]
    log(f"final consumer assignment history (s since start, partitions): {history}")
    if probe:
        log(f"probe assignment history (s since final start): "
            f"{[(round(t - t0, 1), p) for t, p in probe.assignments]}, consumed {probe.count}")
    log(f"group at end: {during}")
    if a.tansu_db:
        log(f"  {tansu_group_state(a.tansu_db, group)}")
    final.stop()
    if probe:
        probe.stop()

    complete_t = None if final.complete_t is None else final.complete_t - t0
    if complete_t is not None:
        verdict = "OK"
        detail = f"all {a.records} records in {complete_t:.1f}s"
    elif max_parts == 0:
        verdict = "STUCK"
        detail = f"no partition assigned in {end - t0:.0f}s"
    else:
        verdict = "PARTIAL"
        detail = (f"at most {max_parts}/{a.partitions} partitions, {final.count}/{a.records} "
                  f"records in {end - t0:.0f}s")
    if probe:
        detail += (f"; probe started at {probe_t:.0f}s, then final got {final.current()} and probe"
                   f" {probe.current()}")
    log(f"VERDICT {name}: {verdict} - {detail}")
    return {
        "scenario": name,
        "kills": kills,
        "inc_assigned": inc_assigned,
        "before": before,
        "first_assign": None if first_nonempty is None else first_nonempty[0],
        "first_parts": None if first_nonempty is None else first_nonempty[1],
        "max_parts": max_parts,
        "count": final.count,
        "complete": complete_t,
        "verdict": verdict,
        "history": history,
    }


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        return child_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("bootstrap", help="broker address, e.g. 127.0.0.1:19092")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS) + ["all"],
                   help="scenario to run (repeatable; default all)")
    p.add_argument("--kills", type=int, default=10, help="incarnations SIGKILLed (default 10)")
    p.add_argument("--min-life", type=float, default=1.0, help="min s before a kill (default 1)")
    p.add_argument("--max-life", type=float, default=6.0, help="max s before a kill (default 6)")
    p.add_argument("--gap", type=float, default=0.0,
                   help="s to wait between the last kill and the final consumer (default 0)")
    p.add_argument("--records", type=int, default=30000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--timeout", type=float, default=120.0,
                   help="max s to wait for the final consumer (default 120)")
    p.add_argument("--probe-after", type=float, default=0.0,
                   help="start one more consumer in the group if the final one is not done "
                        "after this many s (default 0: never)")
    p.add_argument("--seed", type=int, default=17, help="seed of the kill intervals")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="extra librdkafka property for every consumer (repeatable)")
    p.add_argument("--debug", default="", help="librdkafka debug contexts for the final consumer "
                   "(e.g. cgrp); its log goes to <logdir>/<scenario>/final.stderr")
    p.add_argument("--tansu-db", default=None, metavar="PATH",
                   help="tansu's SQLite file (<tansu dir>/tansu.db): print the group as tansu "
                        "stores it (members, last contact, assignments) while the scenario runs")
    p.add_argument("--logdir", default=None, help="where child stderr goes (default: a temp dir)")
    a = p.parse_args()
    names = a.scenario or ["all"]
    if "all" in names:
        names = list(SCENARIOS)
    logdir = a.logdir or tempfile.mkdtemp(prefix="tansu-group-restart-")
    log(f"broker {a.bootstrap}; child logs in {logdir}")
    results = [run_scenario(a, n, logdir) for n in names]

    print()
    hdr = (f"{'scenario':<14} {'kills':>5} {'first assignment':>22} {'max parts':>9} "
           f"{'consumed':>9} {'all consumed':>12}  verdict")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        fa = "-" if r["first_assign"] is None else f"{r['first_assign']:.1f}s {r['first_parts']}"
        print(f"{r['scenario']:<14} {r['kills']:>5} {fa:>22} {r['max_parts']:>9} "
              f"{r['count']:>9} {fmt_t(r['complete']):>12}  {r['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
