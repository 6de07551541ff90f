//! The sharded runtime (docs/SPEC.md R9): users split over shards on several threads, status
//! changes, reads and friendships crossing shards, ticks as barriers, restarts that rebuild
//! the watch tables, and convergence under many senders. The lockstep equivalence with one
//! engine over random command sequences is in conformance/tests/sharded.rs.

use std::sync::mpsc;
use std::time::Duration;

use presence_engine::{
    Command, Config, Engine, EngineOptions, GeneralStatus, Reply, ShardMap, ShardOf, UserId,
};
use presence_runtime::{ChannelSink, Handle, ManualClock, OwnedDelivery, RuntimeConfig, ShardedRuntime};
use presence_storage_mem::MemStore;

const QUIET: Duration = Duration::from_secs(10);

/// `users` placed on shards round robin: user `i` on shard `i % shards`.
fn placed(shards: u32, users: &[&str]) -> ShardMap {
    ShardMap::with_placement(shards, users.iter().enumerate().map(|(i, u)| (UserId::from(*u), i as u32)))
}

fn open_shards(map: &ShardMap, config: &Config, stores: Vec<MemStore>) -> Vec<Engine<MemStore>> {
    stores
        .into_iter()
        .enumerate()
        .map(|(index, store)| {
            let shard = Some(ShardOf { map: map.clone(), index: index as u32 });
            Engine::open_with(config.clone(), store, EngineOptions { shard, ..EngineOptions::default() })
                .unwrap()
        })
        .collect()
}

struct Deployment {
    runtime: ShardedRuntime<MemStore>,
    handle: Handle,
    notices: crossbeam_channel::Receiver<Vec<OwnedDelivery>>,
    map: ShardMap,
    config: Config,
}

fn deploy(map: ShardMap, threads: usize, config: Config) -> Deployment {
    let stores = (0..map.count()).map(|_| MemStore::new()).collect();
    let engines = open_shards(&map, &config, stores);
    spawn(engines, map, threads, config)
}

fn spawn(engines: Vec<Engine<MemStore>>, map: ShardMap, threads: usize, config: Config) -> Deployment {
    let (sink, notices) = ChannelSink::bounded(100_000);
    let runtime_config = RuntimeConfig { auto_tick: false, ..RuntimeConfig::default() };
    let (runtime, handle) =
        ShardedRuntime::spawn(engines, threads, ManualClock::new(0), sink, runtime_config).unwrap();
    handle.quiesce(QUIET).unwrap();
    Deployment { runtime, handle, notices, map, config }
}

impl Deployment {
    /// Runs `command` at `at_ms`, waits until the shards are at rest, and returns the reply
    /// and every notice it caused on any shard.
    fn run(&self, command: Command, at_ms: u64) -> (Reply, Vec<OwnedDelivery>) {
        let reply = self.handle.send_at(command, at_ms).unwrap().wait().unwrap();
        self.handle.quiesce(QUIET).unwrap();
        (reply, self.notices.try_iter().flatten().collect())
    }

    fn tick(&self, at_ms: u64) -> Vec<OwnedDelivery> {
        self.handle.tick_at(at_ms).unwrap();
        self.handle.quiesce(QUIET).unwrap();
        self.notices.try_iter().flatten().collect()
    }

    fn restart(self) -> Deployment {
        let engines = self.runtime.shutdown().unwrap();
        let stores = engines.into_iter().map(Engine::into_store).collect();
        let engines = open_shards(&self.map, &self.config, stores);
        spawn(engines, self.map, 2, self.config)
    }
}

fn status_notice(
    to: &str,
    device: &str,
    about: &str,
    general: GeneralStatus,
) -> impl Fn(&OwnedDelivery) -> bool {
    let (to, device, about) = (to.to_string(), device.to_string(), about.to_string());
    move |d| {
        matches!(d, OwnedDelivery::Status { to: t, device: dv, about: a, status, .. }
            if **t == *to && **dv == *device && **a == *about && status.general == general)
    }
}

