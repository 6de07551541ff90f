//! The operations the kit generates, and the set a system says it supports (`--ops`).

use std::fmt;

use presence_engine::Command;

use crate::trace::Op;

/// One kind of operation of a trace (docs/TRACE-FORMAT.md): a command of SPEC.md, a tick, or a
/// restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `login`, with or without a connection owner (R2.1, R2.5, R8.5).
    Login,
    /// `logout` (R2.2).
    Logout,
    /// `disconnect` (R2.2).
    Disconnect,
    /// `heartbeat` (R2.4).
    Heartbeat,
    /// `set_status` (R3).
    SetStatus,
    /// `get_status`, of others and of oneself (R6).
    GetStatus,
    /// `subscribe` (R4.1-R4.3, R4.6).
    Subscribe,
    /// `unsubscribe` (R4.4).
    Unsubscribe,
    /// `add_friend` (R5.4).
    AddFriend,
    /// `remove_friend` (R5.4).
    RemoveFriend,
    /// `disconnect_sessions`, of one owner or of all (R8.5).
    DisconnectSessions,
    /// A clock tick (R2.4, R4.5).
    Tick,
    /// A restart over what the system stored, keeping or disconnecting its sessions (R8.2,
    /// R8.4). Only for systems that keep state across a stop.
    Restart,
}

impl OpKind {
    /// Every kind, in SPEC.md's order.
    pub const ALL: [OpKind; 13] = [
        OpKind::Login,
        OpKind::Logout,
        OpKind::Disconnect,
        OpKind::Heartbeat,
        OpKind::SetStatus,
        OpKind::GetStatus,
        OpKind::Subscribe,
        OpKind::Unsubscribe,
        OpKind::AddFriend,
        OpKind::RemoveFriend,
        OpKind::DisconnectSessions,
        OpKind::Tick,
        OpKind::Restart,
    ];

    /// The name a trace's `op` field uses (`login`, `set_status`, `tick`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Login => "login",
            OpKind::Logout => "logout",
            OpKind::Disconnect => "disconnect",
            OpKind::Heartbeat => "heartbeat",
            OpKind::SetStatus => "set_status",
            OpKind::GetStatus => "get_status",
            OpKind::Subscribe => "subscribe",
            OpKind::Unsubscribe => "unsubscribe",
            OpKind::AddFriend => "add_friend",
            OpKind::RemoveFriend => "remove_friend",
            OpKind::DisconnectSessions => "disconnect_sessions",
            OpKind::Tick => "tick",
            OpKind::Restart => "restart",
        }
    }

    /// The kind named `name`, as [`OpKind::name`] writes it.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of a trace's operation.
    pub fn of(op: &Op) -> OpKind {
        match op {
            Op::Tick => OpKind::Tick,
            Op::Restart { .. } => OpKind::Restart,
            Op::Command(command) => match command {
                Command::Login { .. } => OpKind::Login,
                Command::Logout { .. } => OpKind::Logout,
                Command::Disconnect { .. } => OpKind::Disconnect,
                Command::Heartbeat { .. } => OpKind::Heartbeat,
                Command::SetStatus { .. } => OpKind::SetStatus,
                Command::GetStatus { .. } => OpKind::GetStatus,
                Command::Subscribe { .. } => OpKind::Subscribe,
                Command::Unsubscribe { .. } => OpKind::Unsubscribe,
                Command::AddFriend { .. } => OpKind::AddFriend,
                Command::RemoveFriend { .. } => OpKind::RemoveFriend,
                Command::DisconnectSessions { .. } => OpKind::DisconnectSessions,
            },
        }
    }

    /// Whether it is a command of SPEC.md (not a tick or a restart).
    pub fn is_command(self) -> bool {
        !matches!(self, OpKind::Tick | OpKind::Restart)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A non-empty set of [`OpKind`]s: what a system supports, and so what the kit generates.
///
/// The default is every command of SPEC.md (the client's and the host's, R1-R8) and ticks,
/// without restarts, which need a system that keeps its state across a stop:
///
/// ```
/// use presence_conformance::kit::{OpKind, Ops};
///
/// let ops = Ops::default();
/// assert!(ops.contains(OpKind::Tick) && !ops.contains(OpKind::Restart));
/// assert!(Ops::all().contains(OpKind::Restart));
/// let no_friends = Ops::parse("login,logout,set_status,tick").unwrap();
/// assert_eq!(no_friends.to_string(), "login,logout,set_status,tick");
/// assert!(Ops::parse("login,fly").is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ops {
    /// One bit per [`OpKind`], never 0.
    bits: u16,
}

impl Ops {
    /// Every kind, restarts included.
    pub fn all() -> Ops {
        Ops { bits: OpKind::ALL.iter().fold(0, |bits, k| bits | k.bit()) }
    }

    /// Exactly `kinds`; an error if there are none.
    pub fn from_kinds(kinds: impl IntoIterator<Item = OpKind>) -> Result<Ops, String> {
        let bits = kinds.into_iter().fold(0, |bits, k| bits | k.bit());
        match bits {
            0 => Err("no operations: name at least one".into()),
            bits => Ok(Ops { bits }),
        }
    }

    /// Reads a comma-separated list of names (`login,logout,tick`), or `all`.
    pub fn parse(text: &str) -> Result<Ops, String> {
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                return Ok(Ops::all());
            }
            let kind = OpKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown operation {name:?}: the operations are {} (or all)", known.join(", "))
            })?;
            kinds.push(kind);
        }
        Ops::from_kinds(kinds)
    }

    /// These and `kind`.
    pub fn with(self, kind: OpKind) -> Ops {
        Ops { bits: self.bits | kind.bit() }
    }

    /// These without `kind`; an error if none would be left.
    pub fn without(self, kind: OpKind) -> Result<Ops, String> {
        Ops::from_kinds(self.kinds().filter(|k| *k != kind))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: OpKind) -> bool {
        self.bits & kind.bit() != 0
    }

    /// The kinds in the set, in SPEC.md's order.
    pub fn kinds(self) -> impl Iterator<Item = OpKind> {
        OpKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl Default for Ops {
    /// Every command and ticks; no restarts.
    fn default() -> Ops {
        Ops { bits: Ops::all().bits & !OpKind::Restart.bit() }
    }
}

impl fmt::Display for Ops {
    /// The names, comma-separated, as [`Ops::parse`] reads them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.kinds().map(OpKind::name).collect();
        f.write_str(&names.join(","))
    }
}
