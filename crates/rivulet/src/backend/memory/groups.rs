//! Group lifecycle: create, destroy, broadcast heartbeats and orphans (B-SUB-3).

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBackend;
use super::state::{Group, parse_id};
use crate::backend::{GroupRole, GroupStatus, Groups, StreamKey};
use crate::error::{Error, Result};
use crate::message::EntryId;
use crate::name::GroupName;
use crate::topic::StartFrom;

#[async_trait]
impl Groups for MemoryBackend {
    async fn ensure_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        start: &StartFrom,
        role: GroupRole,
    ) -> Result<GroupStatus> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            if stream.groups.contains_key(group) {
                return Ok(GroupStatus::Existed);
            }
            let cursor = match start {
                StartFrom::New => stream.log.last,
                StartFrom::Beginning => (0, 0),
                StartFrom::After(id) => parse_id(&EntryId(id.clone())).ok_or_else(|| {
                    Error::config(format!("start position {id:?} is not an entry id"))
                })?,
            };
            stream.groups.insert(
                group.clone(),
                Group {
                    cursor,
                    ..Group::default()
                },
            );
            if role == GroupRole::Broadcast {
                stream.broadcast.insert(group.clone());
            }
            Ok(GroupStatus::Created)
        })?
    }

    async fn destroy_group(&self, key: &StreamKey, group: &GroupName) -> Result<()> {
        // Scheduled retries of the group stay: the retry mover dead-letters them once
        // the group has been gone for the grace period (a reader may bring it back).
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            stream.groups.remove(group);
            stream.lanes.remove(group);
            stream.broadcast.remove(group);
            stream.heartbeats.remove(group);
        })
    }

    async fn broadcast_heartbeat(
        &self,
        key: &StreamKey,
        group: &GroupName,
        ttl: Duration,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            t.stream(key.kind)
                .heartbeats
                .insert(group.clone(), crate::deadline::from_now(ttl));
        })
    }

    async fn remove_orphan_broadcast_groups(&self, key: &StreamKey) -> Result<Vec<String>> {
        self.with_topic(&key.topic, |t| {
            let now = Instant::now();
            let stream = t.stream(key.kind);
            let orphans: Vec<GroupName> = stream
                .broadcast
                .iter()
                .filter(|g| stream.heartbeats.get(*g).is_none_or(|until| *until <= now))
                .cloned()
                .collect();
            for g in &orphans {
                stream.groups.remove(g);
                stream.lanes.remove(g);
                stream.broadcast.remove(g);
                stream.heartbeats.remove(g);
            }
            orphans.into_iter().map(|g| g.to_string()).collect()
        })
    }
}
