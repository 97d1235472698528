//! Limits and server-side refusals: OOM is transient, a batch that is only partly
//! written says so per message, and durations too long for Redis saturate instead of
//! failing (or panicking).

use std::time::Duration;

use super::*;
use crate::backend::redis::RedisIdempotencyStore;
use crate::error::Error;
use crate::idempotency::{Claim, IdempotencyStore};
use crate::message::now_ms;
use crate::topic::{Backpressure, TopicOptions};
use crate::{Bus, ErrorKind};

fn used_memory(server: &RedisServer) -> u64 {
    let info: String = raw(server, redis::cmd("INFO").arg("memory"));
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Lets the server take about `room` more bytes, then refuses writes with OOM.
fn cap_memory(server: &RedisServer, room: u64) {
    let _: () = raw(
        server,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    );
    let limit = used_memory(server) + room;
    let _: () = raw(
        server,
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit),
    );
}

const CHUNK: usize = 64 * 1024;

#[tokio::test]
async fn out_of_memory_is_a_transient_redis_error() {
    let (server, backend) = start().await;
    let bus = Bus::builder(backend).build().unwrap();
    cap_memory(&server, 256 * 1024);
    let payload = Bytes::from(vec![b'x'; CHUNK]);
    let mut refused = None;
    for _ in 0..200 {
        if let Err(e) = bus.publish_raw("t", payload.clone()).await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the server never ran out of memory");
    match &e {
        Error::Redis(r) => assert_eq!(r.code(), Some("OOM"), "{e:?}"),
        other => panic!("expected a Redis error, got {other:?}"),
    }
    assert!(e.is_transient(), "{e:?}");
    assert!(!e.is_indeterminate(), "{e:?}");
    // It clears when memory is freed (consumers catch up, retention trims).
    let _: () = raw(&server, redis::cmd("DEL").arg(stream_key("t")));
    bus.publish_raw("t", payload).await.unwrap();
}

#[tokio::test]
async fn a_partly_written_batch_reports_each_message() {
    let (server, backend) = start().await;
    let bus = Bus::builder(backend).build().unwrap();
    // Room for a few entries: the first XADDs of the pipeline succeed, the later ones
    // are refused with OOM once the stream has grown past the limit.
    cap_memory(&server, 4 * CHUNK as u64);
    let payloads: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; CHUNK])).collect();
    let err = bus.publish_batch_raw("t", payloads).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PartialBatch, "{err:?}");
    assert!(!err.is_indeterminate(), "every outcome is known: {err}");
    assert!(
        !err.is_transient(),
        "retrying the whole batch would duplicate: {err}"
    );
    let Error::PartialBatch { results } = &err else {
        unreachable!()
    };
    assert_eq!(results.len(), 20);
    let written: Vec<&Published> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!written.is_empty() && written.len() < 20, "{err}");
    assert!(results[0].is_ok() && results[19].is_err(), "{err}");
    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(failure, Error::Redis(r) if r.code() == Some("OOM")),
            "{failure:?}"
        );
        assert!(failure.is_transient());
    }
    // Exactly the messages reported written are in the topic, under the ids returned.
    let ids: Vec<String> = {
        let v: redis::Value = raw(
            &server,
            redis::cmd("XRANGE").arg(stream_key("t")).arg("-").arg("+"),
        );
        crate::backend::redis::reply::array(&v)
            .unwrap()
            .iter()
            .map(|e| {
                let e = crate::backend::redis::reply::array(e).unwrap();
                crate::backend::redis::reply::string(&e[0]).unwrap()
            })
            .collect()
    };
    let reported: Vec<String> = written.iter().map(|p| p.entry_id.0.clone()).collect();
    assert_eq!(ids, reported);
    assert!(
        err.to_string()
            .contains(&format!("{} of 20", written.len())),
        "{err}"
    );
}

#[tokio::test]
async fn idempotency_store_accepts_durations_too_long_for_redis() {
    let (server, _backend) = start().await;
    let store = RedisIdempotencyStore::open(&server.url()).unwrap();
    assert_eq!(
        store.claim("k", Duration::MAX).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(store.claim("k", Duration::MAX).await.unwrap(), Claim::Busy);
    store.complete("k", Duration::MAX).await.unwrap();
    assert_eq!(store.claim("k", Duration::MAX).await.unwrap(), Claim::Done);
}

#[tokio::test]
async fn dedup_window_too_long_for_redis_still_dedups() {
    let (server, backend) = start().await;
    let opts = PublishOpts {
        dedup_window: Some(Duration::MAX),
        ..PublishOpts::default()
    };
    let env = || {
        Envelope::new(
            MessageId::new("order-7").unwrap(),
            Bytes::from_static(b"x"),
            Headers::new(),
        )
    };
    let first = backend
        .publish(&topic("t"), vec![env()], &opts)
        .await
        .unwrap();
    assert!(!first[0].duplicate);
    let again = backend
        .publish(&topic("t"), vec![env()], &opts)
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].entry_id, first[0].entry_id);
    let len: u64 = raw(&server, redis::cmd("XLEN").arg(stream_key("t")));
    assert_eq!(len, 1);
}

#[tokio::test]
async fn backpressure_wait_too_long_waits_without_panicking() {
    let (_server, backend) = start().await;
    let opts = PublishOpts {
        topic: TopicOptions::default()
            .backpressure(Backpressure::MaxLength(1))
            .backpressure_wait(Duration::MAX),
        ..PublishOpts::default()
    };
    backend
        .publish(&topic("t"), vec![envelope("a")], &opts)
        .await
        .unwrap();
    let blocked = tokio::time::timeout(
        Duration::from_millis(300),
        backend.publish(&topic("t"), vec![envelope("b")], &opts),
    )
    .await;
    assert!(blocked.is_err(), "expected to wait for room: {blocked:?}");
}

#[tokio::test]
async fn a_requested_retry_delay_too_long_for_milliseconds_is_capped_not_wrapped() {
    let (server, backend) = start().await;
    let bus = Bus::builder(backend).block_timeout(BLOCK).build().unwrap();
    // 2^64 + 5 ms: cast to u64 milliseconds it would wrap round to 5 ms.
    let delay = Duration::new(18_446_744_073_709_551, 621_000_000);
    let _sub = bus
        .subscribe_raw("t", "h", move |_d| async move {
            Err(crate::HandlerError::retryable("later").retry_after(delay))
        })
        .start_from(StartFrom::Beginning)
        .await
        .unwrap();
    bus.publish_raw("t", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let retry_key = "{rivulet/topic/t}/retry";
    let due: f64 = eventually("the retry to be scheduled", || async {
        let v: Vec<(String, f64)> = raw(
            &server,
            redis::cmd("ZRANGE")
                .arg(retry_key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        );
        v.first().map(|(_, score)| *score)
    })
    .await;
    let six_days_ms = 6.0 * 24.0 * 3600.0 * 1000.0;
    assert!(due > now_ms() as f64 + six_days_ms, "due at {due}");
    bus.shutdown().await;
}
