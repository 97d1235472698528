//! Replaying dead letters when their group is gone, and when it is back (B-RET-4), on a
//! real `redis-server`.

#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use rivulet::{Delivery, Error, HandlerError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_of_a_removed_group_is_not_replayed_into_the_void() {
    let server = server().await;
    let url = server.url();
    let topic = "dl.gone";
    let bus = bus(&url).await;
    let fixed = Arc::new(AtomicU32::new(0));
    let sub = bus
        .subscribe(topic, "h", |_d: Delivery<u32>| async {
            Err::<(), _>(HandlerError::permanent("bad order"))
        })
        .group("billing")
        .await
        .expect("subscribe");
    bus.publish(topic, &7u32).await.expect("publish");
    let dead_letters = bus.dead_letters(topic).expect("dead letters");
    wait_for("the dead letter", Duration::from_secs(5), || async {
        dead_letters.len().await.expect("len") == 1
    })
    .await;
    sub.unsubscribe().await;
    // An operator removes the group (and its lane) while no process consumes it.
    let _: i64 = cmd(
        &url,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream(topic))
            .arg("billing"),
    )
    .await;
    let _: i64 = cmd(&url, redis::cmd("DEL").arg(key(topic, "lane/billing"))).await;

    let dead = dead_letters.list(None, 10).await.expect("list");
    let replay = dead_letters.replay(&dead[0].id).await;
    assert!(
        matches!(&replay, Err(Error::GroupNotFound { group, .. }) if group == "billing"),
        "{replay:?}"
    );
    assert_eq!(
        dead_letters.len().await.expect("len"),
        1,
        "the dead letter stays"
    );
    assert_eq!(dead_letters.replay_all(None).await.expect("replay all"), 0);
    assert_eq!(
        dead_letters.len().await.expect("len"),
        1,
        "the dead letter still stays"
    );

    // Once the group is back, the same dead letter replays and is handled.
    let f = fixed.clone();
    let _again = bus
        .subscribe(topic, "h", move |_d: Delivery<u32>| {
            let f = f.clone();
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .group("billing")
        .await
        .expect("subscribe again");
    assert!(dead_letters.replay(&dead[0].id).await.expect("replay"));
    wait_until(
        "the replayed message is handled",
        Duration::from_secs(5),
        || fixed.load(Ordering::SeqCst) >= 1,
    )
    .await;
    assert_eq!(dead_letters.len().await.expect("len"), 0);
    bus.shutdown().await;
}
