//! The JetStream API as the store uses it, spoken directly (JSON over request/reply on
//! `$JS.API.*`) with async-nats's core client: stream info and create, get one message,
//! purge, and a publish whose acknowledgement is read here. Every request and field used
//! here exists in nats-server 2.9.10; nothing newer is sent.
//!
//! Also the runtime: the store is synchronous, so it owns a tokio runtime with one worker
//! thread, which keeps the connection alive (answers the server's pings, reconnects) between
//! calls, and blocks on each request from the caller's thread.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Request, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use presence_engine::{StoreError, StoreErrorKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// JetStream error codes the store tells apart.
pub(crate) const ERR_STREAM_NOT_FOUND: u64 = 10059;
pub(crate) const ERR_NO_MESSAGE_FOUND: u64 = 10037;
pub(crate) const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
pub(crate) const ERR_STREAM_NAME_IN_USE: u64 = 10058;
/// What nats-server 2.9 may answer, instead of "name in use", to one of two processes that
/// create the same stream at the same moment.
pub(crate) const ERR_SUBJECTS_OVERLAP: u64 = 10065;
pub(crate) const ERR_SEQUENCE_NOT_FOUND: u64 = 10057;

/// Whether a failed create may mean that another process created the same stream at the same
/// moment (then reading the stream's information finds it, at once or a little later).
/// Besides "name in use" and "subjects overlap", a clustered nats-server 2.9 may answer "stream
/// not found" to the loser while the winner's stream is still being placed on its servers
/// (seen in CI: three nodes creating one deployment's manifest on three servers).
pub(crate) fn created_meanwhile(failure: &Failure) -> bool {
    matches!(failure.err_code(), Some(ERR_STREAM_NAME_IN_USE | ERR_SUBJECTS_OVERLAP | ERR_STREAM_NOT_FOUND))
}

/// An error JetStream answered with.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub(crate) struct ApiError {
    #[serde(default)]
    pub code: u64,
    #[serde(default)]
    pub err_code: u64,
    #[serde(default)]
    pub description: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (JetStream error {}, status {})", self.description, self.err_code, self.code)
    }
}

/// Why a request failed.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// No answer in time, no responder (JetStream off, or the stream has no leader right
    /// now), or the connection broke: the same request may succeed later.
    Unavailable(String),
    /// JetStream answered with an error.
    Refused(ApiError),
    /// The answer could not be read (not JSON, bad base64): retrying will not help.
    Malformed(String),
}

impl Failure {
    /// Worth retrying: no answer, or JetStream saying it is temporarily unavailable (503,
    /// for example while a replicated stream has no leader).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Failure::Unavailable(_) => true,
            Failure::Refused(e) => e.code == 503,
            Failure::Malformed(_) => false,
        }
    }

    pub(crate) fn err_code(&self) -> Option<u64> {
        match self {
            Failure::Refused(e) => Some(e.err_code),
            Failure::Unavailable(_) | Failure::Malformed(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unavailable(m) | Failure::Malformed(m) => f.write_str(m),
            Failure::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// A stream's configuration, as far as the store reads it.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StreamConfig {
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub num_replicas: usize,
    #[serde(default)]
    pub max_msg_size: i64,
}

/// A stream's state.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StreamState {
    #[serde(default)]
    pub messages: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub first_seq: u64,
    #[serde(default)]
    pub last_seq: u64,
    /// With a `subjects_filter`: messages per matching subject.
    #[serde(default)]
    pub subjects: Option<HashMap<String, u64>>,
}

/// Where a replicated stream lives.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ClusterInfo {
    /// The cluster's name: empty on a server that is not part of a cluster.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub leader: Option<String>,
}

/// `$JS.API.STREAM.INFO.<stream>`'s answer.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StreamInfo {
    #[serde(default)]
    pub config: StreamConfig,
    #[serde(default)]
    pub state: StreamState,
    #[serde(default)]
    pub cluster: Option<ClusterInfo>,
}

