//! The memory job queues: the executable reference of the job semantics (see
//! [`crate::backend::jobs`]). Every step runs under the backend's one lock, so each
//! transition is one critical section.
//!
//! The data and its transitions are in `queue`; this file maps the seam's steps onto
//! them, and provides the waiter and the event reader.

mod flows;
mod limits;
mod queue;
mod schedulers;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use self::queue::MemQueue;
use self::queue::{Key, now_ms, wake};
pub(crate) use self::schedulers::MemSchedulers;
use super::MemoryBackend;
use crate::backend::jobs::{
    Added, Cancelled, EventReader, Fetch, Fetched, JobPage, JobQueues, JobWaiter, NewJob,
    QueueSettings, Removed, Renewal, Requeue, Requeued, Settle, Settled, Stalled,
};
use crate::error::{Error, Result};
use crate::jobs::limits::{GroupCounts, Limits};
use crate::jobs::record::{JobCounts, JobEvent, JobEventKind, JobInfo, JobState};
use crate::name::{JobGroup, JobId, JobName, QueueName};

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
        let (jobs, limited_until_ms) = if q.paused || fetch.limit == 0 {
            (Vec::new(), None)
        } else if q.limited(now) {
            q.lease_limited(fetch, now, settings)
        } else {
            (q.lease(fetch, now, settings), None)
        };
        flows::deliver(&mut state.queues, queue);
        let q = queue_mut(&mut state.queues, queue);
        Ok(Fetched {
            settled,
            jobs,
            next_due_ms: q.next_due(),
            paused: q.paused,
            limited_until_ms,
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
        let settled = settle
            .iter()
            .map(|st| q.settle_one(st, now, settings))
            .collect();
        flows::deliver(&mut state.queues, queue);
        Ok(settled)
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
                // In place: not a move out of active (which would count as leaving it).
                let until = now.saturating_add(lease_ms);
                if let Some(j) = q.jobs.get_mut(id) {
                    let old = j.key();
                    j.lease_until = until;
                    let new = j.key();
                    let active = q.set(JobState::Active);
                    active.remove(&old);
                    active.insert(new);
                }
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
        let report = q.check_stalled(max_stalled, limit, now, settings);
        flows::deliver(&mut state.queues, queue);
        Ok(report)
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
                flows::deliver(&mut state.queues, queue);
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
                flows::deliver(&mut state.queues, queue);
                Ok(Removed::Removed(st))
            }
        }
    }

    async fn requeue(
        &self,
        queue: &QueueName,
        id: &JobId,
        how: Requeue,
        settings: &QueueSettings,
    ) -> Result<Requeued> {
        let mut state = self.lock();
        Ok(queue_mut(&mut state.queues, queue).requeue(id, how, settings))
    }

    async fn retry_failed(
        &self,
        queue: &QueueName,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<(u64, u64)> {
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        let oldest: Vec<JobId> = q
            .set(JobState::Failed)
            .iter()
            .take(limit)
            .map(|(_, _, id)| id.clone())
            .collect();
        let mut moved = 0;
        for id in &oldest {
            if let Requeued::Moved(_) = q.requeue(id, Requeue::Retry, settings) {
                moved += 1;
            }
        }
        Ok((moved, q.set(JobState::Failed).len() as u64))
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
                    let now = now_ms();
                    for key in parked {
                        match q.group_of(&key.2) {
                            Some(g) => q.group_link_waiting(&g, key, now),
                            None => {
                                q.set(JobState::Waiting).insert(key);
                            }
                        }
                    }
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
            waiting: n(JobState::Waiting) + parked + q.lim.grouped_waiting,
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
            .filter(|(_, q)| !q.jobs.is_empty() || q.event_seq > 0 || !q.schedulers.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn sample_queues(&self, queues: &[QueueName]) -> Result<Vec<JobCounts>> {
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            out.push(self.counts(q).await?);
        }
        Ok(out)
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

    async fn set_limits(&self, queue: &QueueName, limits: &Limits) -> Result<()> {
        let mut state = self.lock();
        queue_mut(&mut state.queues, queue).set_limits(*limits);
        Ok(())
    }

    async fn limits(&self, queue: &QueueName) -> Result<Limits> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map_or_else(Limits::default, |q| q.lim.limits))
    }

    async fn pause_group(
        &self,
        queue: &QueueName,
        group: &JobGroup,
        paused: bool,
        settings: &QueueSettings,
    ) -> Result<bool> {
        let now = now_ms();
        let mut state = self.lock();
        Ok(queue_mut(&mut state.queues, queue).pause_group(group, paused, now, settings))
    }

    async fn group_counts(&self, queue: &QueueName, group: &JobGroup) -> Result<GroupCounts> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map_or_else(GroupCounts::default, |q| q.lim.counts(group)))
    }

    async fn list_groups(
        &self,
        queue: &QueueName,
        after: Option<&JobGroup>,
        limit: usize,
    ) -> Result<Vec<(JobGroup, GroupCounts)>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map_or_else(Vec::new, |q| q.lim.list(after, limit)))
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

impl MemQueue {
    /// For `rivulet doctor`: how many active jobs' leases expired before `before_ms`,
    /// the earliest lease expiry, and the jobs parked (the memory backend keeps no
    /// separate counter, so the count is the parked sets themselves).
    pub(crate) fn lease_and_parked_health(&self, before_ms: u64) -> (u64, Option<u64>, u64) {
        let active = self
            .jobs
            .values()
            .filter(|j| j.info.state == JobState::Active);
        let (mut expired, mut earliest) = (0u64, None::<u64>);
        for j in active {
            if j.lease_until < before_ms {
                expired += 1;
            }
            earliest = Some(earliest.map_or(j.lease_until, |e| e.min(j.lease_until)));
        }
        let parked = self.parked.values().map(|s| s.len() as u64).sum();
        (expired, earliest, parked)
    }
}
