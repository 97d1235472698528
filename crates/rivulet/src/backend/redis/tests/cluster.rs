//! A Redis Cluster: topics on different slots, every script within one slot.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use rivulet_testkit::{RedisCluster, key_slot};

use super::*;
use crate::backend::Lane;
use crate::message::now_ms;

#[tokio::test]
async fn topics_on_different_slots_work_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap()
        .unwrap();
    let urls = cluster.urls();
    let backend = RedisBackend::cluster(&urls).await.unwrap();

    // Topics whose keys land on different nodes.
    let names = ["orders", "payments", "users", "stock", "mail", "audit"];
    let slots: Vec<u16> = names
        .iter()
        .map(|t| key_slot(stream_key(t).as_bytes()))
        .collect();
    let mut distinct = slots.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 3, "slots {slots:?}");

    for t in names {
        let (key, mut reader) = subscribed(&backend, t, "g", "c").await;
        let direct = crate::backend::redis::reader::RedisReader::open(
            backend.clone(),
            &key,
            &group("g"),
            &consumer("probe"),
        )
        .await
        .unwrap();
        assert!(
            direct.on_one_node(),
            "{t}: a reader holds one socket, to its node"
        );
        let published = publish(&backend, t, &["a", "b"]).await;
        let got = read_n(&mut reader, 2).await;
        assert_eq!(got.len(), 2, "{t}");
        assert_eq!(got[0].entry.id, published[0].entry_id);
        backend
            .ack(&key, &group("g"), &refs(&got[..1]))
            .await
            .unwrap();
        // Retry through the retry set and the lane.
        backend
            .retry_later(
                &key,
                &group("g"),
                &retry(&got[1].entry, message(&got[1]), now_ms() + 20),
            )
            .await
            .unwrap();
        assert_eq!(
            backend
                .move_due_retries(&key, now_ms() + 20, 10, GRACE)
                .await
                .unwrap()
                .moved,
            1
        );
        let again = read_n(&mut reader, 1).await;
        assert_eq!(again[0].entry.lane, Lane::Retry, "{t}");
        // Dead-letter it, and the dead letter is listed.
        backend
            .dead_letter(
                &key,
                &group("g"),
                &again[0].entry,
                again[0].generation,
                &crate::dead_letter::DeadLetter {
                    id: crate::message::EntryId(String::new()),
                    topic: topic(t),
                    group: group("g"),
                    message_id: message(&again[0]).message_id.clone(),
                    original_entry_id: again[0].entry.id.clone(),
                    payload: message(&again[0]).payload.clone(),
                    headers: Default::default(),
                    attempts: 2,
                    reason: crate::dead_letter::DeadLetterReason::Permanent,
                    error: "no".into(),
                    published_at_ms: 0,
                    dead_at_ms: now_ms(),
                },
            )
            .await
            .unwrap();
        assert_eq!(backend.dead_letter_count(&topic(t)).await.unwrap(), 1);
        let reclaimed = backend
            .reclaim(&key, &group("g"), &consumer("c2"), Duration::ZERO, 10)
            .await
            .unwrap();
        assert!(reclaimed.entries.is_empty());
        let report = backend
            .trim(&topic(t), &crate::topic::TopicOptions::default().max_len(0))
            .await
            .unwrap();
        assert_eq!(report.removed, 2, "{t}");
    }

    // Idempotent and durable publish route with the topic's slot.
    let opts = PublishOpts {
        dedup_window: Some(Duration::from_secs(5)),
        wait_replicas: Some((0, Duration::from_millis(50))),
        ..PublishOpts::default()
    };
    let env = envelope("once");
    let first = backend
        .publish(&topic("orders"), vec![env.clone()], &opts)
        .await
        .unwrap();
    let second = backend
        .publish(&topic("orders"), vec![env], &opts)
        .await
        .unwrap();
    assert!(second[0].duplicate);
    assert_eq!(first[0].entry_id, second[0].entry_id);

    // Live channels work on a cluster as well.
    let mut rx = backend
        .live_subscribe(&["c.*".to_owned()], CancellationToken::new())
        .await
        .unwrap();
    backend
        .live_publish("c.1", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, Bytes::from_static(b"hi"));
}
