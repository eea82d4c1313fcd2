//! The tables being written. One type, [`Output`], for each of them — a data table, a
//! `[[route]]` table of one, the dead-letter table: its partitioned writers under the byte
//! budget, its Delta sink, and the files uploaded since its last commit. A data table
//! ([`TableState`]) adds its decoder, its ETL and its route tables ([`RouteState`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use loglake_lake::{CommitOutcome, DeltaSink, OffsetAdvance};
use loglake_schemas::{TableKind, table_schema};
use tokio::runtime::Handle;
use url::Url;

use super::{ArchiveConfig, Archiver, TableTarget, name_from_url};
use crate::error::ArchiveError;
use crate::etl::Etl;
use crate::metrics::ArchiverMetrics;
use crate::writer::{ClosedFile, PartitionKey, RollPolicy, WriterSet, budget_victims};

/// A Delta table being written: open files per partition, and the files uploaded since the
/// last commit (deleted again when the commit is given up, [`Output::discard`]).
pub(super) struct Output {
    pub(super) writers: WriterSet,
    pub(super) sink: DeltaSink,
    pending: Vec<Add>,
    /// Rows in `pending` and the open files.
    pub(super) pending_rows: u64,
}

/// A commit of an [`Output`] that went through.
pub(super) struct Committed {
    pub(super) version: u64,
    pub(super) attempts: u32,
    pub(super) files: usize,
    pub(super) rows: u64,
}

/// A commit that found its offsets moved by another writer (I3): the table and the
/// (topic, partition, W) it found; the uploaded files are deleted.
pub(super) struct Conflict {
    pub(super) table: String,
    pub(super) partitions: Vec<(String, i32, Option<i64>)>,
}

/// Where the layout of an [`Output`] comes from.
pub(super) struct Layout<'a> {
    pub(super) schema: SchemaRef,
    pub(super) partition_by: &'a [String],
    pub(super) policy: RollPolicy,
    pub(super) bloom_filter_columns: &'a [String],
}

