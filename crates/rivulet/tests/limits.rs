//! Limits on the memory backend: header sizes and counts are refused at publish with
//! nothing written, and every duration option either fails `build()` with a
//! configuration error naming the option and its limit, or works without panicking.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rivulet::{
    Bus, BusBuilder, Claim, Delivery, Error, ErrorKind, HandlerError, IdempotencyStore,
    MemoryBackend, MemoryIdempotencyStore, RetryPolicy, StartFrom, TopicOptions,
};
use tokio::time::Instant;

type Seen = Arc<Mutex<Vec<Bytes>>>;

async fn wait_for(seen: &Seen, n: usize) -> Vec<Bytes> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = seen.lock().expect("lock").clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} messages, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Ready = std::future::Ready<Result<(), HandlerError>>;

fn recorder(seen: &Seen) -> impl Fn(Delivery<Bytes>) -> Ready + Send + Sync + 'static {
    let seen = seen.clone();
    move |d: Delivery<Bytes>| {
        seen.lock().expect("lock").push(d.into_payload());
        std::future::ready(Ok(()))
    }
}

fn header_limit(err: &Error, needle: &str) {
    assert_eq!(err.kind(), ErrorKind::HeaderLimit, "{err:?}");
    assert!(
        err.to_string().contains(needle),
        "{err} should name {needle}"
    );
}

