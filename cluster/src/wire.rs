//! What travels between the nodes and clients of a cluster, on which NATS subjects
//! (docs/DESIGN.md, the cluster's message flows). Commands and their answers, the hot path,
//! travel in batches in a binary form ([`encode_requests`], [`encode_answers`]: the engine's
//! codec for each command and reply, in a small frame); everything else is JSON.

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

    /// Commands for shard `s`, a batch in each message ([`encode_requests`] →
    /// [`encode_answers`]); only its owner listens.
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

    /// Shard `s`'s batches, announced by its owner as each becomes durable
    /// (`presence_storage_nats::Announced`): every node follows them.
    pub fn log(&self, shard: u32) -> String {
        format!("{}.shard.{shard}.log", self.name)
    }

    /// Every shard's announced batches (a subscription over all of them).
    pub fn all_logs(&self) -> String {
        format!("{}.shard.*.log", self.name)
    }

    /// The shard of a subject of [`Subjects::log`].
    pub fn parse_log(&self, subject: &str) -> Option<u32> {
        subject.strip_prefix(&self.name)?.strip_prefix(".shard.")?.strip_suffix(".log")?.parse().ok()
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

/// The first byte of a batch of requests or answers: the frame's version.
const FRAME_VERSION: u8 = 1;

/// The most commands one batch holds: a client sends more as several.
pub const BATCH_COMMANDS_MAX: usize = 1_024;

/// A client stops adding commands to a batch at this many bytes (a single larger command goes
/// alone), well under NATS's default 1 MiB payload limit.
pub const BATCH_BYTES_TARGET: usize = 256 * 1024;

/// Encodes a batch of requests for one shard's owner: a version byte, the count (`u32`,
/// little-endian), then each request: a byte 0 or 1 and (if 1) its time (`u64`,
/// little-endian), then the command in the engine's binary form ([`Command::encode_to`]).
pub fn encode_requests(requests: &[CommandRequest]) -> Vec<u8> {
    let mut items = Vec::with_capacity(48 * requests.len());
    requests.iter().for_each(|request| encode_request(request, &mut items));
    frame_requests(requests.len(), &[&items])
}

/// Appends one request's bytes, as [`encode_requests`] writes each, to `out`: a client
/// encodes each command as it is queued and sends the queue as one frame
/// ([`frame_requests`]).
pub fn encode_request(request: &CommandRequest, out: &mut Vec<u8>) {
    match request.at_ms {
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_le_bytes());
        }
        None => out.push(0),
    }
    request.command.encode_to(out);
}

/// A batch of `count` requests whose bytes ([`encode_request`]) are `parts`, in order.
pub fn frame_requests(count: usize, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    parts.iter().for_each(|part| out.extend_from_slice(part));
    out
}

/// Reads what [`encode_requests`] wrote. Any other bytes are an error, never a panic.
pub fn decode_requests(bytes: &[u8]) -> Result<Vec<CommandRequest>, String> {
    let mut frame = Frame::open(bytes)?;
    let count = frame.count()?;
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        let at_ms = match frame.byte()? {
            0 => None,
            1 => Some(u64::from_le_bytes(frame.array()?)),
            other => return Err(format!("a request's time tag is {other}, not 0 or 1")),
        };
        let (command, rest) = Command::decode_from(frame.rest).map_err(|e| e.to_string())?;
        frame.rest = rest;
        requests.push(CommandRequest { command, at_ms });
    }
    frame.finish(requests)
}

/// Encodes the answers to a batch, in its order: a version byte, the count, then each answer:
/// 0 and the reply ([`Reply::encode_to`]); 1, the code (`u32`) and the message; or 2 and
/// the message (a message is its length, `u32`, and its UTF-8 bytes).
pub fn encode_answers(answers: &[CommandAnswer]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 * answers.len());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&(answers.len() as u32).to_le_bytes());
    let text = |out: &mut Vec<u8>, message: &str| {
        out.extend_from_slice(&(message.len() as u32).to_le_bytes());
        out.extend_from_slice(message.as_bytes());
    };
    for answer in answers {
        match answer {
            CommandAnswer::Done(reply) => {
                out.push(0);
                reply.encode_to(&mut out);
            }
            CommandAnswer::Refused { code, message } => {
                out.push(1);
                out.extend_from_slice(&code.to_le_bytes());
                text(&mut out, message);
            }
            CommandAnswer::Unavailable { message } => {
                out.push(2);
                text(&mut out, message);
            }
        }
    }
    out
}

