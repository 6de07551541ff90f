//! A small scenario through the engine on the in-memory store, printing what happened:
//! logins, a subscription, a custom status, a heartbeat timeout, a kick, and recovery.
//!
//! Run it with `cargo run -p presence-engine --example scenario`.

use presence_engine::{Command, Config, Delivery, Engine, Error, Outcome};
use presence_storage_mem::MemStore;

fn show(engine: &Engine<MemStore>, at_ms: u64, what: &str, outcome: &Outcome) {
    println!("[{:>9} ms] {what}", at_ms);
    for status in outcome.statuses() {
        println!("{:>16} {} is {} {:?}", "->", status.user, status.status.general, &*status.status.custom);
    }
    for delivery in engine.deliveries(outcome) {
        match delivery {
            Delivery::Status { to, device, about, status, version } => {
                println!(
                    "{:>16} tell {to}/{device}: {about} is {} {:?} (version {version})",
                    "notice", status.general, &*status.custom
                )
            }
            Delivery::Kicked { to, device } => {
                println!("{:>16} tell {to}/{device}: you were kicked", "notice")
            }
        }
    }
}

fn main() -> Result<(), Error> {
    let config = Config { max_devices_per_user: 2, ..Config::default() };
    let mut engine = Engine::open(config.clone(), MemStore::new())?;
    let steps: Vec<(u64, Command)> = vec![
        (0, Command::login("alice", "phone")),
        (1_000, Command::login("bob", "laptop")),
        (2_000, Command::subscribe("bob", "laptop", ["alice", "carol"])),
        (3_000, Command::set_status("alice", "phone", "in a meeting")),
        (4_000, Command::login("alice", "tablet")),
        (5_000, Command::login("alice", "pc")),
        (6_000, Command::heartbeat("bob", "laptop")),
    ];
    for (at_ms, command) in steps {
        let what = format!("{command:?}");
        let outcome = engine.execute(command, at_ms)?;
        show(&engine, at_ms, &what, &outcome);
    }
    match engine.execute(Command::subscribe("bob", "laptop", ["bob"]), 7_000) {
        Err(e) => println!("[{:>9} ms] bob subscribes to himself: refused, {e}", 7_000),
        Ok(_) => println!("unexpected: a self-subscription was accepted"),
    }
    // Alice's devices go quiet; bob keeps sending heartbeats. 400 s after alice's last
    // login the tick disconnects her (R2.4) and her custom status is cleared (R3.3).
    engine.execute(Command::heartbeat("bob", "laptop"), 300_000)?;
    let outcome = engine.tick(405_000)?;
    show(&engine, 405_000, "tick", &outcome);

    let store = engine.into_store();
    let engine = Engine::open(config, store)?;
    println!(
        "reopened: {} events replayed; alice is {}, bob watches {:?}",
        engine.recovery().events_replayed,
        engine.status("alice").general,
        engine.subscriptions("bob")
    );
    Ok(())
}
