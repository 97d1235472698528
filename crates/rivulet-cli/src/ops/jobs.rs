//! `queues`, `jobs list|show|retry|cancel|promote|remove`, `queue pause|resume`,
//! `schedulers`.

use clap::Subcommand;
use rivulet::admin::QueueInfo;
use rivulet::{CancelOutcome, JobCounts, JobId, JobInfo, JobState, Schedule, SchedulerInfo};
use serde_json::{Value, json};

use super::Ctx;
use super::render::{Table, age_ms, count, now_ms, progress, since, size};
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Jobs of a queue in one state, a page at a time.
    List {
        /// The queue.
        queue: String,
        /// waiting, delayed, active, completed, failed, cancelled.
        #[arg(long)]
        state: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from a previous page (its `next`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One job: data, progress, logs, result, attempts and errors.
    Show {
        /// The queue.
        queue: String,
        /// The job's id.
        id: String,
    },
    /// Run a failed or cancelled job again (its attempts start afresh), or every failed
    /// job with --all-failed.
    Retry {
        /// The queue.
        queue: String,
        /// The job's id.
        id: Option<String>,
        /// Retry every failed job, in atomic batches.
        #[arg(long)]
        all_failed: bool,
        /// Jobs per batch with --all-failed.
        #[arg(long, default_value_t = 200)]
        batch: usize,
    },
    /// Cancel a job (an active one is asked to stop).
    Cancel {
        /// The queue.
        queue: String,
        /// The job's id.
        id: String,
        /// Really cancel.
        #[arg(long)]
        yes: bool,
    },
    /// Make a delayed job waiting now.
    Promote {
        /// The queue.
        queue: String,
        /// The job's id.
        id: String,
    },
    /// Remove a job that is not active, with its logs.
    Remove {
        /// The queue.
        queue: String,
        /// The job's id.
        id: String,
        /// Really remove.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Pause a queue (or one job name, or one job group): workers lease nothing of it
    /// until resumed.
    Pause {
        /// The queue.
        queue: String,
        /// Only jobs of this name.
        #[arg(long, conflicts_with = "group")]
        name: Option<String>,
        /// Only jobs of this job group (a tenant).
        #[arg(long)]
        group: Option<String>,
    },
    /// Resume a queue (or one job name, or one job group).
    Resume {
        /// The queue.
        queue: String,
        /// Only jobs of this name.
        #[arg(long, conflicts_with = "group")]
        name: Option<String>,
        /// Only jobs of this job group (a tenant).
        #[arg(long)]
        group: Option<String>,
    },
}

fn counts_json(c: &JobCounts) -> Value {
    json!({
        "waiting": c.waiting,
        "parked": c.parked,
        "delayed": c.delayed,
        "active": c.active,
        "completed": c.completed,
        "failed": c.failed,
        "cancelled": c.cancelled,
        "waiting_children": c.waiting_children,
    })
}

fn queue_json(q: &QueueInfo) -> Value {
    json!({
        "queue": q.queue.as_str(),
        "counts": counts_json(&q.counts),
        "paused": q.paused,
        "paused_names": q.paused_names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
    })
}

/// JSON bytes as a JSON value (or as a string when they are not JSON).
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)))
}

fn job_json(j: &JobInfo) -> Value {
    json!({
        "id": j.id.as_str(),
        "name": j.name.as_str(),
        "state": j.state.as_str(),
        "data": as_json(&j.data),
        "priority": j.priority,
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "stalls": j.stalls,
        "added_at_ms": j.added_at_ms,
        "run_at_ms": j.run_at_ms,
        "started_at_ms": j.started_at_ms,
        "finished_at_ms": j.finished_at_ms,
        "progress": j.progress,
        "result": j.result.as_ref().map(|r| as_json(r)),
        "error": j.error,
        "dedup_key": j.dedup_key,
        "cancel_requested": j.cancel_requested,
        "worker": j.worker,
    })
}

fn state(s: &str) -> Result<JobState, CliError> {
    JobState::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            CliError::usage(format!(
                "unknown state {s:?} (waiting, delayed, active, completed, failed, cancelled)"
            ))
        })
}

/// The job, or "does not exist" (exit 4).
async fn existing_job(q: &rivulet::Queue, id: &JobId, queue: &str) -> Result<JobInfo, CliError> {
    q.job(id).await?.ok_or_else(|| {
        CliError::not_found(format!(
            "job {:?} of queue {queue:?} does not exist",
            id.as_str()
        ))
    })
}

