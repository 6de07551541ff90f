//! What [`NatsStore::open`](crate::NatsStore::open) takes.

use std::time::Duration;

/// Where the log lives and how long the store waits for NATS.
///
/// ```
/// use std::time::Duration;
/// use presence_storage_nats::NatsOptions;
///
/// let options = NatsOptions {
///     replicas: 3,
///     create: true,
///     ..NatsOptions::new("nats://127.0.0.1:4222,nats://127.0.0.1:4223", "presence")
/// };
/// assert_eq!(options.connect_timeout, Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// The server to connect to, `nats://HOST:PORT`, or several separated by commas (the
    /// client also learns the other members of a cluster from the server it reaches).
    pub url: String,
    /// The stream holding the log: 1 to 128 ASCII letters, digits, `_` or `-`. Its subjects
    /// are `<stream>.batch`, `<stream>.meta` and `<stream>.snap.>`.
    pub stream: String,
    /// How many servers hold a copy of the stream (1, 3 or 5 are usual); used only when
    /// [`create`](NatsOptions::create) makes the stream. An existing stream keeps its own.
    pub replicas: usize,
    /// Create the stream if it does not exist. Without it a missing stream is an error, so
    /// that reading tools never create anything.
    pub create: bool,
    /// How long opening waits for a connection to the server.
    pub connect_timeout: Duration,
    /// How long one JetStream request (an API call or a publish's acknowledgement) waits
    /// for its answer.
    pub request_timeout: Duration,
    /// How long one store operation (an append, a read, a snapshot chunk) keeps retrying
    /// requests that got no answer, for example while a replicated stream elects a new
    /// leader (a few seconds on nats-server 2.9). A retried publish carries the same
    /// message id and expected sequence, so it is never stored twice.
    pub operation_timeout: Duration,
    /// A plain NATS subject on which every batch is also published once JetStream has
    /// acknowledged it, for followers that would otherwise poll the stream
    /// ([`Announced`](crate::Announced)); `None` (the default) announces nothing. It must not be
    /// a subject the stream captures.
    pub announce: Option<String>,
}

impl NatsOptions {
    /// The defaults for stream `stream` at `url`: one replica, no creation, 5 s to connect,
    /// 5 s a request, 20 s an operation.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            replicas: 1,
            create: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(20),
            announce: None,
        }
    }
}
