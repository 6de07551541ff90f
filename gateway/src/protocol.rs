//! The wire protocol (docs/PROTOCOL.md): JSON text frames. Requests carry an `id` and an
//! `op`; every request gets one reply with the same `id`; notices are pushed at any time.
//! This module only reads and writes frames: what a request does is `connection.rs`'s.

use std::fmt;

use presence_engine::{Error, TargetStatus, UserId, UserStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The gateway's own reply codes, for requests the engine never sees. The engine's are
/// docs/SPEC.md R7.1's (6017, 6014, 7008, 7013, 72001, 9000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolCode {
    /// The frame is not a JSON object (or is a binary frame).
    BadJson,
    /// A field is missing, unknown or of the wrong type, or `id` is not an integer.
    BadRequest,
    /// `op` names no operation.
    UnknownOp,
    /// The frame is longer than `max_frame_bytes`.
    FrameTooLarge,
    /// The operation needs a login first.
    LoginFirst,
    /// This socket has already logged in.
    AlreadyLoggedIn,
    /// The token was not made with the server's secret, or is malformed.
    BadToken,
    /// The token is genuine but has expired.
    TokenExpired,
    /// The engine's queue is full: nothing was done; try again shortly.
    Busy,
    /// The server is shutting down (or its engine stopped): nothing was done.
    Unavailable,
    /// The socket sends frames faster than its rate limit (`request_rate_per_s`,
    /// `request_burst`): nothing was done; slow down.
    TooManyRequests,
}

impl ProtocolCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            ProtocolCode::BadJson => 8000,
            ProtocolCode::BadRequest => 8001,
            ProtocolCode::UnknownOp => 8002,
            ProtocolCode::FrameTooLarge => 8003,
            ProtocolCode::LoginFirst => 8004,
            ProtocolCode::AlreadyLoggedIn => 8005,
            ProtocolCode::BadToken => 8006,
            ProtocolCode::TokenExpired => 8007,
            ProtocolCode::Busy => 8008,
            ProtocolCode::Unavailable => 8009,
            ProtocolCode::TooManyRequests => 8010,
        }
    }

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolCode::BadJson => "BadJson",
            ProtocolCode::BadRequest => "BadRequest",
            ProtocolCode::UnknownOp => "UnknownOp",
            ProtocolCode::FrameTooLarge => "FrameTooLarge",
            ProtocolCode::LoginFirst => "LoginFirst",
            ProtocolCode::AlreadyLoggedIn => "AlreadyLoggedIn",
            ProtocolCode::BadToken => "BadToken",
            ProtocolCode::TokenExpired => "TokenExpired",
            ProtocolCode::Busy => "Busy",
            ProtocolCode::Unavailable => "Unavailable",
            ProtocolCode::TooManyRequests => "TooManyRequests",
        }
    }
}

/// An error reply: a code (R7.1's or the gateway's), its name, and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The stable number.
    pub code: u32,
    /// Its name (`NotLoggedIn`, `BadJson`, ...).
    pub name: &'static str,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// One of the gateway's own errors.
    pub fn new(code: ProtocolCode, message: impl Into<String>) -> Failure {
        Failure { code: code.code(), name: code.name(), message: message.into() }
    }

    /// The engine's error, with its code (R7.1).
    pub fn engine(error: &Error) -> Failure {
        Failure::refused(error.code(), error.name(), error.to_string())
    }

    /// An error the engine (here or on a cluster's node) refused with: the engine's text
    /// starts with its name and code (`InvalidParameter (6017): ...`), which the reply
    /// already carries in its own fields, and which [`Failure`]'s `Display` adds again, so
    /// the message keeps only what follows.
    pub fn refused(code: u32, name: &'static str, message: String) -> Failure {
        let prefix = format!("{name} ({code}): ");
        let message = match message.strip_prefix(&prefix) {
            Some(rest) => rest.to_owned(),
            None => message,
        };
        Failure { code, name, message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name, self.code, self.message)
    }
}

