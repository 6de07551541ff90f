//! The gateway's HTTP side: the page at `/`, the socket at `/ws`, and the host's endpoints
//! (friendships and statistics), which need the host's bearer (token.rs).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use presence_engine::{check_user_id, Command, UserId};
use serde_json::json;

use crate::connection;
use crate::health;
use crate::protocol::{Failure, ProtocolCode};
use crate::shared::{Backend, Place, Shared};

/// What the WebSocket library reads at once and allocates up front for each socket (its
/// default is 128 KiB): presence frames are small, and an idle socket should cost little.
const WS_READ_BUFFER_BYTES: usize = 4 << 10;
/// How much the WebSocket library gathers before it writes to the socket (frames are still
/// written at each flush).
const WS_WRITE_BUFFER_BYTES: usize = 4 << 10;

const PAGE: &str = include_str!("../page/index.html");
const SCRIPT: &str = include_str!("../page/app.js");
const STYLE: &str = include_str!("../page/app.css");

/// The page's Content-Security-Policy: its script, styles and images come from this server
/// only (none inline: index.html has no inline script, handler or style), it talks only to
/// this server (`ws:`/`wss:` for the socket, which older browsers do not count as 'self'),
/// and no other site may frame it (clickjacking).
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Every route of one gateway.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/ws", get(upgrade))
        .route("/friends/{user}/{friend}", put(add_friend).delete(remove_friend))
        .route("/friends/{user}", get(friends))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(shared)
        .layer(axum::middleware::map_response(nosniff))
}

/// `X-Content-Type-Options: nosniff` on every response: a browser takes each as the type it
/// is sent as, never guessing (a JSON error run as a script, say).
async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// One of the page's files, with the page's security headers.
fn page_file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        // For browsers without CSP's frame-ancestors.
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, body).into_response()
}

async fn page() -> Response {
    page_file("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    page_file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    page_file("text/css; charset=utf-8", STYLE)
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Extension(place): Extension<Arc<Place>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if shared.is_shutting_down() {
        let failure = Failure::new(ProtocolCode::Busy, "shutting down: try again later");
        return failure_response(StatusCode::SERVICE_UNAVAILABLE, &failure);
    }
    // The listener follows the frames a socket sends before login from the end of its
    // connection's first request head: an upgrade must be that request, without a body.
    let body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|length| length.as_bytes() != b"0");
    if place.requests.load(Ordering::Relaxed) != 1 || body {
        let failure = Failure::new(
            ProtocolCode::BadRequest,
            "a WebSocket upgrade must be the first request of its connection, without a body",
        );
        return failure_response(StatusCode::BAD_REQUEST, &failure);
    }
    place.upgraded.store(true, Ordering::Relaxed);
    let limit = shared.config.frame_hard_limit();
    ws.read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection::serve(socket, shared, place))
}

pub(crate) fn failure_response(status: StatusCode, failure: &Failure) -> Response {
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
    // The same rule as every command's ids (R1.1), before anything is read.
    if let Err(error) = check_user_id(&user, shared.config.engine.max_user_id_bytes) {
        return failure_response(StatusCode::BAD_REQUEST, &Failure::engine(&error));
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

/// `GET /metrics`: Prometheus's text format, behind the host's bearer like `/stats`
/// (docs/PROTOCOL.md, "Metrics", says why).
async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorized(&shared, &headers) {
        return refused;
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&shared)).into_response()
}
