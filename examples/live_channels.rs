//! Live channels: fire-and-forget publish/subscribe with glob patterns.
//!
//! Live channels are **lossy by design**: a message reaches the subscribers connected
//! when it is published, and no one else, ever. Use them for notifications that are
//! useless once stale (prices, presence, "something changed, refresh"); use topics when
//! a message must not be lost.
//!
//! The example publishes once with nobody listening (the message is gone), subscribes
//! with the patterns `prices.*` and `*.btc` (the glob rules of Redis `PSUBSCRIBE`: `*`,
//! `?`, `[abc]`, `[^a]`, `\` escapes), publishes on three channels and shows who got
//! what.
//!
//! It runs on the memory backend, or on Redis Pub/Sub when `RIVULET_REDIS_URL` is set:
//!
//! ```sh
//! cargo run -p rivulet --example live_channels
//! RIVULET_REDIS_URL=redis://127.0.0.1:6379 cargo run -p rivulet --example live_channels
//! ```
//!
//! It exits with status 0 when each subscriber got exactly the messages its pattern
//! matches; otherwise with status 1.

use std::time::Duration;

use rivulet::{AnyBackend, Bus, LiveSubscriber, MemoryBackend, RedisBackend};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    symbol: String,
    price_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("rivulet=warn")),
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
    let bus = Bus::builder(backend).build()?;
    let live = bus.live();

    // Nobody is subscribed yet: this message reaches no one and is not kept.
    let early = live.publish("prices.btc", &tick("btc", 1)).await?;
    println!("published prices.btc before anyone subscribed: {early} receivers");

    let mut prices = live.subscribe("prices.*").await?;
    let mut btc = live.subscribe("*.btc").await?;

    let mut receivers = Vec::new();
    for (channel, message) in [
        ("prices.btc", tick("btc", 6_500_000)),
        ("prices.eth", tick("eth", 320_000)),
        ("news.btc", tick("btc", 0)),
        ("news.sport", tick("-", 0)),
    ] {
        let n = live.publish(channel, &message).await?;
        println!("published {channel}: {n} receivers");
        receivers.push(n);
    }

    let got_prices = receive(&mut prices, "prices.*", 2).await?;
    let got_btc = receive(&mut btc, "*.btc", 2).await?;
    bus.shutdown().await;

    let held = early == 0
        && receivers == [2, 1, 1, 0]
        && got_prices == ["prices.btc", "prices.eth"]
        && got_btc == ["prices.btc", "news.btc"];
    if !held {
        return Err("a subscriber got a message its pattern does not match, or missed one".into());
    }
    println!("ok: each pattern got exactly the channels it matches");
    Ok(())
}

/// Receives `n` messages (5 s at most for each), then checks that nothing else is
/// waiting. Returns the channels they came from.
async fn receive(
    sub: &mut LiveSubscriber,
    pattern: &str,
    n: usize,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut channels = Vec::new();
    for _ in 0..n {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await else {
            return Err(format!("{pattern}: expected {n} messages, got {}", channels.len()).into());
        };
        let tick: Tick = serde_json::from_slice(&m.payload)?;
        println!(
            "{pattern}: {} at {} cents on {} (matched {})",
            tick.symbol, tick.price_cents, m.channel, m.pattern
        );
        channels.push(m.channel);
    }
    // Nothing else is waiting: the other channels do not match the pattern.
    if let Some(extra) = sub.try_next() {
        return Err(format!("{pattern}: unexpected message on {}", extra.channel).into());
    }
    Ok(channels)
}

fn tick(symbol: &str, price_cents: u64) -> Tick {
    Tick {
        symbol: symbol.into(),
        price_cents,
    }
}
