//! Retries and dead letters on Redis.
//!
//! * Order 1 meets a flaky payment provider: its first two attempts fail with a
//!   retryable error, the third succeeds (retries after 50 ms, then 100 ms).
//! * Order 13 is poison: every attempt fails, so after 3 attempts it lands in the topic's
//!   dead-letter queue with reason `attempts` and the last error.
//! * The example lists the dead letter, "deploys a fix" (flips a flag the handler reads)
//!   and replays the dead letter: it is removed from the queue and delivered again, as
//!   attempt 1, to the group that gave up on it, which now handles it.
//!
//! Timings are shortened for the example (backoff 50 ms, min idle 1 s); the defaults are
//! 1 s × 2ⁿ and 60 s.
//!
//! Run it against a local Redis (`redis-server` on port 6379, or set `RIVULET_REDIS_URL`):
//!
//! ```sh
//! cargo run -p rivulet --example redis_retries
//! RIVULET_REDIS_URL=redis://127.0.0.1:6380 cargo run -p rivulet --example redis_retries
//! ```
//!
//! Its keys live under the prefix `rivulet-examples`; it empties its topic's dead-letter
//! queue when it starts. It exits with status 0 when both orders were handled in the end
//! and the dead-letter queue is empty again; otherwise with status 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rivulet::{Bus, DeadLetterReason, Delivery, HandlerError, RedisBackend, RetryPolicy};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
}

const TOPIC: &str = "orders:order:placed";
const FLAKY: u64 = 1;
const POISON: u64 = 13;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("rivulet=warn")),
        )
        .init();

    let url =
        std::env::var("RIVULET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let backend = RedisBackend::builder(url)
        .prefix("rivulet-examples")
        .await?;
    let bus = Bus::builder(backend)
        .app("billing")
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(50)), // then 100 ms: the multiplier is 2
        )
        // How long an entry must be idle before another consumer may take it over (a
        // crashed consumer's messages are recovered after this), and how often to look.
        .min_idle(Duration::from_secs(1))
        .reclaim_interval(Duration::from_millis(500))
        .build()?;

    let dead_letters = bus.dead_letters(TOPIC)?;
    let stale = dead_letters.purge().await?;
    if stale > 0 {
        println!("removed {stale} dead letters left by an earlier run");
    }

    let fixed = Arc::new(AtomicBool::new(false));
    let charge = {
        let fixed = fixed.clone();
        bus.subscribe(TOPIC, "charge", move |d: Delivery<Order>| {
            let fixed = fixed.clone();
            async move {
                let (id, attempt) = (d.payload().id, d.attempt());
                if id == FLAKY && attempt < 3 {
                    println!("charge: order {id}, attempt {attempt}: provider timed out");
                    return Err(HandlerError::retryable("payment provider timed out"));
                }
                if id == POISON && !fixed.load(Ordering::SeqCst) {
                    println!("charge: order {id}, attempt {attempt}: cannot parse the card");
                    return Err(HandlerError::retryable("cannot parse the card number"));
                }
                println!("charge: order {id}, attempt {attempt}: charged");
                Ok(())
            }
        })
        .await?
    };

    bus.publish(TOPIC, &Order { id: FLAKY }).await?;
    bus.publish(TOPIC, &Order { id: POISON }).await?;

    // Order 1 succeeds on its third attempt; order 13 gives up after its third.
    let settled = wait_until(Duration::from_secs(15), || {
        let s = charge.stats();
        s.handled == 1 && s.dead_lettered == 1
    })
    .await;
    if !settled {
        return Err(format!(
            "order 1 not handled or order 13 not dead-lettered: {:?}",
            charge.stats()
        )
        .into());
    }

    let listed = dead_letters.list(None, 10).await?;
    for d in &listed {
        println!(
            "dead letter {}: message {} of group {}, reason {}, {} attempts, last error {:?}",
            d.id, d.message_id, d.group, d.reason, d.attempts, d.error
        );
    }
    let [dead] = listed.as_slice() else {
        return Err(format!("expected 1 dead letter, found {}", listed.len()).into());
    };
    if dead.reason != DeadLetterReason::Attempts || dead.attempts != 3 {
        return Err("expected reason `attempts` after 3 attempts".into());
    }

    println!("deploying the fix, then replaying the dead letter");
    fixed.store(true, Ordering::SeqCst);
    if !dead_letters.replay(&dead.id).await? {
        return Err("the dead letter vanished before its replay".into());
    }
    let replayed = wait_until(Duration::from_secs(10), || charge.stats().handled == 2).await;
    let left = dead_letters.len().await?;
    bus.shutdown().await;

    let s = charge.stats();
    println!(
        "charge: handled={} failed={} retried={} dead_lettered={}; dead letters left: {left}",
        s.handled, s.failed, s.retried, s.dead_lettered
    );
    // Failures: 2 (order 1) + 3 (order 13); retries: 2 + 2; the third failure of order 13
    // dead-letters it instead.
    if !(replayed && left == 0 && s.failed == 5 && s.retried == 4) {
        return Err("the replayed order was not handled, or the counts are off".into());
    }
    println!("ok: transient failure retried, poison dead-lettered, replayed and handled");
    Ok(())
}

/// Checks `done` every 10 ms until it holds (`true`) or `limit` passes (`false`).
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
