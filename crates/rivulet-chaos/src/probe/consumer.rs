//! The consumer probe: subscriptions whose handler behaves as the run asks, logging
//! every event before the handler returns.
//!
//! A probe usually runs one bus with one subscription. It can also run several
//! subscriptions of its bus in the same explicit group ([`ConsumerConfig::subscriptions`]),
//! several buses on clones of one backend, shutting the first down while the others keep
//! consuming ([`ConsumerConfig::buses`]), a derived group (no `.group(..)`), or a
//! broadcast subscription ([`SubMode`]). Events carry the group the library delivered in.
//!
//! Behaviour is decided per message id (never per process), so a redelivery to another
//! consumer behaves the same way: sleep for a duration derived from the id and the seed,
//! fail the first attempts, fail always, fail permanently, panic, run long (optionally
//! blocking the runtime thread), or exit the process before or after logging success.
//! Exits happen once per id across the whole run (a marker file in the run directory),
//! so a message that crashed its consumer is handled normally when redelivered.
//!
//! The broken mode [`Behaviour::ack_before_handling_ms`] exists for the checker's
//! self-test: the handler returns `Ok` at once (so the entry is acknowledged) and logs
//! success later from a detached task, which a SIGKILL loses.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rivulet::{Bus, Delivery, Dispatch, HandlerError, RetryPolicy, StartFrom, Subscription};
use serde::{Deserialize, Serialize};

use super::{Connect, ConsumerEvent, Ev, JsonLines, Msg, hash64, now_ms};

/// Retry policy settings (mapped onto [`RetryPolicy`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Retry {
    pub(crate) max_attempts: u32,
    pub(crate) backoff_ms: u64,
    pub(crate) multiplier: f64,
    pub(crate) max_delay_ms: u64,
}

/// What the handler does, per message id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Behaviour {
    /// Work time range in ms, chosen per id from the seed.
    pub(crate) sleep_ms: [u64; 2],
    /// Ids whose handler runs for `long_ms`.
    pub(crate) long: BTreeSet<String>,
    pub(crate) long_ms: u64,
    /// Long handlers run long only from this attempt on (0 or 1: every attempt).
    pub(crate) long_from_attempt: u32,
    /// Long handlers block their thread (`std::thread::sleep`) instead of awaiting.
    pub(crate) long_blocking: bool,
    /// Fail (retryable) while `attempt <= n`.
    pub(crate) fail_times: BTreeMap<String, u32>,
    /// Fail (retryable) on every attempt.
    pub(crate) fail_always: BTreeSet<String>,
    /// Fail permanently (straight to the dead-letter queue).
    pub(crate) permanent: BTreeSet<String>,
    /// Panic while `attempt <= n`.
    pub(crate) panic_times: BTreeMap<String, u32>,
    /// Panic on every attempt.
    pub(crate) panic_always: BTreeSet<String>,
    /// Exit the process (once per id) before logging success.
    pub(crate) exit_before: BTreeSet<String>,
    /// Exit the process (once per id) after logging success, before returning.
    pub(crate) exit_after: BTreeSet<String>,
    /// Broken on purpose: return `Ok` at once and log success this much later.
    pub(crate) ack_before_handling_ms: Option<u64>,
}

/// How a probe subscribes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SubMode {
    /// `.group(<group>)`: an explicit group.
    #[default]
    Explicit,
    /// No `.group(..)`: the group the library derives from the handler name.
    Derived,
    /// `.broadcast()`: a group of this process alone, derived from the handler name.
    Broadcast,
}

/// What the harness asks of one consumer process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConsumerConfig {
    pub(crate) connect: Connect,
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) handler: String,
    pub(crate) consumer_name: String,
    pub(crate) concurrency: usize,
    pub(crate) sliding: bool,
    pub(crate) min_idle_ms: u64,
    pub(crate) reclaim_interval_ms: u64,
    pub(crate) block_timeout_ms: u64,
    pub(crate) drain_timeout_ms: u64,
    pub(crate) retry_mover_interval_ms: u64,
    pub(crate) retry: Retry,
    pub(crate) idempotent: bool,
    /// Run on a current-thread runtime (so a blocking handler starves the bus's tasks).
    pub(crate) current_thread: bool,
    pub(crate) behaviour: Behaviour,
    pub(crate) seed: u64,
    pub(crate) log: PathBuf,
    /// Where once-per-id exit markers live (shared by every consumer of the run).
    pub(crate) markers: PathBuf,
    /// How the subscriptions are made.
    #[serde(default)]
    pub(crate) mode: SubMode,
    /// Subscriptions per bus, all in `group` (explicit mode): handlers `<handler>`,
    /// `<handler>-1`, … (0 means 1).
    #[serde(default)]
    pub(crate) subscriptions: usize,
    /// Buses on clones of one backend, consumer names `<consumer_name>-b<i>` when more
    /// than one (0 means 1).
    #[serde(default)]
    pub(crate) buses: usize,
    /// Shut the first bus down this long after the probe is ready; the others keep
    /// consuming.
    #[serde(default)]
    pub(crate) close_first_bus_after_ms: Option<u64>,
    /// Idempotent by the payload's id (`idempotent_by`), not by message id: copies of a
    /// message published under different message ids share one key.
    #[serde(default)]
    pub(crate) idempotent_by_id: bool,
}