fn job_id(s: &str) -> Result<JobId, CliError> {
    Ok(JobId::new(s)?)
}

pub(crate) async fn queues(ctx: &Ctx) -> Result<(), CliError> {
    let queues = ctx.admin.queues().await?;
    let doc = json!({"queues": queues.iter().map(queue_json).collect::<Vec<_>>()});
    ctx.print(doc, || {
        let mut t = Table::new(&[
            "QUEUE",
            "WAITING",
            "DELAYED",
            "ACTIVE",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "PAUSED",
        ]);
        for q in &queues {
            let c = &q.counts;
            let paused = if q.paused {
                "yes".to_owned()
            } else if q.paused_names.is_empty() {
                "no".to_owned()
            } else {
                let names: Vec<&str> = q.paused_names.iter().map(|n| n.as_str()).collect();
                format!("names: {}", names.join(", "))
            };
            t.row(vec![
                q.queue.to_string(),
                count(c.waiting),
                count(c.delayed),
                count(c.active),
                count(c.completed),
                count(c.failed),
                count(c.cancelled),
                paused,
            ]);
        }
        if t.is_empty() {
            "No queues.\n".into()
        } else {
            t.render()
        }
    });
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, c: JobsCommand) -> Result<(), CliError> {
    match c {
        JobsCommand::List {
            queue,
            state: s,
            limit,
            cursor,
        } => {
            let st = state(&s)?;
            let q = ctx.admin.queue(&queue)?;
            let page = q.jobs(st, cursor.as_deref(), limit).await?;
            let total = q.counts().await?.of(st);
            let doc = json!({
                "queue": queue,
                "state": st.as_str(),
                "total": total,
                "jobs": page.jobs.iter().map(job_json).collect::<Vec<_>>(),
                "next": page.next,
            });
            ctx.print(doc, || {
                let mut t = Table::new(&["ID", "NAME", "ATTEMPT", "AGE", "DATA", "ERROR"]);
                for j in &page.jobs {
                    t.row(vec![
                        j.id.to_string(),
                        j.name.to_string(),
                        format!("{}/{}", j.attempt, j.max_attempts),
                        since(Some(j.added_at_ms)),
                        size(j.data.len()),
                        j.error.clone().unwrap_or_default().replace('\n', " "),
                    ]);
                }
                let mut out = if t.is_empty() {
                    format!("No {st} jobs in {queue}.\n")
                } else {
                    t.render()
                };
                out.push_str(&format!("({} {st} jobs in {queue})\n", count(total)));
                if let Some(n) = &page.next {
                    out.push_str(&format!("(next page: --cursor {n})\n"));
                }
                out
            });
            Ok(())
        }
        JobsCommand::Show { queue, id } => {
            let d = ctx.admin.job(&queue, &id, 100).await?;
            let mut doc = job_json(&d.job);
            doc["logs"] = json!(d.logs);
            ctx.print(doc, || {
                let j = &d.job;
                let mut out = String::new();
                let rows = [
                    ("id", j.id.to_string()),
                    ("name", j.name.to_string()),
                    ("state", j.state.to_string()),
                    ("attempt", format!("{} of {}", j.attempt, j.max_attempts)),
                    ("stalls", j.stalls.to_string()),
                    ("priority", j.priority.to_string()),
                    ("added", format!("{} ago", since(Some(j.added_at_ms)))),
                    (
                        "run at",
                        j.run_at_ms.map_or("-".into(), |t| {
                            let now = super::render::now_ms();
                            if t > now {
                                format!("in {}", age_ms(Some(t - now)))
                            } else {
                                format!("{} ago", age_ms(Some(now - t)))
                            }
                        }),
                    ),
                    (
                        "started",
                        j.started_at_ms
                            .map_or("-".into(), |t| format!("{} ago", since(Some(t)))),
                    ),
                    (
                        "finished",
                        j.finished_at_ms
                            .map_or("-".into(), |t| format!("{} ago", since(Some(t)))),
                    ),
                    ("worker", j.worker.clone().unwrap_or_else(|| "-".into())),
                    (
                        "progress",
                        j.progress.as_ref().map_or("-".into(), Value::to_string),
                    ),
                    ("error", j.error.clone().unwrap_or_else(|| "-".into())),
                    (
                        "result",
                        j.result
                            .as_ref()
                            .map_or("-".into(), |r| as_json(r).to_string()),
                    ),
                    ("data", as_json(&j.data).to_string()),
                ];
                for (k, v) in rows {
                    out.push_str(&format!("{k:<9} {v}\n"));
                }
                if !d.logs.is_empty() {
                    out.push_str("logs\n");
                    for l in &d.logs {
                        out.push_str(&format!("  {l}\n"));
                    }
                }
                out
            });
            Ok(())
        }
        JobsCommand::Retry {
            queue,
            id,
            all_failed,
            batch,
        } => {
            match (id, all_failed) {
                (Some(id), false) => {
                    let q = ctx.admin.queue(&queue)?;
                    let was = q.retry(&job_id(&id)?).await?;
                    ctx.print(
                        json!({"queue": queue, "id": id, "retried": 1, "was": was.as_str()}),
                        || format!("Job {id} of {queue} ({was}) is waiting again.\n"),
                    );
                }
                (None, true) => {
                    let q = ctx.admin.queue(&queue)?;
                    let failed = q.counts().await?.failed;
                    let bar = progress(ctx.json, Some(failed), "retrying");
                    let b = bar.clone();
                    let n = ctx
                        .admin
                        .retry_all_failed(&queue, batch, &mut move |k| b.set_position(k))
                        .await;
                    bar.finish_and_clear();
                    let n = n?;
                    ctx.print(json!({"queue": queue, "retried": n}), || {
                        format!("Retried {n} failed jobs of {queue}.\n")
                    });
                }
                _ => {
                    return Err(CliError::usage("jobs retry takes a job id or --all-failed"));
                }
            }
            Ok(())
        }
        JobsCommand::Cancel { queue, id, yes } => {
            let q = ctx.admin.queue(&queue)?;
            let jid = job_id(&id)?;
            if !yes {
                let j = existing_job(&q, &jid, &queue).await?;
                return ctx.needs_yes(
                    json!({"queue": queue, "id": id, "action": "cancel", "state": j.state.as_str()}),
                    format!("Cancelling job {id} of {queue} ({}) would end it cancelled.", j.state),
                );
            }
            let outcome = q.cancel(&jid).await?;
            let (word, human) = match outcome {
                CancelOutcome::Cancelled => {
                    ("cancelled", format!("Job {id} of {queue} is cancelled."))
                }
                CancelOutcome::Requested => (
                    "requested",
                    format!("Job {id} of {queue} is running: its handler was asked to stop."),
                ),
                CancelOutcome::AlreadyFinished(s) => (
                    "already_finished",
                    format!("Job {id} of {queue} had already finished ({s})."),
                ),
                _ => ("unknown", format!("Job {id} of {queue}: cancel done.")),
            };
            ctx.print(json!({"queue": queue, "id": id, "outcome": word}), || {
                format!("{human}\n")
            });
            Ok(())
        }
        JobsCommand::Promote { queue, id } => {
            let q = ctx.admin.queue(&queue)?;
            q.promote(&job_id(&id)?).await?;
            ctx.print(json!({"queue": queue, "id": id, "promoted": true}), || {
                format!("Job {id} of {queue} is waiting now.\n")
            });
            Ok(())
        }
        JobsCommand::Remove { queue, id, yes } => {
            let q = ctx.admin.queue(&queue)?;
            let jid = job_id(&id)?;
            if !yes {
                let j = existing_job(&q, &jid, &queue).await?;
                return ctx.needs_yes(
                    json!({"queue": queue, "id": id, "action": "remove", "state": j.state.as_str()}),
                    format!("Removing job {id} of {queue} ({}) would delete it with its logs.", j.state),
                );
            }
            let was = q.remove(&jid).await?;
            ctx.print(
                json!({"queue": queue, "id": id, "removed": true, "was": was.as_str()}),
                || format!("Removed job {id} of {queue} ({was}).\n"),
            );
            Ok(())
        }
    }
}

