//! Crash recovery and long handlers: reclaim (B-REC-1), lease extension (B-REC-2) and
//! hand-back at drain (B-REC-3).

use std::collections::HashSet;
use std::time::Duration;

use redis::Value;

use super::conn::check_value;
use super::reader::decode_entry;
use super::reply;
use super::scripts::SCRIPTS;
use super::{RedisBackend, millis};
use crate::backend::{EntryRef, Lane, ReadEntry, Reclaimed, StreamKey, StreamKind};
use crate::error::Result;
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName};

/// Pending entries handed back per script call.
const HAND_BACK_PAGE: usize = 100;

fn nogroup<T>(r: redis::RedisResult<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if reply::is_nogroup(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl RedisBackend {
    pub(super) async fn reclaim_idle(
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
            let (entries, gone_in_list) = claimed;
            for (i, raw) in entries.iter().enumerate() {
                let record = decode_entry(key, which, raw, self.inner.max_payload);
                out.entries.push(ReadEntry {
                    entry: EntryRef {
                        lane: which,
                        id: EntryId(raw.id.clone()),
                    },
                    record,
                    delivery_count: counts.get(i).copied().unwrap_or(1).max(1),
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

    pub(super) async fn extend(
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
        for (stream, which) in [
            (keys.stream.as_str(), Lane::Main),
            (lane.as_str(), Lane::Retry),
        ] {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.lane == which)
                .map(|e| e.id.as_str())
                .collect();
            if ids.is_empty() {
                continue;
            }
            // JUSTID: resets the idle time without counting a delivery.
            pipe.cmd("XCLAIM")
                .arg(stream)
                .arg(group.as_str())
                .arg(consumer.as_str())
                .arg(0)
                .arg(&ids)
                .arg("JUSTID");
        }
        let values: Vec<Value> = pipe.query_async(&mut conn).await?;
        for v in values {
            match v {
                // The group is gone: there is no lease left to extend.
                Value::ServerError(e) if e.code() == "NOGROUP" => {}
                other => {
                    check_value(other)?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn hand_back_pending(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        keep: &[EntryRef],
    ) -> Result<usize> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let keep: HashSet<&EntryRef> = keep.iter().collect();
        let mut sources = vec![(lane.clone(), Lane::Retry)];
        // Dead letters are never copied into lanes (as in the memory backend): pending
        // entries of a dead-letter queue stay pending and are reclaimed after min_idle.
        if key.kind == StreamKind::Main {
            sources.push((keys.stream.clone(), Lane::Main));
        }
        let mut handed = 0usize;
        for (stream, which) in sources {
            let mut start = "-".to_owned();
            loop {
                let r: redis::RedisResult<Value> = redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(group.as_str())
                    .arg(&start)
                    .arg("+")
                    .arg(HAND_BACK_PAGE)
                    .arg(consumer.as_str())
                    .query_async(&mut conn)
                    .await;
                let Some(v) = nogroup(r)? else {
                    break;
                };
                let ids: Vec<String> = reply::array(&v)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|p| reply::array(p)?.first().and_then(reply::string))
                    .collect();
                let Some(last) = ids.last().cloned() else {
                    break;
                };
                let mine: Vec<&String> = ids
                    .iter()
                    .filter(|id| {
                        !keep.contains(&EntryRef {
                            lane: which,
                            id: EntryId((*id).clone()),
                        })
                    })
                    .collect();
                if !mine.is_empty() {
                    let n: u64 = SCRIPTS
                        .hand_back
                        .key(&stream)
                        .key(&lane)
                        .arg(group.as_str())
                        .arg(if which == Lane::Retry { "1" } else { "0" })
                        .arg(&mine)
                        .invoke_async(&mut conn)
                        .await?;
                    handed += usize::try_from(n).unwrap_or(0);
                }
                if ids.len() < HAND_BACK_PAGE {
                    break;
                }
                start = format!("({last}");
            }
        }
        Ok(handed)
    }
}
