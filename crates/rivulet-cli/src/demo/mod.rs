//! `rivulet demo`: an order pipeline that shows the bus's guarantees on a real run.
//!
//! Orders are published to one topic and handled by three groups:
//!
//! * `billing` (explicit group, sliding dispatch ×16): a share of orders fails once with a
//!   retryable error and succeeds on retry; poison orders fail permanently and end in the
//!   dead-letter queue;
//! * `shipping` (derived group, idempotent by order id): a share of orders is published
//!   twice, so it suppresses duplicates; each shipment is announced on the live channel
//!   `orders.shipped`;
//! * `audit` (broadcast): sees every message.
//!
//! Then every order gets an `invoice` job on the queue `invoices` (see [`jobs`]): large
//! invoices first by priority, a share delayed by 100–500 ms, the orders sent twice added
//! twice under one dedup key, the same transient and poison faults, and a couple of
//! invoices cancelled while delayed; a worker runs them at concurrency 16.
//!
//! Every number in the summary is counted from what happened in the run. The checks at
//! the end are the at-least-once promise: for every group, handled + dead-lettered equals
//! published; and, from the queue's own counts, every job added ended completed, failed
//! (the poison ones) or cancelled (the held ones). The exit code fails when either fails.

pub(crate) mod backend;
mod jobs;
mod metrics;
mod orchestration;
mod plan;
mod report;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rivulet::{
    Bus, Delivery, Dispatch, HandlerError, Live, RetryPolicy, Subscription, SubscriptionStats,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::backend::DemoBackend;
use self::plan::{Fault, Order, Plan};
use self::report::{
    Check, DeadLetterReport, GroupKind, GroupReport, Injected, LatencyRecorder, LiveReport,
    Summary, Totals, now_us, round2,
};
use crate::error::{CliError, EXIT_FAILURE};

/// The live channel shipping announces on, and the pattern the demo listens to.
const LIVE_CHANNEL: &str = "orders.shipped";
const LIVE_PATTERN: &str = "orders.*";
/// Orders per `publish_batch` round trip.
const BATCH: usize = 100;
/// The most messages the publisher runs ahead of the slowest group, so the latency
/// measures the pipeline rather than the length of the whole run's backlog.
const MAX_AHEAD: u64 = 1000;
/// How often progress is sampled.
const TICK: Duration = Duration::from_millis(10);
/// Poison orders unless `--poison` says otherwise.
const DEFAULT_POISON: u64 = 5;
/// Exit code after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Options of `rivulet demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How many orders to publish.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    orders: u64,
    /// How many orders are poison: billing refuses them permanently, so they end in the
    /// dead-letter queue [default: 5, or --orders if fewer].
    #[arg(long)]
    poison: Option<u64>,
    /// Seed of the failure and duplicate pattern [default: random, printed in the summary].
    #[arg(long)]
    seed: Option<u64>,
    /// Run on Redis: a URL (redis://host:6379/0), or `auto` to start a throw-away
    /// redis-server for the run.
    #[arg(long, value_name = "URL|auto")]
    redis: Option<String>,
    /// Print the summary as one JSON object on stdout (no progress bar).
    #[arg(long)]
    json: bool,
    /// No banner or progress bar; only the summary.
    #[arg(long)]
    quiet: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187) during the run,
    /// and after it until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs the demo; the exit code says whether the check passed.
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let poison = match args.poison {
        Some(n) if n > args.orders => {
            return Err(CliError::usage(format!(
                "--poison {n} is more than --orders {}",
                args.orders
            )));
        }
        Some(n) => n,
        None => DEFAULT_POISON.min(args.orders),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let backend = backend::open(args.redis.as_deref()).await?;
    let mut exposed = match args.metrics_listen {
        Some(addr) => Some(metrics::start(addr, &backend)?),
        None => None,
    };
    let plan = Plan::new(args.orders, poison, seed);
    let talk = !args.json && !args.quiet;
    if talk {
        eprintln!(
            "rivulet demo: {} orders ({} messages) on {}, seed {seed}",
            plan.orders,
            plan.len(),
            backend.label
        );
    }
    let bus = backend
        .bus()
        .app("demo")
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(20)),
        )
        .retry_mover_interval(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(5))
        .build()?;
    let invoices = jobs::JobsPlan::new(&plan, seed);
    let bars = talk && std::io::stderr().is_terminal();
    let progress = progress_bar(bars, plan.len() * 3, "settled");
    let result = pipeline(&bus, &backend, plan, seed, &progress).await;
    progress.finish_and_clear();
    bus.shutdown().await;
    let mut summary = result?;
    if !summary.interrupted {
        if talk {
            eprintln!(
                "rivulet demo: {} invoice jobs on queue {}",
                invoices.len(),
                jobs::QUEUE
            );
        }
        let orders = invoices.orders();
        let progress = progress_bar(bars, invoices.len(), "finished");
        let report = jobs::run(&backend, invoices, &progress).await;
        progress.finish_and_clear();
        match report? {
            Some(report) => summary.jobs = Some(report),
            None => summary.interrupted = true,
        }
        if !summary.interrupted {
            if talk {
                eprintln!(
                    "rivulet demo: receipts on queue {} (rate-limited, tenant groups), a \
                     settlement flow, a heartbeat scheduler",
                    orchestration::RECEIPTS
                );
            }
            match orchestration::run(&backend, &orders).await? {
                Some(report) => summary.orchestration = Some(report),
                None => summary.interrupted = true,
            }
        }
    }

    if let Some(exposed) = exposed.as_mut() {
        exposed.last_sample().await?;
    }
    if args.json {
        let json = serde_json::to_string(&summary)
            .map_err(|e| CliError::runtime(format!("encoding the summary: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", report::render_text(&summary));
    }
    if let Some(exposed) = exposed
        && !summary.interrupted
    {
        use std::io::Write;
        // The summary is out before the wait (a script may read it and then scrape).
        let _ = std::io::stdout().flush();
        exposed.serve_until_ctrl_c(talk).await?;
    }
    Ok(if summary.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if summary.check.ok
        && summary.jobs.as_ref().is_some_and(|j| j.check.ok)
        && summary.orchestration.as_ref().is_some_and(|o| o.check.ok)
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn progress_bar(visible: bool, len: u64, what: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} {{elapsed_precise}} [{{bar:24}}] {{pos}}/{{len}} {what}  {{wide_msg}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// What every handler shares: the latency histogram and the live channel.
#[derive(Debug)]
struct Probe {
    latency: LatencyRecorder,
    live: Live,
    live_published: AtomicU64,
    live_reached: AtomicU64,
    live_errors: AtomicU64,
}

impl Probe {
    /// Records publish → handle latency on first attempts (retries wait for backoff).
    fn observe(&self, d: &Delivery<Order>) {
        if d.attempt() == 1 {
            self.latency.record_since(d.payload().sent_at_us);
        }
    }
}

/// The notification shipping sends on the live channel.
#[derive(Debug, Serialize)]
struct Shipped<'a> {
    order_id: u64,
    customer: &'a str,
}

async fn billing(probe: Arc<Probe>, d: Delivery<Order>) -> Result<(), HandlerError> {
    probe.observe(&d);
    let order = d.payload();
    match order.fault {
        Some(Fault::Poison) => Err(HandlerError::permanent(format!(
            "order {}: unsupported currency (poison order, permanent failure)",
            order.id
        ))),
        Some(Fault::Transient) if d.attempt() == 1 => Err(HandlerError::retryable(format!(
            "order {}: payment gateway timed out (transient failure)",
            order.id
        ))),
        _ => Ok(()),
    }
}

async fn shipping(probe: Arc<Probe>, d: Delivery<Order>) -> Result<(), HandlerError> {
    probe.observe(&d);
    let order = d.payload();
    let note = Shipped {
        order_id: order.id,
        customer: &order.customer,
    };
    // The live channel is lossy by design: a failed notification does not fail the
    // shipment (retrying would ship twice); it is counted.
    match probe.live.publish(LIVE_CHANNEL, &note).await {
        Ok(reached) => {
            probe.live_published.fetch_add(1, Ordering::Relaxed);
            probe.live_reached.fetch_add(reached, Ordering::Relaxed);
        }
        Err(e) => {
            probe.live_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(order = order.id, error = %e, "live notification failed");
        }
    }
    // Let the live subscriber run: on the memory backend a busy consumer does not yield
    // between reads, and the subscriber woken by this publish would wait behind it
    // until its buffer overflowed.
    tokio::task::yield_now().await;
    Ok(())
}

async fn audit(probe: Arc<Probe>, d: Delivery<Order>) -> Result<(), HandlerError> {
    probe.observe(&d);
    Ok(())
}

/// One subscribed handler and how it was set up.
struct Handler {
    name: &'static str,
    kind: GroupKind,
    options: String,
    sub: Subscription,
}

impl Handler {
    /// Messages this group has settled: handled, skipped as duplicates, dead-lettered.
    fn settled(stats: &SubscriptionStats) -> u64 {
        stats.handled + stats.duplicates + stats.dead_lettered + stats.dropped
    }
}

async fn subscribe(bus: &Bus, topic: &str, probe: &Arc<Probe>) -> Result<Vec<Handler>, CliError> {
    let p = probe.clone();
    let billing_sub = bus
        .subscribe(topic, "billing", move |d| billing(p.clone(), d))
        .group("billing")
        .dispatch(Dispatch::Sliding)
        .concurrency(16)
        .await?;
    let p = probe.clone();
    let shipping_sub = bus
        .subscribe(topic, "shipping", move |d| shipping(p.clone(), d))
        .idempotent_by(|o: &Order| format!("shipped:{}", o.id))
        .concurrency(16)
        .await?;
    let p = probe.clone();
    let audit_sub = bus
        .subscribe(topic, "audit", move |d| audit(p.clone(), d))
        .broadcast()
        .concurrency(16)
        .await?;
    let describe = |s: &Subscription| {
        let mode = match s.dispatch() {
            Dispatch::Sliding => "sliding",
            _ => "batch",
        };
        format!("{mode} x{}", s.concurrency())
    };
    Ok(vec![
        Handler {
            name: "billing",
            kind: GroupKind::Explicit,
            options: format!("{}, 3 attempts, 20 ms backoff", describe(&billing_sub)),
            sub: billing_sub,
        },
        Handler {
            name: "shipping",
            kind: GroupKind::Derived,
            options: format!("{}, idempotent by order id", describe(&shipping_sub)),
            sub: shipping_sub,
        },
        Handler {
            name: "audit",
            kind: GroupKind::Broadcast,
            options: describe(&audit_sub),
            sub: audit_sub,
        },
    ])
}

/// Publishes the plan's messages in batches, stamping each batch with the time it is
/// handed to the bus, and staying at most [`MAX_AHEAD`] messages ahead of the slowest
/// group (`slowest` carries how many messages every group has settled).
fn spawn_publisher(
    bus: &Bus,
    topic: &str,
    messages: Vec<Order>,
    published: &Arc<AtomicU64>,
    mut slowest: watch::Receiver<u64>,
) -> JoinHandle<Result<(), rivulet::Error>> {
    let bus = bus.clone();
    let topic = topic.to_owned();
    let published = published.clone();
    tokio::spawn(async move {
        for chunk in messages.chunks(BATCH) {
            let sent = published.load(Ordering::Relaxed);
            while sent.saturating_sub(*slowest.borrow_and_update()) > MAX_AHEAD {
                if slowest.changed().await.is_err() {
                    // The run is over (deadline or Ctrl-C).
                    return Ok(());
                }
            }
            let sent_at_us = now_us();
            let batch: Vec<Order> = chunk
                .iter()
                .map(|o| Order {
                    sent_at_us,
                    ..o.clone()
                })
                .collect();
            let written = bus
                .publish_batch(&topic, &batch)
                .header("source", "rivulet-demo")
                .await?;
            published.fetch_add(written.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Counts messages on the live pattern until the bus shuts down.
async fn spawn_live_counter(bus: &Bus) -> Result<(JoinHandle<()>, Arc<AtomicU64>), CliError> {
    let mut live = bus.live().subscribe(LIVE_PATTERN).await?;
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let stop = bus.shutdown_token();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = live.next() => match msg {
                    Some(_) => { count.fetch_add(1, Ordering::Relaxed); }
                    None => break,
                },
            }
        }
    });
    Ok((task, received))
}

/// How the wait for completion ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Completed,
    TimedOut(Duration),
    Interrupted,
}

async fn pipeline(
    bus: &Bus,
    backend: &DemoBackend,
    mut plan: Plan,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Summary, CliError> {
    let topic = backend::TOPIC;
    let probe = Arc::new(Probe {
        latency: LatencyRecorder::new()?,
        live: bus.live(),
        live_published: AtomicU64::new(0),
        live_reached: AtomicU64::new(0),
        live_errors: AtomicU64::new(0),
    });
    let handlers = subscribe(bus, topic, &probe).await?;
    let (live_task, live_received) = spawn_live_counter(bus).await?;

    let planned = plan.len();
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (slowest_tx, slowest_rx) = watch::channel(0u64);
    let mut publisher = spawn_publisher(
        bus,
        topic,
        std::mem::take(&mut plan.messages),
        &published,
        slowest_rx,
    );
    let mut publishing = true;
    let limit = Duration::from_secs(60) + Duration::from_millis(2 * planned);
    let deadline = started + limit;
    let mut tick = tokio::time::interval(TICK);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let ending = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break Ending::Interrupted,
            joined = &mut publisher, if publishing => {
                publishing = false;
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(CliError::runtime(format!("publishing failed: {e}"))),
                    Err(e) => return Err(CliError::runtime(format!("the publisher stopped: {e}"))),
                }
            }
        }
        let sent = published.load(Ordering::Relaxed);
        let stats: Vec<SubscriptionStats> = handlers.iter().map(|h| h.sub.stats()).collect();
        let settled: u64 = stats.iter().map(Handler::settled).sum();
        progress.set_position(settled);
        slowest_tx.send_replace(stats.iter().map(Handler::settled).min().unwrap_or(0));
        progress.set_message(format!(
            "published {sent}/{planned}, retries {}, dead-lettered {}, duplicates {}",
            stats.iter().map(|s| s.retried).sum::<u64>(),
            stats.iter().map(|s| s.dead_lettered).sum::<u64>(),
            stats.iter().map(|s| s.duplicates).sum::<u64>(),
        ));
        if !publishing && stats.iter().all(|s| Handler::settled(s) >= sent) {
            break Ending::Completed;
        }
        if Instant::now() >= deadline {
            break Ending::TimedOut(limit);
        }
    };
    let elapsed = started.elapsed();
    if publishing {
        publisher.abort();
    }
    let published = published.load(Ordering::Relaxed);
    let stats: Vec<SubscriptionStats> = handlers.iter().map(|h| h.sub.stats()).collect();

    // Live notifications travel asynchronously; give the stragglers a moment (bounded).
    let live_expected = probe.live_reached.load(Ordering::Relaxed);
    let live_deadline = Instant::now() + Duration::from_secs(2);
    while ending != Ending::Interrupted
        && live_received.load(Ordering::Relaxed) < live_expected
        && Instant::now() < live_deadline
    {
        tokio::time::sleep(TICK).await;
    }
    live_task.abort();

    let dead_letter_queue = dead_letter_report(bus, topic).await?;

    let groups: Vec<GroupReport> = handlers
        .iter()
        .zip(&stats)
        .map(|(h, s)| {
            let handled = s.handled + s.duplicates;
            GroupReport {
                handler: h.name.to_owned(),
                group: h.sub.group().to_string(),
                kind: h.kind,
                options: h.options.clone(),
                handled,
                ran_ok: s.handled,
                duplicates_suppressed: s.duplicates,
                dead_lettered: s.dead_lettered,
                retries: s.retried,
                failed: s.failed,
                ok: handled + s.dead_lettered == published,
            }
        })
        .collect();
    let totals = Totals {
        handled: groups.iter().map(|g| g.handled).sum(),
        retries: groups.iter().map(|g| g.retries).sum(),
        dead_lettered: groups.iter().map(|g| g.dead_lettered).sum(),
        duplicates_suppressed: groups.iter().map(|g| g.duplicates_suppressed).sum(),
        failed: groups.iter().map(|g| g.failed).sum(),
    };
    let check = verdict(&ending, &groups, published);
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let deliveries: u64 = stats.iter().map(Handler::settled).sum();

    Ok(Summary {
        backend: bus.backend_name().to_owned(),
        target: backend.label.clone(),
        topic: topic.to_owned(),
        seed,
        orders: plan.orders,
        injected: Injected {
            poison: plan.poison,
            transient_orders: plan.transient_orders,
            transient_messages: plan.transient_messages,
            duplicate_orders: plan.duplicates,
        },
        published,
        groups,
        totals,
        dead_letter_queue,
        live: LiveReport {
            channel: LIVE_CHANNEL.to_owned(),
            pattern: LIVE_PATTERN.to_owned(),
            published: probe.live_published.load(Ordering::Relaxed),
            reached: probe.live_reached.load(Ordering::Relaxed),
            received: live_received.load(Ordering::Relaxed),
            errors: probe.live_errors.load(Ordering::Relaxed),
        },
        elapsed_ms: round2(elapsed.as_secs_f64() * 1000.0),
        messages_per_second: round2(published as f64 / secs),
        deliveries_per_second: round2(deliveries as f64 / secs),
        latency_ms: probe.latency.report(),
        completed: ending == Ending::Completed,
        interrupted: ending == Ending::Interrupted,
        check,
        jobs: None,
        orchestration: None,
    })
}

fn verdict(ending: &Ending, groups: &[GroupReport], published: u64) -> Check {
    const CLAIM: &str = "check: handled + dead-lettered = published for every group";
    let bad: Vec<String> = groups
        .iter()
        .filter(|g| !g.ok)
        .map(|g| {
            format!(
                "{} has {} + {} = {} of {published}",
                g.handler,
                g.handled,
                g.dead_lettered,
                g.handled + g.dead_lettered
            )
        })
        .collect();
    let mut why = match ending {
        Ending::Completed if bad.is_empty() => {
            return Check {
                ok: true,
                message: format!("{CLAIM}: OK"),
            };
        }
        Ending::Completed => Vec::new(),
        Ending::TimedOut(limit) => vec![format!(
            "timed out after {} s waiting for the groups",
            limit.as_secs()
        )],
        Ending::Interrupted => vec!["interrupted".to_owned()],
    };
    why.extend(bad);
    Check {
        ok: false,
        message: format!("{CLAIM}: FAILED ({})", why.join("; ")),
    }
}

/// Counts the topic's dead letters by reason.
async fn dead_letter_report(bus: &Bus, topic: &str) -> Result<DeadLetterReport, CliError> {
    const PAGE: usize = 500;
    let queue = bus.dead_letters(topic)?;
    let len = queue.len().await?;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = queue.list(after.as_ref(), PAGE).await?;
        for d in &page {
            *reasons.entry(d.reason.to_string()).or_default() += 1;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(DeadLetterReport { len, reasons })
}
