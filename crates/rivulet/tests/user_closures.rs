//! The caller's closures run under the panic guard (B-RET-1, R-1): a panicking
//! idempotency key function is a handler panic, retried and then dead-lettered, and the
//! subscription keeps consuming. Memory and Redis.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rivulet::{
    Bus, DeadLetterReason, Delivery, MemoryBackend, MemoryIdempotencyStore, RetryPolicy,
};

async fn panicking_key_function(bus: Bus) {
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let sub = bus
        .subscribe("uc.keys", "h", move |_d: Delivery<u32>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .idempotent_by(|n: &u32| {
            assert!(*n != 13, "unlucky key");
            n.to_string()
        })
        .await
        .expect("subscribe");
    bus.publish("uc.keys", &13u32).await.expect("publish");
    bus.publish("uc.keys", &14u32).await.expect("publish");
    common::wait_until("message 14 is handled", Duration::from_secs(10), || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    let dead_letters = bus.dead_letters("uc.keys").expect("dead letters");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead_letters.len().await.expect("len") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "13 was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = dead_letters.list(None, 10).await.expect("list");
    assert_eq!(dead[0].reason, DeadLetterReason::Attempts);
    assert!(dead[0].error.contains("unlucky key"), "{}", dead[0].error);
    let stats = sub.stats();
    assert_eq!(stats.panics, 3, "{stats:?}");
    assert_eq!(stats.task_restarts, 0);
    assert!(sub.last_failure().is_none());
    assert!(sub.is_running());
    bus.shutdown().await;
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_function_on_memory_is_a_handler_panic() {
    let bus = Bus::builder(MemoryBackend::new())
        .retry(policy())
        .idempotency(MemoryIdempotencyStore::new())
        .retry_mover_interval(Duration::from_millis(20))
        .build()
        .expect("bus");
    panicking_key_function(bus).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_function_on_redis_is_a_handler_panic() {
    let server = common::server().await;
    let bus = common::builder(common::backend(&server.url()).await)
        .retry(policy())
        .idempotency(MemoryIdempotencyStore::new())
        .build()
        .expect("bus");
    panicking_key_function(bus).await;
}
