//! Subscribing: topic + handler + options (B-SUB-1..5).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Bus, Dispatch, Shared, check_concurrency, consumer, rand_suffix};
use crate::backend::StreamKey;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::handler::{Delivery, DeliveryMeta, HandlerError};
use crate::name::{ConsumerName, GroupName, HandlerName, TopicName};
use crate::retry::RetryPolicy;
use crate::topic::StartFrom;

/// What an erased handler receives.
pub(crate) enum Input {
    Payload(Bytes),
    DeadLetter(Box<DeadLetter>),
}

/// Why an erased handler did not succeed.
pub(crate) enum Failure {
    Handler(HandlerError),
    /// The payload could not be decoded into the handler's type.
    Decode(String),
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
    /// Deliveries rescheduled because another run held the idempotency key's lease.
    pub deferred: u64,
    /// Entries taken over from idle consumers.
    pub reclaimed: u64,
    /// Pending entries found missing from the log during reclaim (trimmed or deleted).
    pub missing: u64,
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
        }
    }
}

/// A running subscription's state, shared by its tasks.
pub(crate) struct SubState {
    pub(crate) key: StreamKey,
    pub(crate) group: GroupName,
    pub(crate) handler_name: Arc<str>,
    pub(crate) consumer: ConsumerName,
    pub(crate) dispatch: Dispatch,
    pub(crate) concurrency: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) broadcast: bool,
    pub(crate) handler: ErasedHandler,
    pub(crate) counters: Counters,
    pub(crate) metrics: super::metrics::SubMetrics,
    /// Entries being handled, with the consumer that owns them and when they started.
    pub(crate) in_flight: consumer::InFlight,
    /// Cancelled to stop this subscription (a child of the bus's stop token).
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
    finished: tokio::sync::OnceCell<()>,
}

impl SubState {
    /// After the subscription's tasks ended (or the drain timed out): destroy a broadcast
    /// group. Idempotent.
    pub(crate) async fn finish(&self, shared: &Shared) {
        self.finished
            .get_or_init(|| async {
                if self.broadcast
                    && let Err(e) = shared.backend.destroy_group(&self.key, &self.group).await
                {
                    tracing::warn!(group = %self.group, error = %e, "could not destroy broadcast group; another process will remove it once its heartbeat expires");
                }
            })
            .await;
    }
}

/// A subscription being built. Await it to start consuming (`IntoFuture`).
#[must_use = "a subscription does nothing until awaited"]
pub struct Subscribe<'a> {
    bus: &'a Bus,
    key: Result<StreamKey>,
    handler_name: Result<HandlerName>,
    handler: ErasedHandler,
    group: Option<Result<GroupName>>,
    broadcast: bool,
    dispatch: Option<Dispatch>,
    concurrency: Option<usize>,
    retry: Option<RetryPolicy>,
    idempotency: Option<Idempotency>,
    start: StartFrom,
    /// Set for typed subscriptions: builds a key function from the typed payload.
    key_error: Option<Error>,
}

impl std::fmt::Debug for Subscribe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribe")
            .field("key", &self.key)
            .field("handler", &self.handler_name)
            .finish_non_exhaustive()
    }
}