#[tokio::test]
async fn header_limits_are_enforced_at_publish_and_nothing_is_written() {
    let bus = Bus::memory().expect("bus");
    let t = "headers";
    // At the limits: accepted.
    let name_256 = "n".repeat(256);
    let value_8k = "v".repeat(8192);
    bus.publish_raw(t, Bytes::from_static(b"ok"))
        .header(name_256.clone(), "v")
        .header("big", value_8k.clone())
        .headers((0..62).map(|i| (format!("h{i:02}"), "v")))
        .await
        .expect("64 headers, a 256-byte name and an 8 KiB value are within the limits");

    let seen: Seen = Default::default();
    let _sub = bus
        .subscribe_raw(t, "reader", recorder(&seen))
        .start_from(StartFrom::New)
        .await
        .expect("subscribe");

    // Over the limits: refused with the limit's value in the message.
    let err = bus
        .publish_raw(t, Bytes::from_static(b"x"))
        .header("n".repeat(257), "v")
        .await
        .expect_err("name of 257 bytes");
    assert_eq!(err.kind(), ErrorKind::InvalidName, "{err:?}");
    assert!(err.to_string().contains("256"), "{err}");
    let err = bus
        .publish_raw(t, Bytes::from_static(b"x"))
        .header("big", "v".repeat(8193))
        .await
        .expect_err("value of 8193 bytes");
    header_limit(&err, "8192");
    let err = bus
        .publish_raw(t, Bytes::from_static(b"x"))
        .headers((0..65).map(|i| (format!("h{i:02}"), "v")))
        .await
        .expect_err("65 headers");
    header_limit(&err, "64");
    // Eight 8 KiB values plus their names: over 64 KiB in all.
    let err = bus
        .publish_raw(t, Bytes::from_static(b"x"))
        .headers((0..8).map(|i| (format!("h{i}"), "v".repeat(8192))))
        .await
        .expect_err("more than 64 KiB of headers");
    header_limit(&err, "65536");
    let err = bus
        .publish_batch_raw(t, vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")])
        .header("big", "v".repeat(8193))
        .await
        .expect_err("batch with a value of 8193 bytes");
    header_limit(&err, "8192");

    // Nothing was written: the reader gets only the sentinel.
    bus.publish_raw(t, Bytes::from_static(b"sentinel"))
        .await
        .expect("sentinel");
    let got = wait_for(&seen, 1).await;
    assert_eq!(got, vec![Bytes::from_static(b"sentinel")]);
    bus.shutdown().await;
}

type Setter = fn(BusBuilder) -> BusBuilder;

fn config_error(what: &str, result: rivulet::Result<Bus>, option: &str, limit: &str) {
    match result {
        Err(Error::Config(msg)) => {
            assert!(msg.contains(option), "{what}: {msg:?} should name {option}");
            assert!(
                msg.contains(limit),
                "{what}: {msg:?} should name the limit {limit}"
            );
        }
        Err(other) => panic!("{what}: expected a configuration error, got {other:?}"),
        Ok(_) => panic!("{what}: Duration::MAX was accepted"),
    }
}

#[tokio::test]
async fn every_duration_option_refuses_duration_max_naming_its_limit() {
    let cases: [(&str, &str, Setter); 14] = [
        ("block_timeout", "1 h", |b| b.block_timeout(Duration::MAX)),
        ("reclaim_interval", "24 h", |b| {
            b.reclaim_interval(Duration::MAX)
        }),
        ("min_idle", "24 h", |b| b.min_idle(Duration::MAX)),
        ("drain_timeout", "24 h", |b| b.drain_timeout(Duration::MAX)),
        ("retry_mover_interval", "1 h", |b| {
            b.retry_mover_interval(Duration::MAX)
        }),
        ("trim_interval", "24 h", |b| b.trim_interval(Duration::MAX)),
        ("broadcast_ttl", "24 h", |b| b.broadcast_ttl(Duration::MAX)),
        ("dedup_window", "30 days", |b| b.dedup_window(Duration::MAX)),
        ("idempotency_ttl", "365 days", |b| {
            b.idempotency_ttl(Duration::MAX)
        }),
        ("idempotency_claim_ttl", "24 h", |b| {
            b.idempotency_claim_ttl(Duration::MAX)
        }),
        ("max_age", "3650 days", |b| {
            b.topic("t", TopicOptions::default().max_age(Duration::MAX))
        }),
        ("backpressure_wait", "1 h", |b| {
            b.topic(
                "t",
                TopicOptions::default().backpressure_wait(Duration::MAX),
            )
        }),
        ("backoff", "7 days", |b| {
            b.retry(RetryPolicy::default().backoff(Duration::MAX))
        }),
        ("max_delay", "7 days", |b| {
            b.retry(RetryPolicy::default().max_delay(Duration::MAX))
        }),
    ];
    for (option, limit, set) in cases {
        let result = set(Bus::builder(MemoryBackend::new())).build();
        config_error(option, result, option, limit);
    }
    // A handler's own retry policy is checked the same way.
    let bus = Bus::memory().expect("bus");
    let err = bus
        .subscribe_raw("t", "h", recorder(&Seen::default()))
        .retry(RetryPolicy::default().backoff(Duration::MAX))
        .await
        .expect_err("handler backoff");
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    assert!(err.to_string().contains("7 days"), "{err}");
}

#[tokio::test]
async fn every_duration_option_at_its_limit_works() {
    let day = Duration::from_secs(24 * 3600);
    let bus = Bus::builder(MemoryBackend::new())
        .block_timeout(Duration::from_secs(3600))
        .reclaim_interval(day)
        .min_idle(day)
        .drain_timeout(day)
        .retry_mover_interval(Duration::from_secs(3600))
        .trim_interval(day)
        .broadcast_ttl(day)
        .dedup_window(30 * day)
        .idempotency_ttl(365 * day)
        .idempotency_claim_ttl(day)
        .idempotency(MemoryIdempotencyStore::new())
        .retry(RetryPolicy::default().backoff(7 * day).max_delay(7 * day))
        .topic(
            "t",
            TopicOptions::default()
                .max_age(3650 * day)
                .backpressure(rivulet::Backpressure::MaxLength(1_000))
                .backpressure_wait(Duration::from_secs(3600)),
        )
        .build()
        .expect("every duration at its maximum is accepted");
    let seen: Seen = Default::default();
    let _plain = bus
        .subscribe_raw("t", "plain", recorder(&seen))
        .start_from(StartFrom::Beginning)
        .await
        .expect("subscribe");
    let _broadcast = bus
        .subscribe_raw("t", "everyone", recorder(&seen))
        .broadcast()
        .start_from(StartFrom::Beginning)
        .await
        .expect("broadcast");
    let failing: Arc<Mutex<u32>> = Default::default();
    let runs = failing.clone();
    let failing_sub = bus
        .subscribe_raw("t", "failing", move |_d: Delivery<Bytes>| {
            *runs.lock().expect("lock") += 1;
            // 2^64 + 5 ms: a u64 millisecond cast would wrap round to 5 ms.
            let delay = Duration::new(18_446_744_073_709_551, 621_000_000);
            std::future::ready(Err(HandlerError::retryable("later").retry_after(delay)))
        })
        .idempotent()
        .start_from(StartFrom::Beginning)
        .await
        .expect("failing");
    bus.publish_raw("t", Bytes::from_static(b"a"))
        .id("order-1")
        .await
        .expect("idempotent publish");
    bus.publish_batch_raw("t", vec![Bytes::from_static(b"b")])
        .await
        .expect("batch");
    wait_for(&seen, 4).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    // Both messages failed once and were rescheduled (7 days out, the cap).
    while failing_sub.stats().retried < 2 {
        assert!(
            Instant::now() < deadline,
            "the failing handler's retries were not scheduled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*failing.lock().expect("lock"), 2);
    bus.trim("t").await.expect("trim");
    bus.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn memory_idempotency_store_accepts_duration_max() {
    let store = MemoryIdempotencyStore::new();
    assert_eq!(
        store.claim("k", Duration::MAX).await.ok(),
        Some(Claim::Acquired)
    );
    assert_eq!(
        store.claim("k", Duration::MAX).await.ok(),
        Some(Claim::Busy)
    );
    tokio::time::advance(Duration::from_secs(10 * 365 * 24 * 3600)).await;
    assert_eq!(
        store.claim("k", Duration::MAX).await.ok(),
        Some(Claim::Busy)
    );
    store.complete("k", Duration::MAX).await.expect("complete");
    assert_eq!(
        store.claim("k", Duration::MAX).await.ok(),
        Some(Claim::Done)
    );
}
