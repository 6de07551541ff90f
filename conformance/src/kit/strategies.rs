//! The proptest strategies of the model-based tests and of the kit, in one copy: commands
//! over a small id space, so that users, devices and friends collide; small random
//! configurations, so that every cap, batch, limit and timeout is reached often; and timed
//! step lists, for the engine-and-model lockstep ([`steps`]) and for any subject ([`case`]).
//!
//! ```
//! use presence_conformance::kit::strategies;
//! use presence_conformance::kit::{OpKind, Ops};
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//!
//! let ops = Ops::from_kinds([OpKind::Login, OpKind::Tick])?;
//! let mut runner = TestRunner::deterministic();
//! let case = strategies::case(ops, 20).new_tree(&mut runner).unwrap().current();
//! assert!(case.steps.iter().all(|s| matches!(OpKind::of(&s.op), OpKind::Login | OpKind::Tick)));
//! # Ok::<(), String>(())
//! ```

use presence_engine::{Command, Config, Edition, UserId};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;

use super::case::{Case, TimedOp};
use super::ops::{OpKind, Ops};
use crate::lockstep::Step;
use crate::trace::Op;

/// The valid users of the id space; every read is compared for each of them.
pub const USERS: &[&str] = &["a", "b", "c", "d"];
const BAD_USERS: &[&str] = &["", "e\u{7}", "eeeee", "éé"];
const DEVICES: &[&str] = &["p", "q", "r"];
const BAD_DEVICES: &[&str] = &["", "\n", "ssss"];
const CUSTOMS: &[&str] = &["", "x", "y", "xy", "héé", "\u{0}"];
/// Connection owners (R8.5), one of them invalid (a control character).
const OWNERS: &[&str] = &["gw1", "gw2", "bad\u{1}"];

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![12 => select(USERS), 1 => select(BAD_USERS)].prop_map(String::from)
}

fn device() -> impl Strategy<Value = String> {
    prop_oneof![12 => select(DEVICES), 1 => select(BAD_DEVICES)].prop_map(String::from)
}

fn targets() -> impl Strategy<Value = Vec<UserId>> {
    prop::collection::vec(user().prop_map(UserId::from), 0..5)
}

/// The commands of one kind, with their weights (login-heavy, so that sessions exist).
fn commands_of(kind: OpKind) -> Vec<(u32, BoxedStrategy<Command>)> {
    match kind {
        OpKind::Login => vec![
            (5, (user(), device()).prop_map(|(u, d)| Command::login(u, d)).boxed()),
            (
                2,
                (user(), device(), select(OWNERS))
                    .prop_map(|(u, d, o)| Command::login_with_owner(u, d, o))
                    .boxed(),
            ),
        ],
        OpKind::DisconnectSessions => vec![(
            1,
            prop_oneof![select(OWNERS).prop_map(Command::disconnect_owner), Just(Command::disconnect_all())]
                .boxed(),
        )],
        OpKind::Logout => vec![(1, (user(), device()).prop_map(|(u, d)| Command::logout(u, d)).boxed())],
        OpKind::Disconnect => {
            vec![(2, (user(), device()).prop_map(|(u, d)| Command::disconnect(u, d)).boxed())]
        }
        OpKind::Heartbeat => {
            vec![(2, (user(), device()).prop_map(|(u, d)| Command::heartbeat(u, d)).boxed())]
        }
        OpKind::SetStatus => vec![(
            3,
            (user(), device(), select(CUSTOMS)).prop_map(|(u, d, c)| Command::set_status(u, d, c)).boxed(),
        )],
        OpKind::GetStatus => vec![
            (2, (user(), device(), targets()).prop_map(|(u, d, t)| Command::get_status(u, d, t)).boxed()),
            (1, (user(), device()).prop_map(|(u, d)| Command::get_status(u.clone(), d, [u])).boxed()),
        ],
        OpKind::Subscribe => {
            vec![(4, (user(), device(), targets()).prop_map(|(u, d, t)| Command::subscribe(u, d, t)).boxed())]
        }
        OpKind::Unsubscribe => {
            vec![(
                1,
                (user(), device(), targets()).prop_map(|(u, d, t)| Command::unsubscribe(u, d, t)).boxed(),
            )]
        }
        OpKind::AddFriend => vec![(2, (user(), user()).prop_map(|(u, f)| Command::add_friend(u, f)).boxed())],
        OpKind::RemoveFriend => {
            vec![(1, (user(), user()).prop_map(|(u, f)| Command::remove_friend(u, f)).boxed())]
        }
        OpKind::Tick | OpKind::Restart => Vec::new(),
    }
}