impl Output {
    /// Opens (or creates) the table `name` at `url` with `layout`.
    pub(super) fn open(
        handle: &Handle,
        name: &str,
        url: &Url,
        storage_options: &HashMap<String, String>,
        layout: Layout<'_>,
    ) -> Result<Self, ArchiveError> {
        let writers = WriterSet::new(
            layout.schema.clone(),
            layout.partition_by,
            layout.policy,
            layout.bloom_filter_columns,
        )?;
        let sink = handle.block_on(DeltaSink::open_or_create(
            name,
            url,
            storage_options,
            &layout.schema,
            layout.partition_by,
            writers.file_schema().clone(),
        ))?;
        Ok(Output {
            writers,
            sink,
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    /// Buffers `batch` (new files only within `headroom`) and uploads the files that closed.
    pub(super) fn write(
        &mut self,
        handle: &Handle,
        batch: &RecordBatch,
        headroom: &mut u64,
        metrics: &ArchiverMetrics,
    ) -> Result<(), ArchiveError> {
        let closed = self.writers.write(batch, headroom)?;
        self.pending_rows += batch.num_rows() as u64;
        self.upload(handle, closed, metrics)
    }

    fn upload(
        &mut self,
        handle: &Handle,
        closed: Vec<ClosedFile>,
        metrics: &ArchiverMetrics,
    ) -> Result<(), ArchiveError> {
        for f in closed {
            let bytes = f.bytes.len() as u64;
            let add = handle.block_on(self.sink.upload(f))?;
            metrics.files_written.inc();
            metrics.bytes_written.inc_by(bytes);
            self.pending.push(add);
        }
        Ok(())
    }

    /// Closes and uploads the open file of `key` (the budget chose it).
    fn close(
        &mut self,
        handle: &Handle,
        key: &PartitionKey,
        metrics: &ArchiverMetrics,
    ) -> Result<(), ArchiveError> {
        match self.writers.close(key)? {
            Some(f) => self.upload(handle, vec![f], metrics),
            None => Ok(()),
        }
    }

    /// Closes and uploads every open file.
    pub(super) fn flush(
        &mut self,
        handle: &Handle,
        metrics: &ArchiverMetrics,
    ) -> Result<(), ArchiveError> {
        while let Some(f) = self.writers.close_next()? {
            self.upload(handle, vec![f], metrics)?;
        }
        Ok(())
    }

    /// Drops the open files and deletes the uploaded, uncommitted ones.
    fn discard(&mut self, handle: &Handle) {
        self.writers.discard_all();
        let pending = std::mem::take(&mut self.pending);
        handle.block_on(self.sink.delete_uncommitted(&pending));
        self.pending_rows = 0;
    }

    /// Whether files wait for a commit.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Commits the uploaded files with the offsets (`txn` actions), resume points and commit
    /// info (`Err` inside: a conflict, the files are deleted).
    pub(super) fn commit(
        &mut self,
        handle: &Handle,
        offsets: &[OffsetAdvance],
        resumes: Vec<(String, i64)>,
        info: HashMap<String, serde_json::Value>,
    ) -> Result<Result<Committed, Conflict>, ArchiveError> {
        let adds = std::mem::take(&mut self.pending);
        let outcome =
            handle.block_on(
                self.sink
                    .commit_with_info(adds.clone(), offsets, resumes, info),
            )?;
        Ok(match outcome {
            CommitOutcome::Committed { version, attempts } => Ok(Committed {
                version,
                attempts,
                files: adds.len(),
                rows: std::mem::take(&mut self.pending_rows),
            }),
            CommitOutcome::Conflict { partitions } => {
                handle.block_on(self.sink.delete_uncommitted(&adds));
                Err(Conflict {
                    table: self.sink.name().to_string(),
                    partitions,
                })
            }
        })
    }
}

/// A table the archiver writes from its topics.
pub(super) struct TableState {
    pub(super) target: TableTarget,
    pub(super) decoder: Box<dyn loglake_schemas::Decoder>,
    pub(super) etl: Option<Arc<Etl>>,
    pub(super) out: Output,
    /// Offsets the filter left without a row since the last commit, per (topic, partition):
    /// recorded in the next commit's info ([`crate::etl::filtered_info`]).
    pub(super) pending_filtered: BTreeMap<(String, i32), Vec<i64>>,
    pub(super) pending_filtered_rows: u64,
    /// Offsets whose rows all moved to route tables since the last commit (commit info, too).
    pub(super) pending_moved: BTreeMap<(String, i32), Vec<i64>>,
    pub(super) routes: Vec<RouteState>,
}

/// A `[[route]]` table of one source table: its own writers, and its own W per source
/// partition (txn actions in the route table), committed before the source table, like the
/// dead letters' D (DESIGN.md, "Archive-time ETL").
pub(super) struct RouteState {
    pub(super) name: String,
    pub(super) out: Output,
    /// W of the route table per source (topic, partition): routed rows below are in it.
    pub(super) committed: HashMap<(String, i32), Option<i64>>,
}

impl RouteState {
    pub(super) fn floor(&self, topic: &str, partition: i32) -> i64 {
        self.committed
            .get(&(topic.to_string(), partition))
            .copied()
            .flatten()
            .unwrap_or(i64::MIN)
    }
}

impl TableState {
    /// Opens (or creates) the table of `t` and its route tables.
    pub(super) fn open(
        t: &TableTarget,
        cfg: &ArchiveConfig,
        handle: &Handle,
    ) -> Result<Self, ArchiveError> {
        let decoder = t.decoder(&cfg.decoder_options)?;
        let etl = t.compile_etl(&cfg.decoder_options)?;
        // Derived columns join the table's schema (additive evolution of an existing table).
        let schema = etl
            .as_ref()
            .map_or_else(|| decoder.schema(), |e| e.output_schema().clone());
        let layout = Layout {
            schema,
            partition_by: &t.partition_by,
            policy: cfg.policy.for_table(t),
            bloom_filter_columns: &t.bloom_filter_columns,
        };
        let out = Output::open(handle, &t.name, &t.url, &cfg.storage_options, layout)?;
        let mut routes = Vec::new();
        if let Some(etl) = &etl {
            for ((name, _), url) in etl.route_tables().into_iter().zip(&t.route_urls) {
                let layout = Layout {
                    schema: etl.output_schema().clone(),
                    partition_by: &t.partition_by,
                    policy: cfg.policy.for_table(t),
                    bloom_filter_columns: &[],
                };
                let out = Output::open(handle, &name, url, &cfg.storage_options, layout)?;
                routes.push(RouteState {
                    name,
                    out,
                    committed: HashMap::new(),
                });
            }
        }
        Ok(TableState {
            target: t.clone(),
            decoder,
            etl,
            out,
            pending_filtered: BTreeMap::new(),
            pending_filtered_rows: 0,
            pending_moved: BTreeMap::new(),
            routes,
        })
    }
}

/// Opens (or creates) the dead-letter table at `url`.
pub(super) fn open_dead_letters(
    url: &Url,
    cfg: &ArchiveConfig,
    handle: &Handle,
) -> Result<Output, ArchiveError> {
    let partition_by = vec!["dt".to_string(), "hour".to_string()];
    let layout = Layout {
        schema: table_schema(TableKind::DeadLetter),
        partition_by: &partition_by,
        policy: cfg.policy.clone(),
        bloom_filter_columns: &[],
    };
    Output::open(
        handle,
        &name_from_url(url),
        url,
        &cfg.storage_options,
        layout,
    )
}

/// One of the run's [`Output`]s.
#[derive(Debug, Clone, Copy)]
enum OutputId {
    Table(usize),
    DeadLetters,
    Route(usize, usize),
}

impl Archiver {
    /// Every output, in the order the budget sees them: the tables, the dead letters, then the
    /// route tables.
    fn output_ids(&self) -> Vec<OutputId> {
        let tables = (0..self.tables.len()).map(OutputId::Table);
        let dlq = self.dlq.iter().map(|_| OutputId::DeadLetters);
        let routes = self
            .tables
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..t.routes.len()).map(move |ri| OutputId::Route(i, ri)));
        tables.chain(dlq).chain(routes).collect()
    }

    fn output(&self, id: OutputId) -> Option<&Output> {
        match id {
            OutputId::Table(i) => self.tables.get(i).map(|t| &t.out),
            OutputId::DeadLetters => self.dlq.as_ref(),
            OutputId::Route(i, ri) => self.tables.get(i)?.routes.get(ri).map(|r| &r.out),
        }
    }

    fn output_mut(&mut self, id: OutputId) -> Option<&mut Output> {
        match id {
            OutputId::Table(i) => self.tables.get_mut(i).map(|t| &mut t.out),
            OutputId::DeadLetters => self.dlq.as_mut(),
            OutputId::Route(i, ri) => self
                .tables
                .get_mut(i)?
                .routes
                .get_mut(ri)
                .map(|r| &mut r.out),
        }
    }

    /// Bytes the open files of every output hold.
    pub(super) fn buffered_bytes(&self) -> u64 {
        self.output_ids()
            .into_iter()
            .filter_map(|id| self.output(id))
            .map(|o| o.writers.memory())
            .sum()
    }

    /// What the memory budget has left: writers start only within it (`WriterSet::write`).
    pub(super) fn headroom(&self) -> u64 {
        self.cfg
            .policy
            .memory_budget_bytes
            .saturating_sub(self.buffered_bytes())
    }

    /// Closes the largest open files (across all tables, the dead letters and the route tables)
    /// while over the byte budget, down to 3/4 of it: the choice is [`budget_victims`].
    pub(super) fn enforce_budget(&mut self) -> Result<(), ArchiveError> {
        let budget = self.cfg.policy.memory_budget_bytes;
        if self.buffered_bytes() <= budget {
            return Ok(());
        }
        let mut owners: Vec<(OutputId, PartitionKey)> = Vec::new();
        let mut sizes = Vec::new();
        for id in self.output_ids() {
            for (k, size) in self
                .output(id)
                .map(|o| o.writers.sizes())
                .unwrap_or_default()
            {
                owners.push((id, k));
                sizes.push(size);
            }
        }
        let (handle, metrics) = (self.handle.clone(), self.cfg.metrics.clone());
        for v in budget_victims(&sizes, budget, budget / 4 * 3) {
            metrics.budget_flushes.inc();
            let (id, key) = &owners[v];
            if let Some(out) = self.output_mut(*id) {
                out.close(&handle, key, &metrics)?;
            }
        }
        Ok(())
    }

    /// Drops everything not yet committed (buffers, decoder state, uploaded files).
    pub(super) fn reset(&mut self) -> Result<(), ArchiveError> {
        for t in &mut self.tables {
            t.out.discard(&self.handle);
            t.decoder = t.target.decoder(&self.cfg.decoder_options)?;
            t.pending_filtered.clear();
            t.pending_filtered_rows = 0;
            t.pending_moved.clear();
            for r in &mut t.routes {
                r.out.discard(&self.handle);
            }
        }
        if let Some(d) = &mut self.dlq {
            d.discard(&self.handle);
        }
        Ok(())
    }
}
