//! Guards issue 22's first finding: each durable sync opened sled's `blobs` directory again,
//! so a process out of file descriptors (a flood of sockets in the same server) failed its
//! next sync, and a failed sync stops the runtime for good. A sync must need no new
//! descriptor for a write that made no blob.
//!
//! This binary holds one test, because it lowers its own process's limit on open files.

use presence_engine::{Command, Config, Engine};
use presence_storage_sled::{Durability, SledStore};
use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors open in this process now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() as u64
}

#[test]
fn durable_writes_need_no_new_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), Durability::Sync).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    engine.execute(Command::login("alice", "phone"), 1).unwrap();

    let before = getrlimit(Resource::Nofile);
    // A limit a little above what is open, then every descriptor left taken, as a flood of
    // sockets would take them.
    let mut limited = before;
    limited.current = Some(open_descriptors() + 64);
    setrlimit(Resource::Nofile, limited).unwrap();
    let mut flood = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        flood.push(file);
        assert!(flood.len() <= 1_000, "the lowered limit holds");
    }
    let no_descriptor_left = std::fs::File::open(dir.path()).is_err();
    let writes: Vec<_> = (0..20u64)
        .map(|i| engine.execute(Command::set_status("alice", "phone", format!("s{i}")), 2 + i))
        .collect();
    drop(flood);
    setrlimit(Resource::Nofile, before).unwrap();

    assert!(no_descriptor_left, "the limit leaves no descriptor to open a file");
    for (i, write) in writes.into_iter().enumerate() {
        write.unwrap_or_else(|e| panic!("write {i} with no descriptor left: {e}"));
    }
    assert_eq!(&*engine.status("alice").custom, "s19");
}