/// The weighted commands of every command kind in `ops`, or `None` when it holds none.
fn commands_in(ops: Ops) -> Option<Union<BoxedStrategy<Command>>> {
    let arms: Vec<(u32, BoxedStrategy<Command>)> = ops.kinds().flat_map(commands_of).collect();
    (!arms.is_empty()).then(|| Union::new_weighted(arms))
}

/// Any command of SPEC.md, login-heavy so that sessions exist.
pub fn command() -> impl Strategy<Value = Command> {
    command_in(Ops::default())
}

/// Any command whose kind is in `ops` (with the weights of [`command`]); a login when `ops`
/// holds no command at all.
pub fn command_in(ops: Ops) -> BoxedStrategy<Command> {
    match commands_in(ops) {
        Some(union) => union.boxed(),
        None => commands_in(Ops::default().with(OpKind::Login)).map_or_else(
            || (user(), device()).prop_map(|(u, d)| Command::login(u, d)).boxed(),
            |union| union.boxed(),
        ),
    }
}

/// A configuration with both editions, both switches, and every cap, batch, limit and
/// timeout small, so that each is reached often.
pub fn config() -> impl Strategy<Value = Config> {
    let gates = (
        prop_oneof![4 => Just(Edition::Ultimate), 1 => Just(Edition::Standard)],
        prop::bool::weighted(0.85),
        any::<bool>(),
    );
    let caps = (1..=3u32, 1..=4u32, 1..=4u32, 1..=4u32, 1..=4u32);
    let times = (1..=40u64, 1..=30u64, 1..=80u64);
    let sizes = (0..=4u32, prop_oneof![1..=5u32, Just(32)], prop_oneof![1..=3u32, Just(64)]);
    (gates, caps, times, sizes).prop_map(
        |(
            (edition, status_feature, friend_notifications),
            (devices, subscriptions, subscribe_batch, query_batch, calls),
            (heartbeat, window, retention),
            (custom_bytes, user_bytes, device_bytes),
        )| Config {
            edition,
            status_feature,
            friend_notifications,
            heartbeat_timeout_ms: heartbeat,
            max_devices_per_user: devices,
            max_subscriptions: subscriptions,
            max_subscribe_batch: subscribe_batch,
            max_query_batch: query_batch,
            rate_limit_calls: calls,
            rate_limit_window_ms: window,
            subscription_retention_ms: retention,
            max_custom_status_bytes: custom_bytes,
            max_user_id_bytes: user_bytes,
            max_device_id_bytes: device_bytes,
        },
    )
}

/// A step before its time is fixed.
#[derive(Clone, Debug)]
enum Draft {
    Execute(Command),
    Tick,
    Snapshot(bool),
    Reopen,
    ReopenDisconnecting,
}

/// How far the clock moves before a step: often not at all, sometimes backwards (R1.3).
fn delta_ms() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0i64), 6 => 1..=10i64, 3 => 10..=60i64, 1 => -30..0i64]
}

/// Drafts with their times fixed: increasing, sometimes decreasing, never below 0.
fn timed(drafts: Vec<(i64, Draft)>) -> Vec<(u64, Draft)> {
    let mut clock: i64 = 0;
    drafts
        .into_iter()
        .map(|(delta, draft)| {
            clock = clock.saturating_add(delta).max(0);
            (clock.unsigned_abs(), draft)
        })
        .collect()
}

/// Step lists of up to `max_len` steps with increasing (sometimes decreasing) times, with
/// snapshots, compactions and reopenings mixed in: the engine-and-model lockstep's
/// ([`crate::lockstep`]).
pub fn steps(max_len: usize) -> impl Strategy<Value = Vec<Step>> {
    let draft = prop_oneof![
        24 => command().prop_map(Draft::Execute),
        5 => Just(Draft::Tick),
        1 => any::<bool>().prop_map(Draft::Snapshot),
        1 => Just(Draft::Reopen),
        1 => Just(Draft::ReopenDisconnecting),
    ];
    prop::collection::vec((delta_ms(), draft), 1..max_len.max(2)).prop_map(|drafts| {
        timed(drafts)
            .into_iter()
            .map(|(at_ms, draft)| match draft {
                Draft::Execute(command) => Step::Execute { command, at_ms },
                Draft::Tick => Step::Tick { at_ms },
                Draft::Snapshot(compact) => Step::Snapshot { compact },
                Draft::Reopen => Step::Reopen,
                Draft::ReopenDisconnecting => Step::ReopenDisconnecting { at_ms },
            })
            .collect()
    })
}