/// Reads what [`encode_answers`] wrote. Any other bytes are an error, never a panic.
pub fn decode_answers(bytes: &[u8]) -> Result<Vec<CommandAnswer>, String> {
    let mut frame = Frame::open(bytes)?;
    let count = frame.count()?;
    let mut answers = Vec::with_capacity(count);
    for _ in 0..count {
        let answer = match frame.byte()? {
            0 => {
                let (reply, rest) = Reply::decode_from(frame.rest).map_err(|e| e.to_string())?;
                frame.rest = rest;
                CommandAnswer::Done(reply)
            }
            1 => {
                let code = u32::from_le_bytes(frame.array()?);
                CommandAnswer::Refused { code, message: frame.text()? }
            }
            2 => CommandAnswer::Unavailable { message: frame.text()? },
            other => return Err(format!("an answer's tag is {other}, not 0, 1 or 2")),
        };
        answers.push(answer);
    }
    frame.finish(answers)
}

/// The bytes of a batch not read yet.
struct Frame<'a> {
    rest: &'a [u8],
}

impl<'a> Frame<'a> {
    fn open(bytes: &'a [u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&FRAME_VERSION, rest)) => Ok(Frame { rest }),
            Some((version, _)) => Err(format!("a batch of version {version}, not {FRAME_VERSION}")),
            None => Err("an empty batch".into()),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (taken, rest) = self.rest.split_first_chunk::<N>().ok_or("a batch cut short")?;
        self.rest = rest;
        Ok(*taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        self.array::<1>().map(|[b]| b)
    }

    /// The item count, which cannot exceed the bytes left (each item takes one at least) nor
    /// [`BATCH_COMMANDS_MAX`].
    fn count(&mut self) -> Result<usize, String> {
        let count = u32::from_le_bytes(self.array()?) as usize;
        if count > BATCH_COMMANDS_MAX || count > self.rest.len() {
            return Err(format!("a batch that says it holds {count} items"));
        }
        Ok(count)
    }

    fn text(&mut self) -> Result<String, String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > self.rest.len() {
            return Err("a batch cut short".into());
        }
        let (text, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(text.to_vec()).map_err(|_| "a message that is not UTF-8".to_string())
    }

    fn finish<T>(self, items: T) -> Result<T, String> {
        match self.rest.len() {
            0 => Ok(items),
            n => Err(format!("a batch with {n} bytes after its last item")),
        }
    }
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
    /// Keep the status changes the node takes in from other shards from its own shards until
    /// [`Control::Release`]: a host that drives ticks holds every node, ticks every node, then
    /// releases them, so that no shard hears of another's tick before it has run that tick
    /// itself (R9.4's barrier, across nodes).
    Hold,
    /// Hand the changes held since [`Control::Hold`] to the node's shards, and go on as usual.
    Release,
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
        assert_eq!(subjects.parse_log(&subjects.log(7)), Some(7));
        assert_eq!(subjects.parse_log("p.shard.x.log"), None);
        assert_eq!(subjects.parse_log("q.shard.7.log"), None);
    }

    #[test]
    fn batches_read_back_and_damage_is_an_error() {
        let requests = vec![
            CommandRequest { command: Command::login("alice", "phone"), at_ms: Some(5) },
            CommandRequest { command: Command::subscribe("bob", "pc", ["alice", "carol"]), at_ms: None },
            CommandRequest { command: Command::set_status("alice", "phone", "busy"), at_ms: Some(u64::MAX) },
        ];
        let bytes = encode_requests(&requests);
        assert_eq!(decode_requests(&bytes).unwrap(), requests);
        let answers = vec![
            CommandAnswer::Done(Reply::Done),
            CommandAnswer::Refused { code: 6014, message: "not logged in ✗".into() },
            CommandAnswer::Unavailable { message: "moving".into() },
            CommandAnswer::Done(Reply::Disconnected { sessions: 3, remaining: 0 }),
        ];
        let answer_bytes = encode_answers(&answers);
        assert_eq!(decode_answers(&answer_bytes).unwrap(), answers);
        assert_eq!(decode_requests(&encode_requests(&[])).unwrap(), vec![]);
        for cut in 0..bytes.len() {
            assert!(decode_requests(&bytes[..cut]).is_err(), "requests cut at {cut}");
        }
        for cut in 0..answer_bytes.len() {
            assert!(decode_answers(&answer_bytes[..cut]).is_err(), "answers cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_requests(&longer).is_err());
        // Another version, a count beyond the bytes, JSON: all refused.
        assert!(decode_requests(&[2, 0, 0, 0, 0]).is_err());
        assert!(decode_requests(&[1, 255, 255, 255, 255]).is_err());
        assert!(decode_answers(br#"{"done":"done"}"#).is_err());
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
