//! The compactor's metrics ([`CompactorMetrics`]): per table, what `loglake compact` did, as
//! OpenMetrics counters and gauges in the process's [`loglake_lake::telemetry::Telemetry`]
//! (served on `--metrics-addr`, written to `--metrics-file`). The same figures as the run's JSON
//! report ([`crate::CompactMetrics`]), summed over runs for a long-lived process (the nightly
//! runner).

use std::sync::atomic::AtomicU64;

use loglake_lake::telemetry::StageMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::CompactMetrics;

/// The label of every compactor metric: the table's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

pub type PerTable = Family<TableLabels, Counter>;
pub type PerTableGauge = Family<TableLabels, Gauge<u64, AtomicU64>>;

/// Counters per table (label `table`), exposed with a `_total` suffix: the field `files_in` is
/// `loglake_compact_files_in_total{table}`.
#[derive(Debug, Default)]
pub struct CompactorMetrics {
    /// Compaction runs that ended without error (`loglake_compact_runs_total`).
    pub runs: PerTable,
    /// Runs that failed (`loglake_compact_failures_total`).
    pub failures: PerTable,
    /// Runs that found the table's maintenance lease held by another writer and skipped it
    /// (`loglake_compact_lease_busy_total`).
    pub lease_busy: PerTable,
    pub partitions_compacted: PerTable,
    pub files_in: PerTable,
    pub files_out: PerTable,
    pub bytes_in: PerTable,
    pub bytes_out: PerTable,
    pub rows: PerTable,
    pub commits: PerTable,
    /// Commit races lost to other writers and retried.
    pub commit_retries: PerTable,
    /// Groups given up because another writer removed one of their files first.
    pub groups_conflicted: PerTable,
    /// Checkpoints written.
    pub checkpoints: PerTable,
    /// Log files removed past their retention.
    pub log_files_removed: PerTable,
    /// Versions whose filtered/moved offsets the checkpoint folded into the ETL offsets ledger
    /// before its log cleanup (`loglake_compact_etl_versions_folded_total`).
    pub etl_versions_folded: PerTable,
    /// Offset ranges written to the ledger by those folds.
    pub etl_ranges_folded: PerTable,
    /// Folded versions whose commit file was already gone: the audit cannot vouch for their
    /// offsets (`loglake_compact_etl_unverifiable_versions_total`; alert on any increase).
    pub etl_unverifiable_versions: PerTable,
    /// Unix time (s) of the last run that ended without error
    /// (`loglake_compact_last_success_timestamp_seconds`).
    pub last_success: PerTableGauge,
    /// Milliseconds the last run took (`loglake_compact_last_duration_ms`).
    pub last_duration_ms: PerTableGauge,
}

impl CompactorMetrics {
    fn labels(table: &str) -> TableLabels {
        TableLabels {
            table: table.to_string(),
        }
    }

    /// Adds one table's run (`m`, its JSON report) to the counters; `now_unix` is the time it
    /// ended.
    pub fn record(&self, m: &CompactMetrics, now_unix: u64) {
        let l = Self::labels(&m.table);
        let add = |f: &PerTable, n: u64| {
            f.get_or_create(&l).inc_by(n);
        };
        add(&self.runs, 1);
        if m.lease.starts_with("held by") {
            add(&self.lease_busy, 1);
        }
        add(&self.partitions_compacted, m.partitions_compacted as u64);
        add(&self.files_in, m.files_in as u64);
        add(&self.files_out, m.files_out as u64);
        add(&self.bytes_in, m.bytes_in);
        add(&self.bytes_out, m.bytes_out);
        add(&self.rows, m.rows);
        add(&self.commits, m.commits as u64);
        add(&self.commit_retries, m.commit_retries as u64);
        add(&self.groups_conflicted, m.groups_conflicted as u64);
        if let Some(c) = &m.checkpoint {
            add(&self.checkpoints, u64::from(c.created));
            add(&self.log_files_removed, c.log_files_removed as u64);
            add(&self.etl_versions_folded, c.etl_versions_folded);
            add(&self.etl_ranges_folded, c.etl_ranges_folded);
            add(&self.etl_unverifiable_versions, c.etl_unverifiable_versions);
        }
        self.last_success.get_or_create(&l).set(now_unix);
        self.last_duration_ms.get_or_create(&l).set(m.duration_ms);
    }

    /// Counts a failed run of `table`.
    pub fn failed(&self, table: &str) {
        self.failures.get_or_create(&Self::labels(table)).inc();
    }
}

