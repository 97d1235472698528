//! The demo's summary: what happened, as a table for people or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::jobs::JobsReport;
use super::orchestration::OrchestrationReport;
use crate::error::CliError;

/// Everything the demo measured. Serialized as is for `--json`.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// "memory" or "redis".
    pub(crate) backend: String,
    /// The backend in more words: which server, which key prefix (passwords redacted).
    pub(crate) target: String,
    pub(crate) topic: String,
    pub(crate) seed: u64,
    pub(crate) orders: u64,
    pub(crate) injected: Injected,
    pub(crate) published: u64,
    pub(crate) groups: Vec<GroupReport>,
    pub(crate) totals: Totals,
    pub(crate) dead_letter_queue: DeadLetterReport,
    pub(crate) live: LiveReport,
    pub(crate) elapsed_ms: f64,
    /// Published messages per second, from the first publish until every group settled
    /// every message.
    pub(crate) messages_per_second: f64,
    /// Settled deliveries (all groups) per second over the same time.
    pub(crate) deliveries_per_second: f64,
    pub(crate) latency_ms: LatencyReport,
    /// Whether every group settled every message before the deadline.
    pub(crate) completed: bool,
    pub(crate) interrupted: bool,
    pub(crate) check: Check,
    /// The jobs pipeline that runs after the bus's (`None` when interrupted before it).
    pub(crate) jobs: Option<JobsReport>,
    /// Rate limits, tenant groups, a flow and a scheduler, after the jobs pipeline
    /// (`None` when interrupted before it).
    pub(crate) orchestration: Option<OrchestrationReport>,
}

/// What the demo put into the workload on purpose.
#[derive(Debug, Serialize)]
pub(crate) struct Injected {
    pub(crate) poison: u64,
    pub(crate) transient_orders: u64,
    pub(crate) transient_messages: u64,
    pub(crate) duplicate_orders: u64,
}

/// How a group was subscribed.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupKind {
    /// `.group("…")`: competing consumers under a chosen name.
    Explicit,
    /// No group given: `<app>:<topic>__<handler>`.
    Derived,
    /// One group per process.
    Broadcast,
}

impl GroupKind {
    fn as_str(self) -> &'static str {
        match self {
            GroupKind::Explicit => "explicit group",
            GroupKind::Derived => "derived group",
            GroupKind::Broadcast => "broadcast",
        }
    }
}

/// One group's outcome, from its subscription's counters.
#[derive(Debug, Serialize)]
pub(crate) struct GroupReport {
    pub(crate) handler: String,
    pub(crate) group: String,
    pub(crate) kind: GroupKind,
    pub(crate) options: String,
    /// Settled successfully: handler runs that succeeded plus duplicates suppressed.
    pub(crate) handled: u64,
    /// Handler runs that succeeded.
    pub(crate) ran_ok: u64,
    /// Deliveries an idempotent handler skipped because the key was already done.
    pub(crate) duplicates_suppressed: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) retries: u64,
    /// Handler runs that failed (errors and panics), whatever happened next.
    pub(crate) failed: u64,
    /// `handled + dead_lettered == published`.
    pub(crate) ok: bool,
}

/// Sums over the groups.
#[derive(Debug, Serialize)]
pub(crate) struct Totals {
    pub(crate) handled: u64,
    pub(crate) retries: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) duplicates_suppressed: u64,
    pub(crate) failed: u64,
}

/// The topic's dead-letter queue after the run.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetterReport {
    pub(crate) len: u64,
    pub(crate) reasons: BTreeMap<String, u64>,
}

/// The live channel shipping notifies on (lossy by design, so not part of the check).
#[derive(Debug, Serialize)]
pub(crate) struct LiveReport {
    pub(crate) channel: String,
    pub(crate) pattern: String,
    /// Notifications published.
    pub(crate) published: u64,
    /// Subscribers reached, as the backend reported at publish time.
    pub(crate) reached: u64,
    /// Notifications the demo's subscriber received.
    pub(crate) received: u64,
    /// Notifications whose publish failed.
    pub(crate) errors: u64,
}

/// Publish → handler-start latency of first attempts, all groups.
#[derive(Debug, Serialize)]
pub(crate) struct LatencyReport {
    pub(crate) samples: u64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// The verdict: every group handled or dead-lettered every published message.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) ok: bool,
    pub(crate) message: String,
}

