//! The consumer engine: read loops (batch and sliding), outcome handling, reclaim of idle
//! entries, lease extension for running handlers, broadcast heartbeats.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument;

use super::Shared;
use super::subscribe::{Counters, Failure, Input, SubState};
use super::{Dispatch, lock};
use crate::backend::{EntryRef, ReadEntry, Record, RetryLater, Settlements, StreamKind};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::Result;
use crate::handler::DeliveryMeta;
use crate::idempotency::Claim;
use crate::message::{EntryId, Envelope, now_ms};
use crate::name::ConsumerName;

/// How many idle entries one reclaim pass takes at most.
const RECLAIM_BATCH: usize = 100;

/// Entries being handled: owner consumer and start time.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashMap<EntryRef, (ConsumerName, Instant)>>);

impl InFlight {
    fn insert(&self, entries: &[EntryRef], consumer: &ConsumerName) {
        let now = Instant::now();
        let mut map = lock(&self.0);
        for e in entries {
            map.insert(e.clone(), (consumer.clone(), now));
        }
        metrics::gauge!("rivulet_in_flight").increment(entries.len() as f64);
    }

    fn remove(&self, entries: &[EntryRef]) {
        let mut map = lock(&self.0);
        let removed = entries.iter().filter(|e| map.remove(e).is_some()).count();
        metrics::gauge!("rivulet_in_flight").decrement(removed as f64);
    }

    fn of(&self, consumer: &ConsumerName) -> Vec<EntryRef> {
        lock(&self.0)
            .iter()
            .filter(|(_, (c, _))| c == consumer)
            .map(|(e, _)| e.clone())
            .collect()
    }

    fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }

    /// Entries running for at least `age`, grouped by owner.
    fn older_than(&self, age: Duration) -> HashMap<ConsumerName, Vec<EntryRef>> {
        let now = Instant::now();
        let mut out: HashMap<ConsumerName, Vec<EntryRef>> = HashMap::new();
        for (e, (c, since)) in lock(&self.0).iter() {
            if now.duration_since(*since) >= age {
                out.entry(c.clone()).or_default().push(e.clone());
            }
        }
        out
    }
}

/// Opens the readers and starts every task of a subscription.
pub(crate) async fn start(shared: &Arc<Shared>, sub: &Arc<SubState>) -> Result<()> {
    let lanes: Vec<(ConsumerName, usize)> = match sub.dispatch {
        Dispatch::Batch => vec![(sub.consumer.clone(), sub.concurrency)],
        Dispatch::Sliding => (0..sub.concurrency)
            .map(|i| ConsumerName::new(format!("{}:lane{i}", sub.consumer)).map(|c| (c, 1usize)))
            .collect::<Result<_>>()?,
    };
    let mut readers = Vec::with_capacity(lanes.len());
    for (consumer, count) in lanes {
        let reader = shared
            .backend
            .reader(&sub.key, &sub.group, &consumer)
            .await?;
        readers.push((reader, consumer, count));
    }
    let spawn = |fut| {
        shared.tasks.spawn(sub.tasks.track_future(fut));
    };
    for (reader, consumer, count) in readers {
        spawn(read_loop(shared.clone(), sub.clone(), reader, consumer, count).boxed());
    }
    spawn(reclaim_loop(shared.clone(), sub.clone()).boxed());
    spawn(lease_loop(shared.clone(), sub.clone()).boxed());
    if sub.broadcast {
        spawn(heartbeat_loop(shared.clone(), sub.clone()).boxed());
    }
    Ok(())
}

/// Bounded exponential backoff for errors talking to the backend: no busy loops.
struct ErrorBackoff(Duration);

impl ErrorBackoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        ErrorBackoff(Self::MIN)
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

