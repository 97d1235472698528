//! Publishing into a topic (B-PUB-1, B-PUB-4, B-PUB-6).

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBackend;
use super::state::{Stored, seq_to_id};
use crate::backend::{PublishOpts, Publishing};
use crate::error::{Error, Result};
use crate::message::{Envelope, Published};
use crate::name::TopicName;
use crate::topic::{Backpressure, TopicOptions};

impl MemoryBackend {
    fn check_backpressure(&self, topic: &TopicName, opts: &TopicOptions) -> Result<()> {
        let Some(cap) = opts.backpressure else {
            return Ok(());
        };
        let (current, limit) = self.with_topic(topic, |t| match cap {
            Backpressure::MaxLength(n) => (t.main.log.entries.len() as u64, n),
            Backpressure::MaxLag(n) => (t.main.lag(), n),
        })?;
        if current >= limit {
            return Err(Error::Backpressure {
                topic: topic.to_string(),
                current,
                limit,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Publishing for MemoryBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        batch: Vec<Envelope>,
        opts: &PublishOpts,
    ) -> Result<Vec<Published>> {
        if let Some(wait) = opts.topic.backpressure_wait {
            let deadline = crate::deadline::from_now(wait);
            loop {
                match self.check_backpressure(topic, &opts.topic) {
                    Err(Error::Backpressure { .. }) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    other => break other?,
                }
            }
        } else {
            self.check_backpressure(topic, &opts.topic)?;
        }
        if let Some((replicas, _)) = opts.wait_replicas
            && replicas > 0
        {
            return Err(Error::NotAvailable(
                "the memory backend has no replicas to wait for".into(),
            ));
        }
        self.with_topic(topic, |t| {
            let now = Instant::now();
            t.dedup.retain(|_, (_, until)| *until > now);
            let mut out = Vec::with_capacity(batch.len());
            for envelope in batch {
                if let Some(window) = opts.dedup_window {
                    let key = envelope.message_id.as_str().to_owned();
                    if let Some((first, _)) = t.dedup.get(&key) {
                        let mut dup = first.clone();
                        dup.duplicate = true;
                        out.push(dup);
                        continue;
                    }
                    let message_id = envelope.message_id.clone();
                    let seq = t.main.log.append(Stored::Message(envelope));
                    let published = Published {
                        message_id,
                        entry_id: seq_to_id(seq),
                        duplicate: false,
                    };
                    t.dedup.insert(
                        key,
                        (published.clone(), crate::deadline::after(now, window)),
                    );
                    out.push(published);
                } else {
                    let message_id = envelope.message_id.clone();
                    let seq = t.main.log.append(Stored::Message(envelope));
                    out.push(Published {
                        message_id,
                        entry_id: seq_to_id(seq),
                        duplicate: false,
                    });
                }
            }
            t.trim(&opts.topic, false);
            t.notify.notify_waiters();
            out
        })
    }
}
