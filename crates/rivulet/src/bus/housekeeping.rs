//! Per-topic housekeeping, in every process that publishes to or consumes a topic:
//! retention (B-TRIM-1) and removal of orphan broadcast groups (B-SUB-3), so a
//! decommissioned broadcast handler never pins retention for long.

use std::sync::Arc;

use super::Shared;
use crate::backend::StreamKey;
use crate::log_limit::FailureLog;
use crate::name::TopicName;

pub(crate) async fn run(shared: Arc<Shared>, topic: TopicName) {
    let options = shared.topic_options(&topic);
    let logs = [
        StreamKey::main(topic.clone()),
        StreamKey::dead_letters(topic.clone()),
    ];
    let what = format!("housekeeping of topic {topic}");
    let mut failures = FailureLog::new();
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(shared.cfg.trim_interval) => {}
        }
        let mut failed = None;
        for key in &logs {
            match shared.backend.remove_orphan_broadcast_groups(key).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(%topic, ?removed, "removed orphan broadcast groups");
                }
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        match shared.backend.trim(&topic, &options).await {
            Ok(r) if r.removed > 0 || r.kept_unacked > 0 => {
                tracing::debug!(%topic, removed = r.removed, kept_unacked = r.kept_unacked, "trimmed");
            }
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
        match failed {
            None => {
                failures.succeeded(&what);
            }
            Some(e) => {
                failures.failed(&what, &e);
            }
        }
    }
}
