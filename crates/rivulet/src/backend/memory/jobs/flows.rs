//! Flows on the memory store (the reference of `backend/flows.rs`): a finishing child
//! leaves a note in its queue; before the step's lock is released, the notes are
//! applied to their parents (which may fail a parent and leave a note for its own
//! parent, and so on up), so a parent's update is atomic with its last child's end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use bytes::Bytes;

use super::queue::{MemQueue, now_ms};
use super::{MemoryBackend, queue_mut};
use crate::backend::flows::{FlowAdded, FlowNode, JobFlows, ParentLink};
use crate::backend::jobs::{Added, QueueSettings};
use crate::error::Result;
use crate::jobs::flow::{ChildRef, Children, OnChildFailure};
use crate::jobs::record::{JobEventKind, JobState};
use crate::name::{JobId, QueueName};

/// A queue's flow data.
#[derive(Debug, Default)]
pub(crate) struct Flows {
    /// Children of this queue, with their link up.
    links: HashMap<JobId, (ChildRef, ParentLink)>,
    /// Parents of this queue: their side.
    parents: HashMap<JobId, ParentSide>,
    /// Notes made in the current step, applied before the lock is released.
    outbox: Vec<Note>,
}

#[derive(Debug)]
struct ParentSide {
    pending: BTreeSet<ChildRef>,
    results: BTreeMap<ChildRef, Bytes>,
    failures: BTreeMap<ChildRef, String>,
    settings: QueueSettings,
}

/// How a child ended, for its parent.
#[derive(Debug)]
enum Outcome {
    Completed(Bytes),
    /// Failed, cancelled or removed: the word and the error.
    Failed(&'static str, String),
}

#[derive(Debug)]
struct Note {
    child: ChildRef,
    parent: ParentLink,
    outcome: Outcome,
}

impl MemQueue {
    /// A job of this queue finished in `state` (or, with `None`, is being removed before
    /// it finished): its note for its parent, if it has one.
    pub(super) fn flow_finished(&mut self, id: &JobId, state: Option<JobState>) {
        let Some((child, parent)) = self.flows.links.remove(id) else {
            return;
        };
        let info = self.jobs.get(id).map(|j| &j.info);
        let error = || info.and_then(|i| i.error.clone()).unwrap_or_default();
        let outcome = match state {
            Some(JobState::Completed) => {
                Outcome::Completed(info.and_then(|i| i.result.clone()).unwrap_or_default())
            }
            Some(JobState::Cancelled) => Outcome::Failed("cancelled", error()),
            Some(_) => Outcome::Failed("failed", error()),
            None => Outcome::Failed("removed", "removed before it finished".into()),
        };
        self.flows.outbox.push(Note {
            child,
            parent,
            outcome,
        });
    }

    /// A job of this queue is deleted: its parent side goes with it.
    pub(super) fn flow_deleted(&mut self, id: &JobId) {
        self.flows.parents.remove(id);
    }

