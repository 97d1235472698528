//! Primitive-level tests of the memory backend.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::backend::{
    DeadLetterStore, EntryRef, GroupRole, GroupStatus, Groups, Lane, PublishOpts, Publishing,
    Readers, Record, Recovery, RetryLater, Settling, StreamKey,
};
use crate::dead_letter::DeadLetterReason;
use crate::error::Error;
use crate::message::{EntryId, Envelope, MessageId, now_ms};
use crate::name::{ConsumerName, GroupName};
use crate::topic::{Backpressure, StartFrom, TopicOptions};

const GRACE: Duration = Duration::from_secs(60);

async fn group(b: &MemoryBackend, key: &StreamKey, g: &GroupName) -> Result<GroupStatus> {
    b.ensure_group(key, g, &StartFrom::New, GroupRole::Regular)
        .await
}

/// A fresh backend with group `g` on topic `t` and one message delivered to consumer
/// `c`: the delivered entry and its message.
async fn one_delivered(n: u8) -> Result<(MemoryBackend, StreamKey, GroupName, EntryRef, Envelope)> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("g")?;
    group(&b, &key, &g).await?;
    b.publish(&topic(), vec![env(n)], &PublishOpts::default())
        .await?;
    let got = b
        .reader(&key, &g, &ConsumerName::new("c")?)
        .await?
        .read(1, Duration::ZERO)
        .await?;
    let Record::Message(m) = &got[0].record else {
        panic!("message expected")
    };
    Ok((b, key, g, got[0].entry.clone(), m.clone()))
}

fn retry(entry: &EntryRef, next: &Envelope, due_ms: u64) -> RetryLater {
    RetryLater {
        entry: entry.clone(),
        next: next.clone(),
        due_ms,
        generation: 0,
    }
}

fn topic() -> TopicName {
    TopicName::new("t").expect("valid")
}

fn env(n: u8) -> Envelope {
    Envelope::new(
        MessageId::generate(),
        Bytes::from(vec![n]),
        Default::default(),
    )
}

#[tokio::test]
async fn retries_reach_only_the_failing_group() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let (g1, g2) = (GroupName::new("g1")?, GroupName::new("g2")?);
    let c = ConsumerName::new("c")?;
    group(&b, &key, &g1).await?;
    group(&b, &key, &g2).await?;
    b.publish(&topic(), vec![env(1)], &PublishOpts::default())
        .await?;
    let mut r1 = b.reader(&key, &g1, &c).await?;
    let mut r2 = b.reader(&key, &g2, &c).await?;
    let e1 = r1.read(10, Duration::from_millis(10)).await?;
    let e2 = r2.read(10, Duration::from_millis(10)).await?;
    assert_eq!((e1.len(), e2.len()), (1, 1));
    b.ack(&key, &g2, &[e2[0].entry.clone()]).await?;
    let Record::Message(m) = &e1[0].record else {
        panic!("message expected")
    };
    let mut next = m.clone();
    next.attempt = 2;
    // Due in the future: it waits in the retry set until the mover's pass.
    let due = now_ms() + 50;
    b.retry_later(&key, &g1, &retry(&e1[0].entry, &next, due))
        .await?;
    assert_eq!(b.move_due_retries(&key, due - 1, 10, GRACE).await?.moved, 0);
    let sweep = b.move_due_retries(&key, due, 10, GRACE).await?;
    assert_eq!(sweep.moved, 1);
    let again = r1.read(10, Duration::from_millis(10)).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.lane, Lane::Retry);
    assert!(r2.read(10, Duration::from_millis(10)).await?.is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn reclaim_counts_deliveries_and_keep_alive_prevents_it() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("g")?;
    let (c1, c2) = (ConsumerName::new("c1")?, ConsumerName::new("c2")?);
    group(&b, &key, &g).await?;
    b.publish(&topic(), vec![env(1), env(2)], &PublishOpts::default())
        .await?;
    let mut r1 = b.reader(&key, &g, &c1).await?;
    let got = r1.read(10, Duration::from_millis(10)).await?;
    assert_eq!(got.len(), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    b.keep_alive(&key, &g, &c1, &[got[0].entry.clone()]).await?;
    let rec = b.reclaim(&key, &g, &c2, Duration::from_secs(1), 10).await?;
    assert_eq!(rec.entries.len(), 1, "only the entry not kept alive moves");
    assert_eq!(rec.entries[0].entry, got[1].entry);
    assert_eq!(rec.entries[0].delivery_count, 2);
    Ok(())
}

#[tokio::test]
async fn safe_trim_keeps_what_a_lagging_group_needs() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("slow")?;
    group(&b, &key, &g).await?;
    let batch = (0..10).map(env).collect();
    b.publish(&topic(), batch, &PublishOpts::default()).await?;
    let report = b
        .trim(&topic(), &TopicOptions::default().max_len(2))
        .await?;
    assert_eq!(report.removed, 0);
    assert_eq!(report.kept_unacked, 8);
    let unsafe_report = b
        .trim(&topic(), &TopicOptions::default().max_len(2).safe(false))
        .await?;
    assert_eq!(unsafe_report.removed, 8);
    Ok(())
}

