//! Publish, read, ack, retry, requeue, dead letters, idempotent and durable publish,
//! malformed entries.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::backend::{Lane, Malformation};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::Error;
use crate::message::{EntryId, now_ms};

#[tokio::test]
async fn publish_read_ack() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "orders:created", "billing", "c1").await;
    let published = publish(&backend, "orders:created", &["a", "b", "c"]).await;
    assert_eq!(published.len(), 3);
    assert!(published.iter().all(|p| !p.duplicate));

    let got = read_n(&mut reader, 3).await;
    assert_eq!(got.iter().map(payload).collect::<Vec<_>>(), ["a", "b", "c"]);
    for (p, e) in published.iter().zip(&got) {
        assert_eq!(e.entry.lane, Lane::Main);
        assert_eq!(e.entry.id, p.entry_id);
        assert_eq!(e.delivery_count, 1);
        let env = message(e);
        assert_eq!(env.message_id, p.message_id);
        assert_eq!(env.attempt, 1);
        assert_eq!(env.headers.get("traceparent").map(String::len), Some(55));
    }
    // A read with nothing new returns empty after the block time.
    assert!(
        reader
            .read(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );

    backend
        .ack(&key, &group("billing"), &refs(&got))
        .await
        .unwrap();
    let pending: Vec<redis::Value> = raw(
        &server,
        redis::cmd("XPENDING")
            .arg(stream_key("orders:created"))
            .arg("billing"),
    );
    assert_eq!(pending.first(), Some(&redis::Value::Int(0)));

    // The common entry is just `id` and `payload` (plus the header here).
    let fields: Vec<(String, Vec<(String, String)>)> = raw(
        &server,
        redis::cmd("XRANGE")
            .arg(stream_key("orders:created"))
            .arg("-")
            .arg("+"),
    );
    let names: Vec<&str> = fields[0].1.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["id", "payload", "h:traceparent"]);
}

#[tokio::test]
async fn a_read_takes_up_to_count_from_each_log_lane_first() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["1", "2"]).await;
    let first = read_n(&mut reader, 2).await;
    // Requeue both into the lane, publish two more: both logs now have entries.
    for e in &first {
        backend
            .requeue(&key, &group("g"), &e.entry, message(e))
            .await
            .unwrap();
    }
    publish(&backend, "t", &["3", "4"]).await;
    let got = reader.read(1, BLOCK).await.unwrap();
    let seen: Vec<(bool, String)> = got
        .iter()
        .map(|e| (e.entry.lane == Lane::Retry, payload(e)))
        .collect();
    assert_eq!(seen, [(true, "1".to_owned()), (false, "3".to_owned())]);
    let got = reader.read(5, BLOCK).await.unwrap();
    assert_eq!(
        got.iter().map(payload).collect::<Vec<_>>(),
        ["2", "4"],
        "the consumer keeps what it cannot start yet (leftovers), not the reader"
    );
    // A read of 0 only settles.
    assert!(reader.read(0, BLOCK).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_reaches_only_the_failing_group() {
    let (server, backend) = start().await;
    let (key, mut ok_reader) = subscribed(&backend, "t", "ok", "c").await;
    let (_, mut failing) = subscribed(&backend, "t", "failing", "c").await;
    let published = publish(&backend, "t", &["m"]).await;

    let ok = read_n(&mut ok_reader, 1).await;
    backend.ack(&key, &group("ok"), &refs(&ok)).await.unwrap();
    let got = read_n(&mut failing, 1).await;
    let first = message(&got[0]).clone();
    let mut next = first.clone();
    next.attempt = 2;
    let due = now_ms() + 300;
    backend
        .retry_later(&key, &group("failing"), &retry(&got[0].entry, &next, due))
        .await
        .unwrap();
    // Settled: nothing pending for the group.
    let pending: Vec<redis::Value> = raw(
        &server,
        redis::cmd("XPENDING").arg(stream_key("t")).arg("failing"),
    );
    assert_eq!(pending.first(), Some(&redis::Value::Int(0)));

    // Not due yet: nothing moves, and the sweep reports when the next one is due.
    let sweep = backend
        .move_due_retries(&key, now_ms(), 100, GRACE)
        .await
        .unwrap();
    assert_eq!(sweep.moved, 0);
    assert_eq!(sweep.next_due_ms, Some(due));

    let sweep = backend
        .move_due_retries(&key, due, 100, GRACE)
        .await
        .unwrap();
    assert_eq!(sweep.moved, 1);
    assert_eq!(sweep.next_due_ms, None);
    // A second sweep (another process) finds nothing.
    assert_eq!(
        backend
            .move_due_retries(&key, due, 100, GRACE)
            .await
            .unwrap()
            .moved,
        0
    );

    let again = read_n(&mut failing, 1).await;
    assert_eq!(again[0].entry.lane, Lane::Retry);
    let env = message(&again[0]);
    assert_eq!(env.attempt, 2);
    assert_eq!(env.message_id, published[0].message_id);
    assert_eq!(env.published_at_ms, first.published_at_ms);
    assert_eq!(env.headers, first.headers);
    assert!(
        ok_reader
            .read(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );

    // Acking a lane entry removes it from the lane.
    backend
        .ack(&key, &group("failing"), &refs(&again))
        .await
        .unwrap();
    let lane_len: u64 = raw(&server, redis::cmd("XLEN").arg(lane_key("t", "failing")));
    assert_eq!(lane_len, 0);
}

#[tokio::test]
async fn retries_of_a_destroyed_group_wait_then_are_dead_lettered() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "gone", "c").await;
    publish(&backend, "t", &["m"]).await;
    let got = read_n(&mut reader, 1).await;
    let mut next = message(&got[0]).clone();
    next.attempt = 2;
    let due = now_ms() + 1_000;
    backend
        .retry_later(&key, &group("gone"), &retry(&got[0].entry, &next, due))
        .await
        .unwrap();
    backend.destroy_group(&key, &group("gone")).await.unwrap();
    let grace = Duration::from_millis(500);
    let sweep = backend
        .move_due_retries(&key, due, 100, grace)
        .await
        .unwrap();
    assert_eq!((sweep.moved, sweep.waiting, sweep.dead_lettered), (0, 1, 0));
    let exists: u64 = raw(&server, redis::cmd("EXISTS").arg(lane_key("t", "gone")));
    assert_eq!(exists, 0, "no lane is resurrected for a destroyed group");
    // Still waiting within the grace period.
    let sweep = backend
        .move_due_retries(&key, due + 100, 100, grace)
        .await
        .unwrap();
    assert_eq!((sweep.moved, sweep.dead_lettered), (0, 0));
    let left: u64 = raw(&server, redis::cmd("ZCARD").arg(retry_key("t")));
    assert_eq!(left, 1, "never dropped");
    let sweep = backend
        .move_due_retries(&key, due + 600, 100, grace)
        .await
        .unwrap();
    assert_eq!(sweep.dead_lettered, 1);
    let left: u64 = raw(&server, redis::cmd("ZCARD").arg(retry_key("t")));
    assert_eq!(left, 0);
    let dead = backend.dead_letters(&topic("t"), None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, crate::DeadLetterReason::GroupGone);
    assert_eq!(dead[0].group, group("gone"));
    assert_eq!(dead[0].message_id, next.message_id);
    assert_eq!(dead[0].payload, next.payload);
    assert_eq!(dead[0].attempts, 1);
}

