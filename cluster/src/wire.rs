//! What travels between the nodes and clients of a cluster, on which NATS subjects
//! (docs/DESIGN.md, the cluster's message flows). Every payload is JSON.

use presence_engine::{Cause, Command, GeneralStatus, Reply, UserId, UserStatus};
use serde::{Deserialize, Serialize};

/// The subjects of deployment `name`.
#[derive(Clone, Debug)]
pub struct Subjects {
    name: String,
}

impl Subjects {
    /// The subjects of deployment `name`.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string() }
    }

    /// Commands for shard `s` ([`CommandRequest`] → [`CommandAnswer`]); only its owner listens.
    pub fn command(&self, shard: u32) -> String {
        format!("{}.shard.{shard}.cmd", self.name)
    }

    /// Reads of shard `s`'s users' statuses ([`StatusRead`] → [`StatusAnswer`]), for other
    /// shards' `get_status` and `subscribe` (R9.3).
    pub fn read(&self, shard: u32) -> String {
        format!("{}.shard.{shard}.read", self.name)
    }

    /// The friendships between shard `s`'s users and another shard's ([`FriendsRead`] →
    /// [`FriendsAnswer`]), for a node that takes that other shard over.
    pub fn friends(&self, shard: u32) -> String {
        format!("{}.shard.{shard}.friends", self.name)
    }

    /// The host's direct reads of one user of shard `s` ([`ViewRead`] → [`ViewAnswer`]).
    pub fn view(&self, shard: u32) -> String {
        format!("{}.shard.{shard}.view", self.name)
    }

    /// Every node's [`Alive`] heartbeat.
    pub fn alive(&self) -> String {
        format!("{}.alive", self.name)
    }

    /// Requests to node `id` ([`Control`] → [`ControlAnswer`]).
    pub fn control(&self, node: &str) -> String {
        format!("{}.node.{node}.control", self.name)
    }

    /// The notices for the devices whose sockets `owner` holds: one [`NoticeBatch`] per turn
    /// of a shard and owner. An owner that is not a plain token (letters, digits, `_`, `-`)
    /// is written in hex, `x` first; sessions without an owner go to `_`.
    pub fn notices(&self, owner: Option<&str>) -> String {
        format!("{}.node.{}.notices", self.name, owner_token(owner))
    }

    /// Every node's notices (a subscription over all of them).
    pub fn all_notices(&self) -> String {
        format!("{}.node.*.notices", self.name)
    }
}

/// The subject token for a connection owner.
pub fn owner_token(owner: Option<&str>) -> String {
    match owner {
        None => "_".into(),
        Some(owner) if is_token(owner) => owner.into(),
        Some(owner) => format!("x{}", owner.bytes().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// Whether `text` is 1 to 64 ASCII letters, digits, `_` or `-`: a node id, and a subject
/// token as it is.
pub fn is_token(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A command for its shard's owner, at the host's time (`None`: the owner's clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The command.
    pub command: Command,
    /// Its time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// The owner's answer to a [`CommandRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAnswer {
    /// It succeeded, and its events are durable.
    Done(Reply),
    /// The engine refused it (R7.1) or the store failed: its code and message.
    Refused {
        /// The error's code (R7.1).
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// This node does not serve the shard now (it is moving, or the node lost its lease):
    /// nothing was done; ask again.
    Unavailable {
        /// Why.
        message: String,
    },
}

/// Statuses of some users of one shard, as its owner knows them now (R9.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusRead {
    /// The users.
    pub users: Vec<UserId>,
}

/// The answer to a [`StatusRead`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// Each user's status and version, in the order asked.
    pub statuses: Vec<(UserId, UserStatus, u64)>,
}

/// The friendships between the asked shard's users and shard `with`'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FriendsRead {
    /// The other shard.
    pub with: u32,
}

/// The answer to a [`FriendsRead`]: (user of the asked shard, friend on shard `with`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FriendsAnswer {
    /// The pairs.
    pub pairs: Vec<(UserId, UserId)>,
}

/// A direct read of one user (R6.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewRead {
    /// The user.
    pub user: UserId,
}

