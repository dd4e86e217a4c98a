//! A job that panics is `Error::WorkerPanicked` on either path, and the workers go on: the
//! inbox refuses the envelope that caused it instead of the node stopping.

use crate::error::Error;
use crate::workers::Workers;

#[tokio::test]
async fn a_panicking_job_on_the_calling_thread_is_reported_and_the_next_one_runs() {
    let workers = Workers::per_core();
    let crashed = workers.run(|| -> u32 { panic!("a decoder bug") }).await;
    assert!(matches!(crashed, Err(Error::WorkerPanicked)));
    assert!(matches!(workers.run(|| 7).await, Ok(7)));
}

#[tokio::test]
async fn a_panicking_job_on_the_blocking_pool_is_reported_and_the_next_one_runs() {
    let workers = Workers::per_core();
    let crashed = workers.run_blocking(|| -> u32 { panic!("a decoder bug") }).await;
    assert!(matches!(crashed, Err(Error::WorkerPanicked)));
    assert!(matches!(workers.run_blocking(|| 7).await, Ok(7)));
}
