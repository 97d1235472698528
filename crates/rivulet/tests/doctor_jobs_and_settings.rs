//! `rivulet doctor` (O-DOCTOR-1) on a real `redis-server`, the job-queue and server
//! checks: expired leases and the parked counter (broken with raw commands on the
//! test's own server, as a crashed worker would leave them), unsafe Redis settings, an
//! ACL user that may not read them, a cluster, and limits that make no sense.

#![cfg(feature = "redis")]

mod common;
mod doctor_kit;

use std::time::Duration;

use common::*;
use doctor_kit::*;
use rivulet::doctor::{Check, Doctor, DoctorOptions, SettingsChecked, Severity};
use rivulet::{Bus, JobState, MemoryBackend, Queue, RedisBackend};
use rivulet_testkit::RedisServer;

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
    assert!(
        report.findings[0]
            .summary
            .starts_with("1 active job has an expired lease")
    );
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
    make_stalled(&mut con, tag, &id).await;

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
