//! The quickstart's last step: the lake's tables and the answers of a few example queries, on
//! `loglake query`'s engine.

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use loglake_lake::table_url;

use crate::JobError;

/// The oldest `dt` of a table of the lake.
pub(super) async fn oldest_day(lake: &str, name: &str) -> Result<NaiveDate, JobError> {
    let ctx = SessionContext::new();
    register(&ctx, lake, name).await?;
    let batches = ctx
        .sql(&format!("SELECT CAST(min(dt) AS VARCHAR) FROM {name}"))
        .await
        .map_err(|e| JobError::Internal(format!("{name}: {e}")))?
        .collect()
        .await
        .map_err(|e| JobError::Internal(format!("{name}: {e}")))?;
    let text = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| arrow::util::display::array_value_to_string(b.column(0), 0).ok())
        .unwrap_or_default();
    text.parse()
        .map_err(|e| JobError::Internal(format!("{name}: no day in the table ({text:?}: {e})")))
}

/// Registers the lake's table `name` (`runs`: the run ledger) in `ctx`.
async fn register(ctx: &SessionContext, lake: &str, name: &str) -> Result<DeltaTable, JobError> {
    let path = if name == "runs" {
        format!("{lake}/{}", crate::ledger::LEDGER_PATH)
    } else {
        format!("{lake}/{name}")
    };
    let url = table_url(&path).map_err(|e| JobError::Config(e.to_string()))?;
    let t = DeltaTable::try_from_url(url)
        .await
        .map_err(|e| JobError::stage("query", name, e))?;
    t.update_datafusion_session(&ctx.state())
        .map_err(|e| JobError::stage("query", name, e))?;
    let p = t
        .table_provider()
        .await
        .map_err(|e| JobError::stage("query", name, e))?;
    ctx.register_table(name, p)
        .map_err(|e| JobError::stage("query", name, e))?;
    Ok(t)
}

/// Prints every table's version and file count, then each example query and its answer.
pub(super) async fn query(lake: &str) -> Result<(), JobError> {
    print_tables(lake).await?;
    // the queries run on `loglake query`'s engine: every table of the lake by folder name, the
    // log functions (log_context, correlate, delta_scan, lake_status, ...)
    let engine = loglake_query::Engine::new(loglake_query::EngineOptions {
        lake: Some(lake.to_string()),
        ..Default::default()
    })
    .await
    .map_err(|e| JobError::Internal(format!("loglake query's engine on {lake}: {e}")))?;
    for (title, sql) in example_queries(lake) {
        print_query(&engine, title, &sql).await?;
    }
    Ok(())
}

/// One line per table of the lake: its version and number of data files.
async fn print_tables(lake: &str) -> Result<(), JobError> {
    let ctx = SessionContext::new();
    for name in [
        "container_logs",
        "k8s_audit",
        "access",
        "dead_letters",
        "log_templates",
        "runs",
    ] {
        let t = register(&ctx, lake, name).await?;
        let files = t.snapshot().map(|s| s.log_data().num_files()).unwrap_or(0);
        println!(
            "   table {name:<15} version {}, {files} data file(s)",
            t.version().unwrap_or(0)
        );
    }
    Ok(())
}

/// The example queries, with their titles, in the order they are shown.
fn example_queries(lake: &str) -> Vec<(&'static str, String)> {
    let runs = format!("{lake}/{}", crate::ledger::LEDGER_PATH);
    let ledger_sql = format!(
        "SELECT stage, status, count(*) AS attempts FROM delta_scan('{runs}') \
         GROUP BY stage, status ORDER BY stage, status"
    );
    let fixed: [(&'static str, &'static str); 8] = [
        (
            "rows and partitions per table",
            "SELECT 'container_logs' AS table_name, count(*) AS rows, count(DISTINCT (dt, hour)) AS partitions FROM container_logs \
          UNION ALL SELECT 'k8s_audit', count(*), count(DISTINCT (dt, hour)) FROM k8s_audit \
          UNION ALL SELECT 'access', count(*), count(DISTINCT (dt, hour)) FROM access \
          UNION ALL SELECT 'dead_letters', count(*), count(DISTINCT (dt, hour)) FROM dead_letters ORDER BY table_name",
        ),
        (
            "container log lines by namespace and stream",
            "SELECT namespace, stream, count(*) AS lines FROM container_logs GROUP BY namespace, stream ORDER BY lines DESC, namespace, stream LIMIT 10",
        ),
        (
            "who did what in the API server (audit)",
            "SELECT \"user\", verb, object_resource, count(*) AS events FROM k8s_audit GROUP BY 1, 2, 3 ORDER BY events DESC, 1, 2, 3 LIMIT 8",
        ),
        (
            "HTTP status classes at the ingress",
            "SELECT status, count(*) AS requests, sum(bytes_sent) AS bytes FROM access GROUP BY status ORDER BY status",
        ),
        (
            "dead letters (nothing is dropped)",
            "SELECT kafka_topic, kafka_partition, kafka_offset, substr(error, 1, 60) AS error FROM dead_letters ORDER BY kafka_offset",
        ),
        (
            "grep -C for logs: the stderr lines of the annotations-exclude pods, one line before and after each (log_context)",
            "SELECT pod, count(*) FILTER (WHERE \"offset\" = 0) AS hits, count(*) FILTER (WHERE \"offset\" <> 0) AS context_lines \
             FROM log_context('container_logs', 'stream = ''stderr'' AND namespace = ''annotations-exclude''', before => 1, after => 1) \
             GROUP BY pod ORDER BY pod",
        ),
        (
            "what each user did within 10 seconds of a delete (correlate)",
            "SELECT \"user\", r_verb, count(*) AS pairs \
             FROM correlate('SELECT * FROM k8s_audit WHERE verb = ''delete''', 'k8s_audit', key => 'user', within => INTERVAL '10 seconds') \
             GROUP BY 1, 2 ORDER BY pairs DESC, 1, 2",
        ),
        (
            "the day's log templates (Drain-style mining by the nightly insights stage)",
            "SELECT service, template, count FROM log_templates ORDER BY count DESC, template LIMIT 6",
        ),
    ];
    let mut queries: Vec<(&'static str, String)> =
        fixed.into_iter().map(|(t, q)| (t, q.to_string())).collect();
    queries.push((
        "the run ledger: stage attempts of the two nightly passes",
        ledger_sql,
    ));
    queries
}

/// Runs one example query and prints it with its answer.
async fn print_query(
    engine: &loglake_query::Engine,
    title: &str,
    sql: &str,
) -> Result<(), JobError> {
    println!("\n-- {title}\n{sql}");
    let plan = engine
        .plan_sql(sql, true)
        .await
        .map_err(|e| JobError::Internal(format!("{title}: {e}")))?;
    let batches = engine
        .ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| JobError::Internal(format!("{title}: {e}")))?
        .collect()
        .await
        .map_err(|e| JobError::Internal(format!("{title}: {e}")))?;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(|e| JobError::Internal(format!("{title}: {e}")))?;
    println!("{text}");
    Ok(())
}
