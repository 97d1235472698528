//! Metrics (O-OBS-1): what rivulet records through the [`metrics`] facade, a
//! [`Collector`] that samples the sizes living in the store, and, with the `prometheus`
//! feature, a Prometheus exporter (`Prometheus`).
//!
//! Counters and histograms are recorded where things happen (publish, handle, settle);
//! their handles bind to the recorder installed when a subscription or worker starts,
//! so install a recorder first. Gauges of what the store holds (stream length, lag,
//! pending, retry and dead-letter sizes, jobs by state) are sampled by the collector at
//! a bounded cost. `docs/operations.md` lists every metric with its type, labels and
//! meaning; [`describe`] registers the same descriptions with the recorder.
//!
//! ```no_run
//! # async fn f(backend: rivulet::RedisBackend) -> rivulet::Result<()> {
//! use std::time::Duration;
//! // (install a metrics recorder first, e.g. rivulet::metrics::Prometheus::install())
//! let collector = rivulet::metrics::Collector::new(backend)
//!     .every(Duration::from_secs(15))
//!     .spawn()?;
//! // … later
//! collector.stop().await;
//! # Ok(()) }
//! ```

mod collector;
#[cfg(feature = "prometheus")]
mod prometheus;

pub use collector::{
    Collector, CollectorHandle, DEFAULT_BATCH, DEFAULT_EVERY, DEFAULT_MAX_OBJECTS, Tick,
};
#[cfg(feature = "prometheus")]
pub use prometheus::{HANDLER_BUCKETS, Prometheus};

use ::metrics::Unit;

/// One metric rivulet records: its name, kind, labels and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The metric's name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it counts.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        help,
    }
}

const TG: &[&str] = &["topic", "group"];

/// Every metric rivulet records, in the order of `docs/operations.md`.
pub const ALL: &[MetricInfo] = &[
    // Bus: recorded as it happens.
    m(
        "rivulet_published_total",
        "counter",
        &["topic"],
        "Messages written to the topic by this process (a duplicate idempotent publish counts too).",
    ),
    m(
        "rivulet_handled_total",
        "counter",
        &["topic", "group", "outcome"],
        "Handler runs, by outcome: ok, retryable, permanent, panic, decode. Every attempt counts once.",
    ),
    m(
        "rivulet_handler_duration_seconds",
        "histogram",
        TG,
        "How long handler runs took.",
    ),
    m(
        "rivulet_retries_total",
        "counter",
        TG,
        "Retries scheduled after a failed attempt.",
    ),
    m(
        "rivulet_dead_lettered_total",
        "counter",
        &["topic", "group", "reason"],
        "Messages moved to the topic's dead-letter queue, by reason.",
    ),
    m(
        "rivulet_dropped_total",
        "counter",
        TG,
        "Messages given up on with dead-lettering off (dropped with an error log).",
    ),
    m(
        "rivulet_duplicates_total",
        "counter",
        TG,
        "Deliveries skipped because their idempotency key was already done.",
    ),
    m(
        "rivulet_reclaimed_total",
        "counter",
        TG,
        "Entries reclaimed from consumers idle past min_idle.",
    ),
    m(
        "rivulet_reclaim_missing_total",
        "counter",
        TG,
        "Pending entries found missing from the stream while reclaiming.",
    ),
    m(
        "rivulet_in_flight",
        "gauge",
        TG,
        "Entries this process holds: read or reclaimed and not yet settled.",
    ),
    m(
        "rivulet_task_restarts_total",
        "counter",
        TG,
        "Subscription tasks restarted by the supervisor after a panic.",
    ),
    m(
        "rivulet_group_recreated_total",
        "counter",
        TG,
        "Groups re-created after they vanished (deleted by an operator).",
    ),
    m(
        "rivulet_retries_group_gone_total",
        "counter",
        &["topic"],
        "Scheduled retries whose group no longer exists.",
    ),
    // Bus: sampled by the collector.
    m(
        "rivulet_stream_length",
        "gauge",
        &["topic"],
        "Entries the topic's stream retains (acknowledged ones included, until trimmed).",
    ),
    m(
        "rivulet_group_lag",
        "gauge",
        TG,
        "Entries of the topic's stream not yet delivered to the group.",
    ),
    m(
        "rivulet_group_pending",
        "gauge",
        TG,
        "Entries of the topic's stream delivered to the group and not yet acknowledged.",
    ),
    m(
        "rivulet_retries_scheduled",
        "gauge",
        &["topic"],
        "Retries waiting in the topic's retry set for their due time (all groups).",
    ),
    m(
        "rivulet_dead_letters",
        "gauge",
        &["topic"],
        "Entries in the topic's dead-letter queue.",
    ),
    // Jobs: recorded as it happens.
    m(
        "rivulet_jobs_added_total",
        "counter",
        &["queue"],
        "Jobs added (a dedup hit or an existing id does not count).",
    ),
    m(
        "rivulet_jobs_settled_total",
        "counter",
        &["queue", "state"],
        "Job runs settled, by the state the job went to: completed, failed, cancelled, \
         waiting or delayed (a retry or a release), lease_lost.",
    ),
    m(
        "rivulet_job_duration_seconds",
        "histogram",
        &["queue"],
        "How long job handlers ran.",
    ),
    m(
        "rivulet_job_wait_seconds",
        "histogram",
        &["queue"],
        "From when a job became ready (added, or its run-at time) to the start of its first attempt.",
    ),
    m(
        "rivulet_jobs_in_flight",
        "gauge",
        &["queue"],
        "Jobs this process is running.",
    ),
    m(
        "rivulet_jobs_stalled_total",
        "counter",
        &["queue"],
        "Jobs taken back because their lease expired.",
    ),
    m(
        "rivulet_job_leases_lost_total",
        "counter",
        &["queue"],
        "Runs whose lease was lost while they ran.",
    ),
    // Jobs: sampled by the collector.
    m(
        "rivulet_jobs",
        "gauge",
        &["queue", "state"],
        "Jobs in each state: waiting, delayed, active, waiting-children, and the retained \
         completed, failed and cancelled jobs.",
    ),
    // The collector itself.
    m(
        "rivulet_collector_ticks_total",
        "counter",
        &["result"],
        "Collector ticks, by result: ok or error.",
    ),
    m(
        "rivulet_collector_round_trips",
        "gauge",
        &[],
        "Round trips the collector's last tick made.",
    ),
    // Live channels.
    m(
        "rivulet_live_dropped_total",
        "counter",
        &[],
        "Live messages dropped because a subscriber fell behind.",
    ),
    m(
        "rivulet_live_reconnects_total",
        "counter",
        &[],
        "Live subscriptions reopened after a connection loss.",
    ),
];

/// Registers the description (and unit) of every metric in [`ALL`] with the installed
/// recorder, for `# HELP` lines. Idempotent.
pub fn describe() {
    for info in ALL {
        let unit = info.name.ends_with("_seconds").then_some(Unit::Seconds);
        match (info.kind, unit) {
            ("counter", _) => ::metrics::describe_counter!(info.name, info.help),
            ("gauge", _) => ::metrics::describe_gauge!(info.name, info.help),
            (_, Some(u)) => ::metrics::describe_histogram!(info.name, u, info.help),
            _ => ::metrics::describe_histogram!(info.name, info.help),
        }
    }
}
