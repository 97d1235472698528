//! A real `redis-server` child process.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Result, TestkitError};
use crate::ports::PortLease;
use crate::tls::{self, DEFAULT_SERVER_NAMES, TestCa};

/// Environment variable overriding the `redis-server` binary to run.
pub const REDIS_SERVER_ENV: &str = "RIVULET_REDIS_SERVER";
/// Environment variable overriding the `redis-sentinel` binary to run.
pub const REDIS_SENTINEL_ENV: &str = "RIVULET_REDIS_SENTINEL";
const SENTINEL_CONFIG_FILE: &str = "sentinel.conf";

/// How many log lines startup errors include.
const ERROR_LOG_LINES: usize = 40;
/// Pause between readiness probes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeouts of the short-lived connections the testkit opens itself.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(2);
const LOG_FILE: &str = "redis.log";
const TLS_CA_FILE: &str = "ca.pem";
const TLS_CERT_FILE: &str = "server.pem";
const TLS_KEY_FILE: &str = "server.key";
const STDERR_FILE: &str = "stderr.log";

/// Configuration for a [`RedisServer`]; obtained from [`RedisServer::builder`].
///
/// The defaults are tuned for tests: RDB snapshots off (`--save ""`), AOF off,
/// `appendfsync everysec` when AOF is turned on, bound to 127.0.0.1 only, and
/// `DEBUG` allowed from local connections.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RedisServerBuilder {
    binary: PathBuf,
    aof: bool,
    appendfsync: String,
    maxmemory: Option<String>,
    password: Option<String>,
    extra_args: Vec<(String, String)>,
    startup_timeout: Duration,
    cluster_node_timeout: Option<Duration>,
    tls: Option<TlsSettings>,
    acl_users: Vec<AclUser>,
    /// Sentinel mode: the lines of the sentinel's configuration file.
    sentinel_config: Option<String>,
}

/// TLS settings of a test server.
#[derive(Debug, Clone)]
struct TlsSettings {
    server_names: Vec<String>,
    require_client_cert: bool,
    /// Certificates shared with other servers (a cluster's nodes); generated if `None`.
    ca: Option<TestCa>,
}

/// An ACL user created after startup (and again after each restart).
#[derive(Clone)]
struct AclUser {
    name: String,
    password: String,
    rules: Vec<String>,
}

impl fmt::Debug for AclUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        let binary = std::env::var_os(REDIS_SERVER_ENV)
            .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
        Self {
            binary,
            aof: false,
            appendfsync: "everysec".to_owned(),
            maxmemory: None,
            password: None,
            extra_args: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            cluster_node_timeout: None,
            tls: None,
            acl_users: Vec::new(),
            sentinel_config: None,
        }
    }
}

impl RedisServerBuilder {
    /// Turns the append-only file on or off (`--appendonly`). Off by default.
    pub fn aof(mut self, enabled: bool) -> Self {
        self.aof = enabled;
        self
    }

    /// Sets `--appendfsync` (`always`, `everysec` or `no`). Only matters with
    /// [`aof(true)`](Self::aof).
    pub fn appendfsync(mut self, policy: impl Into<String>) -> Self {
        self.appendfsync = policy.into();
        self
    }

    /// Sets `--maxmemory`, e.g. `"64mb"`.
    pub fn maxmemory(mut self, limit: impl Into<String>) -> Self {
        self.maxmemory = Some(limit.into());
        self
    }

