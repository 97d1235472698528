//! Broadcast subscriptions next to a regular consumer group, across two "processes".
//!
//! Two buses stand for two processes of the same service. Each subscribes
//!
//! * `refresh-cache` with `.broadcast()`: every process gets its own group (named after
//!   the process, removed on graceful shutdown), so **each bus gets every message** —
//!   right for per-process state such as an in-memory cache;
//! * `index-search` as a regular handler: both buses join the same derived group and
//!   compete for its messages, so **each message is handled once** between them.
//!
//! By default the two buses share one memory backend (clones of a `MemoryBackend` see
//! the same topics, as two processes would on Redis). Set `RIVULET_REDIS_URL` to run the
//! same on Redis, with one connection per bus:
//!
//! ```sh
//! cargo run -p rivulet --example broadcast
//! RIVULET_REDIS_URL=redis://127.0.0.1:6379 cargo run -p rivulet --example broadcast
//! ```
//!
//! It exits with status 0 when both broadcast handlers saw every message and the shared
//! group handled each message exactly once; otherwise with status 1.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{AnyBackend, Bus, Delivery, MemoryBackend, RedisBackend};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct ProductChanged {
    id: u64,
}

const TOPIC: &str = "products:product:changed";
const MESSAGES: u64 = 10;

/// Ids seen by one handler, with the bus that saw them.
type Seen = Arc<Mutex<Vec<(&'static str, u64)>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("rivulet=warn")),
        )
        .init();

    let backends: [AnyBackend; 2] = match std::env::var("RIVULET_REDIS_URL") {
        Ok(url) => {
            println!("backend: redis at {url}");
            let connect = || RedisBackend::builder(url.clone()).prefix("rivulet-examples");
            [connect().await?.into(), connect().await?.into()]
        }
        Err(_) => {
            println!("backend: memory (set RIVULET_REDIS_URL to use Redis)");
            let shared = MemoryBackend::new();
            [shared.clone().into(), shared.into()]
        }
    };

    let mut buses = Vec::new();
    let mut broadcast_seen = Vec::new();
    let shared_seen = Seen::default();
    for (name, backend) in ["bus-a", "bus-b"].into_iter().zip(backends) {
        // The same app on both buses, so the derived group names are the same.
        let bus = Bus::builder(backend).app("catalog").build()?;

        let seen = Seen::default();
        let cache = bus
            .subscribe(TOPIC, "refresh-cache", {
                let seen = seen.clone();
                move |d: Delivery<ProductChanged>| {
                    remember(&seen, name, d.payload().id);
                    async { Ok(()) }
                }
            })
            .broadcast()
            .await?;
        let search = bus
            .subscribe(TOPIC, "index-search", {
                let seen = shared_seen.clone();
                move |d: Delivery<ProductChanged>| {
                    remember(&seen, name, d.payload().id);
                    // A little work, one message at a time, so both buses get a share.
                    async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(())
                    }
                }
            })
            .concurrency(1)
            .await?;
        println!(
            "{name}: broadcast group {}, shared group {}",
            cache.group(),
            search.group()
        );
        broadcast_seen.push((name, seen));
        buses.push(bus);
    }

    let changes: Vec<ProductChanged> = (1..=MESSAGES).map(|id| ProductChanged { id }).collect();
    buses[0].publish_batch(TOPIC, &changes).await?;
    println!("bus-a: published {MESSAGES} messages");

    let done = wait_until(Duration::from_secs(10), || {
        ids(&shared_seen, None).len() >= MESSAGES as usize
            && broadcast_seen
                .iter()
                .all(|(_, seen)| ids(seen, None).len() >= MESSAGES as usize)
    })
    .await;
    for bus in &buses {
        bus.shutdown().await; // also removes this bus's broadcast group
    }

    let expected: Vec<u64> = (1..=MESSAGES).collect();
    let mut held = done;
    for (name, seen) in &broadcast_seen {
        let got = ids(seen, None);
        println!("refresh-cache on {name}: got {} messages", got.len());
        held &= got == expected;
    }
    let (a, b) = (
        ids(&shared_seen, Some("bus-a")).len(),
        ids(&shared_seen, Some("bus-b")).len(),
    );
    let shared = ids(&shared_seen, None);
    println!(
        "index-search: {} handlings in total (bus-a {a}, bus-b {b})",
        shared.len()
    );
    held &= shared == expected;
    if !held {
        return Err("a broadcast handler missed a message, or the shared group did not handle each message exactly once".into());
    }
    println!("ok: each bus got every broadcast; the shared group handled each message once");
    Ok(())
}

fn remember(seen: &Seen, bus: &'static str, id: u64) {
    if let Ok(mut seen) = seen.lock() {
        seen.push((bus, id));
    }
}

/// The ids `seen` holds (of one bus, or of all), sorted.
fn ids(seen: &Seen, bus: Option<&str>) -> Vec<u64> {
    let mut ids: Vec<u64> = match seen.lock() {
        Ok(seen) => seen
            .iter()
            .filter(|(b, _)| bus.is_none_or(|bus| bus == *b))
            .map(|(_, id)| *id)
            .collect(),
        Err(_) => Vec::new(),
    };
    ids.sort_unstable();
    ids
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