impl<'a> Subscribe<'a> {
    /// Joins an explicit group: every handler and process using it competes for the
    /// group's messages. Without it the group is `<app>:<topic>__<handler>`.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(GroupName::new(group));
        self
    }

    /// Every process gets its own copy of every message (group
    /// `<base>__<hostname>_<pid>_<rand8>`), destroyed on graceful shutdown (B-SUB-3).
    pub fn broadcast(mut self) -> Self {
        self.broadcast = true;
        self
    }

    /// The dispatch mode for this handler.
    pub fn dispatch(mut self, mode: Dispatch) -> Self {
        self.dispatch = Some(mode);
        self
    }

    /// How many messages this handler runs at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// The retry policy for this handler (overrides the bus's).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Runs the handler at most once per message within the bus's idempotency TTL, with
    /// the key `<message-id>:<handler-name>`. Needs an idempotency store on the bus.
    pub fn idempotent(mut self) -> Self {
        self.idempotency.get_or_insert(Idempotency { key: None });
        self
    }

    /// Where a newly created group starts (default: new messages only).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    async fn run(self) -> Result<Subscription> {
        if let Some(e) = self.key_error {
            return Err(e);
        }
        let shared = self.bus.shared.clone();
        if shared.is_closing() {
            return Err(Error::Closed);
        }
        let key = self.key?;
        let handler_name = self.handler_name?;
        let base_group = match self.group {
            Some(g) => g?,
            None => {
                let derived = format!("{}:{}__{}", shared.cfg.app, key.topic, handler_name);
                let derived = match key.kind {
                    crate::backend::StreamKind::Main => derived,
                    crate::backend::StreamKind::DeadLetters => format!("{derived}.dlq"),
                };
                GroupName::new(derived)?
            }
        };
        let dispatch = self.dispatch.unwrap_or(shared.cfg.dispatch);
        let concurrency = self
            .concurrency
            .or(shared.cfg.concurrency)
            .unwrap_or_else(|| shared.backend.default_concurrency());
        check_concurrency(concurrency)?;
        let retry = self.retry.unwrap_or_else(|| shared.cfg.retry.clone());
        retry.validate()?;
        if self.idempotency.is_some() && shared.idempotency.is_none() {
            return Err(Error::config(format!(
                "handler {handler_name} is idempotent but the bus has no idempotency store; add one with BusBuilder::idempotency"
            )));
        }
        let consumer = shared.consumer.clone();
        let group = if self.broadcast {
            let host_pid = consumer
                .as_str()
                .rsplit_once(':')
                .map_or(consumer.as_str(), |(hp, _)| hp)
                .replace(':', "_");
            GroupName::new(format!("{base_group}__{host_pid}_{}", rand_suffix()))?
        } else {
            base_group.clone()
        };
        if self.broadcast {
            // Heartbeat before the group exists, so no other process ever sees it as an
            // orphan; then remove the orphans of crashed processes on any host.
            shared
                .backend
                .broadcast_heartbeat(&key, &group, shared.cfg.broadcast_ttl)
                .await?;
            match shared
                .backend
                .remove_orphan_broadcast_groups(&key, &base_group)
                .await
            {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "removed orphan broadcast groups");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "orphan broadcast cleanup failed"),
            }
        }
        shared
            .backend
            .ensure_group(&key, &group, &self.start)
            .await?;

        let metrics = super::metrics::SubMetrics::new(key.topic.as_str(), group.as_str());
        let state = Arc::new(SubState {
            key: key.clone(),
            group,
            handler_name: Arc::from(handler_name.as_str()),
            consumer,
            dispatch,
            concurrency,
            retry,
            idempotency: self.idempotency,
            broadcast: self.broadcast,
            handler: self.handler,
            counters: Counters::default(),
            metrics,
            in_flight: consumer::InFlight::default(),
            stop: shared.stop.child_token(),
            tasks: TaskTracker::new(),
            finished: tokio::sync::OnceCell::new(),
        });
        shared.register(state.clone());
        shared.retry_mover(&key);
        consumer::start(&shared, &state).await?;
        Ok(Subscription { shared, state })
    }
}

impl<'a> IntoFuture for Subscribe<'a> {
    type Output = Result<Subscription>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Subscription>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A running subscription.
pub struct Subscription {
    shared: Arc<Shared>,
    state: Arc<SubState>,
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

    /// Stops this subscription alone, draining its in-flight handlers (up to the bus's
    /// drain timeout). The rest of the bus keeps running.
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

impl Bus {
    fn subscribe_erased(
        &self,
        key: Result<StreamKey>,
        handler_name: &str,
        handler: ErasedHandler,
    ) -> Subscribe<'_> {
        Subscribe {
            bus: self,
            key,
            handler_name: HandlerName::new(handler_name),
            handler,
            group: None,
            broadcast: false,
            dispatch: None,
            concurrency: None,
            retry: None,
            idempotency: None,
            start: StartFrom::New,
            key_error: None,
        }
    }

