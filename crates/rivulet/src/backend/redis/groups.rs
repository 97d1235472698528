//! Group lifecycle: create (with the retry lane), destroy, broadcast heartbeats and
//! orphan cleanup (B-SUB-3).

use std::time::Duration;

use redis::Value;

use super::conn::Conn;
use super::reply;
use super::scripts::SCRIPTS;
use super::{RedisBackend, millis};
use crate::backend::StreamKey;
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

/// Creates `group` on `stream` at `start` (creating the stream too); an existing group
/// is left as it is.
pub(super) async fn create_on(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<()> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if reply::is_busygroup(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl RedisBackend {
    pub(super) async fn create_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        start: &StartFrom,
    ) -> Result<()> {
        let start = start_id(start)?;
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        // The lane first: a group that exists on the stream always has its lane, which
        // the retry mover relies on.
        create_on(&mut conn, &keys.lane(group.as_str()), group.as_str(), "0").await?;
        create_on(&mut conn, &keys.stream, group.as_str(), &start).await
    }

    /// Destroys a group (only when its heartbeat expired, with `only_orphan`).
    /// Returns whether it existed and was destroyed.
    pub(super) async fn remove_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        only_orphan: bool,
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let destroyed: i64 = SCRIPTS
            .destroy_group
            .key(&keys.stream)
            .key(keys.lane(group.as_str()))
            .key(keys.heartbeat(group))
            .arg(group.as_str())
            .arg(if only_orphan { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(destroyed == 1)
    }

    pub(super) async fn heartbeat(
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

    pub(super) async fn remove_orphans(
        &self,
        key: &StreamKey,
        base: &GroupName,
    ) -> Result<Vec<String>> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let prefix = format!("{base}__");
        let names = self.group_names(&mut conn, &keys.stream).await?;
        let mut removed = Vec::new();
        for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
            let Ok(group) = GroupName::new(name.clone()) else {
                continue;
            };
            if self.remove_group(key, &group, true).await? {
                removed.push(name);
            }
        }
        Ok(removed)
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
