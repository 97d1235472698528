//! Lifecycle of a single `redis-server`: ports, restarts, kills, drop.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use rivulet_testkit::{RedisServer, TestkitError};

fn set(server: &RedisServer, key: &str, value: &str) {
    let mut con = server.connection().expect("connect");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec(&mut con)
        .expect("SET");
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    let mut con = server.connection().expect("connect");
    redis::cmd("GET").arg(key).query(&mut con).expect("GET")
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn aof_server() -> RedisServer {
    RedisServer::builder()
        .aof(true)
        .appendfsync("always")
        .start()
        .expect("start redis-server")
}

#[test]
fn graceful_restart_keeps_aof_data() {
    let mut server = aof_server();
    let (port, dir, old_pid) = (server.port(), server.data_dir().to_owned(), server.pid());
    set(&server, "greeting", "hello");

    server.restart().expect("restart");

    assert_eq!(server.port(), port);
    assert_eq!(server.data_dir(), dir);
    assert_ne!(server.pid(), old_pid);
    assert!(!process_exists(old_pid), "old process is gone");
    assert_eq!(get(&server, "greeting").as_deref(), Some("hello"));
}

#[test]
fn restart_after_kill_keeps_fsynced_aof_data() {
    let mut server = aof_server();
    set(&server, "survivor", "yes");

    server.kill().expect("kill");
    assert!(!server.is_running());
    server.restart().expect("restart");

    assert!(server.is_running());
    assert_eq!(get(&server, "survivor").as_deref(), Some("yes"));
}

#[test]
fn killed_server_is_detected() {
    let mut server = RedisServer::start().expect("start redis-server");
    assert!(server.is_running());

    server.kill().expect("kill");

    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
    assert!(server.connection().is_err());
    assert!(matches!(
        server.pause(),
        Err(TestkitError::NotRunning { .. })
    ));
    server.kill().expect("killing twice is a no-op");
}

#[test]
fn servers_get_distinct_ports_and_data_dirs() {
    let a = RedisServer::start().expect("start a");
    let b = RedisServer::start().expect("start b");

    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    for server in [&a, &b] {
        assert_ne!(server.port(), 6379);
        assert!((20_000..55_535).contains(&server.port()));
        assert_eq!(
            server.url(),
            format!("redis://127.0.0.1:{}/", server.port())
        );
        assert!(server.log_path().starts_with(server.data_dir()));
        assert!(server.log_tail(5).contains("Ready to accept connections"));
    }
}

#[test]
fn drop_kills_the_process_and_removes_the_data_dir() {
    let server = RedisServer::start().expect("start redis-server");
    let (pid, dir) = (server.pid(), server.data_dir().to_owned());
    assert!(process_exists(pid));
    assert!(dir.exists());

    drop(server);

    assert!(!process_exists(pid), "pid {pid} still exists");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn stop_shuts_down_gracefully() {
    let mut server = RedisServer::start().expect("start redis-server");
    server.stop().expect("stop");
    assert!(!server.is_running());
    assert!(server.log_tail(10).contains("ready to exit, bye bye"));
}

#[test]
fn paused_server_answers_after_resume() {
    let server = RedisServer::start().expect("start redis-server");
    let mut con = server.connection().expect("connect");
    con.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");

    server.pause().expect("pause");
    let err = redis::cmd("PING")
        .query::<String>(&mut con)
        .expect_err("a paused server does not answer");
    assert!(err.is_timeout(), "{err}");
    assert!(server.is_running());

    server.resume().expect("resume");
    let mut con = server.connection().expect("connect after resume");
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn password_is_required_and_part_of_the_url() {
    let server = RedisServer::builder()
        .password("s3cret")
        .start()
        .expect("start redis-server");
    assert_eq!(
        server.url(),
        format!("redis://:s3cret@127.0.0.1:{}/", server.port())
    );
    set(&server, "k", "v");

    let anonymous =
        redis::Client::open(format!("redis://127.0.0.1:{}/", server.port())).expect("client");
    let mut con = anonymous.get_connection().expect("connect");
    let err = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut con)
        .expect_err("unauthenticated GET");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

#[test]
fn startup_failure_reports_the_server_output() {
    let err = RedisServer::builder()
        .extra_arg("--maxmemory-policy", "not-a-policy")
        .start()
        .expect_err("invalid configuration");
    let message = err.to_string();
    assert!(matches!(err, TestkitError::Startup { .. }), "{message}");
    assert!(message.contains("exited early"), "{message}");
    assert!(message.contains("not-a-policy"), "{message}");
}
