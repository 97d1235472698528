//! Several subscriptions of one bus in one explicit group (B-SUB-2, B-SUB-4, B-REC-3),
//! on a real `redis-server`: each has its own consumer identity, so one's drain never
//! hands back entries another is still running.

#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rivulet::Delivery;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_one_bus_never_hands_back_what_its_other_subscriptions_run() {
    let server = server().await;
    let url = server.url();
    let topic = "sg.drain";
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let started = Arc::new(AtomicU32::new(0));
    let slow = |runs: Arc<Mutex<HashMap<u32, u32>>>, started: Arc<AtomicU32>| {
        move |d: Delivery<u32>| {
            let (runs, started) = (runs.clone(), started.clone());
            async move {
                let n = *d.payload();
                *runs.lock().expect("lock").entry(n).or_default() += 1;
                started.fetch_add(1, Ordering::SeqCst);
                // One subscription finishes (and drains) long before the other.
                let ms = if n == 1 { 200 } else { 2000 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
        }
    };
    let a = bus(&url).await;
    let s1 = a
        .subscribe(topic, "first", slow(runs.clone(), started.clone()))
        .group("g")
        .await
        .expect("subscribe");
    let s2 = a
        .subscribe(topic, "second", slow(runs.clone(), started.clone()))
        .group("g")
        .await
        .expect("subscribe");
    assert_ne!(
        s1.consumer(),
        s2.consumer(),
        "one consumer identity per subscription"
    );
    a.publish_batch(topic, &[1u32, 2u32])
        .await
        .expect("publish");
    wait_until("both handlers run", Duration::from_secs(5), || {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    // Another process of the group is ready to take anything handed back.
    let b = bus(&url).await;
    let _sb = b
        .subscribe(topic, "other", slow(runs.clone(), started.clone()))
        .group("g")
        .await
        .expect("subscribe");
    a.shutdown().await;
    // Anything wrongly handed back would have been taken by the other process by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.get(&1), Some(&1), "{runs:?}");
    assert_eq!(runs.get(&2), Some(&1), "{runs:?}");
    assert_eq!(pending(&url, &stream(topic), "g").await, 0);
    b.shutdown().await;
}
