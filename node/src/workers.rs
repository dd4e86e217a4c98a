//! The crypto worker pool: X25519 costs hundreds of microseconds per envelope, so sealing,
//! opening and signing run on blocking threads, never on the async threads and never on the
//! swarm task.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// At most one job per core at a time: a flood of inbound envelopes then queues (and the swarm
/// task answers `Busy` once its queue is full) instead of spawning threads without limit.
#[derive(Clone)]
pub(crate) struct Workers {
    permits: Arc<Semaphore>,
    count: usize,
}

impl Workers {
    /// As many workers as the machine has cores.
    pub(crate) fn per_core() -> Self {
        let count = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { permits: Arc::new(Semaphore::new(count)), count }
    }

    /// How many jobs run at once.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Runs `f` on a blocking worker thread once a worker is free.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit =
            self.permits.clone().acquire_owned().await.map_err(|_| Error::ShuttingDown)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| if e.is_panic() { Error::WorkerPanicked } else { Error::ShuttingDown })
    }
}
