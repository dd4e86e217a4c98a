//! futures-timer's `Delay` on tokio's timer, put in place of futures-timer 3.0.3 for the whole
//! tree by the workspace's `[patch.crates-io]`.
//!
//! It owns one thing: the `Delay` future that libp2p arms for every stream upgrade, request and
//! idle connection. It must keep futures-timer's API and meaning (`Delay::new`, `Delay::reset`,
//! a `Future` that is ready once its time has come, `Unpin`, `Send`, `Sync`, `Debug`), and no
//! duration may make it panic.
//!
//! Why it exists: futures-timer keeps every timer on a thread of its own and wakes that thread
//! whenever a `Delay` is created, reset or dropped. libp2p does that several times per text on
//! each side, so each text cost each daemon as many thread wake-ups and context switches, 6–8 %
//! of its CPU (docs/BENCHMARKS.md, "libp2p's timers on tokio's"). A `Delay` made on a thread of
//! a tokio runtime goes into that runtime's timer wheel instead, which the runtime's worker reads
//! when it parks: nothing is woken.
//!
//! A `Delay` made where there is no runtime goes to a runtime of its own on one thread, started
//! on first use, which is what futures-timer did with every `Delay`.
//!
//! What it changes: a `Delay` follows the clock of the runtime it was made in, so under tokio's
//! paused time (tests) libp2p's timeouts pass in virtual time, as the node's own timers do; and
//! tokio rounds a deadline up to its next millisecond. It has tokio's own two conditions, which
//! no code of this workspace breaks: the runtime a `Delay` is made in has its timer enabled (every
//! runtime here is built with `enable_all`), and a `Delay` is not polled after that runtime has
//! shut down (tokio drops a runtime's tasks before its timer, so a node's own never are); tokio
//! panics otherwise. Like every tokio resource it spends the polling task's budget, so a `Delay`
//! whose time has come can answer `Pending` once, having woken its task to be polled again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::{Instant, Sleep};

/// The farthest a deadline is put: never, for any caller.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// A future that completes once its duration has passed, and stays complete.
pub struct Delay {
    /// `None` only where there is no runtime and the timer thread could not be started; such a
    /// `Delay` never completes (futures-timer's panicked when polled).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Delay {
    /// A future that completes `dur` from now, on the timer of the runtime this thread is in, or
    /// of the timer thread where there is none.
    pub fn new(dur: Duration) -> Delay {
        let sleep = match Handle::try_current() {
            Ok(_) => Some(Box::pin(tokio::time::sleep_until(deadline(dur)))),
            Err(_) => timer_thread().map(|handle| {
                let _entered = handle.enter();
                Box::pin(tokio::time::sleep_until(deadline(dur)))
            }),
        };
        Delay { sleep }
    }

    /// Moves the deadline to `dur` from now, whether or not the old one has passed.
    pub fn reset(&mut self, dur: Duration) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep.as_mut().reset(deadline(dur));
        }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Delay");
        if let Some(sleep) = &self.sleep {
            debug.field("deadline", &sleep.deadline());
        }
        debug.finish()
    }
}

/// `dur` from now on the current clock (the paused one under tokio's test-util), at most
/// [`FAR_FUTURE`] away: tokio adds to a deadline in its timer wheel, so one near the largest
/// `Instant` would overflow there.
fn deadline(dur: Duration) -> Instant {
    Instant::now() + dur.min(FAR_FUTURE)
}

/// The runtime that keeps the timers of `Delay`s made outside any runtime, on a thread of its own
/// started on first use; `None` if that thread could not be started.
fn timer_thread() -> Option<&'static Handle> {
    static TIMER: OnceLock<Option<Handle>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_time().build().ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("futures-timer".into())
                // The runtime drives its timers only while something blocks on it.
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn assert_traits<T: Unpin + Send + Sync + fmt::Debug + 'static>() {}

    #[test]
    fn delay_has_futures_timers_traits() {
        assert_traits::<Delay>();
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_completes_at_its_deadline_and_stays_complete() {
        let start = Instant::now();
        let mut delay = Delay::new(Duration::from_secs(10));
        (&mut delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // Polled again, it is still complete (futures-timer's did the same; libp2p relies on it).
        (&mut delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_moves_the_deadline_before_and_after_it_passed() {
        let start = Instant::now();
        let mut delay = Delay::new(Duration::from_secs(10));
        delay.reset(Duration::from_secs(3));
        (&mut delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        delay.reset(Duration::from_secs(5));
        (&mut delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_does_not_complete_early() {
        let mut delay = Delay::new(Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut delay).poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(Pin::new(&mut delay).poll(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_duration_past_any_instant_is_no_panic() {
        let mut delay = Delay::new(Duration::MAX);
        delay.reset(Duration::MAX);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut delay).poll(&mut cx).is_pending());
    }

    #[test]
    fn outside_any_runtime_the_timer_thread_completes_the_delay() {
        // Made and awaited on a thread with no runtime, as futures-timer allowed: the timer
        // thread's runtime keeps the timer and calls the waker, which unparks this thread.
        let mut delay = Delay::new(Duration::from_millis(20));
        let waker = std::task::Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while Pin::new(&mut delay).poll(&mut cx).is_pending() {
            assert!(std::time::Instant::now() < give_up, "the delay never completed");
            std::thread::park_timeout(Duration::from_secs(1));
        }
    }

    /// Unparks the thread that polls.
    struct ThreadWaker(std::thread::Thread);

    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
}
