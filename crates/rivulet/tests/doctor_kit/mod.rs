//! Helpers of the doctor tests (`tests/doctor*.rs`): a durable server, short limits,
//! and the states a healthy workload and a crashed worker leave.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rivulet::doctor::{Check, Doctor, DoctorOptions, Report};
use rivulet::{Bus, Delivery, HandlerError, Job, Queue, RetryPolicy};
use rivulet_testkit::RedisServer;

use crate::common::*;

/// A server with the append-only file on, so the settings checks have nothing to say.
pub(crate) async fn durable_server() -> RedisServer {
    tokio::task::spawn_blocking(|| RedisServer::builder().aof(true).start())
        .await
        .expect("spawn_blocking")
        .expect("redis-server")
}

/// Limits short enough for a test.
pub(crate) fn options() -> DoctorOptions {
    DoctorOptions::default()
        .gone_after(Duration::from_millis(300))
        .retry_overdue(Duration::from_millis(200))
        .stall_grace(Duration::from_millis(200))
        .lag_limit(10)
        .dead_letter_limit(3)
        .dead_letter_growth(3, Duration::from_secs(3600))
}

pub(crate) async fn doctor(url: &str) -> Doctor {
    Doctor::new(backend(url).await).options(options())
}

/// Examines until a finding of `check` shows up (some need time to pass first).
pub(crate) async fn until_found(doctor: &Doctor, check: Check) -> Report {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = doctor.examine().await.expect("examine");
        if report.of(check).next().is_some() {
            return report;
        }
        assert!(Instant::now() < deadline, "no {check} finding: {report:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn checks(report: &Report) -> Vec<Check> {
    report.findings.iter().map(|f| f.check).collect()
}

/// A bus whose retry mover never runs during the test (so retries stay scheduled).
pub(crate) async fn bus_without_mover(url: &str) -> Bus {
    builder(backend(url).await)
        .retry_mover_interval(Duration::from_secs(3600))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(400)),
        )
        .build()
        .expect("bus")
}

/// Creates the group of handler `h` on `topic` (registered), then stops the bus.
pub(crate) async fn registered_group(url: &str, topic: &str, h: &str) -> String {
    let bus = bus(url).await;
    let sub = bus
        .subscribe(topic, h, |_d: Delivery<u32>| async { Ok(()) })
        .await
        .expect("subscribe");
    let group = sub.group().as_str().to_owned();
    bus.shutdown().await;
    group
}

/// Publishes and handles messages (one retried, one dead-lettered), runs jobs (one
/// retried), and stops everything cleanly.
pub(crate) async fn workload(backend: impl Into<rivulet::AnyBackend> + Clone) {
    let bus = Bus::builder(backend.clone())
        .app("t")
        .block_timeout(Duration::from_millis(100))
        .retry_mover_interval(Duration::from_millis(50))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(20)),
        )
        .build()
        .expect("bus");
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let _sub = bus
        .subscribe("work", "audit", move |d: Delivery<u32>| {
            let h = h.clone();
            async move {
                let n = *d.payload();
                if n == 3 && d.attempt() == 1 {
                    return Err(HandlerError::retryable("once"));
                }
                h.fetch_add(1, Ordering::SeqCst);
                if n == 7 {
                    return Err(HandlerError::permanent("poison"));
                }
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    for i in 0..20u32 {
        bus.publish("work", &i).await.expect("publish");
    }
    wait_until("20 handled", Duration::from_secs(10), || {
        handled.load(Ordering::SeqCst) == 20
    })
    .await;
    let dead = bus.dead_letters("work").expect("dead letters");
    wait_for("the dead letter", Duration::from_secs(5), || async {
        dead.len().await.expect("len") == 1
    })
    .await;

    let q = Queue::new(backend, "mail").expect("queue");
    let worker = q
        .worker(|job: Job<u32>| async move {
            if *job.data() == 2 && job.attempt() == 1 {
                return Err(HandlerError::retryable("once"));
            }
            Ok(*job.data())
        })
        .block_timeout(Duration::from_millis(100))
        .await
        .expect("worker");
    for i in 0..10u32 {
        q.add("send", &i)
            .backoff(RetryPolicy::default().backoff(Duration::from_millis(10)))
            .await
            .expect("add");
    }
    wait_for("10 completed", Duration::from_secs(10), || async {
        q.counts().await.expect("counts").completed == 10
    })
    .await;
    worker.shutdown().await;
    bus.shutdown().await;
}

/// Adds a job and makes it look like the job of a worker that crashed long ago: active,
/// its lease expired a minute ago, no worker left to run the stall check.
pub(crate) async fn stalled_job(url: &str, q: &Queue) -> rivulet::JobId {
    let id = q.add("send", &1u32).await.expect("add").id;
    let tag = format!("{{rivulet/queue/{}}}", q.name());
    let mut con = raw(url).await;
    make_stalled(&mut con, &tag, &id).await;
    id
}

/// Makes waiting job `id` of the queue with tag `tag` look like the job of a worker that
/// crashed long ago (on any connection: a server's or a cluster's).
pub(crate) async fn make_stalled(
    con: &mut impl redis::aio::ConnectionLike,
    tag: &str,
    id: &rivulet::JobId,
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let _: () = redis::pipe()
        .cmd("ZREM")
        .arg(format!("{tag}/waiting"))
        .arg(id.as_str())
        .ignore()
        .cmd("ZADD")
        .arg(format!("{tag}/active"))
        .arg(now_ms - 60_000)
        .arg(id.as_str())
        .ignore()
        .cmd("HSET")
        .arg(format!("{tag}/job/{id}"))
        .arg("state")
        .arg("active")
        .arg("attempt")
        .arg(1)
        .arg("token")
        .arg(1)
        .arg("worker")
        .arg("deadhost:1")
        .ignore()
        .query_async(con)
        .await
        .expect("fake a crashed worker");
}