/// A case for any subject: a [`config`] and 1 to `max_len` timed operations of the kinds in
/// `ops`. Single operations come with the weights of [`steps`] (restarts keeping or
/// disconnecting their sessions in equal measure, and no snapshots, which only the engine
/// has); about one draw in nine is instead a client's burst (one user on one device logs in
/// and makes a few calls, each repeated), so that the paths behind a session (gates, rate
/// limits, repeated calls) are reached as often as the refusals in front of it.
pub fn case(ops: Ops, max_len: usize) -> impl Strategy<Value = Case> {
    let mut arms: Vec<(u32, BoxedStrategy<Drafted>)> = Vec::new();
    if let Some(commands) = commands_in(ops) {
        arms.push((24, (delta_ms(), commands).prop_map(|(d, c)| vec![(d, Op::Command(c))]).boxed()));
        arms.push((4, burst(ops).boxed()));
    }
    if ops.contains(OpKind::Tick) {
        arms.push((5, delta_ms().prop_map(|d| vec![(d, Op::Tick)]).boxed()));
    }
    if ops.contains(OpKind::Restart) {
        for disconnect in [false, true] {
            arms.push((1, delta_ms().prop_map(move |d| vec![(d, Op::Restart { disconnect })]).boxed()));
        }
    }
    if arms.is_empty() {
        // `Ops` is never empty, so this is never reached; a tick is harmless if it were.
        arms.push((1, Just(vec![(0, Op::Tick)]).boxed()));
    }
    let max_len = max_len.max(1);
    let drafts = prop::collection::vec(Union::new_weighted(arms), 1..max_len.saturating_add(1));
    (config(), drafts).prop_map(move |(config, drafts)| {
        let mut clock: i64 = 0;
        let steps = drafts
            .into_iter()
            .flatten()
            .take(max_len)
            .map(|(delta, op)| {
                clock = clock.saturating_add(delta).max(0);
                TimedOp { at_ms: clock.unsigned_abs(), op }
            })
            .collect();
        Case { config, steps }
    })
}

/// Operations with how far the clock moves before each.
type Drafted = Vec<(i64, Op)>;

/// A client's burst: one user on one device logs in (when `ops` has logins) and makes one to
/// three calls of the kinds in `ops`, each repeated one to four times, close together: a
/// retrying client, a subscriber paging through targets, a query loop against the rate limit.
fn burst(ops: Ops) -> impl Strategy<Value = Drafted> {
    let call = (command_in(ops), 1..=4usize, prop_oneof![2 => Just(0i64), 3 => 1..=10i64]);
    let login = prop::bool::weighted(if ops.contains(OpKind::Login) { 0.8 } else { 0.0 });
    (select(USERS), select(DEVICES), login, delta_ms(), prop::collection::vec(call, 1..=3)).prop_map(
        |(user, device, login, delta, calls)| {
            let mut ops = Vec::new();
            if login {
                ops.push((delta, Op::Command(Command::login(user, device))));
            }
            for (command, repeats, gap) in calls {
                let command = acting_as(command, user, device);
                for _ in 0..repeats {
                    let delta = if ops.is_empty() { delta } else { gap };
                    ops.push((delta, Op::Command(command.clone())));
                }
            }
            ops
        },
    )
}

/// `command` made by `user` on `device` (a query of oneself stays one).
fn acting_as(command: Command, user: &str, device: &str) -> Command {
    let (u, d) = (UserId::from(user), presence_engine::DeviceId::from(device));
    match command {
        Command::Login { owner, .. } => Command::Login { user: u, device: d, owner },
        Command::Logout { .. } => Command::Logout { user: u, device: d },
        Command::Disconnect { .. } => Command::Disconnect { user: u, device: d },
        Command::Heartbeat { .. } => Command::Heartbeat { user: u, device: d },
        Command::SetStatus { custom, .. } => Command::SetStatus { user: u, device: d, custom },
        Command::GetStatus { user: asker, targets, .. } => {
            let targets =
                if targets.len() == 1 && targets.first() == Some(&asker) { vec![u.clone()] } else { targets };
            Command::GetStatus { user: u, device: d, targets }
        }
        Command::Subscribe { targets, .. } => Command::Subscribe { user: u, device: d, targets },
        Command::Unsubscribe { targets, .. } => Command::Unsubscribe { user: u, device: d, targets },
        Command::AddFriend { friend, .. } => Command::AddFriend { user: u, friend },
        Command::RemoveFriend { friend, .. } => Command::RemoveFriend { user: u, friend },
        other @ Command::DisconnectSessions { .. } => other,
    }
}
