//! Flows on Redis (J-9; the semantics are in `backend/flows.rs`, the keys in
//! `lua/jobs_flow_lib.lua` and `docs/wire-format.md`, "Flows").
//!
//! * **Adding** goes depth by depth, parents first: one `jobs_flow_add.lua` per queue
//!   of a depth (queues of one depth concurrently), the next depth once the previous is
//!   acknowledged. So a child never exists before its parent waits for it, and an add
//!   interrupted part-way leaves parents waiting for children that are missing, which
//!   the same add, retried with the same root id, adds (the existing jobs are left as
//!   they are).
//! * **Finishing**: the script that finishes a child applies its note to the parent at
//!   once when the parent's keys may be touched from it (one Redis, or the parent in the
//!   child's own queue); on a cluster with the parent in another queue it writes the
//!   note to the child's queue's outbox instead, in the same script. The mover
//!   ([`RedisBackend::move_flow_notes`]) reads notes (`jobs_flow_take.lua`), applies them
//!   in each parent's slot (`jobs_flow_apply.lua`, a no-op for a note already applied)
//!   and deletes them (`jobs_flow_ack.lua`, only the notes it read). A process killed
//!   between the two last steps leaves notes that the next mover applies again, to no
//!   effect, and deletes.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::try_join_all;
use redis::Value;

use super::add::job_args;
use super::decode::{array_of, text};
use super::header;
use super::invocation;
use crate::backend::flows::{FlowAdded, FlowNode, JobFlows, member, on_fail_word, parse_member};
use crate::backend::jobs::Added;
use crate::backend::redis::RedisBackend;
use crate::backend::redis::conn::{check_value, evalsha, pipeline_with_scripts};
use crate::backend::redis::reply;
use crate::backend::redis::scripts::SCRIPTS;
use crate::error::{Error, Result};
use crate::jobs::flow::{ChildRef, Children};
use crate::name::{JobId, QueueName};

/// The most nodes of one queue and depth in one `jobs_flow_add.lua`.
const FLOW_ADD_BATCH: usize = 100;

/// A note read from an outbox.
#[derive(Debug)]
struct Note {
    child: String,
    n: String,
    parent_queue: QueueName,
    args: [Vec<u8>; 6],
}

impl RedisBackend {
    /// The `EVALSHA` of `jobs_flow_add.lua` for nodes of one queue.
    fn flow_add_cmd(&self, nodes: &[&FlowNode]) -> Option<redis::Cmd> {
        let first = nodes.first()?;
        let keys = self.queue_keys(&first.queue);
        let fixed = keys.fixed();
        let refs: Vec<&str> = fixed.iter().map(String::as_str).collect();
        let mut cmd = evalsha(&SCRIPTS.jobs.flow_add, &refs);
        for a in header(&keys, Some(&first.settings)) {
            cmd.arg(a);
        }
        cmd.arg(nodes.len());
        for node in nodes {
            job_args(&mut cmd, &node.job);
            match &node.parent {
                Some(p) => {
                    let direct = !self.is_cluster() || p.queue == node.queue;
                    cmd.arg(self.queue_keys(&p.queue).tag)
                        .arg(p.queue.as_str())
                        .arg(p.id.as_str())
                        .arg(member(&ChildRef {
                            queue: node.queue.clone(),
                            id: node.job.id.clone(),
                        }))
                        .arg(on_fail_word(p.on_fail))
                        .arg(if direct { "1" } else { "0" })
                        .arg(p.events_cap.max(1));
                }
                None => {
                    cmd.arg("").arg("").arg("").arg("").arg("").arg("0").arg("");
                }
            }
            cmd.arg(node.children.len());
            for c in &node.children {
                cmd.arg(member(c));
            }
        }
        Some(cmd)
    }

