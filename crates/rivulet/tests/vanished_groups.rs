//! Groups that vanish (deleted outside rivulet) on a real `redis-server`: settlements
//! that meet the missing group, scheduled retries of a group nobody reads, and a
//! subscribe that finds the topic's history but not its group. Nothing is skipped and
//! nothing is lost (duplicates are allowed: a re-created group replays history).

#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rivulet::{Delivery, HandlerError, RetryPolicy};
use tokio::sync::Notify;

type Seen = Arc<Mutex<HashMap<u32, u32>>>;

fn handled(seen: &Seen) -> Vec<u32> {
    let mut v: Vec<u32> = seen.lock().expect("lock").keys().copied().collect();
    v.sort_unstable();
    v
}

/// Retries are scheduled, then the group is deleted while no process reads it, and more
/// messages arrive. When a process subscribes again, every message is handled: the
/// retries waited for the group (it is still registered), and the group is re-created at
/// the start of the retained history, not at `$`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deleted_while_nobody_reads_loses_neither_retries_nor_history() {
    let server = server().await;
    let url = server.url();
    let topic = "vg.offline";
    let bus = common::builder(backend(&url).await)
        .retry(
            RetryPolicy::default()
                .max_attempts(5)
                .backoff(Duration::from_millis(300)),
        )
        .build()
        .expect("bus");
    let failing = bus
        .subscribe(topic, "h", |_d: Delivery<u32>| async {
            Err::<(), _>(HandlerError::retryable("down"))
        })
        .group("g")
        .await
        .expect("subscribe");
    bus.publish_batch(topic, &[1u32, 2, 3])
        .await
        .expect("publish");
    wait_until("three retries scheduled", Duration::from_secs(5), || {
        failing.stats().retried >= 3
    })
    .await;
    failing.unsubscribe().await;
    let _: i64 = cmd(
        &url,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream(topic))
            .arg("g"),
    )
    .await;
    bus.publish_batch(topic, &[4u32, 5]).await.expect("publish");
    // Let the retries fall due and the retry mover run while the group is gone.
    wait_for(
        "the retries to leave the retry set",
        Duration::from_secs(5),
        || async {
            let n: i64 = cmd(&url, redis::cmd("ZCARD").arg(key(topic, "retry"))).await;
            n == 0
        },
    )
    .await;

    let seen: Seen = Arc::default();
    let s = seen.clone();
    let _ok = bus
        .subscribe(topic, "h", move |d: Delivery<u32>| {
            let s = s.clone();
            async move {
                *s.lock().expect("lock").entry(*d.payload()).or_default() += 1;
                Ok(())
            }
        })
        .group("g")
        .await
        .expect("subscribe again");
    wait_until("every message handled", Duration::from_secs(10), || {
        handled(&seen) == [1, 2, 3, 4, 5]
    })
    .await;
    assert_eq!(
        bus.dead_letters(topic)
            .expect("dead letters")
            .len()
            .await
            .expect("len"),
        0
    );
    bus.shutdown().await;
}

/// A handler is running when its group is deleted; its failure's retry meets the
/// missing group. The retry is scheduled all the same and runs once the reader has
/// re-created the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_settled_after_its_group_vanished_still_runs() {
    let server = server().await;
    let url = server.url();
    let topic = "vg.settle";
    let bus = bus(&url).await;
    let go = Arc::new(Notify::new());
    let seen: Seen = Arc::default();
    let (g, s) = (go.clone(), seen.clone());
    let sub = bus
        .subscribe(topic, "h", move |d: Delivery<u32>| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                if d.attempt() == 1 {
                    g.notified().await;
                    return Err(HandlerError::retryable("failed while the group vanished"));
                }
                *s.lock().expect("lock").entry(*d.payload()).or_default() += 1;
                Ok(())
            }
        })
        .group("g")
        .await
        .expect("subscribe");
    bus.publish(topic, &9u32).await.expect("publish");
    wait_for(
        "the handler to hold the entry",
        Duration::from_secs(5),
        || async { pending(&url, &stream(topic), "g").await == 1 },
    )
    .await;
    let _: i64 = cmd(
        &url,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream(topic))
            .arg("g"),
    )
    .await;
    go.notify_one();
    wait_until("the retry ran", Duration::from_secs(10), || {
        handled(&seen) == [9]
    })
    .await;
    assert_eq!(sub.stats().retried, 1);
    bus.shutdown().await;
}
