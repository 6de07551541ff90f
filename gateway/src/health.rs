//! `GET /healthz` and `GET /readyz`: what a supervisor or a load balancer asks, without the
//! host's bearer (they tell nothing about users). docs/PROTOCOL.md, "Health".
//!
//! - `/healthz` (alive): 200 while the process serves and its runtime runs; 503, with the
//!   cause, once the runtime has stopped (after a failed sync the process exits too, so this
//!   is seen only in the moment before it does).
//! - `/readyz` (takes writes): 200 while the runtime runs, its store took the last batch a
//!   turn appended, and the gateway is not shutting down; 503 with the reason otherwise.
//!
//! A gateway inside `presence node` has no runtime of its own (the shards' runtimes are the
//! nodes'), so `/healthz` is 200 while it serves, and `/readyz` is 200 while it is not
//! shutting down and its NATS connection is up: what it needs to carry a command to a shard.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::shared::{Backend, Shared};

/// Alive: the process and (for a local runtime) its runtime run.
pub(crate) async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let stopped = match &shared.backend {
        Backend::Local(handle) => handle.stop_reason(),
        Backend::Cluster(_) => None,
    };
    match stopped {
        None => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Some(reason) => {
            let body = json!({"status": "stopped", "cause": reason.to_string()});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Ready: the gateway takes writes now.
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let not_ready = if shared.is_shutting_down() {
        Some("the gateway is shutting down".to_string())
    } else {
        match &shared.backend {
            Backend::Local(handle) => match handle.stop_reason() {
                Some(reason) => Some(reason.to_string()),
                None if !handle.takes_writes() => Some("the store refused the last write".to_string()),
                None => None,
            },
            Backend::Cluster(cluster) if !cluster.client.is_connected() => {
                Some("the NATS connection is down".to_string())
            }
            Backend::Cluster(_) => None,
        }
    };
    match not_ready {
        None => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": reason}))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use crate::routes::Routes;
    use crate::stats::Counters;
    use crate::token::Secret;
    use presence_engine::{Command, Config, Engine};
    use presence_runtime::{DiscardSink, ManualClock, Runtime, RuntimeConfig};
    use presence_storage_mem::{FaultyStore, MemStore};

    async fn body(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn healthz_and_readyz_follow_the_runtime_and_its_store() {
        let store = FaultyStore::new(MemStore::new());
        let faults = store.faults();
        let engine = Engine::open(Config::default(), store).unwrap();
        let (runtime, handle) =
            Runtime::spawn(engine, ManualClock::new(0), DiscardSink, RuntimeConfig::default());
        let secret = Secret::new(*b"the test secret, 32 bytes long..").unwrap();
        let shared = Arc::new(Shared::new(
            Backend::Local(handle.clone()),
            Arc::new(Routes::default()),
            Arc::new(Counters::default()),
            secret,
            GatewayConfig::default(),
        ));
        let run = |command: Command| {
            let handle = handle.clone();
            tokio::task::spawn_blocking(move || handle.execute(command))
        };
        assert_eq!(body(healthz(State(Arc::clone(&shared))).await).await.0, StatusCode::OK);
        assert_eq!(body(readyz(State(Arc::clone(&shared))).await).await.0, StatusCode::OK);

        faults.fail_appends(true);
        assert_eq!(run(Command::login("alice", "phone")).await.unwrap().unwrap_err().code(), Some(9000));
        assert_eq!(body(healthz(State(Arc::clone(&shared))).await).await.0, StatusCode::OK, "alive");
        let (status, not_ready) = body(readyz(State(Arc::clone(&shared))).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(not_ready["reason"], "the store refused the last write");
        faults.fail_appends(false);
        run(Command::login("alice", "phone")).await.unwrap().unwrap();
        assert_eq!(body(readyz(State(Arc::clone(&shared))).await).await.0, StatusCode::OK);

        faults.fail_syncs(true);
        assert_eq!(run(Command::login("bob", "pc")).await.unwrap().unwrap_err().code(), Some(9000));
        let (status, stopped) = body(healthz(State(Arc::clone(&shared))).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stopped["status"], "stopped");
        assert!(stopped["cause"].as_str().unwrap().contains("sync failed on purpose"), "{stopped}");
        assert_eq!(body(readyz(State(Arc::clone(&shared))).await).await.0, StatusCode::SERVICE_UNAVAILABLE);
        tokio::task::spawn_blocking(move || runtime.shutdown().map(drop)).await.unwrap().unwrap_err();
    }
}