async fn read_loop(
    shared: Arc<Shared>,
    sub: Arc<SubState>,
    mut reader: Box<dyn crate::backend::Reader>,
    consumer: ConsumerName,
    count: usize,
) {
    let mut backoff = ErrorBackoff::new();
    // The last batch (still in flight until settled) and its settlements, which travel
    // with the next read.
    let mut batch: Vec<EntryRef> = Vec::new();
    let mut settle = Settlements::default();
    loop {
        // With retries to schedule, do not block long: the retry mover is woken once the
        // read returns, so a short retry is not held back by an idle topic.
        let block = if settle.retries.is_empty() {
            shared.cfg.block_timeout
        } else {
            shared.cfg.block_timeout.min(Duration::from_millis(5))
        };
        let read = tokio::select! {
            biased;
            _ = sub.stop.cancelled() => break,
            r = reader.settle_and_read(&settle, count, block) => r,
        };
        match read {
            Ok(entries) => {
                backoff.reset();
                if !settle.retries.is_empty() {
                    shared.wake_retry_mover(&sub.key);
                }
                settle = Settlements::default();
                sub.in_flight.remove(&std::mem::take(&mut batch));
                if !entries.is_empty() {
                    (batch, settle) = process_batch(&shared, &sub, &consumer, entries).await;
                }
            }
            Err(e) => {
                // The settlements may not have reached the server: apply them again on
                // the shared connection (a second application is harmless).
                apply(&shared, &sub, std::mem::take(&mut settle)).await;
                sub.in_flight.remove(&std::mem::take(&mut batch));
                let wait = backoff.next();
                tracing::warn!(topic = %sub.key.topic, group = %sub.group, error = %e, retry_in = ?wait, "read failed");
                tokio::select! {
                    _ = sub.stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                // The reader's connection may be broken: open a fresh one.
                match shared.backend.reader(&sub.key, &sub.group, &consumer).await {
                    Ok(r) => reader = r,
                    Err(e) => tracing::warn!(error = %e, "could not reopen reader"),
                }
            }
        }
    }
    drop(reader);
    // Stopped between a batch and the read carrying its settlements, or while that read
    // was in flight: settle here, before anything is handed back.
    apply(&shared, &sub, settle).await;
    sub.in_flight.remove(&batch);
    hand_back(&shared, &sub, &consumer).await;
}

/// Applies settlements on the shared connection. A failure leaves the entries pending:
/// they are redelivered (a duplicate), never lost.
async fn apply(shared: &Shared, sub: &SubState, settle: Settlements) {
    if settle.is_empty() {
        return;
    }
    if !settle.acks.is_empty()
        && let Err(e) = shared.backend.ack(&sub.key, &sub.group, &settle.acks).await
    {
        tracing::warn!(group = %sub.group, error = %e, n = settle.acks.len(), "ack failed; the entries will be redelivered (duplicates, not losses)");
    }
    for r in &settle.retries {
        if let Err(e) = shared
            .backend
            .retry_later(&sub.key, &sub.group, &r.entry, &r.next, r.due_ms)
            .await
        {
            tracing::warn!(message_id = %r.next.message_id, error = %e, "could not schedule retry; the entry stays pending and will be reclaimed");
        }
    }
    if !settle.retries.is_empty() {
        shared.wake_retry_mover(&sub.key);
    }
}

/// Requeues entries read by `consumer` but not started (for example when a blocking read
/// was interrupted after the server had delivered), so other consumers take them now.
async fn hand_back(shared: &Shared, sub: &SubState, consumer: &ConsumerName) {
    let keep = sub.in_flight.of(consumer);
    match shared
        .backend
        .hand_back(&sub.key, &sub.group, consumer, &keep)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(group = %sub.group, %consumer, n, "handed back unstarted entries"),
        Err(e) => {
            tracing::warn!(group = %sub.group, error = %e, "hand back failed; entries will be reclaimed after min_idle")
        }
    }
}

/// Handles a batch concurrently. Returns the batch's entries, which stay in flight until
/// the caller has settled them, and the settlements to apply (successes to acknowledge
/// and retries to schedule; dead letters were settled by their own atomic transition).
async fn process_batch(
    shared: &Arc<Shared>,
    sub: &Arc<SubState>,
    consumer: &ConsumerName,
    entries: Vec<ReadEntry>,
) -> (Vec<EntryRef>, Settlements) {
    let refs: Vec<EntryRef> = entries.iter().map(|e| e.entry.clone()).collect();
    sub.in_flight.insert(&refs, consumer);
    let outcomes = join_all(entries.into_iter().map(|e| process_one(shared, sub, e))).await;
    let mut settle = Settlements::default();
    for outcome in outcomes {
        match outcome {
            Settle::Ack(e) => settle.acks.push(e),
            Settle::Retry(r) => settle.retries.push(r),
            Settle::Done => {}
        }
    }
    (refs, settle)
}

/// What to do with an entry after handling.
enum Settle {
    /// Acknowledge it with the batch.
    Ack(EntryRef),
    /// Settle it and schedule this retry, atomically, with the batch.
    Retry(RetryLater),
    /// Already settled by an atomic transition (dead letter), or deliberately left
    /// pending (it will be reclaimed).
    Done,
}

struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    sub: &'a SubState,
    entry: EntryRef,
    envelope: Envelope,
}

impl Ctx<'_> {
    fn is_dead_letter_stream(&self) -> bool {
        self.sub.key.kind == StreamKind::DeadLetters
    }

    /// Retries with backoff if attempts remain, otherwise gives up.
    async fn retry_or_give_up(&self, error: String, requested: Option<Duration>) -> Settle {
        if self.is_dead_letter_stream() {
            // Dead letters are not rescheduled; the entry stays pending and is
            // redelivered after min_idle (see `subscribe_dead_letters`).
            return Settle::Done;
        }
        let attempt = self.envelope.attempt;
        if attempt >= self.sub.retry.max_attempts {
            return self.give_up(DeadLetterReason::Attempts, error).await;
        }
        let delay = requested.unwrap_or_else(|| self.sub.retry.delay_after(attempt));
        let mut next = self.envelope.clone();
        next.attempt = attempt + 1;
        Counters::add(&self.sub.counters.retried, 1);
        self.sub.metrics.retries.increment(1);
        tracing::debug!(message_id = %self.envelope.message_id, attempt, ?delay, %error, "retry scheduled");
        self.retry(next, delay)
    }

    fn retry(&self, next: Envelope, delay: Duration) -> Settle {
        Settle::Retry(RetryLater {
            entry: self.entry.clone(),
            next,
            due_ms: now_ms().saturating_add(delay.as_millis() as u64),
        })
    }

    /// Dead-letters the message (or drops it when dead-lettering is off).
    async fn give_up(&self, reason: DeadLetterReason, error: String) -> Settle {
        let env = &self.envelope;
        if self.is_dead_letter_stream() {
            tracing::error!(message_id = %env.message_id, %reason, %error, "dead-letter handler gave up; the dead letter stays in the queue");
            return Settle::Ack(self.entry.clone());
        }
        if !self.sub.retry.dead_letter {
            tracing::error!(topic = %self.sub.key.topic, group = %self.sub.group, message_id = %env.message_id, %reason, %error, "message dropped (dead-lettering is off)");
            Counters::add(&self.sub.counters.dropped, 1);
            return Settle::Ack(self.entry.clone());
        }
        let dead = DeadLetter {
            id: EntryId(String::new()),
            topic: self.sub.key.topic.clone(),
            group: self.sub.group.clone(),
            message_id: env.message_id.clone(),
            original_entry_id: self.entry.id.clone(),
            payload: env.payload.clone(),
            headers: env.headers.clone(),
            attempts: env.attempt,
            reason,
            error,
            published_at_ms: env.published_at_ms,
            dead_at_ms: now_ms(),
        };
        match self
            .shared
            .backend
            .dead_letter(&self.sub.key, &self.sub.group, &self.entry, &dead)
            .await
        {
            Ok(()) => {
                Counters::add(&self.sub.counters.dead_lettered, 1);
                self.sub.metrics.dead_lettered(reason);
                tracing::warn!(topic = %dead.topic, group = %dead.group, message_id = %dead.message_id, %reason, error = %dead.error, "dead-lettered");
            }
            Err(e) => tracing::warn!(
                message_id = %env.message_id, error = %e,
                "could not dead-letter; the entry stays pending and will be reclaimed"
            ),
        }
        Settle::Done
    }
}