#[derive(Deserialize)]
struct StoredMsg {
    subject: String,
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct MsgGetResponse {
    message: StoredMsg,
}

#[derive(Deserialize)]
struct PurgeResponse {
    #[serde(default)]
    purged: u64,
}

/// A publish's acknowledgement.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PubAck {
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub seq: u64,
}

/// One message read back from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawMsg {
    pub subject: String,
    pub seq: u64,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl RawMsg {
    /// The first header called `name` (case-insensitive, as NATS headers are).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The header `name` as a decimal number; the error names the message.
    pub(crate) fn header_u64(&self, name: &str) -> Result<u64, StoreError> {
        let value = self.header(name).ok_or_else(|| {
            StoreError::corrupt(format!(
                "message at stream sequence {} on {} has no {name} header (not written by \
                 presence-storage-nats?)",
                self.seq, self.subject
            ))
        })?;
        value.trim().parse().map_err(|_| {
            StoreError::corrupt(format!(
                "message at stream sequence {} on {} has {name}: {value:?}, not a number",
                self.seq, self.subject
            ))
        })
    }
}

/// Which message a get asks for.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MsgGet {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_by_subj: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<String>,
}

impl MsgGet {
    /// The message at stream sequence `seq`.
    pub(crate) fn at(seq: u64) -> Self {
        Self { seq: Some(seq), last_by_subj: None, next_by_subj: None }
    }
    /// The first message on `subject` (wildcards allowed) at stream sequence `seq` or later.
    pub(crate) fn next(subject: &str, seq: u64) -> Self {
        Self { seq: Some(seq.max(1)), last_by_subj: None, next_by_subj: Some(subject.to_string()) }
    }
    /// The last message on `subject`.
    pub(crate) fn last(subject: &str) -> Self {
        Self { seq: None, last_by_subj: Some(subject.to_string()), next_by_subj: None }
    }
}

/// Parses a NATS header block (`NATS/1.0\r\nName: value\r\n...\r\n\r\n`). Lines that are not
/// `Name: value` are skipped; nothing here panics on any input.
fn parse_headers(block: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(block);
    text.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

fn decode_base64(field: Option<&str>, what: &str, seq: u64) -> Result<Vec<u8>, StoreError> {
    match field {
        None => Ok(Vec::new()),
        Some(text) => base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| {
            StoreError::with_source(
                StoreErrorKind::Corrupt,
                format!("the server sent the {what} of stream sequence {seq} in bad base64"),
                e,
            )
        }),
    }
}

/// The JetStream API of one stream over one connection. Cheap to clone (the client is a
/// handle), so a reader task can own one.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    client: Client,
    stream: String,
    request_timeout: Duration,
}

