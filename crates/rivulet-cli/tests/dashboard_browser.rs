//! The dashboard in a real headless Chromium (O-DASH-1): `rivulet serve` on a test-kit
//! Redis, driven over WebDriver (chromedriver): log in with the token, open the
//! overview, a topic, its dead letters, replay one by clicking (checked in Redis through
//! the library), open a failed job and retry it by clicking; a `<script>` payload shown
//! on the pages never runs. Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`
//! (`scripts/test.sh` installs them): without them the test fails, it does not skip.
//!
//! With `RIVULET_SCREENSHOTS=1` it writes the screenshots of `docs/dashboard.md` to
//! `docs/img/`.

#[path = "../../rivulet-dashboard/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rivulet::admin::Admin;
use rivulet::{JobState, RedisBackend};
use rivulet_testkit::RedisServer;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(15);

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `rivulet serve` on a free port; returns it and its base URL (read from the
/// line it prints once listening).
fn serve(redis_url: &str) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "--redis",
            redis_url,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--poll",
            "2",
        ])
        .env("RIVULET_DASHBOARD_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rivulet serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let guard = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("rivulet dashboard on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(WAIT)
        .expect("rivulet serve says where it listens");
    (guard, url.trim_end_matches('/').to_owned())
}

fn chromedriver() -> (Killed, u16) {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: install the Debian packages chromium and chromium-driver \
             (scripts/test.sh does)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let guard = Killed(child);
    wait_for_port(port, "chromedriver");
    (guard, port)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

async fn screenshot(c: &Client, name: &str) {
    if std::env::var("RIVULET_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
    std::fs::create_dir_all(&dir).expect("docs/img");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("dashboard-{name}.png")), png).expect("write screenshot");
}

