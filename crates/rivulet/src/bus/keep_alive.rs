//! The keep-alive (B-REC-2): entries a subscription holds — read and waiting to start,
//! running, or waiting for their settlement to travel with the next read — have their
//! idle time refreshed so no other consumer reclaims them, and idempotency claims of
//! running handlers are renewed.
//!
//! It runs on a thread of its own with a small runtime and its own connection (a
//! [detached](crate::backend::Backend::detach) backend handle), so a handler that
//! blocks its thread, burns CPU, or panics under a slow panic hook cannot starve it: only
//! a dead or stopped process loses its entries. The job worker's lease renewal reuses it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::lock;
use crate::backend::{Backend, EntryRef, StreamKey};
use crate::idempotency::IdempotencyStore;
use crate::log_limit::FailureLog;
use crate::name::{ConsumerName, GroupName};

/// One held entry.
#[derive(Debug)]
struct HeldEntry {
    consumer: ConsumerName,
    /// When its idle time was last reset (read, reclaimed or refreshed).
    refreshed: Instant,
    /// Whether its handler has started (a started entry is never handed back).
    started: bool,
    /// The idempotency key its handler claimed, renewed with the entry.
    claim: Option<String>,
    /// The incarnation of the group that delivered it.
    generation: u64,
}

/// What one subscription holds.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) key: StreamKey,
    pub(crate) group: GroupName,
    entries: Mutex<HashMap<EntryRef, HeldEntry>>,
    /// Readers with a read outstanding, since when. Redis may have delivered entries
    /// the read loop has not received yet (its runtime is blocked): while the read is
    /// outstanding, whatever is pending on that consumer is kept alive too.
    reads: Mutex<HashMap<ConsumerName, Instant>>,
    /// `rivulet_in_flight{topic, group}`: entries held by this subscription (read or
    /// reclaimed, until their settlement is applied).
    in_flight: metrics::Gauge,
}

/// The most entries pending on one reading consumer the keep-alive looks up per period.
const READ_PAGE: usize = 1024;

/// Entries to refresh for one consumer.
#[derive(Debug)]
struct Due {
    consumer: ConsumerName,
    entries: Vec<EntryRef>,
    claims: Vec<String>,
}

impl Held {
    pub(crate) fn new(key: StreamKey, group: GroupName) -> Self {
        let in_flight = metrics::gauge!(
            "rivulet_in_flight",
            "topic" => key.topic.to_string(),
            "group" => group.to_string()
        );
        Held {
            key,
            group,
            in_flight,
            entries: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
        }
    }

    /// `consumer` starts a read.
    pub(crate) fn reading(&self, consumer: &ConsumerName) {
        lock(&self.reads).insert(consumer.clone(), Instant::now());
    }

    /// `consumer`'s read returned (or was abandoned).
    pub(crate) fn read_done(&self, consumer: &ConsumerName) {
        lock(&self.reads).remove(consumer);
    }

    /// Consumers whose read has been outstanding for `period` or more.
    fn long_reads(&self, period: Duration) -> Vec<ConsumerName> {
        let now = Instant::now();
        lock(&self.reads)
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= period)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Entries just read or reclaimed by `consumer`: held, not started.
    pub(crate) fn hold<'a>(
        &self,
        consumer: &ConsumerName,
        entries: impl IntoIterator<Item = &'a crate::backend::ReadEntry>,
    ) {
        let now = Instant::now();
        let mut map = lock(&self.entries);
        let before = map.len();
        for e in entries {
            map.insert(
                e.entry.clone(),
                HeldEntry {
                    consumer: consumer.clone(),
                    refreshed: now,
                    started: false,
                    claim: None,
                    generation: e.generation,
                },
            );
        }
        self.in_flight.increment((map.len() - before) as f64);
    }

    /// The handler of `entry` starts.
    pub(crate) fn start(&self, entry: &EntryRef) {
        if let Some(h) = lock(&self.entries).get_mut(entry) {
            h.started = true;
        }
    }

    /// The handler of `entry` holds the idempotency claim `key` (or no longer does).
    pub(crate) fn set_claim(&self, entry: &EntryRef, key: Option<String>) {
        if let Some(h) = lock(&self.entries).get_mut(entry) {
            h.claim = key;
        }
    }

    /// Entries whose settlement has been applied (or that were handed back).
    pub(crate) fn release(&self, entries: &[EntryRef]) {
        let mut map = lock(&self.entries);
        let removed = entries.iter().filter(|e| map.remove(e).is_some()).count();
        self.in_flight.decrement(removed as f64);
    }

    /// The entries of `read` this subscription does not hold already.
    pub(crate) fn not_held(
        &self,
        read: Vec<crate::backend::ReadEntry>,
    ) -> Vec<crate::backend::ReadEntry> {
        let map = lock(&self.entries);
        read.into_iter()
            .filter(|r| !map.contains_key(&r.entry))
            .collect()
    }

    /// Entries held and not started, with the incarnation of the group that delivered
    /// them.
    pub(crate) fn unstarted(&self) -> Vec<(EntryRef, u64)> {
        lock(&self.entries)
            .iter()
            .filter(|(_, h)| !h.started)
            .map(|(e, h)| (e.clone(), h.generation))
            .collect()
    }

    /// Entries whose handler has started and not been released.
    pub(crate) fn started(&self) -> HashSet<EntryRef> {
        lock(&self.entries)
            .iter()
            .filter(|(_, h)| h.started)
            .map(|(e, _)| e.clone())
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.entries).is_empty()
    }

    /// Entries not refreshed for `period`, by consumer.
    fn due(&self, period: Duration) -> Vec<Due> {
        let now = Instant::now();
        let mut by: HashMap<ConsumerName, Due> = HashMap::new();
        for (e, h) in lock(&self.entries).iter() {
            if now.duration_since(h.refreshed) < period {
                continue;
            }
            let due = by.entry(h.consumer.clone()).or_insert_with(|| Due {
                consumer: h.consumer.clone(),
                entries: Vec::new(),
                claims: Vec::new(),
            });
            due.entries.push(e.clone());
            if let Some(c) = &h.claim {
                due.claims.push(c.clone());
            }
        }
        by.into_values().collect()
    }

    fn refreshed(&self, entries: &[EntryRef], at: Instant) {
        let mut map = lock(&self.entries);
        for e in entries {
            if let Some(h) = map.get_mut(e) {
                h.refreshed = at;
            }
        }
    }
}

