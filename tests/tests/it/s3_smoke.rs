//! Proves the S3 server is real and safe for Delta commits: put-if-absent is enforced, and two
//! concurrent deltalake appends both land.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use datafusion::prelude::SessionContext;
use deltalake::kernel::{DataType, PrimitiveType, StructField};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use loglake_tests::{s3, unique_name};

#[tokio::test]
async fn s3_server_enforces_put_if_absent() {
    let store = s3().object_store().expect("store");
    let path = object_store::path::Path::from(format!("{}/commit.json", unique_name("pia")));
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&path, PutPayload::from_static(b"first"), create.clone())
        .await
        .expect("first create succeeds");
    let second = store
        .put_opts(&path, PutPayload::from_static(b"second"), create)
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "second create must fail with AlreadyExists (412), got {second:?}"
    );
    let body = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(body.as_ref(), b"first", "the first writer's object is kept");
}

fn batch(writer: i64, rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("writer", ArrowType::Utf8, false),
        Field::new("value", ArrowType::Int64, false),
    ]));
    let ids: Vec<i64> = (0..rows).map(|i| writer * 1_000_000 + i).collect();
    let values: Vec<i64> = (0..rows).map(|i| i * writer).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(vec![format!("w{writer}"); rows as usize])),
            Arc::new(Int64Array::from(values)),
        ],
    )
    .expect("batch")
}

async fn open(url: &Url) -> Result<DeltaTable, DeltaTableError> {
    DeltaTable::try_from_url_with_storage_options(url.clone(), s3().storage_options()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_delta_appends_on_s3_both_land() {
    deltalake::aws::register_handlers(None);
    let url = Url::parse(&s3().unique_url("delta-smoke")).expect("url");

    let table = open(&url).await.expect("open");
    // Commits must rely on put-if-absent: no locking provider, no unsafe-rename backend.
    let store_debug = format!("{:?}", table.log_store().object_store(None));
    assert!(
        store_debug.contains("AmazonS3"),
        "plain S3 store expected, got {store_debug}"
    );
    assert!(
        !store_debug.contains("S3StorageBackend"),
        "unsafe-rename backend used: {store_debug}"
    );
    let table = table
        .create()
        .with_columns([
            StructField::new("id", DataType::Primitive(PrimitiveType::Long), false),
            StructField::new("writer", DataType::Primitive(PrimitiveType::String), false),
            StructField::new("value", DataType::Primitive(PrimitiveType::Long), false),
        ])
        .await
        .expect("create table");
    assert_eq!(table.version(), Some(0));

    // Two writers, each with its own table handle at version 0, released together.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for writer in [1i64, 2] {
        let url = url.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let t = open(&url).await.expect("open writer table");
            assert_eq!(t.version(), Some(0));
            barrier.wait().await;
            let t = t
                .write(vec![batch(writer, 1000 * writer)])
                .with_save_mode(SaveMode::Append)
                .await
                .expect("append");
            t.version()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.expect("join").expect("version"));
    }
    versions.sort();
    assert_eq!(
        versions,
        vec![1, 2],
        "both appends committed, as versions 1 and 2"
    );

    // The log on S3 holds exactly commits 0, 1 and 2.
    let prefix = url.path().trim_start_matches('/').to_string();
    let log: Vec<String> = s3()
        .list(&format!("{prefix}/_delta_log"))
        .await
        .expect("list")
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .map(|k| k.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        log,
        vec![
            "00000000000000000000.json",
            "00000000000000000001.json",
            "00000000000000000002.json"
        ]
    );

    // Read back through DataFusion: all 3000 rows, exact sums.
    let table = open(&url).await.expect("reopen");
    assert_eq!(table.version(), Some(2));
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .expect("register store");
    ctx.register_table("t", table.table_provider().await.expect("provider"))
        .expect("register");
    let batches = ctx
        .sql("SELECT count(*) AS n, sum(value) AS s, count(DISTINCT writer) AS w FROM t")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("query");
    let row = &batches[0];
    let col = |i: usize| {
        row.column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64")
            .value(0)
    };
    // writer 1: sum(0..1000) * 1 = 499500; writer 2: sum(0..2000) * 2 = 3998000
    assert_eq!((col(0), col(1), col(2)), (3000, 499_500 + 3_998_000, 2));
}
