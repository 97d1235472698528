//! Retention (B-TRIM-1). In safe mode (the default) a script removes only entries below
//! the boundary no group still needs (see `lua/trim.lua`); otherwise plain approximate
//! `XTRIM`. The dead-letter queue is never trimmed.

use async_trait::async_trait;
use redis::Value;

use super::RedisBackend;
use super::reply;
use super::scripts::SCRIPTS;
use crate::backend::Retention;
use crate::error::Result;
use crate::message::now_ms;
use crate::name::TopicName;
use crate::topic::{TopicOptions, TrimReport};

/// Entries one script call scans at most.
const SCAN_BUDGET: u64 = 1_000;
/// Script calls one trim makes at most (so one trim removes at most ~1M entries; the
/// background trimmer continues on its next run).
const MAX_ROUNDS: usize = 1_000;

#[async_trait]
impl Retention for RedisBackend {
    async fn trim(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport> {
        self.apply_trim(topic, opts, false).await
    }

    async fn trim_dry_run(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport> {
        self.apply_trim(topic, opts, true).await
    }
}

impl RedisBackend {
    /// Trims, or with `dry_run` counts what a trim would do: the script then removes
    /// nothing and each call continues after the last entry the previous one scanned.
    async fn apply_trim(
        &self,
        topic: &TopicName,
        opts: &TopicOptions,
        dry_run: bool,
    ) -> Result<TrimReport> {
        let mut report = TrimReport::default();
        if opts.max_len.is_none() && opts.max_age.is_none() {
            return Ok(report);
        }
        let mut conn = self.conn()?;
        let stream = self.topic_keys(topic).stream();
        let cutoff = opts
            .max_age
            .map(|age| now_ms().saturating_sub(super::millis(age)));
        if !opts.safe && !dry_run {
            let mut pipe = redis::pipe();
            if let Some(n) = opts.max_len {
                pipe.cmd("XTRIM").arg(&stream).arg("MAXLEN").arg("~").arg(n);
            }
            if let Some(c) = cutoff {
                pipe.cmd("XTRIM").arg(&stream).arg("MINID").arg("~").arg(c);
            }
            let removed: Vec<u64> = pipe.query_async(&mut conn).await?;
            report.removed = removed.iter().sum();
            return Ok(report);
        }
        let max_len = opts
            .max_len
            .map_or_else(|| "-1".to_owned(), |n| n.to_string());
        let cutoff = cutoff.map_or_else(|| "-1".to_owned(), |c| c.to_string());
        // A dry run of an unsafe trim is a safe one that counts the kept entries as
        // removed: without safe mode nothing is kept.
        let mut last = String::new();
        for _ in 0..MAX_ROUNDS {
            let v: Value = SCRIPTS
                .trim
                .key(&stream)
                .arg(&max_len)
                .arg(&cutoff)
                .arg(SCAN_BUDGET)
                .arg(if dry_run { "1" } else { "0" })
                .arg(&last)
                .arg(report.removed)
                .invoke_async(&mut conn)
                .await?;
            let items = reply::array(&v).ok_or_else(|| reply::unexpected("trim", &v))?;
            report.removed += items.first().and_then(reply::uint).unwrap_or(0);
            report.kept_unacked = items.get(1).and_then(reply::uint).unwrap_or(0);
            last = items.get(3).and_then(reply::string).unwrap_or_default();
            if items.get(2).and_then(reply::uint) != Some(1) {
                break;
            }
        }
        if dry_run && !opts.safe {
            report.removed += report.kept_unacked;
            report.kept_unacked = 0;
        }
        if report.kept_unacked > 0 {
            tracing::debug!(
                topic = %topic,
                kept = report.kept_unacked,
                "retention kept entries some group has not acknowledged"
            );
        }
        Ok(report)
    }
}