/// The keep-alive of one bus: the sets it refreshes and its thread.
#[derive(Debug, Default)]
pub(crate) struct KeepAlive {
    sets: Arc<Mutex<Vec<Weak<Held>>>>,
    started: Mutex<bool>,
}

/// What the keep-alive thread needs.
pub(crate) struct Settings {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) idempotency: Option<Arc<dyn IdempotencyStore>>,
    /// How long an entry may go unrefreshed.
    pub(crate) period: Duration,
    /// The idempotency claim's time to live, set again at each renewal.
    pub(crate) claim_ttl: Duration,
    /// Cancelled when the bus begins to shut down.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the drain timeout passed: stop refreshing for good.
    pub(crate) abort: CancellationToken,
}

impl KeepAlive {
    /// Starts refreshing `held`; the first registration starts the thread.
    pub(crate) fn register(&self, held: &Arc<Held>, settings: impl FnOnce() -> Settings) {
        {
            let mut sets = lock(&self.sets);
            sets.retain(|w| w.strong_count() > 0);
            sets.push(Arc::downgrade(held));
        }
        let mut started = lock(&self.started);
        if *started {
            return;
        }
        let sets = Arc::downgrade(&self.sets);
        let settings = settings();
        let spawned = crate::maintenance::spawn_on_own_thread("rivulet-keep-alive", move || {
            refresh_loop(sets, settings)
        });
        match spawned {
            Ok(()) => *started = true,
            Err(e) => {
                tracing::error!(error = %e, "could not start the keep-alive thread; long handlers may be reclaimed")
            }
        }
    }
}

async fn refresh_loop(sets: Weak<Mutex<Vec<Weak<Held>>>>, s: Settings) {
    let tick = (s.period / 2).max(Duration::from_millis(5));
    let mut backend: Option<Arc<dyn Backend>> = None;
    let mut failures = FailureLog::new();
    loop {
        tokio::select! {
            _ = s.abort.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let Some(sets) = sets.upgrade() else { return };
        let live: Vec<Arc<Held>> = lock(&sets).iter().filter_map(Weak::upgrade).collect();
        drop(sets);
        if s.stop.is_cancelled() && live.iter().all(|h| h.is_empty()) {
            return;
        }
        if live
            .iter()
            .all(|h| h.is_empty() && h.long_reads(s.period).is_empty())
        {
            continue;
        }
        let conn = match &backend {
            Some(b) => b.clone(),
            None => match s.backend.detach().await {
                Ok(b) => {
                    backend = Some(b.clone());
                    b
                }
                Err(e) => {
                    failures.failed("the keep-alive's connection", &e);
                    continue;
                }
            },
        };
        let mut failed = false;
        for held in &live {
            for consumer in held.long_reads(s.period) {
                let r = match conn
                    .pending_of(&held.key, &held.group, &consumer, READ_PAGE)
                    .await
                {
                    Ok(pending) => {
                        conn.keep_alive(&held.key, &held.group, &consumer, &pending)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    failed = true;
                    failures.failed("the keep-alive", &e);
                }
            }
            for due in held.due(s.period) {
                let at = Instant::now();
                match conn
                    .keep_alive(&held.key, &held.group, &due.consumer, &due.entries)
                    .await
                {
                    Ok(()) => held.refreshed(&due.entries, at),
                    Err(e) => {
                        failed = true;
                        failures.failed("the keep-alive", &e);
                    }
                }
                if let Some(store) = &s.idempotency {
                    for key in &due.claims {
                        if let Err(e) = store.renew(key, s.claim_ttl).await {
                            tracing::warn!(error = %e, "could not renew an idempotency claim");
                        }
                    }
                }
            }
        }
        if failed {
            // A broken connection is replaced on the next tick.
            backend = None;
        } else {
            failures.succeeded("the keep-alive");
        }
    }
}
