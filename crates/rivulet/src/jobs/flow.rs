//! Flows (J-9): a parent job that waits for its children, which may live in other
//! queues (on Redis Cluster, in other slots) and may have children of their own.
//!
//! ```no_run
//! # async fn f() -> rivulet::Result<()> {
//! use rivulet::{MemoryBackend, OnChildFailure, Queue};
//!
//! let backend = MemoryBackend::new();
//! let reports = Queue::new(backend.clone(), "reports")?;
//! let fetches = Queue::new(backend.clone(), "fetches")?;
//! let flow = reports
//!     .add("monthly", &"2026-11")
//!     .job_id("monthly-2026-11")
//!     .child(fetches.add("fetch", &"eu"))
//!     .child_with(fetches.add("fetch", &"us"), OnChildFailure::Ignore)
//!     .await?;
//! println!("parent {} waits for {} jobs", flow.root.id, flow.nodes.len() - 1);
//! // In the parent's handler: `job.children_results::<T>().await?`.
//! # Ok(()) }
//! ```
//!
//! The parent is `waiting-children` until each child has completed (or failed under a
//! policy that lets it proceed), then waiting like any job. Children's return values are
//! copied to the parent's side as they complete, so retention may delete a completed
//! child before its parent runs. The store's guarantees and the order of an add across
//! slots are in `backend/flows.rs` and `docs/guarantees.md` ("Flows").

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::job::Job;
use super::queue::{AddJob, Enqueued, Queue, Shared};
use super::record::JobState;
use crate::backend::flows::{FlowAdded, FlowNode, ParentLink};
use crate::backend::jobs::Added;
use crate::error::{Error, Result};
use crate::name::{JobId, QueueName};

/// What a parent does when a child fails for good (or is cancelled, or removed before
/// it finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnChildFailure {
    /// The parent fails (the default), with the child named in its error.
    #[default]
    FailParent,
    /// The parent proceeds as if the child had completed; the failure is readable in
    /// [`Children::failures`].
    Ignore,
    /// The child is no longer a dependency: the parent proceeds, nothing is recorded.
    RemoveDependency,
}

/// A job of a flow, named by its queue and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct ChildRef {
    /// The child's queue.
    pub queue: QueueName,
    /// The child's id.
    pub id: JobId,
}

impl ChildRef {
    /// Job `id` of `queue`.
    pub fn new(queue: QueueName, id: JobId) -> Self {
        ChildRef { queue, id }
    }
}

impl fmt::Display for ChildRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.queue, self.id)
    }
}

/// A parent's side of a flow, from [`Queue::children`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Children {
    /// The return values (JSON) of the children that completed.
    pub results: BTreeMap<ChildRef, Bytes>,
    /// The errors of children that failed under [`OnChildFailure::Ignore`].
    pub failures: BTreeMap<ChildRef, String>,
    /// The children not finished yet (as far as the parent knows).
    pub pending: Vec<ChildRef>,
}

impl Children {
    /// The results decoded as `T`.
    pub fn results_as<T: DeserializeOwned>(&self) -> Result<BTreeMap<ChildRef, T>> {
        self.results
            .iter()
            .map(|(c, r)| Ok((c.clone(), serde_json::from_slice(r)?)))
            .collect()
    }
}

/// A child of a flow: a job, or a flow of its own.
#[derive(Debug)]
pub enum FlowChild<'a> {
    /// A job without children.
    Job(AddJob<'a>),
    /// A job with children of its own.
    Flow(AddFlow<'a>),
}

impl<'a> From<AddJob<'a>> for FlowChild<'a> {
    fn from(j: AddJob<'a>) -> Self {
        FlowChild::Job(j)
    }
}

impl<'a> From<AddFlow<'a>> for FlowChild<'a> {
    fn from(f: AddFlow<'a>) -> Self {
        FlowChild::Flow(f)
    }
}

/// A flow being added: a parent and its children; `.await` adds it.
///
/// Ids: a child without an id of its own gets `<parent id>.<n>` (n counts the parent's
/// children from 0), so a flow whose root has a caller-given id is idempotent as a whole:
/// adding it again writes no second tree and repairs one an interrupted add left
/// half-written. Every queue of a flow must be on the same store as the root's queue
/// (the root's backend writes the whole flow). Jobs of a flow take no dedup key, and a
/// parent takes no delay.
#[must_use = "a flow is added only when awaited"]
#[derive(Debug)]
pub struct AddFlow<'a> {
    parent: AddJob<'a>,
    children: Vec<(FlowChild<'a>, OnChildFailure)>,
}