async fn process_one(shared: &Arc<Shared>, sub: &Arc<SubState>, read: ReadEntry) -> Settle {
    let ReadEntry {
        entry,
        record,
        delivery_count,
    } = read;
    let (input, envelope, malformed) = match record {
        Record::Message(env) => (Input::Payload(env.payload.clone()), env, None),
        Record::DeadLetter(d) => {
            let env = Envelope {
                message_id: d.message_id.clone(),
                payload: d.payload.clone(),
                headers: d.headers.clone(),
                attempt: 1,
                published_at_ms: d.published_at_ms,
            };
            (Input::DeadLetter(d), env, None)
        }
        Record::Malformed { problem, envelope } => (
            Input::Payload(envelope.payload.clone()),
            envelope,
            Some(problem),
        ),
    };
    let ctx = Ctx {
        shared,
        sub,
        entry,
        envelope,
    };
    if let Some(problem) = malformed {
        let (reason, error) = match problem {
            crate::backend::Malformation::Decode(e) => (DeadLetterReason::Decode, e),
            crate::backend::Malformation::TooLarge(n) => (
                DeadLetterReason::TooLarge,
                format!(
                    "payload of {n} bytes exceeds the limit of {} bytes",
                    shared.cfg.max_payload
                ),
            ),
        };
        return ctx.give_up(reason, error).await;
    }

    // B-RET-5: an entry redelivered past its attempts (its consumers keep dying on it)
    // is dead-lettered instead of run again.
    let effective = u64::from(ctx.envelope.attempt) + delivery_count.saturating_sub(1);
    if delivery_count > 1 && effective > u64::from(sub.retry.max_attempts) {
        return ctx
            .give_up(
                DeadLetterReason::Deliveries,
                format!(
                    "delivered {delivery_count} times without being settled (consumer crashed or stalled)"
                ),
            )
            .await;
    }

    // B-IDEM-2/3: claim the key as a lease; "done" only after success.
    let idem_key = sub.idempotency.as_ref().map(|i| {
        i.key
            .as_ref()
            .and_then(|f| f(&ctx.envelope.payload))
            .unwrap_or_else(|| format!("{}:{}", ctx.envelope.message_id, sub.handler_name))
    });
    let store = shared.idempotency.as_ref();
    if let (Some(key), Some(store)) = (&idem_key, store) {
        let lease = shared.cfg.idempotency_lease.unwrap_or(shared.cfg.min_idle);
        match store.claim(key, lease).await {
            Ok(Claim::Acquired) => {}
            Ok(Claim::Done) => {
                Counters::add(&sub.counters.duplicates, 1);
                sub.metrics.duplicates.increment(1);
                return Settle::Ack(ctx.entry.clone());
            }
            Ok(_) => {
                // Another run holds the lease: try again later without using an attempt,
                // so a crash of that run cannot turn this message into a skip.
                let delay = sub.retry.delay_after(1).max(Duration::from_millis(50));
                Counters::add(&sub.counters.deferred, 1);
                return ctx.retry(ctx.envelope.clone(), delay);
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency claim failed; leaving the entry pending");
                return Settle::Done;
            }
        }
    }

    let meta = Arc::new(DeliveryMeta {
        topic: sub.key.topic.clone(),
        group: sub.group.clone(),
        handler: sub.handler_name.clone(),
        message_id: ctx.envelope.message_id.clone(),
        entry_id: ctx.entry.id.clone(),
        headers: ctx.envelope.headers.clone(),
        attempt: ctx.envelope.attempt,
        delivery_count,
        published_at_ms: ctx.envelope.published_at_ms,
    });
    let span = tracing::info_span!(
        "rivulet.handle",
        topic = %sub.key.topic,
        group = %sub.group,
        message_id = %ctx.envelope.message_id,
        attempt = ctx.envelope.attempt,
        traceparent = ctx.envelope.headers.get(crate::message::TRACEPARENT).map(String::as_str),
    );
    let cancel = shared.abort.child_token();
    let handler = sub.handler.clone();
    let started = Instant::now();
    let result = AssertUnwindSafe(async move { handler(input, meta, cancel).await })
        .catch_unwind()
        .instrument(span)
        .await;
    sub.metrics.duration.record(started.elapsed().as_secs_f64());

    let m = &sub.metrics;
    match &result {
        Ok(Ok(())) => &m.ok,
        Ok(Err(Failure::Decode(_))) => &m.decode,
        Ok(Err(Failure::Handler(e))) if e.is_retryable() => &m.retryable,
        Ok(Err(Failure::Handler(_))) => &m.permanent,
        Err(_) => &m.panic,
    }
    .increment(1);

    if let Ok(Ok(())) = result {
        if let (Some(key), Some(store)) = (&idem_key, store) {
            // "Done" before the ack: a crash between the two makes the redelivery a
            // skip of a message that did run, never a skip of one that did not.
            if let Err(e) = store.complete(key, shared.cfg.idempotency_ttl).await {
                tracing::warn!(error = %e, "could not record idempotency key as done");
            }
        }
        Counters::add(&sub.counters.handled, 1);
        return Settle::Ack(ctx.entry.clone());
    }

    Counters::add(&sub.counters.failed, 1);
    if let (Some(key), Some(store)) = (&idem_key, store)
        && let Err(e) = store.release(key).await
    {
        tracing::warn!(error = %e, "could not release idempotency claim; it expires by itself");
    }
    match result {
        Ok(Ok(())) => Settle::Ack(ctx.entry.clone()),
        Ok(Err(Failure::Decode(error))) => ctx.give_up(DeadLetterReason::Decode, error).await,
        Ok(Err(Failure::Handler(err))) if err.is_retryable() => {
            ctx.retry_or_give_up(err.message().to_owned(), err.requested_delay())
                .await
        }
        Ok(Err(Failure::Handler(err))) => {
            ctx.give_up(DeadLetterReason::Permanent, err.message().to_owned())
                .await
        }
        Err(panic) => {
            Counters::add(&sub.counters.panics, 1);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(message_id = %ctx.envelope.message_id, panic = %msg, "handler panicked");
            ctx.retry_or_give_up(format!("panic: {msg}"), None).await
        }
    }
}

