//! `dead-letters list|show|replay|purge`.

use clap::{Args, Subcommand};
use rivulet::{DeadLetter, DeadLetterFilter, DeadLetterReason, EntryId, GroupName};
use serde_json::{Value, json};

use super::Ctx;
use super::render::{Table, count, now_ms, parse_duration, progress, since, size};
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// List a topic's dead letters, oldest first.
    List {
        /// The topic.
        topic: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this dead letter id (a previous page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// One dead letter with its payload and headers.
    Show {
        /// The topic.
        topic: String,
        /// The dead letter's id.
        id: String,
    },
    /// Deliver dead letters again to the group that gave up on them (as attempt 1):
    /// one by id, or those matching filters, or --all.
    Replay {
        /// The topic.
        topic: String,
        /// Replay only this dead letter.
        id: Option<String>,
        /// Replay every dead letter (matching the filters, if any).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many per second.
        #[arg(long, value_name = "PER_SECOND")]
        rate: Option<u32>,
        /// Really replay (needed for more than one).
        #[arg(long)]
        yes: bool,
    },
    /// Delete dead letters: those matching filters, or --all.
    Purge {
        /// The topic.
        topic: String,
        /// Delete every dead letter (matching the filters, if any).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters: by group, reason and time.
#[derive(Debug, Clone, Args)]
pub(crate) struct FilterArgs {
    /// Only the dead letters of this group.
    #[arg(long)]
    group: Option<String>,
    /// Only those with this reason (permanent, attempts, decode, deliveries, too_large,
    /// group_gone).
    #[arg(long)]
    reason: Option<String>,
    /// Only those dead-lettered within this long (e.g. 2h).
    #[arg(long, value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// Only those dead-lettered longer ago than this (e.g. 7d).
    #[arg(long, value_parser = parse_duration)]
    before: Option<std::time::Duration>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.group.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.before.is_none()
    }

    fn filter(&self) -> Result<DeadLetterFilter, CliError> {
        let mut f = DeadLetterFilter::default();
        if let Some(g) = &self.group {
            f = f.group(GroupName::new(g.as_str())?);
        }
        if let Some(r) = &self.reason {
            let reason: DeadLetterReason = r
                .parse()
                .map_err(|_| CliError::usage(format!("unknown reason {r:?} (permanent, attempts, decode, deliveries, too_large, group_gone)")))?;
            f = f.reason(reason);
        }
        let now = now_ms();
        if let Some(d) = self.since {
            f = f.dead_since_ms(now.saturating_sub(d.as_millis() as u64));
        }
        if let Some(d) = self.before {
            f = f.dead_before_ms(now.saturating_sub(d.as_millis() as u64));
        }
        Ok(f)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = &self.group {
            parts.push(format!("group {g}"));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason {r}"));
        }
        if let Some(d) = self.since {
            parts.push(format!(
                "dead within {}",
                super::render::age_ms(Some(d.as_millis() as u64))
            ));
        }
        if let Some(d) = self.before {
            parts.push(format!(
                "dead over {} ago",
                super::render::age_ms(Some(d.as_millis() as u64))
            ));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(", ")
        }
    }

    fn json(&self) -> Value {
        json!({
            "group": self.group,
            "reason": self.reason,
            "since_ms": self.since.map(|d| d.as_millis() as u64),
            "before_ms": self.before.map(|d| d.as_millis() as u64),
        })
    }
}

fn entry_id(s: &str) -> Result<EntryId, CliError> {
    Ok(EntryId::parse(s)?)
}

fn dead_json(d: &DeadLetter, with_payload: bool) -> Value {
    let mut v = json!({
        "id": d.id.as_str(),
        "group": d.group.as_str(),
        "message_id": d.message_id.as_str(),
        "original_entry_id": d.original_entry_id.as_str(),
        "attempts": d.attempts,
        "reason": d.reason.as_str(),
        "error": d.error,
        "published_at_ms": d.published_at_ms,
        "dead_at_ms": d.dead_at_ms,
        "payload_bytes": d.payload.len(),
    });
    if with_payload {
        v["payload"] = json!(String::from_utf8_lossy(&d.payload));
        v["headers"] = json!(d.headers);
    }
    v
}

pub(crate) async fn run(ctx: &Ctx, c: DeadLettersCommand) -> Result<(), CliError> {
    match c {
        DeadLettersCommand::List {
            topic,
            filter,
            limit,
            after,
        } => {
            let after = after.as_deref().map(entry_id).transpose()?;
            let page = ctx
                .admin
                .dead_letter_page(&topic, &filter.filter()?, after.as_ref(), limit)
                .await?;
            let total = ctx.admin.dead_letters(&topic)?.len().await?;
            let doc = json!({
                "topic": topic,
                "total": total,
                "dead_letters": page.dead_letters.iter().map(|d| dead_json(d, false)).collect::<Vec<_>>(),
                "next": page.next.as_ref().map(|n| n.as_str()),
            });
            ctx.print(doc, || {
                let mut t =
                    Table::new(&["ID", "GROUP", "REASON", "ATTEMPTS", "AGE", "SIZE", "ERROR"]);
                for d in &page.dead_letters {
                    let mut error = d.error.replace('\n', " ");
                    if error.chars().count() > 60 {
                        error = error.chars().take(57).collect::<String>() + "...";
                    }
                    t.row(vec![
                        d.id.to_string(),
                        d.group.to_string(),
                        d.reason.to_string(),
                        d.attempts.to_string(),
                        since(Some(d.dead_at_ms)),
                        size(d.payload.len()),
                        error,
                    ]);
                }
                let mut out = if t.is_empty() {
                    format!("No dead letters ({}) in {topic}.\n", filter.describe())
                } else {
                    t.render()
                };
                out.push_str(&format!(
                    "({} dead letters in {topic} in all)\n",
                    count(total)
                ));
                if let Some(n) = &page.next {
                    out.push_str(&format!("(next page: --after {n})\n"));
                }
                out
            });
            Ok(())
        }
        DeadLettersCommand::Show { topic, id } => {
            let id = entry_id(&id)?;
            let Some(d) = ctx.admin.dead_letters(&topic)?.get(&id).await? else {
                return Err(CliError::not_found(format!(
                    "no dead letter {id} in topic {topic:?}"
                )));
            };
            ctx.print(dead_json(&d, true), || {
                let mut out = String::new();
                let rows = [
                    ("id", d.id.to_string()),
                    ("group", d.group.to_string()),
                    ("message id", d.message_id.to_string()),
                    ("original entry", d.original_entry_id.to_string()),
                    ("reason", d.reason.to_string()),
                    ("attempts", d.attempts.to_string()),
                    ("error", d.error.clone()),
                    (
                        "published",
                        format!("{} ago", since(Some(d.published_at_ms))),
                    ),
                    ("dead", format!("{} ago", since(Some(d.dead_at_ms)))),
                    ("size", size(d.payload.len())),
                ];
                for (k, v) in rows {
                    out.push_str(&format!("{k:<15} {v}\n"));
                }
                for (k, v) in &d.headers {
                    out.push_str(&format!("header {k:<8} {v}\n"));
                }
                out.push_str(&format!(
                    "payload\n{}\n",
                    String::from_utf8_lossy(&d.payload)
                ));
                out
            });
            Ok(())
        }
        DeadLettersCommand::Replay {
            topic,
            id,
            all,
            filter,
            rate,
            yes,
        } => {
            if let Some(id) = id {
                if all || !filter.is_empty() {
                    return Err(CliError::usage(
                        "replay takes an id or --all/filters, not both",
                    ));
                }
                let id = entry_id(&id)?;
                let queue = ctx.admin.dead_letters(&topic)?;
                if !queue.replay(&id).await? {
                    return Err(CliError::not_found(format!(
                        "no dead letter {id} in topic {topic:?}"
                    )));
                }
                ctx.print(
                    json!({"topic": topic, "replayed": 1, "id": id.as_str()}),
                    || format!("Replayed dead letter {id} of {topic}.\n"),
                );
                return Ok(());
            }
            if !all && filter.is_empty() {
                return Err(CliError::usage(
                    "say which dead letters to replay: an id, filters (--group, --reason, --since, --before) or --all",
                ));
            }
            if rate == Some(0) {
                return Err(CliError::usage("--rate must be at least 1"));
            }
            let f = filter.filter()?;
            let total = ctx.admin.dead_letters(&topic)?.len().await?;
            if !yes {
                return ctx.needs_yes(
                    json!({"topic": topic, "action": "replay", "filter": filter.json(), "dead_letters_in_queue": total, "rate": rate}),
                    format!(
                        "Replaying dead letters of {topic} ({}) would deliver up to {total} messages again to their groups{}.",
                        filter.describe(),
                        rate.map_or(String::new(), |r| format!(", {r} per second"))
                    ),
                );
            }
            let bar = progress(ctx.json, Some(total), "replaying");
            let b = bar.clone();
            let n = ctx
                .admin
                .replay_dead_letters(&topic, &f, rate, &mut move |k| b.set_position(k))
                .await;
            bar.finish_and_clear();
            let n = n?;
            ctx.print(json!({"topic": topic, "replayed": n}), || {
                format!("Replayed {n} dead letters of {topic}.\n")
            });
            Ok(())
        }
        DeadLettersCommand::Purge {
            topic,
            all,
            filter,
            yes,
        } => {
            if !all && filter.is_empty() {
                return Err(CliError::usage(
                    "say which dead letters to purge: filters (--group, --reason, --since, --before) or --all",
                ));
            }
            let f = filter.filter()?;
            let total = ctx.admin.dead_letters(&topic)?.len().await?;
            if !yes {
                return ctx.needs_yes(
                    json!({"topic": topic, "action": "purge", "filter": filter.json(), "dead_letters_in_queue": total}),
                    format!(
                        "Purging dead letters of {topic} ({}) would delete up to {total} dead letters for good.",
                        filter.describe()
                    ),
                );
            }
            let bar = progress(ctx.json, Some(total), "purging");
            let b = bar.clone();
            let n = ctx
                .admin
                .purge_dead_letters(&topic, &f, &mut move |k| b.set_position(k))
                .await;
            bar.finish_and_clear();
            let n = n?;
            ctx.print(json!({"topic": topic, "purged": n}), || {
                format!("Purged {n} dead letters of {topic}.\n")
            });
            Ok(())
        }
    }
}
