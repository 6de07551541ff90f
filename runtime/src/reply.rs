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

use presence_engine::{Error, Reply};

use crate::RuntimeError;

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
pub struct PendingReply<T = Reply> {
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

/// Where the answer to one request goes: nowhere (a request sent without a reply), to its
/// caller, or into a reply that gathers the answers of several threads.
pub(crate) enum ReplyTo<T> {
    None,
    One(ReplySender<T>),
    Part(GatherPart<T>),
}

impl<T> ReplyTo<T> {
    /// Answers the request.
    pub(crate) fn send(self, result: Result<T, Error>) {
        match self {
            ReplyTo::None => {}
            ReplyTo::One(reply) => reply.send(result),
            ReplyTo::Part(part) => part.send(result),
        }
    }

    /// Splits the answer into `parts` (at least one) answered apart, one by each shard of a
    /// thread, and combined by `combine` (the first error wins).
    pub(crate) fn split(self, parts: usize, combine: fn(T, T) -> T) -> Vec<ReplyTo<T>> {
        let parts = parts.max(1);
        let gather = match self {
            ReplyTo::None => return (0..parts).map(|_| ReplyTo::None).collect(),
            ReplyTo::One(reply) => {
                let gather = Gather::new(combine);
                {
                    let mut state = gather.lock();
                    state.parts_left = parts;
                    state.reply = Some(reply);
                }
                Arc::new(gather)
            }
            ReplyTo::Part(mut part) => {
                let Some(gather) = part.gather.take() else { return Vec::new() };
                gather.lock().parts_left += parts - 1;
                gather
            }
        };
        (0..parts).map(|_| ReplyTo::Part(GatherPart::new(&gather))).collect()
    }
}

/// Two shards' replies to one `disconnect_sessions` (R8.5), added up.
pub(crate) fn add_disconnected(a: Reply, b: Reply) -> Reply {
    match (a, b) {
        (
            Reply::Disconnected { sessions: s1, remaining: r1 },
            Reply::Disconnected { sessions: s2, remaining: r2 },
        ) => Reply::Disconnected { sessions: s1 + s2, remaining: r1 + r2 },
        (a, _) => a,
    }
}

/// The answers of a request sent to several threads (a tick, a snapshot, a command about
/// every shard), combined into one reply: the first error, or the answers combined.
pub(crate) struct Gather<T> {
    combine: fn(T, T) -> T,
    state: Mutex<GatherState<T>>,
}

struct GatherState<T> {
    parts_left: usize,
    answer: Option<Result<T, Error>>,
    /// A part was dropped unanswered: its thread stopped, and so the reply says.
    stopped: bool,
    reply: Option<ReplySender<T>>,
}

impl<T> Gather<T> {
    fn new(combine: fn(T, T) -> T) -> Self {
        let state = GatherState { parts_left: 0, answer: None, stopped: false, reply: None };
        Self { combine, state: Mutex::new(state) }
    }
}

impl Gather<Reply> {
    /// Answers that add up replies of `disconnect_sessions` (R8.5).
    pub(crate) fn disconnected() -> Gather<Reply> {
        Gather::new(add_disconnected)
    }
}

impl Gather<()> {
    /// Answers that carry nothing.
    pub(crate) fn unit() -> Gather<()> {
        Gather::new(|(), ()| ())
    }
}

impl Gather<u64> {
    /// Answers that add up.
    pub(crate) fn sum() -> Gather<u64> {
        Gather::new(|a, b| a.saturating_add(b))
    }
}

impl<T> Gather<T> {
    /// Starts gathering `parts` answers; the reply resolves when the last comes.
    pub(crate) fn start(self, parts: usize) -> (Arc<Gather<T>>, PendingReply<T>) {
        let (reply, pending) = channel();
        {
            let mut state = self.lock();
            state.parts_left = parts;
            state.reply = Some(reply);
        }
        (Arc::new(self), pending)
    }

    fn lock(&self) -> MutexGuard<'_, GatherState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, answer: Option<Result<T, Error>>) {
        let mut state = self.lock();
        match (answer, state.answer.take()) {
            (None, kept) => {
                state.stopped = true;
                state.answer = kept;
            }
            (Some(Err(e)), _) | (Some(Ok(_)), Some(Err(e))) => state.answer = Some(Err(e)),
            (Some(Ok(new)), Some(Ok(kept))) => state.answer = Some(Ok((self.combine)(kept, new))),
            (Some(Ok(new)), None) => state.answer = Some(Ok(new)),
        }
        state.parts_left = state.parts_left.saturating_sub(1);
        if state.parts_left == 0 {
            let (reply, answer, stopped) = (state.reply.take(), state.answer.take(), state.stopped);
            drop(state);
            if let (Some(reply), Some(answer), false) = (reply, answer, stopped) {
                reply.send(answer);
            }
        }
    }
}

/// One thread's share of a [`Gather`]. Dropped unanswered (its thread stopped), it makes
/// the gathered reply `Stopped`.
pub(crate) struct GatherPart<T> {
    gather: Option<Arc<Gather<T>>>,
}

impl<T> GatherPart<T> {
    pub(crate) fn new(gather: &Arc<Gather<T>>) -> Self {
        Self { gather: Some(Arc::clone(gather)) }
    }

    fn send(mut self, result: Result<T, Error>) {
        if let Some(gather) = self.gather.take() {
            gather.take(Some(result));
        }
    }
}

impl<T> Drop for GatherPart<T> {
    fn drop(&mut self) {
        if let Some(gather) = self.gather.take() {
            gather.take(None);
        }
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
    fn gathered_answers_combine_and_a_lost_part_means_stopped() {
        let (gather, pending) = Gather::sum().start(3);
        GatherPart::new(&gather).send(Ok(2));
        GatherPart::new(&gather).send(Ok(5));
        GatherPart::new(&gather).send(Ok(1));
        assert_eq!(pending.wait().unwrap(), 8);
        let (gather, pending) = Gather::sum().start(2);
        GatherPart::new(&gather).send(Ok(2));
        drop(GatherPart::new(&gather));
        assert!(matches!(pending.wait(), Err(RuntimeError::Stopped)));
    }

    #[test]
    fn a_split_answer_combines_its_parts_into_the_whole() {
        let (sender, pending) = channel::<u64>();
        let parts = ReplyTo::One(sender).split(3, |a, b| a + b);
        for (i, part) in parts.into_iter().enumerate() {
            part.send(Ok(i as u64 + 1));
        }
        assert_eq!(pending.wait().unwrap(), 6);
        // A part of a gather split again: the gather waits for the new parts too.
        let (gather, pending) = Gather::sum().start(2);
        GatherPart::new(&gather).send(Ok(10));
        let parts = ReplyTo::Part(GatherPart::new(&gather)).split(2, |a, b| a + b);
        let mut parts = parts.into_iter();
        parts.next().unwrap().send(Ok(1));
        let mut pending = pending;
        assert!(pending.try_take().is_none(), "one part is still out");
        parts.next().unwrap().send(Ok(2));
        assert_eq!(pending.wait().unwrap(), 13);
    }

    #[test]
    fn a_timeout_hands_the_reply_back() {
        let (sender, pending) = channel::<u32>();
        let pending = pending.wait_timeout(Duration::from_millis(1)).unwrap_err();
        sender.send(Ok(3));
        assert_eq!(pending.wait().unwrap(), 3);
    }
}
