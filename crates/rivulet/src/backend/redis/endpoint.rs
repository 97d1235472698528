//! Where and how to connect: URL checks that give a clear, redacted configuration error
//! before any connection attempt (R-3, issue 14 item 6), credentials that can come from
//! the environment or a file, and `redis::Client`s with TLS.

use std::fmt;
use std::path::PathBuf;

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::conn::redact_url;
use super::tls::TlsOptions;
use crate::error::{Error, Result};

/// The schemes rivulet accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `redis://`
    Plain,
    /// `rediss://`
    Tls,
    /// `redis+unix://` or `unix://`
    Unix,
    /// `redis+sentinel://` (`tls`: `rediss+sentinel://`)
    Sentinel { tls: bool },
}

const SCHEMES: &str = "redis://, rediss://, redis+unix://, redis+sentinel:// or rediss+sentinel://";

fn bad(url: &str, why: impl fmt::Display) -> Error {
    Error::config(format!("invalid Redis URL {}: {why}", redact_url(url)))
}

/// Checks the parts of `url` that the `redis` crate reports badly (or not at all):
/// scheme, host, port, and for Sentinel the master name. Returns the scheme.
///
/// The userinfo ends at the **last** `@`, as in [`redact_url`], so a password with
/// `/ ? # @ :` in it does not hide the host.
pub(crate) fn check_url(url: &str) -> Result<Scheme> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(url, format_args!("no scheme (expected {SCHEMES})")));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => Scheme::Plain,
        "rediss" | "valkeys" => Scheme::Tls,
        "redis+unix" | "unix" | "valkey+unix" => Scheme::Unix,
        "redis+sentinel" => Scheme::Sentinel { tls: false },
        "rediss+sentinel" => Scheme::Sentinel { tls: true },
        // Show the text before `://` only when it can only be a scheme: with an `@`
        // after it, it may be a password (`secret://x@host` has no scheme).
        s if super::conn::is_scheme(s) && !url.contains('@') => {
            return Err(bad(
                url,
                format_args!("unknown scheme `{s}` (expected {SCHEMES})"),
            ));
        }
        s if super::conn::is_scheme(s) => {
            return Err(bad(
                url,
                format_args!("unknown scheme (expected {SCHEMES})"),
            ));
        }
        _ => return Err(bad(url, format_args!("no scheme (expected {SCHEMES})"))),
    };
    if scheme == Scheme::Unix {
        return Ok(scheme);
    }
    let host_part = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    let end = host_part.find(['/', '?', '#']).unwrap_or(host_part.len());
    let (authority, path) = host_part.split_at(end);
    match scheme {
        Scheme::Sentinel { .. } => {
            for addr in authority.split(',') {
                check_host_port(url, addr, true)?;
            }
            let master = path
                .strip_prefix('/')
                .and_then(|p| p.split(['/', '?', '#']).next())
                .unwrap_or("");
            if master.is_empty() {
                return Err(bad(
                    url,
                    "missing master name (redis+sentinel://host:port[,host:port…]/<master-name>)",
                ));
            }
        }
        _ => check_host_port(url, authority, false)?,
    }
    Ok(scheme)
}

fn check_host_port(url: &str, authority: &str, port_required: bool) -> Result<()> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(bad(url, "unclosed `[` in an IPv6 host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad(url, "missing host"));
    }
    match port {
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(()),
            Ok(n) => Err(bad(url, format_args!("port {n} out of range (1-65535)"))),
            Err(_) if p.is_empty() => Err(bad(url, "empty port")),
            Err(_) => Err(bad(url, "the port is not a number")),
        },
        None if port_required => Err(bad(
            url,
            format_args!(
                "missing port for sentinel `{host}` (sentinels listen on 26379 by default)"
            ),
        )),
        None => Ok(()),
    }
}

/// Where a password comes from.
#[derive(Clone)]
pub(crate) enum PasswordSource {
    Value(String),
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Value(_) => f.write_str("<redacted>"),
            PasswordSource::Env(var) => write!(f, "env {var}"),
            PasswordSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl PasswordSource {
    /// The password. Errors name the variable or file, never a value.
    pub(crate) fn resolve(&self) -> Result<String> {
        match self {
            PasswordSource::Value(v) => Ok(v.clone()),
            PasswordSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(v),
                Ok(_) => Err(Error::config(format!(
                    "the password environment variable {var} is empty"
                ))),
                Err(std::env::VarError::NotPresent) => Err(Error::config(format!(
                    "the password environment variable {var} is not set"
                ))),
                Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(format!(
                    "the password environment variable {var} is not valid UTF-8"
                ))),
            },
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::config(format!(
                        "cannot read the password file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?;
                // One trailing line break is the file's, not the password's.
                let pw = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                if pw.is_empty() {
                    return Err(Error::config(format!(
                        "the password file {} is empty",
                        path.display()
                    )));
                }
                Ok(pw.to_owned())
            }
        }
    }
}

