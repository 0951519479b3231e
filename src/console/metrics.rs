//! Prometheus metrics through the `metrics` facade and `metrics-exporter-prometheus`.
//!
//! Counters and histograms are recorded where things happen, one `metrics::` line each
//! (the runner, the intake, the API-call records); gauges that describe the whole
//! deployment (workflows by state, leases held, outbox lag) are read from the database
//! at scrape time, so every `serve` process reports the same figures for them.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `offboard_workflows` | gauge | `state`, `app` |
//! | `offboard_workflow_duration_seconds` | histogram | `app`, `state` (final) |
//! | `offboard_step_duration_seconds` | histogram | `app`, `step`, `result` |
//! | `offboard_api_calls_total` | counter | `app`, `method`, `status`, `error_code` |
//! | `offboard_step_retries_total` | counter | `app`, `step`, `code` |
//! | `offboard_retry_wait_seconds` | histogram | `app`, `step` |
//! | `offboard_rechecks_total` | counter | `app`, `result` (rechecks after the end) |
//! | `offboard_access_reappeared_total` | counter | `app`, `code` |
//! | `offboard_dead_letters_total` | counter | `code` |
//! | `offboard_request_budget_limit_per_minute` | gauge | `connection` |
//! | `offboard_request_budget_used_total` | counter | `connection` |
//! | `offboard_intake_lag_seconds` | histogram | — (event `time` to accepted) |
//! | `offboard_outbox_lag_seconds`, `offboard_outbox_pending` | gauge | — |
//! | `offboard_leases_held` | gauge | `worker` |
//! | `offboard_readiness_checks_total` | counter | — (background checks behind `/readyz`) |

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::Config;
use crate::store::{Gauges, StoreError};

/// Histogram buckets in seconds: API calls and steps (milliseconds to a minute) and
/// retry waits and whole workflows (up to a day).
const BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];

/// The states a workflow can be in (the gauge shows 0 for those that have none).
const STATES: [&str; 7] = [
    "pending",
    "held",
    "running",
    "retrying",
    "completed",
    "failed",
    "cancelled",
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Held while a scrape sets the gauges and renders, so two scrapes at once do not mix
/// their figures; it also remembers the workers seen holding leases, whose gauge must
/// drop to 0 once they hold none (a series, once set, stays until changed).
static SCRAPE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Installs the process-wide recorder (once; later calls return the same handle). Until
/// it is installed, the `metrics::` calls in the engine cost next to nothing and record
/// nothing: `serve` without `[http] listen` keeps no metrics.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the bucket list is not empty")
        };
        let handle = builder()
            .install_recorder()
            // Another recorder came first (an embedding program's): render an empty one.
            .unwrap_or_else(|_| builder().build_recorder().handle());
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("offboard_workflows", "Workflows by state and app.");
    describe_histogram!(
        "offboard_workflow_duration_seconds",
        Unit::Seconds,
        "From a workflow's creation to its end."
    );
    describe_histogram!(
        "offboard_step_duration_seconds",
        Unit::Seconds,
        "One attempt of one step."
    );
    describe_counter!(
        "offboard_api_calls_total",
        "HTTP calls to the apps by method, status and app error code."
    );
    describe_counter!(
        "offboard_step_retries_total",
        "Step attempts that failed and were scheduled again."
    );
    describe_counter!(
        "offboard_rechecks_total",
        "Rechecks after the end by result: still_gone, reactivated, recreated, failed."
    );
    describe_counter!(
        "offboard_access_reappeared_total",
        "Rechecks that found access back after offboarding (SMT-113-B, POST-113-B)."
    );
    describe_histogram!(
        "offboard_retry_wait_seconds",
        Unit::Seconds,
        "The durable wait before a step's next attempt."
    );
    describe_counter!(
        "offboard_dead_letters_total",
        "Messages that could not become workflows, by EVT code."
    );
    describe_gauge!(
        "offboard_request_budget_limit_per_minute",
        "Each connection's request budget."
    );
    describe_counter!(
        "offboard_request_budget_used_total",
        "Requests sent on each connection's budget by this process."
    );
    describe_histogram!(
        "offboard_intake_lag_seconds",
        Unit::Seconds,
        "From an event's time to its workflows being stored."
    );
    describe_gauge!(
        "offboard_outbox_lag_seconds",
        Unit::Seconds,
        "Age of the oldest unpublished outbound event."
    );
    describe_gauge!(
        "offboard_outbox_pending",
        "Outbound events not yet published."
    );
    describe_gauge!("offboard_leases_held", "Workflows leased now, by worker.");
    describe_counter!(
        "offboard_readiness_checks_total",
        "Readiness checks of the database and the broker; /readyz answers from the latest."
    );
}

/// Sets the gauges from the database's figures and the configuration; `workers` are
/// those seen holding leases before (updated).
fn set_gauges(config: &Config, gauges: &Gauges, workers: &mut BTreeSet<String>) {
    let mut apps: Vec<&str> = config
        .connections
        .values()
        .map(|c| c.app.as_str())
        .collect();
    apps.sort_unstable();
    apps.dedup();
    for state in STATES {
        for app in &apps {
            metrics::gauge!("offboard_workflows", "state" => state, "app" => app.to_string())
                .set(0.0);
        }
    }
    for (state, app, n) in &gauges.workflows {
        metrics::gauge!("offboard_workflows", "state" => state.clone(), "app" => app.clone())
            .set(*n as f64);
    }
    for worker in workers.iter() {
        metrics::gauge!("offboard_leases_held", "worker" => worker.clone()).set(0.0);
    }
    for (worker, n) in &gauges.leases {
        metrics::gauge!("offboard_leases_held", "worker" => worker.clone()).set(*n as f64);
        workers.insert(worker.clone());
    }
    metrics::gauge!("offboard_outbox_lag_seconds").set(gauges.outbox_lag_secs);
    metrics::gauge!("offboard_outbox_pending").set(gauges.outbox_len as f64);
    for (name, c) in &config.connections {
        metrics::gauge!("offboard_request_budget_limit_per_minute", "connection" => name.clone())
            .set(f64::from(c.requests_per_minute));
    }
}

/// The Prometheus text for a scrape, after refreshing the gauges from `gauges`.
pub fn render(config: &Config, gauges: Result<Gauges, StoreError>) -> String {
    let handle = install();
    let mut workers = SCRAPE.lock().unwrap_or_else(|p| p.into_inner());
    match gauges {
        Ok(g) => set_gauges(config, &g, &mut workers),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the gauges from the database"),
    }
    handle.run_upkeep();
    handle.render()
}
