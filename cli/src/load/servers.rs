//! The servers a load run races: `presence serve` (this same binary) on a sled store, or
//! `presence redis-peer` in front of a redis-server, each started as its own process on a
//! free loopback port in a temporary directory, stopped (SIGTERM, then SIGKILL) when
//! dropped; and the CPU time and memory a process has used, from /proc.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One server process; stopped when dropped.
pub struct Process {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, program: &Path, args: &[String], log: &Path) -> Result<Process, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        Ok(Process { name, child, log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_port(&mut self, addr: SocketAddr) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited at once ({status}): {}", self.name, self.log_tail()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{} did not listen on {addr} within {START_TIMEOUT:?}: {}", self.name, self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within the timeout.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Finds a program on PATH or in the sbin directories; the error says how to install it.
fn find_program(program: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path).chain(sbin).map(|dir| dir.join(program)).find(|p| p.is_file()).ok_or_else(|| {
        format!("`{program}` is not installed: run `scripts/install-programs.sh {program}` from the repository root")
    })
}

/// A server under test: where it listens and the processes whose CPU counts as its own.
pub struct Server {
    pub addr: SocketAddr,
    pub processes: Vec<Process>,
}

/// `presence serve` on a fresh sled store in `dir`.
pub fn start_gateway(dir: &Path, secret: &Path, devices: usize) -> Result<Server, String> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = dir.join("gateway.toml");
    // Every device connects from loopback: one address.
    let text = format!(
        "[gateway]\nnode_id = \"load\"\nmax_connections = {0}\nmax_connections_per_address = {0}\n",
        devices + 1_000
    );
    std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("where is this binary? {e}"))?;
    let args: Vec<String> = [
        "serve",
        "--addr",
        &addr.to_string(),
        "--store",
        &dir.join("gateway-data").display().to_string(),
        "--secret-file",
        &secret.display().to_string(),
        "--config",
        &config.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut gateway = Process::spawn("presence serve", &exe, &args, &dir.join("gateway.log"))?;
    gateway.wait_for_port(addr)?;
    Ok(Server { addr, processes: vec![gateway] })
}

/// A redis-server persisting nothing, and `presence redis-peer` in front of it.
pub fn start_redis(dir: &Path, secret: &Path) -> Result<Server, String> {
    let redis_port = free_port()?;
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], redis_port));
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).map_err(|e| format!("{}: {e}", redis_dir.display()))?;
    let program = find_program("redis-server")?;
    let redis_args: Vec<String> = [
        "--port",
        &redis_port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &redis_dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--maxclients",
        "10000",
    ]
    .map(String::from)
    .to_vec();
    let mut redis = Process::spawn("redis-server", &program, &redis_args, &dir.join("redis.log"))?;
    redis.wait_for_port(redis_addr)?;

    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let exe = std::env::current_exe().map_err(|e| format!("where is this binary? {e}"))?;
    let args: Vec<String> = [
        "redis-peer",
        "--addr",
        &addr.to_string(),
        "--redis",
        &format!("redis://{redis_addr}/"),
        "--secret-file",
        &secret.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut peer = Process::spawn("presence redis-peer", &exe, &args, &dir.join("redis-peer.log"))?;
    peer.wait_for_port(addr)?;
    // The peer first: stopping it closes its Redis connections.
    Ok(Server { addr, processes: vec![peer, redis] })
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name, in parentheses, may hold spaces: the fields start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    // After the name: state (field 3) ... utime (14) and stime (15), here at 11 and 12.
    let ticks =
        |at: usize| fields.get(at).and_then(|f| f.parse::<u64>().ok()).ok_or("no CPU times in /proc stat");
    let (user, system) = (ticks(11)?, ticks(12)?);
    Ok((user + system) as f64 / clock_ticks_per_second())
}

/// Resident memory of a process, in bytes, from /proc/PID/status.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux if it cannot say).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The machine's load averages (1, 5, 15 minutes), from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_memory() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(pid).unwrap() >= before);
        assert!(resident_bytes(pid).unwrap() > 1_000_000);
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}
