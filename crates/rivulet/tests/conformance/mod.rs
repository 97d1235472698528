//! The conformance suite: bus behaviours every backend must show.
//!
//! Each behaviour is an `async fn(&dyn Fixture)`; `conformance_suite!` turns the whole list
//! into `#[tokio::test]`s for one backend. A fixture hands out backends that share one
//! store (clones of a memory backend, or connections to one Redis), so several buses can
//! play several processes.
//!
//! Timing tolerances: tests use short intervals (block 200 ms, retry mover bound 100 ms).
//! A retry must arrive no earlier than its backoff and no later than backoff + 600 ms.
//! Waits for outcomes poll with a deadline; nothing sleeps to wait for readiness.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rivulet::{
    AnyBackend, Bus, BusBuilder, DeadLetterReason, Delivery, Dispatch, ErrorKind, HandlerError,
    MemoryIdempotencyStore, RetryPolicy, StartFrom,
};
use serde::{Deserialize, Serialize};

/// Hands out backends that share one store.
pub trait Fixture: Send + Sync {
    /// A backend connected to the fixture's store.
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>>;
}

/// Generates one `#[tokio::test]` per behaviour, each with a fresh fixture from `$make`.
macro_rules! conformance_suite {
    ($make:expr) => {
        conformance_suite!(@tests $make;
            every_group_gets_every_message,
            competing_consumers_split_a_group,
            broadcast_reaches_every_bus,
            retries_exactly_max_attempts_with_backoff,
            failures_dead_letter_with_reason_and_consumer_keeps_running,
            headers_survive_retry_and_dead_letter,
            dead_letters_list_replay_purge_and_subscribe,
            idempotent_handlers_skip_duplicates_and_rerun_after_failure,
            idempotent_handler_needs_a_store,
            drain_waits_for_in_flight_handlers,
            bad_names_and_oversized_payloads_are_rejected,
            dispatch_modes_respect_concurrency,
            start_from_beginning_replays_history,
            idempotent_publish_writes_once,
            live_channels_match_patterns,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                conformance::$name(&fixture).await;
            }
        )*
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A topic name unique to this test run.
pub fn topic(name: &str) -> String {
    format!(
        "conf.{name}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder with the short intervals tests use.
pub async fn builder(f: &dyn Fixture) -> BusBuilder {
    Bus::builder(f.backend().await)
        .app("conf")
        .block_timeout(Duration::from_millis(200))
        .retry_mover_interval(Duration::from_millis(100))
        .reclaim_interval(Duration::from_millis(500))
        .min_idle(Duration::from_secs(2))
        .retry(
            RetryPolicy::default()
                .backoff(Duration::from_millis(20))
                .multiplier(1.0),
        )
}

pub async fn bus(f: &dyn Fixture) -> Bus {
    builder(f).await.build().expect("bus")
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Async version of [`wait_until`].
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: u32,
    pub kind: String,
}

fn order(id: u32) -> Order {
    Order {
        id,
        kind: "ok".into(),
    }
}

type Seen = Arc<Mutex<Vec<u32>>>;
type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type HeaderLog = Arc<Mutex<Vec<(u32, Option<String>, Option<String>)>>>;

fn recorder(seen: &Seen) -> impl Fn(Delivery<Order>) -> HandlerFuture + Send + Sync + 'static {
    let seen = seen.clone();
    move |d: Delivery<Order>| {
        let seen = seen.clone();
        Box::pin(async move {
            seen.lock().expect("lock").push(d.payload().id);
            Ok(())
        })
    }
}

fn len(seen: &Seen) -> usize {
    seen.lock().expect("lock").len()
}

fn sorted(seen: &Seen) -> Vec<u32> {
    let mut v = seen.lock().expect("lock").clone();
    v.sort_unstable();
    v
}

pub async fn every_group_gets_every_message(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("fanout");
    let (a, b, c): (Seen, Seen, Seen) = Default::default();
    let sa = bus.subscribe(&t, "billing", recorder(&a)).await.expect("a");
    let sb = bus
        .subscribe(&t, "shipping", recorder(&b))
        .await
        .expect("b");
    let sc = bus
        .subscribe(&t, "audit", recorder(&c))
        .group("audit-explicit")
        .await
        .expect("c");
    assert_eq!(sa.group().as_str(), format!("conf:{t}__billing"));
    assert_eq!(sc.group().as_str(), "audit-explicit");
    assert_ne!(sa.group(), sb.group());
    let orders: Vec<Order> = (0..60).map(order).collect();
    bus.publish_batch(&t, &orders).await.expect("publish");
    wait_until("all groups have all", WAIT, || {
        len(&a) >= 60 && len(&b) >= 60 && len(&c) >= 60
    })
    .await;
    let all: Vec<u32> = (0..60).collect();
    for seen in [&a, &b, &c] {
        assert_eq!(sorted(seen), all, "each group gets each message once");
    }
    bus.shutdown().await;
}

pub async fn competing_consumers_split_a_group(f: &dyn Fixture) {
    let t = topic("compete");
    let seen: Seen = Default::default();
    let per_bus: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut buses = Vec::new();
    for counter in &per_bus {
        let bus = bus(f).await;
        let seen = seen.clone();
        let counter = counter.clone();
        bus.subscribe(&t, "worker", move |d: Delivery<Order>| {
            let seen = seen.clone();
            let counter = counter.clone();
            async move {
                // Slow enough that one consumer cannot take everything.
                tokio::time::sleep(Duration::from_millis(5)).await;
                seen.lock().expect("lock").push(d.payload().id);
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .group("workers")
        .concurrency(2)
        .await
        .expect("subscribe");
        buses.push(bus);
    }
    for i in 0..100 {
        buses[0].publish(&t, &order(i)).await.expect("publish");
    }
    wait_until("all handled", WAIT, || len(&seen) >= 100).await;
    assert_eq!(
        sorted(&seen),
        (0..100).collect::<Vec<_>>(),
        "no message twice"
    );
    for (i, c) in per_bus.iter().enumerate() {
        assert!(c.load(Ordering::Relaxed) > 0, "consumer {i} got nothing");
    }
    for b in buses {
        b.shutdown().await;
    }
}

pub async fn broadcast_reaches_every_bus(f: &dyn Fixture) {
    let t = topic("broadcast");
    let mut buses = Vec::new();
    let mut seens = Vec::new();
    let mut groups = HashSet::new();
    for _ in 0..3 {
        let bus = bus(f).await;
        let seen: Seen = Default::default();
        let sub = bus
            .subscribe(&t, "cache", recorder(&seen))
            .broadcast()
            .await
            .expect("subscribe");
        groups.insert(sub.group().to_string());
        seens.push(seen);
        buses.push(bus);
    }
    assert_eq!(groups.len(), 3, "one broadcast group per bus");
    let orders: Vec<Order> = (0..20).map(order).collect();
    buses[0].publish_batch(&t, &orders).await.expect("publish");
    for seen in &seens {
        wait_until("every bus got every message", WAIT, || len(seen) >= 20).await;
        assert_eq!(sorted(seen), (0..20).collect::<Vec<_>>());
    }
    for b in buses {
        b.shutdown().await;
    }
}

pub async fn retries_exactly_max_attempts_with_backoff(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("retry");
    let times: Arc<Mutex<Vec<(u32, Instant)>>> = Default::default();
    let tt = times.clone();
    let sub = bus
        .subscribe(&t, "flaky", move |d: Delivery<Order>| {
            let tt = tt.clone();
            async move {
                tt.lock().expect("lock").push((d.attempt(), Instant::now()));
                Err::<(), _>(HandlerError::retryable("always fails"))
            }
        })
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(300))
                .multiplier(2.0),
        )
        .await
        .expect("subscribe");
    bus.publish(&t, &order(1)).await.expect("publish");
    let dead_letters = bus.dead_letters(&t).expect("dead letters");
    wait_until_async("dead-lettered", WAIT, || async {
        dead_letters.len().await.expect("len") == 1
    })
    .await;
    let times = times.lock().expect("lock").clone();
    let attempts: Vec<u32> = times.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3], "exactly max_attempts attempts");
    let tolerance = Duration::from_millis(600);
    for (i, expected) in [(1, 300u64), (2, 600)] {
        let gap = times[i].1 - times[i - 1].1;
        let expected = Duration::from_millis(expected);
        assert!(
            gap >= expected,
            "attempt {} came after {gap:?} < {expected:?}",
            i + 1
        );
        assert!(
            gap <= expected + tolerance,
            "attempt {} came after {gap:?}",
            i + 1
        );
    }
    let dead = dead_letters.list(None, 10).await.expect("list");
    assert_eq!(dead[0].reason, DeadLetterReason::Attempts);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].group, *sub.group());
    let stats = sub.stats();
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (3, 2, 1)
    );
    bus.shutdown().await;
}

