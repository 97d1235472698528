//! Live channels in process (B-LIVE-1): lossy, glob patterns.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MemoryBackend;
use super::state::LiveSub;
use crate::backend::{LiveChannels, LiveMessage};
use crate::error::Result;
use crate::glob::glob_match;

#[async_trait]
impl LiveChannels for MemoryBackend {
    async fn live_publish(&self, channel: &str, payload: Bytes) -> Result<u64> {
        let mut state = self.lock();
        state.live.retain(|s| !s.tx.is_closed());
        let mut received = 0;
        for sub in &state.live {
            if let Some(pattern) = sub
                .patterns
                .iter()
                .find(|p| glob_match(p.as_bytes(), channel.as_bytes()))
            {
                let msg = LiveMessage {
                    channel: channel.to_owned(),
                    pattern: pattern.clone(),
                    payload: payload.clone(),
                };
                // Lossy by design: a subscriber that does not keep up loses messages.
                if sub.tx.try_send(msg).is_ok() {
                    received += 1;
                } else {
                    metrics::counter!("rivulet_live_dropped_total").increment(1);
                }
            }
        }
        Ok(received)
    }

    async fn live_subscribe(
        &self,
        patterns: &[String],
        _stop: CancellationToken,
    ) -> Result<mpsc::Receiver<LiveMessage>> {
        // The subscription ends when its receiver is dropped; the bus's `Live` stops
        // handing out messages once the bus shuts down.
        let (tx, rx) = mpsc::channel(1024);
        let mut state = self.lock();
        state.live.retain(|s| !s.tx.is_closed());
        state.live.push(LiveSub {
            patterns: patterns.to_vec(),
            tx,
        });
        Ok(rx)
    }
}
