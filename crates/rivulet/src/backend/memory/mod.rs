//! The embedded backend: everything in process memory, no setup.
//!
//! It models Redis Streams consumer groups faithfully (a log per topic, a cursor and a
//! pending list per group, a retry lane per group, a scheduled-retry set, a dead-letter
//! log), so the same bus logic runs unchanged on it and on Redis, and it serves as the
//! executable reference of the semantics. Nothing survives the process.
//!
//! One capability per file, as in the Redis backend: `publish`, `groups`, `reader`,
//! `settle`, `recovery`, `dead_letters`, `live`; the data structures are in `state`.

mod dead_letters;
mod groups;
mod jobs;
mod live;
mod publish;
mod reader;
mod recovery;
mod settle;
mod state;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use self::state::{State, Topic};
use crate::backend::{AnyBackend, Backend, Inspection, Retention, TopicSample};
use crate::error::Result;
use crate::name::TopicName;
use crate::topic::{TopicOptions, TrimReport};

/// The embedded backend. Clones share the same state, so several buses built on clones
/// of one `MemoryBackend` see the same topics (as several processes would on Redis).
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.lock().topics.len();
        f.debug_struct("MemoryBackend")
            .field("topics", &topics)
            .finish()
    }
}

impl MemoryBackend {
    /// A new, empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that breaks the invariants we rely on, so a poisoned lock is still usable.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn with_topic<R>(&self, topic: &TopicName, f: impl FnOnce(&mut Topic) -> R) -> Result<R> {
        let mut state = self.lock();
        let t = state.topics.entry(topic.clone()).or_insert_with(Topic::new);
        Ok(f(t))
    }
}

impl From<MemoryBackend> for AnyBackend {
    fn from(b: MemoryBackend) -> Self {
        AnyBackend(Arc::new(b))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn default_concurrency(&self) -> usize {
        8
    }

    async fn detach(&self) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(self.clone()))
    }
}

#[async_trait]
impl Retention for MemoryBackend {
    async fn trim(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport> {
        self.with_topic(topic, |t| t.trim(opts))
    }
}

#[async_trait]
impl Inspection for MemoryBackend {
    async fn topics(&self) -> Result<Vec<TopicName>> {
        let mut topics: Vec<TopicName> = self
            .lock()
            .topics
            .iter()
            .filter(|(_, t)| t.is_used())
            .map(|(name, _)| name.clone())
            .collect();
        topics.sort();
        Ok(topics)
    }

    async fn sample_topics(&self, topics: &[TopicName]) -> Result<Vec<TopicSample>> {
        let state = self.lock();
        Ok(topics
            .iter()
            .map(|name| match state.topics.get(name) {
                None => TopicSample {
                    topic: Some(name.clone()),
                    ..TopicSample::default()
                },
                Some(t) => t.sample(name),
            })
            .collect())
    }
}
