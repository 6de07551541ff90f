//! What the threads of a sharded deployment tell each other (docs/DESIGN.md, sharding): only
//! status changes, reads of other shards' statuses, interest in a user's changes, and
//! friendships cross shards (R9).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;
use presence_engine::{Command, ShardMap, StatusChange, UserId, UserStatus};

use crate::handle::Shared;

/// One message between shards. Each names the shard it is for, since a thread runs several.
#[derive(Debug)]
pub(crate) enum Peer {
    /// Shard `watcher` has a user who watches `user` (of shard `owner`): send it `user`'s
    /// status changes from now on.
    Interest { owner: u32, user: UserId, watcher: u32 },
    /// Shard `watcher` no longer needs `user`'s changes.
    Uninterest { owner: u32, user: UserId, watcher: u32 },
    /// Shard `from` needs the statuses of `users`, all of shard `owner`: for the batch of
    /// commands it holds (`for_batch`), or to rebuild its watch table after an open.
    Read { owner: u32, users: Vec<UserId>, from: u32, for_batch: bool },
    /// The statuses a [`Peer::Read`] asked for, with their versions.
    Answer { to: u32, statuses: Vec<(UserId, UserStatus, u64)>, for_batch: bool },
    /// Durable status changes of users of another shard, in version order, for shard `to`.
    /// `epoch` is the number of ticks their shard had run: shard `to` takes them in once it
    /// has run as many (R9.4).
    Changes { to: u32, changes: Vec<StatusChange>, epoch: u64 },
    /// A friendship command that the lower of its two shards has made durable, for the other
    /// (each records the friendship, R5.4), at the time it ran there.
    Mirror { to: u32, command: Command, at_ms: u64, epoch: u64 },
}

impl Peer {
    /// The shard the message is for.
    pub(crate) fn shard(&self) -> u32 {
        match self {
            Peer::Interest { owner, .. } | Peer::Uninterest { owner, .. } | Peer::Read { owner, .. } => {
                *owner
            }
            Peer::Answer { to, .. } | Peer::Changes { to, .. } | Peer::Mirror { to, .. } => *to,
        }
    }

    /// The tick count its sender had reached, for the messages that must not overtake a tick.
    pub(crate) fn epoch(&self) -> Option<u64> {
        match self {
            Peer::Changes { epoch, .. } | Peer::Mirror { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

/// Where peer messages go: every thread's peer queue, and the thread of each shard.
#[derive(Debug)]
pub(crate) struct PeerRoutes {
    pub map: ShardMap,
    pub senders: Vec<Sender<Peer>>,
    pub thread_of: Vec<usize>,
    pub shared: Arc<Shared>,
}

impl PeerRoutes {
    /// Sends `peer` to the thread of its shard, counted in [`Shared::peer_pending`] until that
    /// thread has done with it.
    pub(crate) fn send(&self, peer: Peer) {
        let thread = self.thread_of.get(peer.shard() as usize).copied().unwrap_or(0);
        let Some(sender) = self.senders.get(thread) else { return };
        self.shared.peer_pending.fetch_add(1, Ordering::SeqCst);
        if sender.send(peer).is_err() {
            // That thread has stopped: nobody will handle it.
            self.done(1);
        }
    }

    /// `count` peer messages have been handled.
    pub(crate) fn done(&self, count: u64) {
        if count > 0 {
            self.shared.peer_pending.fetch_sub(count, Ordering::SeqCst);
        }
    }
}
