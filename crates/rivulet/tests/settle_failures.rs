//! Settle scripts that fail halfway (R-2, B-RET-3/4) on a real `redis-server`: a side
//! key of the wrong type, or a full Redis (`maxmemory` with `noeviction`). The script
//! checks and writes before it acknowledges, so a failing settlement changes nothing:
//! the entry stays pending and is handled once the fault is repaired.

#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use rivulet::{Bus, Delivery, HandlerError};

/// A handler that fails its first attempt (retryable) and succeeds after.
async fn fail_once(bus: &Bus, topic: &str, runs: Arc<AtomicU32>) -> rivulet::Subscription {
    bus.subscribe(topic, "h", move |d: Delivery<u32>| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            if d.attempt() == 1 && d.delivery_count() == 1 {
                return Err(HandlerError::retryable("first attempt fails"));
            }
            Ok(())
        }
    })
    .group("g")
    .await
    .expect("subscribe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_set_of_the_wrong_type_leaves_the_entry_pending() {
    let server = server().await;
    let url = server.url();
    let topic = "sf.retry";
    let retry_set = key(topic, "retry");
    let _: () = cmd(&url, redis::cmd("SET").arg(&retry_set).arg("not a zset")).await;
    // A backoff long enough that the retry goes through the retry set (a retry already
    // due goes straight to the lane).
    let bus = common::builder(backend(&url).await)
        .retry(
            rivulet::RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_secs(2)),
        )
        .build()
        .expect("bus");
    let runs = Arc::new(AtomicU32::new(0));
    let sub = fail_once(&bus, topic, runs.clone()).await;
    bus.publish(topic, &1u32).await.expect("publish");
    wait_until("the first attempt failed", Duration::from_secs(5), || {
        sub.stats().failed == 1
    })
    .await;
    // The retry could not be scheduled: the entry must still be pending, not acked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pending(&url, &stream(topic), "g").await,
        1,
        "acknowledged and lost"
    );
    let _: i64 = cmd(&url, redis::cmd("DEL").arg(&retry_set)).await;
    wait_until("handled after the repair", Duration::from_secs(10), || {
        sub.stats().handled == 1
    })
    .await;
    // The holder applied the retry again once the key was repaired: nobody reclaimed
    // the entry, and the handler ran twice (the failing attempt and its retry).
    assert_eq!(sub.stats().reclaimed, 0);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_of_the_wrong_type_leaves_the_entry_pending() {
    let server = server().await;
    let url = server.url();
    let topic = "sf.dead";
    let dead_letters = key(topic, "dead-letters");
    let _: () = cmd(
        &url,
        redis::cmd("SET").arg(&dead_letters).arg("not a stream"),
    )
    .await;
    let bus = bus(&url).await;
    let sub = bus
        .subscribe(topic, "h", |_d: Delivery<u32>| async {
            Err::<(), _>(HandlerError::permanent("poison"))
        })
        .group("g")
        .await
        .expect("subscribe");
    bus.publish(topic, &1u32).await.expect("publish");
    wait_until("the handler failed", Duration::from_secs(5), || {
        sub.stats().failed >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pending(&url, &stream(topic), "g").await,
        1,
        "acknowledged and lost"
    );
    assert_eq!(sub.stats().dead_lettered, 0);
    let _: i64 = cmd(&url, redis::cmd("DEL").arg(&dead_letters)).await;
    let dead_letters = bus.dead_letters(topic).expect("dead letters");
    wait_for(
        "the dead letter after the repair",
        Duration::from_secs(10),
        || async { dead_letters.len().await.expect("len") == 1 },
    )
    .await;
    assert_eq!(pending(&url, &stream(topic), "g").await, 0);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_during_settlement_loses_nothing() {
    let server = server().await;
    let url = server.url();
    let topic = "sf.full";
    let bus = bus(&url).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let (g, r) = (gate.clone(), runs.clone());
    let sub = bus
        .subscribe(topic, "h", move |d: Delivery<u32>| {
            let (g, r) = (g.clone(), r.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                if d.attempt() == 1 && d.delivery_count() == 1 {
                    g.notified().await;
                    return Err(HandlerError::retryable("fails while Redis is full"));
                }
                Ok(())
            }
        })
        .group("g")
        .await
        .expect("subscribe");
    bus.publish(topic, &1u32).await.expect("publish");
    wait_until(
        "the handler holds the entry",
        Duration::from_secs(5),
        || runs.load(Ordering::SeqCst) == 1,
    )
    .await;
    let _: () = cmd(
        &url,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    )
    .await;
    let _: () = cmd(
        &url,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"),
    )
    .await;
    gate.notify_one();
    wait_until("the first attempt failed", Duration::from_secs(5), || {
        sub.stats().failed == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pending(&url, &stream(topic), "g").await,
        1,
        "acknowledged and lost"
    );
    let _: () = cmd(
        &url,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"),
    )
    .await;
    wait_until(
        "handled once Redis has room",
        Duration::from_secs(10),
        || sub.stats().handled == 1,
    )
    .await;
    bus.shutdown().await;
}
