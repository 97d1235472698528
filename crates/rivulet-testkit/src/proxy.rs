//! A fault-injecting TCP proxy.

use std::collections::VecDeque;
use std::fmt;
use std::future::pending;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::error::{Result, TestkitError};
use crate::ports::PortLease;

/// How long a mode switch waits for connections to be torn down, and how long
/// re-binding the listening port may take.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes a connection buffers per direction (in [`ProxyMode::Delay`]) before
/// it stops reading.
const MAX_IN_FLIGHT: usize = 1 << 20;
const READ_BUFFER: usize = 16 * 1024;

/// What a [`TcpProxy`] does with connections. Switching modes affects existing
/// connections as well as new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyMode {
    /// Forward bytes both ways.
    #[default]
    Pass,
    /// Forward bytes, delivering each chunk this long after it was received
    /// (latency, not a bandwidth limit).
    Delay(Duration),
    /// Accept connections and keep them open, but forward nothing, like a
    /// network partition: bytes are held (unread, as TCP would retransmit them)
    /// and delivered once the mode switches back to [`Pass`](Self::Pass) or
    /// [`Delay`](Self::Delay). New connections are accepted and then hang.
    Blackhole,
    /// Abort every connection with a TCP reset (`SO_LINGER` 0), and reset new
    /// connections right after accepting them.
    Reset,
    /// Close the listening socket so that connection attempts are refused
    /// (`ECONNREFUSED`); existing connections are closed. The same port is
    /// bound again when switching to another mode.
    Refuse,
}

enum Control {
    SetMode(ProxyMode, std_mpsc::SyncSender<io::Result<()>>),
}

/// A TCP proxy on 127.0.0.1 in front of an upstream server (usually a
/// [`RedisServer`](crate::RedisServer)), for injecting network faults.
///
/// The proxy runs on its own thread with its own single-threaded tokio
/// runtime, so it works the same from synchronous tests and from inside any
/// tokio runtime. It stops, closing all connections, when dropped.
///
/// ```no_run
/// # fn main() -> Result<(), rivulet_testkit::TestkitError> {
/// use std::time::Duration;
/// use rivulet_testkit::{ProxyMode, RedisServer, TcpProxy};
///
/// let server = RedisServer::start()?;
/// let proxy = TcpProxy::for_port(server.port())?;
/// // Point the code under test at `proxy.url()`, then:
/// proxy.set_mode(ProxyMode::Delay(Duration::from_millis(50)))?;
/// proxy.set_mode(ProxyMode::Blackhole)?;
/// proxy.set_mode(ProxyMode::Pass)?;
/// # Ok(())
/// # }
/// ```
pub struct TcpProxy {
    lease: PortLease,
    upstream: SocketAddr,
    control: Option<mpsc::UnboundedSender<Control>>,
    mode: watch::Receiver<ProxyMode>,
    connections: watch::Receiver<usize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpProxy")
            .field("port", &self.port())
            .field("upstream", &self.upstream)
            .field("mode", &self.mode())
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl TcpProxy {
    /// Starts a proxy in [`ProxyMode::Pass`] forwarding to `upstream`.
    ///
    /// The proxy is accepting connections when this returns.
    pub fn start(upstream: impl Into<SocketAddr>) -> Result<Self> {
        let upstream = upstream.into();
        let lease = PortLease::acquire(false)?;
        let port = lease.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestkitError::io("building the proxy runtime", e))?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(|l| {
                let _entered = runtime.enter();
                TcpListener::from_std(l)
            })
            .map_err(|e| TestkitError::io(format!("binding proxy port {port}"), e))?;

        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (mode_tx, mode_rx) = watch::channel(ProxyMode::Pass);
        let (conn_tx, conn_rx) = watch::channel(0);
        let acceptor = Acceptor {
            port,
            upstream,
            listener: Some(listener),
            mode: mode_tx,
            connections: Arc::new(conn_tx),
        };
        let thread = thread::Builder::new()
            .name(format!("testkit-proxy-{port}"))
            .spawn(move || runtime.block_on(acceptor.run(control_rx)))
            .map_err(|e| TestkitError::io("spawning the proxy thread", e))?;
        Ok(Self {
            lease,
            upstream,
            control: Some(control_tx),
            mode: mode_rx,
            connections: conn_rx,
            thread: Some(thread),
        })
    }