pub async fn failures_dead_letter_with_reason_and_consumer_keeps_running(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("outcomes");
    let ok: Seen = Default::default();
    let okc = ok.clone();
    let sub = bus
        .subscribe(&t, "picky", move |d: Delivery<Order>| {
            let okc = okc.clone();
            async move {
                match d.payload().kind.as_str() {
                    "permanent" => Err(HandlerError::permanent("refused for good")),
                    "panic" => panic!("boom {}", d.payload().id),
                    _ => {
                        okc.lock().expect("lock").push(d.payload().id);
                        Ok(())
                    }
                }
            }
        })
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .backoff(Duration::from_millis(10)),
        )
        .await
        .expect("subscribe");
    let mk = |id, kind: &str| Order {
        id,
        kind: kind.into(),
    };
    bus.publish(&t, &mk(1, "permanent")).await.expect("p1");
    bus.publish(&t, &mk(2, "panic")).await.expect("p2");
    bus.publish_raw(&t, Bytes::from_static(b"{not json"))
        .await
        .expect("p3");
    bus.publish(&t, &mk(4, "ok")).await.expect("p4");
    let dead_letters = bus.dead_letters(&t).expect("dead letters");
    wait_until_async("three dead letters", WAIT, || async {
        dead_letters.len().await.expect("len") == 3
    })
    .await;
    wait_until("good message handled", WAIT, || len(&ok) == 1).await;
    let dead = dead_letters.list(None, 10).await.expect("list");
    let reasons: HashMap<DeadLetterReason, &rivulet::DeadLetter> =
        dead.iter().map(|d| (d.reason, d)).collect();
    assert_eq!(reasons[&DeadLetterReason::Permanent].attempts, 1);
    assert_eq!(
        reasons[&DeadLetterReason::Permanent].error,
        "refused for good"
    );
    let panicked = reasons[&DeadLetterReason::Attempts];
    assert!(panicked.error.contains("boom 2"), "{}", panicked.error);
    assert_eq!(panicked.attempts, 2);
    assert_eq!(
        reasons[&DeadLetterReason::Decode].payload,
        Bytes::from_static(b"{not json")
    );
    // The consumer is still running after all that.
    bus.publish(&t, &mk(5, "ok")).await.expect("p5");
    wait_until("consumer still running", WAIT, || len(&ok) == 2).await;
    assert_eq!(sub.stats().panics, 2);
    bus.shutdown().await;
}