/// A user name and password given outside the URL (they win over the URL's).
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<PasswordSource>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// Credentials with the password read.
#[derive(Clone, Default)]
pub(crate) struct Resolved {
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    pub(crate) fn resolve(&self) -> Result<Resolved> {
        Ok(Resolved {
            username: self.username.clone(),
            password: self
                .password
                .as_ref()
                .map(PasswordSource::resolve)
                .transpose()?,
        })
    }
}

impl Resolved {
    pub(crate) fn apply(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        info.set_redis_settings(settings)
    }

    pub(crate) fn apply_cluster(
        &self,
        mut builder: redis::cluster::ClusterClientBuilder,
    ) -> redis::cluster::ClusterClientBuilder {
        if let Some(u) = &self.username {
            builder = builder.username(u);
        }
        if let Some(p) = &self.password {
            builder = builder.password(p);
        }
        builder
    }
}

impl Resolved {
    /// These credentials, with `over`'s wherever it has some.
    pub(crate) fn merged(&self, over: &Resolved) -> Resolved {
        Resolved {
            username: over.username.clone().or_else(|| self.username.clone()),
            password: over.password.clone().or_else(|| self.password.clone()),
        }
    }
}

/// A parsed `redis+sentinel://[user:password@]host:port[,host:port…]/<master>[/<db>]`.
pub(crate) struct SentinelUrl {
    pub(crate) master: String,
    /// `host:port` of each sentinel.
    pub(crate) sentinels: Vec<String>,
    pub(crate) db: i64,
    /// The master's credentials.
    pub(crate) credentials: Resolved,
}

/// Parses a Sentinel URL that [`check_url`] accepted.
pub(crate) fn parse_sentinel_url(url: &str) -> Result<SentinelUrl> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, host_part) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let end = host_part.find(['/', '?', '#']).unwrap_or(host_part.len());
    let (authority, path) = host_part.split_at(end);
    let mut segments = path.trim_start_matches('/').split('/');
    let master = percent_decode(segments.next().unwrap_or(""), url)?;
    let db = match segments.next().filter(|s| !s.is_empty()) {
        Some(d) => d
            .parse::<i64>()
            .map_err(|_| bad(url, "the database after the master name is not a number"))?,
        None => 0,
    };
    let credentials = match userinfo {
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or(("", info));
            Resolved {
                username: Some(percent_decode(user, url)?).filter(|u| !u.is_empty()),
                password: Some(percent_decode(password, url)?).filter(|p| !p.is_empty()),
            }
        }
        None => Resolved::default(),
    };
    Ok(SentinelUrl {
        master,
        sentinels: authority.split(',').map(str::to_owned).collect(),
        db,
        credentials,
    })
}