/// Microseconds since the Unix epoch, by the wall clock.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Records publish → handle latencies in microseconds.
#[derive(Debug)]
pub(crate) struct LatencyRecorder {
    histogram: Mutex<Histogram<u64>>,
}

impl LatencyRecorder {
    pub(crate) fn new() -> Result<Self, CliError> {
        // 1 µs to 1 h, 3 significant digits.
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| CliError::runtime(format!("latency histogram: {e}")))?;
        Ok(LatencyRecorder {
            histogram: Mutex::new(histogram),
        })
    }

    /// Records the time from `sent_at_us` until now.
    pub(crate) fn record_since(&self, sent_at_us: u64) {
        let micros = now_us().saturating_sub(sent_at_us).max(1);
        let mut h = match self.histogram.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        h.saturating_record(micros);
    }

    pub(crate) fn report(&self) -> LatencyReport {
        let h = match self.histogram.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let ms = |us: u64| round2(us as f64 / 1000.0);
        if h.is_empty() {
            return LatencyReport {
                samples: 0,
                p50: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        LatencyReport {
            samples: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The summary as a table for people.
pub(crate) fn render_text(s: &Summary) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut out, s);
    out
}

fn write_text(out: &mut String, s: &Summary) -> std::fmt::Result {
    let i = &s.injected;
    writeln!(out, "rivulet demo")?;
    let row = |out: &mut String, k: &str, v: String| writeln!(out, "  {k:<22}{v}");
    row(out, "backend", s.target.clone())?;
    row(out, "topic", s.topic.clone())?;
    row(out, "seed", s.seed.to_string())?;
    row(
        out,
        "orders",
        format!(
            "{} ({} poison, {} fail once, {} sent twice)",
            s.orders, i.poison, i.transient_orders, i.duplicate_orders
        ),
    )?;
    row(out, "published", format!("{} messages", s.published))?;
    row(out, "elapsed", format!("{:.3} s", s.elapsed_ms / 1000.0))?;
    row(
        out,
        "throughput",
        format!(
            "{:.0} msgs/s published and settled ({:.0} deliveries/s over {} groups)",
            s.messages_per_second,
            s.deliveries_per_second,
            s.groups.len()
        ),
    )?;
    let l = &s.latency_ms;
    row(
        out,
        "publish -> handle",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} first deliveries)",
            l.p50, l.p99, l.max, l.samples
        ),
    )?;
    let live = &s.live;
    row(
        out,
        "live channel",
        format!(
            "{}: {} published, {} received by {:?}{}",
            live.channel,
            live.published,
            live.received,
            live.pattern,
            if live.errors > 0 {
                format!(", {} publish errors", live.errors)
            } else {
                String::new()
            }
        ),
    )?;
    let reasons: Vec<String> = s
        .dead_letter_queue
        .reasons
        .iter()
        .map(|(r, n)| format!("{r}: {n}"))
        .collect();
    row(
        out,
        "dead-letter queue",
        if reasons.is_empty() {
            s.dead_letter_queue.len.to_string()
        } else {
            format!("{} ({})", s.dead_letter_queue.len, reasons.join(", "))
        },
    )?;
    writeln!(out)?;

    writeln!(
        out,
        "  {:<10}{:>9}{:>12}{:>15}{:>9}   handled + dead-lettered",
        "handler", "handled", "duplicates", "dead-lettered", "retries"
    )?;
    for g in &s.groups {
        writeln!(
            out,
            "  {:<10}{:>9}{:>12}{:>15}{:>9}   {} / {} {}",
            g.handler,
            g.handled,
            g.duplicates_suppressed,
            g.dead_lettered,
            g.retries,
            g.handled + g.dead_lettered,
            s.published,
            if g.ok { "ok" } else { "MISMATCH" }
        )?;
    }
    let t = &s.totals;
    writeln!(
        out,
        "  {:<10}{:>9}{:>12}{:>15}{:>9}",
        "total", t.handled, t.duplicates_suppressed, t.dead_lettered, t.retries
    )?;
    let copies = i.transient_messages.saturating_sub(i.transient_orders);
    writeln!(
        out,
        "  (handled includes duplicates suppressed; {} transient failures injected{}, {} poison)",
        i.transient_messages,
        if copies > 0 {
            format!(
                " ({} orders + {copies} duplicate copies)",
                i.transient_orders
            )
        } else {
            String::new()
        },
        i.poison
    )?;
    writeln!(out)?;
    writeln!(out, "  groups")?;
    for g in &s.groups {
        writeln!(
            out,
            "    {:<10}{} [{}, {}]",
            g.handler,
            g.group,
            g.kind.as_str(),
            g.options
        )?;
    }
    if let Some(j) = &s.jobs {
        writeln!(out)?;
        write_jobs(out, j)?;
    }
    if let Some(o) = &s.orchestration {
        writeln!(out)?;
        write_orchestration(out, o)?;
    }
    writeln!(out)?;
    writeln!(out, "{}", s.check.message)?;
    if let Some(j) = &s.jobs {
        writeln!(out, "{}", j.check.message)?;
    }
    if let Some(o) = &s.orchestration {
        writeln!(out, "{}", o.check.message)?;
    }
    Ok(())
}

