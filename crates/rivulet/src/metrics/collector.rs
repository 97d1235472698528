//! The collector: samples the gauges that live in the store (stream length, lag,
//! pending, retry and dead-letter sizes, jobs by state) at a bounded cost.
//!
//! Each tick reads the topic and queue registries (one round trip each), then samples
//! at most `max_objects` topics and queues, `batch` of them per pipelined round trip
//! (on a cluster, the batch's per-slot pipelines are sent concurrently). With more
//! objects than `max_objects`, consecutive ticks go round the registries (topics, then
//! queues). So a tick costs `2 + ceil(topics / batch) + ceil(queues / batch)` round
//! trips for the topics and queues it samples, and 4 commands per topic, 9 per queue;
//! nothing scans the keyspace.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{AnyBackend, Backend, TopicSample};
use crate::error::{Error, Result};
use crate::jobs::JobState;
use crate::name::{QueueName, TopicName};

/// Samples the store's sizes into gauges (see the module docs of [`crate::metrics`]).
///
/// Built with [`Collector::new`]; run it with [`spawn`](Collector::spawn), or call
/// [`collect_once`](Collector::collect_once) yourself.
#[derive(Debug)]
pub struct Collector {
    backend: Arc<dyn Backend>,
    every: Duration,
    batch: usize,
    max_objects: usize,
    /// Where the next tick starts in the registries (topics, then queues), when they
    /// hold more than `max_objects`.
    cursor: usize,
    /// The groups each topic had at its last sample, so a vanished group's gauges are
    /// set to zero rather than left at their last value.
    groups: HashMap<TopicName, HashSet<String>>,
}

/// What one tick sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tick {
    /// Topics sampled.
    pub topics: usize,
    /// Queues sampled.
    pub queues: usize,
    /// Topics and queues the registries hold (more than sampled when over
    /// `max_objects`).
    pub registered: usize,
    /// Round trips to the store: the two registry reads and one per batch.
    pub round_trips: usize,
}

/// A running collector. Dropping it stops the collector too.
#[derive(Debug)]
pub struct CollectorHandle {
    stop: CancellationToken,
    task: Option<JoinHandle<Collector>>,
}

impl CollectorHandle {
    /// Stops the collector (a tick in progress is abandoned: it only reads) and hands
    /// it back, with what it remembers of the groups it saw, for a last
    /// [`collect_once`](Collector::collect_once).
    pub async fn stop(mut self) -> Option<Collector> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.ok(),
            None => None,
        }
    }
}

impl Drop for CollectorHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Default interval between ticks.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(15);
/// Default number of topics or queues per round trip.
pub const DEFAULT_BATCH: usize = 100;
/// Default cap on topics plus queues sampled per tick.
pub const DEFAULT_MAX_OBJECTS: usize = 1000;

impl Collector {
    /// A collector of `backend`'s registered topics and queues, every 15 s, 100 per
    /// round trip, at most 1,000 per tick.
    pub fn new(backend: impl Into<AnyBackend>) -> Self {
        Collector {
            backend: backend.into().0,
            every: DEFAULT_EVERY,
            batch: DEFAULT_BATCH,
            max_objects: DEFAULT_MAX_OBJECTS,
            cursor: 0,
            groups: HashMap::new(),
        }
    }

    /// How often to sample (at least 10 ms; default 15 s).
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Topics or queues sampled per round trip (1–1,000; default 100).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// The most topics plus queues sampled per tick (at least 1; default 1,000). With
    /// more registered, ticks take turns over them.
    pub fn max_objects(mut self, max: usize) -> Self {
        self.max_objects = max;
        self
    }

    fn check(&self) -> Result<()> {
        if self.every < Duration::from_millis(10) || self.every > crate::deadline::FOREVER {
            return Err(Error::config(
                "the collector's interval must be between 10 ms and 30 years",
            ));
        }
        if !(1..=1000).contains(&self.batch) {
            return Err(Error::config("the collector's batch must be 1-1000"));
        }
        if self.max_objects == 0 {
            return Err(Error::config(
                "the collector's max_objects must be at least 1",
            ));
        }
        Ok(())
    }

