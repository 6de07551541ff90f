//! Server processes for tests: finding an installed program, free loopback ports, a child
//! process that is killed when dropped (also while a test panics), and bounded waits.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The script that installs the programs tests run, named in every "not installed" error.
pub const INSTALL_SCRIPT: &str = "scripts/install-programs.sh";

/// Finds `program` on `PATH` or in the sbin directories (Debian installs servers such as
/// nats-server in `/usr/sbin`, which is not on every user's `PATH`). The error says how to
/// install it; tests never skip for a missing program.
pub fn find_program(program: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "`{program}` is not installed, and these tests run the real server: run `{INSTALL_SCRIPT} {program}` \
                 from the repository root (as root it installs Debian's package; otherwise it prints the command)"
            )
        })
}

/// `count` distinct free TCP ports on 127.0.0.1, found by binding port 0 (all held at once,
/// so they differ, then released for the server to take).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}")))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap_or_else(|e| panic!("no local address: {e}")).port())
        .collect()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `GET path` on the HTTP server at `addr`, answered within `timeout`: its status code, or 0
/// when it did not answer (a server that is gone, or one that closed the connection).
pub fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else { return 0 };
    if stream.set_read_timeout(Some(timeout)).is_err() {
        return 0;
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Polls `ready` every 20 ms until it is true or `timeout` passes; the error names `what`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!("{what}: not ready after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a server never
/// outlives its test, even one that panics. Its output goes to a log file.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `program` with `args`, its stdout and stderr appended to `log`.
    pub fn spawn(program: &Path, args: &[String], log: &Path) -> Result<ServerProcess, String> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        Ok(ServerProcess { child, log: log.to_path_buf() })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits at most `timeout` for it to exit by itself: its exit status, or `None` if it is
    /// still running (it is then killed when dropped).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Kills it with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    /// Sends it SIGTERM (a clean shutdown) and waits at most `timeout` for it to exit: its
    /// exit status, or `None` if it was still running (it is then killed when dropped).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "cannot send SIGTERM to {}", self.child.id());
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
