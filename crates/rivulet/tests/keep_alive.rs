//! The keep-alive (B-REC-2) on a real `redis-server`: entries a live process holds are
//! never reclaimed by another consumer, whether they are running, waiting to start
//! (leftovers of a read), held by a handler that blocks its runtime, or guarded by an
//! idempotency claim longer than its time to live.

#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rivulet::{Delivery, Dispatch, HandlerError, MemoryIdempotencyStore, RetryPolicy};

type Runs = Arc<Mutex<HashMap<u32, u32>>>;

fn count(runs: &Runs, n: u32) -> u32 {
    let mut r = runs.lock().expect("lock");
    let c = r.entry(n).or_default();
    *c += 1;
    *c
}

fn runs_of(runs: &Runs, n: u32) -> u32 {
    runs.lock().expect("lock").get(&n).copied().unwrap_or(0)
}

/// Concurrency 1: message 1 fails at once (its retry goes straight to the lane), so the
/// next read returns the retry and message 2 together. The retry's second attempt runs
/// three times `min_idle` while message 2 waits; a second consumer of the group must not
/// reclaim message 2 meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_read_are_kept_alive_at_concurrency_1() {
    let server = server().await;
    let url = server.url();
    let topic = "ka.leftovers";
    let runs: Runs = Arc::default();
    let handler = |runs: Runs| {
        move |d: Delivery<u32>| {
            let runs = runs.clone();
            async move {
                let n = *d.payload();
                let run = count(&runs, n);
                if n == 0 && run == 1 {
                    // Warm-up: loads the settle scripts (a script the server does not
                    // know yet is settled after the read, not with it).
                    return Err(HandlerError::retryable("warm-up").retry_after(Duration::ZERO));
                }
                if n == 1 && run == 1 {
                    return Err(HandlerError::retryable("once").retry_after(Duration::ZERO));
                }
                if n == 1 {
                    tokio::time::sleep(MIN_IDLE * 3).await;
                    // Counted as run 3 of message 1: its slow attempt has ended.
                    count(&runs, n);
                }
                Ok(())
            }
        }
    };
    let a = bus(&url).await;
    let _sa = a
        .subscribe(topic, "h", handler(runs.clone()))
        .group("g")
        .concurrency(1)
        .await
        .expect("subscribe");
    a.publish(topic, &0u32).await.expect("publish");
    wait_until("the warm-up ran twice", Duration::from_secs(5), || {
        runs_of(&runs, 0) == 2
    })
    .await;
    a.publish_batch(topic, &[1u32, 2u32])
        .await
        .expect("publish");
    wait_until("message 1's retry started", Duration::from_secs(5), || {
        runs_of(&runs, 1) == 2
    })
    .await;
    // Another process joins the group: it reclaims whatever is idle for min_idle.
    let b = bus(&url).await;
    let sb = b
        .subscribe(topic, "h", handler(runs.clone()))
        .group("g")
        .concurrency(1)
        .await
        .expect("subscribe");
    wait_until(
        "message 1's slow attempt ended",
        Duration::from_secs(15),
        || runs_of(&runs, 1) == 3,
    )
    .await;
    wait_until("message 2 handled", Duration::from_secs(5), || {
        runs_of(&runs, 2) >= 1
    })
    .await;
    // Give the waiting entry (if it had also been reclaimed) every chance to run twice.
    tokio::time::sleep(RECLAIM * 2).await;
    assert_eq!(runs_of(&runs, 2), 1, "message 2 ran twice");
    assert_eq!(runs_of(&runs, 1), 3);
    assert_eq!(sb.stats().reclaimed, 0);
    b.shutdown().await;
    a.shutdown().await;
}

/// A handler that blocks its runtime (a synchronous call, CPU work, a slow panic hook)
/// for three times `min_idle`: the keep-alive runs on its own thread, so the entry stays
/// with its live process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_its_runtime_keeps_its_entry() {
    let server = server().await;
    let url = server.url();
    let topic = "ka.blocking";
    let runs: Runs = Arc::default();
    // The blocking consumer lives on a single-threaded runtime of its own, which its
    // handler blocks completely.
    let (u, r) = (url.clone(), runs.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let blocked = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let a = bus(&u).await;
            let _s = a
                .subscribe(topic, "h", move |d: Delivery<u32>| {
                    let r = r.clone();
                    async move {
                        count(&r, *d.payload());
                        std::thread::sleep(MIN_IDLE * 3);
                        Ok(())
                    }
                })
                .group("g")
                .await
                .expect("subscribe");
            ready_tx.send(()).expect("ready");
            let _ = stop_rx.await;
            a.shutdown().await;
        });
    });
    ready_rx.recv().expect("ready");
    // Publish through another bus, so the blocked consumer is not the publisher; it
    // takes the message before the second consumer exists.
    let p = bus(&url).await;
    p.publish(topic, &5u32).await.expect("publish");
    wait_until(
        "the blocked handler started",
        Duration::from_secs(5),
        || runs_of(&runs, 5) >= 1,
    )
    .await;
    let b = bus(&url).await;
    let sb = b
        .subscribe(topic, "h", {
            let r = runs.clone();
            move |d: Delivery<u32>| {
                let r = r.clone();
                async move {
                    count(&r, *d.payload());
                    Ok(())
                }
            }
        })
        .group("g")
        .await
        .expect("subscribe");
    tokio::time::sleep(MIN_IDLE * 3 + RECLAIM * 2).await;
    assert_eq!(
        runs_of(&runs, 5),
        1,
        "the blocked handler's entry was reclaimed and run again"
    );
    assert_eq!(sb.stats().reclaimed, 0);
    let _ = stop_tx.send(());
    blocked.join().expect("blocking consumer");
    b.shutdown().await;
    p.shutdown().await;
}

/// Two deliveries with the same idempotency key; the handler runs four times as long as
/// the claim lives. The claim is renewed while it runs, so the second delivery waits and
/// is then skipped as a duplicate: the key runs once, never twice at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_handler_longer_than_its_claim_runs_once() {
    let server = server().await;
    let url = server.url();
    let topic = "ka.idem";
    let claim_ttl = Duration::from_millis(400);
    let bus = common::builder(backend(&url).await)
        .idempotency(MemoryIdempotencyStore::new())
        .idempotency_claim_ttl(claim_ttl)
        .retry(
            RetryPolicy::default()
                .max_attempts(10)
                .backoff(Duration::from_millis(100)),
        )
        .build()
        .expect("bus");
    let (running, most, total) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let (r, m, t) = (running.clone(), most.clone(), total.clone());
    let sub = bus
        .subscribe(topic, "charge", move |_d: Delivery<(String, u32)>| {
            let (r, m, t) = (r.clone(), m.clone(), t.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                t.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(claim_ttl * 4).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        // Two readers, so both deliveries run at the same time.
        .dispatch(Dispatch::Sliding)
        .concurrency(2)
        .idempotent_by(|(order, _): &(String, u32)| order.clone())
        .await
        .expect("subscribe");
    bus.publish_batch(
        topic,
        &[("order-1".to_owned(), 1u32), ("order-1".to_owned(), 2u32)],
    )
    .await
    .expect("publish");
    wait_until("the duplicate was skipped", Duration::from_secs(15), || {
        sub.stats().duplicates == 1
    })
    .await;
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "the key ran twice at the same time"
    );
    assert_eq!(total.load(Ordering::SeqCst), 1);
    assert!(sub.stats().deferred >= 1);
    bus.shutdown().await;
}