#[tokio::test]
async fn a_retry_of_a_vanished_group_moves_once_the_group_is_back() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["m"]).await;
    let got = read_n(&mut reader, 1).await;
    let due = now_ms() + 200;
    backend
        .retry_later(
            &key,
            &group("g"),
            &retry(&got[0].entry, message(&got[0]), due),
        )
        .await
        .unwrap();
    // Deleted outside rivulet: still registered, so the mover keeps its retries for it.
    let _: i64 = raw(
        &server,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream_key("t"))
            .arg("g"),
    );
    let sweep = backend
        .move_due_retries(&key, due, 100, GRACE)
        .await
        .unwrap();
    assert_eq!(sweep.moved, 1, "{sweep:?}");
    // The reader notices the group is gone, re-creates it, and reads the retry.
    let again = read_n(&mut reader, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.lane, Lane::Retry);
}

fn dead_letter_for(e: &ReadEntry, t: &str, g: &str) -> DeadLetter {
    let env = message(e);
    DeadLetter {
        id: EntryId(String::new()),
        topic: topic(t),
        group: group(g),
        message_id: env.message_id.clone(),
        original_entry_id: e.entry.id.clone(),
        payload: env.payload.clone(),
        headers: env.headers.clone(),
        attempts: 5,
        reason: DeadLetterReason::Attempts,
        error: "card declined".into(),
        published_at_ms: env.published_at_ms,
        dead_at_ms: now_ms(),
    }
}

