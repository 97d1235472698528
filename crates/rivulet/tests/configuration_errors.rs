//! Bad URLs and bad options are typed configuration errors with a clear message, raised
//! before any connection attempt (issue 14 item 6): a listener counts the connections
//! made to it, and must count none.

#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::time::Duration;

use rivulet::{ErrorKind, RedisBackend, RedisBackendBuilder, TlsOptions};

#[tokio::test]
async fn bad_urls_and_options_fail_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("its address").port();

    let cases: Vec<(RedisBackendBuilder, &str)> = vec![
        (
            RedisBackend::builder(format!("http://127.0.0.1:{port}")),
            "unknown scheme `http`",
        ),
        (
            RedisBackend::builder(format!("127.0.0.1:{port}")),
            "no scheme",
        ),
        (
            RedisBackend::builder(format!("redis://:{port}/0")),
            "missing host",
        ),
        (
            RedisBackend::builder("redis://127.0.0.1:70000"),
            "port 70000 out of range",
        ),
        (
            RedisBackend::builder(format!("redis://127.0.0.1:{port}")).tls(TlsOptions::new()),
            "use rediss://",
        ),
        (
            RedisBackend::builder(format!("rediss://127.0.0.1:{port}"))
                .tls(TlsOptions::new().ca_pem("not a certificate")),
            "holds no certificate",
        ),
        (
            RedisBackend::builder(format!("rediss://127.0.0.1:{port}")).tls(
                TlsOptions::new().client_cert_files("/nonexistent/c.pem", "/nonexistent/c.key"),
            ),
            "/nonexistent/c.pem",
        ),
        (
            RedisBackend::builder(format!("redis+sentinel://127.0.0.1:{port}")),
            "missing master name",
        ),
        (
            RedisBackend::builder(format!("redis+sentinel://127.0.0.1:{port},other/m")),
            "missing port",
        ),
        (
            RedisBackendBuilder::sentinel("m", &[format!("127.0.0.1:{port}")])
                .tls(TlsOptions::new().server_name("x.example")),
            "single endpoint",
        ),
        (
            RedisBackend::builder(format!("redis://127.0.0.1:{port}"))
                .password_file("/nonexistent/password"),
            "cannot read the password file /nonexistent/password",
        ),
        (
            RedisBackend::builder(format!("redis://127.0.0.1:{port}")).prefix("a/b"),
            "key prefix",
        ),
    ];
    for (builder, expected) in cases {
        let shown = format!("{builder:?}");
        let e = builder
            .connect_timeout(Duration::from_millis(200))
            .await
            .expect_err(expected);
        assert_eq!(e.kind(), ErrorKind::Config, "{expected}: {e}");
        assert!(
            e.to_string().contains(expected),
            "{expected:?} not in {e} ({shown})"
        );
    }
    assert!(
        listener.accept().is_err(),
        "a connection was attempted for a bad configuration"
    );
}
