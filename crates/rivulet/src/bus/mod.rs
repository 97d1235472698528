//! The bus: durable publish/subscribe over topics with consumer groups.

mod consumer;
mod dead_letters;
mod housekeeping;
mod keep_alive;
mod metrics;
mod publish;
mod retry_mover;
mod subscribe;
mod subscription;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dead_letters::DeadLetters;
pub use publish::{Publish, PublishBatch};
pub use subscribe::Subscribe;
pub use subscription::{Subscription, SubscriptionStats};

use crate::backend::{AnyBackend, Backend, StreamKey};
use crate::error::{Error, Result};
use crate::idempotency::IdempotencyStore;
use crate::live::Live;
use crate::name::{ConsumerName, GroupName, TopicName};
use crate::retry::RetryPolicy;
use crate::topic::{TopicOptions, TrimReport};

/// How a subscription reads and runs messages (B-SUB-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Dispatch {
    /// One blocking read of up to `concurrency` entries, handled concurrently, acked
    /// together, then the next read. One connection per subscription. The slowest
    /// handler of a batch holds back the next read.
    #[default]
    Batch,
    /// `concurrency` readers, each with its own connection and consumer name
    /// (`<consumer>:reader<N>`), reading one entry at a time. A slow message holds back
    /// only its reader.
    Sliding,
}

/// The longest concurrency accepted.
const MAX_CONCURRENCY: usize = 1024;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A blocked read notices a silently dead connection only when its block ends.
const MAX_BLOCK_TIMEOUT: Duration = HOUR;
/// Entries of a crashed consumer wait up to `reclaim_interval + min_idle` (and an
/// idempotency claim) before another consumer takes them over; longer is an outage.
const MAX_RECLAIM: Duration = DAY;
/// A shutdown that waits longer than a day for handlers is a hang.
const MAX_DRAIN_TIMEOUT: Duration = DAY;
/// Retries scheduled by other processes wait up to this long for this process's mover.
const MAX_RETRY_MOVER_INTERVAL: Duration = HOUR;
/// Retention applied less than daily lets a topic grow for a day.
const MAX_TRIM_INTERVAL: Duration = DAY;
/// An orphaned broadcast group (and what is pending on it) lingers this long.
const MAX_BROADCAST_TTL: Duration = DAY;
/// One marker key per idempotently published message lives this long.
const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// One key per handled message lives this long.
const MAX_IDEMPOTENCY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longer retention by age is better said as no age limit.
const MAX_AGE: Duration = Duration::from_secs(3650 * 24 * 3600);
/// A publish call that waits longer than this for room is a stuck caller.
const MAX_BACKPRESSURE_WAIT: Duration = HOUR;

fn check_max(name: &str, d: Duration, max: Duration) -> Result<()> {
    if d > max {
        return Err(Error::config(format!(
            "{name} must be at most {}, got {d:?}",
            crate::deadline::human(max)
        )));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) app: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) dispatch: Dispatch,
    pub(crate) concurrency: Option<usize>,
    pub(crate) block_timeout: Duration,
    pub(crate) reclaim_interval: Duration,
    pub(crate) min_idle: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) retry_mover_interval: Duration,
    pub(crate) vanished_group_grace: Duration,
    pub(crate) trim_interval: Duration,
    pub(crate) broadcast_ttl: Duration,
    pub(crate) max_payload: usize,
    pub(crate) dedup_window: Duration,
    pub(crate) idempotency_ttl: Duration,
    pub(crate) idempotency_claim_ttl: Option<Duration>,
    pub(crate) consumer_name: Option<String>,
    pub(crate) topics: HashMap<TopicName, TopicOptions>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            app: "rivulet".into(),
            retry: RetryPolicy::default(),
            dispatch: Dispatch::Batch,
            concurrency: None,
            block_timeout: Duration::from_secs(5),
            reclaim_interval: Duration::from_secs(30),
            min_idle: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
            retry_mover_interval: Duration::from_secs(1),
            vanished_group_grace: Duration::from_secs(300),
            trim_interval: Duration::from_secs(60),
            broadcast_ttl: Duration::from_secs(30),
            max_payload: 1024 * 1024,
            dedup_window: Duration::from_secs(24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_claim_ttl: None,
            consumer_name: None,
            topics: HashMap::new(),
        }
    }
}