/// How the server closes a socket: the WebSocket close code and its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// After a `logout` (1000).
    LoggedOut,
    /// The server is shutting down (1001).
    GoingAway,
    /// A frame longer than the transport reads (1009).
    TooBig,
    /// The session was kicked by a login on another device (R2.5, R5.5) (4000).
    Kicked,
    /// The same device logged in through another socket (4001).
    Replaced,
    /// The socket read slower than it was told things: its outbound queue filled (4002).
    SlowReader,
    /// No login within `login_timeout_ms` (4003).
    LoginTimeout,
    /// Nothing received within the idle timeout (4004).
    IdleTimeout,
    /// Not logged in yet, and evicted to make room for a newer connection (1013, try again
    /// later): `max_anonymous_connections` or `max_connections` were reached.
    Crowded,
    /// The socket kept sending frames beyond its rate limit after being told (8010) (4005).
    TooManyRequests,
    /// A text frame that is not UTF-8 (1007, RFC 6455 section 7.4.1).
    InvalidData,
    /// A frame that breaks RFC 6455: a reserved opcode, a reserved bit set, a frame the
    /// client did not mask, a fragmented control frame (1002).
    ProtocolViolation,
    /// The client closed, or the connection broke: nothing to send.
    ClientGone,
}

impl CloseReason {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::LoggedOut | CloseReason::ClientGone => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::TooBig => 1009,
            CloseReason::Kicked => 4000,
            CloseReason::Replaced => 4001,
            CloseReason::SlowReader => 4002,
            CloseReason::LoginTimeout => 4003,
            CloseReason::IdleTimeout => 4004,
            CloseReason::Crowded => 1013,
            CloseReason::TooManyRequests => 4005,
            CloseReason::InvalidData => 1007,
            CloseReason::ProtocolViolation => 1002,
        }
    }

    /// The close frame's reason text.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::LoggedOut => "logged out",
            CloseReason::GoingAway => "server shutting down",
            CloseReason::TooBig => "frame too large",
            CloseReason::Kicked => "kicked by a login on another device",
            CloseReason::Replaced => "this device logged in on another connection",
            CloseReason::SlowReader => "too slow reading: outbound queue full",
            CloseReason::LoginTimeout => "no login in time",
            CloseReason::IdleTimeout => "nothing received in time",
            CloseReason::Crowded => "too many connections not logged in: try again later",
            CloseReason::TooManyRequests => "too many requests: over the rate limit",
            CloseReason::InvalidData => "a text frame is not UTF-8",
            CloseReason::ProtocolViolation => "WebSocket protocol violation",
            CloseReason::ClientGone => "",
        }
    }
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Logs the socket in as the token's user, on `device` (R2.1).
    Login {
        /// A login token (token.rs).
        token: String,
        /// The device id (R1.1).
        device: String,
    },
    /// Refreshes the session's heartbeat (R2.4); a WebSocket ping does the same.
    Heartbeat {},
    /// Sets, or with `""` clears, the custom status (R3.1).
    SetStatus {
        /// The new custom status.
        custom: String,
    },
    /// The statuses of `targets` (R6.1).
    GetStatus {
        /// Users asked about.
        targets: Vec<String>,
    },
    /// Watches `targets` (R4.1), answered with their statuses (R4.6).
    Subscribe {
        /// Users to watch.
        targets: Vec<String>,
    },
    /// Stops watching `targets`, or everyone with an empty list (R4.4).
    Unsubscribe {
        /// Users to stop watching.
        #[serde(default)]
        targets: Vec<String>,
    },
    /// Ends the session (R2.2); the server answers and closes the socket.
    Logout {},
}

/// Every `op` the protocol knows.
pub const OPS: [&str; 7] =
    ["login", "heartbeat", "set_status", "get_status", "subscribe", "unsubscribe", "logout"];

