//! A real redis-server for tests: on a free loopback port, in its own temporary directory,
//! persisting nothing (`--save ""`, no append-only file), killed when dropped. When
//! redis-server is not installed, starting fails with a message naming
//! `scripts/install-programs.sh`: these tests never skip.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{accepts, find_program, free_ports, wait_until, ServerProcess};

/// How long the server may take to accept clients.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The arguments that start redis-server on 127.0.0.1:`port` in `dir`, persisting nothing.
pub fn redis_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    let args = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--dir",
        &dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    .map(String::from);
    args.to_vec()
}

/// One redis-server; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts it and waits (at most [`START_TIMEOUT`]) until it accepts clients.
    pub fn start() -> RedisServer {
        let program: PathBuf = find_program("redis-server").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        let port = free_ports(1)[0];
        let log = dir.path().join("redis.log");
        let mut process = ServerProcess::spawn(&program, &redis_args(port, dir.path()), &log)
            .unwrap_or_else(|e| panic!("{e}"));
        let ready = wait_until(START_TIMEOUT, &format!("redis-server on port {port}"), || {
            accepts(port) || !process.is_running()
        });
        if ready.is_err() || !process.is_running() {
            panic!("redis-server did not start on 127.0.0.1:{port}; its log ends:\n{}", process.log_tail(30));
        }
        RedisServer { process, port, _dir: dir }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}
