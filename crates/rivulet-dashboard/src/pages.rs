//! The pages and actions.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::Value;
use rivulet::admin::MAX_PAGE;
use rivulet::jobs::{JobInfo, JobState};
use rivulet::{DeadLetter, DeadLetterFilter, DeadLetterReason, EntryId, Error, JobId};
use serde_json::json;

use crate::Shared;
use crate::auth::Caller;
use crate::samples::sparkline;
use crate::view::{error_page, parse_form};

type Params = Query<HashMap<String, String>>;

/// Topics per overview page.
const TOPICS_PER_PAGE: usize = 50;
/// Jobs per page.
const JOBS_PER_PAGE: usize = 50;
/// Tenant groups shown on a queue's page (the first ones by name).
const GROUPS_PER_PAGE: usize = 50;
/// Dead letters per page.
const DEAD_PER_PAGE: usize = 50;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The response for a library error: 404 for what does not exist, 400 for bad input,
/// 409 for refused transitions, 500 otherwise (the message escaped).
fn fail(s: &Shared, e: &Error) -> Response {
    let status = match e {
        Error::JobNotFound { .. } | Error::GroupNotFound { .. } => StatusCode::NOT_FOUND,
        Error::InvalidName { .. } | Error::Config(_) => StatusCode::BAD_REQUEST,
        Error::WrongJobState { .. } | Error::JobActive { .. } | Error::Unsafe(_) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_page(s, status, &e.to_string())
}

fn bad(s: &Shared, message: &str) -> Response {
    error_page(s, StatusCode::BAD_REQUEST, message)
}

fn render(s: &Shared, caller: &Caller, name: &str, ctx: Value) -> Response {
    s.templates
        .render_with(s, name, ctx, caller.csrf.as_deref(), StatusCode::OK)
}

/// Pretty JSON when `bytes` is JSON, the text (lossy) otherwise.
fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn when(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "—".to_owned();
    };
    let now = now_ms();
    if ms >= now {
        format!("in {}", age(ms - now))
    } else {
        format!("{} ago", age(now - ms))
    }
}

#[allow(clippy::result_large_err)] // the error is the response itself, built once
async fn overview_data(s: &Shared, params: &HashMap<String, String>) -> Result<Value, Response> {
    let offset = match params.get("offset").map(|o| o.parse::<usize>()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => return Err(bad(s, "offset must be a number")),
    };
    let page = s
        .admin
        .topics(offset, TOPICS_PER_PAGE)
        .await
        .map_err(|e| fail(s, &e))?;
    let now = now_ms();
    let topics: Vec<_> = page
        .topics
        .iter()
        .map(|t| {
            let backlog = t.max_lag() + t.pending();
            let spark = s.samples.record(&format!("t:{}", t.topic), backlog, now);
            json!({
                "name": t.topic.as_str(),
                "length": t.length,
                "groups": t.groups.len(),
                "lag": t.max_lag(),
                "pending": t.pending(),
                "retry": t.retry_scheduled,
                "dead": t.dead_letters,
                "spark": sparkline(&spark),
            })
        })
        .collect();
    let queues = s.admin.queues().await.map_err(|e| fail(s, &e))?;
    let queues: Vec<_> = queues
        .iter()
        .map(|q| {
            let c = q.counts;
            let backlog = c.waiting + c.delayed + c.active;
            let spark = s.samples.record(&format!("q:{}", q.queue), backlog, now);
            json!({
                "name": q.queue.as_str(),
                "waiting": c.waiting, "delayed": c.delayed, "active": c.active,
                "completed": c.completed, "failed": c.failed, "cancelled": c.cancelled,
                "paused": q.paused,
                "spark": sparkline(&spark),
            })
        })
        .collect();
    Ok(minijinja::context! {
        topics => topics,
        total_topics => page.total,
        offset => offset,
        next => page.next,
        prev => offset.checked_sub(TOPICS_PER_PAGE).or(if offset > 0 { Some(0) } else { None }),
        queues => queues,
    })
}

pub(crate) async fn overview(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(params): Params,
) -> Response {
    match overview_data(&s, &params).await {
        Ok(ctx) => render(&s, &caller, "overview.html", ctx),
        Err(r) => r,
    }
}

pub(crate) async fn overview_live(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(params): Params,
) -> Response {
    match overview_data(&s, &params).await {
        Ok(ctx) => render(&s, &caller, "overview_live.html", ctx),
        Err(r) => r,
    }
}

pub(crate) async fn topic(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
) -> Response {
    topic_page(&s, &caller, &topic, "topic.html").await
}

/// The topic page's live part alone (polled by the page).
pub(crate) async fn topic_live(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
) -> Response {
    topic_page(&s, &caller, &topic, "topic_live.html").await
}

