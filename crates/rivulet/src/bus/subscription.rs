//! A running subscription: its settings, counters and held entries (shared by its
//! tasks), and the [`Subscription`] handle the caller keeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::keep_alive::Held;
use super::{Dispatch, Shared, lock};
use crate::backend::StreamKey;
use crate::dead_letter::DeadLetter;
use crate::handler::DeliveryMeta;
use crate::name::{ConsumerName, GroupName, TopicName};
use crate::outcome::Failure;
use crate::retry::RetryPolicy;

/// What an erased handler receives.
pub(crate) enum Input {
    Payload(Bytes),
    DeadLetter(Box<DeadLetter>),
}

pub(crate) type ErasedHandler = Arc<
    dyn Fn(Input, Arc<DeliveryMeta>, CancellationToken) -> BoxFuture<'static, Result<(), Failure>>
        + Send
        + Sync,
>;

/// Computes an idempotency key from a raw payload; `None` falls back to the default key.
pub(crate) type KeyFn = Arc<dyn Fn(&Bytes) -> Option<String> + Send + Sync>;

/// How a subscription deduplicates runs (B-IDEM-2).
#[derive(Clone)]
pub(crate) struct Idempotency {
    pub(crate) key: Option<KeyFn>,
}

/// Counters of one subscription since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Deliveries whose handler succeeded (acknowledged).
    pub handled: u64,
    /// Handler runs that failed (errors and panics), whatever happened next.
    pub failed: u64,
    /// Of those, panics caught.
    pub panics: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Messages sent to the dead-letter queue by this subscription.
    pub dead_lettered: u64,
    /// Messages dropped after their last attempt because dead-lettering is off.
    pub dropped: u64,
    /// Deliveries skipped because an idempotent handler had already run for the key.
    pub duplicates: u64,
    /// Deliveries rescheduled because another run held the idempotency key's claim.
    pub deferred: u64,
    /// Entries taken over from idle consumers.
    pub reclaimed: u64,
    /// Pending entries found missing from the log during reclaim (trimmed or deleted).
    pub missing: u64,
    /// Times one of the subscription's background tasks died (a bug: a panic inside
    /// rivulet) and was restarted. See [`Subscription::last_failure`].
    pub task_restarts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) handled: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) missing: AtomicU64,
    pub(crate) task_restarts: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SubscriptionStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SubscriptionStats {
            handled: g(&self.handled),
            failed: g(&self.failed),
            panics: g(&self.panics),
            retried: g(&self.retried),
            dead_lettered: g(&self.dead_lettered),
            dropped: g(&self.dropped),
            duplicates: g(&self.duplicates),
            deferred: g(&self.deferred),
            reclaimed: g(&self.reclaimed),
            missing: g(&self.missing),
            task_restarts: g(&self.task_restarts),
        }
    }
}

/// A running subscription's state, shared by its tasks.
pub(crate) struct SubState {
    pub(crate) key: StreamKey,
    pub(crate) group: GroupName,
    pub(crate) handler_name: Arc<str>,
    /// This subscription's own consumer identity (`<bus consumer>:<n>`): reclaims and
    /// the batch reader use it; no other subscription ever does (B-SUB-4).
    pub(crate) consumer: ConsumerName,
    /// The consumer identity of each reader: `consumer` for batch dispatch,
    /// `<consumer>:reader<i>` for sliding dispatch.
    pub(crate) readers: Vec<ConsumerName>,
    pub(crate) dispatch: Dispatch,
    pub(crate) concurrency: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) broadcast: bool,
    pub(crate) handler: ErasedHandler,
    pub(crate) counters: Counters,
    pub(crate) metrics: super::metrics::SubMetrics,
    /// Entries read, running, or waiting for their settlement: kept alive.
    pub(crate) held: Arc<Held>,
    /// Cancelled to stop this subscription (a child of the bus's stop token).
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) last_failure: Mutex<Option<String>>,
    pub(crate) finished: tokio::sync::OnceCell<()>,
}

/// Entries handed back per call at the end of a subscription.
const HAND_BACK_PAGE: usize = 100;

impl SubState {
    /// After the subscription's tasks ended (or the drain timeout passed): hands back
    /// entries this subscription holds but has not started (including any a blocking
    /// read received as it was interrupted), then destroys a broadcast group.
    /// Idempotent.
    pub(crate) async fn finish(&self, shared: &Shared) {
        self.finished
            .get_or_init(|| async {
                self.hand_back(shared).await;
                if self.broadcast
                    && let Err(e) = shared.backend.destroy_group(&self.key, &self.group).await
                {
                    tracing::warn!(group = %self.group, error = %e, "could not destroy broadcast group; a process will remove it once its heartbeat expires");
                }
            })
            .await;
    }