#[tokio::test]
async fn dead_letter_list_replay_and_purge() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "pay", "g", "c").await;
    publish(&backend, "pay", &["x", "y"]).await;
    let got = read_n(&mut reader, 2).await;
    for e in &got {
        backend
            .dead_letter(
                &key,
                &group("g"),
                &e.entry,
                e.generation,
                &dead_letter_for(e, "pay", "g"),
            )
            .await
            .unwrap();
    }
    let pending: Vec<redis::Value> = raw(
        &server,
        redis::cmd("XPENDING").arg(stream_key("pay")).arg("g"),
    );
    assert_eq!(pending.first(), Some(&redis::Value::Int(0)));
    assert_eq!(backend.dead_letter_count(&topic("pay")).await.unwrap(), 2);

    let listed = backend.dead_letters(&topic("pay"), None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    let d = &listed[0];
    assert_eq!(d.payload, Bytes::from_static(b"x"));
    assert_eq!(d.group, group("g"));
    assert_eq!(d.reason, DeadLetterReason::Attempts);
    assert_eq!(d.error, "card declined");
    assert_eq!(d.attempts, 5);
    assert_eq!(d.original_entry_id, got[0].entry.id);
    assert_eq!(d.message_id, message(&got[0]).message_id);
    assert_eq!(d.headers, message(&got[0]).headers);
    let after = backend
        .dead_letters(&topic("pay"), Some(&d.id), 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].payload, Bytes::from_static(b"y"));

    // Replay: removed from the queue, delivered to the group's lane as attempt 1.
    assert!(backend.replay_dead_letter(&topic("pay"), d).await.unwrap());
    assert!(!backend.replay_dead_letter(&topic("pay"), d).await.unwrap());
    assert_eq!(backend.dead_letter_count(&topic("pay")).await.unwrap(), 1);
    let replayed = read_n(&mut reader, 1).await;
    assert_eq!(replayed[0].entry.lane, Lane::Retry);
    let env = message(&replayed[0]);
    assert_eq!(env.attempt, 1);
    assert_eq!(env.payload, Bytes::from_static(b"x"));
    assert_eq!(env.published_at_ms, d.published_at_ms);

    // Purge by id.
    let ids = vec![after[0].id.clone(), EntryId("not-an-id".into())];
    assert_eq!(
        backend
            .remove_dead_letters(&topic("pay"), &ids)
            .await
            .unwrap(),
        1
    );
    assert_eq!(backend.dead_letter_count(&topic("pay")).await.unwrap(), 0);
}

#[tokio::test]
async fn dead_letter_queue_is_consumable() {
    let (_server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["poison"]).await;
    let got = read_n(&mut reader, 1).await;
    backend
        .dead_letter(
            &key,
            &group("g"),
            &got[0].entry,
            got[0].generation,
            &dead_letter_for(&got[0], "t", "g"),
        )
        .await
        .unwrap();

    let dead_letters = StreamKey::dead_letters(topic("t"));
    backend
        .ensure_group(
            &dead_letters,
            &group("alerts"),
            &StartFrom::Beginning,
            GroupRole::Regular,
        )
        .await
        .unwrap();
    let mut dead_reader = backend
        .reader(&dead_letters, &group("alerts"), &consumer("c"))
        .await
        .unwrap();
    let dead = read_n(&mut dead_reader, 1).await;
    match &dead[0].record {
        Record::DeadLetter(d) => {
            assert_eq!(d.payload, Bytes::from_static(b"poison"));
            assert_eq!(d.topic, topic("t"));
            assert_eq!(d.group, group("g"));
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    backend
        .ack(&dead_letters, &group("alerts"), &refs(&dead))
        .await
        .unwrap();
}

#[tokio::test]
async fn idempotent_publish_writes_once() {
    let (server, backend) = start().await;
    let opts = PublishOpts {
        dedup_window: Some(Duration::from_secs(60)),
        ..PublishOpts::default()
    };
    let id = MessageId::new("order-42").unwrap();
    let env = Envelope::new(id.clone(), Bytes::from_static(b"p"), Headers::new());
    let first = backend
        .publish(&topic("t"), vec![env.clone()], &opts)
        .await
        .unwrap();
    assert!(!first[0].duplicate);
    // Twice more: once alone, once within a batch with a new message.
    let other = Envelope::new(
        MessageId::new("order-43").unwrap(),
        Bytes::from_static(b"q"),
        Headers::new(),
    );
    let again = backend
        .publish(&topic("t"), vec![env.clone(), other, env], &opts)
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].entry_id, first[0].entry_id);
    assert!(!again[1].duplicate);
    assert!(again[2].duplicate);
    assert_eq!(again[2].message_id, id);
    let len: u64 = raw(&server, redis::cmd("XLEN").arg(stream_key("t")));
    assert_eq!(len, 2);
}

