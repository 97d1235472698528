//! Primitive-level tests of the memory backend.

use super::*;
use crate::message::MessageId;

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
    b.ensure_group(&key, &g1, &StartFrom::New).await?;
    b.ensure_group(&key, &g2, &StartFrom::New).await?;
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
    b.retry_later(&key, &g1, &e1[0].entry, &next, due).await?;
    assert_eq!(b.move_due_retries(&key, due - 1, 10).await?.moved, 0);
    let sweep = b.move_due_retries(&key, due, 10).await?;
    assert_eq!(sweep.moved, 1);
    let again = r1.read(10, Duration::from_millis(10)).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.lane, Lane::Retry);
    assert!(r2.read(10, Duration::from_millis(10)).await?.is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn reclaim_counts_deliveries_and_lease_extension_prevents_it() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("g")?;
    let (c1, c2) = (ConsumerName::new("c1")?, ConsumerName::new("c2")?);
    b.ensure_group(&key, &g, &StartFrom::New).await?;
    b.publish(&topic(), vec![env(1), env(2)], &PublishOpts::default())
        .await?;
    let mut r1 = b.reader(&key, &g, &c1).await?;
    let got = r1.read(10, Duration::from_millis(10)).await?;
    assert_eq!(got.len(), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    b.extend_lease(&key, &g, &c1, &[got[0].entry.clone()])
        .await?;
    let rec = b.reclaim(&key, &g, &c2, Duration::from_secs(1), 10).await?;
    assert_eq!(
        rec.entries.len(),
        1,
        "only the entry without a fresh lease moves"
    );
    assert_eq!(rec.entries[0].entry, got[1].entry);
    assert_eq!(rec.entries[0].delivery_count, 2);
    Ok(())
}

#[tokio::test]
async fn safe_trim_keeps_what_a_lagging_group_needs() -> Result<()> {
    let b = MemoryBackend::new();
    let key = StreamKey::main(topic());
    let g = GroupName::new("slow")?;
    b.ensure_group(&key, &g, &StartFrom::New).await?;
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
    b.ensure_group(&key, &g, &StartFrom::New).await?;
    b.publish(&topic(), vec![env(1)], &PublishOpts::default())
        .await?;
    let mut r = b.reader(&key, &g, &c).await?;
    let got = r.read(10, Duration::from_millis(10)).await?;
    let Record::Message(m) = &got[0].record else {
        panic!("message expected")
    };
    // Applied twice (as after an unclear error): scheduled once.
    for _ in 0..2 {
        b.retry_later(&key, &g, &got[0].entry, m, 0).await?;
    }
    assert_eq!(
        b.move_due_retries(&key, now_ms(), 10).await?.moved,
        0,
        "no mover needed"
    );
    let again = r.read(10, Duration::from_millis(10)).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.lane, Lane::Retry);
    assert!(r.read(10, Duration::from_millis(10)).await?.is_empty());
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
    b.ensure_group(&key, &g, &StartFrom::Beginning).await?;
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
    b.ensure_group(&key, &bg, &StartFrom::New).await?;
    b.broadcast_heartbeat(&key, &bg, Duration::MAX).await?;
    let base = GroupName::new("base")?;
    assert!(
        b.remove_orphan_broadcast_groups(&key, &base)
            .await?
            .is_empty()
    );

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

#[tokio::test]
async fn an_age_limit_too_long_for_milliseconds_trims_nothing() -> Result<()> {
    let b = MemoryBackend::new();
    b.publish(&topic(), vec![env(1)], &PublishOpts::default())
        .await?;
    // Let the entry's millisecond be in the past.
    let start = now_ms();
    while now_ms() < start + 3 {
        tokio::task::yield_now().await;
    }
    // 2^64 + 1 ms: a u64 millisecond cast would wrap round to 1 ms.
    let opts = TopicOptions::default()
        .unbounded()
        .max_age(Duration::new(18_446_744_073_709_551, 617_000_000));
    let report = b.trim(&topic(), &opts).await?;
    assert_eq!(report.removed, 0, "{report:?}");
    Ok(())
}
