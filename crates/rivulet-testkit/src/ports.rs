//! Free-port selection.
//!
//! Ports are picked at random from [`PORT_RANGE`] (well below the ephemeral
//! range, far from 6379) and checked by binding them. Ports handed out are
//! remembered process-wide until their [`PortLease`] is dropped, so parallel
//! tests in one binary never race each other for the same port between the
//! check and the moment `redis-server` binds it.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, TestkitError};

/// Candidate ports. The upper bound keeps `port + 10_000` (the cluster bus
/// port) below 65535.
pub(crate) const PORT_RANGE: Range<u16> = 20_000..55_535;

/// Offset of the Redis Cluster bus port from the client port.
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10_000;

const MAX_ATTEMPTS: usize = 1_000;

static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free port reserved for this process; released when dropped.
///
/// Nothing listens on it, so it also serves as a closed port for tests of connection
/// errors ([`PortLease::reserve`]).
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    bus_port: Option<u16>,
}

impl PortLease {
    /// Reserves a free port in 20000..55535 (never 6379) that no other test of this
    /// process is handed while the lease lives.
    pub fn reserve() -> Result<Self> {
        Self::acquire(false)
    }

    /// Reserves a free port; with `with_bus_port`, `port + 10000` is free too.
    pub(crate) fn acquire(with_bus_port: bool) -> Result<Self> {
        let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
        for _ in 0..MAX_ATTEMPTS {
            let offset = u16::try_from(random_u64() % span).expect("offset < span fits in u16");
            let port = PORT_RANGE.start + offset;
            let bus_port = with_bus_port.then(|| port + CLUSTER_BUS_OFFSET);
            let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
            let candidates = std::iter::once(port).chain(bus_port);
            if port == 6379
                || candidates.clone().any(|p| reserved.contains(&p))
                || !candidates.clone().all(is_free)
            {
                continue;
            }
            reserved.extend(candidates);
            return Ok(Self { port, bus_port });
        }
        Err(TestkitError::NoFreePort {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
        reserved.remove(&self.port);
        if let Some(bus) = self.bus_port {
            reserved.remove(&bus);
        }
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A non-cryptographic random number, good enough to spread port choices.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_in_range_and_released() {
        let a = PortLease::acquire(true).expect("lease a");
        let b = PortLease::acquire(false).expect("lease b");
        assert_ne!(a.port(), b.port());
        for p in [a.port(), b.port()] {
            assert!(PORT_RANGE.contains(&p) && p != 6379);
        }
        let port = a.port();
        drop(a);
        let reserved = RESERVED.lock().expect("lock");
        assert!(!reserved.contains(&port));
        assert!(!reserved.contains(&(port + CLUSTER_BUS_OFFSET)));
    }
}