/// A flow that was added, or found already there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowEnqueued {
    /// The root (the top parent).
    pub root: Enqueued,
    /// Every job of the flow, the root first, parents before their children.
    pub nodes: Vec<(ChildRef, Enqueued)>,
}

impl<'a> AddJob<'a> {
    /// Makes this job a flow's parent with `child` (a job or a flow) as its first child;
    /// a failed child fails the parent. See [`AddFlow`].
    pub fn child(self, child: impl Into<FlowChild<'a>>) -> AddFlow<'a> {
        self.child_with(child, OnChildFailure::FailParent)
    }

    /// As [`child`](Self::child), with what a failure of this child does.
    pub fn child_with(
        self,
        child: impl Into<FlowChild<'a>>,
        on_fail: OnChildFailure,
    ) -> AddFlow<'a> {
        AddFlow {
            parent: self,
            children: vec![(child.into(), on_fail)],
        }
    }
}

impl Queue {
    /// A flow's parent named `name` with `data`; add children with
    /// [`AddFlow::child`]. Same as `queue.add(name, data).child(…)`.
    pub fn flow<T: serde::Serialize + ?Sized>(&self, name: &str, data: &T) -> AddFlow<'_> {
        AddFlow {
            parent: self.add(name, data),
            children: Vec::new(),
        }
    }

    /// A parent's side of a flow: its children's results, the ignored failures and the
    /// children still pending. Empty for a job that is no parent (or is gone).
    pub async fn children(&self, id: &JobId) -> Result<Children> {
        self.shared.backend.children(&self.shared.name, id).await
    }

    /// Applies the flow notes waiting in this queue's outbox to their parents and
    /// deletes them; returns how many it applied. Workers of this queue do this after
    /// jobs finish and every stall-check interval; call it when a child's queue has no
    /// worker (for instance after cancelling or removing a child there). Only Redis
    /// Cluster with parent and child in different queues leaves notes in an outbox.
    pub async fn move_flow_notes(&self) -> Result<usize> {
        move_all(&self.shared).await
    }
}

impl<'a> AddFlow<'a> {
    /// Adds a child; a failed child fails the parent.
    pub fn child(self, child: impl Into<FlowChild<'a>>) -> Self {
        self.child_with(child, OnChildFailure::FailParent)
    }

    /// Adds a child with what its failure does.
    pub fn child_with(mut self, child: impl Into<FlowChild<'a>>, on_fail: OnChildFailure) -> Self {
        self.children.push((child.into(), on_fail));
        self
    }

    /// Chooses the parent's id (see [`AddFlow`] for the children's).
    pub fn job_id(mut self, id: &str) -> Self {
        self.parent = self.parent.job_id(id);
        self
    }

    /// The parent's priority (see [`AddJob::priority`]).
    pub fn priority(mut self, priority: u32) -> Self {
        self.parent = self.parent.priority(priority);
        self
    }

