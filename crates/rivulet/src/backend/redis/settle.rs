//! Settling entries: ack (plain `XACK`s), retry later, requeue and dead-letter (each one
//! atomic script), and moving due retries into lanes (dead-lettering, after a grace
//! period, those of groups that are gone).

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::RedisBackend;
use super::conn::{check_value, evalsha, pipeline_with_scripts};
use super::keys::LogKeys;
use super::reply;
use super::scripts::SCRIPTS;
use super::wire::{self, dead_letter_fields, message_fields, retry_member};
use crate::backend::{EntryRef, Lane, RetryLater, RetrySweep, Settling, StreamKey};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::Result;
use crate::name::GroupName;

/// Where an entry lives: the stream key, and whether it is the group's lane.
pub(super) fn source(keys: &LogKeys, group: &GroupName, entry: &EntryRef) -> (String, bool) {
    match entry.lane {
        Lane::Main => (keys.stream.clone(), false),
        Lane::Retry => (keys.lane(group.as_str()), true),
    }
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Adds the commands that settle `entries` as handled to `pipe`: one `XACK` for the
/// topic's entries, `XACK` + `XDEL` for the group's lane entries (only this group reads
/// its lane; the `XDEL` is clean-up, the `XACK` is what settles). Returns how many
/// commands it added.
pub(super) fn push_acks(
    pipe: &mut redis::Pipeline,
    stream: &str,
    lane: &str,
    group: &GroupName,
    entries: &[EntryRef],
) -> usize {
    let ids = |which: Lane| -> Vec<&str> {
        entries
            .iter()
            .filter(|e| e.lane == which)
            .map(|e| e.id.as_str())
            .collect()
    };
    let (main, in_lane) = (ids(Lane::Main), ids(Lane::Retry));
    let mut added = 0;
    if !main.is_empty() {
        pipe.cmd("XACK").arg(stream).arg(group.as_str()).arg(&main);
        added += 1;
    }
    if !in_lane.is_empty() {
        pipe.cmd("XACK").arg(lane).arg(group.as_str()).arg(&in_lane);
        pipe.cmd("XDEL").arg(lane).arg(&in_lane);
        added += 2;
    }
    added
}

impl RedisBackend {
    /// The `EVALSHA` that settles `retry.entry` and schedules `retry.next` at its due
    /// time, for a pipeline. A retry already due skips the retry set and the mover: it
    /// is appended straight to the group's lane, in the same atomic step.
    pub(super) fn retry_later_cmd(
        &self,
        key: &StreamKey,
        group: &GroupName,
        retry: &RetryLater,
    ) -> redis::Cmd {
        let keys = self.log_keys(key);
        let (src, is_lane) = source(&keys, group, &retry.entry);
        let fields = message_fields(&retry.next, true);
        let generations = keys.generations();
        if retry.due_ms <= crate::message::now_ms() {
            let lane = keys.lane(group.as_str());
            let mut cmd = evalsha(
                &SCRIPTS.settle_append,
                &[src.as_str(), lane.as_str(), generations.as_str()],
            );
            cmd.arg(group.as_str())
                .arg(retry.entry.id.as_str())
                .arg(flag(is_lane))
                .arg(retry.generation);
            for f in &fields {
                cmd.arg(f.as_ref());
            }
            return cmd;
        }
        let retry_key = keys.retry();
        let mut cmd = evalsha(
            &SCRIPTS.retry_later,
            &[src.as_str(), retry_key.as_str(), generations.as_str()],
        );
        cmd.arg(group.as_str())
            .arg(retry.entry.id.as_str())
            .arg(flag(is_lane))
            .arg(retry.due_ms)
            .arg(retry_member(group, &fields))
            .arg(retry.generation);
        cmd
    }

    /// Settles `entry` (delivered by group incarnation `generation`) and appends
    /// `fields` to `target` in one step (requeue into the group's lane, or dead-letter).
    pub(super) async fn settle_append(
        &self,
        keys: &LogKeys,
        group: &GroupName,
        entry: &EntryRef,
        generation: u64,
        target: &str,
        fields: &[bytes::Bytes],
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let (src, is_lane) = source(keys, group, entry);
        let mut inv = SCRIPTS.settle_append.prepare_invoke();
        inv.key(&src)
            .key(target)
            .key(keys.generations())
            .arg(group.as_str())
            .arg(entry.id.as_str())
            .arg(flag(is_lane))
            .arg(generation);
        for f in fields {
            inv.arg(f.as_ref());
        }
        let _: Value = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Dead-letters scheduled retries of groups that are gone (reason `group_gone`).
    async fn dead_letter_orphans(
        &self,
        conn: &mut super::conn::Conn,
        key: &StreamKey,
        keys: &LogKeys,
        members: &[Vec<u8>],
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<usize> {
        let dead_letters = self.topic_keys(&key.topic).dead_letters();
        let mut done = 0;
        for member in members {
            let (fields, dead) = match wire::parse_retry_member(member) {
                Some((group, fields)) => {
                    let raw = super::reply::RawEntry {
                        id: "0-0".to_owned(),
                        fields: fields
                            .chunks(2)
                            .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
                            .collect(),
                    };
                    let env = match wire::decode_message(&raw, usize::MAX) {
                        crate::backend::Record::Message(e) => e,
                        crate::backend::Record::Malformed { envelope, .. } => envelope,
                        crate::backend::Record::DeadLetter(d) => wire::envelope_of(&d),
                    };
                    let dead = DeadLetter {
                        id: crate::message::EntryId(String::new()),
                        topic: key.topic.clone(),
                        error: format!(
                            "group {group} no longer exists; the retry waited {grace_ms} ms for it"
                        ),
                        group,
                        message_id: env.message_id,
                        original_entry_id: crate::message::EntryId(String::new()),
                        payload: env.payload,
                        headers: env.headers,
                        attempts: env.attempt.saturating_sub(1),
                        reason: DeadLetterReason::GroupGone,
                        published_at_ms: env.published_at_ms,
                        dead_at_ms: now_ms,
                    };
                    (dead_letter_fields(&dead), dead)
                }
                None => {
                    tracing::error!(topic = %key.topic, "a scheduled retry is not decodable; it stays in the retry set");
                    continue;
                }
            };
            let mut inv = SCRIPTS.retry_dead_letter.prepare_invoke();
            inv.key(keys.retry())
                .key(&dead_letters)
                .arg(member.as_slice());
            for f in &fields {
                inv.arg(f.as_ref());
            }
            let n: i64 = inv.invoke_async(conn).await?;
            if n == 1 {
                tracing::warn!(topic = %key.topic, group = %dead.group, message_id = %dead.message_id, "dead-lettered a retry of a group that no longer exists");
                done += 1;
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl Settling for RedisBackend {
    async fn ack(&self, key: &StreamKey, group: &GroupName, entries: &[EntryRef]) -> Result<()> {
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if push_acks(&mut pipe, &keys.stream, &lane, group, entries) == 0 {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let values: Vec<Value> = pipe.query_async(&mut conn).await?;
        for v in values {
            match v {
                // The group is gone: nothing is pending any more, so nothing is lost
                // by not acknowledging (a re-created group starts after its last read).
                Value::ServerError(e) if e.code() == "NOGROUP" => {}
                other => {
                    check_value(other)?;
                }
            }
        }
        Ok(())
    }

    async fn retry_later(
        &self,
        key: &StreamKey,
        group: &GroupName,
        retry: &RetryLater,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .add_command(self.retry_later_cmd(key, group, retry));
        let mut conn = self.conn()?;
        let scripts = [&SCRIPTS.retry_later, &SCRIPTS.settle_append];
        let values = pipeline_with_scripts(&mut conn, &pipe, &scripts).await?;
        check_value(values.into_iter().next().unwrap_or(Value::Nil))?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        generation: u64,
        dead: &DeadLetter,
    ) -> Result<()> {
        let keys = self.log_keys(key);
        // A dead letter of a dead-letter consumer goes back to the same queue (as in the
        // memory backend): it is a new, well-formed dead letter there.
        let target = self.topic_keys(&key.topic).dead_letters();
        let fields = dead_letter_fields(dead);
        self.settle_append(&keys, group, entry, generation, &target, &fields)
            .await
    }

    async fn move_due_retries(
        &self,
        key: &StreamKey,
        now_ms: u64,
        limit: usize,
        grace: Duration,
    ) -> Result<RetrySweep> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        // Known groups: those on the topic and those registered (a registered group
        // deleted outside rivulet comes back as soon as a reader notices).
        let mut groups = self.group_names(&mut conn, &keys.stream).await?;
        let registered: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.groups())
            .query_async(&mut conn)
            .await?;
        for g in registered {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let lanes: Vec<String> = groups.iter().map(|g| keys.lane(g)).collect();
        let grace_ms = super::millis(grace);
        let mut inv = SCRIPTS.move_retries.prepare_invoke();
        inv.key(keys.retry());
        for lane in &lanes {
            inv.key(lane);
        }
        inv.arg(now_ms).arg(limit).arg(grace_ms);
        for g in &groups {
            inv.arg(g);
        }
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = reply::array(&v).ok_or_else(|| reply::unexpected("move_retries", &v))?;
        let moved = items.first().and_then(reply::uint).unwrap_or(0);
        let waiting = items.get(1).and_then(reply::uint).unwrap_or(0);
        let gone: Vec<Vec<u8>> = items
            .get(2)
            .and_then(reply::array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| reply::bytes(v).map(<[u8]>::to_vec))
            .collect();
        let dead_lettered = if gone.is_empty() {
            0
        } else {
            self.dead_letter_orphans(&mut conn, key, &keys, &gone, now_ms, grace_ms)
                .await?
        };
        let next_due_ms = items.get(3).and_then(score_ms);
        Ok(RetrySweep {
            moved: usize::try_from(moved).unwrap_or(usize::MAX),
            dead_lettered,
            waiting: usize::try_from(waiting).unwrap_or(usize::MAX),
            next_due_ms,
        })
    }
}

/// A sorted-set score (an integer or a float in text) as whole milliseconds.
fn score_ms(v: &Value) -> Option<u64> {
    if let Some(n) = reply::uint(v) {
        return Some(n);
    }
    let text = match v {
        Value::Double(d) => return (d.is_finite() && *d >= 0.0).then_some(*d as u64),
        other => reply::string(other)?,
    };
    let f: f64 = text.trim().parse().ok()?;
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse() {
        assert_eq!(
            score_ms(&Value::BulkString(b"1700000000123".to_vec())),
            Some(1_700_000_000_123)
        );
        assert_eq!(score_ms(&Value::BulkString(b"1.5e3".to_vec())), Some(1500));
        assert_eq!(score_ms(&Value::Double(12.0)), Some(12));
        assert_eq!(score_ms(&Value::Nil), None);
        assert_eq!(score_ms(&Value::BulkString(b"nope".to_vec())), None);
    }
}
