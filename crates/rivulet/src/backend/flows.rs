//! The seam of flows (J-9): parents waiting for children, which may live in other
//! queues (and, on Redis Cluster, in other slots).
//!
//! The semantics every store implements (the memory store is the reference):
//!
//! * **Adding** ([`JobFlows::add_flow`]): nodes come parents first (by depth). A node
//!   with children is added in `waiting-children` with the set of its pending children;
//!   a child carries a link to its parent. A node whose id exists is `Existing` and
//!   nothing of it is written again (a retried add repairs a tree that an earlier add
//!   left half-written); an existing child linked to another parent (or none) is a
//!   conflict, found before anything is written (memory: under the lock; Redis: by a
//!   read first, and again by the add script).
//! * **Finishing**: when a child finishes (completed, failed, cancelled) or is removed
//!   before it finished, a *note* (the child, its outcome, its result or error and its
//!   failure policy) is made in the same atomic step. Applying a note removes the child
//!   from its parent's pending set; only a removal that took the child out has an
//!   effect, so applying a note twice is the same as once. A completed child's result is
//!   copied to the parent's side; a failed one fails the parent (`FailParent`, when the
//!   parent still waits), is recorded on the parent's side (`Ignore`) or is dropped
//!   (`RemoveDependency`). The parent whose pending set became empty while it waits
//!   becomes waiting (event `children-completed`).
//! * **Where notes are applied**: in the same step when the store can (memory; one Redis;
//!   parent and child in one queue on a cluster); otherwise the note waits in the child's
//!   queue's outbox until [`JobFlows::move_flow_notes`] applies it to the parent and
//!   then deletes it (two steps, each atomic in its own slot; re-application is a no-op).

use async_trait::async_trait;

use super::jobs::{Added, NewJob, QueueSettings};
use crate::error::Result;
use crate::jobs::flow::{ChildRef, Children, OnChildFailure};
use crate::name::{JobId, QueueName};

/// A node's link to its parent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParentLink {
    pub(crate) queue: QueueName,
    pub(crate) id: JobId,
    pub(crate) on_fail: OnChildFailure,
    /// The parent queue's events cap (the note's events go to the parent's stream).
    pub(crate) events_cap: u64,
}

/// One job of a flow, as the store adds it.
#[derive(Debug, Clone)]
pub(crate) struct FlowNode {
    pub(crate) queue: QueueName,
    pub(crate) settings: QueueSettings,
    pub(crate) job: NewJob,
    pub(crate) parent: Option<ParentLink>,
    /// The children this node waits for (empty: a leaf, added waiting).
    pub(crate) children: Vec<ChildRef>,
    /// 0 for the root.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) depth: usize,
}

/// What adding a flow did to each node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlowAdded {
    /// Added, or found already there (a retried add).
    Added(Added),
    /// A job with the node's id exists and is not this parent's child.
    Conflict(JobId),
}

/// Flows in a store. See the module docs.
#[async_trait]
pub(crate) trait JobFlows: Send + Sync {
    /// Adds the nodes (parents before their children), one per answer, in order.
    async fn add_flow(&self, nodes: &[FlowNode]) -> Result<Vec<FlowAdded>>;

    /// Applies up to `limit` notes waiting in `queue`'s outbox to their parents, then
    /// deletes them; returns how many it took. Stores that apply notes at once return 0.
    async fn move_flow_notes(&self, queue: &QueueName, limit: usize) -> Result<usize>;

    /// A parent's side: its children's results, the ignored failures, the pending ones.
    async fn children(&self, queue: &QueueName, id: &JobId) -> Result<Children>;
}

/// `<queue>/<id>`: a child as its parent's pending set names it (`/` is in no name).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn member(child: &ChildRef) -> String {
    format!("{}/{}", child.queue, child.id)
}

/// The child a member names.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn parse_member(m: &str) -> Option<ChildRef> {
    let (q, id) = m.split_once('/')?;
    Some(ChildRef {
        queue: QueueName::new(q).ok()?,
        id: JobId::new(id).ok()?,
    })
}

/// The wire word of a failure policy.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn on_fail_word(p: OnChildFailure) -> &'static str {
    match p {
        OnChildFailure::FailParent => "fail",
        OnChildFailure::Ignore => "ignore",
        OnChildFailure::RemoveDependency => "remove",
    }
}
