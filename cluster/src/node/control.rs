//! A node's control requests (`d.node.N.control`, [`Control`]): ticks and quiescence for
//! hosts that drive time, restarts, holds around a driven tick, and the node's view.

use super::*;

/// Requests to this node: ticks, quiescence, restarts, status.
pub(super) async fn serve_control(inner: Arc<Inner>) {
    let Ok(mut subscriber) = inner.client.subscribe(inner.subjects.control(&inner.id)).await else {
        tracing::error!("cannot listen for control requests");
        return;
    };
    while let Some(message) = subscriber.next().await {
        let Some(reply) = message.reply.clone() else { continue };
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Control>(&message.payload) {
                Ok(control) => control_answer(&inner, control).await,
                Err(e) => answer_of(&inner, 0, Some(format!("not a control request: {e}"))),
            };
            let _ = inner
                .client
                .publish(reply, Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()))
                .await;
        });
    }
}

fn answer_of(inner: &Inner, latest_ms: u64, error: Option<String>) -> ControlAnswer {
    ControlAnswer {
        node: inner.id.clone(),
        shards: inner.served_all().iter().map(|(s, _)| *s).collect(),
        alive: inner.alive(),
        latest_ms,
        error,
    }
}

async fn control_answer(inner: &Arc<Inner>, control: Control) -> ControlAnswer {
    let served = inner.served_all();
    let mut error = None;
    let mut latest_ms = 0;
    match control {
        Control::Tick { at_ms } => {
            for (_, served) in &served {
                let handle = served.handle.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || handle.tick_at(at_ms)).await {
                    error = Some(e.to_string());
                }
            }
        }
        Control::Quiesce => {
            // Every change in the streams when asked, taken in: two full passes of the
            // follower that start after this point; then every shard at rest.
            let start = inner.follow_passes.load(Ordering::SeqCst);
            let mut asked = 0;
            while inner.follow_passes.load(Ordering::SeqCst) < start + 2 {
                if asked < 2 && inner.follow.try_send(Follow::Pass).is_ok() {
                    asked += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for (_, served) in &served {
                let handle = served.handle.clone();
                let _ = tokio::task::spawn_blocking(move || handle.quiesce(Duration::from_secs(10))).await;
            }
            // And their notices published before this answer.
            let (done, flushed) = tokio::sync::oneshot::channel();
            if inner.notices.send(Outgoing::Flush(done)).is_ok() {
                let _ = flushed.await;
            }
        }
        Control::Restart => {
            for (shard, served) in &served {
                match restart(inner, *shard, served).await {
                    Ok(latest) => latest_ms = latest_ms.max(latest),
                    Err(e) => error = Some(e),
                }
            }
        }
        Control::DisconnectRestored { at_ms } => {
            for (_, served) in &served {
                let done = match served.handle.disconnect_restored(at_ms) {
                    Ok(pending) => pending.await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    error = Some(e.to_string());
                }
            }
        }
        Control::Rebuild => {
            for (_, served) in &served {
                rebuild_watch_table(inner, served).await;
            }
        }
        Control::Resume { at_ms } => {
            for (_, served) in &served {
                if let Ok(pending) = served.handle.resume_at(at_ms) {
                    let _ = pending.await;
                }
            }
        }
        Control::Status => {}
        Control::Hold => inner.holding.store(true, Ordering::SeqCst),
        Control::Release => {
            inner.holding.store(false, Ordering::SeqCst);
            let _ = inner.follow.try_send(Follow::Pass);
        }
    }
    answer_of(inner, latest_ms, error)
}

/// Closes and reopens one shard over its store (R8.2): the engine replays its log.
/// Returns the latest time it logged.
async fn restart(inner: &Arc<Inner>, shard: u32, served: &Arc<Served>) -> Result<u64, String> {
    // Busy while it restarts: between leaving the served shards and coming back, the shard
    // must not look unserved to the ownership loop, which would claim it over the restarted
    // engine (a claim that fences it and replays the log once more).
    let _busy = BusyShard::mark(inner, shard).ok_or("the shard is being claimed or released")?;
    let runtime = lock(&served.runtime).take().ok_or("the shard is not running")?;
    let map = inner.map.clone();
    let engine_config = inner.config.engine.clone();
    let engine = blocking(move || -> Result<Engine<NatsStore>, String> {
        let engine = runtime.shutdown().map_err(|e| e.to_string())?;
        let store = engine.into_store();
        let options =
            EngineOptions { shard: Some(ShardOf { map, index: shard }), outbox: true, ..Default::default() };
        Engine::open_with(engine_config, store, options).map_err(|e| e.to_string())
    })
    .await??;
    let latest = engine.now_ms();
    for task in lock(&served.tasks).drain(..) {
        task.abort();
    }
    lock(&inner.served).remove(&shard);
    let restarted = start_serving(inner, shard, engine, served.claim_seq).await?;
    rebuild_watch_table(inner, &restarted).await;
    Ok(latest)
}
