//! Graceful shutdown: on SIGTERM or ctrl-c, finish what is in flight, then exit.
//!
//! A publisher adds a job every 300 ms; a slow handler (1 s per job, up to 4 at once)
//! works through them. When SIGTERM or SIGINT (ctrl-c) arrives, the program stops
//! publishing and calls `bus.shutdown().await`, which
//!
//! * stops reading new messages (a blocking read is interrupted at once),
//! * waits for the handlers in flight to finish and settles their outcomes (up to the
//!   drain timeout, 5 s by default; after it, `Delivery::cancellation` is cancelled and
//!   entries still running are left for another consumer to reclaim),
//! * hands entries read but not started back to the group, so another consumer takes
//!   them at once,
//! * closes the connections the bus owns.
//!
//! It then prints a summary line, `drained: handled=N in_flight_at_signal=M`.
//!
//! Run it on the memory backend, or on Redis when `RIVULET_REDIS_URL` is set, and stop it
//! with ctrl-c or `kill <pid>` (it prints its pid):
//!
//! ```sh
//! cargo run -p rivulet --example graceful_shutdown
//! RIVULET_REDIS_URL=redis://127.0.0.1:6379 cargo run -p rivulet --example graceful_shutdown
//! ```
//!
//! It exits with status 0 when every handler that started also finished (none was cut
//! off by the drain timeout); otherwise with status 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rivulet::{AnyBackend, Bus, Delivery, HandlerError, MemoryBackend, RedisBackend};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    id: u64,
}

const TOPIC: &str = "reports:report:requested";
const WORK: Duration = Duration::from_secs(1);
const PUBLISH_EVERY: Duration = Duration::from_millis(300);

/// What the handlers did, counted by the example itself.
#[derive(Debug, Default)]
struct Progress {
    started: AtomicU64,
    finished: AtomicU64,
    interrupted: AtomicU64,
}

impl Progress {
    /// Handlers started and not yet done. (Read the "done" counters first: a handler is
    /// counted as started before it can be counted as done.)
    fn in_flight(&self) -> u64 {
        let done = self.finished.load(Ordering::SeqCst) + self.interrupted.load(Ordering::SeqCst);
        self.started.load(Ordering::SeqCst).saturating_sub(done)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("rivulet=info")),
        )
        .init();

    let backend: AnyBackend = match std::env::var("RIVULET_REDIS_URL") {
        Ok(url) => {
            println!("backend: redis at {url}");
            RedisBackend::builder(url)
                .prefix("rivulet-examples")
                .await?
                .into()
        }
        Err(_) => {
            println!("backend: memory (set RIVULET_REDIS_URL to use Redis)");
            MemoryBackend::new().into()
        }
    };
    let bus = Bus::builder(backend).app("renderer").build()?;

    // Listen for the signals before doing any work: from here on SIGTERM and SIGINT no
    // longer kill the process, they start the shutdown.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let progress = Arc::new(Progress::default());
    let sub = {
        let progress = progress.clone();
        bus.subscribe(TOPIC, "render", move |d: Delivery<Job>| {
            let progress = progress.clone();
            async move {
                progress.started.fetch_add(1, Ordering::SeqCst);
                println!(
                    "handling job {} (in flight: {})",
                    d.payload().id,
                    progress.in_flight()
                );
                tokio::select! {
                    _ = tokio::time::sleep(WORK) => {}
                    // Cancelled only if the drain timeout passes while we are still busy.
                    _ = d.cancellation().cancelled() => {
                        progress.interrupted.fetch_add(1, Ordering::SeqCst);
                        return Err(HandlerError::retryable("interrupted by shutdown"));
                    }
                }
                progress.finished.fetch_add(1, Ordering::SeqCst);
                println!("finished job {}", d.payload().id);
                Ok(())
            }
        })
        .concurrency(4)
        .await?
    };

    let stop_publishing = CancellationToken::new();
    let publisher = tokio::spawn({
        let (bus, stop) = (bus.clone(), stop_publishing.clone());
        async move {
            let mut published = 0u64;
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match bus.publish(TOPIC, &Job { id: published + 1 }).await {
                    Ok(_) => published += 1,
                    Err(e) => eprintln!("publish failed: {e}"),
                }
            }
            published
        }
    });

    println!(
        "ready: pid {}, consuming {TOPIC}; stop with ctrl-c or `kill {}`",
        std::process::id(),
        std::process::id()
    );
    let which = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    let in_flight_at_signal = progress.in_flight();
    println!("{which} received with {in_flight_at_signal} handlers in flight; draining");

    stop_publishing.cancel();
    let published = publisher.await?;
    bus.shutdown().await;

    let stats = sub.stats();
    println!(
        "drained: handled={} in_flight_at_signal={in_flight_at_signal} published={published} interrupted={}",
        stats.handled,
        progress.interrupted.load(Ordering::SeqCst)
    );
    let finished = progress.finished.load(Ordering::SeqCst);
    if progress.in_flight() != 0
        || progress.interrupted.load(Ordering::SeqCst) != 0
        || stats.handled != finished
    {
        return Err("some handlers did not finish before the bus shut down".into());
    }
    Ok(())
}
