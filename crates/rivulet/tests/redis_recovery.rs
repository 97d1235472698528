//! Recovery behaviours of the bus on a real `redis-server`: reclaim from dead consumers,
//! lease extension for long handlers, the delivery-count guard, malformed entries,
//! idempotency leases, orphan broadcast groups, and a Redis crash with AOF.
//!
//! A "dead" or "stuck" consumer is played by a raw `XREADGROUP` that never acknowledges:
//! to the server that is exactly what a killed process leaves behind. Process-level kills
//! (SIGKILL, SIGSTOP) are exercised by the fault-injection suite (`crates/rivulet-chaos`).

#![cfg(feature = "redis")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use rivulet::{
    Bus, DeadLetterReason, Delivery, HandlerError, IdempotencyStore, RedisBackend,
    RedisIdempotencyStore, RetryPolicy,
};
use rivulet_testkit::RedisServer;

const MIN_IDLE: Duration = Duration::from_millis(1000);
const RECLAIM: Duration = Duration::from_millis(300);

async fn server() -> RedisServer {
    tokio::task::spawn_blocking(|| {
        RedisServer::builder()
            .aof(true)
            .appendfsync("everysec")
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("redis-server")
}

async fn bus(url: &str) -> Bus {
    let backend = RedisBackend::connect(url).await.expect("connect");
    Bus::builder(backend)
        .app("rec")
        .block_timeout(Duration::from_millis(200))
        .min_idle(MIN_IDLE)
        .reclaim_interval(RECLAIM)
        .retry_mover_interval(Duration::from_millis(100))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(20)),
        )
        .build()
        .expect("bus")
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn stream(topic: &str) -> String {
    format!("{{rivulet/topic/{topic}}}/stream")
}

fn broadcast_registry(topic: &str) -> String {
    format!("{{rivulet/topic/{topic}}}/broadcast")
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn dead_letters(bus: &Bus, topic: &str, n: u64) -> Vec<rivulet::DeadLetter> {
    let dead_letters = bus.dead_letters(topic).expect("dead letters");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let len = dead_letters.len().await.expect("len");
        if len >= n {
            return dead_letters.list(None, 100).await.expect("list");
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} dead letters, have {len}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads entries as consumer `ghost` of `group` and never acknowledges them: what a
/// consumer killed mid-handler leaves in the pending list.
async fn ghost_read(url: &str, topic: &str, group: &str, count: usize) -> Vec<String> {
    let mut con = raw(url).await;
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("ghost")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream(topic))
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("XREADGROUP");
    reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids.into_iter().map(|i| i.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entries_are_handled_within_min_idle_plus_reclaim_interval() {
    let server = server().await;
    let url = server.url();
    let bus = bus(&url).await;
    let topic = "rec.dead";
    let seen = Arc::new(Mutex::new(Vec::<u32>::new()));
    // Create the group (and stop this bus's reads from taking the entries first).
    let s = seen.clone();
    let sub = bus
        .subscribe(topic, "h", move |d: Delivery<u32>| {
            let s = s.clone();
            async move {
                s.lock().expect("lock").push(*d.payload());
                Ok(())
            }
        })
        .group("workers")
        .await
        .expect("subscribe");
    sub.unsubscribe().await;
    for i in 0..10u32 {
        bus.publish(topic, &i).await.expect("publish");
    }
    let ghost = ghost_read(&url, topic, "workers", 10).await;
    assert_eq!(ghost.len(), 10, "the dead consumer held every entry");
    let died = Instant::now();
    // A live consumer joins the group.
    let bus2 = bus_with_handler(&url, topic, seen.clone()).await;
    wait_until("all reclaimed and handled", Duration::from_secs(10), || {
        seen.lock().expect("lock").len() >= 10
    })
    .await;
    let took = died.elapsed();
    let bound = MIN_IDLE + RECLAIM + Duration::from_millis(700);
    assert!(took <= bound, "recovery took {took:?} > {bound:?}");
    let got: HashSet<u32> = seen.lock().expect("lock").iter().copied().collect();
    assert_eq!(got, (0..10).collect::<HashSet<_>>(), "none lost");
    bus.shutdown().await;
    bus2.shutdown().await;
}

async fn bus_with_handler(url: &str, topic: &str, seen: Arc<Mutex<Vec<u32>>>) -> Bus {
    let bus = bus(url).await;
    bus.subscribe(topic, "h", move |d: Delivery<u32>| {
        let s = seen.clone();
        async move {
            s.lock().expect("lock").push(*d.payload());
            Ok(())
        }
    })
    .group("workers")
    .await
    .expect("subscribe");
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_three_times_min_idle_is_handled_once() {
    let server = server().await;
    let url = server.url();
    let topic = "rec.long";
    let runs = Arc::new(AtomicUsize::new(0));
    let mut buses = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..2 {
        let bus = bus(&url).await;
        let r = runs.clone();
        let sub = bus
            .subscribe(topic, "long", move |_d: Delivery<u32>| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(MIN_IDLE * 3).await;
                    Ok(())
                }
            })
            .group("long")
            .await
            .expect("subscribe");
        subs.push(sub);
        buses.push(bus);
    }
    buses[0].publish(topic, &1u32).await.expect("publish");
    wait_until("handled", Duration::from_secs(15), || {
        subs.iter().map(|s| s.stats().handled).sum::<u64>() == 1
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the long handler ran once");
    assert_eq!(subs.iter().map(|s| s.stats().reclaimed).sum::<u64>(), 0);
    for b in buses {
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_redelivered_past_max_attempts_is_dead_lettered_as_deliveries() {
    let server = server().await;
    let url = server.url();
    let topic = "rec.poison";
    let setup = bus(&url).await;
    let sub = setup
        .subscribe(topic, "h", |_d: Delivery<u32>| async { Ok(()) })
        .group("poisoned")
        .await
        .expect("subscribe");
    sub.unsubscribe().await;
    setup.publish(topic, &7u32).await.expect("publish");
    // Three consumers in a row take the entry and die on it (delivery count 3 =
    // max_attempts): each XCLAIM counts as a new delivery.
    let ids = ghost_read(&url, topic, "poisoned", 1).await;
    let mut con = raw(&url).await;
    for victim in ["ghost2", "ghost3"] {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(stream(topic))
            .arg("poisoned")
            .arg(victim)
            .arg(0)
            .arg(&ids)
            .query_async(&mut con)
            .await
            .expect("XCLAIM");
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let bus2 = bus(&url).await;
    bus2.subscribe(topic, "h", move |_d: Delivery<u32>| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
    .group("poisoned")
    .await
    .expect("subscribe");
    let dead = dead_letters(&bus2, topic, 1).await;
    assert_eq!(dead[0].reason, DeadLetterReason::Deliveries);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "not run a fourth time");
    setup.shutdown().await;
    bus2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_raw_entries_are_dead_lettered_and_the_consumer_keeps_running() {
    let server = server().await;
    let url = server.url();
    let topic = "rec.raw";
    let backend = RedisBackend::connect(&url).await.expect("connect");
    let bus = rivulet::Bus::builder(backend)
        .block_timeout(Duration::from_millis(200))
        .max_payload(64)
        .build()
        .expect("bus");
    let seen = Arc::new(Mutex::new(Vec::<u32>::new()));
    let s = seen.clone();
    bus.subscribe(topic, "h", move |d: Delivery<u32>| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push(*d.payload());
            Ok(())
        }
    })
    .await
    .expect("subscribe");
    let mut con = raw(&url).await;
    let key = stream(topic);
    let writes: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![("unrelated", b"field".to_vec())],
        vec![
            ("id", b"m1".to_vec()),
            ("attempt", b"not-a-number".to_vec()),
            ("payload", b"1".to_vec()),
        ],
        vec![("id", b"m2".to_vec()), ("payload", vec![b'9'; 65])],
        vec![
            ("id", b"m3".to_vec()),
            ("payload", b"\"not a u32\"".to_vec()),
        ],
        vec![("id", b"m4".to_vec()), ("payload", b"4".to_vec())],
    ];
    for fields in &writes {
        let _: String = con.xadd(&key, "*", fields).await.expect("XADD");
    }
    let dead = dead_letters(&bus, topic, 4).await;
    let reasons: Vec<DeadLetterReason> = dead.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == DeadLetterReason::Decode)
            .count(),
        3,
        "{reasons:?}"
    );
    assert!(reasons.contains(&DeadLetterReason::TooLarge), "{reasons:?}");
    wait_until("the well-formed entry", Duration::from_secs(10), || {
        seen.lock().expect("lock").as_slice() == [4]
    })
    .await;
    bus.publish(topic, &5u32).await.expect("publish");
    wait_until("still running", Duration::from_secs(10), || {
        seen.lock().expect("lock").len() == 2
    })
    .await;
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_handler_that_crashed_after_claiming_runs_again() {
    let server = server().await;
    let url = server.url();
    let topic = "rec.idem";
    let store = RedisIdempotencyStore::open(&url).expect("store");
    let lease = Duration::from_millis(800);
    let backend = RedisBackend::connect(&url).await.expect("connect");
    let bus = Bus::builder(backend)
        .block_timeout(Duration::from_millis(200))
        .retry_mover_interval(Duration::from_millis(50))
        .retry(RetryPolicy::default().backoff(Duration::from_millis(100)))
        .idempotency(store.clone())
        .idempotency_claim_ttl(lease)
        .build()
        .expect("bus");
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let sub = bus
        .subscribe(topic, "charge", move |_d: Delivery<u32>| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .idempotent_by(|n: &u32| format!("order-{n}"))
        .await
        .expect("subscribe");
    // A consumer claimed order-1 and was killed before recording it done.
    assert_eq!(
        store.claim("order-1", lease).await.expect("claim"),
        rivulet::Claim::Acquired
    );
    let claimed_at = Instant::now();
    bus.publish(topic, &1u32).await.expect("publish");
    wait_until(
        "ran after the lease expired",
        Duration::from_secs(10),
        || runs.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert!(
        claimed_at.elapsed() >= lease,
        "it waited for the dead claim's lease"
    );
    // Done now: a second message with the same key is a duplicate.
    bus.publish(topic, &1u32).await.expect("publish");
    wait_until("duplicate suppressed", Duration::from_secs(10), || {
        sub.stats().duplicates == 1
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_broadcast_group_of_a_crashed_process_is_removed_by_another() {
    let server = server().await;
    let url = server.url();
    let topic = "rec.bcast";
    let bus = bus(&url).await;
    let base = bus.derived_group(topic, "cache").expect("group");
    // A process on another host created its broadcast group and died: no heartbeat.
    let orphan = format!("{base}__otherhost_4242_deadbeef");
    let mut con = raw(&url).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream(topic))
        .arg(&orphan)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .expect("XGROUP CREATE");
    let _: i64 = redis::cmd("SADD")
        .arg(broadcast_registry(topic))
        .arg(&orphan)
        .query_async(&mut con)
        .await
        .expect("SADD");
    let sub = bus
        .subscribe(topic, "cache", |_d: Delivery<u32>| async { Ok(()) })
        .broadcast()
        .await
        .expect("subscribe");
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream(topic))
        .query_async(&mut con)
        .await
        .expect("XINFO");
    let text = format!("{groups:?}");
    assert!(!text.contains("otherhost"), "orphan still there: {text}");
    assert!(
        text.contains(sub.group().as_str()),
        "own group exists: {text}"
    );
    // Graceful shutdown destroys this process's own broadcast group.
    bus.shutdown().await;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream(topic))
        .query_async(&mut con)
        .await
        .expect("XINFO");
    assert!(groups.is_empty(), "{groups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_nothing_acknowledged_outside_the_fsync_window() {
    let mut server = server().await;
    let url = server.url();
    let topic = "rec.restart";
    let bus = bus(&url).await;
    let seen = Arc::new(Mutex::new(HashSet::<u32>::new()));
    let s = seen.clone();
    let sub = bus
        .subscribe(topic, "h", move |d: Delivery<u32>| {
            let s = s.clone();
            async move {
                s.lock().expect("lock").insert(*d.payload());
                Ok(())
            }
        })
        .concurrency(8)
        .await
        .expect("subscribe");
    // Publish continuously; remember when each acknowledged publish returned.
    let acked = Arc::new(Mutex::new(Vec::<(u32, Instant)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (bus, acked, stop) = (bus.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if bus.publish(topic, &i).await.is_ok() {
                    acked.lock().expect("lock").push((i, Instant::now()));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    server.kill().expect("kill");
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The server comes back on the same port and data directory (AOF replayed).
    let server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .expect("restart task");
    // Publishing resumes by itself once the server is back.
    let resumed_from = acked.lock().expect("lock").len();
    wait_until("publishes succeed again", Duration::from_secs(15), || {
        acked.lock().expect("lock").len() > resumed_from + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    publisher.await.expect("publisher");
    // A dead letter after the restart proves the scripts were reloaded.
    let bus_dead = bus.clone();
    bus_dead
        .subscribe(topic, "refuser", |_d: Delivery<u32>| async {
            Err::<(), _>(HandlerError::permanent("refused"))
        })
        .await
        .expect("subscribe");
    bus.publish(topic, &u32::MAX).await.expect("publish");
    dead_letters(&bus, topic, 1).await;
    // Every publish acknowledged more than 1.5 s before the kill (AOF everysec can lose
    // about the last second of writes, plus the fsync's own duration) is handled; so is
    // every publish after the restart.
    let window = Duration::from_millis(1500);
    let acked = acked.lock().expect("lock").clone();
    let before: Vec<u32> = acked
        .iter()
        .filter(|(_, at)| *at + window < killed_at)
        .map(|(i, _)| *i)
        .collect();
    let after: Vec<u32> = acked
        .iter()
        .filter(|(_, at)| *at > killed_at)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        before.len() > 300,
        "too few publishes before the kill: {}",
        before.len()
    );
    assert!(
        after.len() > 50,
        "too few publishes after the restart: {}",
        after.len()
    );
    let must: Vec<u32> = before.into_iter().chain(after).collect();
    wait_until(
        "every acknowledged publish handled",
        Duration::from_secs(20),
        || {
            let seen = seen.lock().expect("lock");
            must.iter().all(|i| seen.contains(i))
        },
    )
    .await;
    assert!(sub.stats().handled > 0);
    bus.shutdown().await;
    drop(server);
}
