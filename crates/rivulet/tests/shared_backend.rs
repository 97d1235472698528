//! Several buses on one backend (B-MULTI-1): one bus's shutdown never breaks another,
//! and retention runs in processes that only consume. Memory and Redis.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rivulet::{AnyBackend, Bus, Delivery, MemoryBackend};

async fn second_bus_survives_the_first_shutdown(backend: AnyBackend) {
    let first = Bus::builder(backend.clone())
        .block_timeout(Duration::from_millis(200))
        .build()
        .expect("bus");
    let second = Bus::builder(backend)
        .block_timeout(Duration::from_millis(200))
        .build()
        .expect("bus");
    let _f = first
        .subscribe("sb.t", "first", |_d: Delivery<u32>| async { Ok(()) })
        .await
        .expect("subscribe");
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let s = second
        .subscribe("sb.t", "second", move |_d: Delivery<u32>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    first.shutdown().await;
    assert!(first.is_closed());
    assert!(!second.is_closed());
    second
        .publish("sb.t", &1u32)
        .await
        .expect("publish after the other bus shut down");
    common::wait_until("the second bus handles", Duration::from_secs(5), || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    let _late = second
        .subscribe("sb.t", "late", |_d: Delivery<u32>| async { Ok(()) })
        .await
        .expect("subscribe after the other bus shut down");
    assert_eq!(
        second
            .dead_letters("sb.t")
            .expect("dead letters")
            .len()
            .await
            .expect("len"),
        0
    );
    let mut live = second.live().subscribe("sb.*").await.expect("live");
    second
        .live()
        .publish("sb.x", &1u32)
        .await
        .expect("live publish");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("live message")
            .is_some()
    );
    assert_eq!(s.stats().handled, 1);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_buses_sharing_a_backend_are_independent() {
    second_bus_survives_the_first_shutdown(MemoryBackend::new().into()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_buses_sharing_a_backend_are_independent() {
    let server = common::server().await;
    second_bus_survives_the_first_shutdown(common::backend(&server.url()).await.into()).await;
}

/// Retention in a process that only consumes: an external producer writes with raw
/// XADD, and the consumer's housekeeping trims the acknowledged entries.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_only_process_applies_retention() {
    let server = common::server().await;
    let url = server.url();
    let topic = "sb.retention";
    let bus = common::builder(common::backend(&url).await)
        .topic(topic, rivulet::TopicOptions::default().max_len(10))
        .trim_interval(Duration::from_millis(100))
        .build()
        .expect("bus");
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let _s = bus
        .subscribe_raw(topic, "h", move |_d| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    for i in 0..300 {
        let _: String = common::cmd(
            &url,
            redis::cmd("XADD")
                .arg(common::stream(topic))
                .arg("*")
                .arg("id")
                .arg(format!("m{i}"))
                .arg("payload")
                .arg("x"),
        )
        .await;
    }
    common::wait_until("all handled", Duration::from_secs(10), || {
        handled.load(Ordering::SeqCst) == 300
    })
    .await;
    common::wait_for("the topic trimmed", Duration::from_secs(10), || async {
        let len: i64 = common::cmd(&url, redis::cmd("XLEN").arg(common::stream(topic))).await;
        len < 150
    })
    .await;
    bus.shutdown().await;
}
