//! `topics`, `topic show`, `pending`, `trim`, `group delete`, `consumer delete`.

use std::time::Duration;

use clap::Subcommand;
use rivulet::TopicOptions;
use rivulet::admin::{GroupInfo, TopicInfo};
use serde_json::{Value, json};

use super::Ctx;
use super::render::{Table, age_ms, count, progress};
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// A topic's sizes, groups and consumers.
    Show {
        /// The topic.
        topic: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Delete a group with its pending list and retry lane. Refused while it has
    /// pending or undelivered entries, unless --force.
    Delete {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// Delete even if entries would be lost for the group.
        #[arg(long)]
        force: bool,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConsumerCommand {
    /// Delete a consumer of a stopped process; its pending entries are handed back to
    /// the group first.
    Delete {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The consumer.
        consumer: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

fn group_json(g: &GroupInfo) -> Value {
    json!({
        "group": g.group.as_str(),
        "pending": g.pending,
        "lag": g.lag,
        "oldest_pending_idle_ms": g.oldest_pending_idle_ms,
        "last_delivered": g.last_delivered.as_ref().map(|e| e.as_str()),
        "consumers": g.consumers.iter().map(|c| json!({
            "consumer": c.consumer.as_str(),
            "pending": c.pending,
            "idle_ms": c.idle_ms,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn topic_json(t: &TopicInfo) -> Value {
    json!({
        "topic": t.topic.as_str(),
        "length": t.length,
        "retry_scheduled": t.retry_scheduled,
        "dead_letters": t.dead_letters,
        "pending": t.pending(),
        "max_lag": t.max_lag(),
        "groups": t.groups.iter().map(group_json).collect::<Vec<_>>(),
    })
}

fn lag(g: &GroupInfo) -> String {
    g.lag.map_or_else(|| "?".into(), count)
}

pub(crate) async fn list(ctx: &Ctx, offset: usize, limit: usize) -> Result<(), CliError> {
    let page = ctx.admin.topics(offset, limit).await?;
    let doc = json!({
        "topics": page.topics.iter().map(topic_json).collect::<Vec<_>>(),
        "total": page.total,
        "next": page.next,
    });
    ctx.print(doc, || {
        let mut t = Table::new(&[
            "TOPIC",
            "LENGTH",
            "GROUPS",
            "MAX LAG",
            "PENDING",
            "OLDEST PENDING",
            "RETRIES",
            "DEAD",
        ]);
        for ti in &page.topics {
            let oldest = ti
                .groups
                .iter()
                .filter_map(|g| g.oldest_pending_idle_ms)
                .max();
            t.row(vec![
                ti.topic.to_string(),
                count(ti.length),
                ti.groups.len().to_string(),
                count(ti.max_lag()),
                count(ti.pending()),
                age_ms(oldest),
                count(ti.retry_scheduled),
                count(ti.dead_letters),
            ]);
        }
        let mut out = if t.is_empty() {
            "No topics.\n".to_owned()
        } else {
            t.render()
        };
        if let Some(next) = page.next {
            out.push_str(&format!(
                "({} of {} topics; next page: --offset {next})\n",
                page.topics.len(),
                page.total
            ));
        }
        out
    });
    Ok(())
}

pub(crate) async fn topic(ctx: &Ctx, c: TopicCommand) -> Result<(), CliError> {
    let TopicCommand::Show { topic } = c;
    let info = ctx.admin.topic(&topic).await?;
    ctx.print(topic_json(&info), || {
        let mut out = format!(
            "topic {}: {} entries, {} retries scheduled, {} dead letters\n\n",
            info.topic,
            count(info.length),
            count(info.retry_scheduled),
            count(info.dead_letters)
        );
        if info.groups.is_empty() {
            out.push_str("No groups.\n");
            return out;
        }
        let mut t = Table::new(&[
            "GROUP",
            "CONSUMER",
            "PENDING",
            "LAG",
            "IDLE",
            "OLDEST PENDING",
        ]);
        for g in &info.groups {
            t.row(vec![
                g.group.to_string(),
                match g.consumers.len() {
                    1 => "(1 consumer)".to_owned(),
                    n => format!("({n} consumers)"),
                },
                count(g.pending),
                lag(g),
                "-".into(),
                age_ms(g.oldest_pending_idle_ms),
            ]);
            for c in &g.consumers {
                t.row(vec![
                    String::new(),
                    c.consumer.to_string(),
                    count(c.pending),
                    String::new(),
                    age_ms(Some(c.idle_ms)),
                    String::new(),
                ]);
            }
        }
        out.push_str(&t.render());
        out
    });
    Ok(())
}

pub(crate) async fn pending(
    ctx: &Ctx,
    topic: &str,
    group: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(), CliError> {
    let page = ctx.admin.pending(topic, group, cursor, limit).await?;
    let doc = json!({
        "topic": topic,
        "group": group,
        "entries": page.entries.iter().map(|e| json!({
            "id": e.id.as_str(),
            "log": e.log.as_str(),
            "consumer": e.consumer.as_str(),
            "idle_ms": e.idle_ms,
            "deliveries": e.deliveries,
        })).collect::<Vec<_>>(),
        "next": page.next,
    });
    ctx.print(doc, || {
        let mut t = Table::new(&["ID", "LOG", "CONSUMER", "IDLE", "DELIVERIES"]);
        for e in &page.entries {
            t.row(vec![
                e.id.to_string(),
                e.log.as_str().replace('_', " "),
                e.consumer.to_string(),
                age_ms(Some(e.idle_ms)),
                e.deliveries.to_string(),
            ]);
        }
        let mut out = if t.is_empty() {
            format!("Nothing pending in group {group} of {topic}.\n")
        } else {
            t.render()
        };
        if let Some(next) = &page.next {
            out.push_str(&format!("(next page: --cursor {next})\n"));
        }
        out
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn trim(
    ctx: &Ctx,
    topic: &str,
    max_len: Option<u64>,
    max_age: Option<Duration>,
    safe: bool,
    dry_run: bool,
    yes: bool,
) -> Result<(), CliError> {
    let mut opts = TopicOptions::default().unbounded().safe(safe);
    if let Some(n) = max_len {
        opts = opts.max_len(n);
    }
    if let Some(a) = max_age {
        opts = opts.max_age(a);
    }
    if max_len.is_none() && max_age.is_none() {
        return Err(CliError::usage("trim needs --max-len or --max-age"));
    }
    let what = || {
        let mut limits = Vec::new();
        if let Some(n) = max_len {
            limits.push(format!("max length {n}"));
        }
        if let Some(a) = max_age {
            limits.push(format!("max age {}", age_ms(Some(a.as_millis() as u64))));
        }
        format!(
            "{} ({}{})",
            topic,
            limits.join(", "),
            if safe {
                ", safe mode"
            } else {
                ", UNSAFE: unhandled entries too"
            }
        )
    };
    let preview = ctx.admin.trim(topic, &opts, true).await?;
    let report = |removed: u64, kept: u64| {
        json!({
            "topic": topic,
            "removed": removed,
            "kept_unhandled": kept,
            "safe": safe,
        })
    };
    if dry_run || !yes {
        // Unsafe trimming is Redis's approximate XTRIM: it removes whole stream nodes,
        // so it may remove fewer than counted.
        let human = format!(
            "Trimming {} would remove {}{} entries and keep {} that some group has not handled.",
            what(),
            if safe { "" } else { "up to " },
            preview.removed,
            preview.kept_unacked
        );
        if dry_run {
            let mut doc = report(preview.removed, preview.kept_unacked);
            doc["dry_run"] = json!(true);
            ctx.print(doc, || format!("{human}\n(dry run: nothing was removed)\n"));
            return Ok(());
        }
        return ctx.needs_yes(report(preview.removed, preview.kept_unacked), human);
    }
    let bar = progress(ctx.json, None, "trimming");
    let done = ctx.admin.trim(topic, &opts, false).await;
    bar.finish_and_clear();
    let done = done?;
    ctx.print(report(done.removed, done.kept_unacked), || {
        format!(
            "Trimmed {}: removed {} entries, kept {} that some group has not handled.\n",
            what(),
            done.removed,
            done.kept_unacked
        )
    });
    Ok(())
}

pub(crate) async fn group(ctx: &Ctx, c: GroupCommand) -> Result<(), CliError> {
    let GroupCommand::Delete {
        topic,
        group,
        force,
        yes,
    } = c;
    if !yes {
        let info = ctx.admin.topic(&topic).await?;
        let Some(g) = info.groups.iter().find(|g| g.group.as_str() == group) else {
            return Err(CliError::not_found(format!(
                "group {group:?} of topic {topic:?} does not exist"
            )));
        };
        let lag = g.lag.unwrap_or(0);
        let loses = g.pending > 0 || lag > 0;
        let human = format!(
            "Deleting group {group} of {topic} would drop its {} pending and {} undelivered \
             entries (for this group only){}.",
            g.pending,
            lag,
            if loses && !force {
                "; it is refused without --force"
            } else {
                ""
            }
        );
        return ctx.needs_yes(
            json!({"topic": topic, "group": group, "pending": g.pending, "lag": lag, "force": force}),
            human,
        );
    }
    let done = ctx.admin.delete_group(&topic, &group, force).await?;
    ctx.print(
        json!({"topic": topic, "group": group, "deleted": true, "pending": done.pending, "lag": done.lag}),
        || format!("Deleted group {group} of {topic}.\n"),
    );
    Ok(())
}

pub(crate) async fn consumer(ctx: &Ctx, c: ConsumerCommand) -> Result<(), CliError> {
    let ConsumerCommand::Delete {
        topic,
        group,
        consumer,
        yes,
    } = c;
    if !yes {
        let info = ctx.admin.topic(&topic).await?;
        let held = info
            .groups
            .iter()
            .find(|g| g.group.as_str() == group)
            .and_then(|g| g.consumers.iter().find(|c| c.consumer.as_str() == consumer));
        let Some(held) = held else {
            return Err(CliError::not_found(format!(
                "consumer {consumer:?} of group {group:?} of topic {topic:?} does not exist"
            )));
        };
        return ctx.needs_yes(
            json!({"topic": topic, "group": group, "consumer": consumer, "pending": held.pending}),
            format!(
                "Deleting consumer {consumer} of group {group} would first hand its {} pending \
                 entries back to the group.",
                held.pending
            ),
        );
    }
    let done = ctx.admin.delete_consumer(&topic, &group, &consumer).await?;
    ctx.print(
        json!({"topic": topic, "group": group, "consumer": consumer, "deleted": true, "handed_back": done.handed_back}),
        || {
            format!(
                "Deleted consumer {consumer} of group {group}; {} entries handed back to the group.\n",
                done.handed_back
            )
        },
    );
    Ok(())
}