pub async fn headers_survive_retry_and_dead_letter(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("headers");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen: HeaderLog = Default::default();
    let s2 = seen.clone();
    bus.subscribe(&t, "h", move |d: Delivery<Order>| {
        let s2 = s2.clone();
        async move {
            s2.lock().expect("lock").push((
                d.attempt(),
                d.header("traceparent").map(str::to_owned),
                d.header("tenant").map(str::to_owned),
            ));
            if d.attempt() == 1 {
                Err(HandlerError::retryable("first try fails"))
            } else {
                Err(HandlerError::permanent("then gives up"))
            }
        }
    })
    .await
    .expect("subscribe");
    bus.publish(&t, &order(1))
        .header("traceparent", tp)
        .header("tenant", "acme")
        .await
        .expect("publish");
    let dead_letters = bus.dead_letters(&t).expect("dead letters");
    wait_until_async("dead-lettered", WAIT, || async {
        dead_letters.len().await.expect("len") == 1
    })
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    for (_, trace, tenant) in &seen {
        assert_eq!(trace.as_deref(), Some(tp));
        assert_eq!(tenant.as_deref(), Some("acme"));
    }
    let dead = dead_letters.list(None, 1).await.expect("list");
    assert_eq!(
        dead[0].headers.get("traceparent").map(String::as_str),
        Some(tp)
    );
    assert_eq!(
        dead[0].headers.get("tenant").map(String::as_str),
        Some("acme")
    );
    bus.shutdown().await;
}

