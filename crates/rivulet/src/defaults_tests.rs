//! Pins every row of the defaults table in the repository README (and
//! `shared/PRODUCT.md` §7), plus the defaults the rustdoc states elsewhere. Each
//! assertion fails if its default changes: change the code and the tables together.
//!
//! Values are read from what a bus built with no settings actually runs with
//! (`Bus::builder(..).build()`), as well as from the `Default` impls behind it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::bus::{Config, Dispatch};
use crate::name::TopicName;
use crate::retry::RetryPolicy;
use crate::topic::{StartFrom, TopicOptions};
use crate::{Bus, Delivery, MemoryBackend};

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const MIB: usize = 1024 * 1024;

/// The settings of a bus built with none given.
fn built() -> Config {
    let bus = Bus::builder(MemoryBackend::new()).build().expect("bus");
    bus.shared.cfg.clone()
}

#[tokio::test]
async fn retry_5_attempts_1s_doubling_dead_letter_on() {
    let p = RetryPolicy::default();
    assert_eq!(p.max_attempts, 5);
    assert_eq!(p.backoff, SECOND);
    assert_eq!(p.multiplier, 2.0);
    assert_eq!(p.max_delay, None);
    assert_eq!(p.jitter, 0.0);
    assert!(p.dead_letter);
    // The delays between the 5 attempts: 1 s × 2ⁿ⁻¹ after failed attempt n.
    let delays: Vec<Duration> = (1..p.max_attempts).map(|n| p.delay_after(n)).collect();
    assert_eq!(delays, [1, 2, 4, 8].map(Duration::from_secs));
    assert_eq!(Config::default().retry, p);
    assert_eq!(built().retry, p);
}

#[tokio::test]
async fn reclaim_interval_30s_min_idle_60s() {
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.reclaim_interval, 30 * SECOND);
        assert_eq!(cfg.min_idle, 60 * SECOND);
    }
}

#[tokio::test]
async fn blocking_read_timeout_5s() {
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.block_timeout, 5 * SECOND);
    }
}

#[tokio::test]
async fn drain_timeout_5s() {
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.drain_timeout, 5 * SECOND);
    }
}

#[tokio::test]
async fn retry_mover_wake_up_bound_1s() {
    for cfg in [Config::default(), built()] {
        // To be renamed `retry_mover_interval` with `BusBuilder::retry_mover_interval`.
        assert_eq!(cfg.retry_mover_interval, SECOND);
    }
}

#[tokio::test]
async fn dispatch_batch_concurrency_8_on_memory() {
    assert_eq!(Dispatch::default(), Dispatch::Batch);
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.dispatch, Dispatch::Batch);
        // No bus-wide concurrency: the backend's default applies.
        assert_eq!(cfg.concurrency, None);
    }
    assert_eq!(MemoryBackend::new().default_concurrency(), 8);

    let bus = Bus::memory().expect("bus");
    let sub = bus
        .subscribe("defaults.dispatch", "h", |_: Delivery<u32>| async {
            Ok(())
        })
        .await
        .expect("subscribe");
    assert_eq!(sub.dispatch(), Dispatch::Batch);
    assert_eq!(sub.concurrency(), 8);
    bus.shutdown().await;
}

#[tokio::test]
async fn max_payload_1_mib() {
    assert_eq!(Config::default().max_payload, MIB);
    assert_eq!(built().max_payload, MIB);
}

#[tokio::test]
async fn retention_safe_mode_about_100_000_entries() {
    let expected = TopicOptions {
        max_len: Some(100_000),
        max_age: None,
        safe: true,
        backpressure: None,
        backpressure_wait: None,
    };
    assert_eq!(TopicOptions::default(), expected);
    // A topic the bus was given no options for.
    let bus = Bus::memory().expect("bus");
    let topic = TopicName::new("defaults.retention").expect("name");
    assert_eq!(bus.shared.topic_options(&topic), expected);
}

#[tokio::test]
async fn idempotent_publish_window_24h_handler_ttl_24h() {
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.dedup_window, 24 * HOUR);
        assert_eq!(cfg.idempotency_ttl, 24 * HOUR);
    }
}

#[tokio::test]
async fn idempotency_claim_ttl_is_min_idle() {
    for cfg in [Config::default(), built()] {
        // Unset means the bus's `min_idle` (`bus/consumer.rs` resolves it). To be renamed
        // `idempotency_claim_ttl` with `BusBuilder::idempotency_claim_ttl`.
        assert_eq!(cfg.idempotency_claim_ttl, None);
    }
}

#[tokio::test]
async fn broadcast_heartbeat_ttl_30s() {
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.broadcast_ttl, 30 * SECOND);
    }
}