/// A request as read from a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's id for it, echoed in the reply.
    pub id: u64,
    /// What it asks.
    pub op: Op,
}

/// A frame that is not a request: the error to answer, and the request's id if it had one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The request's `id`, when the frame got that far.
    pub id: Option<u64>,
    /// Why.
    pub failure: Failure,
}

/// The largest `id` (2^53 - 1): every JavaScript number up to it is an exact integer.
pub const ID_MAX: u64 = (1 << 53) - 1;

/// Reads one text frame of at most `max_bytes` bytes as a request.
pub fn parse(text: &str, max_bytes: usize) -> Result<Request, Refusal> {
    let refuse = |id, code, message: String| Refusal { id, failure: Failure::new(code, message) };
    if text.len() > max_bytes {
        return Err(refuse(
            None,
            ProtocolCode::FrameTooLarge,
            format!("frames are at most {max_bytes} bytes"),
        ));
    }
    let mut object: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(refuse(None, ProtocolCode::BadJson, "a request is a JSON object".into())),
        Err(e) => return Err(refuse(None, ProtocolCode::BadJson, format!("not JSON: {e}"))),
    };
    let id = match object.remove("id") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|id| id <= ID_MAX) => n.as_u64().unwrap_or_default(),
        Some(_) => {
            return Err(refuse(
                None,
                ProtocolCode::BadRequest,
                format!("\"id\" must be an integer from 0 to {ID_MAX}"),
            ))
        }
        None => return Err(refuse(None, ProtocolCode::BadRequest, "a request needs an \"id\"".into())),
    };
    let op = match object.get("op") {
        Some(Value::String(op)) => op.as_str(),
        _ => {
            return Err(refuse(Some(id), ProtocolCode::BadRequest, "a request needs an \"op\" string".into()))
        }
    };
    if !OPS.contains(&op) {
        let shown: String = op.chars().take(64).collect();
        return Err(refuse(
            Some(id),
            ProtocolCode::UnknownOp,
            format!("unknown op {shown:?}; known: {}", OPS.join(", ")),
        ));
    }
    match serde_json::from_value(Value::Object(object)) {
        Ok(op) => Ok(Request { id, op }),
        Err(e) => Err(refuse(Some(id), ProtocolCode::BadRequest, e.to_string())),
    }
}

#[derive(Serialize)]
struct ReplyFrame<'a> {
    id: Option<u64>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statuses: Option<&'a [TargetStatus]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl<'a> ReplyFrame<'a> {
    fn ok(id: u64) -> Self {
        ReplyFrame {
            id: Some(id),
            ok: true,
            user: None,
            device: None,
            statuses: None,
            code: None,
            name: None,
            message: None,
        }
    }
}

fn to_text(frame: &impl Serialize) -> String {
    // Serializing these plain structs of strings and numbers into a String cannot fail.
    serde_json::to_string(frame).unwrap_or_else(|_| String::from("{}"))
}

/// `{"id": ID, "ok": true}`.
pub fn ok(id: u64) -> String {
    to_text(&ReplyFrame::ok(id))
}

/// `{"id": ID, "ok": true, "user": USER, "device": DEVICE}`: a login's reply.
pub fn logged_in(id: u64, user: &str, device: &str) -> String {
    to_text(&ReplyFrame { user: Some(user), device: Some(device), ..ReplyFrame::ok(id) })
}

/// `{"id": ID, "ok": true, "statuses": [...]}`: a get_status or subscribe reply (R4.6, R6.1).
pub fn statuses(id: u64, statuses: &[TargetStatus]) -> String {
    to_text(&ReplyFrame { statuses: Some(statuses), ..ReplyFrame::ok(id) })
}

/// `{"id": ID, "ok": false, "code": N, "name": NAME, "message": TEXT}` (`id` null when the frame
/// had none).
pub fn failed(id: Option<u64>, failure: &Failure) -> String {
    to_text(&ReplyFrame {
        id,
        ok: false,
        user: None,
        device: None,
        statuses: None,
        code: Some(failure.code),
        name: Some(failure.name),
        message: Some(&failure.message),
    })
}