pub async fn dead_letters_list_replay_purge_and_subscribe(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("dead-letters");
    let runs = Arc::new(AtomicUsize::new(0));
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, h) = (runs.clone(), healed.clone());
    let sub = bus
        .subscribe(&t, "fragile", move |_d: Delivery<Order>| {
            let (r, h) = (r.clone(), h.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                if h.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(HandlerError::permanent("not yet"))
                }
            }
        })
        .await
        .expect("subscribe");
    let watchers: Seen = Default::default();
    let w = watchers.clone();
    bus.subscribe_dead_letters(&t, "alerts", move |d: Delivery<rivulet::DeadLetter>| {
        let w = w.clone();
        async move {
            let o: Order = serde_json::from_slice(&d.payload().payload).expect("order");
            w.lock().expect("lock").push(o.id);
            Ok(())
        }
    })
    .start_from(StartFrom::Beginning)
    .await
    .expect("dead-letter subscribe");
    for i in 0..4 {
        bus.publish(&t, &order(i)).await.expect("publish");
    }
    let dead_letters = bus.dead_letters(&t).expect("dead letters");
    wait_until_async("four dead letters", WAIT, || async {
        dead_letters.len().await.expect("len") == 4
    })
    .await;
    wait_until("dead-letter subscription saw all", WAIT, || {
        len(&watchers) == 4
    })
    .await;
    let listed = dead_letters.list(None, 100).await.expect("list");
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|d| d.group == *sub.group()));
    // Replay one: it leaves the queue and runs again, for its group only.
    healed.store(true, Ordering::SeqCst);
    assert!(dead_letters.replay(&listed[0].id).await.expect("replay"));
    assert!(
        !dead_letters
            .replay(&listed[0].id)
            .await
            .expect("replay gone")
    );
    wait_until("replayed message handled", WAIT, || {
        sub.stats().handled == 1
    })
    .await;
    assert_eq!(dead_letters.len().await.expect("len"), 3);
    // Replay all with a rate limit, then purge what is left (nothing).
    assert_eq!(
        dead_letters
            .replay_all(Some(1000))
            .await
            .expect("replay all"),
        3
    );
    wait_until("all replayed handled", WAIT, || sub.stats().handled == 4).await;
    assert_eq!(dead_letters.purge().await.expect("purge"), 0);
    // Purge removes dead letters.
    healed.store(false, Ordering::SeqCst);
    bus.publish(&t, &order(9)).await.expect("publish");
    wait_until_async("new dead letter", WAIT, || async {
        dead_letters.len().await.expect("len") == 1
    })
    .await;
    assert_eq!(dead_letters.purge().await.expect("purge"), 1);
    assert!(dead_letters.is_empty().await.expect("empty"));
    bus.shutdown().await;
}

pub async fn idempotent_handlers_skip_duplicates_and_rerun_after_failure(f: &dyn Fixture) {
    let bus = builder(f)
        .await
        .idempotency(MemoryIdempotencyStore::new())
        .build()
        .expect("bus");
    let t = topic("idem");
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Default::default();
    let r = runs.clone();
    let sub = bus
        .subscribe(&t, "charge", move |d: Delivery<Order>| {
            let r = r.clone();
            async move {
                let id = d.payload().id;
                let n = {
                    let mut runs = r.lock().expect("lock");
                    let n = runs.entry(id).or_default();
                    *n += 1;
                    *n
                };
                if id == 2 && n == 1 {
                    return Err(HandlerError::retryable("fails once"));
                }
                Ok(())
            }
        })
        .idempotent_by(|o: &Order| format!("order-{}", o.id))
        .await
        .expect("subscribe");
    // Order 1 is published three times (three messages, one key).
    for id in [1, 1, 2, 1] {
        bus.publish(&t, &order(id)).await.expect("publish");
    }
    wait_until("all settled", WAIT, || {
        let s = sub.stats();
        s.handled + s.duplicates == 4
    })
    .await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.get(&1), Some(&1), "order 1 ran once");
    assert_eq!(runs.get(&2), Some(&2), "order 2 re-ran after its failure");
    assert_eq!(sub.stats().duplicates, 2);
    bus.shutdown().await;
}

