//! Fault injection with the TCP proxy in front of a real server.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use rivulet_testkit::{ProxyMode, RedisServer, TcpProxy};

const SHORT: Duration = Duration::from_millis(300);

fn setup() -> (RedisServer, TcpProxy) {
    let server = RedisServer::start().expect("start redis-server");
    let proxy = TcpProxy::for_port(server.port()).expect("start proxy");
    (server, proxy)
}

/// A connection through the proxy with short I/O timeouts.
fn connect(proxy: &TcpProxy) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(proxy.url())?;
    let con = client.get_connection_with_timeout(SHORT)?;
    con.set_read_timeout(Some(SHORT))?;
    con.set_write_timeout(Some(SHORT))?;
    Ok(con)
}

fn ping(con: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("PING").query(con)
}

fn wait_for_connections(proxy: &TcpProxy, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.connections() != expected {
        assert!(
            Instant::now() < deadline,
            "expected {expected} connections, have {}",
            proxy.connections()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pass_forwards_commands() {
    let (_server, proxy) = setup();
    assert_eq!(proxy.mode(), ProxyMode::Pass);
    assert_ne!(proxy.port(), 6379);
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.port()));

    let mut con = connect(&proxy).expect("connect");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");
    wait_for_connections(&proxy, 1);
    drop(con);
    wait_for_connections(&proxy, 0);
}

#[test]
fn delay_adds_latency_both_ways() {
    let (_server, proxy) = setup();
    let mut con = connect(&proxy).expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");

    proxy
        .set_mode(ProxyMode::Delay(Duration::from_millis(100)))
        .expect("delay");
    let started = Instant::now();
    assert_eq!(ping(&mut con).expect("PING"), "PONG");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn blackhole_times_out_and_pass_recovers() {
    let (_server, proxy) = setup();
    let mut con = connect(&proxy).expect("connect");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");

    proxy.set_mode(ProxyMode::Blackhole).expect("blackhole");
    let err = ping(&mut con).expect_err("no answer through a blackhole");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(proxy.connections(), 1, "the connection stays open");

    proxy.set_mode(ProxyMode::Pass).expect("pass");
    let mut con = connect(&proxy).expect("connect after healing");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");
}

#[test]
fn reset_breaks_connections_and_pass_recovers() {
    let (_server, proxy) = setup();
    let mut con = connect(&proxy).expect("connect");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");

    proxy.set_mode(ProxyMode::Reset).expect("reset");
    assert_eq!(proxy.connections(), 0);
    let err = ping(&mut con).expect_err("the connection was reset");
    assert!(
        err.is_connection_dropped() || err.is_io_error(),
        "not a connection error: {err}"
    );
    assert!(
        connect(&proxy).and_then(|mut c| ping(&mut c)).is_err(),
        "new connections are reset too"
    );

    proxy.set_mode(ProxyMode::Pass).expect("pass");
    let mut con = connect(&proxy).expect("connect after reset");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");
}

#[test]
fn refuse_rejects_connects_and_pass_recovers() {
    let (_server, proxy) = setup();
    let mut existing = connect(&proxy).expect("connect");

    proxy.set_mode(ProxyMode::Refuse).expect("refuse");
    let err = TcpStream::connect(proxy.addr()).expect_err("connect is refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let Err(err) = connect(&proxy) else {
        panic!("redis connect is refused");
    };
    assert!(err.is_connection_refusal(), "{err}");
    assert!(
        ping(&mut existing).is_err(),
        "existing connections are closed"
    );

    proxy.set_mode(ProxyMode::Pass).expect("pass");
    let mut con = connect(&proxy).expect("connect after refusing");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");
}

#[tokio::test]
async fn works_from_inside_a_tokio_runtime() {
    let (_server, proxy) = setup();
    let client = redis::Client::open(proxy.url()).expect("client");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(SHORT));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");

    proxy.set_mode(ProxyMode::Blackhole).expect("blackhole");
    let err = redis::cmd("PING")
        .query_async::<String>(&mut con)
        .await
        .expect_err("no answer through a blackhole");
    assert!(err.is_timeout(), "{err}");

    // Held bytes are delivered once the partition heals.
    proxy.set_mode(ProxyMode::Pass).expect("pass");
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("PING after healing");
    assert_eq!(pong, "PONG");
}
