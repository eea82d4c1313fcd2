//! SQL behaviour as sqllogictest files (`tests/slt/*.slt`) over the fixture lake of
//! `common::build_lake`. `${LAKE}` and `${PEER}` in the SQL expand to the lake folder and the
//! in-repo peer suites.

mod common;

use std::path::PathBuf;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use loglake_query::engine::{Engine, EngineOptions};
use loglake_query::script::Statement;
use sqllogictest::{DBOutput, DefaultColumnType};

struct Db {
    engine: Engine,
    lake: String,
    peer: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = sql
            .replace("${LAKE}", &self.lake)
            .replace("${PEER}", &self.peer);
        let stmt = Statement {
            index: 1,
            line: 1,
            column: 1,
            text: sql,
        };
        let res = self.engine.execute(&stmt).await.map_err(|e| {
            let names = loglake_query::diagnose::names_of(&self.engine);
            DbError(loglake_query::diagnose::describe(&stmt, &e, &names))
        })?;
        let ncols = res.schema.fields().len();
        let mut rows = Vec::new();
        let mut stream = res.stream;
        let mut batches = Vec::new();
        while let Some(b) = stream.next().await {
            batches.push(b.map_err(|e| DbError(e.strip_backtrace()))?);
        }
        batches.extend(res.trailer);
        let opts = FormatOptions::default().with_null("NULL");
        for b in &batches {
            let f: Vec<ArrayFormatter<'_>> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                .collect::<Result<_, _>>()
                .map_err(|e| DbError(e.to_string()))?;
            for r in 0..b.num_rows() {
                rows.push(
                    f.iter()
                        .map(|c| {
                            let s = c.value(r).to_string();
                            if s.is_empty() {
                                "(empty)".to_string()
                            } else {
                                s
                            }
                        })
                        .collect(),
                );
            }
        }
        if ncols == 0 {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; ncols],
            rows,
        })
    }

    async fn shutdown(&mut self) {}
}

async fn run_file(name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::build_lake(dir.path()).await;
    let lake = dir.path().to_string_lossy().to_string();
    let peer = common::peer_suites().to_string_lossy().to_string();
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "slt", name]
        .iter()
        .collect();
    let mut runner = sqllogictest::Runner::new(|| {
        let (lake, peer) = (lake.clone(), peer.clone());
        async move {
            let engine = Engine::new(EngineOptions {
                lake: Some(lake.clone()),
                target_partitions: Some(2),
                ..Default::default()
            })
            .await
            .map_err(|e| DbError(e.to_string()))?;
            Ok(Db { engine, lake, peer })
        }
    });
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}: {}", path.display(), e.display(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog() {
    run_file("catalog.slt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_functions() {
    run_file("functions.slt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_and_correlate() {
    run_file("context.slt").await;
}