pub async fn idempotent_handler_needs_a_store(f: &dyn Fixture) {
    let bus = bus(f).await;
    let err = bus
        .subscribe(&topic("idem-nostore"), "x", recorder(&Seen::default()))
        .idempotent()
        .await
        .expect_err("must fail at start");
    assert_eq!(err.kind(), ErrorKind::Config);
    bus.shutdown().await;
}

pub async fn drain_waits_for_in_flight_handlers(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("drain");
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, fi) = (started.clone(), finished.clone());
    let sub = bus
        .subscribe(&t, "slow", move |_d: Delivery<Order>| {
            let (s, fi) = (s.clone(), fi.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(400)).await;
                fi.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    bus.publish(&t, &order(1)).await.expect("publish");
    wait_until("handler started", WAIT, || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let t0 = Instant::now();
    tokio::join!(bus.shutdown(), bus.shutdown());
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "in-flight handler finished"
    );
    assert_eq!(sub.stats().handled, 1, "and its entry was acknowledged");
    assert!(t0.elapsed() < Duration::from_secs(3), "shutdown is prompt");
    // Idempotent, and the bus refuses work afterwards.
    bus.shutdown().await;
    let err = bus.publish(&t, &order(2)).await.expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Closed);
    // Nothing left pending: a new bus in the same group sees no redelivery.
    let bus2 = bus_same_store(f).await;
    let seen: Seen = Default::default();
    let sub2 = bus2
        .subscribe(&t, "slow", recorder(&seen))
        .await
        .expect("subscribe");
    bus2.publish(&t, &order(3)).await.expect("publish");
    wait_until("new message", WAIT, || len(&seen) == 1).await;
    assert_eq!(sorted(&seen), vec![3]);
    assert_eq!(sub2.stats().reclaimed, 0);
    bus2.shutdown().await;
}

async fn bus_same_store(f: &dyn Fixture) -> Bus {
    bus(f).await
}

pub async fn bad_names_and_oversized_payloads_are_rejected(f: &dyn Fixture) {
    let bus = builder(f).await.max_payload(1024).build().expect("bus");
    let t = topic("bad");
    for bad in ["", "with space", "{tag}", "ü"] {
        let err = bus.publish(bad, &order(1)).await.expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad:?}");
    }
    let long = "x".repeat(201);
    assert_eq!(
        bus.publish(&long, &order(1))
            .await
            .expect_err("long")
            .kind(),
        ErrorKind::InvalidName
    );
    let big = Bytes::from(vec![b'a'; 1025]);
    let err = bus.publish_raw(&t, big.clone()).await.expect_err("big");
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let err = bus
        .publish_batch_raw(&t, vec![Bytes::from_static(b"1"), big])
        .await
        .expect_err("big batch");
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let err = bus
        .publish(&t, &order(1))
        .header("", "v")
        .await
        .expect_err("bad header");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    let err = bus
        .subscribe(&t, "bad handler", recorder(&Seen::default()))
        .await
        .expect_err("bad handler name");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    let err = bus
        .subscribe(&t, "h", recorder(&Seen::default()))
        .concurrency(0)
        .await
        .expect_err("bad concurrency");
    assert_eq!(err.kind(), ErrorKind::Config);
    // Nothing was written: a group reading from the beginning gets only the sentinel.
    let seen: Seen = Default::default();
    bus.subscribe(&t, "reader", recorder(&seen))
        .start_from(StartFrom::Beginning)
        .await
        .expect("subscribe");
    bus.publish(&t, &order(42)).await.expect("sentinel");
    wait_until("sentinel", WAIT, || len(&seen) == 1).await;
    assert_eq!(sorted(&seen), vec![42]);
    bus.shutdown().await;
}

