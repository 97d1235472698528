//! The conformance suites (bus and jobs) against the embedded memory backend.

#[macro_use]
mod conformance;
#[macro_use]
mod jobs;
#[macro_use]
mod admin;

use std::future::Future;
use std::pin::Pin;

use rivulet::{AnyBackend, MemoryBackend};

struct Memory(MemoryBackend);

impl conformance::Fixture for Memory {
    fn backend(&self) -> Pin<Box<dyn Future<Output = AnyBackend> + Send + '_>> {
        let backend = self.0.clone();
        Box::pin(async move { backend.into() })
    }
}

conformance_suite!(async { Memory(MemoryBackend::new()) });
admin_suite!(async { Memory(MemoryBackend::new()) });
jobs_suite!(async { Memory(MemoryBackend::new()) });
schedulers_suite!(async { Memory(MemoryBackend::new()) });
flows_suite!(async { Memory(MemoryBackend::new()) });
limits_suite!(async { Memory(MemoryBackend::new()) });
