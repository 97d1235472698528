//! Running handlers on a batch and turning each outcome into a settlement, by the rules
//! of [`crate::outcome`]. Every closure of the caller's (the handler, an idempotency key
//! function) runs under a panic guard.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{
    EntryRef, Malformation, ReadEntry, Record, RetryLater, Settlements, StreamKind,
};
use crate::bus::Shared;
use crate::bus::subscription::{Counters, Input, SubState};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::handler::DeliveryMeta;
use crate::idempotency::Claim;
use crate::message::{EntryId, Envelope, now_ms};
use crate::outcome::{self, Decision, Outcome, panic_message};
use crate::trace::TraceContext;

/// Handles a batch concurrently. Returns the batch's entries (held until their
/// settlements have been applied) and the settlements to apply: successes to
/// acknowledge and retries to schedule (dead letters were settled by their own atomic
/// transition).
pub(super) async fn batch(
    shared: &Arc<Shared>,
    sub: &Arc<SubState>,
    entries: Vec<ReadEntry>,
) -> (Vec<EntryRef>, Settlements) {
    let refs: Vec<EntryRef> = entries.iter().map(|e| e.entry.clone()).collect();
    let outcomes = join_all(entries.into_iter().map(|e| one(shared, sub, e))).await;
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

/// Applies settlements on the shared connection and returns those that failed. A
/// failure wrote nothing — every settle script does its checks and fallible writes
/// before it acknowledges — so the entries stay pending: the caller keeps holding them
/// and applies the settlements again later (or, when it stops, they are redelivered
/// after `min_idle`: a duplicate, never a loss).
pub(super) async fn apply(shared: &Shared, sub: &SubState, settle: Settlements) -> Settlements {
    let mut failed = Settlements::default();
    if settle.is_empty() {
        return failed;
    }
    if !settle.acks.is_empty()
        && let Err(e) = shared.backend.ack(&sub.key, &sub.group, &settle.acks).await
    {
        tracing::debug!(group = %sub.group, error = %e, n = settle.acks.len(), "ack failed; applied again later");
        failed.acks = settle.acks;
    }
    let scheduled = !settle.retries.is_empty();
    for r in settle.retries {
        if let Err(e) = shared.backend.retry_later(&sub.key, &sub.group, &r).await {
            tracing::debug!(message_id = %r.next.message_id, error = %e, "could not schedule a retry; applied again later");
            failed.retries.push(r);
        }
    }
    if scheduled {
        shared.wake_retry_mover(&sub.key);
    }
    failed
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

/// One entry being handled.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    sub: &'a SubState,
    entry: EntryRef,
    envelope: Envelope,
    delivery_count: u64,
    generation: u64,
}

/// The message inside a record, with what the handler receives and whether it is
/// malformed.
fn unpack(record: Record) -> (Input, Envelope, Option<Malformation>) {
    match record {
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
    }
}

async fn one(shared: &Arc<Shared>, sub: &Arc<SubState>, read: ReadEntry) -> Settle {
    let (input, envelope, mut malformed) = unpack(read.record);
    // The one payload limit is the bus's: an oversized entry written by someone else is
    // dead-lettered, whatever the backend.
    if malformed.is_none() && envelope.payload.len() > shared.cfg.max_payload {
        malformed = Some(Malformation::TooLarge(envelope.payload.len()));
    }
    let ctx = Ctx {
        shared,
        sub,
        entry: read.entry,
        envelope,
        delivery_count: read.delivery_count,
        generation: read.generation,
    };
    if let Some(problem) = malformed {
        return ctx.malformed(problem).await;
    }
    // B-RET-5: an entry redelivered past its attempts (its consumers keep dying on it)
    // is dead-lettered instead of run again.
    if outcome::over_delivered(ctx.envelope.attempt, ctx.delivery_count, &sub.retry) {
        let error = format!(
            "delivered {} times without being settled (consumer crashed or stalled)",
            ctx.delivery_count
        );
        return ctx.give_up(DeadLetterReason::Deliveries, error).await;
    }
    sub.held.start(&ctx.entry);
    let claim = match ctx.claim().await {
        Claimed::Run(key) => key,
        Claimed::Settled(s) => return s,
        Claimed::Failed(outcome) => {
            sub.metrics.outcome(&outcome).increment(1);
            return ctx.settle(outcome, None).await;
        }
    };
    let outcome = ctx.run(input).await;
    ctx.settle(outcome, claim).await
}

/// The result of claiming an idempotency key.
enum Claimed {
    /// Run the handler; the key (if any) is claimed and must be completed or released.
    Run(Option<String>),
    /// Not run: already done, or deferred while another run holds the claim.
    Settled(Settle),
    /// The key function failed.
    Failed(Outcome),
}

impl Ctx<'_> {
    fn is_dead_letter_stream(&self) -> bool {
        self.sub.key.kind == StreamKind::DeadLetters
    }

    async fn malformed(&self, problem: Malformation) -> Settle {
        let (reason, error) = match problem {
            Malformation::Decode(e) => (DeadLetterReason::Decode, e),
            Malformation::TooLarge(n) => (
                DeadLetterReason::TooLarge,
                format!(
                    "payload of {n} bytes exceeds the limit of {} bytes",
                    self.shared.cfg.max_payload
                ),
            ),
        };
        self.give_up(reason, error).await
    }

    /// The idempotency key of this delivery (B-IDEM-2): the key function's, or
    /// `<message-id>:<handler-name>`. The key function runs under the panic guard.
    fn idempotency_key(&self) -> Result<Option<String>, Outcome> {
        let Some(idem) = &self.sub.idempotency else {
            return Ok(None);
        };
        let default = || format!("{}:{}", self.envelope.message_id, self.sub.handler_name);
        let Some(f) = &idem.key else {
            return Ok(Some(default()));
        };
        let payload = &self.envelope.payload;
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(payload))) {
            Ok(key) => Ok(Some(key.unwrap_or_else(default))),
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                Counters::add(&self.sub.counters.panics, 1);
                tracing::error!(message_id = %self.envelope.message_id, panic = %message, "idempotency key function panicked");
                Err(Outcome::Panic {
                    message: format!("idempotency key function: {message}"),
                })
            }
        }
    }

    /// B-IDEM-2/3: claims the key (a claim with a time to live, renewed by the keep-alive while the
    /// handler runs); "done" only after success.
    async fn claim(&self) -> Claimed {
        let key = match self.idempotency_key() {
            Ok(Some(key)) => key,
            Ok(None) => return Claimed::Run(None),
            Err(outcome) => return Claimed::Failed(outcome),
        };
        let Some(store) = self.shared.idempotency.as_ref() else {
            return Claimed::Run(None);
        };
        match store.claim(&key, self.shared.cfg.claim_ttl()).await {
            Ok(Claim::Acquired) => {
                self.sub.held.set_claim(&self.entry, Some(key.clone()));
                Claimed::Run(Some(key))
            }
            Ok(Claim::Done) => {
                Counters::add(&self.sub.counters.duplicates, 1);
                self.sub.metrics.duplicates.increment(1);
                Claimed::Settled(Settle::Ack(self.entry.clone()))
            }
            Ok(_) => {
                // Another run holds the claim: try again later without using an attempt,
                // so a crash of that run cannot turn this message into a skip.
                let delay = self.sub.retry.delay_after(1).max(Duration::from_millis(50));
                Counters::add(&self.sub.counters.deferred, 1);
                Claimed::Settled(self.retry(self.envelope.clone(), delay))
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency claim failed; leaving the entry pending");
                Claimed::Settled(Settle::Done)
            }
        }
    }

    /// Runs the handler under the panic guard, with its span and metrics.
    async fn run(&self, input: Input) -> Outcome {
        let sub = self.sub;
        let env = &self.envelope;
        let meta = Arc::new(DeliveryMeta {
            topic: sub.key.topic.clone(),
            group: sub.group.clone(),
            handler: sub.handler_name.clone(),
            message_id: env.message_id.clone(),
            entry_id: self.entry.id.clone(),
            headers: env.headers.clone(),
            attempt: env.attempt,
            delivery_count: self.delivery_count,
            published_at_ms: env.published_at_ms,
        });
        let span = tracing::info_span!(
            "rivulet.handle",
            topic = %sub.key.topic,
            group = %sub.group,
            message_id = %env.message_id,
            attempt = env.attempt,
            entry_id = %self.entry.id,
            traceparent = env.headers.get(crate::message::TRACEPARENT).map(String::as_str),
        );
        // Every attempt is a child of the publisher's span (B-PUB-3).
        if let Some(cx) = TraceContext::from_headers(&env.headers) {
            cx.adopt(&span);
        }
        let cancel = self.shared.abort.child_token();
        let handler = sub.handler.clone();
        let started = Instant::now();
        // The handler is called inside the guard too: building its future may panic.
        let run = AssertUnwindSafe(async move { handler(input, meta, cancel).await })
            .catch_unwind()
            .instrument(span)
            .await;
        sub.metrics.duration.record(started.elapsed().as_secs_f64());
        let outcome = Outcome::of(run);
        sub.metrics.outcome(&outcome).increment(1);
        if let Outcome::Panic { message } = &outcome {
            Counters::add(&sub.counters.panics, 1);
            tracing::error!(message_id = %env.message_id, panic = %message, "handler panicked");
        }
        outcome
    }

    /// Settles by the outcome rules; completes or releases the idempotency claim.
    async fn settle(&self, outcome: Outcome, claim: Option<String>) -> Settle {
        let ok = outcome == Outcome::Ok;
        if let (Some(key), Some(store)) = (&claim, self.shared.idempotency.as_ref()) {
            self.sub.held.set_claim(&self.entry, None);
            // "Done" before the ack: a crash between the two makes the redelivery a skip
            // of a message that did run, never a skip of one that did not.
            let r = if ok {
                store.complete(key, self.shared.cfg.idempotency_ttl).await
            } else {
                store.release(key).await
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, done = ok, "could not update the idempotency key; it expires by itself");
            }
        }
        if ok {
            Counters::add(&self.sub.counters.handled, 1);
        } else {
            Counters::add(&self.sub.counters.failed, 1);
        }
        match outcome::decide(outcome, self.envelope.attempt, &self.sub.retry) {
            Decision::Complete => Settle::Ack(self.entry.clone()),
            Decision::Retry {
                attempt,
                delay,
                error,
            } => {
                if self.is_dead_letter_stream() {
                    // Dead letters are not rescheduled; the entry stays pending and is
                    // redelivered after min_idle (see `subscribe_dead_letters`).
                    return Settle::Done;
                }
                let mut next = self.envelope.clone();
                next.attempt = attempt;
                Counters::add(&self.sub.counters.retried, 1);
                self.sub.metrics.retries.increment(1);
                tracing::debug!(message_id = %self.envelope.message_id, attempt = self.envelope.attempt, ?delay, %error, "retry scheduled");
                self.retry(next, delay)
            }
            Decision::GiveUp { reason, error } => self.give_up(reason, error).await,
        }
    }

    fn retry(&self, next: Envelope, delay: Duration) -> Settle {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Settle::Retry(RetryLater {
            entry: self.entry.clone(),
            next,
            due_ms: now_ms().saturating_add(delay_ms),
            generation: self.generation,
        })
    }

    /// Dead-letters the message (or drops it when dead-lettering is off).
    async fn give_up(&self, reason: DeadLetterReason, error: String) -> Settle {
        let env = &self.envelope;
        let sub = self.sub;
        if self.is_dead_letter_stream() {
            tracing::error!(message_id = %env.message_id, %reason, %error, "dead-letter handler gave up; the dead letter stays in the queue");
            return Settle::Ack(self.entry.clone());
        }
        if !sub.retry.dead_letter {
            tracing::error!(topic = %sub.key.topic, group = %sub.group, message_id = %env.message_id, %reason, %error, "message dropped (dead-lettering is off)");
            Counters::add(&sub.counters.dropped, 1);
            sub.metrics.dropped.increment(1);
            return Settle::Ack(self.entry.clone());
        }
        let dead = DeadLetter {
            id: EntryId(String::new()),
            topic: sub.key.topic.clone(),
            group: sub.group.clone(),
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
        let span = tracing::info_span!(
            "rivulet.dead_letter",
            topic = %sub.key.topic,
            group = %sub.group,
            message_id = %env.message_id,
            attempt = env.attempt,
            reason = %reason,
        );
        if let Some(cx) = TraceContext::from_headers(&env.headers) {
            cx.adopt(&span);
        }
        match self
            .shared
            .backend
            .dead_letter(&sub.key, &sub.group, &self.entry, self.generation, &dead)
            .instrument(span)
            .await
        {
            Ok(()) => {
                Counters::add(&sub.counters.dead_lettered, 1);
                sub.metrics.dead_lettered(reason);
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
