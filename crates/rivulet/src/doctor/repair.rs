//! The repairs: each uses the backend's own atomic transitions (hand back, orphan
//! removal, the retry mover, the stall check), so a repair is exactly what a running
//! process would have done.

use super::{Action, DoctorOptions, Repair, Report, count};
use crate::backend::Backend;
use crate::error::Result;
use crate::jobs::queue::default_settings;

/// Entries, retries or jobs per call; a repair calls again while a call was full.
const BATCH: usize = 500;
/// The most calls per repair, so one repair is bounded (run the doctor again for more).
const MAX_CALLS: usize = 200;

pub(super) async fn run(backend: &dyn Backend, o: &DoctorOptions, report: &Report) -> Vec<Repair> {
    let mut done: Vec<&Action> = Vec::new();
    let mut repairs = Vec::new();
    for f in &report.findings {
        let Some(action) = &f.action else {
            continue;
        };
        // Several findings can share one repair (orphans of one topic).
        if done.contains(&action) {
            continue;
        }
        done.push(action);
        let outcome = apply(backend, o, action).await;
        // An orphan removal covers the whole topic, whichever group was found first.
        let objects = match action {
            Action::RemoveOrphans { .. } => f.objects.iter().take(1).cloned().collect(),
            _ => f.objects.clone(),
        };
        repairs.push(match outcome {
            Ok(done) => Repair {
                check: f.check,
                objects,
                done,
                error: None,
            },
            Err(e) => Repair {
                check: f.check,
                objects,
                done: "nothing".to_owned(),
                error: Some(e.to_string()),
            },
        });
    }
    repairs
}

async fn apply(backend: &dyn Backend, o: &DoctorOptions, action: &Action) -> Result<String> {
    match action {
        Action::HandBack {
            key,
            group,
            consumer,
        } => {
            let mut handed = 0usize;
            for _ in 0..MAX_CALLS {
                // Only entries still stale now: a consumer that came back and kept its
                // entries alive keeps them.
                let pending = backend
                    .stale_pending(key, group, consumer, o.gone_after, BATCH)
                    .await?;
                if pending.is_empty() {
                    break;
                }
                let n = backend.hand_back(key, group, consumer, &pending).await?;
                handed += n;
                if n == 0 {
                    break;
                }
            }
            Ok(format!(
                "handed {} of consumer {consumer} back to group {group}'s retry lane",
                count(handed as u64, "entry", "entries")
            ))
        }
        Action::RemoveOrphans { key } => {
            let removed = backend.remove_orphan_broadcast_groups(key).await?;
            Ok(format!(
                "removed {}: {}",
                count(
                    removed.len() as u64,
                    "orphan broadcast group",
                    "orphan broadcast groups"
                ),
                removed.join(", ")
            ))
        }
        Action::MoveRetries { key } => {
            let (mut moved, mut dead, mut waiting) = (0usize, 0usize, 0usize);
            for _ in 0..MAX_CALLS {
                let now = backend.clock_ms().await?;
                let sweep = backend
                    .move_due_retries(key, now, BATCH, o.retry_grace)
                    .await?;
                moved += sweep.moved;
                dead += sweep.dead_lettered;
                waiting += sweep.waiting;
                if sweep.moved + sweep.dead_lettered + sweep.waiting < BATCH {
                    break;
                }
            }
            Ok(format!(
                "moved {} into their groups' retry lanes, dead-lettered {dead} \
                 (group gone), {waiting} wait for their group",
                count(moved as u64, "retry", "retries")
            ))
        }
        Action::ReturnStalled { queue } => {
            let settings = default_settings();
            let (mut back, mut failed, mut cancelled) = (0usize, 0usize, 0usize);
            for _ in 0..MAX_CALLS {
                let s = backend
                    .check_stalled(queue, o.max_stalled, BATCH, &settings)
                    .await?;
                let n = s.returned.len() + s.failed_attempt.len() + s.cancelled.len();
                back += s.returned.len();
                failed += s.failed_attempt.len();
                cancelled += s.cancelled.len();
                if n < BATCH {
                    break;
                }
            }
            Ok(format!(
                "took back {}: {back} waiting again, {failed} counted a failed \
                 attempt, {cancelled} cancelled",
                count((back + failed + cancelled) as u64, "job", "jobs")
            ))
        }
        Action::RecountParked { queue } => {
            let (before, after) = backend.recount_parked(queue).await?;
            Ok(format!("parked counter set from {before} to {after}"))
        }
    }
}
