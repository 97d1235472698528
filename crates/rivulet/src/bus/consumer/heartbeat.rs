//! Keeps a broadcast group's heartbeat alive so no process takes it for an orphan
//! (B-SUB-3).

use std::sync::Arc;

use crate::bus::Shared;
use crate::bus::subscription::SubState;

pub(super) async fn run(shared: Arc<Shared>, sub: Arc<SubState>) {
    let ttl = shared.cfg.broadcast_ttl;
    let mut failures = 0u32;
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
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(group = %sub.group, error = %e, failures, "broadcast heartbeat failed");
                }
            }
        }
    }
}