impl Config {
    /// How long an idempotency claim lives unless renewed (default: `min_idle`).
    pub(crate) fn claim_ttl(&self) -> Duration {
        self.idempotency_claim_ttl.unwrap_or(self.min_idle)
    }

    /// How long a held entry may go without a keep-alive: a third of the shortest time
    /// to live it must not lose (its idle time before reclaim, its idempotency claim).
    pub(crate) fn keep_alive_period(&self) -> Duration {
        (self.min_idle.min(self.claim_ttl()) / 3).max(Duration::from_millis(10))
    }
}

/// Builds a [`Bus`]. Every setting has the documented default.
#[derive(Debug)]
#[must_use]
pub struct BusBuilder {
    backend: AnyBackend,
    cfg: Config,
    topics: Vec<(String, TopicOptions)>,
    idempotency: Option<Arc<dyn IdempotencyStore>>,
}

macro_rules! duration_setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub fn $name(mut self, d: Duration) -> Self {
            self.cfg.$name = d;
            self
        }
    };
}

impl BusBuilder {
    /// The application name, the first part of derived group names
    /// (`<app>:<topic>__<handler>`). Default `rivulet`.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.cfg.app = app.into();
        self
    }

    /// The bus-wide retry policy; handlers may override it.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.cfg.retry = policy;
        self
    }

    /// The bus-wide dispatch mode; handlers may override it.
    pub fn dispatch(mut self, mode: Dispatch) -> Self {
        self.cfg.dispatch = mode;
        self
    }

    /// The bus-wide concurrency; handlers may override it. Default: the backend's
    /// (1 on Redis, 8 on memory).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.cfg.concurrency = Some(n);
        self
    }

    duration_setter!(
        /// How long one blocking read waits for messages (default 5 s, at most 1 h).
        /// Affects only idle traffic; shutdown interrupts reads at once.
        block_timeout
    );
    duration_setter!(
        /// How often idle pending entries are reclaimed (default 30 s, at most 24 h).
        reclaim_interval
    );
    duration_setter!(
        /// How long an entry must be idle before another consumer may reclaim it
        /// (default 60 s, at most 24 h). Entries a live process holds (running, or read
        /// and waiting to start) are kept fresh by the keep-alive, on a thread of its own.
        min_idle
    );
    duration_setter!(
        /// How long `shutdown` waits for in-flight handlers (default 5 s, at most 24 h).
        drain_timeout
    );
    duration_setter!(
        /// The longest the retry mover sleeps between checks (default 1 s, at most 1 h);
        /// it also wakes at the next due time.
        retry_mover_interval
    );
    duration_setter!(
        /// How long scheduled retries of a group that no longer exists wait for it to
        /// come back (a reader re-creates a group deleted under it) before they are
        /// dead-lettered with reason `group_gone` (default 5 min, at most 24 h). They are
        /// never dropped.
        vanished_group_grace
    );
    duration_setter!(
        /// How often the housekeeping task applies retention and removes orphan
        /// broadcast groups (default 60 s, at most 24 h).
        trim_interval
    );
    duration_setter!(
        /// How long a broadcast group's heartbeat lives (default 30 s, at most 24 h); a
        /// group whose heartbeat has expired is an orphan any process may remove.
        broadcast_ttl
    );
    duration_setter!(
        /// The window in which a caller-supplied message id is written only once
        /// (default 24 h, at most 30 days).
        dedup_window
    );
    duration_setter!(
        /// How long an idempotent handler's key is remembered as done (default 24 h, at
        /// most 365 days).
        idempotency_ttl
    );

    /// How long an idempotency claim lasts unless renewed (default: the bus's
    /// `min_idle`; at most 24 h). The keep-alive renews the claims of running handlers,
    /// so a handler longer than this still runs once; a crashed one's claim expires by
    /// itself.
    pub fn idempotency_claim_ttl(mut self, d: Duration) -> Self {
        self.cfg.idempotency_claim_ttl = Some(d);
        self
    }

    /// The largest payload accepted, in bytes (default 1 MiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.cfg.max_payload = bytes;
        self
    }

    /// Overrides the consumer name (default `<hostname>:<pid>:<rand8>`). Each running
    /// process must use a different one. Each subscription consumes as
    /// `<consumer>:<n>` (its own identity, so one subscription's hand-back never touches
    /// another's entries); sliding readers add `:reader<i>`.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.cfg.consumer_name = Some(name.into());
        self
    }

    /// Sets retention and backpressure for one topic.
    pub fn topic(mut self, topic: impl Into<String>, options: TopicOptions) -> Self {
        self.topics.push((topic.into(), options));
        self
    }

    /// The idempotency store used by handlers marked idempotent.
    pub fn idempotency(mut self, store: impl IdempotencyStore) -> Self {
        self.idempotency = Some(Arc::new(store));
        self
    }

    /// Validates the settings and builds the bus. Must be called inside a Tokio runtime.
    ///
    /// Every duration option has a maximum (in its setter's documentation and the
    /// README's defaults table); a longer one is an [`Error::Config`] naming the option
    /// and its limit. So are a topic's `max_age` over 3650 days and `backpressure_wait`
    /// over 1 h, and a retry `backoff` or `max_delay` over 7 days.
    pub fn build(self) -> Result<Bus> {
        let BusBuilder {
            backend,
            mut cfg,
            topics,
            idempotency,
        } = self;
        if cfg.app.is_empty() || cfg.app.contains(['{', '}', ' ']) {
            return Err(Error::config(
                "app name must be non-empty without spaces or braces",
            ));
        }
        cfg.retry.validate()?;
        if let Some(n) = cfg.concurrency {
            check_concurrency(n)?;
        }
        for (name, d) in [
            ("block_timeout", cfg.block_timeout),
            ("reclaim_interval", cfg.reclaim_interval),
            ("min_idle", cfg.min_idle),
            ("retry_mover_interval", cfg.retry_mover_interval),
            ("vanished_group_grace", cfg.vanished_group_grace),
            ("trim_interval", cfg.trim_interval),
            ("broadcast_ttl", cfg.broadcast_ttl),
        ] {
            if d.is_zero() {
                return Err(Error::config(format!("{name} must be greater than zero")));
            }
        }
        for (name, d, max) in [
            ("block_timeout", cfg.block_timeout, MAX_BLOCK_TIMEOUT),
            ("reclaim_interval", cfg.reclaim_interval, MAX_RECLAIM),
            ("min_idle", cfg.min_idle, MAX_RECLAIM),
            ("drain_timeout", cfg.drain_timeout, MAX_DRAIN_TIMEOUT),
            (
                "retry_mover_interval",
                cfg.retry_mover_interval,
                MAX_RETRY_MOVER_INTERVAL,
            ),
            (
                "vanished_group_grace",
                cfg.vanished_group_grace,
                MAX_RECLAIM,
            ),
            ("trim_interval", cfg.trim_interval, MAX_TRIM_INTERVAL),
            ("broadcast_ttl", cfg.broadcast_ttl, MAX_BROADCAST_TTL),
            ("dedup_window", cfg.dedup_window, MAX_DEDUP_WINDOW),
            ("idempotency_ttl", cfg.idempotency_ttl, MAX_IDEMPOTENCY_TTL),
            (
                "idempotency_claim_ttl",
                cfg.idempotency_claim_ttl.unwrap_or_default(),
                MAX_RECLAIM,
            ),
        ] {
            check_max(name, d, max)?;
        }
        if cfg.max_payload == 0 {
            return Err(Error::config("max_payload must be at least 1 byte"));
        }
        for (name, options) in topics {
            let topic = TopicName::new(name)?;
            if options.max_len == Some(0) {
                return Err(Error::config(format!(
                    "topic {topic}: max_len must be >= 1"
                )));
            }
            if let Some(age) = options.max_age {
                check_max(&format!("topic {topic}: max_age"), age, MAX_AGE)?;
            }
            if let Some(wait) = options.backpressure_wait {
                check_max(
                    &format!("topic {topic}: backpressure_wait"),
                    wait,
                    MAX_BACKPRESSURE_WAIT,
                )?;
            }
            cfg.topics.insert(topic, options);
        }
        let consumer = match &cfg.consumer_name {
            Some(name) => ConsumerName::new(name.clone())?,
            None => ConsumerName::new(default_consumer_name())?,
        };
        let stop = CancellationToken::new();
        Ok(Bus {
            shared: Arc::new(Shared {
                backend: backend.0.clone(),
                any: backend,
                cfg,
                consumer,
                idempotency,
                abort: CancellationToken::new(),
                stop,
                tasks: TaskTracker::new(),
                movers: Mutex::new(HashMap::new()),
                housekeepers: Mutex::new(HashMap::new()),
                keep_alive: keep_alive::KeepAlive::default(),
                next_subscription: AtomicU64::new(1),
                subscriptions: Mutex::new(Vec::new()),
                closing: AtomicBool::new(false),
                closed: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

fn check_concurrency(n: usize) -> Result<()> {
    if n == 0 || n > MAX_CONCURRENCY {
        return Err(Error::config(format!(
            "concurrency must be between 1 and {MAX_CONCURRENCY}, got {n}"
        )));
    }
    Ok(())
}

/// `<hostname>:<pid>:<rand8>` with the hostname reduced to name-safe characters.
fn default_consumer_name() -> String {
    let host: String = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let host = if host.is_empty() { "host".into() } else { host };
    format!("{host}:{}:{}", std::process::id(), rand_suffix())
}

pub(crate) fn rand_suffix() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}

/// State shared by the bus, its subscriptions and its background tasks.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) any: AnyBackend,
    pub(crate) cfg: Config,
    pub(crate) consumer: ConsumerName,
    pub(crate) idempotency: Option<Arc<dyn IdempotencyStore>>,
    /// Cancelled when shutdown begins: stop reading.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the drain timeout passes: handlers are asked to give up.
    pub(crate) abort: CancellationToken,
    pub(crate) tasks: TaskTracker,
    movers: Mutex<HashMap<StreamKey, Arc<Notify>>>,
    housekeepers: Mutex<HashMap<TopicName, ()>>,
    pub(crate) keep_alive: keep_alive::KeepAlive,
    next_subscription: AtomicU64,
    subscriptions: Mutex<Vec<Arc<subscription::SubState>>>,
    closing: AtomicBool,
    closed: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("backend", &self.backend.name())
            .field("app", &self.cfg.app)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    pub(crate) fn topic_options(&self, topic: &TopicName) -> TopicOptions {
        self.cfg.topics.get(topic).cloned().unwrap_or_default()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Starts (once per stream) the task that moves due retries back into lanes, and
    /// returns the handle that wakes it early.
    pub(crate) fn retry_mover(self: &Arc<Self>, key: &StreamKey) -> Arc<Notify> {
        let mut movers = lock(&self.movers);
        if let Some(n) = movers.get(key) {
            return n.clone();
        }
        let notify = Arc::new(Notify::new());
        movers.insert(key.clone(), notify.clone());
        self.tasks
            .spawn(retry_mover::run(self.clone(), key.clone(), notify.clone()));
        notify
    }

    /// Wakes the retry mover of `key` if this bus runs one.
    pub(crate) fn wake_retry_mover(&self, key: &StreamKey) {
        if let Some(n) = lock(&self.movers).get(key) {
            n.notify_one();
        }
    }

    /// Starts (once per topic) the housekeeping task: retention and orphan broadcast
    /// groups, in publishing and consuming processes alike.
    pub(crate) fn housekeeper(self: &Arc<Self>, topic: &TopicName) {
        let mut started = lock(&self.housekeepers);
        if started.insert(topic.clone(), ()).is_some() {
            return;
        }
        self.tasks
            .spawn(housekeeping::run(self.clone(), topic.clone()));
    }

    /// The consumer identity of the next subscription: `<bus consumer>:<n>`.
    pub(crate) fn next_consumer(&self) -> Result<ConsumerName> {
        let n = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        ConsumerName::new(format!("{}:{n}", self.consumer))
    }

    /// The settings of the keep-alive thread.
    pub(crate) fn keep_alive_settings(&self) -> keep_alive::Settings {
        keep_alive::Settings {
            backend: self.backend.clone(),
            idempotency: self.idempotency.clone(),
            period: self.cfg.keep_alive_period(),
            claim_ttl: self.cfg.claim_ttl(),
            stop: self.stop.clone(),
            abort: self.abort.clone(),
        }
    }

    pub(crate) fn register(&self, sub: Arc<subscription::SubState>) {
        lock(&self.subscriptions).push(sub);
    }
}

/// A message bus over one backend. Cheap to clone; clones share everything.
///
/// Build one with [`Bus::builder`]. Publish with [`Bus::publish`], subscribe with
/// [`Bus::subscribe`], and stop with [`Bus::shutdown`], which drains in-flight handlers.
#[derive(Clone, Debug)]
pub struct Bus {
    pub(crate) shared: Arc<Shared>,
}

impl Bus {
    /// A builder over `backend` ([`MemoryBackend`](crate::MemoryBackend) or
    /// [`RedisBackend`](crate::RedisBackend)).
    pub fn builder(backend: impl Into<AnyBackend>) -> BusBuilder {
        BusBuilder {
            backend: backend.into(),
            cfg: Config::default(),
            topics: Vec::new(),
            idempotency: None,
        }
    }

    /// A bus on a fresh in-memory backend with every default.
    pub fn memory() -> Result<Bus> {
        Bus::builder(crate::MemoryBackend::new()).build()
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.shared.backend.name()
    }

    /// The consumer name this bus uses (`<hostname>:<pid>:<rand8>` by default).
    pub fn consumer_name(&self) -> &ConsumerName {
        &self.shared.consumer
    }

    /// The group name derived for a handler: `<app>:<topic>__<handler>`.
    pub fn derived_group(&self, topic: &str, handler: &str) -> Result<GroupName> {
        GroupName::new(format!("{}:{topic}__{handler}", self.shared.cfg.app))
    }

    /// The dead-letter queue of `topic`: list, replay, purge.
    pub fn dead_letters(&self, topic: &str) -> Result<DeadLetters> {
        Ok(DeadLetters {
            backend: self.shared.any.clone(),
            topic: TopicName::new(topic)?,
        })
    }

    /// The topics known to the backend (its topic registry: every topic published to
    /// or subscribed to through rivulet), without scanning the keyspace.
    pub async fn topics(&self) -> Result<Vec<TopicName>> {
        self.shared.backend.topics().await
    }

    /// Live channels (lossy pub/sub).
    pub fn live(&self) -> Live {
        Live {
            backend: self.shared.any.clone(),
            max_payload: self.shared.cfg.max_payload,
            stop: self.shared.stop.clone(),
        }
    }

    /// Applies `topic`'s retention now. Safe mode (the default) never removes an entry
    /// some group has not been delivered or has not acknowledged.
    pub async fn trim(&self, topic: &str) -> Result<TrimReport> {
        let topic = TopicName::new(topic)?;
        let options = self.shared.topic_options(&topic);
        self.shared.backend.trim(&topic, &options).await
    }

    /// Stops the bus gracefully (B-REC-3): stops reading, interrupts blocking reads,
    /// waits up to `drain_timeout` for in-flight handlers (their ack, retry and
    /// dead-letter writes complete), hands back entries read but not started, destroys
    /// this process's broadcast groups and closes the connections the bus owns (its
    /// readers and live subscriptions). The backend itself stays usable by every other
    /// bus built on it; its shared connection closes when its last clone is dropped.
    ///
    /// Idempotent: later and concurrent calls wait for the same shutdown.
    pub async fn shutdown(&self) {
        let shared = self.shared.clone();
        self.shared
            .closed
            .get_or_init(|| async move {
                shared.closing.store(true, Ordering::SeqCst);
                shared.stop.cancel();
                shared.tasks.close();
                let drained =
                    tokio::time::timeout(shared.cfg.drain_timeout, shared.tasks.wait()).await;
                if drained.is_err() {
                    tracing::warn!(
                        timeout = ?shared.cfg.drain_timeout,
                        "drain timeout passed with handlers still running; their entries stay pending and will be reclaimed"
                    );
                    shared.abort.cancel();
                }
                let subs: Vec<_> = lock(&shared.subscriptions).drain(..).collect();
                for sub in subs {
                    sub.finish(&shared).await;
                }
            })
            .await;
    }

    /// Whether [`shutdown`](Bus::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closing()
    }

    /// A token cancelled when shutdown begins; useful to tie other tasks to the bus.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.stop.clone()
    }
}