#[derive(Serialize)]
struct NoticeFrame<'a> {
    notice: NoticeBody<'a>,
}

#[derive(Serialize)]
struct NoticeBody<'a> {
    user: &'a UserId,
    #[serde(flatten)]
    status: &'a UserStatus,
    version: u64,
}

/// `{"notice": {"user", "status", "custom", "version"}}`: a status change (R5.1, R5.6).
pub fn notice(about: &UserId, status: &UserStatus, version: u64) -> String {
    to_text(&NoticeFrame { notice: NoticeBody { user: about, status, version } })
}

/// `{"kicked": true}` (R5.5).
pub fn kicked() -> String {
    String::from(r#"{"kicked":true}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_engine::GeneralStatus;
    use serde_json::json;

    fn code_of(text: &str) -> (Option<u64>, u32) {
        let refusal = parse(text, 1_000).unwrap_err();
        (refusal.id, refusal.failure.code)
    }

    #[test]
    fn every_op_parses() {
        let cases = [
            (
                r#"{"id":1,"op":"login","token":"t","device":"d"}"#,
                Op::Login { token: "t".into(), device: "d".into() },
            ),
            (r#"{"id":1,"op":"heartbeat"}"#, Op::Heartbeat {}),
            (r#"{"id":1,"op":"set_status","custom":""}"#, Op::SetStatus { custom: String::new() }),
            (r#"{"id":1,"op":"get_status","targets":["a"]}"#, Op::GetStatus { targets: vec!["a".into()] }),
            (
                r#"{"id":1,"op":"subscribe","targets":["a","b"]}"#,
                Op::Subscribe { targets: vec!["a".into(), "b".into()] },
            ),
            (r#"{"id":1,"op":"unsubscribe","targets":[]}"#, Op::Unsubscribe { targets: vec![] }),
            (r#"{"id":1,"op":"unsubscribe"}"#, Op::Unsubscribe { targets: vec![] }),
            (r#"{"op":"logout","id":1}"#, Op::Logout {}),
        ];
        for (text, op) in cases {
            assert_eq!(parse(text, 1_000).unwrap(), Request { id: 1, op }, "{text}");
        }
    }

    #[test]
    fn bad_frames_get_their_codes_and_keep_the_id_when_it_was_read() {
        assert_eq!(code_of("not json"), (None, 8000));
        assert_eq!(code_of("[1,2]"), (None, 8000));
        assert_eq!(code_of(r#"{"op":"heartbeat"}"#), (None, 8001));
        assert_eq!(code_of(r#"{"id":-1,"op":"heartbeat"}"#), (None, 8001));
        assert_eq!(code_of(r#"{"id":1.5,"op":"heartbeat"}"#), (None, 8001));
        assert_eq!(code_of(r#"{"id":9007199254740992,"op":"heartbeat"}"#), (None, 8001));
        assert_eq!(code_of(r#"{"id":"7","op":"heartbeat"}"#), (None, 8001));
        assert_eq!(code_of(r#"{"id":7}"#), (Some(7), 8001));
        assert_eq!(code_of(r#"{"id":7,"op":3}"#), (Some(7), 8001));
        assert_eq!(code_of(r#"{"id":7,"op":"dance"}"#), (Some(7), 8002));
        assert_eq!(code_of(r#"{"id":7,"op":"set_status"}"#), (Some(7), 8001));
        assert_eq!(code_of(r#"{"id":7,"op":"set_status","custom":5}"#), (Some(7), 8001));
        assert_eq!(code_of(r#"{"id":7,"op":"heartbeat","extra":1}"#), (Some(7), 8001));
        assert_eq!(code_of(r#"{"id":7,"op":"get_status","targets":[1]}"#), (Some(7), 8001));
        let big = format!(r#"{{"id":1,"op":"set_status","custom":"{}"}}"#, "x".repeat(1_000));
        assert_eq!(code_of(&big), (None, 8003));
    }

    #[test]
    fn replies_and_notices_have_the_documented_shape() {
        let reply = |text: String| serde_json::from_str::<Value>(&text).unwrap();
        assert_eq!(reply(ok(3)), json!({"id": 3, "ok": true}));
        assert_eq!(
            reply(logged_in(3, "alice", "phone")),
            json!({"id": 3, "ok": true, "user": "alice", "device": "phone"})
        );
        let status = UserStatus { general: GeneralStatus::Online, custom: "busy".into() };
        let target = TargetStatus { user: "bob".into(), status: status.clone(), version: 4 };
        assert_eq!(
            reply(statuses(3, &[target])),
            json!({"id": 3, "ok": true, "statuses": [{"user": "bob", "status": "ONLINE", "custom": "busy", "version": 4}]})
        );
        let failure = Failure::new(ProtocolCode::Busy, "later");
        assert_eq!(
            reply(failed(None, &failure)),
            json!({"id": null, "ok": false, "code": 8008, "name": "Busy", "message": "later"})
        );
        assert_eq!(
            reply(notice(&"bob".into(), &status, 4)),
            json!({"notice": {"user": "bob", "status": "ONLINE", "custom": "busy", "version": 4}})
        );
        assert_eq!(reply(kicked()), json!({"kicked": true}));
    }

    #[test]
    fn codes_and_close_codes_are_distinct() {
        let codes = [
            ProtocolCode::BadJson,
            ProtocolCode::BadRequest,
            ProtocolCode::UnknownOp,
            ProtocolCode::FrameTooLarge,
            ProtocolCode::LoginFirst,
            ProtocolCode::AlreadyLoggedIn,
            ProtocolCode::BadToken,
            ProtocolCode::TokenExpired,
            ProtocolCode::Busy,
            ProtocolCode::Unavailable,
            ProtocolCode::TooManyRequests,
        ];
        let numbers: std::collections::HashSet<u32> = codes.iter().map(|c| c.code()).collect();
        assert_eq!(numbers.len(), codes.len());
        assert!(numbers.iter().all(|n| (8000..9000).contains(n)), "clear of R7.1's codes");

        let closes = [
            CloseReason::LoggedOut,
            CloseReason::GoingAway,
            CloseReason::TooBig,
            CloseReason::Kicked,
            CloseReason::Replaced,
            CloseReason::SlowReader,
            CloseReason::LoginTimeout,
            CloseReason::IdleTimeout,
            CloseReason::TooManyRequests,
            CloseReason::InvalidData,
            CloseReason::ProtocolViolation,
        ];
        let numbers: std::collections::HashSet<u16> = closes.iter().map(|c| c.code()).collect();
        assert_eq!(numbers.len(), closes.len());
        // RFC 6455 section 7.4.1's codes for what they mean there.
        assert_eq!(
            (
                CloseReason::ProtocolViolation.code(),
                CloseReason::InvalidData.code(),
                CloseReason::TooBig.code()
            ),
            (1002, 1007, 1009)
        );
    }

    #[test]
    fn an_engine_error_names_its_code_once() {
        let failure = Failure::engine(&Error::InvalidParameter("user id is empty".into()));
        assert_eq!((failure.code, failure.name), (6017, "InvalidParameter"));
        assert_eq!(failure.message, "user id is empty");
        assert_eq!(failure.to_string(), "InvalidParameter (6017): user id is empty");
        // A cluster node's refusal carries the engine's full text; the same prefix goes.
        let remote = Failure::refused(6014, "NotLoggedIn", "NotLoggedIn (6014): no session".into());
        assert_eq!(remote.message, "no session");
        let plain = Failure::refused(6017, "InvalidParameter", "not a command request".into());
        assert_eq!(plain.message, "not a command request");
    }
}
