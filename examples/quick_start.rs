//! Quick start: the bus on the embedded memory backend, no Redis needed.
//!
//! Shows typed events published to a topic and two handlers that each get every event:
//! each handler has its own consumer group, derived from the app, the topic and the
//! handler's name (`shop:orders:order:created__send-receipt`, …). One handler fails once
//! (a retryable error) and succeeds on its retry.
//!
//! Run it with
//!
//! ```sh
//! cargo run -p rivulet --example quick_start
//! RUST_LOG=rivulet=debug cargo run -p rivulet --example quick_start   # with the library's logs
//! ```
//!
//! It exits with status 0 when both handlers handled every order and exactly one retry
//! happened; otherwise it prints what went wrong and exits with status 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rivulet::{Bus, Delivery, HandlerError, MemoryBackend, RetryPolicy};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The event, encoded as JSON on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct OrderCreated {
    id: u64,
    total_cents: u64,
}

const TOPIC: &str = "orders:order:created";
const ORDERS: u64 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The library logs through `tracing`; `RUST_LOG=rivulet=debug` shows what it does.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("rivulet=warn")),
        )
        .init();

    let bus = Bus::builder(MemoryBackend::new())
        .app("shop")
        // The default first backoff is 1 s; 100 ms keeps the example short.
        .retry(RetryPolicy::default().backoff(Duration::from_millis(100)))
        .build()?;

    // Handler 1: always succeeds.
    let receipts = bus
        .subscribe(
            TOPIC,
            "send-receipt",
            |d: Delivery<OrderCreated>| async move {
                let order = d.payload();
                println!(
                    "send-receipt:  order {} ({} cents) for tenant {}, attempt {}",
                    order.id,
                    order.total_cents,
                    d.header("tenant").unwrap_or("-"),
                    d.attempt()
                );
                Ok(())
            },
        )
        .await?;

    // Handler 2: the warehouse is unavailable the first time order 2 arrives. A
    // retryable error (what `?` produces too) schedules a retry with backoff; only this
    // handler's group sees the retry.
    let warehouse_down = Arc::new(AtomicBool::new(true));
    let stock = bus
        .subscribe(TOPIC, "reserve-stock", move |d: Delivery<OrderCreated>| {
            let warehouse_down = warehouse_down.clone();
            async move {
                let id = d.payload().id;
                if id == 2 && warehouse_down.swap(false, Ordering::SeqCst) {
                    println!("reserve-stock: order {id}, attempt {} failed", d.attempt());
                    return Err(HandlerError::retryable("warehouse unavailable"));
                }
                println!("reserve-stock: order {id}, attempt {}", d.attempt());
                Ok(())
            }
        })
        .await?;
    println!("groups: {} and {}", receipts.group(), stock.group());

    // A new group starts at new messages only, so subscribe before publishing (or use
    // `.start_from(StartFrom::Beginning)`).
    for id in 1..=ORDERS {
        let order = OrderCreated {
            id,
            total_cents: 1000 * id,
        };
        bus.publish(TOPIC, &order).header("tenant", "acme").await?;
    }

    let all_handled = wait_until(Duration::from_secs(10), || {
        receipts.stats().handled == ORDERS && stock.stats().handled == ORDERS
    })
    .await;
    bus.shutdown().await; // drains in-flight handlers

    let (r, s) = (receipts.stats(), stock.stats());
    println!(
        "send-receipt:  handled={} failed={} retried={}",
        r.handled, r.failed, r.retried
    );
    println!(
        "reserve-stock: handled={} failed={} retried={}",
        s.handled, s.failed, s.retried
    );
    let held = all_handled
        && r.handled == ORDERS
        && r.retried == 0
        && s.handled == ORDERS
        && s.failed == 1
        && s.retried == 1
        && s.dead_lettered == 0;
    if !held {
        return Err("expected 3 orders handled by each handler and exactly one retry".into());
    }
    println!("ok: every order handled by both handlers, one retry");
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
