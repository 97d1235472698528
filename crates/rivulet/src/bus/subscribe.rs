//! Subscribing: topic + handler + options (B-SUB-1..5).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tokio_util::task::TaskTracker;

use super::keep_alive::Held;
use super::subscription::{
    Counters, ErasedHandler, Idempotency, Input, KeyFn, SubState, Subscription,
};
use super::{Bus, Dispatch, check_concurrency, consumer, rand_suffix};
use crate::backend::{GroupRole, GroupStatus, StreamKey, StreamKind};
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::handler::{Delivery, HandlerError};
use crate::name::{ConsumerName, GroupName, HandlerName, TopicName};
use crate::outcome::Failure;
use crate::retry::RetryPolicy;
use crate::topic::StartFrom;

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
    /// `<base>__<hostname>_<pid>_<rand8>`, registered as a broadcast group), destroyed
    /// on graceful shutdown; the groups of crashed processes are removed by any process
    /// once their heartbeat expired (B-SUB-3).
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

    /// Where a newly created group starts (default: new messages only). An existing
    /// group keeps its position. A group rivulet had registered that is gone from the
    /// topic (deleted outside rivulet) is re-created at the start of the retained
    /// history whatever this says, so nothing is skipped.
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
                    StreamKind::Main => derived,
                    StreamKind::DeadLetters => format!("{derived}.dead-letters"),
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
        let consumer = shared.next_consumer()?;
        let readers = match dispatch {
            Dispatch::Batch => vec![consumer.clone()],
            Dispatch::Sliding => (0..concurrency)
                .map(|i| ConsumerName::new(format!("{consumer}:reader{i}")))
                .collect::<Result<_>>()?,
        };
        let (group, role) = if self.broadcast {
            let bus_consumer = shared.consumer.as_str();
            let host_pid = bus_consumer
                .rsplit_once(':')
                .map_or(bus_consumer, |(hp, _)| hp)
                .replace(':', "_");
            let name = format!("{base_group}__{host_pid}_{}", rand_suffix());
            (GroupName::new(name)?, GroupRole::Broadcast)
        } else {
            (base_group, GroupRole::Regular)
        };
        if self.broadcast {
            // Heartbeat before the group exists, so no other process ever sees it as an
            // orphan; then remove the orphans of crashed processes (only groups
            // registered as broadcast groups are ever considered).
            shared
                .backend
                .broadcast_heartbeat(&key, &group, shared.cfg.broadcast_ttl)
                .await?;
            match shared.backend.remove_orphan_broadcast_groups(&key).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "removed orphan broadcast groups");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "orphan broadcast cleanup failed"),
            }
        }
        let status = shared
            .backend
            .ensure_group(&key, &group, &self.start, role)
            .await?;
        if status == GroupStatus::Recreated {
            tracing::warn!(topic = %key.topic, %group, "group was registered but gone from the topic (deleted outside rivulet); re-created at the start of the retained history, so entries may be handled again");
        }

        let metrics = super::metrics::SubMetrics::new(key.topic.as_str(), group.as_str());
        let held = Arc::new(Held::new(key.clone(), group.clone()));
        let state = Arc::new(SubState {
            key: key.clone(),
            group,
            handler_name: Arc::from(handler_name.as_str()),
            consumer,
            readers,
            dispatch,
            concurrency,
            retry,
            idempotency: self.idempotency,
            broadcast: self.broadcast,
            handler: self.handler,
            counters: Counters::default(),
            metrics,
            held: held.clone(),
            stop: shared.stop.child_token(),
            tasks: TaskTracker::new(),
            last_failure: Mutex::new(None),
            finished: tokio::sync::OnceCell::new(),
        });
        shared.register(state.clone());
        shared
            .keep_alive
            .register(&held, || shared.keep_alive_settings());
        shared.retry_mover(&key);
        shared.housekeeper(&key.topic);
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
        // Called under the panic guard (a panicking key function counts as a handler
        // panic: retried with backoff, never a dead read loop).
        let f: KeyFn =
            Arc::new(move |bytes: &Bytes| serde_json::from_slice::<T>(bytes).ok().map(|v| key(&v)));
        self.idempotency = Some(Idempotency { key: Some(f) });
        self
    }
}
