//! `presence inspect STORE`: what a store holds, recovered as the engine would.

use std::process::ExitCode;

use presence_engine::{Config, Engine, EventStore, LastOnline, ReadOnlyStore, UserView};
use serde_json::json;

use crate::stores::{open_existing, StoreAddress};

/// Arguments of `presence inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store: a sled directory, or a NATS stream as nats://HOST:PORT/STREAM.
    path: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Show one user: status, last online, sessions, subscriptions, subscribers, friends.
    #[arg(long)]
    user: Option<String>,
}

/// Runs `presence inspect`.
pub fn run(args: Args) -> ExitCode {
    match inspect(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("presence inspect: {message}");
            ExitCode::from(2)
        }
    }
}

fn inspect(args: &Args) -> Result<(), String> {
    let address = StoreAddress::parse(&args.path)?;
    let store = open_existing(&address)?;
    let engine = Engine::open(Config::default(), ReadOnlyStore::new(&store))
        .map_err(|e| format!("{address}: cannot recover the store: {e}"))?;
    if let Some(user) = &args.user {
        print_user(&engine.user(user), args.json);
        return Ok(());
    }
    let snapshot_seq = store.snapshots().map_err(|e| e.to_string())?.last().copied().unwrap_or(0);
    let mut batches = 0u64;
    let mut events = 0u64;
    for batch in store.read_from(0).map_err(|e| e.to_string())? {
        let batch = batch.map_err(|e| e.to_string())?;
        batches += 1;
        events += u64::from(batch.count);
    }
    let stats = engine.stats();
    let users = engine.logical_state().users.len();
    let bytes = store.bytes()?;
    let summary = json!({
        "path": address.to_string(),
        "last_seq": engine.last_seq(),
        "snapshot_seq": snapshot_seq,
        "batches": batches,
        "events_in_log": events,
        "users": users,
        "sessions_connected": stats.sessions_connected,
        "sessions_disconnected": stats.sessions_disconnected,
        "subscriptions": stats.subscriptions,
        "friendships": stats.friendships,
        "bytes_on_disk": bytes,
        "engine_time_ms": engine.now_ms(),
    });
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    let rows: [(&str, String); 11] = [
        ("store", address.to_string()),
        ("last sequence number", engine.last_seq().to_string()),
        ("snapshot covers", format!("events up to {snapshot_seq}")),
        ("log", format!("{batches} batches, {events} events")),
        ("users", users.to_string()),
        ("sessions connected", stats.sessions_connected.to_string()),
        ("sessions disconnected", stats.sessions_disconnected.to_string()),
        ("subscriptions", stats.subscriptions.to_string()),
        ("friendships", stats.friendships.to_string()),
        ("bytes on disk", bytes.to_string()),
        ("engine time", format!("{} ms", engine.now_ms())),
    ];
    for (name, value) in rows {
        println!("{name:<22} {value}");
    }
    Ok(())
}

fn last_online(view: &UserView) -> String {
    match view.last_online {
        LastOnline::Never => "never".into(),
        LastOnline::Now => "now".into(),
        LastOnline::At(ms) => format!("{ms} ms"),
    }
}

fn print_user(view: &UserView, as_json: bool) {
    let sessions: Vec<_> = view
        .sessions
        .iter()
        .map(|s| json!({"device": s.device.as_str(), "connected": s.connected, "login_at_ms": s.login_at_ms}))
        .collect();
    let names = |ids: &[presence_engine::UserId]| ids.iter().map(|u| u.to_string()).collect::<Vec<_>>();
    if as_json {
        let value = json!({
            "user": view.user.as_str(),
            "status": view.status.general.name(),
            "custom": &*view.status.custom,
            "last_online": last_online(view),
            "sessions": sessions,
            "subscriptions": names(&view.subscriptions),
            "subscriber_count": view.subscriber_count,
            "friends": names(&view.friends),
        });
        println!("{value}");
        return;
    }
    println!("user              {}", view.user);
    println!("status            {} {:?}", view.status.general, &*view.status.custom);
    println!("last online       {}", last_online(view));
    for s in &view.sessions {
        let state = if s.connected { "connected" } else { "disconnected" };
        println!("session           {} {state}, logged in at {} ms", s.device, s.login_at_ms);
    }
    println!("subscriptions     {}", names(&view.subscriptions).join(" "));
    println!("subscribers       {}", view.subscriber_count);
    println!("friends           {}", names(&view.friends).join(" "));
}