    /// Subscribes `handler` to `topic`; payloads are decoded from JSON into `T`. A
    /// payload that does not decode is dead-lettered with reason `decode`.
    ///
    /// `handler_name` names the handler on the wire (it is part of the derived group);
    /// it must stay stable across deployments.
    pub fn subscribe<T, F, Fut>(&self, topic: &str, handler_name: &str, handler: F) -> Subscribe<'_>
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Delivery<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |input, meta, cancel| {
            let payload = match input {
                Input::Payload(p) => p,
                Input::DeadLetter(d) => d.payload,
            };
            match serde_json::from_slice::<T>(&payload) {
                Ok(value) => {
                    let fut = handler(Delivery::new(value, meta, cancel));
                    async move { fut.await.map_err(Failure::Handler) }.boxed()
                }
                Err(e) => {
                    let msg = e.to_string();
                    async move { Err(Failure::Decode(msg)) }.boxed()
                }
            }
        });
        self.subscribe_erased(
            TopicName::new(topic).map(StreamKey::main),
            handler_name,
            erased,
        )
    }

    /// Subscribes `handler` to `topic` with raw payloads.
    pub fn subscribe_raw<F, Fut>(
        &self,
        topic: &str,
        handler_name: &str,
        handler: F,
    ) -> Subscribe<'_>
    where
        F: Fn(Delivery<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let erased: ErasedHandler = Arc::new(move |input, meta, cancel| {
            let payload = match input {
                Input::Payload(p) => p,
                Input::DeadLetter(d) => d.payload,
            };
            let fut = handler(Delivery::new(payload, meta, cancel));
            async move { fut.await.map_err(Failure::Handler) }.boxed()
        });
        self.subscribe_erased(
            TopicName::new(topic).map(StreamKey::main),
            handler_name,
            erased,
        )
    }

    /// Consumes `topic`'s dead-letter queue like a topic: each group gets every dead
    /// letter. Consuming does not remove dead letters from the queue (use
    /// [`DeadLetters`](crate::DeadLetters) to replay or purge). A failing dead-letter
    /// handler is not retried with backoff: its entry is redelivered after `min_idle`
    /// until it has been delivered `max_attempts` times, then skipped with an error log.
    pub fn subscribe_dead_letters<F, Fut>(
        &self,
        topic: &str,
        handler_name: &str,
        handler: F,
    ) -> Subscribe<'_>
    where
        F: Fn(Delivery<DeadLetter>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let erased: ErasedHandler = Arc::new(move |input, meta, cancel| match input {
            Input::DeadLetter(d) => {
                let fut = handler(Delivery::new(*d, meta, cancel));
                async move { fut.await.map_err(Failure::Handler) }.boxed()
            }
            Input::Payload(_) => {
                async { Err(Failure::Decode("not a dead-letter record".into())) }.boxed()
            }
        });
        self.subscribe_erased(
            TopicName::new(topic).map(StreamKey::dead_letters),
            handler_name,
            erased,
        )
    }
}

impl<'a> Subscribe<'a> {
    /// Like [`idempotent`](Subscribe::idempotent), with the key computed from the
    /// payload (decoded as JSON into `T`); a payload that does not decode uses the
    /// default key.
    pub fn idempotent_by<T, K>(mut self, key: K) -> Self
    where
        T: DeserializeOwned,
        K: Fn(&T) -> String + Send + Sync + 'static,
    {
        let f: KeyFn =
            Arc::new(move |bytes: &Bytes| serde_json::from_slice::<T>(bytes).ok().map(|v| key(&v)));
        self.idempotency = Some(Idempotency { key: Some(f) });
        self
    }
}