/// Defaults the rustdoc states but the README table does not list.
#[tokio::test]
async fn defaults_stated_in_the_rustdoc() {
    for cfg in [Config::default(), built()] {
        assert_eq!(cfg.app, "rivulet");
        assert_eq!(cfg.trim_interval, 60 * SECOND);
        assert_eq!(cfg.consumer_name, None); // `<hostname>:<pid>:<rand8>`
    }
    assert_eq!(StartFrom::default(), StartFrom::New);
}

/// A new group starts at new messages only; `StartFrom::Beginning` reads what the topic
/// holds (crate docs, "Where a new group starts").
#[tokio::test]
async fn a_new_group_starts_at_new_messages() {
    let bus = Bus::memory().expect("bus");
    let topic = "defaults.start";
    bus.publish(topic, &"before").await.expect("publish");

    let (new, beginning) = (Seen::default(), Seen::default());
    let _a = bus
        .subscribe(topic, "new-only", recorder(&new))
        .await
        .expect("subscribe");
    let _b = bus
        .subscribe(topic, "from-beginning", recorder(&beginning))
        .start_from(StartFrom::Beginning)
        .await
        .expect("subscribe");
    bus.publish(topic, &"after").await.expect("publish");

    let deadline = Instant::now() + 10 * SECOND;
    while seen(&new).is_empty() || seen(&beginning).len() < 2 {
        assert!(Instant::now() < deadline, "messages not handled in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bus.shutdown().await;
    assert_eq!(seen(&new), ["after"]);
    assert_eq!(seen(&beginning), ["before", "after"]);
}

type Seen = Arc<Mutex<Vec<String>>>;

fn recorder(
    seen: &Seen,
) -> impl Fn(Delivery<String>) -> std::future::Ready<Result<(), crate::HandlerError>>
+ Send
+ Sync
+ 'static {
    let seen = seen.clone();
    move |d| {
        seen.lock().expect("lock").push(d.into_payload());
        std::future::ready(Ok(()))
    }
}

fn seen(s: &Seen) -> Vec<String> {
    s.lock().expect("lock").clone()
}

#[cfg(feature = "redis")]
mod redis {
    use rivulet_testkit::RedisServer;

    use crate::backend::Backend;
    use crate::{Bus, Delivery, Dispatch, RedisBackend, RedisBackendBuilder};

    #[test]
    fn redis_backend_options() {
        // The timeouts and the prefix are private to the Redis backend; its builder's
        // `Debug` output is the window onto them.
        let builder = format!("{:?}", RedisBackendBuilder::new("redis://127.0.0.1:1"));
        for part in ["prefix: \"rivulet\"", "connect: 2s", "response: 10s"] {
            assert!(builder.contains(part), "{part} not in {builder}");
        }
    }

    #[tokio::test]
    async fn dispatch_batch_concurrency_1_on_redis() {
        let server = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .expect("spawn_blocking")
            .expect("redis-server");
        let backend = RedisBackend::connect(&server.url()).await.expect("connect");
        assert_eq!(backend.default_concurrency(), 1);
        assert_eq!(backend.prefix(), "rivulet");

        let bus = Bus::builder(backend).build().expect("bus");
        let sub = bus
            .subscribe("defaults.dispatch", "h", |_: Delivery<u32>| async {
                Ok(())
            })
            .await
            .expect("subscribe");
        assert_eq!(sub.dispatch(), Dispatch::Batch);
        assert_eq!(sub.concurrency(), 1);
        bus.shutdown().await;
    }
}

/// The jobs rows: lease / renewal / stalled check / `max_stalled`, worker concurrency,
/// block and drain timeouts, retention, events and logs, payload, attempts.
#[tokio::test]
async fn job_defaults() {
    use crate::jobs::{Keep, Queue};
    let q = Queue::new(MemoryBackend::new(), "defaults").expect("queue");
    let w = q.worker(|_job: crate::Job<u32>| async { Ok(()) });
    assert_eq!(
        (w.lease, w.renew_every, w.stall_check_every, w.max_stalled),
        (30 * SECOND, 10 * SECOND, 15 * SECOND, 1)
    );
    assert_eq!(
        (w.concurrency, w.block_timeout, w.drain_timeout),
        (1, 5 * SECOND, 5 * SECOND)
    );
    let s = &q.shared.settings;
    assert_eq!(s.keep_completed, Keep::new(1_000, 24 * HOUR));
    assert_eq!(s.keep_failed, Keep::new(10_000, 7 * 24 * HOUR));
    assert_eq!((s.events_cap, s.log_cap), (10_000, 100));
    assert_eq!(q.shared.max_payload, MIB);
    assert_eq!(q.shared.retry, RetryPolicy::default());
    assert_eq!(q.shared.timeout, None);
    assert_eq!(crate::jobs::MAX_PRIORITY, (1 << 21) - 1);
}
