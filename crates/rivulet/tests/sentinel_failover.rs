//! Sentinel failover (issue 14 item 4): a publisher and a consumer run against a
//! master, a replica and three sentinels; the master is killed (`SIGKILL`) under load.
//! Afterwards every connection — the shared one, the blocking reader, the live
//! subscription — finds the promoted replica by itself, and the checker counts:
//!
//! * messages acknowledged with `wait_for_replicas(1)`: none may be lost;
//! * messages acknowledged without waiting: those lost were within the replication
//!   window (written to the old master, not yet on the replica) — reported, allowed;
//! * messages acknowledged after the failover: all must be handled (recovery).

#![cfg(feature = "redis")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{Bus, Delivery, HandlerError};
use rivulet_testkit::{RedisSentinel, SENTINEL_MASTER_NAME};

const TOPIC: &str = "failover.orders";
const CHANNEL: &str = "failover.live";
const BEFORE_KILL: usize = 300;
const AFTER_FAILOVER: usize = 100;
const DEADLINE: Duration = Duration::from_secs(40);

#[derive(Default)]
struct Ledger {
    waited: HashSet<u32>,
    unwaited: HashSet<u32>,
    after_failover: HashSet<u32>,
    unacknowledged: usize,
    first_error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("lock")
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_continue_after_the_master_is_killed() {
    let started = Instant::now();
    let mut deployment = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("spawn_blocking")
        .expect("start a Sentinel deployment");
    // The builder form, with the sentinels given one by one.
    let backend =
        rivulet::RedisBackendBuilder::sentinel(SENTINEL_MASTER_NAME, &deployment.sentinel_addrs())
            .connect_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_secs(2))
            .await
            .expect("connect through the sentinels");
    // A delivery whose reply died with the master is pending on this consumer in the
    // promoted replica: reclaim hands it back after `min_idle`, kept short here so that
    // recovery happens within the test's deadline.
    let bus = Bus::builder(backend)
        .app("failover")
        .block_timeout(Duration::from_millis(200))
        .retry_mover_interval(Duration::from_millis(100))
        .min_idle(Duration::from_secs(2))
        .reclaim_interval(Duration::from_millis(500))
        .build()
        .expect("bus");