impl Api {
    pub(crate) fn new(client: Client, stream: &str, request_timeout: Duration) -> Self {
        Self { client, stream: stream.to_string(), request_timeout }
    }

    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// One request; the answer's `error`, if any, becomes [`Failure::Refused`].
    async fn call<T: DeserializeOwned>(&self, subject: String, body: Vec<u8>) -> Result<T, Failure> {
        let request = Request::new().payload(Bytes::from(body)).timeout(Some(self.request_timeout));
        let message = self
            .client
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| Failure::Unavailable(format!("{subject}: {e}")))?;
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(Failure::Unavailable(format!("{subject}: no responders")));
        }
        parse_answer(&subject, &message.payload)
    }

    /// `STREAM.INFO`, with per-subject counts for the subjects matching `subjects_filter`.
    pub(crate) async fn info(&self, subjects_filter: Option<&str>) -> Result<StreamInfo, Failure> {
        let body = match subjects_filter {
            Some(filter) => serde_json::json!({ "subjects_filter": filter }).to_string().into_bytes(),
            None => Vec::new(),
        };
        self.call(format!("$JS.API.STREAM.INFO.{}", self.stream), body).await
    }

    /// `STREAM.CREATE` of a file-backed stream on `subjects` with `replicas` replicas and
    /// no limits (nothing is ever discarded but by the store's own purges).
    pub(crate) async fn create(&self, subjects: &[String], replicas: usize) -> Result<StreamInfo, Failure> {
        let config = serde_json::json!({
            "name": self.stream,
            "subjects": subjects,
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "discard": "old",
            "max_consumers": -1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "max_msg_size": -1,
            "duplicate_window": 120_000_000_000u64,
            "deny_delete": false,
            "deny_purge": false,
            "allow_rollup_hdrs": false,
        });
        self.call(format!("$JS.API.STREAM.CREATE.{}", self.stream), config.to_string().into_bytes()).await
    }

    /// `STREAM.MSG.GET`: `Ok(None)` when there is no such message.
    pub(crate) async fn get(&self, request: &MsgGet) -> Result<Option<RawMsg>, Failure> {
        let body = serde_json::to_vec(request).map_err(|e| Failure::Malformed(e.to_string()))?;
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", self.stream);
        match self.call::<MsgGetResponse>(subject, body).await {
            Ok(response) => {
                let stored = response.message;
                let headers = decode_base64(stored.hdrs.as_deref(), "headers", stored.seq)
                    .map_err(|e| Failure::Malformed(e.to_string()))?;
                let payload = decode_base64(stored.data.as_deref(), "payload", stored.seq)
                    .map_err(|e| Failure::Malformed(e.to_string()))?;
                Ok(Some(RawMsg {
                    subject: stored.subject,
                    seq: stored.seq,
                    headers: parse_headers(&headers),
                    payload,
                }))
            }
            Err(Failure::Refused(e)) if e.err_code == ERR_NO_MESSAGE_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `STREAM.PURGE` of the messages on `filter` below stream sequence `below` (`None`:
    /// all of them). Returns how many were removed.
    pub(crate) async fn purge(&self, filter: &str, below: Option<u64>) -> Result<u64, Failure> {
        let body = match below {
            Some(seq) => serde_json::json!({ "filter": filter, "seq": seq }),
            None => serde_json::json!({ "filter": filter }),
        };
        let subject = format!("$JS.API.STREAM.PURGE.{}", self.stream);
        let response: PurgeResponse = self.call(subject, body.to_string().into_bytes()).await?;
        Ok(response.purged)
    }

    /// `STREAM.MSG.DELETE` of the message at stream sequence `seq`, without overwriting its
    /// bytes (`no_erase`). A message already gone counts as deleted.
    pub(crate) async fn delete(&self, seq: u64) -> Result<(), Failure> {
        let body = serde_json::json!({ "seq": seq, "no_erase": true });
        let subject = format!("$JS.API.STREAM.MSG.DELETE.{}", self.stream);
        match self.call::<serde_json::Value>(subject, body.to_string().into_bytes()).await {
            Ok(_) => Ok(()),
            Err(Failure::Refused(e)) if e.err_code == ERR_SEQUENCE_NOT_FOUND => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Publishes `payload` with `headers` to `subject` and reads the acknowledgement.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: &[u8],
    ) -> Result<PubAck, Failure> {
        let request = Request::new()
            .headers(headers)
            .payload(Bytes::copy_from_slice(payload))
            .timeout(Some(self.request_timeout));
        let message = self
            .client
            .send_request(subject.to_string(), request)
            .await
            .map_err(|e| Failure::Unavailable(format!("publish to {subject}: {e}")))?;
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(Failure::Unavailable(format!(
                "publish to {subject}: no responders (no stream captures it, or it has no leader now)"
            )));
        }
        parse_answer(subject, &message.payload)
    }
}

fn parse_answer<T: DeserializeOwned>(subject: &str, payload: &[u8]) -> Result<T, Failure> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Failure::Malformed(format!("{subject}: the answer is not JSON: {e}")))?;
    if let Some(error) = value.get("error") {
        let error: ApiError = serde_json::from_value(error.clone()).unwrap_or_default();
        return Err(Failure::Refused(error));
    }
    serde_json::from_value(value)
        .map_err(|e| Failure::Malformed(format!("{subject}: unexpected answer: {e}")))
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` passes, pausing between
/// tries (50 ms, doubling to 500 ms).
pub(crate) async fn retrying<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// The store's runtime: one worker thread that drives the connection. Dropped without
/// blocking (so even inside someone else's async runtime).
#[derive(Debug)]
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

fn inside_async_runtime() -> Result<(), StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(StoreError::new(
            StoreErrorKind::Contract,
            "NatsStore was called from inside an async runtime, where it would block it; call it \
             from a plain thread (for example tokio's spawn_blocking)",
        )),
        Err(_) => Ok(()),
    }
}

impl Runtime {
    pub(crate) fn new() -> Result<Self, StoreError> {
        inside_async_runtime()?;
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("presence-nats")
            .enable_io()
            .enable_time()
            .build()
            .map(|runtime| Runtime(Some(runtime)))
            .map_err(|e| {
                StoreError::with_source(StoreErrorKind::Io, "cannot start the NATS client's thread", e)
            })
    }

    /// Runs `future` to completion on the calling thread. Refuses to run inside another
    /// async runtime, where blocking would stall it (call the store from a plain thread or
    /// `spawn_blocking` there).
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output, StoreError> {
        inside_async_runtime()?;
        match &self.0 {
            Some(runtime) => Ok(runtime.block_on(future)),
            None => Err(StoreError::new(StoreErrorKind::Io, "the NATS client's runtime is shut down")),
        }
    }

    /// A handle to spawn tasks on (`None` only while dropping).
    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_parse_and_never_panic() {
        let block = b"NATS/1.0\r\nNats-Msg-Id: a-1\r\nPresence-First-Seq: 7\r\n\r\n";
        let headers = parse_headers(block);
        assert_eq!(
            headers,
            [("Nats-Msg-Id".into(), "a-1".into()), ("Presence-First-Seq".into(), "7".into())]
        );
        for junk in [&b""[..], b"\xff\xfe", b"NATS/1.0", b"NATS/1.0\r\n:\r\nno colon\r\n"] {
            let _ = parse_headers(junk);
        }
    }

    #[test]
    fn answers_with_an_error_are_refusals() {
        let answer =
            br#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
        match parse_answer::<StreamInfo>("s", answer) {
            Err(Failure::Refused(e)) => assert_eq!(e.err_code, ERR_STREAM_NOT_FOUND),
            other => panic!("{other:?}"),
        }
        let ack: PubAck = parse_answer("s", br#"{"stream":"S","seq":4,"duplicate":true}"#).unwrap();
        assert_eq!((ack.stream.as_str(), ack.seq), ("S", 4));
        assert!(parse_answer::<PubAck>("s", b"not json").is_err());
    }

    // Two processes creating one stream at once: the loser is told "name in use" or, by
    // nats-server 2.9, "subjects overlap" or (clustered) "stream not found"; each sends it to
    // read what the winner made. Other refusals are not a race.
    #[test]
    fn a_create_lost_to_another_process_is_told_apart() {
        let refused = |code: u64| {
            let answer =
                format!(r#"{{"type":"x","error":{{"code":400,"err_code":{code},"description":"d"}}}}"#);
            parse_answer::<StreamInfo>("s", answer.as_bytes()).unwrap_err()
        };
        assert!(created_meanwhile(&refused(ERR_STREAM_NAME_IN_USE)));
        assert!(created_meanwhile(&refused(ERR_SUBJECTS_OVERLAP)));
        assert!(created_meanwhile(&refused(ERR_STREAM_NOT_FOUND)));
        assert!(!created_meanwhile(&refused(ERR_WRONG_LAST_SEQUENCE)));
        assert!(!created_meanwhile(&Failure::Unavailable("no responders".into())));
    }
}
