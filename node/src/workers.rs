//! The crypto worker pool: X25519 costs hundreds of microseconds per envelope, so sealing,
//! opening and signing run at most one per core at a time, on the async threads themselves;
//! longer jobs (a checkpoint, decoding a bootstrap bundle) on tokio's blocking threads.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// At most one job per core at a time: a flood of inbound envelopes then queues (and the swarm
/// task answers `Busy` once its queue is full) instead of taking every thread.
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

    /// Runs `f` once a worker is free, on the calling task's thread. A job is a few hundred
    /// microseconds at most (a seal or an open); handing each to tokio's blocking pool and back
    /// cost more in thread wake-ups than it saved (a third of the CPU per message under load,
    /// docs/BENCHMARKS.md, "Thread hops"). A job that panics is [`Error::WorkerPanicked`], as
    /// it was on a blocking thread: the node goes on.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit =
            self.permits.clone().acquire_owned().await.map_err(|_| Error::ShuttingDown)?;
        catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::WorkerPanicked)
    }

    /// Runs `f` on a blocking thread once a worker is free: for a job that may take
    /// milliseconds or more (a checkpoint with its `fsync`, decoding a large bundle), which
    /// would hold up every task queued behind it on an async thread.
    pub(crate) async fn run_blocking<T: Send + 'static>(
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

#[cfg(test)]
mod tests;