async fn topic_page(s: &Shared, caller: &Caller, topic: &str, template: &str) -> Response {
    let info = match s.admin.topic(topic).await {
        Ok(i) => i,
        Err(e) => return fail(s, &e),
    };
    let groups: Vec<_> = info
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.group.as_str(),
                "pending": g.pending,
                "lag": g.lag.map(|l| l.to_string()).unwrap_or_else(|| "?".to_owned()),
                "oldest": g.oldest_pending_idle_ms.map(age).unwrap_or_else(|| "—".to_owned()),
                "consumers": g.consumers.iter().map(|c| json!({
                    "name": c.consumer.as_str(),
                    "pending": c.pending,
                    "idle": age(c.idle_ms),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    render(
        s,
        caller,
        template,
        minijinja::context! {
            topic => info.topic.as_str(),
            length => info.length,
            retry => info.retry_scheduled,
            dead => info.dead_letters,
            groups => groups,
        },
    )
}

/// The dead-letter filter of a query or form: `group`, `reason`, `since` and `before`
/// (ms since the Unix epoch); empty fields are no filter.
fn filter_of(get: impl Fn(&str) -> Option<String>) -> Result<DeadLetterFilter, String> {
    let mut f = DeadLetterFilter::default();
    if let Some(g) = get("group").filter(|v| !v.is_empty()) {
        f.group = Some(rivulet::GroupName::new(&g).map_err(|e| e.to_string())?);
    }
    if let Some(r) = get("reason").filter(|v| !v.is_empty()) {
        f.reason = Some(
            r.parse::<DeadLetterReason>()
                .map_err(|_| format!("unknown reason {r:?}"))?,
        );
    }
    for (key, slot) in [("since", 0), ("before", 1)] {
        if let Some(v) = get(key).filter(|v| !v.is_empty()) {
            let ms = v
                .parse::<u64>()
                .map_err(|_| format!("{key} must be milliseconds since the Unix epoch"))?;
            if slot == 0 {
                f.dead_since_ms = Some(ms);
            } else {
                f.dead_before_ms = Some(ms);
            }
        }
    }
    Ok(f)
}

fn dead_letter_view(d: &DeadLetter) -> serde_json::Value {
    json!({
        "id": d.id.as_str(),
        "group": d.group.as_str(),
        "message_id": d.message_id.as_str(),
        "reason": d.reason.as_str(),
        "error": d.error,
        "attempts": d.attempts,
        "dead": when(Some(d.dead_at_ms)),
        "payload": pretty(&d.payload),
        "headers": d.headers,
    })
}

pub(crate) async fn dead_letters(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
    Query(params): Params,
) -> Response {
    let filter = match filter_of(|k| params.get(k).cloned()) {
        Ok(f) => f,
        Err(m) => return bad(&s, &m),
    };
    let after = match params.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match EntryId::parse(a) {
            Ok(id) => Some(id),
            Err(_) => return bad(&s, "after must be a dead-letter id"),
        },
    };
    let page = match s
        .admin
        .dead_letter_page(&topic, &filter, after.as_ref(), DEAD_PER_PAGE)
        .await
    {
        Ok(p) => p,
        Err(e) => return fail(&s, &e),
    };
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    render(
        &s,
        &caller,
        "dead_letters.html",
        minijinja::context! {
            topic => topic,
            dead_letters => page.dead_letters.iter().map(dead_letter_view).collect::<Vec<_>>(),
            next => page.next.map(|n| n.as_str().to_owned()),
            group => get("group"), reason => get("reason"),
            since => get("since"), before => get("before"),
            reasons => ["permanent", "attempts", "decode", "deliveries", "too_large", "group_gone"],
        },
    )
}

/// The pairs of a form body, or the 400 response saying it could not be read.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn form(s: &Shared, body: &[u8]) -> Result<Vec<(String, String)>, Response> {
    parse_form(body).ok_or_else(|| bad(s, "the form could not be read"))
}

fn field(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn back_to_dead_letters(s: &Shared, topic: &str, done: &str) -> Response {
    Redirect::to(&format!(
        "{}/topics/{}/dead-letters?done={}",
        s.config.base_path,
        enc(topic),
        enc(done)
    ))
    .into_response()
}

fn enc(v: &str) -> String {
    serde_urlencoded::to_string([("", v)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// Replays the dead letters whose ids are checked (`id`, repeated), or with `all=1`
/// those matching the filter fields.
pub(crate) async fn replay_dead_letters(
    State(s): State<Shared>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Response {
    let pairs = match form(&s, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if field(&pairs, "all").as_deref() == Some("1") {
        let filter = match filter_of(|k| field(&pairs, k)) {
            Ok(f) => f,
            Err(m) => return bad(&s, &m),
        };
        return match s
            .admin
            .replay_dead_letters(&topic, &filter, None, &mut |_| {})
            .await
        {
            Ok(n) => back_to_dead_letters(&s, &topic, &format!("replayed {n}")),
            Err(e) => fail(&s, &e),
        };
    }
    let mut ids = Vec::new();
    for (k, v) in &pairs {
        if k == "id" {
            match EntryId::parse(v) {
                Ok(id) => ids.push(id),
                Err(_) => return bad(&s, &format!("not a dead-letter id: {v:?}")),
            }
        }
    }
    if ids.is_empty() {
        return bad(&s, "select at least one dead letter (or replay all)");
    }
    if ids.len() > MAX_PAGE {
        return bad(&s, "at most 1000 dead letters at once");
    }
    let queue = match s.admin.dead_letters(&topic) {
        Ok(q) => q,
        Err(e) => return fail(&s, &e),
    };
    let mut replayed = 0;
    for id in &ids {
        match queue.replay(id).await {
            Ok(true) => replayed += 1,
            Ok(false) => {}
            Err(e) => return fail(&s, &e),
        }
    }
    back_to_dead_letters(&s, &topic, &format!("replayed {replayed}"))
}

/// Purges the dead letters matching the filter fields (all of them without any).
pub(crate) async fn purge_dead_letters(
    State(s): State<Shared>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Response {
    let pairs = match form(&s, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let filter = match filter_of(|k| field(&pairs, k)) {
        Ok(f) => f,
        Err(m) => return bad(&s, &m),
    };
    match s
        .admin
        .purge_dead_letters(&topic, &filter, &mut |_| {})
        .await
    {
        Ok(n) => back_to_dead_letters(&s, &topic, &format!("purged {n}")),
        Err(e) => fail(&s, &e),
    }
}

fn job_row(j: &JobInfo) -> serde_json::Value {
    json!({
        "id": j.id.as_str(),
        "name": j.name.as_str(),
        "state": j.state.as_str(),
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "added": when(Some(j.added_at_ms)),
        "error": j.error,
    })
}

pub(crate) async fn queue(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    Query(params): Params,
) -> Response {
    queue_page(&s, &caller, &queue, &params, "queue.html").await
}

/// The queue page's live part alone (counts and the jobs of the state; polled).
pub(crate) async fn queue_live(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    Query(params): Params,
) -> Response {
    queue_page(&s, &caller, &queue, &params, "queue_live.html").await
}

async fn queue_page(
    s: &Shared,
    caller: &Caller,
    queue: &str,
    params: &HashMap<String, String>,
    template: &str,
) -> Response {
    let s = s.clone();
    let queue = queue.to_owned();
    if let Some(id) = params.get("id").map(|i| i.trim()).filter(|i| !i.is_empty()) {
        if let Err(e) = JobId::new(id) {
            return bad(&s, &e.to_string());
        }
        return Redirect::to(&format!(
            "{}/queues/{}/jobs/{}",
            s.config.base_path,
            enc(&queue),
            enc(id)
        ))
        .into_response();
    }
    let state = match params.get("state").map(|v| v.parse::<JobState>()) {
        None => JobState::Failed,
        Some(Ok(st)) => st,
        Some(Err(_)) => return bad(&s, "unknown job state"),
    };
    let q = match s.admin.queue(&queue) {
        Ok(q) => q,
        Err(e) => return fail(&s, &e),
    };
    let info = match s.admin.queue_info(q.name()).await {
        Ok(i) => i,
        Err(e) => return fail(&s, &e),
    };
    let cursor = params.get("cursor").filter(|c| !c.is_empty());
    let page = match q
        .jobs(state, cursor.map(String::as_str), JOBS_PER_PAGE)
        .await
    {
        Ok(p) => p,
        Err(e) => return fail(&s, &e),
    };
    let schedulers = match q.schedulers().await {
        Ok(v) => v,
        Err(e) => return fail(&s, &e),
    };
    // Tenant groups in play (J-8): the first page, with the queue's per-group cap.
    let groups = match q.groups(None, GROUPS_PER_PAGE).await {
        Ok(v) => v,
        Err(e) => return fail(&s, &e),
    };
    let group_cap = match q.limits().await {
        Ok(l) => l.group_concurrency,
        Err(e) => return fail(&s, &e),
    };
    let c = info.counts;
    let states: Vec<_> = JobState::ALL
        .iter()
        .map(|st| json!({ "name": st.as_str(), "count": c.of(*st) }))
        .collect();
    render(
        &s,
        caller,
        template,
        minijinja::context! {
            queue => q.name().as_str(),
            paused => info.paused,
            paused_names => info.paused_names.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>(),
            states => states,
            state => state.as_str(),
            jobs => page.jobs.iter().map(job_row).collect::<Vec<_>>(),
            next => page.next,
            cursor => cursor.cloned().unwrap_or_default(),
            schedulers => schedulers.iter().map(|sc| json!({
                "id": sc.id,
                "schedule": sc.schedule.to_string(),
                "job": sc.job_name.as_str(),
                "next": when(sc.next_run_ms),
                "last": when(sc.last_run_ms),
            })).collect::<Vec<_>>(),
            groups => groups.iter().map(|(g, gc)| json!({
                "group": g.as_str(),
                "waiting": gc.waiting,
                "active": gc.active,
                "paused": gc.paused,
            })).collect::<Vec<_>>(),
            groups_more => groups.len() >= GROUPS_PER_PAGE,
            group_cap => group_cap.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        },
    )
}

async fn queue_toggle(s: Shared, queue: String, pause: bool) -> Response {
    let q = match s.admin.queue(&queue) {
        Ok(q) => q,
        Err(e) => return fail(&s, &e),
    };
    let r = if pause {
        q.pause().await
    } else {
        q.resume().await
    };
    match r {
        Ok(()) => {
            Redirect::to(&format!("{}/queues/{}", s.config.base_path, enc(&queue))).into_response()
        }
        Err(e) => fail(&s, &e),
    }
}

pub(crate) async fn pause(State(s): State<Shared>, Path(queue): Path<String>) -> Response {
    queue_toggle(s, queue, true).await
}

pub(crate) async fn resume(State(s): State<Shared>, Path(queue): Path<String>) -> Response {
    queue_toggle(s, queue, false).await
}

pub(crate) async fn job(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    let detail = match s.admin.job(&queue, &id, 100).await {
        Ok(d) => d,
        Err(e) => return fail(&s, &e),
    };
    let q = match s.admin.queue(&queue) {
        Ok(q) => q,
        Err(e) => return fail(&s, &e),
    };
    let children = match q.children(&detail.job.id).await {
        Ok(c) => c,
        Err(e) => return fail(&s, &e),
    };
    let child = |c: &rivulet::jobs::ChildRef, status: &str, extra: String| json!({ "queue": c.queue.as_str(), "id": c.id.as_str(), "status": status, "extra": extra });
    let mut kids: Vec<_> = children
        .results
        .iter()
        .map(|(c, r)| child(c, "completed", pretty(r)))
        .collect();
    kids.extend(
        children
            .failures
            .iter()
            .map(|(c, e)| child(c, "failed", e.clone())),
    );
    kids.extend(
        children
            .pending
            .iter()
            .map(|c| child(c, "pending", String::new())),
    );
    let j = &detail.job;
    render(
        &s,
        &caller,
        "job.html",
        minijinja::context! {
            queue => q.name().as_str(),
            id => j.id.as_str(),
            name => j.name.as_str(),
            state => j.state.as_str(),
            attempt => j.attempt,
            max_attempts => j.max_attempts,
            stalls => j.stalls,
            priority => j.priority,
            added => when(Some(j.added_at_ms)),
            started => when(j.started_at_ms),
            finished => when(j.finished_at_ms),
            data => pretty(&j.data),
            progress => j.progress.as_ref().map(|p| p.to_string()),
            result => j.result.as_ref().map(|r| pretty(r)),
            error => j.error.clone(),
            worker => j.worker.clone(),
            logs => detail.logs.clone(),
            children => kids,
        },
    )
}

/// `retry`, `cancel`, `promote` or `remove` one job.
pub(crate) async fn job_action(
    State(s): State<Shared>,
    Path((queue, id, action)): Path<(String, String, String)>,
) -> Response {
    let q = match s.admin.queue(&queue) {
        Ok(q) => q,
        Err(e) => return fail(&s, &e),
    };
    let job = match JobId::new(&id) {
        Ok(j) => j,
        Err(e) => return bad(&s, &e.to_string()),
    };
    let r = match action.as_str() {
        "retry" => q.retry(&job).await.map(|_| ()),
        "cancel" => q.cancel(&job).await.map(|_| ()),
        "promote" => q.promote(&job).await,
        "remove" => {
            return match q.remove(&job).await {
                Ok(_) => Redirect::to(&format!("{}/queues/{}", s.config.base_path, enc(&queue)))
                    .into_response(),
                Err(e) => fail(&s, &e),
            };
        }
        _ => return bad(&s, "the action must be retry, cancel, promote or remove"),
    };
    match r {
        Ok(()) => Redirect::to(&format!(
            "{}/queues/{}/jobs/{}",
            s.config.base_path,
            enc(&queue),
            enc(&id)
        ))
        .into_response(),
        Err(e) => fail(&s, &e),
    }
}
