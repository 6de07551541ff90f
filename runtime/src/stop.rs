//! How a host learns that the runtime has stopped, and why: [`Handle::stop_reason`] to look,
//! [`Handle::stopped`] to wait (a [`Future`] for any executor, or a blocking wait on a
//! thread), as soon as a thread of the runtime stops taking requests.
//!
//! [`Handle::stop_reason`]: super::Handle::stop_reason
//! [`Handle::stopped`]: super::Handle::stopped

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why the runtime stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeStop {
    /// Its host shut it down (or dropped it).
    Shutdown,
    /// It stopped by itself, after a failure it cannot go on from (a failed sync: see
    /// docs/DESIGN.md, "When the store fails"; or a thread of the runtime that panicked). The
    /// cause, as the error said it. Nothing is answered from then on but
    /// [`RuntimeError::Stopped`](super::RuntimeError::Stopped): the host should exit (or open
    /// the store anew), so that the sessions it held are disconnected at the next open (R8.4).
    Failed(String),
}

impl RuntimeStop {
    /// The cause, if the runtime stopped on a failure.
    pub fn failure(&self) -> Option<&str> {
        match self {
            RuntimeStop::Shutdown => None,
            RuntimeStop::Failed(cause) => Some(cause),
        }
    }
}

impl fmt::Display for RuntimeStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeStop::Shutdown => f.write_str("the presence runtime was shut down"),
            RuntimeStop::Failed(cause) => write!(f, "the presence runtime stopped on a failure: {cause}"),
        }
    }
}

#[derive(Default)]
struct State {
    reason: Option<RuntimeStop>,
    /// Tasks awaiting a [`Stopped`], woken when the reason is set.
    wakers: Vec<Waker>,
}

/// The runtime's stop, shared by its threads (which set it) and its handles (which read it).
#[derive(Default)]
pub(crate) struct StopSignal {
    state: Mutex<State>,
    changed: Condvar,
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal").field("reason", &self.lock().reason).finish()
    }
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every write is one assignment or a push: a panic cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records why the runtime stopped; the first reason stays (a deployment's threads stop
    /// one after the other, and the first one tells why).
    pub(crate) fn set(&self, reason: RuntimeStop) {
        let wakers = {
            let mut state = self.lock();
            if state.reason.is_some() {
                return;
            }
            state.reason = Some(reason);
            std::mem::take(&mut state.wakers)
        };
        self.changed.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Why the runtime stopped, if it has.
    pub(crate) fn reason(&self) -> Option<RuntimeStop> {
        self.lock().reason.clone()
    }
}

/// The runtime's stop, to await ([`Future`]) or [`wait`](Stopped::wait) for: what
/// [`Handle::stopped`](super::Handle::stopped) returns. It resolves at once if the runtime
/// has already stopped.
#[must_use = "a future does nothing unless awaited"]
#[derive(Clone, Debug)]
pub struct Stopped {
    pub(crate) signal: Arc<StopSignal>,
}

impl Stopped {
    fn signal(&self) -> &StopSignal {
        &self.signal
    }

    /// Blocks the calling thread until the runtime stops.
    pub fn wait(self) -> RuntimeStop {
        let signal = self.signal();
        let mut state = signal.lock();
        loop {
            if let Some(reason) = &state.reason {
                return reason.clone();
            }
            state = signal.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks the calling thread until the runtime stops or `timeout` passes (`None`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<RuntimeStop> {
        let deadline = Instant::now() + timeout;
        let signal = self.signal();
        let mut state = signal.lock();
        loop {
            if let Some(reason) = &state.reason {
                return Some(reason.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = signal.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Future for Stopped {
    type Output = RuntimeStop;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RuntimeStop> {
        let mut state = self.signal().lock();
        match &state.reason {
            Some(reason) => Poll::Ready(reason.clone()),
            None => {
                // One waker per task: a task polled again replaces its own.
                let waker = cx.waker();
                match state.wakers.iter_mut().find(|w| w.will_wake(waker)) {
                    Some(known) => known.clone_from(waker),
                    None => state.wakers.push(waker.clone()),
                }
                Poll::Pending
            }
        }
    }
}