/// Every `reclaim_interval`, takes over entries idle for `min_idle` on any consumer of
/// the group (crashed or stuck ones) and handles them as fresh deliveries (B-REC-1).
async fn reclaim_loop(shared: Arc<Shared>, sub: Arc<SubState>) {
    let consumer = sub.consumer.clone();
    let mut wait = shared.cfg.reclaim_interval;
    loop {
        tokio::select! {
            _ = sub.stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = shared.cfg.reclaim_interval;
        let res = shared
            .backend
            .reclaim(
                &sub.key,
                &sub.group,
                &consumer,
                shared.cfg.min_idle,
                RECLAIM_BATCH,
            )
            .await;
        let reclaimed = match res {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(group = %sub.group, error = %e, "reclaim failed");
                continue;
            }
        };
        if !reclaimed.missing.is_empty() {
            let n = reclaimed.missing.len() as u64;
            Counters::add(&sub.counters.missing, n);
            sub.metrics.missing.increment(n);
            let ids: Vec<&str> = reclaimed.missing.iter().map(|e| e.id.as_str()).collect();
            tracing::error!(topic = %sub.key.topic, group = %sub.group, ?ids, "pending entries no longer exist in the topic (trimmed or deleted outside rivulet)");
        }
        if reclaimed.entries.is_empty() {
            continue;
        }
        let n = reclaimed.entries.len();
        Counters::add(&sub.counters.reclaimed, n as u64);
        sub.metrics.reclaimed.increment(n as u64);
        tracing::info!(group = %sub.group, n, "reclaimed idle entries");
        if n == RECLAIM_BATCH {
            wait = Duration::ZERO;
        }
        let mut entries = reclaimed.entries;
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(sub.concurrency));
            let (batch, settle) = process_batch(&shared, &sub, &consumer, entries).await;
            apply(&shared, &sub, settle).await;
            sub.in_flight.remove(&batch);
            entries = rest;
        }
    }
}

/// Keeps the entries of running handlers fresh so they are not reclaimed while a long
/// handler is still working on them (B-REC-2). Runs until the subscription stopped and
/// nothing is in flight.
async fn lease_loop(shared: Arc<Shared>, sub: Arc<SubState>) {
    let period = (shared.cfg.min_idle / 3).max(Duration::from_millis(10));
    let mut stopping = false;
    loop {
        let tick = if stopping {
            period.min(Duration::from_millis(20))
        } else {
            period
        };
        tokio::select! {
            _ = sub.stop.cancelled(), if !stopping => { stopping = true; }
            _ = tokio::time::sleep(tick) => {}
        }
        if stopping && sub.in_flight.is_empty() {
            break;
        }
        for (consumer, entries) in sub.in_flight.older_than(period) {
            if let Err(e) = shared
                .backend
                .extend_lease(&sub.key, &sub.group, &consumer, &entries)
                .await
            {
                tracing::warn!(group = %sub.group, error = %e, "lease extension failed");
            }
        }
    }
}

/// Keeps a broadcast group's heartbeat alive so no process takes it for an orphan.
async fn heartbeat_loop(shared: Arc<Shared>, sub: Arc<SubState>) {
    let ttl = shared.cfg.broadcast_ttl;
    loop {
        tokio::select! {
            _ = sub.stop.cancelled() => break,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        if let Err(e) = shared
            .backend
            .broadcast_heartbeat(&sub.key, &sub.group, ttl)
            .await
        {
            tracing::warn!(group = %sub.group, error = %e, "broadcast heartbeat failed");
        }
    }
}
