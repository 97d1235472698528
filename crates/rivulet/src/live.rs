//! Live channels: fire-and-forget notifications with glob pattern subscriptions
//! (B-LIVE-1). **Lossy by design**: a subscriber that is not connected when a message is
//! published never sees it. Use topics when a message must not be lost.

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::backend::{AnyBackend, LiveMessage};
use crate::error::{Error, Result};
use crate::name::check_channel;

/// Publishing and subscribing on live channels. Obtained from [`Bus::live`](crate::Bus::live).
#[derive(Debug, Clone)]
pub struct Live {
    pub(crate) backend: AnyBackend,
    pub(crate) max_payload: usize,
    /// The bus's shutdown token: subscriptions end with the bus.
    pub(crate) stop: tokio_util::sync::CancellationToken,
}

impl Live {
    /// Publishes a JSON-encoded value on `channel`. Returns how many subscribers got it.
    pub async fn publish<T: Serialize + ?Sized>(&self, channel: &str, value: &T) -> Result<u64> {
        let bytes = serde_json::to_vec(value)?;
        self.publish_raw(channel, Bytes::from(bytes)).await
    }

    /// Publishes raw bytes on `channel`. Returns how many subscribers got it.
    pub async fn publish_raw(&self, channel: &str, payload: impl Into<Bytes>) -> Result<u64> {
        check_channel(channel, false)?;
        if self.stop.is_cancelled() {
            return Err(Error::Closed);
        }
        let payload = payload.into();
        if payload.len() > self.max_payload {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                limit: self.max_payload,
            });
        }
        self.backend.0.live_publish(channel, payload).await
    }

    /// Subscribes to every channel matching the glob `pattern` (`*`, `?`, `[abc]`,
    /// `[^a]`, `\` escapes — the rules of Redis `PSUBSCRIBE`).
    pub async fn subscribe(&self, pattern: &str) -> Result<LiveSubscriber> {
        self.subscribe_many(&[pattern]).await
    }

    /// Subscribes to several patterns on one connection.
    pub async fn subscribe_many(&self, patterns: &[&str]) -> Result<LiveSubscriber> {
        if patterns.is_empty() {
            return Err(Error::config("subscribe needs at least one pattern"));
        }
        for p in patterns {
            check_channel(p, true)?;
        }
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        if self.stop.is_cancelled() {
            return Err(Error::Closed);
        }
        let rx = self
            .backend
            .0
            .live_subscribe(&patterns, self.stop.child_token())
            .await?;
        Ok(LiveSubscriber {
            rx,
            stop: self.stop.clone(),
        })
    }
}

/// A live subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct LiveSubscriber {
    rx: mpsc::Receiver<LiveMessage>,
    stop: tokio_util::sync::CancellationToken,
}

impl LiveSubscriber {
    /// The next message; `None` once the bus is shut down.
    pub async fn next(&mut self) -> Option<LiveMessage> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            m = self.rx.recv() => m,
        }
    }

    /// A message if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<LiveMessage> {
        if self.stop.is_cancelled() {
            return None;
        }
        self.rx.try_recv().ok()
    }
}