    /// Requires clients to authenticate (`--requirepass`). The password is
    /// embedded in [`RedisServer::url`].
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Appends a configuration option, e.g. `extra_arg("--save", "900 1")`.
    ///
    /// The leading `--` is optional. Extra options come after the testkit's own
    /// options, so they override them.
    pub fn extra_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let name = if name.starts_with("--") {
            name
        } else {
            format!("--{name}")
        };
        self.extra_args.push((name, value.into()));
        self
    }

    /// How long to wait for the server to answer `PING` (10 s by default).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Runs this binary instead of `redis-server` from `PATH` (or from the
    /// `RIVULET_REDIS_SERVER` environment variable).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Serves TLS only (`tls-port`, plain port off), with a CA and certificates generated
    /// at startup (see [`RedisServer::tls_ca`]). The server certificate is valid for
    /// `localhost` and `127.0.0.1` unless [`tls_server_names`](Self::tls_server_names)
    /// says otherwise; client certificates are optional unless
    /// [`tls_require_client_cert`](Self::tls_require_client_cert).
    pub fn tls(mut self) -> Self {
        self.tls.get_or_insert_with(|| TlsSettings {
            server_names: DEFAULT_SERVER_NAMES
                .iter()
                .map(|n| (*n).to_owned())
                .collect(),
            require_client_cert: false,
            ca: None,
        });
        self
    }

    /// Serves TLS with these certificates instead of generating some (servers that talk
    /// to each other, like a cluster's nodes, need one CA). Implies [`tls`](Self::tls).
    pub fn tls_certificates(mut self, ca: TestCa) -> Self {
        self = self.tls();
        if let Some(t) = &mut self.tls {
            t.ca = Some(ca);
        }
        self
    }

    /// The names (DNS names or IP addresses) the server certificate is valid for, besides
    /// `localhost` (always in, for the test kit's own probes). Implies [`tls`](Self::tls).
    pub fn tls_server_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self = self.tls();
        if let Some(t) = &mut self.tls {
            t.server_names = names.iter().map(|n| n.as_ref().to_owned()).collect();
        }
        self
    }

    /// Requires clients to present a certificate of the test CA (mutual TLS,
    /// `tls-auth-clients yes`). Implies [`tls`](Self::tls).
    pub fn tls_require_client_cert(mut self, required: bool) -> Self {
        self = self.tls();
        if let Some(t) = &mut self.tls {
            t.require_client_cert = required;
        }
        self
    }

    /// Creates an ACL user once the server is up (and after each restart):
    /// `ACL SETUSER <name> reset on ><password> <rules…>`, e.g. rules
    /// `["~app/*", "&app/*", "+@read"]`. The default user stays unrestricted, for the
    /// test kit's own probes; connect as the user with [`RedisServer::url_for_user`].
    pub fn acl_user<S: AsRef<str>>(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        rules: &[S],
    ) -> Self {
        self.acl_users.push(AclUser {
            name: name.into(),
            password: password.into(),
            rules: rules.iter().map(|r| r.as_ref().to_owned()).collect(),
        });
        self
    }

    /// Runs a sentinel (`redis-sentinel`, or `RIVULET_REDIS_SENTINEL`) with these
    /// configuration lines instead of a server.
    pub(crate) fn sentinel(mut self, config: String) -> Self {
        self.binary = std::env::var_os(REDIS_SENTINEL_ENV)
            .map_or_else(|| PathBuf::from("redis-sentinel"), PathBuf::from);
        self.sentinel_config = Some(config);
        self
    }

    /// Makes this a Redis Cluster node with the given node timeout.
    pub(crate) fn cluster_node(mut self, node_timeout: Duration) -> Self {
        self.cluster_node_timeout = Some(node_timeout);
        self
    }

    /// Starts the server and waits until it answers `PING`.
    ///
    /// If the chosen port turns out to be taken by another process, startup is
    /// retried a few times on other ports.
    pub fn start(self) -> Result<RedisServer> {
        const PORT_ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            match RedisServer::launch(self.clone()) {
                Err(err @ TestkitError::Startup { .. })
                    if attempt < PORT_ATTEMPTS && is_port_conflict(&err) =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The TLS options: TLS on `port`, replication over TLS.
    fn tls_args(&self, port: u16, dir: &Path) -> Vec<String> {
        let Some(t) = &self.tls else {
            return Vec::new();
        };
        let auth = if t.require_client_cert {
            "yes"
        } else {
            "optional"
        };
        let file = |name: &str| dir.join(name).display().to_string();
        vec![
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file(TLS_CERT_FILE),
            "--tls-key-file".to_owned(),
            file(TLS_KEY_FILE),
            "--tls-ca-cert-file".to_owned(),
            file(TLS_CA_FILE),
            "--tls-auth-clients".to_owned(),
            auth.to_owned(),
            "--tls-replication".to_owned(),
            "yes".to_owned(),
        ]
    }

    fn args(&self, port: u16, dir: &Path) -> Vec<String> {
        if self.sentinel_config.is_some() {
            let plain_port = if self.tls.is_some() { 0 } else { port };
            let mut args: Vec<String> = [
                dir.join(SENTINEL_CONFIG_FILE).display().to_string(),
                "--sentinel".to_owned(),
                "--port".to_owned(),
                plain_port.to_string(),
                "--bind".to_owned(),
                "127.0.0.1".to_owned(),
                "--dir".to_owned(),
                dir.display().to_string(),
                "--logfile".to_owned(),
                dir.join(LOG_FILE).display().to_string(),
                "--daemonize".to_owned(),
                "no".to_owned(),
            ]
            .into();
            if let Some(password) = &self.password {
                args.extend(["--requirepass".to_owned(), password.clone()]);
            }
            args.extend(self.tls_args(port, dir));
            return args;
        }
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let plain_port = if self.tls.is_some() { 0 } else { port };
        let mut args: Vec<String> = [
            ("--port", plain_port.to_string()),
            ("--bind", "127.0.0.1".to_owned()),
            ("--dir", dir.display().to_string()),
            ("--logfile", dir.join(LOG_FILE).display().to_string()),
            ("--daemonize", "no".to_owned()),
            ("--save", String::new()),
            ("--appendonly", yes_no(self.aof)),
            ("--appendfsync", self.appendfsync.clone()),
            ("--enable-debug-command", "local".to_owned()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect();
        if let Some(limit) = &self.maxmemory {
            args.extend(["--maxmemory".to_owned(), limit.clone()]);
        }
        if let Some(password) = &self.password {
            // `masterauth` lets replicas of a password-protected master sync.
            args.extend(["--requirepass".to_owned(), password.clone()]);
            args.extend(["--masterauth".to_owned(), password.clone()]);
        }
        args.extend(self.tls_args(port, dir));
        if self.tls.is_some() {
            args.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
        }
        if let Some(timeout) = self.cluster_node_timeout {
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout.as_millis().to_string(),
                    // Start replica full syncs right away instead of after 5 s.
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .map(str::to_owned),
            );
        }
        for (name, value) in &self.extra_args {
            args.extend([name.clone(), value.clone()]);
        }
        args
    }
}

fn is_port_conflict(err: &TestkitError) -> bool {
    matches!(err, TestkitError::Startup { log_tail, .. } if log_tail.contains("Address already in use"))
}

/// A `redis-server` process owned by a test.
///
/// The server listens on 127.0.0.1 on a random free port in 20000..55535 and
/// keeps its data (and its log, `redis.log`) in a fresh temporary directory.
/// Dropping it kills the process (`SIGKILL`) and removes the directory.
///
/// ```no_run
/// # fn main() -> Result<(), rivulet_testkit::TestkitError> {
/// use rivulet_testkit::RedisServer;
///
/// let mut server = RedisServer::builder().aof(true).appendfsync("always").start()?;
/// let mut con = server.connection()?;
/// redis::cmd("SET").arg("k").arg("v").exec(&mut con).expect("SET");
/// server.restart()?; // same port, same data directory
/// # Ok(())
/// # }
/// ```
pub struct RedisServer {
    config: RedisServerBuilder,
    lease: PortLease,
    dir: TempDir,
    child: Mutex<Child>,
    pid: u32,
    tls: Option<TestCa>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port())
            .field("pid", &self.pid)
            .field("data_dir", &self.data_dir())
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// Starts a server with the default configuration.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// Returns a builder to configure the server before starting it.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    fn launch(config: RedisServerBuilder) -> Result<Self> {
        let lease = PortLease::acquire(config.cluster_node_timeout.is_some())?;
        let dir = tempfile::Builder::new()
            .prefix("rivulet-redis-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating a data directory", e))?;
        let tls = match &config.tls {
            Some(TlsSettings { ca: Some(ca), .. }) => {
                tls::install_crypto_provider();
                ca.write_server_files(dir.path())?;
                Some(ca.clone())
            }
            Some(t) => {
                tls::install_crypto_provider();
                // `localhost` is always in, for the test kit's own probes.
                let mut names: Vec<&str> = t.server_names.iter().map(String::as_str).collect();
                if !names.contains(&"localhost") {
                    names.push("localhost");
                }
                let ca = TestCa::generate(&names)?;
                ca.write_server_files(dir.path())?;
                Some(ca)
            }
            None => None,
        };
        if let Some(lines) = &config.sentinel_config {
            // Sentinels rewrite their file, so it lives in the data directory.
            let path = dir.path().join(SENTINEL_CONFIG_FILE);
            std::fs::write(&path, lines)
                .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
        }
        let child = spawn(&config, lease.port(), dir.path())?;
        let server = Self {
            pid: child.id(),
            child: Mutex::new(child),
            config,
            lease,
            dir,
            tls,
        };
        server.wait_ready()?;
        server.create_acl_users()?;
        Ok(server)
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// A `redis://` URL for the server, e.g. `redis://127.0.0.1:23456/`.
    ///
    /// If the server was built with a password, it is part of the URL (percent-encoded).
    pub fn url(&self) -> String {
        let scheme = self.scheme();
        match &self.config.password {
            Some(password) => format!(
                "{scheme}://:{}@127.0.0.1:{}/",
                percent_encode(password),
                self.port()
            ),
            None => format!("{scheme}://127.0.0.1:{}/", self.port()),
        }
    }

    /// `redis` or, for a [TLS](RedisServerBuilder::tls) server, `rediss`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// A URL that logs in as the [ACL user](RedisServerBuilder::acl_user) `name`
    /// (user name and password percent-encoded).
    pub fn url_for_user(&self, name: &str) -> Option<String> {
        let user = self.config.acl_users.iter().find(|u| u.name == name)?;
        Some(format!(
            "{}://{}:{}@127.0.0.1:{}/",
            self.scheme(),
            percent_encode(&user.name),
            percent_encode(&user.password),
            self.port()
        ))
    }

    /// The CA and certificates of a [TLS](RedisServerBuilder::tls) server.
    pub fn tls_ca(&self) -> Option<&TestCa> {
        self.tls.as_ref()
    }

    /// The pid of the current `redis-server` process (it changes on restart).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's working and data directory (`--dir`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// The last `lines` lines of the server's log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of_file(&self.log_path(), lines).unwrap_or_default()
    }

    /// A client for this server.
    pub fn client(&self) -> Result<redis::Client> {
        let context = || format!("opening a client for {}", self.url());
        match &self.tls {
            // By name, which the certificate always covers.
            Some(ca) => redis::Client::build_with_tls(
                self.url().replacen("127.0.0.1", "localhost", 1),
                ca.client_certificates(),
            )
            .map_err(|e| TestkitError::redis(context(), e)),
            None => redis::Client::open(self.url()).map_err(|e| TestkitError::redis(context(), e)),
        }
    }

    /// A fresh synchronous connection with short (2 s) read and write
    /// timeouts, for setup and assertions in tests.
    pub fn connection(&self) -> Result<redis::Connection> {
        let context = || format!("connecting to {}", self.url());
        let con = self
            .client()?
            .get_connection_with_timeout(PROBE_CONNECT_TIMEOUT)
            .map_err(|e| TestkitError::redis(context(), e))?;
        con.set_read_timeout(Some(PROBE_IO_TIMEOUT))
            .and_then(|()| con.set_write_timeout(Some(PROBE_IO_TIMEOUT)))
            .map_err(|e| TestkitError::redis(context(), e))?;
        Ok(con)
    }

    /// Whether the process is still alive (a paused process counts as alive).
    pub fn is_running(&self) -> bool {
        matches!(self.lock_child().try_wait(), Ok(None))
    }

    /// Kills the process with `SIGKILL` and waits for it to exit.
    ///
    /// Nothing is flushed: only data already in the AOF (see
    /// [`appendfsync`](RedisServerBuilder::appendfsync)) survives a
    /// [`restart`](Self::restart). Killing an exited server is a no-op.
    pub fn kill(&mut self) -> Result<()> {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if child
            .try_wait()
            .map_err(|e| TestkitError::io("checking redis-server status", e))?
            .is_some()
        {
            return Ok(());
        }
        child
            .kill()
            .and_then(|()| child.wait())
            .map_err(|e| TestkitError::io(format!("killing redis-server pid {}", self.pid), e))?;
        Ok(())
    }

    /// Stops the process gracefully with `SIGTERM` (Redis flushes its AOF and
    /// exits) and waits for it to exit; a paused process is resumed first.
    ///
    /// If it does not exit within 10 s it is killed and an error is returned.
    /// Stopping an exited server is a no-op.
    pub fn stop(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        for signal in ["TERM", "CONT"] {
            match self.signal(signal) {
                // Already gone (e.g. it exited right after SIGTERM): fine.
                Ok(()) | Err(TestkitError::NotRunning { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill()?;
                return Err(TestkitError::Timeout {
                    what: format!("redis-server pid {} to exit after SIGTERM", self.pid),
                    waited: STOP_TIMEOUT,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts a new process with the same configuration, on the same port and
    /// with the same data directory, and waits until it answers `PING`.
    ///
    /// A still running process is first [stopped](Self::stop) gracefully; call
    /// [`kill`](Self::kill) before to simulate a crash instead. With AOF on,
    /// the data survives.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let child = spawn(&self.config, self.port(), self.dir.path())?;
        self.pid = child.id();
        *self.child.get_mut().unwrap_or_else(PoisonError::into_inner) = child;
        self.wait_ready()?;
        self.create_acl_users()
    }

    fn create_acl_users(&self) -> Result<()> {
        if self.config.acl_users.is_empty() {
            return Ok(());
        }
        let mut con = self.connection()?;
        for user in &self.config.acl_users {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER")
                .arg(&user.name)
                .arg("reset")
                .arg("on")
                .arg(format!(">{}", user.password));
            for rule in &user.rules {
                cmd.arg(rule);
            }
            cmd.exec(&mut con).map_err(|e| {
                TestkitError::redis(format!("creating ACL user {:?}", user.name), e)
            })?;
        }
        Ok(())
    }

    /// Freezes the process with `SIGSTOP`: connections stay open but nothing
    /// is answered until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// Continues a process frozen by [`pause`](Self::pause) (`SIGCONT`).
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn lock_child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.lock_child()
            .try_wait()
            .map_err(|e| TestkitError::io("checking redis-server status", e))
    }

    /// Sends a signal with `kill(1)`; `unsafe` is forbidden in this workspace.
    fn signal(&self, signal: &str) -> Result<()> {
        // Holding the lock keeps the child from being reaped concurrently, so
        // the pid cannot have been reused by another process.
        let mut child = self.lock_child();
        let context = || format!("sending SIG{signal} to redis-server pid {}", self.pid);
        if child
            .try_wait()
            .map_err(|e| TestkitError::io(context(), e))?
            .is_some()
        {
            return Err(TestkitError::NotRunning {
                pid: self.pid,
                port: self.port(),
            });
        }
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| TestkitError::io(context(), e))?;
        if status.success() {
            Ok(())
        } else {
            Err(TestkitError::io(
                context(),
                io::Error::other(format!("kill exited with {status}")),
            ))
        }
    }

    fn wait_ready(&self) -> Result<()> {
        let timeout = self.config.startup_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(self.startup_error(format!("process exited early ({status})")));
            }
            let error = match self.ping() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(
                    self.startup_error(format!("no PONG within {timeout:?}; last error: {error}"))
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn ping(&self) -> Result<()> {
        let mut con = self.connection()?;
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map(drop)
            .map_err(|e| TestkitError::redis("PING", e))
    }

    fn startup_error(&self, reason: String) -> TestkitError {
        let mut log_tail = format!(
            "--- last {ERROR_LOG_LINES} lines of {} ---\n{}",
            self.log_path().display(),
            self.log_tail(ERROR_LOG_LINES)
        );
        let stderr =
            tail_of_file(&self.dir.path().join(STDERR_FILE), ERROR_LOG_LINES).unwrap_or_default();
        if !stderr.trim().is_empty() {
            log_tail.push_str("\n--- stderr ---\n");
            log_tail.push_str(&stderr);
        }
        TestkitError::Startup {
            port: self.port(),
            reason,
            log_tail,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Best effort: there is nobody to report an error to.
        let _ = self.kill();
    }
}

fn spawn(config: &RedisServerBuilder, port: u16, dir: &Path) -> Result<Child> {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(dir.join(STDERR_FILE))
        .map_err(|e| TestkitError::io("creating the stderr file", e))?;
    Command::new(&config.binary)
        .args(config.args(port, dir))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|source| TestkitError::Spawn {
            binary: config.binary.clone(),
            source,
        })
}

/// `s` with everything but unreserved URL characters percent-encoded, for a userinfo.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The last `lines` lines of a file, reading at most its last 64 KiB.
fn tail_of_file(path: &Path, lines: usize) -> io::Result<String> {
    const MAX_BYTES: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}