    /// Applies one note to parent `id` of this queue (a no-op unless the child was
    /// still pending).
    fn apply_note(
        &mut self,
        id: &JobId,
        child: ChildRef,
        outcome: Outcome,
        on_fail: OnChildFailure,
    ) {
        let now = now_ms();
        let Some(side) = self.flows.parents.get_mut(id) else {
            return;
        };
        if !side.pending.remove(&child) {
            return;
        }
        let settings = side.settings;
        let waits = self
            .jobs
            .get(id)
            .is_some_and(|j| j.info.state == JobState::WaitingChildren);
        match outcome {
            Outcome::Completed(r) => {
                side.results.insert(child, r);
            }
            Outcome::Failed(how, e) => match on_fail {
                OnChildFailure::Ignore => {
                    side.failures.insert(child, format!("{how}: {e}"));
                }
                OnChildFailure::RemoveDependency => {}
                OnChildFailure::FailParent => {
                    if waits {
                        let error = format!("child {child} {how}: {e}");
                        self.finish(id, JobState::Failed, now, &settings, |j| {
                            j.info.error = Some(error);
                        });
                    }
                    return;
                }
            },
        }
        let empty = self
            .flows
            .parents
            .get(id)
            .is_some_and(|s| s.pending.is_empty());
        if waits && empty {
            self.move_to(id, JobState::Waiting, |_| {});
            self.event(&settings, JobEventKind::ChildrenCompleted, id, 0, None);
        }
    }
}

/// Applies the notes of `start` and of every queue they reach, until none is left.
pub(super) fn deliver(queues: &mut HashMap<QueueName, MemQueue>, start: &QueueName) {
    let mut work = vec![start.clone()];
    while let Some(q) = work.pop() {
        let notes = match queues.get_mut(&q) {
            Some(mq) => std::mem::take(&mut mq.flows.outbox),
            None => continue,
        };
        for n in notes {
            let pq = queue_mut(queues, &n.parent.queue);
            pq.apply_note(&n.parent.id, n.child, n.outcome, n.parent.on_fail);
            if !pq.flows.outbox.is_empty() {
                work.push(n.parent.queue.clone());
            }
        }
    }
}

#[async_trait]
impl JobFlows for MemoryBackend {
    async fn add_flow(&self, nodes: &[FlowNode]) -> Result<Vec<FlowAdded>> {
        let now = now_ms();
        let mut state = self.lock();
        // Conflicts first, so a refused flow writes nothing.
        for node in nodes {
            let Some(q) = state.queues.get(&node.queue) else {
                continue;
            };
            if q.jobs.contains_key(&node.job.id) {
                let linked = q
                    .flows
                    .links
                    .get(&node.job.id)
                    .map(|(_, l)| (&l.queue, &l.id));
                let wanted = node.parent.as_ref().map(|p| (&p.queue, &p.id));
                if wanted.is_some() && linked != wanted {
                    let bad = node.job.id.clone();
                    return Ok(nodes
                        .iter()
                        .map(|n| {
                            if n.queue == node.queue && n.job.id == bad {
                                FlowAdded::Conflict(bad.clone())
                            } else {
                                FlowAdded::Added(Added::Existing(n.job.id.clone()))
                            }
                        })
                        .collect());
                }
            }
        }
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let q = queue_mut(&mut state.queues, &node.queue);
            let added = q.add(&node.job, &node.settings, now);
            if let Added::New(id, _) = &added {
                let me = ChildRef {
                    queue: node.queue.clone(),
                    id: id.clone(),
                };
                if let Some(p) = &node.parent {
                    q.flows.links.insert(id.clone(), (me, p.clone()));
                }
                if !node.children.is_empty() {
                    q.move_to(id, JobState::WaitingChildren, |_| {});
                    q.flows.parents.insert(
                        id.clone(),
                        ParentSide {
                            pending: node.children.iter().cloned().collect(),
                            results: BTreeMap::new(),
                            failures: BTreeMap::new(),
                            settings: node.settings,
                        },
                    );
                    q.event(
                        &node.settings,
                        JobEventKind::WaitingChildren,
                        id,
                        0,
                        Some(node.children.len().to_string()),
                    );
                    out.push(FlowAdded::Added(Added::New(
                        id.clone(),
                        JobState::WaitingChildren,
                    )));
                    continue;
                }
            }
            out.push(FlowAdded::Added(added));
        }
        Ok(out)
    }

    async fn move_flow_notes(&self, _queue: &QueueName, _limit: usize) -> Result<usize> {
        Ok(0)
    }

    async fn children(&self, queue: &QueueName, id: &JobId) -> Result<Children> {
        let state = self.lock();
        let Some(side) = state
            .queues
            .get(queue)
            .and_then(|q| q.flows.parents.get(id))
        else {
            return Ok(Children::default());
        };
        Ok(Children {
            results: side.results.clone(),
            failures: side.failures.clone(),
            pending: side.pending.iter().cloned().collect(),
        })
    }
}
