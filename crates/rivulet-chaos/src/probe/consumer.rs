//! The consumer probe: one subscription whose handler behaves as the run asks, logging
//! every event before the handler returns.
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

use rivulet::{Bus, Delivery, Dispatch, HandlerError, RetryPolicy, StartFrom};
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
}

struct Ctx {
    cfg: ConsumerConfig,
    log: JsonLines,
    pid: u32,
}

impl Ctx {
    fn event(&self, ev: Ev, id: &str, attempt: u32, delivery_count: u64) {
        let record = ConsumerEvent {
            ev,
            id: id.to_owned(),
            t: now_ms(),
            pid: self.pid,
            group: self.cfg.group.clone(),
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
    ctx.event(Ev::Start, &id, attempt, dc);
    let b = &ctx.cfg.behaviour;

    if let Some(delay) = b.ack_before_handling_ms {
        let later = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            later.event(Ev::Ok, &id, attempt, dc);
        });
        return Ok(());
    }

    if b.exit_before.contains(&id) && ctx.first_exit(&id) {
        ctx.event(Ev::Exit, &id, attempt, dc);
        std::process::exit(3);
    }

    if b.long.contains(&id) {
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
        ctx.event(Ev::Panic, &id, attempt, dc);
        panic!("chaos: planned panic on {id} attempt {attempt}");
    }
    if b.permanent.contains(&id) {
        ctx.event(Ev::Fail, &id, attempt, dc);
        return Err(HandlerError::permanent(format!(
            "chaos: planned permanent failure of {id}"
        )));
    }
    let fails = b.fail_always.contains(&id) || b.fail_times.get(&id).is_some_and(|n| attempt <= *n);
    if fails {
        ctx.event(Ev::Fail, &id, attempt, dc);
        return Err(HandlerError::retryable(format!(
            "chaos: planned failure of {id} attempt {attempt}"
        )));
    }

    ctx.event(Ev::Ok, &id, attempt, dc);
    if b.exit_after.contains(&id) && ctx.first_exit(&id) {
        ctx.event(Ev::Exit, &id, attempt, dc);
        std::process::exit(4);
    }
    Ok(())
}

async fn start(ctx: &Arc<Ctx>) -> Result<Bus, String> {
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
    let mut builder = Bus::builder(backend.clone())
        .app("chaos")
        .consumer_name(cfg.consumer_name.clone())
        .min_idle(ms(cfg.min_idle_ms))
        .reclaim_interval(ms(cfg.reclaim_interval_ms))
        .block_timeout(ms(cfg.block_timeout_ms))
        .drain_timeout(ms(cfg.drain_timeout_ms))
        .retry_mover_interval(ms(cfg.retry_mover_interval_ms))
        .max_payload(cfg.connect.max_payload)
        .retry(policy);
    if cfg.idempotent {
        builder = builder.idempotency(rivulet::RedisIdempotencyStore::from_backend(&backend));
    }
    let bus = builder.build().map_err(|e| format!("bus: {e}"))?;
    let handler_ctx = ctx.clone();
    let mut sub = bus
        .subscribe(&cfg.topic, &cfg.handler, move |d: Delivery<Msg>| {
            handle(handler_ctx.clone(), d)
        })
        .group(&cfg.group)
        .concurrency(cfg.concurrency)
        .dispatch(if cfg.sliding {
            Dispatch::Sliding
        } else {
            Dispatch::Batch
        })
        .start_from(StartFrom::Beginning);
    if cfg.idempotent {
        sub = sub.idempotent();
    }
    match sub.await {
        Ok(_subscription) => Ok(bus),
        Err(e) => {
            bus.shutdown().await;
            Err(format!("subscribe: {e}"))
        }
    }
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
    let bus = loop {
        match start(&ctx).await {
            Ok(bus) => break bus,
            Err(e) if now_ms() < deadline => {
                tracing::warn!(error = %e, "consumer: start failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    ctx.event(Ev::Ready, "", 0, 0);
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ctx.event(Ev::Term, "", 0, 0);
    bus.shutdown().await;
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
