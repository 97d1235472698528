//! `rivulet doctor` (O-DOCTOR-1) on a real `redis-server`: each check against the
//! broken state it looks for (made through the public API where possible, with raw
//! commands on the test's own server where a crash has to be faked), the repair of the
//! fixable ones, and a healthy store after a normal workload with no finding at all.

#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rivulet::doctor::{Check, Doctor, DoctorOptions, Report, SettingsChecked, Severity};
use rivulet::{
    Bus, Delivery, HandlerError, Job, JobState, MemoryBackend, Queue, RedisBackend, RetryPolicy,
};
use rivulet_testkit::RedisServer;

/// A server with the append-only file on, so the settings checks have nothing to say.
async fn durable_server() -> RedisServer {
    tokio::task::spawn_blocking(|| RedisServer::builder().aof(true).start())
        .await
        .expect("spawn_blocking")
        .expect("redis-server")
}

/// Limits short enough for a test.
fn options() -> DoctorOptions {
    DoctorOptions::default()
        .gone_after(Duration::from_millis(300))
        .retry_overdue(Duration::from_millis(200))
        .stall_grace(Duration::from_millis(200))
        .lag_limit(10)
        .dead_letter_limit(3)
        .dead_letter_growth(3, Duration::from_secs(3600))
}

async fn doctor(url: &str) -> Doctor {
    Doctor::new(backend(url).await).options(options())
}