// R9.2: a subscriber on another shard hears its target's changes, after they are durable,
// with the target's versions.
#[test]
fn a_subscriber_on_another_shard_hears_its_targets_changes() {
    let d = deploy(placed(2, &["alice", "bob"]), 2, Config::default());
    assert_ne!(d.handle.shard_of("alice"), d.handle.shard_of("bob"));
    d.run(Command::login("alice", "phone"), 1);
    let (reply, _) = d.run(Command::subscribe("alice", "phone", ["bob"]), 2);
    let Reply::Statuses(initial) = reply else { panic!("subscribe answers statuses") };
    assert_eq!((initial[0].status.general, initial[0].version), (GeneralStatus::Unlogined, 0));
    let (_, notices) = d.run(Command::login("bob", "pc"), 3);
    assert!(notices.iter().any(status_notice("alice", "phone", "bob", GeneralStatus::Online)), "{notices:?}");
    let (_, notices) = d.run(Command::logout("bob", "pc"), 4);
    assert!(notices.iter().any(status_notice("alice", "phone", "bob", GeneralStatus::Unlogined)));
    let versions: Vec<u64> = notices
        .iter()
        .filter_map(|n| match n {
            OwnedDelivery::Status { to, about, version, .. } if &**to == "alice" && &**about == "bob" => {
                Some(*version)
            }
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![2], "bob's logout is his second change");
}

// R9.3: get_status and subscribe answer other shards' users with their current status and
// version, whether this shard watches them or not.
#[test]
fn replies_about_users_of_other_shards_carry_their_status_and_version() {
    let d = deploy(placed(3, &["alice", "bob", "carol"]), 2, Config::default());
    d.run(Command::login("bob", "pc"), 1);
    d.run(Command::set_status("bob", "pc", "busy"), 2);
    d.run(Command::login("alice", "phone"), 3);
    let (reply, _) = d.run(Command::get_status("alice", "phone", ["bob", "carol"]), 4);
    let Reply::Statuses(statuses) = reply else { panic!("get_status answers statuses") };
    assert_eq!(statuses[0].status.general, GeneralStatus::Online);
    assert_eq!(&*statuses[0].status.custom, "busy");
    assert_eq!(statuses[0].version, 2);
    assert_eq!((statuses[1].status.general, statuses[1].version), (GeneralStatus::Unlogined, 0));
    // Watched from now on: the answer comes from the watch table, kept current.
    d.run(Command::subscribe("alice", "phone", ["bob"]), 5);
    d.run(Command::set_status("bob", "pc", "away"), 6);
    let (reply, _) = d.run(Command::get_status("alice", "phone", ["bob"]), 400);
    let Reply::Statuses(statuses) = reply else { panic!("get_status answers statuses") };
    assert_eq!(&*statuses[0].status.custom, "away");
    assert_eq!(statuses[0].version, 3);
}

// R5.4, R9: a friendship is recorded on both shards, whichever user adds it, and friends on
// other shards hear each other when friend notifications are on.
#[test]
fn friendships_are_recorded_on_both_shards_and_notify_across_them() {
    let config = Config { friend_notifications: true, ..Config::default() };
    let d = deploy(placed(2, &["alice", "bob"]), 2, config);
    d.run(Command::login("alice", "phone"), 1);
    d.run(Command::add_friend("bob", "alice"), 2);
    let alice_friends = d.handle.read_user("alice", |v| v.friends("alice")).unwrap().wait().unwrap();
    let bob_friends = d.handle.read_user("bob", |v| v.friends("bob")).unwrap().wait().unwrap();
    assert_eq!(alice_friends, vec![UserId::from("bob")]);
    assert_eq!(bob_friends, vec![UserId::from("alice")]);
    let (_, notices) = d.run(Command::login("bob", "pc"), 3);
    assert!(notices.iter().any(status_notice("alice", "phone", "bob", GeneralStatus::Online)), "{notices:?}");
    d.run(Command::remove_friend("alice", "bob"), 4);
    let bob_friends = d.handle.read_user("bob", |v| v.friends("bob")).unwrap().wait().unwrap();
    assert!(bob_friends.is_empty());
    let (_, notices) = d.run(Command::logout("bob", "pc"), 5);
    assert!(!notices.iter().any(|n| matches!(n, OwnedDelivery::Status { to, .. } if &**to == "alice")));
}

// R9.4, R5.3: a tick is a barrier. A watcher whose own session times out in the same tick as
// its target hears nothing of the target, as on one engine.
#[test]
fn a_tick_is_a_barrier_across_shards() {
    let d = deploy(placed(2, &["alice", "bob", "carol"]), 2, Config::default());
    d.run(Command::login("alice", "phone"), 0);
    d.run(Command::login("carol", "pc"), 0);
    d.run(Command::subscribe("alice", "phone", ["bob"]), 0);
    d.run(Command::subscribe("carol", "pc", ["bob"]), 0);
    d.run(Command::login("bob", "pc"), 0);
    d.run(Command::heartbeat("carol", "pc"), 10_000);
    // At 400 s alice (shard 0) and bob (shard 1) time out; carol (shard 0) does not.
    let notices = d.tick(400_000);
    assert!(notices.iter().any(status_notice("carol", "pc", "bob", GeneralStatus::Offline)), "{notices:?}");
    assert!(!notices.iter().any(|n| matches!(n, OwnedDelivery::Status { to, .. } if &**to == "alice")));
}

// R9.5: a restarted deployment rebuilds its watch tables from the owning shards, and goes
// on notifying.
#[test]
fn a_restart_rebuilds_the_watch_tables() {
    let d = deploy(placed(2, &["alice", "bob"]), 2, Config::default());
    d.run(Command::login("alice", "phone"), 1);
    d.run(Command::login("bob", "pc"), 2);
    d.run(Command::subscribe("alice", "phone", ["bob"]), 3);
    let d = d.restart();
    let alice_shard = d.handle.shard_of("alice");
    let table = watch_table(&d.handle, alice_shard);
    assert_eq!(table, vec![("bob".to_string(), GeneralStatus::Online, 1)]);
    let (reply, notices) = d.run(Command::set_status("bob", "pc", "back"), 4);
    assert_eq!(reply, Reply::Done);
    assert!(notices.iter().any(status_notice("alice", "phone", "bob", GeneralStatus::Online)), "{notices:?}");
}

fn watch_table(handle: &Handle, shard: u32) -> Vec<(String, GeneralStatus, u64)> {
    let (sender, receiver) = mpsc::channel();
    let user = (0..10_000).map(|i| format!("probe{i}")).find(|u| handle.shard_of(u) == shard).unwrap();
    handle
        .read_user(&user, move |view| {
            let _ = sender.send(view.watch_table());
        })
        .unwrap()
        .wait()
        .unwrap();
    receiver
        .recv()
        .unwrap()
        .into_iter()
        .map(|(user, status, version)| (user.to_string(), status.general, version))
        .collect()
}

// R9.1: disconnect_sessions reaches every shard, and the replies add up.
#[test]
fn disconnecting_an_owners_sessions_reaches_every_shard() {
    let d = deploy(placed(3, &["a", "b", "c"]), 2, Config::default());
    for user in ["a", "b", "c"] {
        d.run(Command::login_with_owner(user, "phone", "gw-1"), 1);
    }
    d.run(Command::login("c", "pc"), 1);
    let (reply, _) = d.run(Command::disconnect_owner("gw-1"), 2);
    assert_eq!(reply, Reply::Disconnected { sessions: 3, remaining: 0 });
    assert_eq!(
        d.handle.read_user("c", |v| v.status("c").general).unwrap().wait().unwrap(),
        GeneralStatus::Online
    );
}

// R9.2, R9.5: many senders at once, no waiting: every device's notices about each user come
// in growing versions, and once at rest every watch table holds every watched user's current
// status and version.
#[test]
fn under_many_senders_notices_grow_and_watch_tables_converge() {
    let users: Vec<String> = (0..24).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let config = Config { friend_notifications: true, ..Config::default() };
    let d = deploy(placed(4, &names), 2, config);
    for user in &users {
        d.run(Command::login(user.as_str(), "phone"), 1);
    }
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let handle = d.handle.clone();
            let users = users.clone();
            std::thread::spawn(move || {
                let mut replies = Vec::new();
                for i in 0..400usize {
                    let user = &users[(i * 7 + t) % users.len()];
                    let other = &users[(i * 13 + t * 5 + 1) % users.len()];
                    let command = match i % 6 {
                        0 => Command::subscribe(user.as_str(), "phone", [other.as_str()]),
                        1 => Command::set_status(user.as_str(), "phone", format!("s{i}")),
                        2 => Command::login(user.as_str(), format!("pad{}", i % 3)),
                        3 => Command::logout(user.as_str(), format!("pad{}", (i + 1) % 3)),
                        4 => Command::add_friend(user.as_str(), other.as_str()),
                        _ => Command::remove_friend(other.as_str(), user.as_str()),
                    };
                    replies.push(handle.send_at(command, 2 + i as u64).unwrap());
                }
                // Some are refused (a logout of a device not logged in): that is fine here.
                replies.into_iter().map(|reply| reply.wait()).filter(Result::is_ok).count()
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    d.handle.quiesce(QUIET).unwrap();
    // Growing versions per (device, about).
    let mut last: std::collections::HashMap<(String, String, String), u64> = Default::default();
    for delivery in d.notices.try_iter().flatten() {
        if let OwnedDelivery::Status { to, device, about, version, .. } = delivery {
            let key = (to.to_string(), device.to_string(), about.to_string());
            let previous = last.insert(key.clone(), version);
            assert!(previous.is_none_or(|p| p < version), "{key:?}: version {version} after {previous:?}");
        }
    }
    // Every watched user's current status and version, on every shard that watches it.
    let mut checked = 0;
    for shard in 0..4 {
        for (user, general, version) in watch_table(&d.handle, shard) {
            let truth = d.handle.read_user(&user, {
                let user = user.clone();
                move |v| v.versioned_status(&user)
            });
            let (status, current) = truth.unwrap().wait().unwrap();
            let watched = d.handle.read_user(names[shard as usize], {
                let user = user.clone();
                move |v| v.subscriber_count(&user) > 0 || !v.friends(&user).is_empty()
            });
            if watched.unwrap().wait().unwrap() {
                assert_eq!((general, version), (status.general, current), "shard {shard}'s entry for {user}");
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} watched users: the load did not cross shards");
    // Friendships agree on both sides.
    for user in &users {
        let friends = d
            .handle
            .read_user(user, {
                let u = user.clone();
                move |v| v.friends(&u)
            })
            .unwrap()
            .wait()
            .unwrap();
        for friend in friends {
            let back = d
                .handle
                .read_user(&friend, {
                    let f = friend.clone();
                    move |v| v.friends(&f)
                })
                .unwrap()
                .wait()
                .unwrap();
            assert!(back.iter().any(|b| **b == **user), "{user} befriends {friend}, not the other way");
        }
    }
}
