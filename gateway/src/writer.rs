//! One WebSocket's writer task: it drains the socket's bounded outbound queue (replies and
//! notices), several frames a flush, until the socket ends; then it writes what the reader
//! still queued (unless the client is gone or too slow) and the close frame.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use crate::protocol::CloseReason;
use crate::routes::{self, Outbound};

/// Writes queued frames to the socket, several at a time with one flush, until the socket
/// ends; then sends the close frame (when there is someone to send it to).
pub(crate) async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    ending: routes::Ending,
    close_timeout: Duration,
) {
    let mut watch = ending.subscribe();
    let reason = loop {
        let first = tokio::select! {
            biased;
            reason = watch.wait_for(Option::is_some) => break reason.ok().and_then(|r| *r),
            first = queue.recv() => first,
        };
        // Every sender is gone: the reader has finished and set its reason.
        let Some(first) = first else { break *ending.borrow() };
        let written = tokio::select! {
            biased;
            reason = watch.wait_for(Option::is_some) => break reason.ok().and_then(|r| *r),
            written = write_batch(&mut sink, &mut queue, first) => written,
        };
        match written {
            Written::More => {}
            Written::Close(reason) => {
                routes::end(&ending, reason);
                break Some(reason);
            }
            Written::Broken => break *ending.borrow(),
        }
    };
    let reason = reason.unwrap_or(CloseReason::ClientGone);
    routes::end(&ending, reason);
    if !matches!(reason, CloseReason::ClientGone | CloseReason::SlowReader) {
        // What is queued before the reader has finished (a reply the runtime gave just
        // before a shutdown, a notice before a kick) still goes out ahead of the close frame,
        // within the close timeout; a slow reader's queue is what it could not take, and is
        // dropped.
        let _ = tokio::time::timeout(close_timeout, drain(&mut sink, &mut queue)).await;
    }
    // Nobody reads the queue from now on: pushes fail at once instead of filling it.
    queue.close();
    if reason != CloseReason::ClientGone {
        let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.text()) };
        let _ = tokio::time::timeout(close_timeout, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(close_timeout, sink.close()).await;
}

/// Writes what comes through `queue` (texts and replies; a queued close is moot now) until
/// every sender is gone: the reader has answered its last request and the socket's route is
/// removed.
async fn drain(sink: &mut SplitSink<WebSocket, Message>, queue: &mut mpsc::Receiver<Outbound>) {
    while let Some(out) = queue.recv().await {
        let text = match out {
            Outbound::Text(text) | Outbound::Reply(text, _) => text,
            Outbound::Close(_) => continue,
        };
        if sink.send(Message::Text(text)).await.is_err() {
            return;
        }
    }
}

enum Written {
    More,
    Close(CloseReason),
    Broken,
}

/// Writes `first` and whatever else is queued behind it, then flushes once.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    queue: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
) -> Written {
    let mut next = Some(first);
    let mut end = Written::More;
    while let Some(out) = next.take() {
        match out {
            Outbound::Text(text) => {
                if sink.feed(Message::Text(text)).await.is_err() {
                    return Written::Broken;
                }
                next = queue.try_recv().ok();
            }
            // The reply leaves the budget once the sink has it.
            Outbound::Reply(text, _permit) => {
                if sink.feed(Message::Text(text)).await.is_err() {
                    return Written::Broken;
                }
                next = queue.try_recv().ok();
            }
            Outbound::Close(reason) => end = Written::Close(reason),
        }
    }
    match sink.flush().await {
        Ok(()) => end,
        Err(_) => Written::Broken,
    }
}