struct Ctx {
    cfg: ConsumerConfig,
    log: JsonLines,
    pid: u32,
}

impl Ctx {
    fn event(&self, ev: Ev, id: &str, attempt: u32, delivery_count: u64) {
        self.event_in(&self.cfg.group, ev, id, attempt, delivery_count);
    }

    fn event_in(&self, group: &str, ev: Ev, id: &str, attempt: u32, delivery_count: u64) {
        let record = ConsumerEvent {
            ev,
            id: id.to_owned(),
            t: now_ms(),
            pid: self.pid,
            group: group.to_owned(),
            attempt,
            delivery_count,
        };
        if let Err(e) = self.log.append(&record) {
            // Without its log the probe is useless to the checker: stop loudly.
            eprintln!("consumer: cannot write log: {e}");
            std::process::exit(70);
        }
    }

    /// Whether this is the first time any consumer of the run exits on `id`.
    fn first_exit(&self, id: &str) -> bool {
        first_marker(&self.cfg.markers, id)
    }

    fn work_ms(&self, id: &str) -> u64 {
        let [lo, hi] = self.cfg.behaviour.sleep_ms;
        let span = hi.saturating_sub(lo) + 1;
        lo + hash64(self.cfg.seed, id) % span
    }
}

/// Creates `<dir>/<id>`; `true` only for the caller that created it.
fn first_marker(dir: &Path, id: &str) -> bool {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(name))
        .is_ok()
}

async fn handle(ctx: Arc<Ctx>, d: Delivery<Msg>) -> Result<(), HandlerError> {
    let id = d.payload().id.clone();
    let (attempt, dc) = (d.attempt(), d.delivery_count());
    // The group the library delivered in (derived and broadcast groups are named by it).
    let group = d.group().to_string();
    let event = |ev: Ev| ctx.event_in(&group, ev, &id, attempt, dc);
    event(Ev::Start);
    let b = &ctx.cfg.behaviour;

    if let Some(delay) = b.ack_before_handling_ms {
        let later = ctx.clone();
        let (id, group) = (id.clone(), group.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            later.event_in(&group, Ev::Ok, &id, attempt, dc);
        });
        return Ok(());
    }

    if b.exit_before.contains(&id) && ctx.first_exit(&id) {
        event(Ev::Exit);
        std::process::exit(3);
    }

    if b.long.contains(&id) && attempt >= b.long_from_attempt {
        let d = Duration::from_millis(b.long_ms);
        if b.long_blocking {
            std::thread::sleep(d);
        } else {
            tokio::time::sleep(d).await;
        }
    } else {
        let ms = ctx.work_ms(&id);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    let panics =
        b.panic_always.contains(&id) || b.panic_times.get(&id).is_some_and(|n| attempt <= *n);
    if panics {
        event(Ev::Panic);
        panic!("chaos: planned panic on {id} attempt {attempt}");
    }
    if b.permanent.contains(&id) {
        event(Ev::Fail);
        return Err(HandlerError::permanent(format!(
            "chaos: planned permanent failure of {id}"
        )));
    }
    let fails = b.fail_always.contains(&id) || b.fail_times.get(&id).is_some_and(|n| attempt <= *n);
    if fails {
        event(Ev::Fail);
        return Err(HandlerError::retryable(format!(
            "chaos: planned failure of {id} attempt {attempt}"
        )));
    }

    event(Ev::Ok);
    if b.exit_after.contains(&id) && ctx.first_exit(&id) {
        event(Ev::Exit);
        std::process::exit(4);
    }
    Ok(())
}

/// A running probe: its buses, and its subscriptions (kept for as long as the probe runs).
struct Running {
    buses: Vec<Bus>,
    _subscriptions: Vec<Subscription>,
}

