//! Passwords never show (R-3, issue 14 item 5): not in errors (`Display`, `Debug`), the
//! builder's or the backend's `Debug`, nor the log output of a connection that fails,
//! whatever characters they contain; and they can come from the environment or a file.
//!
//! The password is made of fragments (`qz1`, `kx7`, …) found nowhere else, separated by
//! every character that ends a URL part early: `/ ? # @ :`.

#![cfg(feature = "redis")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{Bus, Delivery, ErrorKind, HandlerError, RedisBackend};
use rivulet_testkit::RedisServer;

const PASSWORD: &str = "qz1/kx7?wv3#pm5@jd8:rt4";
const ENCODED: &str = "qz1%2Fkx7%3Fwv3%23pm5%40jd8%3Art4";
const FRAGMENTS: &[&str] = &["qz1", "kx7", "wv3", "pm5", "jd8", "rt4"];

fn assert_hidden(surface: &str, shown: &str) {
    for f in FRAGMENTS {
        assert!(!shown.contains(f), "{surface}: {f:?} shown in {shown:?}");
    }
}

async fn server_with_password() -> RedisServer {
    tokio::task::spawn_blocking(|| RedisServer::builder().password(PASSWORD).start())
        .await
        .expect("spawn_blocking")
        .expect("start redis-server")
}

/// A port nothing listens on (a server started and dropped).
fn closed_port() -> u16 {
    let server = RedisServer::start().expect("redis-server");
    server.port()
}

#[tokio::test]
async fn errors_never_show_the_password() {
    // Raw in the URL: the URL cannot be parsed; a configuration error.
    let e = RedisBackend::connect(&format!("redis://app:{PASSWORD}@127.0.0.1:1/0"))
        .await
        .expect_err("raw special characters");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_hidden("config error Display", &e.to_string());
    assert_hidden("config error Debug", &format!("{e:?}"));

    // Percent-encoded, to a port nothing listens on: a connection error.
    let port = closed_port();
    let e = RedisBackend::builder(format!("redis://app:{ENCODED}@127.0.0.1:{port}/0"))
        .connect_timeout(Duration::from_millis(300))
        .await
        .expect_err("nothing listens");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.to_string().contains("app:***@127.0.0.1"), "{e}");
    assert_hidden("connection error Display", &e.to_string());
    assert_hidden("connection error Debug", &format!("{e:?}"));

    // The wrong password, given with the builder.
    let server = server_with_password().await;
    let e = RedisBackend::builder(format!("redis://127.0.0.1:{}", server.port()))
        .password(format!("{PASSWORD}-wrong"))
        .connect_timeout(Duration::from_millis(300))
        .await
        .expect_err("wrong password");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert_hidden("auth error Display", &e.to_string());
    assert_hidden("auth error Debug", &format!("{e:?}"));

    // A missing variable or file is named; no value is shown.
    let e = RedisBackend::builder("redis://127.0.0.1:1")
        .password_from_env("RIVULET_TEST_SURELY_UNSET_VAR")
        .await
        .expect_err("unset variable");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string()
            .contains("RIVULET_TEST_SURELY_UNSET_VAR is not set"),
        "{e}"
    );
}

#[tokio::test]
async fn builder_and_backend_debug_never_show_the_password() {
    let server = server_with_password().await;
    let url = format!("redis://app:{ENCODED}@127.0.0.1:{}/0", server.port());
    let builder = RedisBackend::builder(url.as_str());
    assert_hidden("builder Debug (URL)", &format!("{builder:?}"));
    let plain = format!("redis://127.0.0.1:{}", server.port());
    let builder = RedisBackend::builder(plain.as_str()).password(PASSWORD);
    let shown = format!("{builder:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_hidden("builder Debug (password)", &shown);

    // The URL form (default user, percent-encoded password) connects…
    let backend =
        RedisBackend::connect(&format!("redis://:{ENCODED}@127.0.0.1:{}/0", server.port()))
            .await
            .expect("connect with the encoded password");
    assert_hidden("backend Debug (URL)", &format!("{backend:?}"));
    let bus = Bus::builder(backend.clone())
        .app("secrets")
        .build()
        .expect("bus");
    assert_hidden("bus Debug", &format!("{bus:?}"));

    // …and so do the password from a file and from the environment.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("write the password file");
    let builder = RedisBackend::builder(plain.as_str()).password_file(&file);
    assert_hidden("builder Debug (file)", &format!("{builder:?}"));
    let backend = builder.await.expect("connect with the password file");
    assert_hidden("backend Debug (file)", &format!("{backend:?}"));

    bus.shutdown().await;
}

const ENV_VAR: &str = "RIVULET_TEST_SECRETS_PASSWORD";
const ENV_PORT: &str = "RIVULET_TEST_SECRETS_PORT";

/// `std::env::set_var` is `unsafe` (edition 2024) and `unsafe` is forbidden, so the
/// test runs [`password_from_env_child`] in a child process with the variable set.
#[tokio::test]
async fn the_password_can_come_from_the_environment() {
    let server = server_with_password().await;
    let exe = std::env::current_exe().expect("the test binary");
    let output = tokio::process::Command::new(exe)
        .args(["--exact", "password_from_env_child", "--nocapture"])
        .env(ENV_VAR, PASSWORD)
        .env(ENV_PORT, server.port().to_string())
        .output()
        .await
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("connected with the password from the environment"),
        "{stdout}"
    );
}

