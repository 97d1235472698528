//! Every route in process (`tower::ServiceExt::oneshot`), on the memory backend and on a
//! real Redis from the test kit: status codes, authentication, CSRF, read-only mode,
//! escaping of what comes from the backend, security headers.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use rivulet::admin::Admin;
use rivulet::{AnyBackend, JobState, MemoryBackend, Queue, RedisBackend};
use rivulet_dashboard::{Config, router};
use rivulet_testkit::RedisServer;
use tower::ServiceExt;

use common::*;

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp: Response<Body> = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).expect("request")
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut b =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(form.to_owned())).expect("request")
}

/// Logs in; returns the session cookie and the CSRF token of its pages.
async fn login(app: &Router) -> (String, String) {
    let (status, headers, _) = send(app, post("/login", None, &format!("token={TOKEN}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("cookie").to_owned();
    let (status, _, page) = send(app, get("/", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token on the page")
        .to_owned();
    (cookie, csrf)
}

async fn suite(backend: AnyBackend) {
    let seeded = seed(backend.clone()).await;
    let admin = Admin::new(backend.clone());
    let app = router(admin.clone(), Config::new(TOKEN));
    let job = seeded.failed_job.to_string();
    let pages = [
        "/".to_owned(),
        "/live/overview".to_owned(),
        format!("/topics/{TOPIC}"),
        format!("/live/topics/{TOPIC}"),
        format!("/live/queues/{QUEUE}?state=failed"),
        format!("/topics/{TOPIC}/dead-letters"),
        format!("/queues/{QUEUE}"),
        format!("/queues/{QUEUE}?state=failed"),
        format!("/queues/{QUEUE}/jobs/{job}"),
    ];

    // Unauthenticated: pages redirect to the login form, POSTs are 401, assets are served.
    for p in &pages {
        let (status, headers, _) = send(&app, get(p, None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{p}");
        assert_eq!(
            headers.get(header::LOCATION).map(|v| v.as_bytes()),
            Some(&b"/login"[..])
        );
    }
    let (status, _, _) = send(&app, post(&format!("/queues/{QUEUE}/pause"), None, "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, get("/static/app.js", None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, login_page) = send(&app, get("/login", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(login_page.contains("name=\"token\""));
    let csp = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .expect("CSP")
        .to_str()
        .expect("ascii");
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(
        headers.get(header::X_FRAME_OPTIONS).map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    assert!(headers.contains_key(header::REFERRER_POLICY));

    // A wrong token: 401 on login and with a bearer.
    let (status, headers, _) = send(&app, post("/login", None, "token=nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!headers.contains_key(header::SET_COOKIE));
    let bearer = |t: &str| {
        Request::get("/")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .expect("req")
    };
    assert_eq!(send(&app, bearer("nope")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, bearer(TOKEN)).await.0, StatusCode::OK);
    // A cookie of no session is no login.
    assert_eq!(
        send(&app, get("/", Some("rivulet_session=forged"))).await.0,
        StatusCode::SEE_OTHER
    );

    let (cookie, csrf) = login(&app).await;
    let c = Some(cookie.as_str());
    for p in &pages {
        let (status, _, body) = send(&app, get(p, c)).await;
        assert_eq!(status, StatusCode::OK, "{p}: {body}");
        // Nothing from the backend reaches the page unescaped.
        assert!(!body.contains("<script>document"), "{p} has a raw <script>");
        assert!(!body.contains("<img src=x"), "{p} has a raw <img>");
        assert!(!body.contains("<b>order"), "{p} has raw markup");
    }
    // The live fragments are the pages' data alone.
    let (_, _, live) = send(&app, get(&format!("/live/topics/{TOPIC}"), c)).await;
    assert!(
        live.contains("id=\"groups\"") && !live.contains("<html"),
        "{live}"
    );
    let (_, _, live) = send(&app, get(&format!("/live/queues/{QUEUE}?state=failed"), c)).await;
    assert!(
        live.contains("id=\"jobs\"") && !live.contains("<html"),
        "{live}"
    );
    let (_, _, live) = send(&app, get("/live/overview", c)).await;
    assert!(
        live.contains("id=\"topics\"") && !live.contains("<html"),
        "{live}"
    );
    let (_, _, dead) = send(&app, get(&format!("/topics/{TOPIC}/dead-letters"), c)).await;
    assert!(
        dead.contains("&lt;script&gt;document.title="),
        "payload shown escaped: {dead}"
    );
    assert!(
        dead.contains("bad &lt;b&gt;order&lt;&#x2f;b&gt; &quot;quoted&quot;"),
        "error escaped: {dead}"
    );
    let (_, _, jobpage) = send(&app, get(&format!("/queues/{QUEUE}/jobs/{job}"), c)).await;
    assert!(
        jobpage.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{jobpage}"
    );
    assert!(
        jobpage.contains("&quot;note&quot;"),
        "pretty JSON data: {jobpage}"
    );

    // A flow: the parent's page shows its children as a tree, linked.
    let reports = Queue::new(backend.clone(), "reports").expect("queue");
    let fetches = Queue::new(backend.clone(), "fetches").expect("queue");
    let flow = reports
        .add("monthly", &"2026-11")
        .job_id("monthly-2026-11")
        .child(fetches.add("fetch", &"eu"))
        .child(fetches.add("fetch", &"us"))
        .await
        .expect("flow");
    // Tenant groups on the queue page: two in play with their counts and the cap.
    let mail = rivulet::Queue::new(backend.clone(), "mail").expect("queue");
    mail.set_limits(rivulet::Limits::new().group_concurrency(3))
        .await
        .expect("limits");
    for g in ["acme", "acme", "globex"] {
        mail.add("send", &1u32).group(g).await.expect("add");
    }
    mail.pause_group("globex").await.expect("pause group");
    let (status, _, groups) = send(&app, get("/queues/mail", c)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        groups.contains("<tr><td>acme</td><td>2</td><td>0</td><td>3</td><td>no</td></tr>")
            && groups
                .contains("<tr><td>globex</td><td>1</td><td>0</td><td>3</td><td>yes</td></tr>"),
        "{groups}"
    );
    let (_, _, none) = send(&app, get(&format!("/queues/{QUEUE}"), c)).await;
    assert!(none.contains("No job groups in play."), "{none}");
    let (status, _, tree) = send(&app, get("/queues/reports/jobs/monthly-2026-11", c)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(tree.contains("id=\"flow\""), "{tree}");
    let children: Vec<_> = flow
        .nodes
        .iter()
        .filter(|(r, _)| r.queue.as_str() == "fetches")
        .collect();
    assert_eq!(children.len(), 2);
    for (child, _) in children {
        let link = format!("href=\"/queues/fetches/jobs/{}\"", child.id);
        assert!(tree.contains(&link), "child {} linked: {tree}", child.id);
    }
    assert_eq!(tree.matches("— pending").count(), 2, "{tree}");

    // Bad input: 400 with a message (escaped), 404 for what does not exist.
    let (status, _, body) = send(
        &app,
        get(
            &format!("/topics/{TOPIC}/dead-letters?group=%22q%22%3Cx%3E"),
            c,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("\\&quot;q\\&quot;&lt;x&gt;")
            && !body.contains("<x>")
            && !body.contains("\\\"q"),
        "the quoted group name is escaped: {body}"
    );
    for p in [
        "/?offset=abc".to_owned(),
        format!("/topics/{TOPIC}/dead-letters?reason=nope"),
        format!("/topics/{TOPIC}/dead-letters?after=zz"),
        format!("/topics/{TOPIC}/dead-letters?since=yesterday"),
        format!("/queues/{QUEUE}?state=nope"),
        format!("/queues/{QUEUE}?id=%20bad%20id%20%3C"),
        "/topics/bad%20topic%3Cx%3E".to_owned(),
    ] {
        let (status, _, body) = send(&app, get(&p, c)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{p}: {body}");
        assert!(body.contains("id=\"error-message\""), "{p}");
    }
    let (status, _, _) = send(&app, get(&format!("/queues/{QUEUE}/jobs/no-such-job"), c)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = send(&app, get(&format!("/queues/{QUEUE}?id={job}"), c)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("/queues/{QUEUE}/jobs/{job}").as_str())
    );

    // POSTs need the session's CSRF token.
    let pause = format!("/queues/{QUEUE}/pause");
    for form in [
        String::new(),
        "csrf=wrong".to_owned(),
        format!("csrf={}x", csrf),
    ] {
        let (status, _, _) = send(&app, post(&pause, c, &form)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form}");
    }
    let q = Queue::new(backend.clone(), QUEUE).expect("queue");
    assert!(
        !q.paused().await.expect("paused").0,
        "refused POSTs changed nothing"
    );
    let (status, _, _) = send(&app, post(&pause, c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(q.paused().await.expect("paused").0);
    let (_, _, body) = send(&app, get(&format!("/queues/{QUEUE}"), c)).await;
    assert!(body.contains("Resume"));
    let (status, _, _) = send(
        &app,
        post(
            &format!("/queues/{QUEUE}/resume"),
            c,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!q.paused().await.expect("paused").0);

    // Job actions: a wrong state is 409, an unknown action 400, retry moves it.
    let act = |a: &str| format!("/queues/{QUEUE}/jobs/{job}/{a}");
    let (status, _, _) = send(&app, post(&act("promote"), c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = send(&app, post(&act("explode"), c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&app, post(&act("retry"), c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let state = q
        .job(&seeded.failed_job)
        .await
        .expect("job")
        .expect("exists")
        .state;
    assert_eq!(state, JobState::Waiting);
    let (status, _, _) = send(&app, post(&act("cancel"), c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = send(&app, post(&act("remove"), c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(q.job(&seeded.failed_job).await.expect("job").is_none());

    // Dead letters: bad ids 400, replay one by id, purge.
    let dlq = admin.dead_letters(TOPIC).expect("dlq");
    let listed = dlq.list(None, 10).await.expect("list");
    let (id, dl_group) = (listed[0].id.clone(), listed[0].group.clone());
    let replay = format!("/topics/{TOPIC}/dead-letters/replay");
    let (status, _, _) = send(&app, post(&replay, c, &format!("csrf={csrf}&id=zz"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&app, post(&replay, c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&app, post(&replay, c, &format!("csrf={csrf}&id={id}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        dlq.len().await.expect("len"),
        0,
        "replayed out of the dead-letter queue"
    );
    let info = admin.topic(TOPIC).await.expect("topic");
    let g = info
        .groups
        .iter()
        .find(|g| g.group == dl_group)
        .expect("group");
    assert_eq!(g.lag, Some(1), "the replay waits for its group again");
    let (status, _, _) = send(
        &app,
        post(
            &format!("/topics/{TOPIC}/dead-letters/purge"),
            c,
            &format!("csrf={csrf}&reason=nope"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(
        &app,
        post(
            &format!("/topics/{TOPIC}/dead-letters/purge"),
            c,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Logging out ends the session.
    let (status, _, _) = send(&app, post("/logout", c, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(send(&app, get("/", c)).await.0, StatusCode::SEE_OTHER);

    // Read-only: no action buttons, every POST refused with 403, pages still served.
    let ro = router(admin.clone(), Config::new(TOKEN).read_only(true));
    let (cookie, _) = {
        let (status, headers, _) = send(&ro, post("/login", None, &format!("token={TOKEN}"))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let set = headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("cookie");
        (set.split(';').next().expect("cookie").to_owned(), ())
    };
    let c = Some(cookie.as_str());
    let (_, _, page) = send(&ro, get(&format!("/queues/{QUEUE}"), c)).await;
    assert!(
        page.contains("read-only") && !page.contains("id=\"pause-toggle\""),
        "{page}"
    );
    let csrf_ro = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_owned();
    let (status, _, _) = send(&ro, post(&pause, c, &format!("csrf={csrf_ro}"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bearer_post = Request::post(&pause)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&ro, bearer_post).await.0, StatusCode::FORBIDDEN);
    assert!(!q.paused().await.expect("paused").0);
    drop(seeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_the_memory_backend() {
    suite(MemoryBackend::new().into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_redis() {
    let server = RedisServer::start().expect("redis-server");
    let backend = RedisBackend::builder(server.url())
        .build()
        .await
        .expect("backend");
    suite(backend.into()).await;
}

#[tokio::test]
async fn no_secret_is_rendered() {
    let server = RedisServer::start().expect("redis-server");
    let backend = RedisBackend::builder(server.url())
        .build()
        .await
        .expect("backend");
    let app = router(Admin::new(backend), Config::new(TOKEN));
    let (cookie, _) = login(&app).await;
    for p in ["/", "/login", "/topics/none", "/queues/none"] {
        let (_, _, body) = send(&app, get(p, Some(&cookie))).await;
        assert!(!body.contains(TOKEN), "{p} shows the token");
        assert!(!body.contains(&server.url()), "{p} shows the Redis URL");
    }
}
