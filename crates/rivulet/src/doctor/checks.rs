//! The checks: observations from the backend
//! ([`Diagnostics`](crate::backend::Diagnostics)) turned into findings.

use std::time::Duration;

use super::{
    Action, Check, DoctorOptions, Finding, Object, Report, SettingsChecked, Severity, count,
};
use crate::backend::diagnostics::{GroupHealth, LogHealth, Probe, ServerSettings};
use crate::backend::{Backend, StreamKey, StreamKind};
use crate::deadline::millis;
use crate::error::Result;
use crate::name::{ConsumerName, GroupName, QueueName, TopicName};

fn secs(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if d >= Duration::from_secs(120) {
        format!("{} min", d.as_secs() / 60)
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn finding(
    check: Check,
    severity: Severity,
    objects: Vec<Object>,
    summary: String,
    explanation: &str,
    fix: &str,
    action: Option<Action>,
) -> Finding {
    Finding {
        check,
        severity,
        objects,
        summary,
        explanation: explanation.to_owned(),
        fix: fix.to_owned(),
        fixable: action.is_some(),
        action,
    }
}

/// The object a log is: the topic, or its dead-letter queue.
fn log_object(key: &StreamKey) -> Object {
    match key.kind {
        StreamKind::Main => Object::new("topic", key.topic.as_str()),
        StreamKind::DeadLetters => Object::new("dead_letters", key.topic.as_str()),
    }
}

pub(super) async fn examine(backend: &dyn Backend, o: &DoctorOptions) -> Result<Report> {
    let now = backend.clock_ms().await?;
    let probe = Probe {
        now_ms: now,
        overdue_before_ms: now.saturating_sub(millis(o.retry_overdue)),
        recent_since_ms: now.saturating_sub(millis(o.dead_letter_window)),
        recent_cap: usize::try_from(o.dead_letter_recent.saturating_add(1)).unwrap_or(usize::MAX),
        lease_expired_before_ms: now.saturating_sub(millis(o.stall_grace)),
    };
    let mut findings = Vec::new();
    let settings = settings(backend, o, &mut findings).await?;

    let topics = backend.topics().await?;
    for topic in &topics {
        let mut found = Vec::new();
        let read = topic_findings(backend, topic, &probe, o, &mut found).await;
        findings.extend(found);
        unreadable(read, Object::new("topic", topic.as_str()), &mut findings)?;
    }

    let queues = backend.queues().await?;
    for queue in &queues {
        let mut found = Vec::new();
        let read = queue_findings(backend, queue, &probe, &mut found).await;
        findings.extend(found);
        unreadable(read, Object::new("queue", queue.as_str()), &mut findings)?;
    }
    Ok(Report::new(
        backend.name(),
        now,
        topics.len(),
        queues.len(),
        settings,
        findings,
    ))
}

async fn topic_findings(
    backend: &dyn Backend,
    topic: &TopicName,
    probe: &Probe,
    o: &DoctorOptions,
    out: &mut Vec<Finding>,
) -> Result<()> {
    for key in [
        StreamKey::main(topic.clone()),
        StreamKey::dead_letters(topic.clone()),
    ] {
        let health = backend.log_health(&key, probe).await?;
        log_findings(&key, &health, probe, o, out);
    }
    dead_letter_findings(backend, topic, probe, o, out).await
}

/// A topic or queue that could not be read becomes a finding, so one broken key does
/// not hide the rest of the store; a lost connection still ends the examination.
fn unreadable(read: Result<()>, object: Object, out: &mut Vec<Finding>) -> Result<()> {
    match read {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            let summary = format!("could not examine {object}: {e}");
            out.push(finding(
                Check::Unreadable,
                Severity::Error,
                vec![object],
                summary,
                "A key of this object is not what rivulet wrote (a wrong type, a value \
                 changed by hand) or a read failed, so rivulet's own operations on it are \
                 likely failing too; the doctor's other checks of it did not run.",
                "Not repaired by the doctor: look at the object's keys (docs/wire-format.md) \
                 and restore or remove the broken one.",
                None,
            ));
            Ok(())
        }
    }
}

async fn settings(
    backend: &dyn Backend,
    o: &DoctorOptions,
    out: &mut Vec<Finding>,
) -> Result<SettingsChecked> {
    let ServerSettings::Read {
        appendonly,
        eviction,
        memory,
    } = backend.server_settings().await?
    else {
        return Ok(SettingsChecked::NotApplicable);
    };
    let unchecked = |name: &str, why: String, out: &mut Vec<Finding>| {
        out.push(finding(
            Check::SettingUnchecked,
            Severity::Info,
            vec![Object::new("setting", name)],
            format!("could not check {name}: {why}"),
            "The server (managed Redis, or an ACL user without CONFIG/INFO) would not show \
             this setting, so the doctor cannot tell whether it keeps the guarantees.",
            "Check it with the provider's console, or run the doctor as a user allowed \
             CONFIG GET and INFO.",
            None,
        ));
    };
    let mut partly = false;
    match appendonly {
        Ok(v) if v.eq_ignore_ascii_case("no") => out.push(finding(
            Check::Durability,
            Severity::Warning,
            vec![Object::new("setting", "appendonly")],
            "appendonly is no".to_owned(),
            "Without the append-only file, a crash or restart loses every write since the \
             last snapshot: published messages, acknowledgements, scheduled retries and job \
             transitions that callers were told succeeded. At-least-once delivery holds only \
             for what survives a restart.",
            "Not repaired by the doctor: set `appendonly yes` (CONFIG SET appendonly yes, \
             and in redis.conf so it outlives a restart).",
            None,
        )),
        Ok(_) => {}
        Err(why) => {
            partly = true;
            unchecked("appendonly", why, out);
        }
    }
    match eviction {
        Ok(v) if !v.eq_ignore_ascii_case("noeviction") => out.push(finding(
            Check::Eviction,
            Severity::Error,
            vec![Object::new("setting", "maxmemory-policy")],
            format!("maxmemory-policy is {v}, not noeviction"),
            "Under memory pressure Redis will delete keys: a topic's stream, a group's retry \
             lane, the retry set, a job's hash or a queue's state sets can vanish without \
             any error, so messages and jobs are lost silently. With noeviction writes fail \
             with OOM instead and rivulet reports them.",
            "Not repaired by the doctor: CONFIG SET maxmemory-policy noeviction (and in \
             redis.conf), or give rivulet a server of its own.",
            None,
        )),
        Ok(_) => {}
        Err(why) => {
            partly = true;
            unchecked("maxmemory-policy", why, out);
        }
    }
    match memory {
        Ok((used, max)) if max > 0 && (used as f64) >= (max as f64) * o.memory_ratio => {
            out.push(finding(
                Check::Memory,
                Severity::Warning,
                vec![Object::new("setting", "maxmemory")],
                format!(
                    "used memory {used} bytes is {:.0}% of maxmemory {max} bytes",
                    (used as f64) * 100.0 / (max as f64)
                ),
                "Near maxmemory, publishes, settlements and job transitions start failing \
                 with OOM (under noeviction) or keys are evicted (under any other policy). \
                 Consumers then cannot settle, so entries are delivered again and retries \
                 cannot be scheduled.",
                "Not repaired by the doctor: raise maxmemory, trim topics (retention), purge \
                 dead letters, or keep fewer finished jobs.",
                None,
            ));
        }
        Ok(_) => {}
        Err(why) => {
            partly = true;
            unchecked("memory", why, out);
        }
    }
    Ok(if partly {
        SettingsChecked::Partly
    } else {
        SettingsChecked::Checked
    })
}

fn log_findings(
    key: &StreamKey,
    health: &LogHealth,
    probe: &Probe,
    o: &DoctorOptions,
    out: &mut Vec<Finding>,
) {
    let log = log_object(key);
    for g in &health.groups {
        group_findings(key, &log, g, health.length, o, out);
    }
    if health.retries_overdue > 0 {
        let late = health
            .earliest_retry_ms
            .map(|due| probe.now_ms.saturating_sub(due))
            .unwrap_or(0);
        out.push(finding(
            Check::RetryOverdue,
            Severity::Error,
            vec![log.clone()],
            format!(
                "{} overdue (the earliest was due {} ago)",
                count(
                    health.retries_overdue,
                    "scheduled retry is",
                    "scheduled retries are"
                ),
                secs(late)
            ),
            "A retry is moved into its group's retry lane by any running bus within about a \
             second of its due time. Retries this late mean no process using the topic is \
             running its housekeeping, so failed messages are not being retried.",
            "Move every due retry into its group's retry lane now (as the bus's mover does; \
             retries of a vanished group wait for it, then are dead-lettered with reason \
             group_gone). Then start a subscriber of the topic.",
            Some(Action::MoveRetries { key: key.clone() }),
        ));
    }
}

fn group_findings(
    key: &StreamKey,
    log: &Object,
    g: &GroupHealth,
    length: u64,
    o: &DoctorOptions,
    out: &mut Vec<Finding>,
) {
    let group = Object::new("group", g.name.as_str());
    let orphan = g.broadcast && !g.heartbeat && g.exists;
    if orphan {
        out.push(finding(
            Check::OrphanBroadcastGroup,
            Severity::Warning,
            vec![log.clone(), group.clone()],
            format!(
                "broadcast group {} has no heartbeat ({} pending, {} not delivered)",
                g.name,
                g.pending,
                g.lag.map_or_else(|| "?".to_owned(), |l| l.to_string())
            ),
            "A broadcast group belongs to one process, which keeps its heartbeat alive. \
             Its process is gone, so nobody will ever read the group again, yet safe \
             retention keeps every entry the group has not acknowledged: the topic can \
             never be trimmed past it.",
            "Remove the topic's orphan broadcast groups (with their retry lanes), checking \
             each heartbeat in the same script, as the bus's housekeeping does.",
            Some(Action::RemoveOrphans { key: key.clone() }),
        ));
        return;
    }
    if g.registered && !g.exists {
        out.push(finding(
            Check::MissingGroup,
            Severity::Warning,
            vec![log.clone(), group.clone()],
            format!("group {} is registered but gone from the topic", g.name),
            "The group was deleted outside rivulet (XGROUP DESTROY, or the stream was \
             deleted). Its pending list went with it. The next subscribe re-creates it at \
             the start of the retained history, so entries it had already handled run \
             again; until then nothing is delivered to it.",
            "Not repaired by the doctor: subscribe the group again (it is re-created at \
             the start of the retained history), or destroy it if it is no longer wanted.",
            None,
        ));
    }
    if let Some(lag) = g.lag
        && lag >= o.lag_limit
    {
        out.push(finding(
            Check::RetentionPinned,
            Severity::Warning,
            vec![log.clone(), group.clone()],
            format!(
                "group {} has {lag} entries not yet delivered (the log holds {length})",
                g.name
            ),
            "Safe retention trims only what every group has acknowledged, so this group \
             pins the topic: it keeps growing (memory, and eventually OOM) while the group \
             is this far behind. Trimming with safe retention off would delete entries the \
             group has not received.",
            "Not repaired by the doctor (nothing is safe to delete): run more consumers of \
             the group, or destroy the group if it is no longer wanted.",
            None,
        ));
    }
    for c in &g.consumers {
        if c.pending == 0 || c.idle_ms < millis(o.gone_after) {
            continue;
        }
        // Only a group rivulet created reads its retry lane: a foreign group's entries
        // are left where they are.
        let action = match (
            key.kind,
            g.registered,
            GroupName::new(g.name.as_str()),
            ConsumerName::new(c.name.as_str()),
        ) {
            (StreamKind::Main, true, Ok(group), Ok(consumer)) => Some(Action::HandBack {
                key: key.clone(),
                group,
                consumer,
            }),
            _ => None,
        };
        let fix = if action.is_some() {
            "Hand the consumer's entries that are still idle back to the group's retry \
             lane (one script per batch; entries it no longer holds, or kept alive since, \
             are left alone), so the group's next consumer reads them at once."
        } else {
            "Not repaired by the doctor (entries of a dead-letter queue are never copied \
             into lanes, and a group rivulet did not create does not read one): start a \
             consumer of the group, which reclaims them after min_idle."
        };
        out.push(finding(
            Check::GoneConsumer,
            Severity::Error,
            vec![
                log.clone(),
                group.clone(),
                Object::new("consumer", c.name.as_str()),
            ],
            format!(
                "{} pending on consumer {} of group {}, idle {}",
                count(c.pending, "entry", "entries"),
                c.name,
                g.name,
                secs(c.idle_ms)
            ),
            "A live consumer reads, reclaims or keeps its entries alive at least every \
             min_idle; this one has not for far longer, so its process is gone. Its entries \
             are handled only once another consumer of the group reclaims them, and none \
             has: they are stuck, and they pin retention.",
            fix,
            action,
        ));
    }
}

async fn dead_letter_findings(
    backend: &dyn Backend,
    topic: &TopicName,
    probe: &Probe,
    o: &DoctorOptions,
    out: &mut Vec<Finding>,
) -> Result<()> {
    let dl = backend.dead_letter_health(topic, probe).await?;
    let large = dl.length > o.dead_letter_limit;
    let growing = dl.recent > o.dead_letter_recent;
    if !(large || growing) {
        return Ok(());
    }
    let recent = if dl.recent > o.dead_letter_recent {
        format!("more than {}", o.dead_letter_recent)
    } else {
        dl.recent.to_string()
    };
    out.push(finding(
        Check::DeadLetterGrowth,
        Severity::Warning,
        vec![Object::new("dead_letters", topic.as_str())],
        format!(
            "the dead-letter queue holds {} entries, {recent} of them from the last {}",
            dl.length,
            secs(millis(o.dead_letter_window))
        ),
        "Dead letters are messages a handler gave up on: each one is work not done. \
         Retention never trims the dead-letter queue, so it grows until someone replays \
         or purges it; fast growth usually means a failing handler or a poison producer.",
        "Not repaired by the doctor: look at the reasons (rivulet dead letters list), fix \
         the handler, then replay or purge them.",
        None,
    ));
    Ok(())
}

async fn queue_findings(
    backend: &dyn Backend,
    queue: &QueueName,
    probe: &Probe,
    out: &mut Vec<Finding>,
) -> Result<()> {
    let q = backend.queue_health(queue, probe).await?;
    let object = Object::new("queue", queue.as_str());
    if q.leases_expired > 0 {
        let late = q
            .earliest_lease_ms
            .map(|at| probe.now_ms.saturating_sub(at))
            .unwrap_or(0);
        out.push(finding(
            Check::ExpiredLease,
            Severity::Error,
            vec![object.clone()],
            format!(
                "{} an expired lease (the earliest expired {} ago)",
                count(q.leases_expired, "active job has", "active jobs have"),
                secs(late)
            ),
            "An active job whose worker died keeps its place in the active set until a \
             worker's stall check takes it back. No worker has run that check, so these \
             jobs neither run nor fail: they are stuck, and their dedup keys stay held.",
            "Run the stall check: each job counts a stall and goes back to waiting (beyond \
             max_stalled it counts a failed attempt and is retried later or failed; a job \
             whose cancelling was asked for is cancelled). Then start a worker.",
            Some(Action::ReturnStalled {
                queue: queue.clone(),
            }),
        ));
    }
    let counter_ok = u64::try_from(q.parked_counter).is_ok_and(|c| c == q.parked_jobs);
    if !counter_ok {
        out.push(finding(
            Check::ParkedCount,
            Severity::Warning,
            vec![object],
            format!(
                "the parked counter says {} but the parked sets of the paused names hold {}",
                q.parked_counter, q.parked_jobs
            ),
            "The waiting count includes the parked jobs by this counter, so counts (and \
             any dashboard or alert built on them) are wrong, and a resume adjusts the \
             counter from a wrong start. A resume running right now also shows this \
             briefly; run the doctor again to be sure.",
            "Set the counter to the jobs in the parked sets of the paused names, in one \
             script.",
            Some(Action::RecountParked {
                queue: queue.clone(),
            }),
        ));
    }
    Ok(())
}