/// Examines until a finding of `check` shows up (some need time to pass first).
async fn until_found(doctor: &Doctor, check: Check) -> Report {
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

fn checks(report: &Report) -> Vec<Check> {
    report.findings.iter().map(|f| f.check).collect()
}

/// A bus whose retry mover never runs during the test (so retries stay scheduled).
async fn bus_without_mover(url: &str) -> Bus {
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
async fn registered_group(url: &str, topic: &str, h: &str) -> String {
    let bus = bus(url).await;
    let sub = bus
        .subscribe(topic, h, |_d: Delivery<u32>| async { Ok(()) })
        .await
        .expect("subscribe");
    let group = sub.group().as_str().to_owned();
    bus.shutdown().await;
    group
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_store_after_a_normal_workload_has_no_finding() {
    let server = durable_server().await;
    let url = server.url();
    workload(backend(&url).await).await;
    let report = doctor(&url).await.examine().await.expect("examine");
    assert!(report.findings.is_empty(), "{report:#?}");
    assert_eq!(report.settings, SettingsChecked::Checked);
    assert_eq!((report.topics, report.queues), (1, 1));
    assert!(!report.has_errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_memory_store_has_no_finding_and_no_settings_to_check() {
    let backend = MemoryBackend::new();
    workload(backend.clone()).await;
    let report = Doctor::new(backend)
        .options(options())
        .examine()
        .await
        .expect("examine");
    assert!(report.findings.is_empty(), "{report:#?}");
    assert_eq!(report.settings, SettingsChecked::NotApplicable);
    assert_eq!((report.topics, report.queues), (1, 1));
}

/// Publishes and handles messages (one retried, one dead-lettered), runs jobs (one
/// retried), and stops everything cleanly.
async fn workload(backend: impl Into<rivulet::AnyBackend> + Clone) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_pending_on_a_gone_consumer_are_found_and_handed_back() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.gone";
    let group = registered_group(&url, topic, "billing").await;
    let publisher = bus(&url).await;
    for i in 0..3u32 {
        publisher.publish(topic, &i).await.expect("publish");
    }
    publisher.shutdown().await;
    // A consumer of a process that crashed: it read three entries and is gone.
    let dead = "deadhost:1:cafebabe:0";
    let _: redis::Value = cmd(
        &url,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&group)
            .arg(dead)
            .arg("COUNT")
            .arg(10)
            .arg("STREAMS")
            .arg(stream(topic))
            .arg(">"),
    )
    .await;

    let doctor = doctor(&url).await;
    let report = until_found(&doctor, Check::GoneConsumer).await;
    assert_eq!(checks(&report), vec![Check::GoneConsumer], "{report:#?}");
    let f = &report.findings[0];
    assert_eq!(f.severity, Severity::Error);
    assert!(f.fixable);
    let names: Vec<&str> = f.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec![topic, group.as_str(), dead]);
    assert!(f.summary.starts_with("3 entries pending"), "{}", f.summary);
    assert!(report.has_errors());

    let after = doctor.repair().await.expect("repair");
    assert!(after.findings.is_empty(), "{after:#?}");
    assert_eq!(after.repairs.len(), 1);
    assert!(
        after.repairs[0].done.starts_with("handed 3 entries"),
        "{:?}",
        after.repairs
    );
    assert_eq!(pending(&url, &stream(topic), &group).await, 0);

    // The group's next consumer gets them at once, from the retry lane.
    let bus = bus(&url).await;
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let _sub = bus
        .subscribe(topic, "billing", move |_d: Delivery<u32>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    wait_until("the 3 handed-back entries", Duration::from_secs(5), || {
        handled.load(Ordering::SeqCst) == 3
    })
    .await;
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_consumer_of_a_foreign_group_is_reported_but_left_alone() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.foreign";
    let publisher = bus(&url).await;
    publisher.publish(topic, &1u32).await.expect("publish");
    publisher.shutdown().await;
    // A group another program created (never registered by rivulet, no retry lane).
    for c in [
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream(topic))
            .arg("analytics")
            .arg("0")
            .to_owned(),
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("analytics")
            .arg("py-worker-1")
            .arg("STREAMS")
            .arg(stream(topic))
            .arg(">")
            .to_owned(),
    ] {
        let _: redis::Value = cmd(&url, &mut c.clone()).await;
    }
    let doctor = doctor(&url).await;
    let report = until_found(&doctor, Check::GoneConsumer).await;
    assert!(!report.findings[0].fixable, "{report:#?}");
    let after = doctor.repair().await.expect("repair");
    assert!(after.repairs.is_empty());
    assert_eq!(checks(&after), vec![Check::GoneConsumer]);
    assert_eq!(pending(&url, &stream(topic), "analytics").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_broadcast_group_is_found_and_removed() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.orphans";
    let publisher = bus(&url).await;
    publisher.publish(topic, &1u32).await.expect("publish");
    publisher.shutdown().await;
    // What a crashed process leaves: its registered broadcast group, no heartbeat.
    let orphan = "t:doc.orphans__cache__deadhost_1_cafebabe";
    let _: () = cmd(
        &url,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream(topic))
            .arg(orphan)
            .arg("0"),
    )
    .await;
    for set in ["broadcast", "groups"] {
        let _: i64 = cmd(&url, redis::cmd("SADD").arg(key(topic, set)).arg(orphan)).await;
    }

    let doctor = doctor(&url).await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(
        checks(&report),
        vec![Check::OrphanBroadcastGroup],
        "{report:#?}"
    );
    assert_eq!(report.findings[0].severity, Severity::Warning);
    assert!(report.findings[0].fixable);

    let after = doctor.repair().await.expect("repair");
    assert!(after.findings.is_empty(), "{after:#?}");
    assert!(
        after.repairs[0].done.contains(orphan),
        "{:?}",
        after.repairs
    );
    let groups: Vec<redis::Value> =
        cmd(&url, redis::cmd("XINFO").arg("GROUPS").arg(stream(topic))).await;
    assert!(!format!("{groups:?}").contains("deadhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_far_behind_pins_retention_and_is_explained_not_repaired() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.lag";
    registered_group(&url, topic, "slow").await;
    let publisher = bus(&url).await;
    for i in 0..12u32 {
        publisher.publish(topic, &i).await.expect("publish");
    }
    publisher.shutdown().await;

    let doctor = doctor(&url).await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(checks(&report), vec![Check::RetentionPinned], "{report:#?}");
    let f = &report.findings[0];
    assert_eq!(f.severity, Severity::Warning);
    assert!(!f.fixable);
    assert!(
        f.summary.contains("12 entries not yet delivered"),
        "{}",
        f.summary
    );
    // Nothing is safe to repair: the finding stays, and nothing was touched.
    let after = doctor.repair().await.expect("repair");
    assert!(after.repairs.is_empty());
    assert_eq!(checks(&after), vec![Check::RetentionPinned]);
    let len: u64 = cmd(&url, redis::cmd("XLEN").arg(stream(topic))).await;
    assert_eq!(len, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_group_gone_from_its_topic_is_found() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.missing";
    let group = registered_group(&url, topic, "audit").await;
    let _: i64 = cmd(
        &url,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream(topic))
            .arg(&group),
    )
    .await;
    let report = doctor(&url).await.examine().await.expect("examine");
    assert_eq!(checks(&report), vec![Check::MissingGroup], "{report:#?}");
    assert_eq!(report.findings[0].objects[1].name, group);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_retries_are_found_and_moved() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.retry";
    let bus = bus_without_mover(&url).await;
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let _sub = bus
        .subscribe(topic, "flaky", move |_d: Delivery<u32>| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::retryable("down"))
            }
        })
        .await
        .expect("subscribe");
    bus.publish(topic, &1u32).await.expect("publish");
    wait_for(
        "the retry to be scheduled",
        Duration::from_secs(5),
        || async { cmd::<u64>(&url, redis::cmd("ZCARD").arg(key(topic, "retry"))).await == 1 },
    )
    .await;
    // The only process using the topic stops: nobody moves the retry.
    bus.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let doctor = doctor(&url).await;
    let report = until_found(&doctor, Check::RetryOverdue).await;
    assert_eq!(checks(&report), vec![Check::RetryOverdue], "{report:#?}");
    assert_eq!(report.findings[0].severity, Severity::Error);

    let after = doctor.repair().await.expect("repair");
    assert!(after.findings.is_empty(), "{after:#?}");
    assert!(
        after.repairs[0].done.starts_with("moved 1 retries"),
        "{:?}",
        after.repairs
    );
    let scheduled: u64 = cmd(&url, redis::cmd("ZCARD").arg(key(topic, "retry"))).await;
    let lane: u64 = cmd(
        &url,
        redis::cmd("XLEN").arg(key(topic, "lane/t:doc.retry__flaky")),
    )
    .await;
    assert_eq!((scheduled, lane), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_retries_are_found_and_moved_on_the_memory_backend() {
    let backend = MemoryBackend::new();
    let bus = Bus::builder(backend.clone())
        .app("t")
        .block_timeout(Duration::from_millis(50))
        .retry_mover_interval(Duration::from_secs(3600))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(300)),
        )
        .build()
        .expect("bus");
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let _sub = bus
        .subscribe("doc.retry", "flaky", move |_d: Delivery<u32>| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::retryable("down"))
            }
        })
        .await
        .expect("subscribe");
    bus.publish("doc.retry", &1u32).await.expect("publish");
    wait_until("the first attempt", Duration::from_secs(5), || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    bus.shutdown().await;

    let doctor = Doctor::new(backend).options(options());
    let report = until_found(&doctor, Check::RetryOverdue).await;
    assert_eq!(checks(&report), vec![Check::RetryOverdue], "{report:#?}");
    let after = doctor.repair().await.expect("repair");
    assert!(after.findings.is_empty(), "{after:#?}");
    assert!(
        after.repairs[0].done.starts_with("moved 1 retries"),
        "{:?}",
        after.repairs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_growth_is_reported() {
    let server = durable_server().await;
    let url = server.url();
    let topic = "doc.dlq";
    let bus = bus(&url).await;
    let _sub = bus
        .subscribe(topic, "strict", |_d: Delivery<u32>| async {
            Err::<(), _>(HandlerError::permanent("poison"))
        })
        .await
        .expect("subscribe");
    for i in 0..4u32 {
        bus.publish(topic, &i).await.expect("publish");
    }
    let dead = bus.dead_letters(topic).expect("dead letters");
    wait_for("4 dead letters", Duration::from_secs(5), || async {
        dead.len().await.expect("len") == 4
    })
    .await;
    bus.shutdown().await;

    let report = doctor(&url).await.examine().await.expect("examine");
    assert_eq!(
        checks(&report),
        vec![Check::DeadLetterGrowth],
        "{report:#?}"
    );
    let f = &report.findings[0];
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.summary.contains("holds 4 entries, more than 3 of them"),
        "{}",
        f.summary
    );
}

/// Adds a job and makes it look like the job of a worker that crashed long ago: active,
/// its lease expired a minute ago, no worker left to run the stall check.
async fn stalled_job(url: &str, q: &Queue) -> rivulet::JobId {
    let id = q.add("send", &1u32).await.expect("add").id;
    let tag = format!("{{rivulet/queue/{}}}", q.name());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut con = raw(url).await;
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
        .query_async(&mut con)
        .await
        .expect("fake a crashed worker");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_jobs_with_an_expired_lease_are_found_and_returned() {
    let server = durable_server().await;
    let url = server.url();
    let q = Queue::new(backend(&url).await, "doc-stalled").expect("queue");
    let id = stalled_job(&url, &q).await;
    assert_eq!(q.counts().await.expect("counts").active, 1);

    let doctor = doctor(&url).await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(checks(&report), vec![Check::ExpiredLease], "{report:#?}");
    assert_eq!(report.findings[0].severity, Severity::Error);
    assert!(report.findings[0].summary.starts_with("1 active jobs"));
    // The same over RESP3 (scores are doubles there, pairs nested).
    let resp3 = Doctor::new(backend(&format!("{url}?protocol=resp3")).await).options(options());
    let again = resp3.examine().await.expect("examine over RESP3");
    assert_eq!(checks(&again), vec![Check::ExpiredLease], "{again:#?}");
    // The lease expired a minute before the test started: read back, not zero.
    let summary = &again.findings[0].summary;
    assert!(
        summary.contains(" s ago)") && !summary.contains("expired 0"),
        "{summary}"
    );

    let after = doctor.repair().await.expect("repair");
    assert!(after.findings.is_empty(), "{after:#?}");
    assert!(
        after.repairs[0].done.contains("1 waiting again"),
        "{:?}",
        after.repairs
    );
    let job = q.job(&id).await.expect("job").expect("exists");
    assert_eq!(job.state, JobState::Waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_counter_that_disagrees_with_the_parked_sets_is_recounted() {
    let server = durable_server().await;
    let url = server.url();
    let q = Queue::new(
        RedisBackend::connect(&url).await.expect("connect"),
        "doc-parked",
    )
    .expect("queue");
    q.pause_name("report").await.expect("pause");
    q.add("report", &1u32).await.expect("add");
    assert_eq!(q.counts().await.expect("counts").parked, 1);
    let _: i64 = cmd(
        &url,
        redis::cmd("HINCRBY")
            .arg("{rivulet/queue/doc-parked}/meta")
            .arg("parked")
            .arg(5),
    )
    .await;

    let doctor = doctor(&url).await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(checks(&report), vec![Check::ParkedCount], "{report:#?}");
    assert!(
        report.findings[0].summary.contains("says 6 but"),
        "{}",
        report.findings[0].summary
    );

    let after = doctor.repair().await.expect("repair");
    assert!(after.findings.is_empty(), "{after:#?}");
    assert_eq!(after.repairs[0].done, "parked counter set from 6 to 1");
    let c = q.counts().await.expect("counts");
    assert_eq!((c.parked, c.waiting), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_settings_that_break_the_guarantees_are_reported() {
    // The test kit's default: no append-only file.
    let server = server().await;
    let url = server.url();
    let doctor = doctor(&url).await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(checks(&report), vec![Check::Durability], "{report:#?}");
    assert_eq!(report.findings[0].severity, Severity::Warning);
    assert!(!report.has_errors());

    let _: () = cmd(
        &url,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("allkeys-lru"),
    )
    .await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(
        checks(&report),
        vec![Check::Eviction, Check::Durability],
        "{report:#?}"
    );
    assert!(report.has_errors());
    // Repairs never touch server settings.
    let after = doctor.repair().await.expect("repair");
    assert!(after.repairs.is_empty());
    assert!(after.has_errors());

    // Back to noeviction, with a limit just above what is used.
    let info: String = cmd(&url, redis::cmd("INFO").arg("memory")).await;
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let _: () = cmd(
        &url,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction")
            .arg("maxmemory")
            .arg(used + used / 20),
    )
    .await;
    let report = doctor.examine().await.expect("examine");
    assert_eq!(
        checks(&report),
        vec![Check::Durability, Check::Memory],
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_hidden_from_an_acl_user_are_reported_as_unchecked_not_failed() {
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::builder()
            .aof(true)
            .acl_user(
                "app",
                "app-secret",
                &[
                    "~rivulet/*",
                    "~{rivulet/*",
                    "&rivulet/*",
                    "+@all",
                    "-config",
                    "-info",
                ],
            )
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("redis-server");
    let url = server.url_for_user("app").expect("user url");
    let bus = bus(&url).await;
    bus.publish("doc.acl", &1u32).await.expect("publish");
    bus.shutdown().await;

    let report = doctor(&url).await.examine().await.expect("examine");
    assert_eq!(report.settings, SettingsChecked::Partly);
    assert_eq!(
        checks(&report),
        vec![Check::SettingUnchecked; 3],
        "{report:#?}"
    );
    assert!(report.findings.iter().all(|f| f.severity == Severity::Info));
    assert!(!report.has_errors());
    assert_eq!(report.topics, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_runs_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| {
        rivulet_testkit::RedisCluster::builder()
            .masters(3)
            .aof(true)
            .start()
    })
    .await
    .expect("spawn_blocking")
    .expect("cluster");
    let urls = cluster.urls();
    let backend = RedisBackend::cluster(&urls).await.expect("connect");
    let q = Queue::new(backend.clone(), "doc-cluster").expect("queue");
    let id = q.add("send", &1u32).await.expect("add").id;
    let bus = Bus::builder(backend.clone()).app("t").build().expect("bus");
    bus.publish("doc.cluster", &1u32).await.expect("publish");
    bus.shutdown().await;
    let tag = "{rivulet/queue/doc-cluster}";
    let mut con = cluster
        .client()
        .expect("client")
        .get_async_connection()
        .await
        .expect("connect");
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
        .ignore()
        .query_async(&mut con)
        .await
        .expect("fake a crashed worker");

    let doctor = Doctor::new(backend).options(options());
    let report = doctor.examine().await.expect("examine");
    assert_eq!(checks(&report), vec![Check::ExpiredLease], "{report:#?}");
    assert_eq!(report.settings, SettingsChecked::Checked);
    assert_eq!((report.topics, report.queues), (1, 1));
    let after = doctor.repair().await.expect("repair");
    assert!(!after.has_errors(), "{after:#?}");
    assert_eq!(
        q.job(&id).await.expect("job").expect("exists").state,
        JobState::Waiting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_is_reported_and_the_rest_is_still_examined() {
    let server = durable_server().await;
    let url = server.url();
    registered_group(&url, "doc.broken", "audit").await;
    let q = Queue::new(backend(&url).await, "doc-stalled").expect("queue");
    stalled_job(&url, &q).await;
    // Someone overwrote the topic's retry set with a string.
    let _: () = cmd(
        &url,
        redis::cmd("SET")
            .arg(key("doc.broken", "retry"))
            .arg("oops"),
    )
    .await;

    let report = doctor(&url).await.examine().await.expect("examine");
    assert_eq!(
        checks(&report),
        vec![Check::ExpiredLease, Check::Unreadable],
        "{report:#?}"
    );
    let f = &report.findings[1];
    assert_eq!(f.objects[0].name, "doc.broken");
    assert!(f.summary.contains("WRONGTYPE"), "{}", f.summary);
}

#[tokio::test]
async fn limits_that_make_no_sense_are_refused() {
    let doctor = |o: DoctorOptions| Doctor::new(MemoryBackend::new()).options(o);
    for o in [
        DoctorOptions::default().gone_after(Duration::ZERO),
        DoctorOptions::default().stall_grace(Duration::ZERO),
        DoctorOptions::default().memory_ratio(1.5),
        DoctorOptions::default().memory_ratio(f64::NAN),
        DoctorOptions::default().lag_limit(0),
    ] {
        let e = doctor(o.clone()).examine().await.expect_err("refused");
        assert_eq!(e.kind(), rivulet::ErrorKind::Config, "{o:?}: {e}");
        assert!(doctor(o).repair().await.is_err());
    }
    assert!(doctor(DoctorOptions::default()).examine().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_far_behind_and_dead_letter_growth_are_found_on_the_memory_backend() {
    let backend = MemoryBackend::new();
    let bus = Bus::builder(backend.clone())
        .app("t")
        .block_timeout(Duration::from_millis(50))
        .build()
        .expect("bus");
    let slow = bus
        .subscribe("doc.mem", "slow", |_d: Delivery<u32>| async { Ok(()) })
        .await
        .expect("subscribe");
    slow.unsubscribe().await;
    let _strict = bus
        .subscribe("doc.mem", "strict", |_d: Delivery<u32>| async {
            Err::<(), _>(HandlerError::permanent("poison"))
        })
        .await
        .expect("subscribe");
    for i in 0..12u32 {
        bus.publish("doc.mem", &i).await.expect("publish");
    }
    let dead = bus.dead_letters("doc.mem").expect("dead letters");
    wait_for("12 dead letters", Duration::from_secs(5), || async {
        dead.len().await.expect("len") == 12
    })
    .await;
    bus.shutdown().await;

    let report = Doctor::new(backend)
        .options(options())
        .examine()
        .await
        .expect("examine");
    assert_eq!(
        checks(&report),
        vec![Check::RetentionPinned, Check::DeadLetterGrowth],
        "{report:#?}"
    );
    assert_eq!(report.findings[0].objects[1].name, "t:doc.mem__slow");
}
