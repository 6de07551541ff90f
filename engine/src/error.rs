//! Errors with Tencent's stable numeric codes (R7.1).

use std::fmt;

/// Everything the engine can refuse or fail with. [`Error::code`] gives SPEC.md R7.1's number.
///
/// A refused command changes nothing: no event, no notice, no rate-limit budget (R7.1).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A bad id, an empty or oversized batch, a self-subscription, a custom status too long
    /// (code 6017).
    InvalidParameter(String),
    /// No such session, or not connected where a connected one is needed (code 6014).
    NotLoggedIn(String),
    /// Too many calls of one API by one user in the window (R6.3, code 7008).
    RateLimited(String),
    /// The API needs the `ultimate` edition (R4.1, R6.2, code 7013).
    EditionNotSupported(String),
    /// The status feature switch is off (R4.1, R6.2, code 72001).
    FeatureNotEnabled(String),
    /// The event store failed, or holds data that cannot be read; state is unchanged
    /// (code 9000).
    Storage(StoreError),
    /// A configuration value is out of range. It uses `InvalidParameter`'s code 6017, since
    /// the source has no code of its own for it.
    InvalidConfig(String),
}

impl Error {
    /// The stable numeric code of SPEC.md R7.1.
    pub fn code(&self) -> u32 {
        match self {
            Error::InvalidParameter(_) | Error::InvalidConfig(_) => 6017,
            Error::NotLoggedIn(_) => 6014,
            Error::RateLimited(_) => 7008,
            Error::EditionNotSupported(_) => 7013,
            Error::FeatureNotEnabled(_) => 72001,
            Error::Storage(_) => 9000,
        }
    }

    /// The error's name as written in SPEC.md (`InvalidParameter`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Error::InvalidParameter(_) => "InvalidParameter",
            Error::NotLoggedIn(_) => "NotLoggedIn",
            Error::RateLimited(_) => "RateLimited",
            Error::EditionNotSupported(_) => "EditionNotSupported",
            Error::FeatureNotEnabled(_) => "FeatureNotEnabled",
            Error::Storage(_) => "Storage",
            Error::InvalidConfig(_) => "InvalidConfig",
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidParameter(message.into())
    }

    /// The same error, of the same kind and code, its message prefixed with the shard of a
    /// deployment it came from (`shard 2: ...`): for a host that runs several shards (R9) and
    /// reports one of their failures.
    pub fn in_shard(self, index: usize) -> Self {
        let named = |m: String| format!("shard {index}: {m}");
        match self {
            Error::InvalidParameter(m) => Error::InvalidParameter(named(m)),
            Error::NotLoggedIn(m) => Error::NotLoggedIn(named(m)),
            Error::RateLimited(m) => Error::RateLimited(named(m)),
            Error::EditionNotSupported(m) => Error::EditionNotSupported(named(m)),
            Error::FeatureNotEnabled(m) => Error::FeatureNotEnabled(named(m)),
            Error::InvalidConfig(m) => Error::InvalidConfig(named(m)),
            Error::Storage(e) => Error::Storage(StoreError { message: named(e.message), ..e }),
        }
    }

    pub(crate) fn not_logged_in(user: &str, device: &str, what: &str) -> Self {
        Error::NotLoggedIn(format!("user {user:?} has {what} on device {device:?}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidParameter(m)
            | Error::NotLoggedIn(m)
            | Error::RateLimited(m)
            | Error::EditionNotSupported(m)
            | Error::FeatureNotEnabled(m)
            | Error::InvalidConfig(m) => write!(f, "{} ({}): {m}", self.name(), self.code()),
            Error::Storage(e) => write!(f, "Storage ({}): {e}", self.code()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Storage(e)
    }
}

/// What kind of storage failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend's I/O failed (disk, database); retrying may help.
    Io,
    /// Stored bytes do not decode or do not fit together (a torn or corrupt batch, a gap in
    /// the sequence numbers).
    Corrupt,
    /// The data was written by a newer format version than this build reads.
    UnsupportedVersion,
    /// The caller broke the store's contract (for example a non-contiguous append).
    Contract,
    /// A failure injected on purpose by a test wrapper.
    Injected,
    /// Another writer appended to the log under this one (a replicated log's fence): this
    /// store will never append again, and its owner must reopen the log to learn what it
    /// now holds.
    Fenced,
    /// The batch or snapshot is larger than this store accepts
    /// ([`EventStore::batch_bytes_max`](crate::EventStore::batch_bytes_max)); nothing was
    /// stored.
    TooLarge,
}

/// A failure of an [`EventStore`](crate::EventStore) or of decoding what it holds.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// A new error of `kind` with a message that says what went wrong and where.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// A new error wrapping the backend's own error.
    pub fn with_source(
        kind: StoreErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { kind, message: message.into(), source: Some(Box::new(source)) }
    }

    /// A corrupt-data error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Corrupt, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// On a wire an error is `{"code": 6017, "name": "InvalidParameter", "message": "..."}`: the
/// stable code of R7.1, its name, and the message for people.
#[cfg(feature = "serde")]
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut error = serializer.serialize_struct("Error", 3)?;
        error.serialize_field("code", &self.code())?;
        error.serialize_field("name", self.name())?;
        error.serialize_field("message", &self.to_string())?;
        error.end()
    }
}
