//! Live channels over Redis Pub/Sub (B-LIVE-1): each subscription is a
//! [`pubsub`](super::pubsub) subscription `PSUBSCRIBE`d to its patterns, lossy by design
//! (a full channel drops messages, counted in `rivulet_live_dropped_total`), that
//! reconnects by itself and stops when the receiver is dropped or the bus that opened it
//! shuts down.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisBackend;
use super::pubsub::{Interest, Purpose};
use crate::backend::{LiveChannels, LiveMessage};
use crate::error::Result;

/// Capacity of a subscription's channel.
const CAPACITY: usize = 1024;

fn live_message(msg: &redis::Msg) -> Option<LiveMessage> {
    let pattern: Option<String> = msg.get_pattern().ok().flatten();
    Some(LiveMessage {
        channel: msg.get_channel_name().to_owned(),
        pattern: pattern.unwrap_or_default(),
        payload: Bytes::copy_from_slice(msg.get_payload_bytes()),
    })
}

#[async_trait]
impl LiveChannels for RedisBackend {
    async fn live_publish(&self, channel: &str, payload: Bytes) -> Result<u64> {
        let mut conn = self.conn()?;
        let n: u64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_ref())
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn live_subscribe(
        &self,
        patterns: &[String],
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<LiveMessage>> {
        self.subscribe_forwarding(
            Interest::Patterns(patterns.to_vec()),
            Purpose::Live,
            CAPACITY,
            live_message,
            stop,
        )
        .await
    }
}
