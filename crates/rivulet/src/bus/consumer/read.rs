//! A read loop: one per reader (one for batch dispatch, `concurrency` for sliding).
//!
//! Each read carries the previous batch's settlements (one round trip per batch) and
//! asks for what the consumer can start now. A read may bring back more than that (up to
//! `count` from the retry lane plus up to `count` from the topic): those **leftovers**
//! are held — kept alive like running entries — and started first by the next batch,
//! which then reads without blocking to top itself up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::ErrorBackoff;
use super::process::{apply, batch};
use crate::backend::{EntryRef, ReadEntry, Reader, Settlements};
use crate::bus::Shared;
use crate::bus::subscription::SubState;
use crate::log_limit::FailureLog;
use crate::name::ConsumerName;

/// How long a read waits when retries of the last batch are about to be scheduled: the
/// retry mover is woken once the read returns, so a short retry is not held back by an
/// idle topic.
const BLOCK_WITH_RETRIES: Duration = Duration::from_millis(5);

pub(super) async fn run(
    shared: Arc<Shared>,
    sub: Arc<SubState>,
    reader: Option<Box<dyn Reader>>,
    consumer: ConsumerName,
    count: usize,
) {
    let mut backoff = ErrorBackoff::new();
    let mut reader = match reader {
        Some(r) => r,
        None => match reopen(&shared, &sub, &consumer, &mut backoff).await {
            Some(r) => r,
            None => return,
        },
    };
    // Read but not started yet (held).
    let mut waiting: VecDeque<ReadEntry> = VecDeque::new();
    // The last batch's settlements, which travel with the next read, and the entries
    // they settle (held until that read returned).
    let mut settle = Settlements::default();
    let mut settling: Vec<EntryRef> = Vec::new();
    let what = format!("reads of topic {} group {}", sub.key.topic, sub.group);
    let mut failures = FailureLog::new();
    loop {
        let want = count.saturating_sub(waiting.len());
        let block = if !waiting.is_empty() {
            Duration::ZERO
        } else if !settle.retries.is_empty() {
            shared.cfg.block_timeout.min(BLOCK_WITH_RETRIES)
        } else {
            shared.cfg.block_timeout
        };
        let read = if want == 0 && settle.is_empty() {
            Ok(Vec::new())
        } else {
            sub.held.reading(&consumer);
            let r = tokio::select! {
                biased;
                _ = sub.stop.cancelled() => None,
                r = reader.settle_and_read(&settle, want, block) => Some(r),
            };
            sub.held.read_done(&consumer);
            match r {
                Some(r) => r,
                None => break,
            }
        };
        match read {
            Ok(entries) => {
                backoff.reset();
                failures.succeeded(&what);
                if !settle.retries.is_empty() {
                    shared.wake_retry_mover(&sub.key);
                }
                settle = Settlements::default();
                sub.held.release(&std::mem::take(&mut settling));
                sub.held.hold(&consumer, entries.iter().map(|e| &e.entry));
                waiting.extend(entries);
            }
            Err(e) => {
                // The settlements may not have reached the server: apply them again on
                // the shared connection (a second application is harmless).
                apply(&shared, &sub, std::mem::take(&mut settle)).await;
                sub.held.release(&std::mem::take(&mut settling));
                let wait = backoff.next();
                failures.failed(&what, &e);
                tokio::select! {
                    _ = sub.stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                // The reader's connection may be broken: open a fresh one.
                match shared.backend.reader(&sub.key, &sub.group, &consumer).await {
                    Ok(r) => reader = r,
                    Err(e) => tracing::debug!(error = %e, "could not reopen reader"),
                }
                continue;
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let now: Vec<ReadEntry> = waiting.drain(..count.min(waiting.len())).collect();
        (settling, settle) = batch(&shared, &sub, now).await;
    }
    drop(reader);
    // Stopped between a batch and the read carrying its settlements, or while that read
    // was in flight: settle here. Entries still waiting stay pending on this consumer
    // and are handed back when the subscription finishes.
    apply(&shared, &sub, settle).await;
    sub.held.release(&settling);
}

/// Opens a reader, retrying with backoff until it works or the subscription stops.
async fn reopen(
    shared: &Shared,
    sub: &SubState,
    consumer: &ConsumerName,
    backoff: &mut ErrorBackoff,
) -> Option<Box<dyn Reader>> {
    loop {
        match shared.backend.reader(&sub.key, &sub.group, consumer).await {
            Ok(r) => return Some(r),
            Err(e) => tracing::debug!(error = %e, "could not open reader"),
        }
        tokio::select! {
            _ = sub.stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}
