//! TLS on rustls (no OpenSSL): the options a user gives, turned into the `redis` crate's
//! certificates, and TLS failures turned into [`TlsFailure`]s that say what failed.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result, TlsFailure};

/// TLS settings for every connection a [`RedisBackend`](crate::RedisBackend) opens
/// (shared, readers, live channels, cluster nodes, sentinels' masters). They need a
/// `rediss://` URL; without options, `rediss://` trusts the Mozilla root CAs
/// (webpki-roots), which is what managed services use.
///
/// ```no_run
/// # async fn f() -> rivulet::Result<()> {
/// use rivulet::{RedisBackend, TlsOptions};
///
/// let tls = TlsOptions::new()
///     .ca_file("/etc/redis/ca.pem")
///     .client_cert_files("/etc/redis/client.pem", "/etc/redis/client.key");
/// let backend = RedisBackend::builder("rediss://redis.internal:6380").tls(tls).await?;
/// # Ok(()) }
/// ```
///
/// `Debug` shows which settings are present, never a key.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    ca: Option<Pem>,
    client: Option<(Pem, Pem)>,
    server_name: Option<String>,
}

#[derive(Clone)]
enum Pem {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    fn load(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::Inline(bytes) => Ok(bytes.clone()),
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                Error::config(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            }),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Inline(_) => f.write_str("<inline PEM>"),
            Pem::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca)
            .field("client_cert", &self.client.as_ref().map(|(cert, _)| cert))
            .field("client_key", &self.client.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// No custom settings: the Mozilla root CAs, no client certificate.
    pub fn new() -> Self {
        TlsOptions::default()
    }

    /// Trusts only the CA certificates in `pem` (instead of the public roots).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Inline(pem.into()));
        self
    }

    /// Like [`ca_pem`](Self::ca_pem), read from a file when the backend is built.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// Presents this client certificate (chain) and private key, PEM (mutual TLS).
    pub fn client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client = Some((Pem::Inline(cert_pem.into()), Pem::Inline(key_pem.into())));
        self
    }

    /// Like [`client_cert`](Self::client_cert), read from files when the backend is built.
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

    /// Verifies the server's certificate against `name` instead of the URL's host: for
    /// connecting by IP address, through a tunnel or a proxy, to a server whose
    /// certificate names another host. Single endpoints only (a cluster or a Sentinel
    /// deployment names its nodes itself): elsewhere it is a configuration error.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The server-name override, if any.
    pub(crate) fn server_name_override(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The certificates for the `redis` crate, checked enough to fail here rather than
    /// at the first handshake.
    pub(crate) fn certificates(&self) -> Result<redis::TlsCertificates> {
        let root_cert = match &self.ca {
            Some(pem) => {
                let bytes = pem.load("CA certificate")?;
                if !contains(&bytes, b"-----BEGIN CERTIFICATE-----") {
                    return Err(Error::config("the TLS CA PEM holds no certificate"));
                }
                Some(bytes)
            }
            None => None,
        };
        let client_tls = match &self.client {
            Some((cert, key)) => {
                let client_cert = cert.load("client certificate")?;
                let client_key = key.load("client key")?;
                if !contains(&client_cert, b"-----BEGIN CERTIFICATE-----") {
                    return Err(Error::config(
                        "the TLS client certificate PEM holds no certificate",
                    ));
                }
                if !contains(&client_key, b"PRIVATE KEY-----") {
                    return Err(Error::config("the TLS client key PEM holds no private key"));
                }
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Makes `ring` the process's rustls crypto provider unless the application installed
/// one (rustls needs exactly one; this avoids a panic when several are compiled in).
pub(crate) fn install_crypto_provider() {
    // An error only means a provider is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TLS failure behind a connection error, if it is one. rustls's error is wrapped
/// in an `io::Error` that the `redis` crate keeps behind an `Arc`, so the text is the
/// reliable part: the names below are rustls's `Display` of its error variants.
pub(crate) fn failure(e: &redis::RedisError) -> Option<TlsFailure> {
    let text = full_text(e);
    let detail = || {
        text.split("invalid peer certificate: ")
            .nth(1)
            .unwrap_or(&text)
            .to_owned()
    };
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        return Some(TlsFailure::HostNameMismatch(detail()));
    }
    if text.contains("UnknownIssuer")
        || text.contains("BadSignature")
        || text.contains("invalid peer certificate")
    {
        return Some(TlsFailure::CertificateNotTrusted(detail()));
    }
    if text.contains("InvalidContentType")
        || text.contains("corrupt message")
        || text.contains("InvalidMessage")
    {
        return Some(TlsFailure::ServerNotTls);
    }
    if text.contains("CertificateRequired")
        || text.contains("received fatal alert: BadCertificate")
        || text.contains("received fatal alert: UnknownCA")
        || text.contains("received fatal alert: HandshakeFailure")
    {
        return Some(TlsFailure::ClientCertificateRefused(text.clone()));
    }
    if text.contains("Unable to parse")
        || text.contains("Unable to extract private key")
        || text.contains("Unable to build client with TLS")
    {
        return Some(TlsFailure::BadLocalCertificate(text.clone()));
    }
    None
}

/// The error's text with the text of its sources.
fn full_text(e: &redis::RedisError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Whether the server at `host:port` answers a plain-text `PING`: the diagnosis of a
/// TLS handshake that timed out (a plain-text Redis waits for a line break that a TLS
/// ClientHello never sends).
pub(crate) async fn speaks_plain_text(host: &str, port: u16, timeout: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.ok()?;
        Some(matches!(first[0], b'+' | b'-'))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

/// A single server reached over TLS with a server-name override: rivulet opens the TCP
/// connection and the TLS session itself (rustls), and hands the stream to the `redis`
/// crate, which verifies against the host it connects to and offers no other way.
pub(crate) struct NamedTls {
    host: String,
    port: u16,
    server_name: rustls::pki_types::ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
    redis: redis::RedisConnectionInfo,
    connect_timeout: std::time::Duration,
}

impl std::fmt::Debug for NamedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedTls")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn io_error(e: impl std::fmt::Display) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(e.to_string()))
}

impl NamedTls {
    /// From a parsed `rediss://` connection info and the options (with a server name).
    pub(crate) fn new(
        info: &redis::ConnectionInfo,
        options: &TlsOptions,
        server_name: &str,
        connect_timeout: std::time::Duration,
    ) -> Result<NamedTls> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let redis::ConnectionAddr::TcpTls { host, port, .. } = info.addr() else {
            return Err(Error::config("a TLS server name needs a rediss:// URL"));
        };
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| Error::config(format!("invalid TLS server name {server_name:?}")))?;
        let certs = options.certificates()?;
        let mut roots = rustls::RootCertStore::empty();
        match &certs.root_cert {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| {
                        Error::config(format!("the TLS CA PEM cannot be read: {e}"))
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| Error::config(format!("the TLS CA cannot be used: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let config = match &certs.client_tls {
            Some(client) => {
                let chain = CertificateDer::pem_slice_iter(&client.client_cert)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| {
                        Error::config(format!("the TLS client certificate cannot be read: {e}"))
                    })?;
                let key = PrivateKeyDer::from_pem_slice(&client.client_key).map_err(|e| {
                    Error::config(format!("the TLS client key cannot be read: {e}"))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::config(format!("the TLS client certificate cannot be used: {e}"))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(NamedTls {
            host: host.clone(),
            port: *port,
            server_name: name,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            redis: info.redis_settings().clone(),
            connect_timeout,
        })
    }

    pub(crate) fn db(&self) -> i64 {
        self.redis.db()
    }

    pub(crate) fn addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    async fn stream(
        &self,
    ) -> redis::RedisResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let timeout = self.connect_timeout;
        let open = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            self.connector.connect(self.server_name.clone(), tcp).await
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS session within {timeout:?}"),
            ))),
        }
    }

    /// A multiplexed connection.
    pub(crate) async fn connect(
        &self,
        config: &redis::AsyncConnectionConfig,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let stream = self.stream().await?;
        let setup =
            redis::aio::MultiplexedConnection::new_with_config(&self.redis, stream, config.clone());
        let (conn, driver) = tokio::time::timeout(self.connect_timeout, setup)
            .await
            .map_err(|_| io_error("no answer to the connection set-up"))??;
        tokio::spawn(driver);
        Ok(conn)
    }

    /// A pub/sub connection.
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let stream = self.stream().await?;
        redis::aio::PubSub::new(&self.redis, stream).await
    }
}