async fn start(ctx: &Arc<Ctx>) -> Result<Running, String> {
    let cfg = &ctx.cfg;
    let backend = cfg
        .connect
        .backend()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let policy = RetryPolicy::default()
        .max_attempts(cfg.retry.max_attempts)
        .backoff(Duration::from_millis(cfg.retry.backoff_ms))
        .multiplier(cfg.retry.multiplier)
        .max_delay(Duration::from_millis(cfg.retry.max_delay_ms));
    let ms = Duration::from_millis;
    let n_buses = cfg.buses.max(1);
    let mut running = Running {
        buses: Vec::new(),
        _subscriptions: Vec::new(),
    };
    for b in 0..n_buses {
        let name = if n_buses > 1 {
            format!("{}-b{b}", cfg.consumer_name)
        } else {
            cfg.consumer_name.clone()
        };
        // Every bus is built on a clone of the same backend.
        let mut builder = Bus::builder(backend.clone())
            .app("chaos")
            .consumer_name(name)
            .min_idle(ms(cfg.min_idle_ms))
            .reclaim_interval(ms(cfg.reclaim_interval_ms))
            .block_timeout(ms(cfg.block_timeout_ms))
            .drain_timeout(ms(cfg.drain_timeout_ms))
            .retry_mover_interval(ms(cfg.retry_mover_interval_ms))
            .max_payload(cfg.connect.max_payload)
            .retry(policy.clone());
        if cfg.idempotent || cfg.idempotent_by_id {
            builder = builder.idempotency(rivulet::RedisIdempotencyStore::from_backend(&backend));
        }
        let bus = match builder.build() {
            Ok(bus) => bus,
            Err(e) => {
                stop_all(&running.buses).await;
                return Err(format!("bus: {e}"));
            }
        };
        running.buses.push(bus.clone());
        for k in 0..cfg.subscriptions.max(1) {
            let handler = if k == 0 {
                cfg.handler.clone()
            } else {
                format!("{}-{k}", cfg.handler)
            };
            match subscribe(ctx, &bus, &handler).await {
                Ok(sub) => running._subscriptions.push(sub),
                Err(e) => {
                    stop_all(&running.buses).await;
                    return Err(e);
                }
            }
        }
    }
    Ok(running)
}

async fn subscribe(ctx: &Arc<Ctx>, bus: &Bus, handler: &str) -> Result<Subscription, String> {
    let cfg = &ctx.cfg;
    let handler_ctx = ctx.clone();
    let mut sub = bus
        .subscribe(&cfg.topic, handler, move |d: Delivery<Msg>| {
            handle(handler_ctx.clone(), d)
        })
        .concurrency(cfg.concurrency)
        .dispatch(if cfg.sliding {
            Dispatch::Sliding
        } else {
            Dispatch::Batch
        });
    sub = match cfg.mode {
        SubMode::Explicit => sub.group(&cfg.group).start_from(StartFrom::Beginning),
        SubMode::Derived => sub.start_from(StartFrom::Beginning),
        // A broadcast copy of a restarted process starts with what is new.
        SubMode::Broadcast => sub.broadcast().start_from(StartFrom::New),
    };
    if cfg.idempotent_by_id {
        sub = sub.idempotent_by(|m: &Msg| m.id.clone());
    } else if cfg.idempotent {
        sub = sub.idempotent();
    }
    sub.await.map_err(|e| format!("subscribe {handler}: {e}"))
}

/// Shuts every bus down at once (one bus's shutdown must not wait for another's).
async fn stop_all(buses: &[Bus]) {
    let mut set = tokio::task::JoinSet::new();
    for bus in buses {
        let bus = bus.clone();
        set.spawn(async move { bus.shutdown().await });
    }
    while set.join_next().await.is_some() {}
}

/// Runs the probe until SIGTERM or SIGINT, then drains and returns.
pub(crate) async fn run(cfg: ConsumerConfig) -> Result<(), String> {
    let log = JsonLines::open(&cfg.log).map_err(|e| format!("open log: {e}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("signal: {e}"))?;
    let deadline = now_ms() + cfg.connect.start_deadline_ms;
    let ctx = Arc::new(Ctx {
        cfg,
        log,
        pid: std::process::id(),
    });
    let running = loop {
        match start(&ctx).await {
            Ok(running) => break running,
            Err(e) if now_ms() < deadline => {
                tracing::warn!(error = %e, "consumer: start failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    ctx.event(Ev::Ready, "", 0, 0);
    if let (Some(after), [first, _, ..]) = (ctx.cfg.close_first_bus_after_ms, &running.buses[..]) {
        let (first, ctx) = (first.clone(), ctx.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            first.shutdown().await;
            ctx.event(Ev::Closed, "bus-0", 0, 0);
        });
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ctx.event(Ev::Term, "", 0, 0);
    stop_all(&running.buses).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_first_come() {
        let dir = std::env::temp_dir().join(format!("rivulet-chaos-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(first_marker(&dir, "m000001"));
        assert!(!first_marker(&dir, "m000001"));
        assert!(first_marker(&dir, "m000002"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
