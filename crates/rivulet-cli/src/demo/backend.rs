//! Which backend the demo runs on: memory (default), a Redis URL, or a throw-away
//! `redis-server` started for the run (`--redis auto`).

use rivulet::{
    Bus, BusBuilder, MemoryBackend, MemoryIdempotencyStore, Queue, QueueBuilder, RedisBackend,
    RedisIdempotencyStore,
};

use crate::error::CliError;
use crate::redact::redact;

/// The topic the demo publishes orders to.
pub(crate) const TOPIC: &str = "orders:order:created";

/// The backend of one run, and whatever must live as long as it.
#[derive(Debug)]
pub(crate) struct DemoBackend {
    store: Store,
    /// Shown to people: "memory", "redis (redis://:***@host:6379, key prefix …)".
    pub(crate) label: String,
    /// The throw-away server of `--redis auto`, killed when dropped (after the bus).
    _server: Option<rivulet_testkit::RedisServer>,
}

/// The backend and the idempotency store that goes with it.
#[derive(Debug)]
enum Store {
    Memory(MemoryBackend),
    /// With the idempotency keys' prefix, when not the default.
    Redis(RedisBackend, Option<String>),
}

impl DemoBackend {
    /// A bus builder on this backend with its idempotency store.
    pub(crate) fn bus(&self) -> BusBuilder {
        match &self.store {
            Store::Memory(b) => Bus::builder(b.clone()).idempotency(MemoryIdempotencyStore::new()),
            Store::Redis(b, idem_prefix) => {
                let mut idem = RedisIdempotencyStore::from_backend(b);
                if let Some(prefix) = idem_prefix {
                    idem = idem.prefix(prefix.clone());
                }
                Bus::builder(b.clone()).idempotency(idem)
            }
        }
    }

    /// The backend itself (for the metrics collector).
    pub(crate) fn any(&self) -> rivulet::AnyBackend {
        match &self.store {
            Store::Memory(b) => b.clone().into(),
            Store::Redis(b, _) => b.clone().into(),
        }
    }

    /// A job queue builder on this backend (the same backend, key prefix included, as
    /// the bus).
    pub(crate) fn queue(&self, name: &str) -> QueueBuilder {
        match &self.store {
            Store::Memory(b) => Queue::builder(b.clone(), name),
            Store::Redis(b, _) => Queue::builder(b.clone(), name),
        }
    }
}

/// Opens the backend `--redis` asks for (`None`: memory).
pub(crate) async fn open(redis: Option<&str>) -> Result<DemoBackend, CliError> {
    let Some(spec) = redis else {
        return Ok(DemoBackend {
            store: Store::Memory(MemoryBackend::new()),
            label: "memory".into(),
            _server: None,
        });
    };
    if spec == "auto" {
        let server = tokio::task::spawn_blocking(rivulet_testkit::RedisServer::start)
            .await
            .map_err(|e| CliError::runtime(format!("starting redis-server: {e}")))?
            .map_err(|e| {
                CliError::runtime(format!(
                    "--redis auto could not start a redis-server (is it installed and in PATH?): {e}"
                ))
            })?;
        let url = server.url();
        let store = connect_redis(&url, None).await?;
        return Ok(DemoBackend {
            store,
            label: format!("redis (throw-away redis-server at {url})"),
            _server: Some(server),
        });
    }
    // A Redis the demo did not start may hold earlier runs: a key prefix of its own keeps
    // their groups, dead letters and idempotency keys out of this run's numbers.
    let run: u32 = rand::random();
    let prefix = format!("rivulet-demo-{run:08x}");
    let store = connect_redis(spec, Some(&prefix)).await?;
    Ok(DemoBackend {
        store,
        label: format!("redis ({}, key prefix {prefix})", redact(spec)),
        _server: None,
    })
}

async fn connect_redis(url: &str, prefix: Option<&str>) -> Result<Store, CliError> {
    let mut builder = RedisBackend::builder(url);
    if let Some(prefix) = prefix {
        builder = builder.prefix(prefix);
    }
    // The library's errors already name the (redacted) URL.
    let backend = builder.build().await?;
    Ok(Store::Redis(backend, prefix.map(|p| format!("{p}:idem:"))))
}