fn write_orchestration(out: &mut String, o: &OrchestrationReport) -> std::fmt::Result {
    let row = |out: &mut String, k: &str, v: String| writeln!(out, "    {k:<20}{v}");
    writeln!(out, "  orchestration")?;
    let r = &o.receipts;
    row(
        out,
        "rate limit",
        format!(
            "queue {}: {} receipts, at most {} started in any second (limit {}/s)",
            r.queue, r.jobs, r.max_starts_in_a_second, r.rate_limit_per_second
        ),
    )?;
    let tenants: Vec<String> = r
        .tenants
        .iter()
        .map(|t| {
            format!(
                "{} {} jobs, max {} running, done at {:.0} ms",
                t.tenant, t.jobs, t.max_running, t.finished_ms
            )
        })
        .collect();
    row(
        out,
        "tenant groups",
        format!("cap {} each, taking turns", r.tenant_cap),
    )?;
    for t in tenants {
        writeln!(out, "      {t}")?;
    }
    let f = &o.flow;
    row(
        out,
        "flow",
        format!(
            "a settlement on {} waited for {} statements on {}; it ran {} time(s), read {} \
             results, total {} cents (expected {})",
            f.parent_queue,
            f.children,
            f.children_queue,
            f.parent_runs,
            f.results_seen,
            f.total_cents,
            f.expected_cents
        ),
    )?;
    let sc = &o.scheduler;
    row(
        out,
        "scheduler",
        format!(
            "every {} ms on {}: {} jobs, {} distinct ticks",
            sc.every_ms, sc.queue, sc.jobs, sc.distinct_ticks
        ),
    )?;
    row(out, "elapsed", format!("{:.3} s", o.elapsed_ms / 1000.0))
}

fn write_jobs(out: &mut String, j: &JobsReport) -> std::fmt::Result {
    let row = |out: &mut String, k: &str, v: String| writeln!(out, "    {k:<20}{v}");
    let r = &j.run;
    writeln!(out, "  jobs (queue {}, worker {})", j.queue, r.worker)?;
    let i = &r.injected;
    row(
        out,
        "invoices",
        format!(
            "{} ({} high priority, {} delayed 100-500 ms, {} fail once, {} poison, {} cancelled while delayed)",
            i.invoices, i.high_priority, i.delayed, i.transient, i.poison, i.cancelled
        ),
    )?;
    row(
        out,
        "adds",
        format!(
            "{} added, {} duplicates turned away by their dedup key ({} orders sent twice)",
            r.added, r.duplicates, i.duplicates
        ),
    )?;
    let c = &r.counts;
    row(
        out,
        "queue counts",
        format!(
            "completed {}, failed {}, cancelled {}; waiting {}, delayed {}, active {}",
            c.completed, c.failed, c.cancelled, c.waiting, c.delayed, c.active
        ),
    )?;
    let w = &r.worker_stats;
    row(
        out,
        "worker",
        format!(
            "{} completed, {} retried, {} failed, {} cancelled, {} leases lost",
            w.completed, w.retried, w.failed, w.cancelled, w.lease_lost
        ),
    )?;
    row(
        out,
        "elapsed",
        format!(
            "{:.3} s ({:.0} jobs/s finished, delays included)",
            r.elapsed_ms / 1000.0,
            r.jobs_per_second
        ),
    )
}