pub async fn dispatch_modes_respect_concurrency(f: &dyn Fixture) {
    for (mode, n) in [(Dispatch::Batch, 4usize), (Dispatch::Sliding, 3)] {
        let bus = bus(f).await;
        let t = topic("dispatch");
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (c, p, d2) = (now.clone(), peak.clone(), done.clone());
        let sub = bus
            .subscribe(&t, "par", move |_d: Delivery<Order>| {
                let (c, p, d2) = (c.clone(), p.clone(), d2.clone());
                async move {
                    let v = c.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(v, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    c.fetch_sub(1, Ordering::SeqCst);
                    d2.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .dispatch(mode)
            .concurrency(n)
            .await
            .expect("subscribe");
        assert_eq!((sub.dispatch(), sub.concurrency()), (mode, n));
        let orders: Vec<Order> = (0..24).map(order).collect();
        bus.publish_batch(&t, &orders).await.expect("publish");
        wait_until("all done", WAIT, || done.load(Ordering::SeqCst) == 24).await;
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= n, "{mode:?}: peak {peak} > concurrency {n}");
        assert!(
            peak >= 2,
            "{mode:?}: handlers never overlapped (peak {peak})"
        );
        bus.shutdown().await;
    }
}

pub async fn start_from_beginning_replays_history(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("history");
    let orders: Vec<Order> = (0..5).map(order).collect();
    bus.publish_batch(&t, &orders).await.expect("publish");
    let (new, all): (Seen, Seen) = Default::default();
    bus.subscribe(&t, "late", recorder(&new))
        .await
        .expect("new");
    bus.subscribe(&t, "archive", recorder(&all))
        .start_from(StartFrom::Beginning)
        .await
        .expect("all");
    bus.publish(&t, &order(5)).await.expect("publish");
    wait_until("both saw the new one", WAIT, || {
        len(&new) == 1 && len(&all) == 6
    })
    .await;
    assert_eq!(sorted(&new), vec![5]);
    assert_eq!(sorted(&all), (0..6).collect::<Vec<_>>());
    bus.shutdown().await;
}

pub async fn idempotent_publish_writes_once(f: &dyn Fixture) {
    let bus = bus(f).await;
    let t = topic("pubdedup");
    let seen: Seen = Default::default();
    bus.subscribe(&t, "r", recorder(&seen)).await.expect("sub");
    let first = bus
        .publish(&t, &order(1))
        .id("order-1")
        .await
        .expect("first");
    let second = bus
        .publish(&t, &order(1))
        .id("order-1")
        .await
        .expect("second");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.entry_id, second.entry_id);
    assert_eq!(first.message_id.as_str(), "order-1");
    bus.publish(&t, &order(2)).await.expect("sentinel");
    wait_until("sentinel", WAIT, || len(&seen) == 2).await;
    assert_eq!(sorted(&seen), vec![1, 2]);
    bus.shutdown().await;
}

pub async fn live_channels_match_patterns(f: &dyn Fixture) {
    let bus = bus(f).await;
    let prefix = topic("live");
    let mut sub = bus
        .live()
        .subscribe(&format!("{prefix}.news.*"))
        .await
        .expect("subscribe");
    let other = format!("{prefix}.weather.today");
    let wanted = format!("{prefix}.news.sport");
    // The subscription may take a moment to be active on a remote backend: publish until
    // one arrives, bounded by a deadline.
    let deadline = Instant::now() + WAIT;
    let got = loop {
        bus.live()
            .publish(&other, &"rain")
            .await
            .expect("publish other");
        bus.live()
            .publish(&wanted, &"goal")
            .await
            .expect("publish wanted");
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(Some(m)) => break m,
            Ok(None) => panic!("live subscription closed"),
            Err(_) => assert!(Instant::now() < deadline, "no live message arrived"),
        }
    };
    assert_eq!(got.channel, wanted);
    assert_eq!(got.payload, Bytes::from_static(b"\"goal\""));
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
        assert_eq!(m.channel, wanted, "only matching channels arrive");
    }
    let err = bus
        .live()
        .publish("bad channel", &1)
        .await
        .expect_err("bad");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    bus.shutdown().await;
    assert!(
        sub.next().await.is_none(),
        "live subscriptions end with the bus"
    );
}
