//! Group lifecycle (B-SUB-3): create and register (with the retry lane), destroy,
//! broadcast heartbeats and orphan clean-up. Orphan clean-up only ever considers groups
//! in the broadcast registry, so a regular group whose name looks like a broadcast
//! group's is never touched.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::conn::Conn;
use super::reply;
use super::scripts::SCRIPTS;
use super::{RedisBackend, millis};
use crate::backend::{GroupRole, GroupStatus, Groups, StreamKey};
use crate::error::{Error, Result};
use crate::name::GroupName;
use crate::topic::StartFrom;

/// The XGROUP CREATE start id of a [`StartFrom`].
fn start_id(start: &StartFrom) -> Result<String> {
    Ok(match start {
        StartFrom::New => "$".to_owned(),
        StartFrom::Beginning => "0".to_owned(),
        StartFrom::After(id) => {
            if reply::parse_stream_id(id).is_none() && id.parse::<u64>().is_err() {
                return Err(Error::config(format!(
                    "start position {id:?} is not an entry id (ms-seq)"
                )));
            }
            id.clone()
        }
    })
}

impl RedisBackend {
    /// Runs `ensure_group.lua` on `conn`: creates and registers the group; `resume`
    /// forces `start` for a vanished group (a reader re-creating it where it last read).
    pub(super) async fn create_group(
        &self,
        conn: &mut Conn,
        key: &StreamKey,
        group: &GroupName,
        start: &str,
        role: GroupRole,
        resume: bool,
    ) -> Result<GroupStatus> {
        let keys = self.log_keys(key);
        let status: String = SCRIPTS
            .ensure_group
            .key(&keys.stream)
            .key(keys.lane(group.as_str()))
            .key(keys.groups())
            .key(keys.broadcast())
            .key(keys.generations())
            .arg(group.as_str())
            .arg(start)
            .arg(if role == GroupRole::Broadcast {
                "1"
            } else {
                "0"
            })
            .arg(if resume { "1" } else { "0" })
            .invoke_async(conn)
            .await?;
        match status.as_str() {
            "existed" => Ok(GroupStatus::Existed),
            "created" => Ok(GroupStatus::Created),
            "recreated" => Ok(GroupStatus::Recreated),
            other => Err(Error::Protocol(format!("ensure_group answered {other:?}"))),
        }
    }

    /// Destroys a group (only an orphaned broadcast group, with `only_orphan`).
    /// Returns whether it existed and was destroyed.
    async fn remove_group(
        &self,
        conn: &mut Conn,
        key: &StreamKey,
        group: &GroupName,
        only_orphan: bool,
    ) -> Result<bool> {
        let keys = self.log_keys(key);
        let destroyed: i64 = SCRIPTS
            .destroy_group
            .key(&keys.stream)
            .key(keys.lane(group.as_str()))
            .key(keys.heartbeat(group))
            .key(keys.groups())
            .key(keys.broadcast())
            .key(keys.generations())
            .arg(group.as_str())
            .arg(if only_orphan { "1" } else { "0" })
            .invoke_async(conn)
            .await?;
        Ok(destroyed == 1)
    }

    /// The names of the groups on `stream` (none when it does not exist).
    pub(super) async fn group_names(&self, conn: &mut Conn, stream: &str) -> Result<Vec<String>> {
        let r: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(conn)
            .await;
        let v = match r {
            Ok(v) => v,
            // "ERR no such key": a stream nobody created yet has no groups.
            Err(e)
                if e.code() == Some("ERR")
                    && e.detail().is_some_and(|d| d.contains("no such key")) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(reply::array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(|g| reply::field(g, "name").and_then(reply::string))
            .collect())
    }
}

#[async_trait]
impl Groups for RedisBackend {
    async fn ensure_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        start: &StartFrom,
        role: GroupRole,
    ) -> Result<GroupStatus> {
        let start = start_id(start)?;
        let mut conn = self.conn()?;
        self.register_topic(&mut conn, &key.topic).await?;
        self.create_group(&mut conn, key, group, &start, role, false)
            .await
    }

    async fn destroy_group(&self, key: &StreamKey, group: &GroupName) -> Result<()> {
        let mut conn = self.conn()?;
        self.remove_group(&mut conn, key, group, false).await?;
        Ok(())
    }

    async fn broadcast_heartbeat(
        &self,
        key: &StreamKey,
        group: &GroupName,
        ttl: Duration,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let _: Value = redis::cmd("SET")
            .arg(keys.heartbeat(group))
            .arg("1")
            .arg("PX")
            .arg(millis(ttl).max(1))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn remove_orphan_broadcast_groups(&self, key: &StreamKey) -> Result<Vec<String>> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.broadcast())
            .query_async(&mut conn)
            .await?;
        let mut removed = Vec::new();
        for name in names {
            let Ok(group) = GroupName::new(name.clone()) else {
                continue;
            };
            if self.remove_group(&mut conn, key, &group, true).await? {
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions() {
        assert_eq!(start_id(&StartFrom::New).ok().as_deref(), Some("$"));
        assert_eq!(start_id(&StartFrom::Beginning).ok().as_deref(), Some("0"));
        assert_eq!(
            start_id(&StartFrom::After("12-3".into())).ok().as_deref(),
            Some("12-3")
        );
        assert!(start_id(&StartFrom::After("nope".into())).is_err());
    }
}