    fn root_queue(&self) -> &'a Queue {
        self.parent.queue()
    }

    /// Every node, parents before children (breadth first), with ids assigned.
    fn into_nodes(self) -> Result<Vec<FlowNode>> {
        let mut nodes: Vec<FlowNode> = Vec::new();
        // (node, parent index and policy, depth)
        let mut level: Vec<(FlowChild<'a>, Option<(usize, OnChildFailure)>)> =
            vec![(FlowChild::Flow(self), None)];
        let mut depth = 0;
        let mut seen = HashSet::new();
        while !level.is_empty() {
            let mut next = Vec::new();
            for (node, up) in level {
                let (mut job, children) = match node {
                    FlowChild::Job(j) => (j, Vec::new()),
                    FlowChild::Flow(f) => {
                        if f.children.is_empty() {
                            return Err(Error::config("a flow's parent needs at least one child"));
                        }
                        (f.parent, f.children)
                    }
                };
                if job.chosen_id().is_none() {
                    match up {
                        Some((p, _)) => {
                            let parent = nodes.get(p).ok_or_else(lost_parent)?;
                            let n = parent.children.len();
                            let id = JobId::new(format!("{}.{n}", parent.job.id)).map_err(|_| {
                                Error::config(format!(
                                    "the derived id of child {n} of {} is too long: give the child an id",
                                    parent.job.id
                                ))
                            })?;
                            job.set_id(&id);
                        }
                        None => job.set_id(&JobId::generate()),
                    }
                }
                let queue = job.queue().clone();
                let new = job.into_new_job()?;
                if new.dedup.is_some() {
                    return Err(Error::config("a job of a flow cannot have a dedup key"));
                }
                if !children.is_empty() && (new.delay_ms > 0 || new.run_at_ms.is_some()) {
                    return Err(Error::config("a flow's parent cannot be delayed"));
                }
                let me = ChildRef {
                    queue: queue.shared.name.clone(),
                    id: new.id.clone(),
                };
                if !seen.insert(me.clone()) {
                    return Err(Error::config(format!("job {me} appears twice in the flow")));
                }
                let parent = match up {
                    Some((p, on_fail)) => {
                        let pn = nodes.get_mut(p).ok_or_else(lost_parent)?;
                        pn.children.push(me.clone());
                        Some(ParentLink {
                            queue: pn.queue.clone(),
                            id: pn.job.id.clone(),
                            on_fail,
                            events_cap: pn.settings.events_cap,
                        })
                    }
                    None => None,
                };
                let index = nodes.len();
                nodes.push(FlowNode {
                    queue: me.queue,
                    settings: queue.shared.settings,
                    job: new,
                    parent,
                    children: Vec::new(),
                    depth,
                });
                for (c, on_fail) in children {
                    next.push((c, Some((index, on_fail))));
                }
            }
            level = next;
            depth += 1;
        }
        Ok(nodes)
    }

    async fn run(self) -> Result<FlowEnqueued> {
        let root = self.root_queue();
        let nodes = self.into_nodes()?;
        let added = root.shared.backend.add_flow(&nodes).await?;
        if added.len() != nodes.len() {
            return Err(Error::Protocol(format!(
                "{} answers to a flow of {} jobs",
                added.len(),
                nodes.len()
            )));
        }
        let mut out = Vec::with_capacity(nodes.len());
        for (node, a) in nodes.iter().zip(added) {
            let e = match a {
                FlowAdded::Added(Added::New(id, state)) => Enqueued {
                    id,
                    duplicate: false,
                    state: Some(state),
                },
                FlowAdded::Added(Added::Existing(id)) => Enqueued {
                    id,
                    duplicate: true,
                    state: None,
                },
                FlowAdded::Conflict(id) => {
                    return Err(Error::config(format!(
                        "job {id} of queue {} exists and is not a child of {}",
                        node.queue,
                        node.parent
                            .as_ref()
                            .map_or(String::new(), |p| format!("{}/{}", p.queue, p.id))
                    )));
                }
            };
            out.push((
                ChildRef {
                    queue: node.queue.clone(),
                    id: node.job.id.clone(),
                },
                e,
            ));
        }
        let root = out
            .first()
            .map(|(_, e)| e.clone())
            .ok_or_else(|| Error::Protocol("a flow without a root".into()))?;
        Ok(FlowEnqueued { root, nodes: out })
    }
}

impl<'a> IntoFuture for AddFlow<'a> {
    type Output = Result<FlowEnqueued>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<FlowEnqueued>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<T> Job<T> {
    /// The return values of this job's children that completed, decoded as `R`, by
    /// child (J-9). Complete once the job runs: a parent runs only after its children.
    pub async fn children_results<R: DeserializeOwned>(&self) -> Result<BTreeMap<ChildRef, R>> {
        self.children().await?.results_as()
    }

    /// This job's side of its flow: results, ignored failures, pending children.
    pub async fn children(&self) -> Result<Children> {
        let shared = &self.act.shared;
        shared.backend.children(&shared.name, &self.act.id).await
    }
}

fn lost_parent() -> Error {
    Error::Protocol("a flow node's parent is missing".into())
}

/// How many notes one mover step takes.
const MOVE_BATCH: usize = 256;

/// Moves notes until the outbox holds less than a batch.
async fn move_all(shared: &Shared) -> Result<usize> {
    let mut total = 0;
    loop {
        let n = shared
            .backend
            .move_flow_notes(&shared.name, MOVE_BATCH)
            .await?;
        total += n;
        if n < MOVE_BATCH {
            return Ok(total);
        }
    }
}

/// Wakes the movers of a queue handle: after a job finished there.
pub(crate) fn poke(shared: &Shared, state: JobState) {
    if state.is_terminal() {
        shared.flow_poke.notify_one();
    }
}

/// A worker's flow-note mover: runs after jobs of the queue finished (at most every
/// `MIN_GAP`), and every `every` for notes left by processes that died between
/// finishing a child and moving its note, or by callers who cancelled or removed one.
pub(crate) fn start_mover(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    const MIN_GAP: Duration = Duration::from_millis(20);
    tokio::spawn(async move {
        let mut failures = crate::log_limit::FailureLog::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = shared.flow_poke.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            match move_all(&shared).await {
                Ok(_) => {
                    failures.succeeded("the flow-note mover");
                }
                Err(e) => {
                    failures.failed("the flow-note mover", &e);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(MIN_GAP) => {}
            }
        }
    });
}
