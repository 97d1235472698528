//! `rivulet doctor` (O-DOCTOR-1) on a real `redis-server`, the topic checks: each
//! against the broken state it looks for (made through the public API where possible,
//! with raw commands on the test's own server where a crash has to be faked), the repair
//! of the fixable ones, and a healthy store after a normal workload with no finding at
//! all (Redis and memory). Jobs and server settings: `tests/doctor_jobs_and_settings.rs`.

#![cfg(feature = "redis")]

mod common;
mod doctor_kit;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use doctor_kit::*;
use rivulet::doctor::{Check, Doctor, SettingsChecked, Severity};
use rivulet::{Bus, Delivery, HandlerError, MemoryBackend, Queue, RetryPolicy};

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
        after.repairs[0].done.starts_with("moved 1 retry into"),
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
        after.repairs[0].done.starts_with("moved 1 retry into"),
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
