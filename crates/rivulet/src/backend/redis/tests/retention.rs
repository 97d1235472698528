//! Safe trimming and backpressure.

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::topic::{Backpressure, TopicOptions, TrimReport};

fn len(server: &RedisServer, t: &str) -> u64 {
    raw(server, redis::cmd("XLEN").arg(stream_key(t)))
}

#[tokio::test]
async fn safe_trim_keeps_what_a_lagging_group_needs() {
    let (server, backend) = start().await;
    let (key, mut fast) = subscribed(&backend, "t", "fast", "c").await;
    let (_, mut slow) = subscribed(&backend, "t", "slow", "c").await;
    let payloads: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let refs_: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish(&backend, "t", &refs_).await;
    let all = read_n(&mut fast, 20).await;
    backend
        .ack(&key, &group("fast"), &refs(&all))
        .await
        .unwrap();

    let opts = TopicOptions::default().max_len(5);
    // "slow" has had nothing delivered: nothing may go.
    let report = backend.trim(&topic("t"), &opts).await.unwrap();
    assert_eq!(
        report,
        TrimReport {
            removed: 0,
            kept_unacked: 15
        }
    );
    assert_eq!(len(&server, "t"), 20);

    // "slow" read 10 and acknowledged the first 5: those 5 may go, not its pending ones.
    let got = read_n(&mut slow, 10).await;
    backend
        .ack(&key, &group("slow"), &refs(&got[..5]))
        .await
        .unwrap();
    let report = backend.trim(&topic("t"), &opts).await.unwrap();
    assert_eq!(
        report,
        TrimReport {
            removed: 5,
            kept_unacked: 10
        }
    );
    assert_eq!(len(&server, "t"), 15);

    // Everything acknowledged: trimmed down to the limit.
    let rest = read_n(&mut slow, 10).await;
    backend
        .ack(&key, &group("slow"), &refs(&got[5..]))
        .await
        .unwrap();
    backend
        .ack(&key, &group("slow"), &refs(&rest))
        .await
        .unwrap();
    let report = backend.trim(&topic("t"), &opts).await.unwrap();
    assert_eq!(
        report,
        TrimReport {
            removed: 10,
            kept_unacked: 0
        }
    );
    assert_eq!(len(&server, "t"), 5);
    // Idempotent.
    assert_eq!(
        backend.trim(&topic("t"), &opts).await.unwrap(),
        TrimReport::default()
    );
}

#[tokio::test]
async fn safe_trim_by_age_and_over_many_pages() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    let payloads: Vec<String> = (0..2500).map(|i| i.to_string()).collect();
    for chunk in payloads.chunks(500) {
        let refs_: Vec<&str> = chunk.iter().map(String::as_str).collect();
        publish(&backend, "t", &refs_).await;
    }
    let all = read_n(&mut reader, 2500).await;
    assert_eq!(all.len(), 2500);
    backend.ack(&key, &group("g"), &refs(&all)).await.unwrap();
    // Several script rounds (the scan budget is 1,000 entries).
    let report = backend
        .trim(&topic("t"), &TopicOptions::default().max_len(100))
        .await
        .unwrap();
    assert_eq!(report.removed, 2400);
    assert_eq!(len(&server, "t"), 100);
    // By age: everything is older than "0 ms ago" once the clock moved.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = backend
        .trim(
            &topic("t"),
            &TopicOptions::default().unbounded().max_age(Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(report.removed, 100);
    assert_eq!(len(&server, "t"), 0);
}

#[tokio::test]
async fn unsafe_trim_and_publish_trim_ignore_groups() {
    let (server, backend) = start().await;
    let (_key, _reader) = subscribed(&backend, "t", "never-reads", "c").await;
    let opts = TopicOptions::default().max_len(10).safe(false);
    let publish_opts = PublishOpts {
        topic: opts.clone(),
        ..PublishOpts::default()
    };
    for _ in 0..30 {
        let batch = (0..100).map(|i| envelope(&i.to_string())).collect();
        backend
            .publish(&topic("t"), batch, &publish_opts)
            .await
            .unwrap();
    }
    // Approximate trimming on write keeps the stream bounded (whole nodes of ~100).
    assert!(len(&server, "t") < 500, "len {}", len(&server, "t"));
    let report = backend.trim(&topic("t"), &opts).await.unwrap();
    assert_eq!(report.kept_unacked, 0);
}

#[tokio::test]
async fn backpressure_on_length_and_lag() {
    let (_server, backend) = start().await;
    let capped = PublishOpts {
        topic: TopicOptions::default().backpressure(Backpressure::MaxLength(2)),
        ..PublishOpts::default()
    };
    for p in ["1", "2"] {
        backend
            .publish(&topic("len"), vec![envelope(p)], &capped)
            .await
            .unwrap();
    }
    let err = backend
        .publish(&topic("len"), vec![envelope("3")], &capped)
        .await
        .unwrap_err();
    match err {
        Error::Backpressure { current, limit, .. } => assert_eq!((current, limit), (2, 2)),
        other => panic!("unexpected {other:?}"),
    }

    // Lag: entries not delivered plus pending, for the slowest group.
    let (key, mut reader) = subscribed(&backend, "lag", "g", "c").await;
    let lagged = PublishOpts {
        topic: TopicOptions::default()
            .backpressure(Backpressure::MaxLag(2))
            .backpressure_wait(Duration::from_secs(5)),
        ..PublishOpts::default()
    };
    let no_wait = PublishOpts {
        topic: TopicOptions::default().backpressure(Backpressure::MaxLag(2)),
        ..PublishOpts::default()
    };
    backend
        .publish(&topic("lag"), vec![envelope("1"), envelope("2")], &lagged)
        .await
        .unwrap();
    let err = backend
        .publish(&topic("lag"), vec![envelope("3")], &no_wait)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backpressure {
                current: 2,
                limit: 2,
                ..
            }
        ),
        "{err:?}"
    );
    // Read and ack while a publisher waits for room: the wait ends with a write.
    let waiting = {
        let backend = backend.clone();
        let lagged = lagged.clone();
        tokio::spawn(async move {
            backend
                .publish(&topic("lag"), vec![envelope("3")], &lagged)
                .await
        })
    };
    let got = read_n(&mut reader, 2).await;
    backend.ack(&key, &group("g"), &refs(&got)).await.unwrap();
    let written = waiting.await.unwrap().unwrap();
    assert_eq!(written.len(), 1);
}
