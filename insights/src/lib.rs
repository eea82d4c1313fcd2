//! # loglake-insights
//!
//! What loglake derives from the logs it holds, for people to look at:
//!
//! - [`mask`] and [`drain`]: a Drain-style template miner (fixed-depth prefix tree, similarity
//!   threshold, masking of numbers, ids, IPs, UUIDs, paths and hex), with stable template ids
//!   (a hash of the template text);
//! - [`sql`]: the miner as SQL functions: the table function `log_templates(query [, options])`
//!   and the window functions `log_template_id(message) OVER (…)` / `drain_template(message)
//!   OVER (…)`; `loglake query` registers them;
//! - [`templates`]: the nightly `log_templates` Delta table (per day and service, stable ids,
//!   first seen, new today): [`mine_templates_for_day`];
//! - [`report`] and [`html`]: `loglake report`, one self-contained HTML page of a day plus its
//!   JSON: [`write_report`];
//! - [`k8s`]: Kubernetes Events decoded ([`k8s::decode_events`]) into `k8s_events`, and the
//!   nightly `k8s_health` table (signals per hour × namespace × workload × node):
//!   [`derive_k8s_health_for_day`];
//! - [`anomalies`]: the nightly `log_anomalies` table (volume and errors per hour × namespace ×
//!   service against the same hour of earlier days, median/MAD, spike localised to a pod and a
//!   template): [`detect_anomalies_for_day`];
//! - [`nightly`]: all of a day's derivations in order, then the report: [`derive_day`];
//! - [`lake`]: a DataFusion session over the lake's Delta tables, markers, files per partition;
//! - [`accuracy`]: grouping accuracy against known truth (tests, `benches/miner.rs`).

// Issue 18: no function over 80 lines of code outside tests (threshold in clippy.toml).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod accuracy;
pub mod anomalies;
pub mod cli;
pub mod drain;
pub mod error;
pub mod html;
pub mod k8s;
pub mod lake;
pub mod mask;
pub mod nightly;
pub mod report;
pub mod sql;
pub mod templates;

pub use anomalies::{AnomalyMetrics, AnomalyOptions, detect_anomalies_for_day};
pub use cli::{InsightsArgs, run_insights};
pub use drain::{Drain, DrainConfig, MinedTemplate, template_id};
pub use error::InsightsError;
pub use k8s::{HealthMetrics, derive_k8s_health_for_day};
pub use nightly::{DayMetrics, DayOptions, derive_day};
pub use report::{ReportArgs, ReportMetrics, run_report, write_report};
pub use templates::{TemplatesMetrics, mine_templates_for_day};