    async fn flow_add_group(&self, nodes: Vec<&FlowNode>) -> Result<Vec<FlowAdded>> {
        let mut conn = self.conn()?;
        if let Some(first) = nodes.first() {
            self.register_queue(&mut conn, &first.queue).await?;
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for chunk in nodes.chunks(FLOW_ADD_BATCH) {
            if let Some(cmd) = self.flow_add_cmd(chunk) {
                pipe.add_command(cmd);
            }
        }
        let values = pipeline_with_scripts(&mut conn, &pipe, &[&SCRIPTS.jobs.flow_add]).await?;
        let mut out = Vec::with_capacity(nodes.len());
        for v in values {
            let v = check_value(v)?;
            for item in array_of(&v, "flow add")? {
                let parts = array_of(item, "flow add")?;
                let id = JobId::new(text(parts.get(1), "flow add")?)
                    .map_err(|_| reply::unexpected("flow add", item))?;
                out.push(match text(parts.first(), "flow add")?.as_str() {
                    "new" => {
                        FlowAdded::Added(Added::New(id, text(parts.get(2), "flow add")?.parse()?))
                    }
                    "existing" => FlowAdded::Added(Added::Existing(id)),
                    "conflict" => FlowAdded::Conflict(id),
                    _ => return Err(reply::unexpected("flow add", item)),
                });
            }
        }
        if out.len() != nodes.len() {
            return Err(Error::Protocol(format!(
                "{} replies to {} flow adds",
                out.len(),
                nodes.len()
            )));
        }
        Ok(out)
    }

    async fn flow_take(&self, queue: &QueueName, limit: usize) -> Result<Vec<Note>> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.flow_take, &keys, None);
        inv.arg(limit);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let bytes = |v: Option<&Value>| -> Result<Vec<u8>> {
            v.and_then(reply::bytes)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| reply::unexpected("flow note", &Value::Nil))
        };
        array_of(&v, "flow notes")?
            .iter()
            .map(|item| {
                let p = array_of(item, "flow note")?;
                let parent_queue = QueueName::new(text(p.get(2), "flow note")?)
                    .map_err(|e| Error::Protocol(format!("malformed flow note: {e}")))?;
                Ok(Note {
                    child: text(p.first(), "flow note")?,
                    n: text(p.get(1), "flow note")?,
                    parent_queue,
                    args: [
                        bytes(p.get(3))?,
                        bytes(p.get(4))?,
                        bytes(p.get(5))?,
                        bytes(p.get(6))?,
                        bytes(p.get(7))?,
                        bytes(p.get(8))?,
                    ],
                })
            })
            .collect()
    }

    /// Applies notes to parents of `parent_queue`; true when that queue's outbox holds
    /// notes (of parents that failed here).
    async fn flow_apply(&self, parent_queue: &QueueName, notes: &[&Note]) -> Result<bool> {
        let keys = self.queue_keys(parent_queue);
        let mut inv = invocation(&SCRIPTS.jobs.flow_apply, &keys, None);
        inv.arg(notes.len());
        for n in notes {
            for a in &n.args {
                inv.arg(a.as_slice());
            }
        }
        let mut conn = self.conn()?;
        let (_, left): (i64, i64) = inv.invoke_async(&mut conn).await?;
        Ok(left > 0)
    }

    /// One mover step on `queue`: take, apply, delete. Returns how many notes it took
    /// and the parent queues whose outboxes now hold notes.
    async fn move_once(&self, queue: &QueueName, limit: usize) -> Result<(usize, Vec<QueueName>)> {
        let notes = self.flow_take(queue, limit).await?;
        if notes.is_empty() {
            return Ok((0, Vec::new()));
        }
        let mut by_parent: HashMap<&QueueName, Vec<&Note>> = HashMap::new();
        for n in &notes {
            by_parent.entry(&n.parent_queue).or_default().push(n);
        }
        let results = futures::future::join_all(
            by_parent
                .iter()
                .map(|(q, ns)| async move { (ns, self.flow_apply(q, ns).await) }),
        )
        .await;
        let mut applied: Vec<&Note> = Vec::new();
        let mut more = Vec::new();
        let mut first_error = None;
        for (ns, r) in results {
            match r {
                Ok(left) => {
                    applied.extend(ns.iter().copied());
                    if left && let Some(n) = ns.first() {
                        more.push(n.parent_queue.clone());
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.flow_ack(queue, &applied).await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok((notes.len(), more)),
        }
    }

    async fn flow_ack(&self, queue: &QueueName, notes: &[&Note]) -> Result<()> {
        if notes.is_empty() {
            return Ok(());
        }
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.flow_ack, &keys, None);
        inv.arg(notes.len());
        for n in notes {
            inv.arg(&n.child).arg(&n.n);
        }
        let mut conn = self.conn()?;
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }
}

impl RedisBackend {
    /// The first child whose id names a job that is not its parent's child, read before
    /// anything is written (so bad input writes nothing; a concurrent add can still make
    /// the script find a conflict, which it reports the same way).
    async fn flow_conflict(&self, nodes: &[FlowNode]) -> Result<Option<usize>> {
        let mut groups: BTreeMap<&QueueName, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate().filter(|(_, n)| n.parent.is_some()) {
            groups.entry(&n.queue).or_default().push(i);
        }
        let links = try_join_all(groups.iter().map(|(q, idx)| async move {
            let keys = self.queue_keys(q);
            let mut pipe = redis::pipe();
            for &i in idx {
                if let Some(n) = nodes.get(i) {
                    pipe.cmd("HMGET")
                        .arg(keys.job(&n.job.id))
                        .arg("id")
                        .arg("parent_tag")
                        .arg("parent_id");
                }
            }
            let mut conn = self.conn()?;
            let v: Vec<(Option<String>, Option<String>, Option<String>)> =
                pipe.query_async(&mut conn).await?;
            Ok::<_, Error>(idx.iter().copied().zip(v).collect::<Vec<_>>())
        }))
        .await?;
        for (i, (id, tag, pid)) in links.into_iter().flatten() {
            let (Some(_), Some(p)) = (id, nodes.get(i).and_then(|n| n.parent.as_ref())) else {
                continue;
            };
            if tag.as_deref() != Some(self.queue_keys(&p.queue).tag.as_str())
                || pid.as_deref() != Some(p.id.as_str())
            {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl JobFlows for RedisBackend {
    async fn add_flow(&self, nodes: &[FlowNode]) -> Result<Vec<FlowAdded>> {
        if let Some(bad) = self.flow_conflict(nodes).await? {
            return Ok(nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    if i == bad {
                        FlowAdded::Conflict(n.job.id.clone())
                    } else {
                        FlowAdded::Added(Added::Existing(n.job.id.clone()))
                    }
                })
                .collect());
        }
        let mut out: Vec<Option<FlowAdded>> = vec![None; nodes.len()];
        let depth = nodes.iter().map(|n| n.depth).max().unwrap_or(0);
        for d in 0..=depth {
            // Per queue, the nodes of this depth (with their places in `nodes`).
            let mut groups: BTreeMap<&QueueName, Vec<usize>> = BTreeMap::new();
            for (i, n) in nodes.iter().enumerate().filter(|(_, n)| n.depth == d) {
                groups.entry(&n.queue).or_default().push(i);
            }
            let answers = try_join_all(groups.values().map(|idx| {
                self.flow_add_group(idx.iter().filter_map(|&i| nodes.get(i)).collect())
            }))
            .await?;
            for (idx, ans) in groups.values().zip(answers) {
                for (&i, a) in idx.iter().zip(ans) {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(a);
                    }
                }
            }
            // A conflict stops the add before the next depth.
            if out
                .iter()
                .flatten()
                .any(|a| matches!(a, FlowAdded::Conflict(_)))
            {
                break;
            }
        }
        Ok(out
            .into_iter()
            .zip(nodes)
            .map(|(a, n)| a.unwrap_or_else(|| FlowAdded::Added(Added::Existing(n.job.id.clone()))))
            .collect())
    }

    async fn move_flow_notes(&self, queue: &QueueName, limit: usize) -> Result<usize> {
        let (n, mut more) = self.move_once(queue, limit).await?;
        // Parents that failed left notes for their own parents: move those too (a few
        // steps up; what is left is moved by those queues' workers).
        for _ in 0..8 {
            let Some(q) = more.pop() else { break };
            let (_, up) = self.move_once(&q, limit).await?;
            more.extend(up);
        }
        Ok(n)
    }

    async fn children(&self, queue: &QueueName, id: &JobId) -> Result<Children> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let (results, failures, pending): (
            Vec<(String, Vec<u8>)>,
            Vec<(String, String)>,
            Vec<String>,
        ) = redis::pipe()
            .cmd("HGETALL")
            .arg(format!("{}/results/{id}", keys.tag))
            .cmd("HGETALL")
            .arg(format!("{}/failures/{id}", keys.tag))
            .cmd("SMEMBERS")
            .arg(format!("{}/deps/{id}", keys.tag))
            .query_async(&mut conn)
            .await?;
        let child = |m: &str| {
            parse_member(m).ok_or_else(|| Error::Protocol(format!("malformed flow child {m:?}")))
        };
        let mut pending = pending
            .iter()
            .map(|m| child(m))
            .collect::<Result<Vec<_>>>()?;
        pending.sort();
        Ok(Children {
            results: results
                .into_iter()
                .map(|(m, v)| Ok((child(&m)?, Bytes::from(v))))
                .collect::<Result<_>>()?,
            failures: failures
                .into_iter()
                .map(|(m, e)| Ok((child(&m)?, e)))
                .collect::<Result<_>>()?,
            pending,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::jobs::{Fetch, JobQueues, Settle, Settled, Settlement};
    use crate::jobs::JobState;
    use crate::jobs::queue::default_settings;
    use crate::{JobEventKind, Queue};
    use rivulet_testkit::{RedisCluster, key_slot};

    /// A note written by a child's completion survives a mover that dies before applying
    /// it, and one that dies after applying but before deleting it: the next mover
    /// applies it to no further effect and deletes it. The parent becomes waiting once.
    #[tokio::test]
    async fn a_note_whose_mover_died_is_applied_exactly_once_later() {
        let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
            .await
            .unwrap()
            .unwrap();
        let b = RedisBackend::cluster(&cluster.urls()).await.unwrap();
        let (up, down) = (
            QueueName::new("up").unwrap(),
            QueueName::new("down").unwrap(),
        );
        assert_ne!(
            key_slot(b.queue_keys(&up).tag.as_bytes()),
            key_slot(b.queue_keys(&down).tag.as_bytes())
        );
        let parents = Queue::new(b.clone(), "up").unwrap();
        let kids = Queue::new(b.clone(), "down").unwrap();
        let flow = parents
            .flow("p", &0u32)
            .job_id("p")
            .child(kids.add("c", &1u32).job_id("c"))
            .await
            .unwrap();
        let s = default_settings();
        let fetched = b
            .fetch(
                &down,
                &Fetch {
                    worker: "w".into(),
                    limit: 1,
                    lease_ms: 30_000,
                    promote_limit: 0,
                    settle: Vec::new(),
                },
                &s,
            )
            .await
            .unwrap();
        let leased = &fetched.jobs[0];
        let settled = b
            .settle(
                &down,
                &[Settle {
                    id: leased.id.clone(),
                    token: leased.token,
                    how: Settlement::Complete {
                        result: Bytes::from_static(b"7"),
                    },
                }],
                &s,
            )
            .await
            .unwrap();
        assert_eq!(settled, vec![Settled::Applied(JobState::Completed)]);
        let state = |b: RedisBackend| {
            let up = up.clone();
            async move {
                b.job(&up, &JobId::new("p").unwrap())
                    .await
                    .unwrap()
                    .unwrap()
                    .state
            }
        };
        // Written with the completion, not applied yet (a mover that died before).
        let notes = b.flow_take(&down, 10).await.unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(state(b.clone()).await, JobState::WaitingChildren);
        // A mover that applies and dies before deleting the note.
        b.flow_apply(&up, &[&notes[0]]).await.unwrap();
        assert_eq!(state(b.clone()).await, JobState::Waiting);
        assert_eq!(
            b.flow_take(&down, 10).await.unwrap().len(),
            1,
            "still there"
        );
        // The next mover: applies again (no effect) and deletes.
        assert_eq!(b.move_flow_notes(&down, 10).await.unwrap(), 1);
        assert!(b.flow_take(&down, 10).await.unwrap().is_empty());
        // A stale copy applied once more changes nothing either.
        b.flow_apply(&up, &[&notes[0]]).await.unwrap();
        assert_eq!(state(b.clone()).await, JobState::Waiting);
        let children = parents.children(&flow.root.id).await.unwrap();
        assert_eq!(children.results.len(), 1);
        assert_eq!(children.results.values().next().unwrap().as_ref(), b"7");
        assert!(children.pending.is_empty());
        let mut events = parents.events(None).await.unwrap();
        let once = events
            .drain_now()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == JobEventKind::ChildrenCompleted)
            .count();
        assert_eq!(once, 1, "the parent became waiting once");
        assert_eq!(parents.counts().await.unwrap().waiting, 1);
    }
}