    /// Starts a proxy forwarding to `127.0.0.1:port`.
    pub fn for_port(port: u16) -> Result<Self> {
        Self::start((Ipv4Addr::LOCALHOST, port))
    }

    /// The port the proxy listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port()).into()
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A `redis://` URL pointing at the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// The number of live proxied connections.
    pub fn connections(&self) -> usize {
        *self.connections.borrow()
    }

    /// Switches the mode and waits until it is in effect: for
    /// [`Reset`](ProxyMode::Reset) and [`Refuse`](ProxyMode::Refuse), until
    /// existing connections are gone; for [`Refuse`](ProxyMode::Refuse), until
    /// the listener is closed; for the other modes, until it is listening.
    ///
    /// This blocks the calling thread briefly, which is harmless even on an
    /// async runtime's thread since the proxy runs on its own.
    pub fn set_mode(&self, mode: ProxyMode) -> Result<()> {
        let stopped = || {
            TestkitError::io(
                "switching proxy mode",
                io::Error::other("the proxy thread has stopped"),
            )
        };
        let (ack_tx, ack_rx) = std_mpsc::sync_channel(1);
        self.control
            .as_ref()
            .ok_or_else(stopped)?
            .send(Control::SetMode(mode, ack_tx))
            .map_err(|_| stopped())?;
        ack_rx
            .recv()
            .map_err(|_| stopped())?
            .map_err(|e| TestkitError::io(format!("switching proxy mode to {mode:?}"), e))
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Closing the control channel stops the acceptor, which drops the
        // mode sender, which closes every connection.
        self.control = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Owns the listening socket; runs on the proxy thread.
struct Acceptor {
    port: u16,
    upstream: SocketAddr,
    listener: Option<TcpListener>,
    mode: watch::Sender<ProxyMode>,
    connections: Arc<watch::Sender<usize>>,
}

enum Event {
    Control(Option<Control>),
    Accepted(io::Result<TcpStream>),
}

impl Acceptor {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        loop {
            let event = tokio::select! {
                biased;
                command = control.recv() => Event::Control(command),
                accepted = accept(self.listener.as_ref()) => Event::Accepted(accepted),
            };
            match event {
                Event::Control(None) => return,
                Event::Control(Some(Control::SetMode(mode, ack))) => {
                    let _ = ack.send(self.switch(mode).await);
                }
                Event::Accepted(Ok(stream)) => self.handle(stream),
                // E.g. the client gave up before being accepted, or EMFILE:
                // nothing to do for this connection.
                Event::Accepted(Err(_)) => {}
            }
        }
    }

    async fn switch(&mut self, mode: ProxyMode) -> io::Result<()> {
        self.mode.send_replace(mode);
        if mode == ProxyMode::Refuse {
            self.listener = None;
        } else if self.listener.is_none() {
            self.listener = Some(self.rebind().await?);
        }
        if matches!(mode, ProxyMode::Reset | ProxyMode::Refuse) {
            let mut count = self.connections.subscribe();
            timeout(SWITCH_TIMEOUT, count.wait_for(|&n| n == 0))
                .await
                .map_err(|_| io::Error::other("connections did not close in time"))?
                .map_err(|_| io::Error::other("connection counter closed"))?;
        }
        Ok(())
    }

    async fn rebind(&self) -> io::Result<TcpListener> {
        let deadline = Instant::now() + SWITCH_TIMEOUT;
        loop {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).await {
                Ok(listener) => return Ok(listener),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn handle(&self, stream: TcpStream) {
        match *self.mode.borrow() {
            ProxyMode::Reset | ProxyMode::Refuse => reset(stream),
            ProxyMode::Pass | ProxyMode::Delay(_) | ProxyMode::Blackhole => {
                let guard = ConnectionGuard::new(Arc::clone(&self.connections));
                tokio::spawn(proxy_connection(
                    stream,
                    self.upstream,
                    self.mode.subscribe(),
                    guard,
                ));
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => pending().await,
    }
}

/// Closes `stream` with a TCP reset instead of an orderly shutdown.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Counts a live connection until dropped.
struct ConnectionGuard(Arc<watch::Sender<usize>>);

impl ConnectionGuard {
    fn new(counter: Arc<watch::Sender<usize>>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(counter)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader reached end of stream, which was passed on.
    Eof,
    /// The connection must be closed (proxy stopped, or `Refuse`).
    Close,
    /// The connection must be reset.
    Reset,
    /// An I/O error on either side.
    Error,
}

async fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    guard: ConnectionGuard,
) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(_) => {
            // The closest a proxy gets to "connection refused".
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let to_server = pump(client_read, server_write, mode.clone());
        let to_client = pump(server_read, client_write, mode);
        tokio::pin!(to_server, to_client);
        // Half-closes are passed on; anything else ends the whole connection.
        tokio::select! {
            end = &mut to_server => if end == End::Eof { to_client.await } else { end },
            end = &mut to_client => if end == End::Eof { to_server.await } else { end },
        }
    };
    if end == End::Reset {
        reset(client);
        reset(server);
    } else {
        drop(client);
        drop(server);
    }
    // Only now, with both sockets closed, does the connection stop counting.
    drop(guard);
}

/// Copies `reader` to `writer` according to the current mode.
async fn pump<R, W>(mut reader: R, mut writer: W, mut mode: watch::Receiver<ProxyMode>) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Chunks read but not yet written, with the instant they are due.
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buffered = 0;
    let mut eof = false;
    let mut buf = vec![0; READ_BUFFER];
    loop {
        let current = *mode.borrow_and_update();
        let delay = match current {
            ProxyMode::Reset => return End::Reset,
            ProxyMode::Refuse => return End::Close,
            ProxyMode::Blackhole => None,
            ProxyMode::Pass => Some(Duration::ZERO),
            ProxyMode::Delay(delay) => Some(delay),
        };
        if delay.is_some() {
            while let Some((due, _)) = in_flight.front()
                && *due <= Instant::now()
            {
                let (_, chunk) = in_flight.pop_front().expect("front exists");
                buffered -= chunk.len();
                if let Err(end) = write_chunk(&mut writer, &chunk, &mut mode).await {
                    return end;
                }
            }
            if eof && in_flight.is_empty() {
                let _ = writer.shutdown().await;
                return End::Eof;
            }
        }
        let next_due = delay.and(in_flight.front().map(|(due, _)| *due));
        let can_read = delay.is_some() && !eof && buffered < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            changed = mode.changed() => if changed.is_err() {
                return End::Close;
            },
            () = sleep_until_some(next_due) => {}
            read = read_if(can_read, &mut reader, &mut buf) => match read {
                Ok(0) => eof = true,
                Ok(n) => {
                    let due = Instant::now() + delay.unwrap_or_default();
                    in_flight.push_back((due, buf[..n].to_vec()));
                    buffered += n;
                }
                Err(_) => return End::Error,
            },
        }
    }
}

/// Writes a whole chunk unless the mode switches to one that ends the
/// connection meanwhile.
async fn write_chunk<W: AsyncWrite + Unpin>(
    writer: &mut W,
    chunk: &[u8],
    mode: &mut watch::Receiver<ProxyMode>,
) -> Result<(), End> {
    let write = writer.write_all(chunk);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written.map_err(|_| End::Error),
            changed = mode.changed() => {
                if changed.is_err() {
                    return Err(End::Close);
                }
                match *mode.borrow() {
                    ProxyMode::Reset => return Err(End::Reset),
                    ProxyMode::Refuse => return Err(End::Close),
                    _ => {}
                }
            }
        }
    }
}

async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => sleep_until(due).await,
        None => pending().await,
    }
}

async fn read_if<R: AsyncRead + Unpin>(
    enabled: bool,
    reader: &mut R,
    buf: &mut [u8],
) -> io::Result<usize> {
    if enabled {
        reader.read(buf).await
    } else {
        pending().await
    }
}