fn percent_decode(s: &str, url: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(url, "a bad percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(url, "percent-encoding that is not UTF-8"))
}

/// Parses a checked URL into connection info, with a redacted configuration error.
pub(crate) fn connection_info(url: &str) -> Result<ConnectionInfo> {
    url.into_connection_info().map_err(|e| {
        bad(
            url,
            format_args!(
                "{} (percent-encode special characters of the password, or give it with \
                 password_from_env / password_file)",
                e.detail().unwrap_or("cannot be parsed")
            ),
        )
    })
}

/// A client for `info`, with TLS certificates when the address is a TLS one.
pub(crate) fn client(
    info: ConnectionInfo,
    certs: Option<&redis::TlsCertificates>,
    redacted: &str,
) -> Result<Client> {
    let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    let built = match certs {
        Some(certs) if tls => Client::build_with_tls(info, certs.clone()),
        _ => Client::open(info),
    };
    built.map_err(|e| match super::tls::failure(&e) {
        Some(failure) => Error::Tls {
            url: redacted.to_owned(),
            failure,
        },
        None => Error::config(format!("invalid Redis URL {redacted}: {e}")),
    })
}

/// Where a single-server URL leads: a client, or (with a TLS server-name override) a
/// connection rivulet sets up itself.
pub(crate) fn target_for(
    url: &str,
    tls: Option<&TlsOptions>,
    creds: &Resolved,
    connect_timeout: std::time::Duration,
) -> Result<super::conn::Target> {
    use super::conn::Target;
    let Some((options, name)) = tls.and_then(|t| Some((t, t.server_name_override()?))) else {
        return Ok(Target::Single(client_for(url, tls, creds)?));
    };
    if check_url(url)? != Scheme::Tls {
        return Err(Error::config(format!(
            "a TLS server name is given for {}, which is not a rediss:// URL",
            redact_url(url)
        )));
    }
    let info = creds.apply(connection_info(url)?);
    let named = super::tls::NamedTls::new(&info, options, name, connect_timeout)?;
    Ok(Target::Named(std::sync::Arc::new(named)))
}

/// A client for a single-server URL with optional TLS options and credentials.
pub(crate) fn client_for(url: &str, tls: Option<&TlsOptions>, creds: &Resolved) -> Result<Client> {
    let scheme = check_url(url)?;
    match scheme {
        Scheme::Sentinel { .. } => {
            return Err(bad(
                url,
                "a Sentinel URL needs RedisBackend::builder (or ::sentinel)",
            ));
        }
        Scheme::Plain | Scheme::Unix if tls.is_some() => {
            return Err(Error::config(format!(
                "TLS options given for {}, which is not a TLS URL: use rediss://",
                redact_url(url)
            )));
        }
        _ => {}
    }
    let certs = tls.map(TlsOptions::certificates).transpose()?;
    let info = creds.apply(connection_info(url)?);
    client(info, certs.as_ref(), &redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str) -> String {
        match check_url(url) {
            Err(Error::Config(msg)) => msg,
            other => panic!("{url:?}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(config_error("http://host:1").contains("unknown scheme `http`"));
        let e = config_error("qz1://kx7@host");
        assert!(
            e.contains("unknown scheme (") && !e.contains("qz1") && !e.contains("kx7"),
            "{e}"
        );
        assert!(config_error("host:6379").contains("no scheme"));
        assert!(config_error("").contains("no scheme"));
        assert!(config_error("redis://").contains("missing host"));
        assert!(config_error("redis://:6379/0").contains("missing host"));
        assert!(config_error("redis://u:p/w@:6379").contains("missing host"));
        assert!(config_error("redis://h:65536").contains("port 65536 out of range"));
        assert!(config_error("redis://h:0").contains("port 0 out of range"));
        assert!(config_error("redis://h:x1").contains("not a number"));
        assert!(config_error("redis://h:").contains("empty port"));
        assert!(config_error("redis://[::1").contains("unclosed"));
        assert!(config_error("redis+sentinel://h:26379").contains("missing master name"));
        assert!(config_error("redis+sentinel://h:26379,g/mymaster").contains("missing port"));
        assert!(config_error("redis+sentinel://h:26379,:1/m").contains("missing host"));
        for ok in [
            "redis://h",
            "redis://h:6379/0",
            "rediss://u:p@h:6380",
            "redis://[::1]:6379",
            "redis://u:a/b?c#d@e:f@h:1/2",
            "redis+unix:///tmp/redis.sock",
            "redis+sentinel://a:1,b:2/mymaster",
            "rediss+sentinel://u:p@a:1/mymaster/3",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn sentinel_urls_parse() {
        let u =
            parse_sentinel_url("redis+sentinel://app:p%40ss/w@a:1,b:2/mymaster/3").expect("parses");
        assert_eq!(u.master, "mymaster");
        assert_eq!(u.sentinels, ["a:1", "b:2"]);
        assert_eq!(u.db, 3);
        assert_eq!(u.credentials.username.as_deref(), Some("app"));
        assert_eq!(u.credentials.password.as_deref(), Some("p@ss/w"));
        let u = parse_sentinel_url("redis+sentinel://a:1/m").expect("parses");
        assert!(u.credentials.password.is_none() && u.db == 0);
    }

    #[test]
    fn tls_options_need_a_tls_url() {
        let tls = TlsOptions::new();
        let e =
            client_for("redis://h:1", Some(&tls), &Resolved::default()).expect_err("not a TLS URL");
        assert!(e.to_string().contains("use rediss://"), "{e}");
        assert!(client_for("rediss://h:1", Some(&tls), &Resolved::default()).is_ok());
        let bad_ca = TlsOptions::new().ca_pem("not a pem");
        let e =
            client_for("rediss://h:1", Some(&bad_ca), &Resolved::default()).expect_err("a bad CA");
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        let missing = TlsOptions::new().ca_file("/nonexistent/ca.pem");
        let e = client_for("rediss://h:1", Some(&missing), &Resolved::default())
            .expect_err("a missing file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
