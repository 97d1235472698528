//! Keeps a broadcast group's heartbeat alive so no process takes it for an orphan
//! (B-SUB-3).

use std::sync::Arc;

use crate::bus::Shared;
use crate::bus::subscription::SubState;
use crate::log_limit::FailureLog;

pub(super) async fn run(shared: Arc<Shared>, sub: Arc<SubState>) {
    let ttl = shared.cfg.broadcast_ttl;
    let what = format!("heartbeat of broadcast group {}", sub.group);
    let mut failures = FailureLog::new();
    loop {
        tokio::select! {
            _ = sub.stop.cancelled() => break,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        match shared
            .backend
            .broadcast_heartbeat(&sub.key, &sub.group, ttl)
            .await
        {
            Ok(()) => {
                failures.succeeded(&what);
            }
            Err(e) => {
                failures.failed(&what, &e);
            }
        }
    }
}