/// The payload's script did not run: the title is the page's and no global was set.
async fn assert_no_script_ran(c: &Client, page: &str) {
    let title = c.title().await.expect("title");
    assert!(
        !title.contains("pwned"),
        "{page}: the payload's script ran (title {title:?})"
    );
    let pwned = c
        .execute("return typeof window.pwned;", vec![])
        .await
        .expect("execute");
    assert_eq!(
        pwned,
        serde_json::json!("undefined"),
        "{page}: the payload's script ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let (_driver, driver_port) = chromedriver();
    let server = RedisServer::start().expect("redis-server");
    let backend = RedisBackend::builder(server.url())
        .build()
        .await
        .expect("backend");
    let seeded = seed(backend.clone().into()).await;
    let admin = Admin::new(backend.clone());
    let (_serve, base) = serve(&server.url());
    let c = browser(driver_port).await;
    let result = drive(&c, &base, &admin, &seeded).await;
    let _ = c.close().await;
    drop(seeded);
    result.expect("the browser session");
}

async fn drive(
    c: &Client,
    base: &str,
    admin: &Admin,
    seeded: &Seeded,
) -> Result<(), fantoccini::error::CmdError> {
    // Not logged in: the login form. A wrong token is refused.
    c.goto(&format!("{base}/")).await?;
    assert!(c.current_url().await?.path().ends_with("/login"));
    screenshot(c, "login").await;
    c.find(Locator::Id("token"))
        .await?
        .send_keys("wrong-token-wrong")
        .await?;
    c.find(Locator::Id("login-submit")).await?.click().await?;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("login-error"))
        .await?;
    c.find(Locator::Id("token")).await?.send_keys(TOKEN).await?;
    c.find(Locator::Id("login-submit")).await?.click().await?;

    // The overview lists the topic and the queue.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!(
            "//a[@class='topic-link' and text()='{TOPIC}']"
        )))
        .await?;
    c.find(Locator::XPath(&format!(
        "//a[@class='queue-link' and text()='{QUEUE}']"
    )))
    .await?;
    screenshot(c, "overview").await;
    // The overview refreshes itself (every 2 s here): a new topic shows without a reload.
    seeded
        .bus
        .publish(
            "fresh-topic",
            &Order {
                note: "new".to_owned(),
            },
        )
        .await
        .expect("publish");
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//a[@class='topic-link' and text()='fresh-topic']",
        ))
        .await?;
    let topic = c
        .find(Locator::XPath(&format!(
            "//a[@class='topic-link' and text()='{TOPIC}']"
        )))
        .await?;
    topic.click().await?;

    // The topic, its group, its dead letters.
    let name = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("topic-name"))
        .await?;
    assert_eq!(name.text().await?, TOPIC);
    c.find(Locator::Css("td.group-name")).await?;
    screenshot(c, "topic").await;
    c.find(Locator::Id("dead-letters-link"))
        .await?
        .click()
        .await?;
    let payload = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("pre.payload"))
        .await?;
    c.find(Locator::Css("details summary"))
        .await?
        .click()
        .await?;
    let shown = payload.text().await?;
    assert!(
        shown.contains("<script>document.title"),
        "payload shown as text: {shown:?}"
    );
    assert_no_script_ran(c, "dead letters").await;
    screenshot(c, "dead-letters").await;

    // Replay it by clicking; the library sees it replayed.
    let dlq = admin.dead_letters(TOPIC).expect("dlq");
    assert_eq!(dlq.len().await.expect("len"), 1);
    c.find(Locator::Css("button.replay-one"))
        .await?
        .click()
        .await?;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("no-dead-letters"))
        .await?;
    assert_eq!(
        dlq.len().await.expect("len"),
        0,
        "replayed out of the dead-letter queue"
    );
    let info = admin.topic(TOPIC).await.expect("topic");
    assert_eq!(
        info.groups.iter().map(|g| g.lag.unwrap_or(0)).sum::<u64>(),
        1,
        "the replayed message waits for its group"
    );

    // The failed job: open it from the queue page and retry it by clicking.
    c.goto(&format!("{base}/queues/{QUEUE}?state=failed"))
        .await?;
    screenshot(c, "queue").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("a.job-link"))
        .await?
        .click()
        .await?;
    let id = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("job-id"))
        .await?;
    assert_eq!(id.text().await?, seeded.failed_job.as_str());
    assert_eq!(
        c.find(Locator::Id("job-state")).await?.text().await?,
        "failed"
    );
    let data = c.find(Locator::Id("job-data")).await?.text().await?;
    assert!(data.contains("<script>document.title"), "{data:?}");
    assert_no_script_ran(c, "job").await;
    screenshot(c, "job").await;
    c.find(Locator::Id("job-retry")).await?.click().await?;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//dd[@id='job-state' and text()='waiting']"))
        .await?;
    let q = admin.queue(QUEUE).expect("queue");
    let state = q
        .job(&seeded.failed_job)
        .await
        .expect("job")
        .expect("exists")
        .state;
    assert_eq!(state, JobState::Waiting, "retried in Redis");
    Ok(())
}

/// One plain HTTP/1.1 GET to the server at `base`; returns the status line and body.
fn http_get(base: &str, path: &str, bearer: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.lines().next().unwrap_or("").to_owned();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_requires_the_token_and_serves_metrics() {
    let server = RedisServer::start().expect("redis-server");
    let backend = RedisBackend::builder(server.url())
        .build()
        .await
        .expect("backend");
    let _seeded = seed(backend.into()).await;
    let (_serve, base) = serve(&server.url());
    let (status, _) = http_get(&base, "/", None);
    assert!(status.contains(" 303 "), "{status}");
    let (status, _) = http_get(&base, "/", Some("not-the-token-at-all"));
    assert!(status.contains(" 401 "), "{status}");
    let (status, body) = http_get(&base, "/", Some(TOKEN));
    assert!(status.contains(" 200 ") && body.contains(TOPIC), "{status}");
    assert!(
        !body.contains(&server.url()),
        "the Redis URL is never shown"
    );
    // The collector feeds /metrics (its first tick runs at start).
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(&base, "/metrics", None);
        assert!(status.contains(" 200 "), "{status}");
        if body.contains("rivulet_dead_letters") {
            break;
        }
        assert!(Instant::now() < deadline, "no collected metrics: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A short token is a usage error (exit 2), before anything listens.
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["--redis", &server.url(), "serve", "--token", "short"])
        .output()
        .expect("rivulet serve runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
