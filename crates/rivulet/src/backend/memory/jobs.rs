//! The memory job queues: the executable reference of the job semantics (see
//! [`crate::backend::jobs`]). Every step runs under the backend's one lock, so each
//! transition is one critical section.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::MemoryBackend;
use crate::backend::jobs::{
    Added, Cancelled, Dedup, EventReader, Fetch, Fetched, JobPage, JobQueues, JobWaiter, Leased,
    NewJob, QueueSettings, Removed, Renewal, Settle, Settled, Settlement, Stalled, StoredBackoff,
};
use crate::error::{Error, Result};
use crate::jobs::record::{
    JobCounts, JobEvent, JobEventKind, JobInfo, JobState, Keep, short_detail,
};
use crate::name::{JobId, JobName, QueueName};

/// A position in one of a queue's ordered sets: waiting `(priority, order)`, delayed
/// `(run_at, 0)`, active `(lease expiry, 0)`, finished `(finished_at, 0)`; then the id.
type Key = (i64, i64, JobId);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wakes every waiter now, and leaves a permit for a worker about to wait (a spurious
/// wake-up costs one empty fetch; a lost one would cost a whole block timeout).
fn wake(n: &Notify) {
    n.notify_waiters();
    n.notify_one();
}

fn at(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[derive(Debug)]
struct MemJob {
    info: JobInfo,
    /// Its place among waiting jobs: `(priority, order)`.
    place: (i64, i64),
    token: u64,
    attempts_made: u32,
    lease_until: u64,
    backoff: StoredBackoff,
    timeout_ms: Option<u64>,
    dedup: Option<Dedup>,
    remove_on_complete: bool,
    remove_on_fail: bool,
    logs: VecDeque<String>,
}

impl MemJob {
    /// Its key in the set of its current state.
    fn key(&self) -> Key {
        let id = self.info.id.clone();
        match self.info.state {
            JobState::Waiting => (self.place.0, self.place.1, id),
            JobState::Delayed => (at(self.info.run_at_ms.unwrap_or(0)), 0, id),
            JobState::Active => (at(self.lease_until), 0, id),
            _ => (at(self.info.finished_at_ms.unwrap_or(0)), 0, id),
        }
    }
}

/// One queue.
#[derive(Debug, Default)]
pub(super) struct MemQueue {
    jobs: HashMap<JobId, MemJob>,
    sets: HashMap<JobState, BTreeSet<Key>>,
    /// Waiting jobs of paused names, by name.
    parked: HashMap<JobName, BTreeSet<Key>>,
    dedup: HashMap<String, (JobId, Option<u64>)>,
    paused: bool,
    paused_names: HashSet<JobName>,
    seq: i64,
    events: VecDeque<JobEvent>,
    event_seq: u64,
    cancel_hints: Vec<mpsc::Sender<JobId>>,
    work: Arc<Notify>,
    new_events: Arc<Notify>,
}

impl MemQueue {
    fn set(&mut self, state: JobState) -> &mut BTreeSet<Key> {
        self.sets.entry(state).or_default()
    }

    fn event(
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
    fn unlink(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else { return };
        let key = job.key();
        let state = job.info.state;
        let name = job.info.name.clone();
        if state == JobState::Waiting
            && let Some(p) = self.parked.get_mut(&name)
            && p.remove(&key)
        {
            if p.is_empty() {
                self.parked.remove(&name);
            }
            return;
        }
        self.set(state).remove(&key);
    }

    /// Puts a job (unlinked) into `state`'s set, with its fields already set.
    fn link(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get(id) else { return };
        let key = job.key();
        let state = job.info.state;
        let name = job.info.name.clone();
        if state == JobState::Waiting {
            if self.paused_names.contains(&name) {
                self.parked.entry(name).or_default().insert(key);
                return;
            }
            wake(&self.work);
        }
        self.set(state).insert(key);
    }

    fn move_to(&mut self, id: &JobId, state: JobState, edit: impl FnOnce(&mut MemJob)) {
        self.unlink(id);
        if let Some(job) = self.jobs.get_mut(id) {
            job.info.state = state;
            edit(job);
        }
        self.link(id);
    }

    fn dedup_holder(&mut self, key: &str, now: u64) -> Option<JobId> {
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

    fn release_dedup(&mut self, id: &JobId, finished: bool) {
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

    fn add(&mut self, j: &NewJob, s: &QueueSettings, now: u64) -> Added {
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

    fn promote(&mut self, now: u64, limit: usize, s: &QueueSettings) {
        let due: Vec<JobId> = self
            .set(JobState::Delayed)
            .iter()
            .take_while(|(t, _, _)| *t <= at(now))
            .take(limit)
            .map(|(_, _, id)| id.clone())
            .collect();
        for id in due {
            self.move_to(&id, JobState::Waiting, |j| j.info.run_at_ms = None);
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

    fn lease(&mut self, f: &Fetch, now: u64, s: &QueueSettings) -> Vec<Leased> {
        let mut out = Vec::new();
        // Jobs of paused names met on the way are parked, a bounded number per step.
        let mut skips = f.limit.saturating_mul(4).saturating_add(16);
        while out.len() < f.limit {
            let Some(key) = self.set(JobState::Waiting).iter().next().cloned() else {
                break;
            };
            let id = key.2.clone();
            let name = self.jobs.get(&id).map(|j| j.info.name.clone());
            if let Some(name) = name.filter(|n| self.paused_names.contains(n)) {
                if skips == 0 {
                    break;
                }
                skips -= 1;
                self.set(JobState::Waiting).remove(&key);
                self.parked.entry(name).or_default().insert(key);
                continue;
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
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
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
            };
            let attempt = leased.attempt;
            out.push(leased);
            self.event(s, JobEventKind::Active, &id, attempt, None);
        }
        out
    }

    fn next_due(&mut self) -> Option<u64> {
        self.set(JobState::Delayed)
            .iter()
            .next()
            .map(|(t, _, _)| u64::try_from(*t).unwrap_or(0))
    }

    /// Whether `id` is active under `token`.
    fn holds(&self, id: &JobId, token: u64) -> bool {
        self.jobs
            .get(id)
            .is_some_and(|j| j.info.state == JobState::Active && j.token == token)
    }

    fn finish(
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
    fn apply_retention(
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

    fn remove(&mut self, id: &JobId, s: &QueueSettings) {
        self.release_dedup(id, false);
        self.unlink(id);
        if self.jobs.remove(id).is_some() {
            self.event(s, JobEventKind::Removed, id, 0, None);
        }
    }

    fn settle_one(&mut self, st: &Settle, now: u64, s: &QueueSettings) -> Settled {
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

    fn state_of(&self, id: &JobId) -> JobState {
        self.jobs.get(id).map_or(JobState::Failed, |j| j.info.state)
    }

    /// A failed attempt: delayed (or waiting) for another, or failed without any left.
    fn retry(&mut self, id: &JobId, delay_ms: u64, error: String, now: u64, s: &QueueSettings) {
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

    fn check_stalled(
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

fn queue_mut<'a>(
    queues: &'a mut HashMap<QueueName, MemQueue>,
    name: &QueueName,
) -> &'a mut MemQueue {
    queues.entry(name.clone()).or_default()
}

#[async_trait]
impl JobQueues for MemoryBackend {
    async fn add_jobs(
        &self,
        queue: &QueueName,
        jobs: &[NewJob],
        settings: &QueueSettings,
    ) -> Result<Vec<Added>> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        Ok(jobs.iter().map(|j| q.add(j, settings, now)).collect())
    }

    async fn fetch(
        &self,
        queue: &QueueName,
        fetch: &Fetch,
        settings: &QueueSettings,
    ) -> Result<Fetched> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        let settled = fetch
            .settle
            .iter()
            .map(|st| q.settle_one(st, now, settings))
            .collect();
        q.promote(now, fetch.promote_limit, settings);
        let jobs = if q.paused {
            Vec::new()
        } else {
            q.lease(fetch, now, settings)
        };
        Ok(Fetched {
            settled,
            jobs,
            next_due_ms: q.next_due(),
            paused: q.paused,
        })
    }

    async fn settle(
        &self,
        queue: &QueueName,
        settle: &[Settle],
        settings: &QueueSettings,
    ) -> Result<Vec<Settled>> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        Ok(settle
            .iter()
            .map(|st| q.settle_one(st, now, settings))
            .collect())
    }

    async fn renew(
        &self,
        queue: &QueueName,
        leases: &[(JobId, u64)],
        lease_ms: u64,
    ) -> Result<Vec<Renewal>> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        Ok(leases
            .iter()
            .map(|(id, token)| {
                if !q.holds(id, *token) {
                    return Renewal::Lost;
                }
                if q.jobs.get(id).is_some_and(|j| j.info.cancel_requested) {
                    return Renewal::Cancel;
                }
                let until = now.saturating_add(lease_ms);
                q.move_to(id, JobState::Active, |j| j.lease_until = until);
                Renewal::Renewed
            })
            .collect())
    }

    async fn check_stalled(
        &self,
        queue: &QueueName,
        max_stalled: u32,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<Stalled> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        Ok(q.check_stalled(max_stalled, limit, now, settings))
    }

    async fn progress(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        progress: Bytes,
        settings: &QueueSettings,
    ) -> Result<bool> {
        let value: serde_json::Value = serde_json::from_slice(&progress)?;
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        if !q.holds(id, token) {
            return Ok(false);
        }
        let detail = value.to_string();
        let attempt = match q.jobs.get_mut(id) {
            Some(j) => {
                j.info.progress = Some(value);
                j.info.attempt
            }
            None => 0,
        };
        q.event(settings, JobEventKind::Progress, id, attempt, Some(detail));
        Ok(true)
    }

    async fn log(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        line: &str,
        settings: &QueueSettings,
    ) -> Result<bool> {
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        if !q.holds(id, token) {
            return Ok(false);
        }
        if let Some(j) = q.jobs.get_mut(id) {
            j.logs.push_back(line.to_owned());
            let cap = usize::try_from(settings.log_cap).unwrap_or(usize::MAX);
            while j.logs.len() > cap {
                j.logs.pop_front();
            }
        }
        Ok(true)
    }

    async fn cancel(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Cancelled> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        let Some(st) = q.jobs.get(id).map(|j| j.info.state) else {
            return Ok(Cancelled::NotFound);
        };
        match st {
            JobState::Waiting | JobState::Delayed | JobState::WaitingChildren => {
                q.finish(id, JobState::Cancelled, now, settings, |j| {
                    j.info.error = Some("cancelled".into());
                });
                Ok(Cancelled::Cancelled)
            }
            JobState::Active => {
                let attempt = match q.jobs.get_mut(id) {
                    Some(j) => {
                        j.info.cancel_requested = true;
                        j.info.attempt
                    }
                    None => 0,
                };
                q.event(
                    settings,
                    JobEventKind::Cancelled,
                    id,
                    attempt,
                    Some("requested".into()),
                );
                q.cancel_hints.retain(|tx| !tx.is_closed());
                for tx in &q.cancel_hints {
                    // A hint; the renewal reads the flag if it is lost.
                    let _ = tx.try_send(id.clone());
                }
                Ok(Cancelled::Requested)
            }
            done => Ok(Cancelled::Finished(done)),
        }
    }

    async fn cancel_hints(
        &self,
        queue: &QueueName,
        _stop: CancellationToken,
    ) -> Result<mpsc::Receiver<JobId>> {
        let (tx, rx) = mpsc::channel(256);
        let mut state = self.lock();
        queue_mut(&mut state.queues, queue).cancel_hints.push(tx);
        Ok(rx)
    }

    async fn remove_job(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Removed> {
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        match q.jobs.get(id).map(|j| j.info.state) {
            None => Ok(Removed::NotFound),
            Some(JobState::Active) => Ok(Removed::Active),
            Some(st) => {
                q.remove(id, settings);
                Ok(Removed::Removed(st))
            }
        }
    }

    async fn pause(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()> {
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        match name {
            None => q.paused = true,
            Some(n) => {
                q.paused_names.insert(n.clone());
            }
        }
        Ok(())
    }

    async fn resume(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()> {
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        match name {
            None => q.paused = false,
            Some(n) => {
                q.paused_names.remove(n);
                if let Some(parked) = q.parked.remove(n) {
                    q.set(JobState::Waiting).extend(parked);
                }
            }
        }
        wake(&q.work);
        Ok(())
    }

    async fn paused(&self, queue: &QueueName) -> Result<(bool, Vec<JobName>)> {
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        let mut names: Vec<JobName> = q.paused_names.iter().cloned().collect();
        names.sort();
        Ok((q.paused, names))
    }

    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .and_then(|q| q.jobs.get(id))
            .map(|j| j.info.clone()))
    }

    async fn job_logs(
        &self,
        queue: &QueueName,
        id: &JobId,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .and_then(|q| q.jobs.get(id))
            .map(|j| j.logs.iter().skip(offset).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn counts(&self, queue: &QueueName) -> Result<JobCounts> {
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return Ok(JobCounts::default());
        };
        let n = |s: JobState| q.sets.get(&s).map_or(0, |set| set.len() as u64);
        let parked: u64 = q.parked.values().map(|p| p.len() as u64).sum();
        Ok(JobCounts {
            waiting: n(JobState::Waiting) + parked,
            parked,
            delayed: n(JobState::Delayed),
            active: n(JobState::Active),
            completed: n(JobState::Completed),
            failed: n(JobState::Failed),
            cancelled: n(JobState::Cancelled),
            waiting_children: n(JobState::WaitingChildren),
        })
    }

    async fn list_jobs(
        &self,
        queue: &QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let after = cursor.map(parse_cursor).transpose()?;
        let guard = self.lock();
        let Some(q) = guard.queues.get(queue) else {
            return Ok(JobPage::default());
        };
        let Some(set) = q.sets.get(&state) else {
            return Ok(JobPage::default());
        };
        let range = match &after {
            Some(k) => set.range((Bound::Excluded(k.clone()), Bound::Unbounded)),
            None => set.range::<Key, _>(..),
        };
        let keys: Vec<&Key> = range.take(limit.max(1)).collect();
        let jobs = keys
            .iter()
            .filter_map(|(_, _, id)| q.jobs.get(id).map(|j| j.info.clone()))
            .collect();
        let next = (keys.len() == limit.max(1))
            .then(|| keys.last().map(|(a, b, id)| format!("{a}:{b}:{id}")))
            .flatten();
        Ok(JobPage { jobs, next })
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        let state = self.lock();
        let mut names: Vec<QueueName> = state
            .queues
            .iter()
            .filter(|(_, q)| !q.jobs.is_empty() || q.event_seq > 0)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn job_waiter(&self, queue: &QueueName) -> Result<Box<dyn JobWaiter>> {
        let mut state = self.lock();
        let work = queue_mut(&mut state.queues, queue).work.clone();
        Ok(Box::new(MemWaiter { work }))
    }

    async fn event_reader(&self, queue: &QueueName) -> Result<Box<dyn EventReader>> {
        Ok(Box::new(MemEvents {
            backend: self.clone(),
            queue: queue.clone(),
        }))
    }
}

fn parse_cursor(c: &str) -> Result<Key> {
    let bad = || Error::config(format!("invalid job page cursor {c:?}"));
    let mut parts = c.splitn(3, ':');
    let a = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let b = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?;
    Ok((a, b, JobId::new(id).map_err(|_| bad())?))
}

struct MemWaiter {
    work: Arc<Notify>,
}

#[async_trait]
impl JobWaiter for MemWaiter {
    async fn wait(&mut self, timeout: Duration) -> Result<bool> {
        Ok(tokio::time::timeout(timeout, self.work.notified())
            .await
            .is_ok())
    }
}

struct MemEvents {
    backend: MemoryBackend,
    queue: QueueName,
}

impl MemEvents {
    fn after(&self, after: Option<&str>, limit: usize) -> (Vec<JobEvent>, Arc<Notify>) {
        let mut state = self.backend.lock();
        let q = queue_mut(&mut state.queues, &self.queue);
        let from = after
            .and_then(|a| a.split('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let events = q
            .events
            .iter()
            .filter(|e| {
                e.id.split('-')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > from)
            })
            .take(limit)
            .cloned()
            .collect();
        (events, q.new_events.clone())
    }
}

#[async_trait]
impl EventReader for MemEvents {
    async fn read(
        &mut self,
        after: Option<&str>,
        limit: usize,
        block: Option<Duration>,
    ) -> Result<Vec<JobEvent>> {
        let (events, notify) = self.after(after, limit);
        let Some(block) = block else {
            return Ok(events);
        };
        if !events.is_empty() {
            return Ok(events);
        }
        let wait = notify.notified();
        // Look again: an event may have arrived between the read and the wait.
        let (events, _) = self.after(after, limit);
        if !events.is_empty() {
            return Ok(events);
        }
        let _ = tokio::time::timeout(block, wait).await;
        Ok(self.after(after, limit).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::queue::default_settings;

    fn new_job(id: &str) -> NewJob {
        NewJob {
            id: JobId::new(id).expect("id"),
            name: JobName::new("n").expect("name"),
            data: Bytes::from_static(b"1"),
            priority: 0,
            lifo: false,
            delay_ms: 0,
            run_at_ms: None,
            max_attempts: 3,
            backoff: StoredBackoff {
                base_ms: 10,
                multiplier: 1.0,
                max_ms: 10,
            },
            timeout_ms: None,
            dedup: None,
            remove_on_complete: false,
            remove_on_fail: false,
        }
    }

    fn fetch(limit: usize, lease_ms: u64, settle: Vec<Settle>) -> Fetch {
        Fetch {
            worker: "w".into(),
            limit,
            lease_ms,
            promote_limit: 64,
            settle,
        }
    }

    /// J-11: an activation whose lease expired and was given to another cannot write.
    #[tokio::test]
    async fn a_stale_token_writes_nothing() {
        let b = MemoryBackend::new();
        let q = QueueName::new("q").expect("queue");
        let s = default_settings();
        b.add_jobs(&q, &[new_job("j")], &s).await.expect("add");
        let first = b.fetch(&q, &fetch(1, 1, vec![]), &s).await.expect("fetch");
        let old = first.jobs[0].token;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let stalled = b.check_stalled(&q, 1, 10, &s).await.expect("stalled");
        assert_eq!(stalled.returned.len(), 1);
        let second = b
            .fetch(&q, &fetch(1, 60_000, vec![]), &s)
            .await
            .expect("fetch");
        let new = second.jobs[0].token;
        assert!(new > old, "tokens grow with each lease");
        let id = JobId::new("j").expect("id");
        let stale = |how| Settle {
            id: id.clone(),
            token: old,
            how,
        };
        let lost = b
            .settle(
                &q,
                &[
                    stale(Settlement::Complete {
                        result: Bytes::from_static(b"\"old\""),
                    }),
                    stale(Settlement::Fail {
                        error: "old".into(),
                    }),
                    stale(Settlement::Release),
                ],
                &s,
            )
            .await
            .expect("settle");
        assert_eq!(lost, vec![Settled::LeaseLost; 3]);
        assert!(
            !b.progress(&q, &id, old, Bytes::from_static(b"5"), &s)
                .await
                .expect("progress")
        );
        assert!(!b.log(&q, &id, old, "old", &s).await.expect("log"));
        assert_eq!(
            b.renew(&q, &[(id.clone(), old)], 1000)
                .await
                .expect("renew"),
            vec![Renewal::Lost]
        );
        let done = b
            .settle(
                &q,
                &[Settle {
                    id: id.clone(),
                    token: new,
                    how: Settlement::Complete {
                        result: Bytes::from_static(b"\"new\""),
                    },
                }],
                &s,
            )
            .await
            .expect("settle");
        assert_eq!(done, vec![Settled::Applied(JobState::Completed)]);
        let job = b.job(&q, &id).await.expect("job").expect("exists");
        assert_eq!(job.result.as_deref(), Some(&b"\"new\""[..]));
        assert_eq!(job.progress, None);
        assert!(b.job_logs(&q, &id, 0, 10).await.expect("logs").is_empty());
        assert_eq!(job.stalls, 1);
    }

    /// J-11: past `max_stalled`, a stall is a failed attempt; without attempts left the
    /// job fails.
    #[tokio::test]
    async fn stalls_past_the_limit_are_failed_attempts() {
        let b = MemoryBackend::new();
        let q = QueueName::new("q").expect("queue");
        let s = default_settings();
        let mut job = new_job("j");
        job.max_attempts = 2;
        b.add_jobs(&q, &[job], &s).await.expect("add");
        let id = JobId::new("j").expect("id");
        let mut states = Vec::new();
        for _ in 0..3 {
            let f = b.fetch(&q, &fetch(1, 1, vec![]), &s).await.expect("fetch");
            if f.jobs.is_empty() {
                // Delayed by the backoff (10 ms): wait for it.
                tokio::time::sleep(Duration::from_millis(15)).await;
                b.fetch(&q, &fetch(1, 1, vec![]), &s).await.expect("fetch");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            b.check_stalled(&q, 1, 10, &s).await.expect("stalled");
            states.push(b.job(&q, &id).await.expect("job").expect("exists").state);
        }
        // Stall 1: back to waiting. Stall 2: attempt 1 failed, delayed. Stall 3: attempt 2
        // failed, none left.
        assert_eq!(
            states,
            vec![JobState::Waiting, JobState::Delayed, JobState::Failed]
        );
        let job = b.job(&q, &id).await.expect("job").expect("exists");
        assert_eq!((job.stalls, job.attempt), (3, 2));
    }
}
