//! The gateway's HTTP side: the page at `/`, the socket at `/ws`, and the host's endpoints
//! (friendships and statistics), which need the host's bearer (token.rs).

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use presence_engine::{Command, UserId};
use serde_json::json;
use tokio::sync::watch;

use crate::connection;
use crate::health;
use crate::protocol::{Failure, ProtocolCode};
use crate::shared::{Backend, Shared};

const PAGE: &str = include_str!("../page/index.html");
const SCRIPT: &str = include_str!("../page/app.js");

/// Every route of one gateway.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/ws", get(upgrade))
        .route("/friends/{user}/{friend}", put(add_friend).delete(remove_friend))
        .route("/friends/{user}", get(friends))
        .route("/stats", get(stats))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(shared)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

async fn upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let (ending, _) = watch::channel(None);
    let ending = Arc::new(ending);
    let Some(slot) = shared.reserve(Arc::clone(&ending)) else {
        let failure =
            Failure::new(ProtocolCode::Busy, "too many sockets open, or shutting down: try again later");
        return failure_response(StatusCode::SERVICE_UNAVAILABLE, &failure);
    };
    let limit = shared.config.frame_hard_limit();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection::serve(socket, shared, slot, ending))
}

fn failure_response(status: StatusCode, failure: &Failure) -> Response {
    let body = json!({"ok": false, "code": failure.code, "name": failure.name, "message": failure.message});
    (status, Json(body)).into_response()
}

/// The refusal of a request without the host's bearer (`Authorization: Bearer ...`).
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(bearer) if shared.secret.is_host_bearer(bearer) => None,
        _ => {
            let failure = Failure::new(
                ProtocolCode::BadToken,
                "this endpoint is the host's: send `Authorization: Bearer <presence token --host>`",
            );
            Some(failure_response(StatusCode::UNAUTHORIZED, &failure))
        }
    }
}

/// Runs a friendship command (R5.4) for the host.
async fn friendship(shared: &Shared, headers: &HeaderMap, command: Command) -> Response {
    if let Some(refused) = unauthorized(shared, headers) {
        return refused;
    }
    match shared.run(command).await {
        Ok(_) => Json(json!({"ok": true})).into_response(),
        Err(failure) => {
            let status = match failure.code {
                8008 | 8009 => StatusCode::SERVICE_UNAVAILABLE,
                9000 => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            failure_response(status, &failure)
        }
    }
}

async fn add_friend(
    State(shared): State<Arc<Shared>>,
    Path((user, friend)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    friendship(&shared, &headers, Command::add_friend(user, friend)).await
}

async fn remove_friend(
    State(shared): State<Arc<Shared>>,
    Path((user, friend)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    friendship(&shared, &headers, Command::remove_friend(user, friend)).await
}

async fn friends(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&shared, &headers) {
        return refused;
    }
    match shared.friends(user.clone()).await {
        Ok(friends) => Json(json!({"user": UserId::from(user), "friends": friends})).into_response(),
        Err(failure) => failure_response(StatusCode::SERVICE_UNAVAILABLE, &failure),
    }
}

async fn stats(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorized(&shared, &headers) {
        return refused;
    }
    let gateway = shared.counters.read();
    let routed = shared.routes.lock().len();
    let runtime = match &shared.backend {
        Backend::Local(handle) => json!(handle.stats()),
        // The runtimes are the nodes': each node's `Control::Status` tells of its shards.
        Backend::Cluster(_) => serde_json::Value::Null,
    };
    Json(json!({"gateway": gateway, "routed_devices": routed, "runtime": runtime})).into_response()
}