/// Run by [`the_password_can_come_from_the_environment`]; does nothing on its own.
#[tokio::test]
async fn password_from_env_child() {
    let Ok(port) = std::env::var(ENV_PORT) else {
        return;
    };
    let plain = format!("redis://127.0.0.1:{port}");
    let builder = RedisBackend::builder(plain.as_str()).password_from_env(ENV_VAR);
    assert_hidden("builder Debug (env)", &format!("{builder:?}"));
    let backend = builder
        .await
        .expect("connect with the password from the environment");
    assert_hidden("backend Debug (env)", &format!("{backend:?}"));
    println!("connected with the password from the environment");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_log_of_a_failed_connection_never_shows_the_password() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // The runtime is single-threaded, so every task of the bus logs here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut server = server_with_password().await;
    let url = format!("redis://app:{ENCODED}@127.0.0.1:{}/0", server.port());
    let url = url.replacen("app:", ":", 1);
    let backend = RedisBackend::builder(url.as_str())
        .connect_timeout(Duration::from_millis(300))
        .await
        .expect("connect");
    let bus = Bus::builder(backend)
        .app("secrets")
        .block_timeout(Duration::from_millis(100))
        .retry_mover_interval(Duration::from_millis(100))
        .build()
        .expect("bus");
    let sub = bus
        .subscribe("secrets.topic", "h", |_d: Delivery<u32>| async move {
            Ok::<(), HandlerError>(())
        })
        .await
        .expect("subscribe");
    let mut live = bus.live().subscribe("secrets.*").await.expect("live");
    server.kill().expect("kill redis-server");

    // Readers and the live subscription now fail to reconnect, and say so in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = captured.text();
        if text.contains("cannot connect to") && text.contains("live subscription") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection failure logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = captured.text();
    assert!(
        text.contains(":***@127.0.0.1"),
        "the redacted URL is logged:\n{text}"
    );
    assert_hidden("log output", &text);
    drop(live.try_next());
    drop(sub);
    bus.shutdown().await;
}

/// Every metric registered, with its labels, as text.
#[derive(Default)]
struct LabelRecorder(Mutex<Vec<String>>);

impl LabelRecorder {
    fn record(&self, key: &metrics::Key) {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        self.0
            .lock()
            .expect("lock")
            .push(format!("{}{{{}}}", key.name(), labels.join(",")));
    }
}

impl metrics::Recorder for &'static LabelRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.record(key);
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.record(key);
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.record(key);
        metrics::Histogram::noop()
    }
}

static LABELS: std::sync::OnceLock<&'static LabelRecorder> = std::sync::OnceLock::new();

/// Metrics carry topic and group names, never a URL or a password: a bus publishes,
/// handles, retries and loses its Redis while every metric it registers is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_never_show_the_password() {
    let recorder: &'static LabelRecorder =
        LABELS.get_or_init(|| Box::leak(Box::new(LabelRecorder::default())));
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");

    let mut server = server_with_password().await;
    let url = format!("redis://:{ENCODED}@127.0.0.1:{}/0", server.port());
    let backend = RedisBackend::builder(url.as_str())
        .connect_timeout(Duration::from_millis(300))
        .await
        .expect("connect");
    let bus = Bus::builder(backend)
        .app("metrics")
        .block_timeout(Duration::from_millis(100))
        .retry(rivulet::RetryPolicy::default().backoff(Duration::from_millis(10)))
        .retry_mover_interval(Duration::from_millis(50))
        .build()
        .expect("bus");
    let handled = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&handled);
    let _sub = bus
        .subscribe("metrics.topic", "h", move |d: Delivery<u32>| {
            let count = Arc::clone(&count);
            async move {
                if d.attempt() == 1 {
                    return Err(HandlerError::retryable("first attempt fails"));
                }
                *count.lock().expect("lock") += 1;
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    let _live = bus.live().subscribe("metrics.*").await.expect("live");
    for i in 0..5u32 {
        bus.publish("metrics.topic", &i).await.expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while *handled.lock().expect("lock") < 5 {
        assert!(Instant::now() < deadline, "not handled after a retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("kill redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorder
        .0
        .lock()
        .expect("lock")
        .iter()
        .any(|k| k.starts_with("rivulet_live_reconnects_total"))
    {
        assert!(
            Instant::now() < deadline,
            "the live subscription never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = recorder.0.lock().expect("lock").join("\n");
    assert!(all.contains("topic=metrics.topic"), "{all}");
    assert!(
        !all.contains("redis://") && !all.contains("127.0.0.1"),
        "{all}"
    );
    assert_hidden("metric labels", &all);
    bus.shutdown().await;
}
