//! A memory queue's data and its transitions, each applied under the backend's lock.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};

use crate::backend::jobs::{
    Added, Dedup, Fetch, Leased, NewJob, QueueSettings, Requeue, Requeued, Settle, Settled,
    Settlement, Stalled, StoredBackoff,
};
use crate::jobs::record::{JobEvent, JobEventKind, JobInfo, JobState, Keep, short_detail};
use crate::name::{JobGroup, JobId, JobName};

use super::limits::Limited;

pub(super) type Key = (i64, i64, JobId);

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wakes every waiter now, and leaves a permit for a worker about to wait (a spurious
/// wake-up costs one empty fetch; a lost one would cost a whole block timeout).
pub(super) fn wake(n: &Notify) {
    n.notify_waiters();
    n.notify_one();
}

fn at(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[derive(Debug)]
pub(super) struct MemJob {
    pub(super) info: JobInfo,
    /// Its place among waiting jobs: `(priority, order)`.
    pub(super) place: (i64, i64),
    pub(super) token: u64,
    pub(super) attempts_made: u32,
    pub(super) lease_until: u64,
    pub(super) backoff: StoredBackoff,
    pub(super) timeout_ms: Option<u64>,
    pub(super) dedup: Option<Dedup>,
    pub(super) remove_on_complete: bool,
    pub(super) remove_on_fail: bool,
    pub(super) logs: VecDeque<String>,
    /// The due time of its latest promotion from delayed.
    pub(super) ready_at_ms: Option<u64>,
    pub(super) trace: Option<crate::trace::TraceContext>,
    pub(super) group: Option<JobGroup>,
}

impl MemJob {
    /// Its key in the set of its current state.
    pub(super) fn key(&self) -> Key {
        let id = self.info.id.clone();
        match self.info.state {
            JobState::Waiting => (self.place.0, self.place.1, id),
            JobState::Delayed => (at(self.info.run_at_ms.unwrap_or(0)), 0, id),
            JobState::Active => (at(self.lease_until), 0, id),
            JobState::WaitingChildren => (at(self.info.added_at_ms), 0, id),
            _ => (at(self.info.finished_at_ms.unwrap_or(0)), 0, id),
        }
    }
}

/// One queue.
#[derive(Debug, Default)]
pub(crate) struct MemQueue {
    pub(super) jobs: HashMap<JobId, MemJob>,
    pub(super) sets: HashMap<JobState, BTreeSet<Key>>,
    /// Waiting jobs of paused names, by name.
    pub(super) parked: HashMap<JobName, BTreeSet<Key>>,
    pub(super) dedup: HashMap<String, (JobId, Option<u64>)>,
    pub(super) paused: bool,
    pub(super) paused_names: HashSet<JobName>,
    pub(super) seq: i64,
    pub(super) events: VecDeque<JobEvent>,
    pub(super) event_seq: u64,
    pub(super) cancel_hints: Vec<mpsc::Sender<JobId>>,
    pub(super) work: Arc<Notify>,
    pub(super) new_events: Arc<Notify>,
    /// The queue's job schedulers (J-4), in `schedulers.rs`.
    pub(super) schedulers: super::MemSchedulers,
    pub(super) flows: super::flows::Flows,
    /// Limits and groups (J-7, J-8).
    pub(super) lim: Limited,
}

impl MemQueue {
    pub(super) fn set(&mut self, state: JobState) -> &mut BTreeSet<Key> {
        self.sets.entry(state).or_default()
    }

    pub(super) fn event(
        &mut self,
        s: &QueueSettings,
        kind: JobEventKind,
        job: &JobId,
        attempt: u32,
        detail: Option<String>,
    ) {
        self.event_seq += 1;
        self.events.push_back(JobEvent {
            id: format!("{}-0", self.event_seq),
            kind,
            job: job.clone(),
            attempt,
            detail: detail.map(|d| short_detail(&d)),
        });
        let cap = usize::try_from(s.events_cap.max(1)).unwrap_or(usize::MAX);
        while self.events.len() > cap {
            self.events.pop_front();
        }
        self.new_events.notify_waiters();
    }

    /// Takes a job out of the set of its state (or its parked set).
    pub(super) fn unlink(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else { return };
        let key = job.key();
        let state = job.info.state;
        let name = job.info.name.clone();
        let group = job.group.clone();
        if state == JobState::Waiting
            && let Some(p) = self.parked.get_mut(&name)
            && p.remove(&key)
        {
            if p.is_empty() {
                self.parked.remove(&name);
            }
            return;
        }
        if state == JobState::Waiting
            && let Some(g) = &group
        {
            self.group_unlink_waiting(g, &key, now_ms());
            return;
        }
        if self.set(state).remove(&key) && state == JobState::Active {
            self.left_active(group.as_ref(), now_ms());
        }
    }

    /// Puts a job (unlinked) into `state`'s set, with its fields already set.
    pub(super) fn link(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else { return };
        let key = job.key();
        let state = job.info.state;
        let name = job.info.name.clone();
        let group = job.group.clone();
        if state == JobState::Waiting {
            if self.paused_names.contains(&name) {
                self.parked.entry(name).or_default().insert(key);
                return;
            }
            if let Some(g) = group {
                self.group_link_waiting(&g, key, now_ms());
                return;
            }
            wake(&self.work);
        }
        if state == JobState::Active
            && let Some(g) = group
        {
            self.group_entered_active(&g);
        }
        self.set(state).insert(key);
    }

    pub(super) fn move_to(&mut self, id: &JobId, state: JobState, edit: impl FnOnce(&mut MemJob)) {
        self.unlink(id);
        if let Some(job) = self.jobs.get_mut(id) {
            job.info.state = state;
            edit(job);
        }
        self.link(id);
    }

    pub(super) fn dedup_holder(&mut self, key: &str, now: u64) -> Option<JobId> {
        match self.dedup.get(key) {
            Some((id, Some(exp))) if *exp <= now => {
                let _ = id;
                self.dedup.remove(key);
                None
            }
            Some((id, _)) => Some(id.clone()),
            None => None,
        }
    }

    pub(super) fn release_dedup(&mut self, id: &JobId, finished: bool) {
        let Some(d) = self.jobs.get(id).and_then(|j| j.dedup.clone()) else {
            return;
        };
        if finished && d.ttl_ms.is_some() {
            return;
        }
        if self
            .dedup
            .get(&d.key)
            .is_some_and(|(holder, _)| holder == id)
        {
            self.dedup.remove(&d.key);
        }
    }

    pub(super) fn add(&mut self, j: &NewJob, s: &QueueSettings, now: u64) -> Added {
        if self.jobs.contains_key(&j.id) {
            return Added::Existing(j.id.clone());
        }
        if let Some(d) = &j.dedup {
            if let Some(holder) = self.dedup_holder(&d.key, now) {
                return Added::Existing(holder);
            }
            let expires = d.ttl_ms.map(|t| now.saturating_add(t));
            self.dedup.insert(d.key.clone(), (j.id.clone(), expires));
        }
        self.seq += 1;
        let order = if j.lifo { -self.seq } else { self.seq };
        let run_at = match j.run_at_ms {
            Some(t) => t,
            None => now.saturating_add(j.delay_ms),
        };
        let delayed = run_at > now;
        let state = if delayed {
            JobState::Delayed
        } else {
            JobState::Waiting
        };
        let job = MemJob {
            info: JobInfo {
                id: j.id.clone(),
                name: j.name.clone(),
                state,
                data: j.data.clone(),
                priority: j.priority,
                attempt: 0,
                max_attempts: j.max_attempts,
                stalls: 0,
                added_at_ms: now,
                run_at_ms: delayed.then_some(run_at),
                started_at_ms: None,
                finished_at_ms: None,
                progress: None,
                result: None,
                error: None,
                dedup_key: j.dedup.as_ref().map(|d| d.key.clone()),
                cancel_requested: false,
                worker: None,
            },
            place: (i64::from(j.priority), order),
            token: 0,
            attempts_made: 0,
            lease_until: 0,
            backoff: j.backoff,
            timeout_ms: j.timeout_ms,
            dedup: j.dedup.clone(),
            remove_on_complete: j.remove_on_complete,
            remove_on_fail: j.remove_on_fail,
            logs: VecDeque::new(),
            ready_at_ms: None,
            trace: j.trace.clone(),
            group: j.group.clone(),
        };
        self.jobs.insert(j.id.clone(), job);
        self.link(&j.id);
        if delayed {
            self.event(
                s,
                JobEventKind::Delayed,
                &j.id,
                0,
                Some(format!("{run_at}")),
            );
            // An idle worker may sleep past this job's time: wake it to look again.
            wake(&self.work);
        } else {
            self.event(s, JobEventKind::Added, &j.id, 0, None);
        }
        Added::New(j.id.clone(), state)
    }

    pub(super) fn promote(&mut self, now: u64, limit: usize, s: &QueueSettings) {
        let due: Vec<JobId> = self
            .set(JobState::Delayed)
            .iter()
            .take_while(|(t, _, _)| *t <= at(now))
            .take(limit)
            .map(|(_, _, id)| id.clone())
            .collect();
        for id in due {
            self.move_to(&id, JobState::Waiting, |j| {
                j.ready_at_ms = j.info.run_at_ms.take();
            });
            let attempt = self.jobs.get(&id).map_or(0, |j| j.info.attempt);
            self.event(
                s,
                JobEventKind::Added,
                &id,
                attempt,
                Some("promoted".into()),
            );
        }
    }

    pub(super) fn lease(&mut self, f: &Fetch, now: u64, s: &QueueSettings) -> Vec<Leased> {
        let mut out = Vec::new();
        // Jobs of paused names met on the way are parked, a bounded number per step.
        let mut skips = f.limit.saturating_mul(4).saturating_add(16);
        while out.len() < f.limit && skips > 0 {
            let Some(key) = self.set(JobState::Waiting).iter().next().cloned() else {
                break;
            };
            match self.lease_key(key, f, now, s) {
                Some(leased) => out.push(leased),
                None => skips -= 1,
            }
        }
        out
    }

    /// Leases the waiting job at `key` (in waiting or in its group's set), or parks it
    /// when its name is paused (`None`).
    pub(super) fn lease_key(
        &mut self,
        key: Key,
        f: &Fetch,
        now: u64,
        s: &QueueSettings,
    ) -> Option<Leased> {
        let id = key.2.clone();
        let Some(name) = self.jobs.get(&id).map(|j| j.info.name.clone()) else {
            self.set(JobState::Waiting).remove(&key);
            return None;
        };
        if self.paused_names.contains(&name) {
            self.unlink(&id);
            self.parked.entry(name).or_default().insert(key);
            return None;
        }
        let lease_until = now.saturating_add(f.lease_ms);
        let worker = f.worker.clone();
        self.move_to(&id, JobState::Active, |j| {
            j.token += 1;
            j.lease_until = lease_until;
            j.info.attempt = j.attempts_made + 1;
            j.info.started_at_ms = Some(now);
            j.info.worker = Some(worker);
        });
        let j = self.jobs.get(&id)?;
        let leased = Leased {
            id: id.clone(),
            name: j.info.name.clone(),
            data: j.info.data.clone(),
            attempt: j.info.attempt,
            max_attempts: j.info.max_attempts,
            backoff: j.backoff,
            timeout_ms: j.timeout_ms,
            token: j.token,
            added_at_ms: j.info.added_at_ms,
            ready_at_ms: j.ready_at_ms.unwrap_or(j.info.added_at_ms),
            trace: j.trace.clone(),
        };
        self.event(s, JobEventKind::Active, &id, leased.attempt, None);
        Some(leased)
    }

    pub(super) fn next_due(&mut self) -> Option<u64> {
        self.set(JobState::Delayed)
            .iter()
            .next()
            .map(|(t, _, _)| u64::try_from(*t).unwrap_or(0))
    }

    /// Whether `id` is active under `token`.
    pub(super) fn holds(&self, id: &JobId, token: u64) -> bool {
        self.jobs
            .get(id)
            .is_some_and(|j| j.info.state == JobState::Active && j.token == token)
    }

    pub(super) fn finish(
        &mut self,
        id: &JobId,
        state: JobState,
        now: u64,
        s: &QueueSettings,
        edit: impl FnOnce(&mut MemJob),
    ) {
        self.move_to(id, state, |j| {
            j.info.finished_at_ms = Some(now);
            edit(j);
        });
        self.release_dedup(id, true);
        let (attempt, remove) = match self.jobs.get(id) {
            Some(j) => (
                j.info.attempt,
                match state {
                    JobState::Completed => j.remove_on_complete,
                    _ => j.remove_on_fail,
                },
            ),
            None => (0, false),
        };
        let (kind, detail) = match state {
            JobState::Completed => (JobEventKind::Completed, None),
            JobState::Cancelled => (JobEventKind::Cancelled, None),
            _ => (
                JobEventKind::Failed,
                self.jobs.get(id).and_then(|j| j.info.error.clone()),
            ),
        };
        self.event(s, kind, id, attempt, detail);
        self.flow_finished(id, Some(state));
        if remove {
            self.remove(id, s);
        }
        let keep = match state {
            JobState::Completed => s.keep_completed,
            _ => s.keep_failed,
        };
        self.apply_retention(state, keep, now, 9, s);
    }

    /// Removes up to `budget` finished jobs of `state` beyond `keep`.
    pub(super) fn apply_retention(
        &mut self,
        state: JobState,
        keep: Keep,
        now: u64,
        budget: usize,
        s: &QueueSettings,
    ) {
        let oldest = at(now.saturating_sub(crate::deadline::millis(keep.age)));
        let excess = (self.set(state).len() as u64).saturating_sub(keep.count);
        let victims: Vec<JobId> = self
            .set(state)
            .iter()
            .enumerate()
            .take_while(|(i, (t, _, _))| (*i as u64) < excess || *t < oldest)
            .take(budget)
            .map(|(_, (_, _, id))| id.clone())
            .collect();
        for id in victims {
            self.remove(&id, s);
        }
    }

    /// An operator's move of one job to waiting (see [`Requeue`]).
    pub(super) fn requeue(&mut self, id: &JobId, how: Requeue, s: &QueueSettings) -> Requeued {
        let Some(from) = self.jobs.get(id).map(|j| j.info.state) else {
            return Requeued::NotFound;
        };
        let allowed = match how {
            Requeue::Retry => matches!(from, JobState::Failed | JobState::Cancelled),
            Requeue::Promote => from == JobState::Delayed,
        };
        if !allowed {
            return Requeued::Refused(from);
        }
        self.move_to(id, JobState::Waiting, |j| {
            j.info.run_at_ms = None;
            if how == Requeue::Retry {
                j.attempts_made = 0;
                j.info.stalls = 0;
                j.info.finished_at_ms = None;
                j.info.error = None;
                j.info.cancel_requested = false;
            }
        });
        let attempt = self.jobs.get(id).map_or(0, |j| j.info.attempt);
        let detail = match how {
            Requeue::Retry => "retried",
            Requeue::Promote => "promoted",
        };
        self.event(s, JobEventKind::Added, id, attempt, Some(detail.into()));
        Requeued::Moved(from)
    }

    pub(super) fn remove(&mut self, id: &JobId, s: &QueueSettings) {
        if self
            .jobs
            .get(id)
            .is_some_and(|j| !j.info.state.is_terminal())
        {
            self.flow_finished(id, None);
        }
        self.flow_deleted(id);
        self.release_dedup(id, false);
        self.unlink(id);
        if self.jobs.remove(id).is_some() {
            self.event(s, JobEventKind::Removed, id, 0, None);
        }
    }

    pub(super) fn settle_one(&mut self, st: &Settle, now: u64, s: &QueueSettings) -> Settled {
        if !self.holds(&st.id, st.token) {
            return Settled::LeaseLost;
        }
        let cancel = self
            .jobs
            .get(&st.id)
            .is_some_and(|j| j.info.cancel_requested);
        if cancel {
            self.finish(&st.id, JobState::Cancelled, now, s, |j| {
                if j.info.error.is_none() {
                    j.info.error = Some("cancelled while active".into());
                }
            });
            return Settled::Applied(JobState::Cancelled);
        }
        match &st.how {
            Settlement::Complete { result } => {
                let result = result.clone();
                self.finish(&st.id, JobState::Completed, now, s, |j| {
                    j.info.result = Some(result);
                    j.info.error = None;
                });
                Settled::Applied(JobState::Completed)
            }
            Settlement::Fail { error } => {
                let error = error.clone();
                self.finish(&st.id, JobState::Failed, now, s, |j| {
                    j.attempts_made = j.info.attempt;
                    j.info.error = Some(error);
                });
                Settled::Applied(JobState::Failed)
            }
            Settlement::Retry { delay_ms, error } => {
                self.retry(&st.id, *delay_ms, error.clone(), now, s);
                Settled::Applied(self.state_of(&st.id))
            }
            Settlement::RateLimited { delay_ms } => {
                let (d, g) = (*delay_ms, self.group_of(&st.id));
                self.hold(g.as_ref(), d, now);
                let state = if d == 0 {
                    JobState::Waiting
                } else {
                    JobState::Delayed
                };
                let run_at = now.saturating_add(d);
                self.move_to(&st.id, state, |j| {
                    j.info.worker = None;
                    if d > 0 {
                        j.info.run_at_ms = Some(run_at);
                    }
                });
                let attempt = self.jobs.get(&st.id).map_or(0, |j| j.info.attempt);
                self.event(
                    s,
                    JobEventKind::RateLimited,
                    &st.id,
                    attempt,
                    Some(d.to_string()),
                );
                Settled::Applied(state)
            }
            Settlement::Release => {
                self.move_to(&st.id, JobState::Waiting, |j| {
                    j.info.worker = None;
                });
                let attempt = self.jobs.get(&st.id).map_or(0, |j| j.info.attempt);
                self.event(s, JobEventKind::Released, &st.id, attempt, None);
                Settled::Applied(JobState::Waiting)
            }
        }
    }

    pub(super) fn state_of(&self, id: &JobId) -> JobState {
        self.jobs.get(id).map_or(JobState::Failed, |j| j.info.state)
    }

    /// A failed attempt: delayed (or waiting) for another, or failed without any left.
    pub(super) fn retry(
        &mut self,
        id: &JobId,
        delay_ms: u64,
        error: String,
        now: u64,
        s: &QueueSettings,
    ) {
        let Some(j) = self.jobs.get_mut(id) else {
            return;
        };
        j.attempts_made = j.info.attempt.max(j.attempts_made + 1);
        j.info.error = Some(error.clone());
        let attempt = j.info.attempt;
        if j.attempts_made >= j.info.max_attempts {
            self.finish(id, JobState::Failed, now, s, |_| {});
            return;
        }
        if delay_ms == 0 {
            self.move_to(id, JobState::Waiting, |_| {});
        } else {
            let run_at = now.saturating_add(delay_ms);
            self.move_to(id, JobState::Delayed, |j| j.info.run_at_ms = Some(run_at));
        }
        self.event(s, JobEventKind::Retried, id, attempt, Some(error));
    }

    pub(super) fn check_stalled(
        &mut self,
        max_stalled: u32,
        limit: usize,
        now: u64,
        s: &QueueSettings,
    ) -> Stalled {
        let expired: Vec<JobId> = self
            .set(JobState::Active)
            .iter()
            .take_while(|(t, _, _)| *t <= at(now))
            .take(limit)
            .map(|(_, _, id)| id.clone())
            .collect();
        let mut report = Stalled::default();
        for id in expired {
            let Some(j) = self.jobs.get_mut(&id) else {
                continue;
            };
            j.info.stalls += 1;
            let (stalls, attempt, cancel) =
                (j.info.stalls, j.info.attempt, j.info.cancel_requested);
            self.event(s, JobEventKind::Stalled, &id, attempt, None);
            if cancel {
                self.finish(&id, JobState::Cancelled, now, s, |j| {
                    j.info.error = Some("cancelled while active; its lease ran out".into());
                });
                report.cancelled.push(id);
            } else if stalls <= max_stalled {
                self.move_to(&id, JobState::Waiting, |_| {});
                report.returned.push(id);
            } else {
                let delay = self
                    .jobs
                    .get(&id)
                    .map_or(0, |j| j.backoff.delay_ms(attempt));
                let error = format!("stalled {stalls} times (its lease expired)");
                self.retry(&id, delay, error, now, s);
                report.failed_attempt.push(id);
            }
        }
        report
    }
}