pub(crate) async fn queue(ctx: &Ctx, c: QueueCommand) -> Result<(), CliError> {
    let (queue, name, group, pause) = match c {
        QueueCommand::Pause { queue, name, group } => (queue, name, group, true),
        QueueCommand::Resume { queue, name, group } => (queue, name, group, false),
    };
    let q = ctx.admin.queue(&queue)?;
    let word = if pause { "paused" } else { "resumed" };
    if let Some(g) = group {
        if pause {
            q.pause_group(&g).await?;
        } else {
            q.resume_group(&g).await?;
        }
        let counts = q.group_counts(&g).await?;
        ctx.print(
            json!({
                "queue": queue,
                "group": g,
                "action": word,
                "paused": counts.paused,
                "waiting": counts.waiting,
                "active": counts.active,
            }),
            || format!("Job group {g} of {queue} is {word}.\n"),
        );
        return Ok(());
    }
    match (&name, pause) {
        (None, true) => q.pause().await?,
        (None, false) => q.resume().await?,
        (Some(n), true) => q.pause_name(n).await?,
        (Some(n), false) => q.resume_name(n).await?,
    }
    let (paused, names) = q.paused().await?;
    ctx.print(
        json!({
            "queue": queue,
            "name": name,
            "action": word,
            "paused": paused,
            "paused_names": names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        }),
        || match &name {
            Some(n) => format!("Jobs named {n} of {queue} are {word}.\n"),
            None => format!("Queue {queue} is {word}.\n"),
        },
    );
    Ok(())
}

