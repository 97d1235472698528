//! Crash recovery and long handlers: reclaim (B-REC-1), keep-alive (B-REC-2) and
//! hand-back at drain (B-REC-3).

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::conn::{check_value, evalsha, pipeline_with_scripts};
use super::reader::decode_entry;
use super::reply;
use super::scripts::SCRIPTS;
use super::{RedisBackend, millis};
use crate::backend::{EntryRef, Lane, ReadEntry, Reclaimed, Recovery, StreamKey, StreamKind};
use crate::error::Result;
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName};

/// Pending entries handed back per script call.
const HAND_BACK_PAGE: usize = 100;
/// Entries refreshed per keep-alive script call.
const KEEP_ALIVE_PAGE: usize = 256;

/// A group incarnation as Redis returns it (a bulk string or an integer).
pub(super) fn generation_of(v: &Value) -> Option<u64> {
    reply::uint(v).or_else(|| reply::string(v)?.parse().ok())
}

fn nogroup<T>(r: redis::RedisResult<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if reply::is_nogroup(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl Recovery for RedisBackend {
    async fn reclaim(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        count: usize,
    ) -> Result<Reclaimed> {
        let mut out = Reclaimed::default();
        if count == 0 {
            return Ok(out);
        }
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        for (stream, which) in [
            (lane.as_str(), Lane::Retry),
            (keys.stream.as_str(), Lane::Main),
        ] {
            let want = count.saturating_sub(out.entries.len() + out.missing.len());
            if want == 0 {
                break;
            }
            let r: redis::RedisResult<Value> = SCRIPTS
                .reclaim
                .key(stream)
                .key(keys.generations())
                .arg(group.as_str())
                .arg(consumer.as_str())
                .arg(millis(min_idle))
                .arg(want)
                .invoke_async(&mut conn)
                .await;
            let Some(v) = nogroup(r)? else {
                continue;
            };
            let parts = reply::array(&v).unwrap_or(&[]);
            let claimed = parts.first().map(reply::entries).unwrap_or_default();
            let gone_ids: Vec<String> = parts
                .get(1)
                .and_then(reply::array)
                .unwrap_or(&[])
                .iter()
                .filter_map(reply::string)
                .collect();
            let counts: Vec<u64> = parts
                .get(2)
                .and_then(reply::array)
                .unwrap_or(&[])
                .iter()
                .map(|c| reply::uint(c).unwrap_or(1))
                .collect();
            let generation = parts.get(3).and_then(generation_of).unwrap_or(0);
            let (entries, gone_in_list) = claimed;
            for (i, raw) in entries.iter().enumerate() {
                let record = decode_entry(key, which, raw);
                out.entries.push(ReadEntry {
                    entry: EntryRef {
                        lane: which,
                        id: EntryId(raw.id.clone()),
                    },
                    record,
                    delivery_count: counts.get(i).copied().unwrap_or(1).max(1),
                    generation,
                });
            }
            for id in gone_ids.into_iter().chain(gone_in_list) {
                out.missing.push(EntryRef {
                    lane: which,
                    id: EntryId(id),
                });
            }
        }
        Ok(out)
    }

    async fn keep_alive(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut cmds = 0;
        for (stream, which) in [
            (keys.stream.as_str(), Lane::Main),
            (lane.as_str(), Lane::Retry),
        ] {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.lane == which)
                .map(|e| e.id.as_str())
                .collect();
            for chunk in ids.chunks(KEEP_ALIVE_PAGE) {
                let mut cmd = evalsha(&SCRIPTS.keep_alive, &[stream]);
                cmd.arg(group.as_str()).arg(consumer.as_str()).arg(chunk);
                pipe.add_command(cmd);
                cmds += 1;
            }
        }
        if cmds == 0 {
            return Ok(());
        }
        let values = pipeline_with_scripts(&mut conn, &pipe, &[&SCRIPTS.keep_alive]).await?;
        for v in values {
            match v {
                // The group is gone: there is nothing left to keep alive.
                Value::ServerError(e) if e.code() == "NOGROUP" => {}
                other => {
                    check_value(other)?;
                }
            }
        }
        Ok(())
    }

    async fn hand_back(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<usize> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let mut sources = vec![(lane.clone(), Lane::Retry)];
        // Dead letters are never copied into lanes (as in the memory backend): pending
        // entries of a dead-letter queue stay pending and are reclaimed after min_idle.
        if key.kind == StreamKind::Main {
            sources.push((keys.stream.clone(), Lane::Main));
        }
        let mut handed = 0usize;
        for (stream, which) in sources {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.lane == which)
                .map(|e| e.id.as_str())
                .collect();
            for chunk in ids.chunks(HAND_BACK_PAGE) {
                let r: redis::RedisResult<u64> = SCRIPTS
                    .hand_back
                    .key(&stream)
                    .key(&lane)
                    .arg(group.as_str())
                    .arg(if which == Lane::Retry { "1" } else { "0" })
                    .arg(consumer.as_str())
                    .arg(chunk)
                    .invoke_async(&mut conn)
                    .await;
                let Some(n) = nogroup(r)? else {
                    break;
                };
                handed += usize::try_from(n).unwrap_or(0);
            }
        }
        Ok(handed)
    }

    async fn hand_back_orphans(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entries: &[(EntryRef, u64)],
    ) -> Result<usize> {
        if key.kind != StreamKind::Main {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        // Lane entries stay in the lane, pending in its own group: only topic entries
        // can be orphaned by a re-created group.
        let main: Vec<&(EntryRef, u64)> = entries
            .iter()
            .filter(|(e, _)| e.lane == Lane::Main)
            .collect();
        let mut copied = 0usize;
        for chunk in main.chunks(HAND_BACK_PAGE) {
            let mut inv = SCRIPTS.hand_back_orphans.prepare_invoke();
            inv.key(&keys.stream)
                .key(&lane)
                .key(keys.generations())
                .arg(group.as_str());
            for (e, generation) in chunk {
                inv.arg(e.id.as_str()).arg(*generation);
            }
            let n: u64 = inv.invoke_async(&mut conn).await?;
            copied += usize::try_from(n).unwrap_or(0);
        }
        Ok(copied)
    }

    async fn pending_of(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Vec<EntryRef>> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let mut out = Vec::new();
        for (stream, which) in [
            (lane.as_str(), Lane::Retry),
            (keys.stream.as_str(), Lane::Main),
        ] {
            let want = limit.saturating_sub(out.len());
            if want == 0 {
                break;
            }
            let r: redis::RedisResult<Value> = redis::cmd("XPENDING")
                .arg(stream)
                .arg(group.as_str())
                .arg("-")
                .arg("+")
                .arg(want)
                .arg(consumer.as_str())
                .query_async(&mut conn)
                .await;
            let Some(v) = nogroup(r)? else {
                continue;
            };
            out.extend(
                reply::array(&v)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|p| reply::array(p)?.first().and_then(reply::string))
                    .map(|id| EntryRef {
                        lane: which,
                        id: EntryId(id),
                    }),
            );
        }
        Ok(out)
    }
}