#[tokio::test]
async fn idempotent_publish_writes_once() -> Result<()> {
    let b = MemoryBackend::new();
    let opts = PublishOpts {
        dedup_window: Some(Duration::from_secs(60)),
        ..PublishOpts::default()
    };
    let mut e = env(1);
    e.message_id = MessageId::new("order-1")?;
    let first = b.publish(&topic(), vec![e.clone()], &opts).await?;
    let second = b.publish(&topic(), vec![e], &opts).await?;
    assert!(!first[0].duplicate);
    assert!(second[0].duplicate);
    assert_eq!(first[0].entry_id, second[0].entry_id);
    Ok(())
}

#[tokio::test]
async fn a_retry_already_due_goes_straight_to_the_lane_once() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("g")?;
    let c = ConsumerName::new("c")?;
    group(&b, &key, &g).await?;
    b.publish(&topic(), vec![env(1)], &PublishOpts::default())
        .await?;
    let mut r = b.reader(&key, &g, &c).await?;
    let got = r.read(10, Duration::from_millis(10)).await?;
    let Record::Message(m) = &got[0].record else {
        panic!("message expected")
    };
    // Applied twice (as after an unclear error): scheduled once.
    for _ in 0..2 {
        b.retry_later(&key, &g, &retry(&got[0].entry, m, 0)).await?;
    }
    assert_eq!(
        b.move_due_retries(&key, now_ms(), 10, GRACE).await?.moved,
        0,
        "no mover needed"
    );
    let again = r.read(10, Duration::from_millis(10)).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.lane, Lane::Retry);
    assert!(r.read(10, Duration::from_millis(10)).await?.is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn keep_alive_never_takes_back_an_entry_another_consumer_reclaimed() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("g")?;
    let (c1, c2) = (ConsumerName::new("c1")?, ConsumerName::new("c2")?);
    group(&b, &key, &g).await?;
    b.publish(&topic(), vec![env(1)], &PublishOpts::default())
        .await?;
    let got = b
        .reader(&key, &g, &c1)
        .await?
        .read(1, Duration::ZERO)
        .await?;
    tokio::time::advance(Duration::from_secs(2)).await;
    let rec = b.reclaim(&key, &g, &c2, Duration::from_secs(1), 10).await?;
    assert_eq!(rec.entries.len(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    // c1's late keep-alive must not refresh c2's entry, nor take it back.
    b.keep_alive(&key, &g, &c1, &[got[0].entry.clone()]).await?;
    assert_eq!(b.pending_of(&key, &g, &c1, 10).await?, vec![]);
    assert_eq!(
        b.pending_of(&key, &g, &c2, 10).await?,
        vec![got[0].entry.clone()]
    );
    // And c1's hand-back leaves it alone too.
    assert_eq!(
        b.hand_back(&key, &g, &c1, &[got[0].entry.clone()]).await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn retries_of_a_destroyed_group_are_dead_lettered_after_the_grace_never_dropped() -> Result<()>
{
    let (b, key, g, entry, m) = one_delivered(7).await?;
    let m = &m;
    let mut next = m.clone();
    next.attempt = 2;
    let due = now_ms() + 10;
    b.retry_later(&key, &g, &retry(&entry, &next, due)).await?;
    b.destroy_group(&key, &g).await?;
    // Due, but the group is gone: it waits for the group to come back.
    let sweep = b.move_due_retries(&key, due, 10, GRACE).await?;
    assert_eq!((sweep.moved, sweep.dead_lettered, sweep.waiting), (0, 0, 1));
    let later = due + u64::try_from(GRACE.as_millis()).unwrap_or(0);
    let sweep = b.move_due_retries(&key, later, 10, GRACE).await?;
    assert_eq!(sweep.dead_lettered, 1);
    let dead = b.dead_letters(&topic(), None, 10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadLetterReason::GroupGone);
    assert_eq!(dead[0].message_id, m.message_id);
    assert_eq!(dead[0].attempts, 1);
    Ok(())
}

#[tokio::test]
async fn a_retry_waiting_for_its_group_moves_once_the_group_is_back() -> Result<()> {
    let (b, key, g, entry, m) = one_delivered(7).await?;
    let m = &m;
    let c = ConsumerName::new("c")?;
    let due = now_ms() + 10;
    b.retry_later(&key, &g, &retry(&entry, m, due)).await?;
    b.destroy_group(&key, &g).await?;
    assert_eq!(b.move_due_retries(&key, due, 10, GRACE).await?.waiting, 1);
    group(&b, &key, &g).await?;
    assert_eq!(b.move_due_retries(&key, due + 1, 10, GRACE).await?.moved, 1);
    let again = b
        .reader(&key, &g, &c)
        .await?
        .read(1, Duration::ZERO)
        .await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.lane, Lane::Retry);
    Ok(())
}

#[tokio::test]
async fn replaying_into_a_missing_group_refuses_and_keeps_the_dead_letter() -> Result<()> {
    let (b, key, g, entry, m) = one_delivered(1).await?;
    let m = &m;
    let dead = crate::dead_letter::DeadLetter {
        id: EntryId(String::new()),
        topic: topic(),
        group: g.clone(),
        message_id: m.message_id.clone(),
        original_entry_id: entry.id.clone(),
        payload: m.payload.clone(),
        headers: m.headers.clone(),
        attempts: 1,
        reason: DeadLetterReason::Permanent,
        error: "no".into(),
        published_at_ms: m.published_at_ms,
        dead_at_ms: now_ms(),
    };
    b.dead_letter(&key, &g, &entry, 0, &dead).await?;
    let stored = b.dead_letters(&topic(), None, 10).await?;
    b.destroy_group(&key, &g).await?;
    let r = b.replay_dead_letter(&topic(), &stored[0]).await;
    assert!(matches!(r, Err(Error::GroupNotFound { .. })), "{r:?}");
    assert_eq!(b.dead_letter_count(&topic()).await?, 1);
    Ok(())
}

#[tokio::test]
async fn orphan_clean_up_only_touches_registered_broadcast_groups() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let base = GroupName::new("app:t__cache")?;
    let regular = GroupName::new("app:t__cache__warm")?;
    let bcast = GroupName::new("app:t__cache__host_1_abcd")?;
    group(&b, &key, &regular).await?;
    b.ensure_group(&key, &bcast, &StartFrom::New, GroupRole::Broadcast)
        .await?;
    group(&b, &key, &base).await?;
    // No heartbeat for any of them: only the broadcast group is an orphan.
    let removed = b.remove_orphan_broadcast_groups(&key).await?;
    assert_eq!(removed, vec![bcast.to_string()]);
    assert_eq!(group(&b, &key, &regular).await?, GroupStatus::Existed);
    assert_eq!(group(&b, &key, &base).await?, GroupStatus::Existed);
    Ok(())
}

/// Durations past what `build()` accepts reach the backend only through internal
/// callers; they must saturate, never panic or wrap round.
#[tokio::test(start_paused = true)]
async fn durations_too_long_saturate() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("g")?;
    let c = ConsumerName::new("c")?;
    b.ensure_group(&key, &g, &StartFrom::Beginning, GroupRole::Regular)
        .await?;
    let dedup = PublishOpts {
        dedup_window: Some(Duration::MAX),
        ..PublishOpts::default()
    };
    let id = MessageId::new("m1")?;
    let first = Envelope::new(id.clone(), Bytes::from_static(b"1"), Default::default());
    let out = b.publish(&topic(), vec![first.clone()], &dedup).await?;
    assert!(!out[0].duplicate);
    let out = b.publish(&topic(), vec![first], &dedup).await?;
    assert!(out[0].duplicate);

    let mut reader = b.reader(&key, &g, &c).await?;
    assert_eq!(reader.read(10, Duration::MAX).await?.len(), 1);

    let bg = GroupName::new("base__x")?;
    b.ensure_group(&key, &bg, &StartFrom::New, GroupRole::Broadcast)
        .await?;
    b.broadcast_heartbeat(&key, &bg, Duration::MAX).await?;
    assert!(b.remove_orphan_broadcast_groups(&key).await?.is_empty());

    let full = PublishOpts {
        topic: TopicOptions::default()
            .backpressure(Backpressure::MaxLength(1))
            .backpressure_wait(Duration::MAX),
        ..PublishOpts::default()
    };
    let waited = tokio::time::timeout(
        Duration::from_secs(1),
        b.publish(&topic(), vec![env(2)], &full),
    )
    .await;
    assert!(waited.is_err(), "expected to wait for room: {waited:?}");
    Ok(())
}