    let handled: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let seen = Arc::clone(&handled);
    let _sub = bus
        .subscribe(TOPIC, "count", move |d: Delivery<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                lock(&seen).insert(*d.payload());
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .expect("subscribe");
    let mut live = bus.live().subscribe(CHANNEL).await.expect("live subscribe");

    // The publisher: alternately waits for one replica or not; after the failover there
    // is no replica left, so it stops asking.
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let failed_over = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (bus, ledger, failed_over) =
            (bus.clone(), Arc::clone(&ledger), Arc::clone(&failed_over));
        tokio::spawn(async move {
            for id in 0u32.. {
                let after = failed_over.load(Ordering::SeqCst);
                let wait = !after && id % 2 == 0;
                let publish = bus.publish(TOPIC, &id);
                let result = if wait {
                    publish
                        .wait_for_replicas(1, Duration::from_millis(500))
                        .await
                } else {
                    publish.await
                };
                let pause = {
                    let mut l = lock(&ledger);
                    match result {
                        Ok(_) if after => drop(l.after_failover.insert(id)),
                        Ok(_) if wait => drop(l.waited.insert(id)),
                        Ok(_) => drop(l.unwaited.insert(id)),
                        Err(e) => {
                            assert!(e.is_transient(), "not transient: {e}");
                            l.unacknowledged += 1;
                            l.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    if l.after_failover.len() >= AFTER_FAILOVER {
                        return;
                    }
                    l.unacknowledged > 0 && !after
                };
                if pause {
                    // Between failures, not to spin while the sentinels elect.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };

    wait_for("load before the kill", || {
        let l = lock(&ledger);
        l.waited.len() + l.unwaited.len() >= BEFORE_KILL
    })
    .await;
    deployment.kill_master().expect("kill the master");
    let killed = Instant::now();
    let deployment = tokio::task::spawn_blocking(move || {
        let port = deployment.wait_for_failover(DEADLINE);
        (deployment, port)
    });
    let (deployment, new_master) = deployment.await.expect("spawn_blocking");
    let new_master = new_master.expect("the sentinels promote the replica");
    let failover_took = killed.elapsed();
    failed_over.store(true, Ordering::SeqCst);
    assert_ne!(new_master, deployment.first_master_port());

    tokio::time::timeout(DEADLINE, publisher)
        .await
        .expect("publishing continues after the failover")
        .expect("publisher task");

    // Everything acknowledged with a replica, and everything after the failover, is
    // handled by the same subscription, now reading from the new master.
    let (waited, unwaited, after, unacknowledged, first_error) = {
        let l = lock(&ledger);
        (
            l.waited.clone(),
            l.unwaited.clone(),
            l.after_failover.clone(),
            l.unacknowledged,
            l.first_error.clone(),
        )
    };
    let required: HashSet<u32> = waited.union(&after).copied().collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let missing = required.difference(&lock(&handled)).count();
        if missing == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let h = lock(&handled);
            let lost_waited = waited.difference(&h).count();
            let lost_after = after.difference(&h).count();
            panic!(
                "lost: {lost_waited} acknowledged with wait_for_replicas(1), {lost_after} after the failover"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The live subscription moved too: publish until one arrives.
    let deadline = Instant::now() + DEADLINE;
    loop {
        bus.live().publish(CHANNEL, &"after").await.ok();
        match tokio::time::timeout(Duration::from_millis(200), live.next()).await {
            Ok(Some(m)) if m.channel == CHANNEL => break,
            Ok(None) => panic!("the live subscription ended"),
            _ => assert!(
                Instant::now() < deadline,
                "no live message after the failover"
            ),
        }
    }

    let h = lock(&handled).clone();
    let lost_waited = waited.difference(&h).count();
    let lost_window = unwaited.difference(&h).count();
    println!(
        "sentinel failover checker: failover took {failover_took:?} (test {:?})\n  \
         acknowledged with wait_for_replicas(1): {}, lost: {lost_waited}\n  \
         acknowledged without waiting: {}, lost within the replication window: {lost_window}\n  \
         acknowledged after the failover (recovered): {}, handled: {}\n  \
         not acknowledged during the failover: {unacknowledged} (first error: {})",
        started.elapsed(),
        waited.len(),
        unwaited.len(),
        after.len(),
        after.intersection(&h).count(),
        first_error.as_deref().unwrap_or("none"),
    );
    assert_eq!(
        lost_waited, 0,
        "a message acknowledged by a replica was lost"
    );
    assert!(
        unacknowledged > 0,
        "the kill was not noticed by the publisher"
    );
    bus.shutdown().await;
}

/// A manual failover demotes the master while it keeps running: writes on the old
/// connections get `READONLY`, reads of a replica's stream give `READONLY` too, and
/// every connection must move. The new master's script cache is flushed, so the retry
/// of a failing handler also proves that scripts are loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_master_hands_every_connection_to_the_new_one() {
    let deployment = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("spawn_blocking")
        .expect("start a Sentinel deployment");
    // The URL form.
    let backend = rivulet::RedisBackend::builder(deployment.url())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .await
        .expect("connect through the sentinels");
    let bus = Bus::builder(backend)
        .app("demoted")
        .block_timeout(Duration::from_millis(200))
        .retry_mover_interval(Duration::from_millis(100))
        .retry(rivulet::RetryPolicy::default().backoff(Duration::from_millis(20)))
        .build()
        .expect("bus");
    let handled: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (seen, tries) = (Arc::clone(&handled), Arc::clone(&attempts));
    let _sub = bus
        .subscribe(TOPIC, "count", move |d: Delivery<u32>| {
            let (seen, tries) = (Arc::clone(&seen), Arc::clone(&tries));
            async move {
                let id = *d.payload();
                if id == FAIL_ONCE && d.attempt() == 1 {
                    lock(&tries).push(d.attempt());
                    return Err(HandlerError::retryable("first attempt fails"));
                }
                lock(&seen).insert(id);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .expect("subscribe");
    let mut live = bus.live().subscribe(CHANNEL).await.expect("live subscribe");
    for id in 0..50u32 {
        bus.publish(TOPIC, &id)
            .wait_for_replicas(1, Duration::from_secs(2))
            .await
            .expect("publish before the failover");
    }

    deployment.failover().expect("SENTINEL FAILOVER");
    let (deployment, new_master) = tokio::task::spawn_blocking(move || {
        let port = deployment.wait_for_failover(DEADLINE);
        (deployment, port)
    })
    .await
    .expect("spawn_blocking");
    let new_master = new_master.expect("the sentinels promote the replica");
    let server = deployment
        .servers()
        .iter()
        .find(|s| s.port() == new_master)
        .expect("the new master is one of the servers");
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec(&mut server.connection().expect("connect to the new master"))
        .expect("SCRIPT FLUSH");

    let mut errors = 0usize;
    let mut id = 100u32;
    let deadline = Instant::now() + DEADLINE;
    let mut after = HashSet::new();
    while after.len() < 50 {
        assert!(Instant::now() < deadline, "publishing did not resume");
        match bus.publish(TOPIC, &id).await {
            Ok(_) => drop(after.insert(id)),
            Err(e) => {
                assert!(e.is_transient(), "not transient: {e}");
                errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        id += 1;
    }
    bus.publish(TOPIC, &FAIL_ONCE)
        .await
        .expect("publish the failing one");
    after.insert(FAIL_ONCE);
    let before: HashSet<u32> = (0..50).collect();
    wait_for("every message handled on the new master", || {
        let h = lock(&handled);
        before.is_subset(&h) && after.is_subset(&h)
    })
    .await;
    assert_eq!(
        *lock(&attempts),
        [1],
        "the failing message was retried once"
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        bus.live().publish(CHANNEL, &"after").await.ok();
        match tokio::time::timeout(Duration::from_millis(200), live.next()).await {
            Ok(Some(m)) if m.channel == CHANNEL => break,
            Ok(None) => panic!("the live subscription ended"),
            _ => assert!(
                Instant::now() < deadline,
                "no live message after the failover"
            ),
        }
    }
    println!(
        "manual failover: {errors} transient publish errors, then {} handled",
        after.len()
    );
    bus.shutdown().await;
    drop(deployment);
}

const FAIL_ONCE: u32 = 1_000_000;

/// TLS and passwords on every link: the master and replica want one password, the
/// sentinels another (given in their URLs), everything speaks TLS only. Publishing and
/// consuming work before and after a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_master_with_tls_and_passwords() {
    const MASTER_PASSWORD: &str = "m/pw?x#1";
    const SENTINEL_PASSWORD: &str = "s@pw:y/2";
    let mut deployment = tokio::task::spawn_blocking(|| {
        RedisSentinel::builder()
            .password(MASTER_PASSWORD)
            .sentinel_password(SENTINEL_PASSWORD)
            .tls(true)
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("start a TLS Sentinel deployment with passwords");
    let sentinels = deployment.sentinel_urls();
    assert!(
        sentinels.iter().all(|u| u.starts_with("rediss://")),
        "{sentinels:?}"
    );
    let ca = deployment.tls_ca().expect("TLS").ca_pem.clone();
    let builder = rivulet::RedisBackendBuilder::sentinel(SENTINEL_MASTER_NAME, &sentinels)
        .password(MASTER_PASSWORD)
        .tls(rivulet::TlsOptions::new().ca_pem(ca))
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2));
    let shown = format!("{builder:?}");
    assert!(!shown.contains("pw"), "a password in {shown}");
    let backend = builder.await.expect("connect through TLS sentinels");
    let bus = Bus::builder(backend)
        .app("tls-sentinel")
        .block_timeout(Duration::from_millis(200))
        .build()
        .expect("bus");
    let handled: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let seen = Arc::clone(&handled);
    let _sub = bus
        .subscribe(TOPIC, "count", move |d: Delivery<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                lock(&seen).insert(*d.payload());
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .expect("subscribe");
    for id in 0..20u32 {
        bus.publish(TOPIC, &id)
            .wait_for_replicas(1, Duration::from_secs(2))
            .await
            .expect("publish before the failover");
    }
    deployment.kill_master().expect("kill the master");
    let (deployment, new_master) = tokio::task::spawn_blocking(move || {
        let port = deployment.wait_for_failover(DEADLINE);
        (deployment, port)
    })
    .await
    .expect("spawn_blocking");
    new_master.expect("the sentinels promote the replica");
    let mut after = 0;
    let mut id = 100u32;
    let deadline = Instant::now() + DEADLINE;
    while after < 20 {
        assert!(Instant::now() < deadline, "publishing did not resume");
        match bus.publish(TOPIC, &id).await {
            Ok(_) => after += 1,
            Err(e) => {
                assert!(e.is_transient(), "not transient: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        id += 1;
    }
    let expected: HashSet<u32> = (0..20).chain(100..120).collect();
    wait_for("every message handled", || {
        expected.is_subset(&lock(&handled))
    })
    .await;
    bus.shutdown().await;
    drop(deployment);
}

/// Jobs across a failover: jobs added before the kill (and replicated: the test checks
/// with `WAIT`) all run after it, jobs added after it too, each once; the worker started
/// before the kill — its blocking wait, its fetches, its lease renewal — moves to the new
/// master by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_and_its_worker_continue_after_the_master_is_killed() {
    let mut deployment = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("spawn_blocking")
        .expect("start a Sentinel deployment");
    let backend = rivulet::RedisBackend::builder(deployment.url())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .await
        .expect("connect through the sentinels");
    let q = rivulet::Queue::new(backend, "failover-jobs").expect("queue");
    let runs: Arc<Mutex<Vec<u32>>> = Arc::default();
    let r = Arc::clone(&runs);
    let worker = q
        .worker(move |job: rivulet::Job<u32>| {
            let r = Arc::clone(&r);
            async move {
                lock(&r).push(*job.data());
                Ok(())
            }
        })
        .concurrency(8)
        .block_timeout(Duration::from_millis(200))
        .stall_check_every(Duration::from_millis(200))
        .await
        .expect("worker");
    // Held back until after the failover, so every job crosses it.
    q.pause().await.expect("pause");
    q.add_bulk((0..100u32).map(|i| q.add("work", &i).job_id(&format!("before-{i}"))))
        .await
        .expect("add before the kill");
    let mut master = deployment.servers()[0].connection().expect("master");
    let replicas: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query(&mut master)
        .expect("WAIT");
    assert_eq!(replicas, 1, "the replica has the jobs before the kill");
    deployment.kill_master().expect("kill the master");
    let deployment = tokio::task::spawn_blocking(move || {
        let port = deployment.wait_for_failover(DEADLINE);
        (deployment, port)
    });
    let (_deployment, new_master) = deployment.await.expect("spawn_blocking");
    new_master.expect("the sentinels promote the replica");
    // Calls may fail until every connection has found the new master: retry them.
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = q.resume().await {
        assert!(Instant::now() < deadline, "resume after the failover: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..50u32 {
        let id = format!("after-{i}");
        while let Err(e) = q.add("work", &(1000 + i)).job_id(&id).await {
            assert!(Instant::now() < deadline, "add after the failover: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    loop {
        if let Ok(c) = q.counts().await
            && c.completed == 150
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every job ran after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ran = lock(&runs).clone();
    ran.sort_unstable();
    let want: Vec<u32> = (0..100).chain(1000..1050).collect();
    assert_eq!(ran, want, "each job ran once");
    worker.shutdown().await;
}