#[tokio::test]
async fn durable_publish_without_replicas_is_indeterminate() {
    let (server, backend) = start().await;
    let opts = PublishOpts {
        wait_replicas: Some((1, Duration::from_millis(50))),
        ..PublishOpts::default()
    };
    let err = backend
        .publish(&topic("t"), vec![envelope("x")], &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
    // The write itself happened: "indeterminate", not "failed".
    let len: u64 = raw(&server, redis::cmd("XLEN").arg(stream_key("t")));
    assert_eq!(len, 1);
    let zero = PublishOpts {
        wait_replicas: Some((0, Duration::from_millis(50))),
        ..PublishOpts::default()
    };
    backend
        .publish(&topic("t"), vec![envelope("y")], &zero)
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_entries_are_records_not_errors() {
    let server = RedisServer::start().unwrap();
    let backend = RedisBackend::connect(&server.url()).await.unwrap();
    let (_, mut reader) = subscribed(&backend, "t", "g", "c").await;
    let s = stream_key("t");
    let _: String = raw(
        &server,
        redis::cmd("XADD")
            .arg(&s)
            .arg("*")
            .arg("payload")
            .arg("no id"),
    );
    let _: String = raw(
        &server,
        redis::cmd("XADD")
            .arg(&s)
            .arg("*")
            .arg("id")
            .arg("m1")
            .arg("payload")
            .arg("way too large"),
    );
    let _: String = raw(
        &server,
        redis::cmd("XADD")
            .arg(&s)
            .arg("*")
            .arg("id")
            .arg("m2")
            .arg("payload")
            .arg("ok")
            .arg("attempt")
            .arg("x"),
    );
    let _: String = raw(
        &server,
        redis::cmd("XADD")
            .arg(&s)
            .arg("*")
            .arg("id")
            .arg("m3")
            .arg("payload")
            .arg("fine")
            .arg("source")
            .arg("php"),
    );
    let got = read_n(&mut reader, 4).await;
    assert!(
        matches!(&got[0].record, Record::Malformed { problem: Malformation::Decode(p), .. } if p.contains("id"))
    );
    // The size limit is the bus's: the backend reads a large payload as a message.
    assert_eq!(message(&got[1]).message_id.as_str(), "m1");
    assert!(
        matches!(&got[2].record, Record::Malformed { problem: Malformation::Decode(p), .. } if p.contains("attempt"))
    );
    assert_eq!(message(&got[3]).payload, Bytes::from_static(b"fine"));
}

/// An entry delivered by a group that was then deleted (outside rivulet) and re-created
/// is not pending in the new group: its settlement must not be taken for a second
/// application of one already done. The group's incarnation tells them apart.
#[tokio::test]
async fn a_settlement_from_before_a_group_was_recreated_is_written_all_the_same() {
    let (server, backend) = start().await;
    let (key, mut reader) = subscribed(&backend, "t", "g", "c").await;
    publish(&backend, "t", &["retry me", "dead-letter me"]).await;
    let got = read_n(&mut reader, 2).await;
    assert!(
        got.iter().all(|e| e.generation == 1),
        "{:?}",
        got.iter().map(|e| e.generation).collect::<Vec<_>>()
    );
    let _: i64 = raw(
        &server,
        redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream_key("t"))
            .arg("g"),
    );
    // Another reader notices and re-creates the group after both entries.
    let status = backend
        .ensure_group(&key, &group("g"), &StartFrom::New, GroupRole::Regular)
        .await
        .unwrap();
    assert_eq!(status, GroupStatus::Recreated);
    let mut next = message(&got[0]).clone();
    next.attempt = 2;
    let mut retry = retry(&got[0].entry, &next, now_ms() + 60_000);
    retry.generation = got[0].generation;
    backend
        .retry_later(&key, &group("g"), &retry)
        .await
        .unwrap();
    let scheduled: u64 = raw(&server, redis::cmd("ZCARD").arg(retry_key("t")));
    assert_eq!(scheduled, 1, "the retry was taken for one already settled");
    backend
        .dead_letter(
            &key,
            &group("g"),
            &got[1].entry,
            got[1].generation,
            &dead_letter_for(&got[1], "t", "g"),
        )
        .await
        .unwrap();
    assert_eq!(backend.dead_letter_count(&topic("t")).await.unwrap(), 1);
    // A settlement applied twice in the same incarnation still writes once.
    backend
        .retry_later(&key, &group("g"), &retry)
        .await
        .unwrap();
    let (_, mut fresh) = subscribed(&backend, "t", "g", "c2").await;
    publish(&backend, "t", &["new"]).await;
    let new = read_n(&mut fresh, 1).await;
    assert_eq!(new[0].generation, 2);
    let mut again = retry.clone();
    again.entry = new[0].entry.clone();
    again.generation = new[0].generation;
    backend
        .retry_later(&key, &group("g"), &again)
        .await
        .unwrap();
    backend
        .retry_later(&key, &group("g"), &again)
        .await
        .unwrap();
    let scheduled: u64 = raw(&server, redis::cmd("ZCARD").arg(retry_key("t")));
    assert_eq!(
        scheduled, 3,
        "each retry once: the old one (twice: unknown), the new one once"
    );
}
