//! The status of a user: the derived general status (R2.3) and the custom status (R3).

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// The general status, derived from a user's sessions (R2.3). Its numbers are Tencent's (R2.7);
/// on a wire it is its name (`"ONLINE"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "UPPERCASE"))]
#[repr(u8)]
pub enum GeneralStatus {
    /// Never produced by the engine; present so that Tencent's numbering is complete (R2.7).
    Unknown = 0,
    /// At least one session is connected.
    Online = 1,
    /// Sessions exist, all disconnected.
    Offline = 2,
    /// No session at all, or a user the engine has never seen (R1.2).
    Unlogined = 3,
}

impl GeneralStatus {
    /// Tencent's number for the status (R2.7).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status for Tencent's number, if it is one of the four.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Unknown),
            1 => Some(Self::Online),
            2 => Some(Self::Offline),
            3 => Some(Self::Unlogined),
            _ => None,
        }
    }

    /// The name used in traces and in Tencent's documentation: `ONLINE`, `OFFLINE`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Online => "ONLINE",
            Self::Offline => "OFFLINE",
            Self::Unlogined => "UNLOGINED",
        }
    }

    /// Parses a name as printed by [`GeneralStatus::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "UNKNOWN" => Some(Self::Unknown),
            "ONLINE" => Some(Self::Online),
            "OFFLINE" => Some(Self::Offline),
            "UNLOGINED" => Some(Self::Unlogined),
            _ => None,
        }
    }
}

impl fmt::Display for GeneralStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user's status: the pair (general status, custom status) that notices carry (R5.1).
///
/// The custom string is reference-counted so that one status change fanned out to many
/// devices shares a single copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct UserStatus {
    /// The derived general status (R2.3); `"status"` on a wire.
    #[cfg_attr(feature = "serde", serde(rename = "status"))]
    pub general: GeneralStatus,
    /// The custom status; empty when none is set. Non-empty implies `Online` (R3.3).
    pub custom: Arc<str>,
}

impl UserStatus {
    /// The status of a user the engine has never seen (R1.2).
    pub fn unlogined() -> Self {
        Self { general: GeneralStatus::Unlogined, custom: Arc::from("") }
    }
}

/// When a user was last `ONLINE` (R6.5), derived from the log. On a wire: `"never"`, `"now"`
/// or `{"at": MS}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LastOnline {
    /// The user has never been `ONLINE`.
    Never,
    /// The user is `ONLINE` now.
    Now,
    /// The user stopped being `ONLINE` at this time (milliseconds), and has not been since.
    At(u64),
}