impl CompactorMetrics {
    /// The counter families with their names (without `_total`) and help texts, in registration
    /// order.
    fn counters(&self) -> [(&'static str, &'static str, &PerTable); 12] {
        [
            (
                "loglake_compact_runs",
                "Compaction runs that ended without error",
                &self.runs,
            ),
            (
                "loglake_compact_failures",
                "Compaction runs that failed",
                &self.failures,
            ),
            (
                "loglake_compact_lease_busy",
                "Compaction runs that skipped a table whose maintenance lease another writer held",
                &self.lease_busy,
            ),
            (
                "loglake_compact_partitions_compacted",
                "Partitions rewritten",
                &self.partitions_compacted,
            ),
            (
                "loglake_compact_files_in",
                "Data files removed by compaction",
                &self.files_in,
            ),
            (
                "loglake_compact_files_out",
                "Data files written by compaction",
                &self.files_out,
            ),
            (
                "loglake_compact_bytes_in",
                "Bytes of the files removed",
                &self.bytes_in,
            ),
            (
                "loglake_compact_bytes_out",
                "Bytes of the files written",
                &self.bytes_out,
            ),
            ("loglake_compact_rows", "Rows rewritten", &self.rows),
            (
                "loglake_compact_commits",
                "Compaction commits",
                &self.commits,
            ),
            (
                "loglake_compact_commit_retries",
                "Commit races lost to other writers and retried",
                &self.commit_retries,
            ),
            (
                "loglake_compact_groups_conflicted",
                "Groups given up because another writer removed one of their files",
                &self.groups_conflicted,
            ),
        ]
    }

    /// The counter families of the checkpoint after a run (the log cleanup and the ETL ledger
    /// fold before it).
    fn log_counters(&self) -> [(&'static str, &'static str, &PerTable); 5] {
        [
            (
                "loglake_compact_checkpoints",
                "Checkpoints written",
                &self.checkpoints,
            ),
            (
                "loglake_compact_log_files_removed",
                "Delta log files removed past their retention",
                &self.log_files_removed,
            ),
            (
                "loglake_compact_etl_versions_folded",
                "Versions whose filtered/moved offsets were folded into the ETL offsets ledger before the log cleanup",
                &self.etl_versions_folded,
            ),
            (
                "loglake_compact_etl_ranges_folded",
                "Offset ranges written to the ETL offsets ledger",
                &self.etl_ranges_folded,
            ),
            (
                "loglake_compact_etl_unverifiable_versions",
                "Folded versions whose commit file was already gone (their filtered offsets cannot be audited)",
                &self.etl_unverifiable_versions,
            ),
        ]
    }
}

impl StageMetrics for CompactorMetrics {
    fn register(&self, r: &mut Registry) {
        for (name, help, family) in self.counters().into_iter().chain(self.log_counters()) {
            r.register(name, help, family.clone());
        }
        r.register(
            "loglake_compact_last_success_timestamp_seconds",
            "Unix time of the last compaction run that ended without error",
            self.last_success.clone(),
        );
        r.register(
            "loglake_compact_last_duration_ms",
            "Milliseconds the last compaction run took",
            self.last_duration_ms.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_lake::telemetry::Telemetry;

    #[test]
    fn a_run_report_adds_up_in_the_exposition() {
        let t = Telemetry::new();
        let m = CompactorMetrics::default();
        t.register(&m);
        let mut r = CompactMetrics {
            table: "containers".into(),
            lease: "acquired".into(),
            partitions_compacted: 3,
            files_in: 40,
            files_out: 3,
            bytes_in: 1000,
            bytes_out: 900,
            rows: 77,
            commits: 3,
            commit_retries: 1,
            duration_ms: 1234,
            checkpoint: Some(crate::CheckpointMetrics {
                created: true,
                log_files_removed: 5,
                etl_versions_folded: 12,
                etl_ranges_folded: 30,
                etl_unverifiable_versions: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        m.record(&r, 1_700_000_000);
        r.lease = "held by other@host".into();
        r.files_in = 2;
        r.checkpoint = None;
        m.record(&r, 1_700_000_100);
        m.failed("containers");
        let text = t.encode();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for expected in [
            "loglake_compact_runs_total{table=\"containers\"} 2",
            "loglake_compact_failures_total{table=\"containers\"} 1",
            "loglake_compact_lease_busy_total{table=\"containers\"} 1",
            "loglake_compact_files_in_total{table=\"containers\"} 42",
            "loglake_compact_files_out_total{table=\"containers\"} 6",
            "loglake_compact_bytes_in_total{table=\"containers\"} 2000",
            "loglake_compact_rows_total{table=\"containers\"} 154",
            "loglake_compact_commit_retries_total{table=\"containers\"} 2",
            "loglake_compact_checkpoints_total{table=\"containers\"} 1",
            "loglake_compact_log_files_removed_total{table=\"containers\"} 5",
            "loglake_compact_etl_versions_folded_total{table=\"containers\"} 12",
            "loglake_compact_etl_ranges_folded_total{table=\"containers\"} 30",
            "loglake_compact_etl_unverifiable_versions_total{table=\"containers\"} 1",
            "loglake_compact_last_success_timestamp_seconds{table=\"containers\"} 1700000100",
            "loglake_compact_last_duration_ms{table=\"containers\"} 1234",
        ] {
            assert!(lines.contains(&expected), "no {expected:?} in\n{text}");
        }
    }
}