    /// Starts sampling every interval on the current Tokio runtime (the first tick at
    /// once). A failed tick is logged (at most once a minute while it keeps failing)
    /// and counted in `rivulet_collector_ticks_total{result="error"}`.
    pub fn spawn(mut self) -> Result<CollectorHandle> {
        self.check()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut failures = crate::log_limit::FailureLog::new();
            let mut tick = tokio::time::interval(self.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return self,
                    _ = tick.tick() => {}
                }
                tokio::select! {
                    _ = token.cancelled() => return self,
                    r = self.collect_once() => match r {
                        Ok(_) => {
                            failures.succeeded("the metrics collector");
                        }
                        Err(e) => {
                            failures.failed("the metrics collector", &e);
                        }
                    },
                }
            }
        });
        Ok(CollectorHandle {
            stop,
            task: Some(task),
        })
    }

    /// Samples once and sets the gauges.
    pub async fn collect_once(&mut self) -> Result<Tick> {
        self.check()?;
        let r = self.tick().await;
        let result = if r.is_ok() { "ok" } else { "error" };
        ::metrics::counter!("rivulet_collector_ticks_total", "result" => result).increment(1);
        if let Ok(t) = &r {
            ::metrics::gauge!("rivulet_collector_round_trips").set(t.round_trips as f64);
        }
        r
    }

    async fn tick(&mut self) -> Result<Tick> {
        let topics = self.backend.topics().await?;
        let queues = self.backend.queues().await?;
        let mut out = Tick {
            registered: topics.len() + queues.len(),
            round_trips: 2,
            ..Tick::default()
        };
        // Topics then queues, as one list the ticks go round, `max_objects` at a time.
        let all: Vec<Object> = topics
            .into_iter()
            .map(Object::Topic)
            .chain(queues.into_iter().map(Object::Queue))
            .collect();
        let mut topics = Vec::new();
        let mut queues = Vec::new();
        for o in take_turn(&all, self.max_objects, &mut self.cursor) {
            match o {
                Object::Topic(t) => topics.push(t),
                Object::Queue(q) => queues.push(q),
            }
        }
        for chunk in topics.chunks(self.batch) {
            let samples = self.backend.sample_topics(chunk).await?;
            out.round_trips += 1;
            for s in samples {
                self.record_topic(s);
            }
        }
        out.topics = topics.len();
        for chunk in queues.chunks(self.batch) {
            let counts = self.backend.sample_queues(chunk).await?;
            out.round_trips += 1;
            for (q, c) in chunk.iter().zip(counts) {
                for state in JobState::ALL {
                    ::metrics::gauge!(
                        "rivulet_jobs",
                        "queue" => q.to_string(),
                        "state" => state.as_str()
                    )
                    .set(c.of(state) as f64);
                }
            }
        }
        out.queues = queues.len();
        Ok(out)
    }

    fn record_topic(&mut self, s: TopicSample) {
        let Some(topic) = s.topic else {
            return;
        };
        let t = topic.to_string();
        ::metrics::gauge!("rivulet_stream_length", "topic" => t.clone()).set(s.length as f64);
        ::metrics::gauge!("rivulet_retries_scheduled", "topic" => t.clone()).set(s.retries as f64);
        ::metrics::gauge!("rivulet_dead_letters", "topic" => t.clone()).set(s.dead_letters as f64);
        let now: HashSet<String> = s.groups.iter().map(|g| g.group.clone()).collect();
        for g in &s.groups {
            let labels = [("topic", t.clone()), ("group", g.group.clone())];
            ::metrics::gauge!("rivulet_group_pending", &labels).set(g.pending as f64);
            if let Some(lag) = g.lag {
                ::metrics::gauge!("rivulet_group_lag", &labels).set(lag as f64);
            }
        }
        if let Some(before) = self.groups.get(&topic) {
            for gone in before.difference(&now) {
                let labels = [("topic", t.clone()), ("group", gone.clone())];
                ::metrics::gauge!("rivulet_group_pending", &labels).set(0.0);
                ::metrics::gauge!("rivulet_group_lag", &labels).set(0.0);
            }
        }
        self.groups.insert(topic, now);
    }
}

/// A registered topic or queue.
#[derive(Debug, Clone)]
enum Object {
    Topic(TopicName),
    Queue(QueueName),
}

/// Up to `cap` names starting at `cursor` (wrapping), and the cursor moved past them.
fn take_turn<T: Clone>(names: &[T], cap: usize, cursor: &mut usize) -> Vec<T> {
    if names.len() <= cap {
        *cursor = 0;
        return names.to_vec();
    }
    let start = *cursor % names.len();
    let picked = names
        .iter()
        .cycle()
        .skip(start)
        .take(cap)
        .cloned()
        .collect();
    *cursor = (start + cap) % names.len();
    picked
}

#[cfg(test)]
mod tests {
    use super::take_turn;

    #[test]
    fn ticks_take_turns_over_a_registry_larger_than_the_cap() {
        let names: Vec<u32> = (0..5).collect();
        let mut cursor = 0;
        assert_eq!(take_turn(&names, 2, &mut cursor), vec![0, 1]);
        assert_eq!(take_turn(&names, 2, &mut cursor), vec![2, 3]);
        assert_eq!(take_turn(&names, 2, &mut cursor), vec![4, 0]);
        assert_eq!(take_turn(&names, 9, &mut cursor), names);
        assert_eq!(cursor, 0);
    }
}
