//! Pages stay fast on a large state: 1,000 topics and 100,000 jobs in one state each
//! render in under a second (they read one page, never the whole state).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rivulet::admin::Admin;
use rivulet::{Bus, MemoryBackend, Queue};
use rivulet_dashboard::{Config, router};
use tower::ServiceExt;

const TOKEN: &str = "large-state-token";

async fn timed(app: &axum::Router, path: &str) -> (Duration, String) {
    let req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let start = Instant::now();
    let resp = app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (start.elapsed(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_topics_and_a_hundred_thousand_jobs_render_in_under_a_second() {
    let backend = MemoryBackend::new();
    let bus = Bus::builder(backend.clone())
        .app("large")
        .build()
        .expect("bus");
    for i in 0..1_000 {
        bus.publish(&format!("topic-{i:04}"), &i)
            .await
            .expect("publish");
    }
    let q = Queue::new(backend.clone(), "big").expect("queue");
    for chunk in 0..100 {
        let jobs: Vec<_> = (0..1_000)
            .map(|i| q.add("job", &(chunk * 1_000 + i)))
            .collect();
        q.add_bulk(jobs).await.expect("add_bulk");
    }
    assert_eq!(q.counts().await.expect("counts").waiting, 100_000);
    let app = router(Admin::new(backend), Config::new(TOKEN));

    let (took, body) = timed(&app, "/").await;
    println!("overview with 1,000 topics: {took:?}");
    assert!(took < Duration::from_secs(1), "overview took {took:?}");
    assert!(body.contains("topic-0000") && body.contains("(1000)") && body.contains("topics-next"));
    assert!(!body.contains("topic-0050"), "one page of 50 topics");

    let (took, body) = timed(&app, "/?offset=950").await;
    assert!(
        took < Duration::from_secs(1),
        "last overview page took {took:?}"
    );
    assert!(body.contains("topic-0999"));

    let (took, body) = timed(&app, "/queues/big?state=waiting").await;
    println!("100,000 waiting jobs, first page: {took:?}");
    assert!(took < Duration::from_secs(1), "queue page took {took:?}");
    assert!(body.contains("waiting (100000)") && body.contains("jobs-next"));
    let next = body
        .split("id=\"jobs-next\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a next link")
        .replace("&amp;", "&");
    let (took, _) = timed(&app, &format!("/queues/big{next}")).await;
    assert!(took < Duration::from_secs(1), "second page took {took:?}");
}
