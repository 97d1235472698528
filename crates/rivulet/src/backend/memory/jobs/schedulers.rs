//! The memory store of job schedulers (see [`crate::backend::job_schedulers`]): a record
//! per scheduler and an index by next fire time, in the queue, under the backend's one
//! lock, so an upsert or a fire (with the job it adds) is one critical section.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::queue::now_ms;
use super::queue_mut;
use crate::backend::job_schedulers::{
    Due, Fire, Fired, JobSchedulers, StoredScheduler, UpsertOutcome, Upserted,
};
use crate::backend::jobs::QueueSettings;
use crate::backend::memory::MemoryBackend;
use crate::error::Result;
use crate::jobs::record::JobEventKind;
use crate::name::QueueName;

/// The schedulers of one queue.
#[derive(Debug, Default)]
pub(crate) struct MemSchedulers {
    records: BTreeMap<String, StoredScheduler>,
    /// `(next fire time, id)` of the schedulers that have a next fire time.
    index: BTreeSet<(u64, String)>,
}

impl MemSchedulers {
    /// Whether the queue has no scheduler (the queue registry lists queues that have
    /// one, as Redis's upsert registers them).
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn unindex(&mut self, id: &str) {
        if let Some(next) = self.records.get(id).and_then(|r| r.next_ms) {
            self.index.remove(&(next, id.to_owned()));
        }
    }

    fn store(&mut self, rec: StoredScheduler) {
        self.unindex(&rec.id);
        if let Some(next) = rec.next_ms {
            self.index.insert((next, rec.id.clone()));
        }
        self.records.insert(rec.id.clone(), rec);
    }
}

fn same_schedule(a: &StoredScheduler, b: &StoredScheduler) -> bool {
    a.kind == b.kind && a.value == b.value && a.tz == b.tz
}

fn same_template(a: &StoredScheduler, b: &StoredScheduler) -> bool {
    a.job_name == b.job_name && a.job_data == b.job_data && a.job_opts == b.job_opts
}

#[async_trait]
impl JobSchedulers for MemoryBackend {
    async fn store_time_ms(&self, _queue: &QueueName) -> Result<u64> {
        Ok(now_ms())
    }

    async fn upsert_scheduler(
        &self,
        queue: &QueueName,
        record: &StoredScheduler,
    ) -> Result<Upserted> {
        let mut state = self.lock();
        let s = &mut queue_mut(&mut state.queues, queue).schedulers;
        let (outcome, rec) = match s.records.get(&record.id) {
            None => (
                UpsertOutcome::Created,
                StoredScheduler {
                    version: 1,
                    last_ms: None,
                    last_job: None,
                    ..record.clone()
                },
            ),
            Some(old) if same_schedule(old, record) && same_template(old, record) => {
                return Ok(Upserted {
                    outcome: UpsertOutcome::Unchanged,
                    version: old.version,
                    next_ms: old.next_ms,
                });
            }
            Some(old) => {
                let replaced = !same_schedule(old, record);
                (
                    if replaced {
                        UpsertOutcome::Replaced
                    } else {
                        UpsertOutcome::Updated
                    },
                    StoredScheduler {
                        version: old.version + 1,
                        next_ms: if replaced {
                            record.next_ms
                        } else {
                            old.next_ms
                        },
                        last_ms: old.last_ms,
                        last_job: old.last_job.clone(),
                        ..record.clone()
                    },
                )
            }
        };
        let up = Upserted {
            outcome,
            version: rec.version,
            next_ms: rec.next_ms,
        };
        s.store(rec);
        Ok(up)
    }

    async fn remove_scheduler(&self, queue: &QueueName, id: &str) -> Result<bool> {
        let mut state = self.lock();
        let s = &mut queue_mut(&mut state.queues, queue).schedulers;
        s.unindex(id);
        Ok(s.records.remove(id).is_some())
    }

    async fn schedulers(&self, queue: &QueueName) -> Result<Vec<StoredScheduler>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map(|q| q.schedulers.records.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn due_schedulers(&self, queue: &QueueName, limit: usize) -> Result<Due> {
        let now = now_ms();
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return Ok(Due {
                now_ms: now,
                ..Due::default()
            });
        };
        let s = &q.schedulers;
        let due = s
            .index
            .iter()
            .take_while(|(next, _)| *next <= now)
            .take(limit)
            .filter_map(|(_, id)| s.records.get(id).cloned())
            .collect();
        let next_ms = s
            .index
            .range((now.saturating_add(1), String::new())..)
            .next()
            .map(|(t, _)| *t);
        Ok(Due {
            now_ms: now,
            due,
            next_ms,
        })
    }

    async fn fire_schedulers(
        &self,
        queue: &QueueName,
        fires: &[Fire],
        settings: &QueueSettings,
    ) -> Result<Vec<Fired>> {
        let now = now_ms();
        let mut state = self.lock();
        let q = queue_mut(&mut state.queues, queue);
        let mut out = Vec::with_capacity(fires.len());
        for f in fires {
            let Some(rec) = q.schedulers.records.get(&f.id) else {
                out.push(Fired::Stale);
                continue;
            };
            if rec.version != f.version || rec.next_ms != Some(f.expected_next_ms) {
                out.push(Fired::Stale);
                continue;
            }
            let mut rec = rec.clone();
            rec.next_ms = f.next_ms;
            rec.last_ms = Some(f.tick_ms);
            rec.last_job = Some(f.job.id.clone());
            q.schedulers.store(rec);
            q.event(
                settings,
                JobEventKind::SchedulerFired,
                &f.job.id,
                0,
                Some(format!("{}@{}", f.id, f.tick_ms)),
            );
            out.push(Fired::Fired(q.add(&f.job, settings, now)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::memory::MemoryBackend;

    #[tokio::test]
    async fn only_a_current_read_fires() {
        crate::backend::job_schedulers::checks::only_a_current_read_fires(&MemoryBackend::new())
            .await;
    }
}
