//! Broadcast groups next to regular groups with similar names, and orphan clean-up on
//! every host (B-SUB-3), on a real `redis-server`.

#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use rivulet::{Delivery, HandlerError};

/// A broadcast handler `cache` has the base group `t:bc.names__cache`; a regular handler
/// named `cache__warm` derives `t:bc.names__cache__warm`, which looks like one of its
/// broadcast groups. Orphan clean-up (run by every broadcast subscribe) must never
/// destroy it, not even while its handler runs and then schedules a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_subscribe_never_destroys_a_regular_group_with_a_similar_name() {
    let server = server().await;
    let url = server.url();
    let topic = "bc.names";
    let regular_bus = bus(&url).await;
    let (runs, handled) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (r, h, g) = (runs.clone(), handled.clone(), gate.clone());
    let warm = regular_bus
        .subscribe(topic, "cache__warm", move |_d: Delivery<u32>| {
            let (r, h, g) = (r.clone(), h.clone(), g.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    g.notified().await;
                    return Err(HandlerError::retryable("cold cache"));
                }
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    assert_eq!(warm.group().as_str(), "t:bc.names__cache__warm");
    regular_bus.publish(topic, &1u32).await.expect("publish");
    wait_until("the first attempt runs", Duration::from_secs(5), || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;

    // Another process subscribes the broadcast handler `cache`, which cleans orphans,
    // while the regular handler is still running.
    let broadcast_bus = bus(&url).await;
    let copy = broadcast_bus
        .subscribe(topic, "cache", |_d: Delivery<u32>| async { Ok(()) })
        .broadcast()
        .await
        .expect("broadcast subscribe");
    assert!(copy.group().as_str().starts_with("t:bc.names__cache__"));
    gate.notify_one();

    wait_until("the retry ran", Duration::from_secs(10), || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    let dead = regular_bus
        .dead_letters(topic)
        .expect("dead letters")
        .len()
        .await
        .expect("len");
    assert_eq!(dead, 0);
    broadcast_bus.shutdown().await;
    regular_bus.shutdown().await;
}

/// A broadcast group whose process died is removed by the housekeeping of any process
/// using the topic, even one that only consumes it with a regular group: a decommissioned
/// broadcast handler cannot pin retention for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_broadcast_groups_are_removed_by_any_process_using_the_topic() {
    let server = server().await;
    let url = server.url();
    let topic = "bc.orphans";
    // What a crashed process leaves: its registered broadcast group, no heartbeat.
    let orphan = "t:bc.orphans__gone__deadhost_1_cafebabe";
    let _: () = cmd(
        &url,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream(topic))
            .arg(orphan)
            .arg("$")
            .arg("MKSTREAM"),
    )
    .await;
    let _: i64 = cmd(
        &url,
        redis::cmd("SADD").arg(key(topic, "broadcast")).arg(orphan),
    )
    .await;

    let consumer_only = common::builder(backend(&url).await)
        .trim_interval(Duration::from_millis(200))
        .build()
        .expect("bus");
    let _sub = consumer_only
        .subscribe(topic, "audit", |_d: Delivery<u32>| async { Ok(()) })
        .await
        .expect("subscribe");
    wait_for(
        "the orphan to be removed",
        Duration::from_secs(10),
        || async {
            let groups: Vec<redis::Value> =
                cmd(&url, redis::cmd("XINFO").arg("GROUPS").arg(stream(topic))).await;
            !format!("{groups:?}").contains("deadhost")
        },
    )
    .await;
    consumer_only.shutdown().await;
}
