//! The README's "API in 20 lines", verbatim, so that it stays true. Regenerate this file's
//! body from the README when the example changes.

#![allow(clippy::unwrap_used)]

use presence_engine::{Command, Config, Delivery, Engine, GeneralStatus};
use presence_storage_sled::{Durability, SledStore};

#[test]
fn the_readme_api_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::env::set_current_dir(dir.path())?; // the example opens ./presence-data

    let store = SledStore::open("presence-data", Durability::Sync)?;
    let mut engine = Engine::open(Config::default(), store)?; // snapshot + tail of the log
    let now_ms = 1_700_000_000_000; // the host owns the clock (R1.3)
    engine.execute(Command::login("alice", "phone"), now_ms)?;
    engine.execute(Command::login("bob", "pc"), now_ms)?;
    let out = engine.execute(Command::subscribe("bob", "pc", ["alice"]), now_ms)?;
    assert_eq!(out.statuses()[0].status.general, GeneralStatus::Online); // R4.6

    let out = engine.execute(Command::set_status("alice", "phone", "in a meeting"), now_ms)?;
    for delivery in engine.deliveries(&out) {
        // push these to devices (R5)
        if let Delivery::Status { to, device, about, status, version } = delivery {
            println!("tell {to}/{device}: {about} is {} {:?} (v{version})", status.general, status.custom);
        }
    }
    engine.tick(now_ms + 400_000)?; // silent sessions time out (R2.4)
    assert_eq!(engine.status("alice").general, GeneralStatus::Offline);
    let err = engine.execute(Command::heartbeat("alice", "phone"), now_ms).unwrap_err();
    assert_eq!(err.code(), 6014); // NotLoggedIn (R7.1)
    Ok(())
}
