//! Settling entries: ack (plain `XACK`s), retry later, requeue and dead-letter (each one
//! atomic script), and moving due retries into lanes.

use redis::Value;

use super::RedisBackend;
use super::conn::{check_value, pipeline_with_scripts};
use super::keys::LogKeys;
use super::reply;
use super::scripts::SCRIPTS;
use super::wire::{dead_letter_fields, message_fields, retry_member};
use crate::backend::{EntryRef, Lane, RetrySweep, StreamKey};
use crate::dead_letter::DeadLetter;
use crate::error::Result;
use crate::message::Envelope;
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
    pub(super) async fn ack_entries(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entries: &[EntryRef],
    ) -> Result<()> {
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let mut pipe = redis::pipe();
        if push_acks(&mut pipe, &keys.stream, &lane, group, entries) == 0 {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let _: Value = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    pub(super) async fn schedule_retry(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        next: &Envelope,
        due_ms: u64,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .add_command(self.retry_later_cmd(key, group, entry, next, due_ms));
        let mut conn = self.conn()?;
        let scripts = [&SCRIPTS.retry_later, &SCRIPTS.settle_append];
        let values = pipeline_with_scripts(&mut conn, &pipe, &scripts).await?;
        check_value(values.into_iter().next().unwrap_or(Value::Nil))?;
        Ok(())
    }

    /// The `EVALSHA` that settles `entry` and schedules `next` at `due_ms`, for a
    /// pipeline. A retry already due skips the retry set and the mover: it is appended
    /// straight to the group's lane, in the same atomic step.
    pub(super) fn retry_later_cmd(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        next: &Envelope,
        due_ms: u64,
    ) -> redis::Cmd {
        let keys = self.log_keys(key);
        let (src, is_lane) = source(&keys, group, entry);
        let fields = message_fields(next, true);
        if due_ms <= crate::message::now_ms() {
            let lane = keys.lane(group.as_str());
            let mut cmd =
                super::conn::evalsha(&SCRIPTS.settle_append, &[src.as_str(), lane.as_str()]);
            cmd.arg(group.as_str())
                .arg(entry.id.as_str())
                .arg(flag(is_lane));
            for f in &fields {
                cmd.arg(f.as_ref());
            }
            return cmd;
        }
        let retry_key = keys.retry();
        let mut cmd =
            super::conn::evalsha(&SCRIPTS.retry_later, &[src.as_str(), retry_key.as_str()]);
        cmd.arg(group.as_str())
            .arg(entry.id.as_str())
            .arg(flag(is_lane))
            .arg(due_ms)
            .arg(retry_member(group, &fields));
        cmd
    }

    pub(super) async fn dead_letter_entry(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        dead: &DeadLetter,
    ) -> Result<()> {
        let keys = self.log_keys(key);
        // A dead letter of a dead-letter consumer goes back to the same queue (as in the
        // memory backend): it is a new, well-formed dead letter there.
        let dlq = self.topic_keys(&key.topic).dlq();
        let fields = dead_letter_fields(dead);
        self.settle_append(&keys, group, entry, &dlq, &fields).await
    }

    /// Settles `entry` and appends `fields` to `target` in one step (requeue into the
    /// group's lane, or dead-letter).
    pub(super) async fn settle_append(
        &self,
        keys: &LogKeys,
        group: &GroupName,
        entry: &EntryRef,
        target: &str,
        fields: &[bytes::Bytes],
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let (src, is_lane) = source(keys, group, entry);
        let mut inv = SCRIPTS.settle_append.prepare_invoke();
        inv.key(&src)
            .key(target)
            .arg(group.as_str())
            .arg(entry.id.as_str())
            .arg(flag(is_lane));
        for f in fields {
            inv.arg(f.as_ref());
        }
        let _: Value = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    pub(super) async fn sweep_retries(
        &self,
        key: &StreamKey,
        now_ms: u64,
        limit: usize,
    ) -> Result<RetrySweep> {
        let mut conn = self.conn()?;
        let keys = self.log_keys(key);
        let groups = self.group_names(&mut conn, &keys.stream).await?;
        let lanes: Vec<String> = groups.iter().map(|g| keys.lane(g)).collect();
        let mut inv = SCRIPTS.move_retries.prepare_invoke();
        inv.key(keys.retry());
        for lane in &lanes {
            inv.key(lane);
        }
        inv.arg(now_ms).arg(limit);
        for g in &groups {
            inv.arg(g);
        }
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = reply::array(&v).ok_or_else(|| reply::unexpected("move_retries", &v))?;
        let moved = items.first().and_then(reply::uint).unwrap_or(0);
        let dropped = items.get(1).and_then(reply::uint).unwrap_or(0);
        if dropped > 0 {
            tracing::warn!(
                topic = %key.topic,
                dropped,
                "dropped scheduled retries of groups that no longer exist"
            );
            metrics::counter!("rivulet_retries_dropped_total", "topic" => key.topic.to_string())
                .increment(dropped);
        }
        let next_due_ms = items.get(2).and_then(score_ms);
        Ok(RetrySweep {
            moved: usize::try_from(moved).unwrap_or(usize::MAX),
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
