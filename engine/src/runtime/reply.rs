//! A reply on its way from the runtime's thread to one caller: awaitable from any executor
//! (it implements [`Future`]) and waitable from a plain thread ([`PendingReply::wait`]).
//!
//! One slot per request, shared by the [`ReplySender`] that travels with the request and the
//! [`PendingReply`] the caller keeps. A sender dropped without sending (its request was
//! dropped with a runtime that stopped) closes the slot, so no waiter ever hangs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::RuntimeError;
use crate::error::Error;

enum State<T> {
    /// No answer yet; the waker of the task awaiting it, if one is.
    Waiting(Option<Waker>),
    Answered(Result<T, Error>),
    /// The sender was dropped without answering: the runtime stopped.
    Closed,
    /// The answer was taken.
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    answered: Condvar,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock was held cannot leave a half-written state: every write
        // is one assignment. Carry on with what is there.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, end: State<T>) {
        let mut state = self.lock();
        if let State::Waiting(waker) = std::mem::replace(&mut *state, end) {
            drop(state);
            self.answered.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The runtime's end of one reply.
pub(crate) struct ReplySender<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> ReplySender<T> {
    /// Answers the request.
    pub(crate) fn send(mut self, result: Result<T, Error>) {
        if let Some(slot) = self.slot.take() {
            slot.finish(State::Answered(result));
        }
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.finish(State::Closed);
        }
    }
}

/// A reply on its way: what [`Handle::send`](super::Handle::send) and the other requests
/// return. Await it from any executor, or [`wait`](PendingReply::wait) for it on a thread.
/// It resolves once the request's events are durable (R8.3), or with
/// [`RuntimeError::Stopped`] if the runtime ends without answering: it never hangs on a
/// runtime that is gone.
#[must_use = "a reply says whether the command succeeded"]
pub struct PendingReply<T = crate::Reply> {
    slot: Arc<Slot<T>>,
}

/// A new reply slot: the sender goes with the request, the pending reply to the caller.
pub(crate) fn channel<T>() -> (ReplySender<T>, PendingReply<T>) {
    let slot = Arc::new(Slot { state: Mutex::new(State::Waiting(None)), answered: Condvar::new() });
    (ReplySender { slot: Some(Arc::clone(&slot)) }, PendingReply { slot })
}

impl<T> PendingReply<T> {
    fn take(state: &mut State<T>) -> Option<Result<T, RuntimeError>> {
        match std::mem::replace(state, State::Taken) {
            State::Answered(result) => Some(result.map_err(RuntimeError::Refused)),
            State::Closed | State::Taken => Some(Err(RuntimeError::Stopped)),
            waiting @ State::Waiting(_) => {
                *state = waiting;
                None
            }
        }
    }

    /// Blocks the calling thread until the reply comes.
    pub fn wait(self) -> Result<T, RuntimeError> {
        let mut state = self.slot.lock();
        loop {
            if let Some(result) = Self::take(&mut state) {
                return result;
            }
            state = self.slot.answered.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks the calling thread until the reply comes or `timeout` passes; on timeout the
    /// reply is handed back, still pending.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, RuntimeError>, Self> {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.slot.lock();
        loop {
            if let Some(result) = Self::take(&mut state) {
                return Ok(result);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                drop(state);
                return Err(self);
            }
            state = self.slot.answered.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The reply if it has come, without waiting.
    pub fn try_take(&mut self) -> Option<Result<T, RuntimeError>> {
        Self::take(&mut self.slot.lock())
    }
}

impl<T> Future for PendingReply<T> {
    type Output = Result<T, RuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        if let Some(result) = Self::take(&mut state) {
            return Poll::Ready(result);
        }
        match &mut *state {
            State::Waiting(Some(waker)) if waker.will_wake(cx.waker()) => {}
            waiting => *waiting = State::Waiting(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl<T> fmt::Debug for PendingReply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.slot.lock() {
            State::Waiting(_) => "waiting",
            State::Answered(_) => "answered",
            State::Closed => "closed",
            State::Taken => "taken",
        };
        f.debug_struct("PendingReply").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_dropped_unanswered_resolves_the_reply_as_stopped() {
        let (sender, pending) = channel::<u32>();
        drop(sender);
        assert!(matches!(pending.wait(), Err(RuntimeError::Stopped)));
    }

    #[test]
    fn an_answer_reaches_a_waiting_thread() {
        let (sender, pending) = channel::<u32>();
        let waiter = std::thread::spawn(move || pending.wait());
        std::thread::sleep(Duration::from_millis(10));
        sender.send(Ok(7));
        assert_eq!(waiter.join().unwrap().unwrap(), 7);
    }

    #[test]
    fn a_timeout_hands_the_reply_back() {
        let (sender, pending) = channel::<u32>();
        let pending = pending.wait_timeout(Duration::from_millis(1)).unwrap_err();
        sender.send(Ok(3));
        assert_eq!(pending.wait().unwrap(), 3);
    }
}