/// One session, as [`ViewAnswer`] lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionAnswer {
    /// Its device.
    pub device: String,
    /// Whether it is connected.
    pub connected: bool,
    /// When it logged in.
    pub login_at_ms: u64,
    /// Its last heartbeat.
    pub heartbeat_at_ms: u64,
}

/// What the owner of a user's shard knows of the user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewAnswer {
    /// The status and its version.
    pub status: UserStatus,
    /// Its version.
    pub version: u64,
    /// The sessions, by device.
    pub sessions: Vec<SessionAnswer>,
    /// The subscription list, oldest first.
    pub subscriptions: Vec<UserId>,
    /// The friends, sorted.
    pub friends: Vec<UserId>,
}

/// A node's heartbeat: who it is, and the shards it serves with the stream sequence number of
/// its claim of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alive {
    /// The node.
    pub node: String,
    /// (shard, claim's stream sequence) of every shard it serves.
    pub shards: Vec<(u32, u64)>,
}

/// A request to one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Control {
    /// Tick every shard the node serves at `at_ms` (deployments whose nodes do not tick by
    /// themselves: tests and simulations).
    Tick {
        /// The time.
        at_ms: u64,
    },
    /// Answer once the node has taken in every change the streams held when it was asked,
    /// and its shards have run everything queued.
    Quiesce,
    /// Close and reopen every shard the node serves (R8.2), keeping their sessions. Answers
    /// the latest time any of its shards logged: the deployment's time after a restart is the
    /// latest of every node's (R1.3), which only the host can gather.
    Restart,
    /// Disconnect every session of every shard the node serves at `at_ms`, logged as
    /// restarts (R8.4): after a [`Control::Restart`] of every node, at the deployment's time.
    DisconnectRestored {
        /// The time.
        at_ms: u64,
    },
    /// Rebuild the watch table of every shard the node serves from the owners of the users
    /// they watch (R9.5): after a [`Control::Restart`] of every node, once all serve again.
    Rebuild,
    /// Fix the recovery time of every shard the node serves (R8.2).
    Resume {
        /// The time.
        at_ms: u64,
    },
    /// The node's view: the shards it serves and the nodes it counts as alive.
    Status,
}

/// A node's answer to a [`Control`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// The node.
    pub node: String,
    /// The shards it serves.
    pub shards: Vec<u32>,
    /// The nodes it counts as alive, itself included.
    pub alive: Vec<String>,
    /// For a restart: the latest time its shards logged.
    #[serde(default)]
    pub latest_ms: u64,
    /// Why it could not do what was asked, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One notice for one device, with the notice's version and cause (R5.6, R5.7).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NoticeOut {
    /// `about` now has this status.
    Status {
        /// The recipient user.
        to: String,
        /// The recipient device.
        device: String,
        /// The user whose status changed.
        about: String,
        /// Its general status.
        status: GeneralStatus,
        /// Its custom status.
        custom: String,
        /// Its version.
        version: u64,
        /// Why it changed.
        cause: Cause,
    },
    /// The device's session was kicked (R2.5).
    Kicked {
        /// The recipient user.
        to: String,
        /// The kicked device.
        device: String,
    },
}

/// One turn's notices of one shard for the devices of one owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoticeBatch {
    /// The shard that made them.
    pub shard: u32,
    /// The notices.
    pub notices: Vec<NoticeOut>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_become_subject_tokens() {
        let subjects = Subjects::new("p");
        assert_eq!(subjects.notices(Some("node-1")), "p.node.node-1.notices");
        assert_eq!(subjects.notices(None), "p.node._.notices");
        assert_eq!(subjects.notices(Some("a.b")), "p.node.x612e62.notices");
        assert!(!is_token("") && !is_token("a b") && is_token("gw_1-A"));
    }

    #[test]
    fn a_command_request_reads_back() {
        let request = CommandRequest { command: Command::login("alice", "phone"), at_ms: Some(5) };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<CommandRequest>(&text).unwrap(), request);
        let answer = CommandAnswer::Refused { code: 6014, message: "no".into() };
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<CommandAnswer>(&text).unwrap(), answer);
    }
}