fn scheduler_json(s: &SchedulerInfo) -> Value {
    let (kind, value, tz) = match &s.schedule {
        Schedule::Cron { expr, tz } => ("cron", json!(expr), json!(tz)),
        Schedule::Every(d) => (
            "every",
            json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Value::Null,
        ),
        // A kind of schedule newer than this command: its text form only.
        other => ("other", json!(other.to_string()), Value::Null),
    };
    json!({
        "id": s.id,
        "kind": kind,
        // A cron expression, or the interval in ms.
        "schedule": value,
        "tz": tz,
        "job_name": s.job_name.as_str(),
        "job_data": as_json(&s.job_data),
        "next_run_ms": s.next_run_ms,
        "last_run_ms": s.last_run_ms,
        "last_job": s.last_job.as_ref().map(JobId::as_str),
        "version": s.version,
    })
}

/// `rivulet schedulers Q`: a queue's job schedulers with their next and last runs.
pub(crate) async fn schedulers(ctx: &Ctx, queue: &str) -> Result<(), CliError> {
    let list = ctx.admin.queue(queue)?.schedulers().await?;
    let doc = json!({
        "queue": queue,
        "schedulers": list.iter().map(scheduler_json).collect::<Vec<_>>(),
    });
    ctx.print(doc, || {
        let mut t = Table::new(&["ID", "SCHEDULE", "JOB", "NEXT RUN", "LAST RUN", "LAST JOB"]);
        let now = now_ms();
        for s in &list {
            let next = match s.next_run_ms {
                None => "none left".to_owned(),
                Some(at) if at >= now => format!("in {}", age_ms(Some(at - now))),
                Some(at) => format!("due {} ago", age_ms(Some(now - at))),
            };
            let last = match s.last_run_ms {
                None => "never".to_owned(),
                Some(at) => format!("{} ago", since(Some(at))),
            };
            t.row(vec![
                s.id.clone(),
                s.schedule.to_string(),
                s.job_name.to_string(),
                next,
                last,
                s.last_job
                    .as_ref()
                    .map_or("-".to_owned(), ToString::to_string),
            ]);
        }
        if t.is_empty() {
            format!("No schedulers on queue {queue}.\n")
        } else {
            t.render()
        }
    });
    Ok(())
}

/// `rivulet groups Q`: a queue's job groups in play, a page at a time.
pub(crate) async fn groups(
    ctx: &Ctx,
    queue: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(), CliError> {
    let q = ctx.admin.queue(queue)?;
    let page = q.groups(after, limit).await?;
    let limits = q.limits().await?;
    // A full page may have more after it.
    let next = (page.len() >= limit.clamp(1, 1000))
        .then(|| page.last().map(|(g, _)| g.to_string()))
        .flatten();
    let doc = json!({
        "queue": queue,
        "group_cap": limits.group_concurrency,
        "groups": page.iter().map(|(g, c)| json!({
            "group": g.as_str(),
            "waiting": c.waiting,
            "active": c.active,
            "paused": c.paused,
        })).collect::<Vec<_>>(),
        "next": next,
    });
    ctx.print(doc, || {
        let mut t = Table::new(&["GROUP", "WAITING", "ACTIVE", "CAP", "PAUSED"]);
        let cap = limits
            .group_concurrency
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        for (g, c) in &page {
            t.row(vec![
                g.to_string(),
                count(c.waiting),
                count(c.active),
                cap.clone(),
                if c.paused { "yes" } else { "no" }.to_owned(),
            ]);
        }
        if t.is_empty() {
            format!("No job groups in play on queue {queue}.\n")
        } else {
            let mut out = t.render();
            if let Some(n) = &next {
                out.push_str(&format!("(next page: --after {n})\n"));
            }
            out
        }
    });
    Ok(())
}
