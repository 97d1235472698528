//! Test infrastructure for rivulet: real `redis-server` processes, Redis
//! Clusters and a fault-injecting TCP proxy.
//!
//! Everything here starts from scratch and cleans up after itself: servers run
//! on random free ports in 20000..55535 (never 6379) with their own temporary
//! data directories, and are killed when dropped. Readiness is detected by
//! polling, never by sleeping, and startup failures include the tail of the
//! server log.
//!
//! - [`RedisServer`]: one `redis-server` child process that can be killed,
//!   stopped, paused and restarted on the same port with the same data.
//! - [`RedisCluster`]: a Redis Cluster of such servers, optionally with
//!   replicas, with helpers for failover and node restarts.
//! - [`RedisSentinel`]: a master, a replica and three sentinels, for failover tests.
//! - [`TestCa`]: certificates generated at test time, for TLS servers
//!   ([`RedisServerBuilder::tls`]).
//! - [`TcpProxy`]: a proxy that can delay, blackhole, reset or refuse
//!   connections, switchable at runtime.
//!
//! `redis-server` is looked up in `PATH`; set `RIVULET_REDIS_SERVER` to use
//! another binary.
//!
//! # Example
//!
//! ```no_run
//! use rivulet_testkit::{ProxyMode, RedisServer, TcpProxy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut server = RedisServer::builder()
//!     .aof(true)
//!     .appendfsync("always")
//!     .start()?;
//! let proxy = TcpProxy::for_port(server.port())?;
//!
//! let client = redis::Client::open(proxy.url())?;
//! let mut con = client.get_connection()?;
//! redis::cmd("SET").arg("greeting").arg("hello").exec(&mut con)?;
//!
//! // Simulate a network partition, then heal it.
//! proxy.set_mode(ProxyMode::Blackhole)?;
//! proxy.set_mode(ProxyMode::Pass)?;
//!
//! // Crash the server and bring it back with its AOF.
//! server.kill()?;
//! server.restart()?;
//! let value: String = redis::cmd("GET").arg("greeting").query(&mut server.connection()?)?;
//! assert_eq!(value, "hello");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod cluster;
mod error;
mod ports;
mod proxy;
mod sentinel;
mod server;
mod tls;

pub use cluster::{RedisCluster, RedisClusterBuilder, SLOT_COUNT, key_slot};
pub use error::{Result, TestkitError};
pub use ports::PortLease;
pub use proxy::{ProxyMode, TcpProxy};
pub use sentinel::{RedisSentinel, RedisSentinelBuilder, SENTINEL_MASTER_NAME};
pub use server::{REDIS_SENTINEL_ENV, REDIS_SERVER_ENV, RedisServer, RedisServerBuilder};
pub use tls::{CertAndKey, DEFAULT_SERVER_NAMES, TestCa};