    async fn hand_back(&self, shared: &Shared) {
        let started = self.held.started();
        let mut consumers = vec![self.consumer.clone()];
        consumers.extend(
            self.readers
                .iter()
                .filter(|c| **c != self.consumer)
                .cloned(),
        );
        let page = HAND_BACK_PAGE + started.len();
        for consumer in consumers {
            loop {
                let pending = match shared
                    .backend
                    .pending_of(&self.key, &self.group, &consumer, page)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(group = %self.group, error = %e, "could not list entries to hand back; they will be reclaimed after min_idle");
                        break;
                    }
                };
                let full = pending.len() == page;
                let unstarted: Vec<_> = pending
                    .into_iter()
                    .filter(|e| !started.contains(e))
                    .collect();
                if unstarted.is_empty() {
                    break;
                }
                match shared
                    .backend
                    .hand_back(&self.key, &self.group, &consumer, &unstarted)
                    .await
                {
                    Ok(n) => {
                        self.held.release(&unstarted);
                        tracing::debug!(group = %self.group, %consumer, n, "handed back unstarted entries");
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.group, error = %e, "hand back failed; entries will be reclaimed after min_idle");
                        break;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        // What is still held and unstarted is pending nowhere on this subscription:
        // reclaimed by another consumer (left alone), or orphaned by a group deleted and
        // re-created after it was read (copied to the lane, so it is not lost).
        let rest = self.held.unstarted();
        if rest.is_empty() {
            return;
        }
        match shared
            .backend
            .hand_back_orphans(&self.key, &self.group, &rest)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(group = %self.group, n, "handed back entries read before the group was re-created")
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "could not hand back entries read before the group was re-created")
            }
        }
        let refs: Vec<_> = rest.into_iter().map(|(e, _)| e).collect();
        self.held.release(&refs);
    }

    /// Records that a background task died.
    pub(crate) fn task_failed(&self, task: &str, error: &str) {
        Counters::add(&self.counters.task_restarts, 1);
        self.metrics.task_restarts.increment(1);
        tracing::error!(topic = %self.key.topic, group = %self.group, task, %error, "a subscription task died; restarting it");
        *lock(&self.last_failure) = Some(format!("{task}: {error}"));
    }
}

/// A running subscription.
pub struct Subscription {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Arc<SubState>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.state.key.topic)
            .field("group", &self.state.group)
            .field("consumer", &self.state.consumer)
            .finish()
    }
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &TopicName {
        &self.state.key.topic
    }

    /// The group this subscription consumes in.
    pub fn group(&self) -> &GroupName {
        &self.state.group
    }

    /// The handler's name.
    pub fn handler(&self) -> &str {
        &self.state.handler_name
    }

    /// This subscription's consumer name in its group (`<bus consumer>:<n>`; sliding
    /// readers add `:reader<i>`).
    pub fn consumer(&self) -> &ConsumerName {
        &self.state.consumer
    }

    /// The dispatch mode in effect.
    pub fn dispatch(&self) -> Dispatch {
        self.state.dispatch
    }

    /// The concurrency in effect.
    pub fn concurrency(&self) -> usize {
        self.state.concurrency
    }

    /// Counters since the subscription started.
    pub fn stats(&self) -> SubscriptionStats {
        self.state.counters.snapshot()
    }

    /// The last time a background task of this subscription died, if one did: which
    /// task and why. It was logged, counted in [`SubscriptionStats::task_restarts`] and
    /// restarted; a subscription never stops consuming silently.
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.state.last_failure).clone()
    }

    /// Whether the subscription is still consuming (not unsubscribed, bus not shut
    /// down).
    pub fn is_running(&self) -> bool {
        !self.state.stop.is_cancelled()
    }

    /// Stops this subscription alone, draining its in-flight handlers (up to the bus's
    /// drain timeout) and handing back what it read but did not start. The rest of the
    /// bus keeps running.
    pub async fn unsubscribe(&self) {
        self.state.stop.cancel();
        self.state.tasks.close();
        if tokio::time::timeout(self.shared.cfg.drain_timeout, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(group = %self.state.group, "unsubscribe: drain timeout passed");
        }
        self.state.finish(&self.shared).await;
    }
}
