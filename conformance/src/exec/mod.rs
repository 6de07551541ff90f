//! Any implementation, in any language, behind an adapter program that speaks JSON lines over
//! its standard input and output (docs/CONFORMANCE-PROTOCOL.md): `presence conform --exec`.
//!
//! [`Adapter::spawn`] starts the program; [`Adapter::start`] sends a configuration line and
//! gives an [`AdapterSubject`], a [`Subject`] whose every call is one request line and one
//! reply line, so that the trace runner and the kit ([`crate::kit`]) run on it as on the
//! engine. Each request has a deadline. Whatever the adapter does wrong (it dies, answers
//! garbage, or does not answer in time) is kept as the adapter's fault, named with the
//! request it concerned ([`Subject::fault`]); every call after a fault returns at once, and the
//! runners report the fault apart from differences (exit status 2). The program is killed
//! when the [`Adapter`] is dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use presence_conformance::exec::Adapter;
//! use presence_conformance::kit::{self, KitOptions};
//!
//! let adapter = Adapter::spawn("python3 conformance/adapters/presence_shell.py", Duration::from_secs(10))?;
//! let report = kit::check(&KitOptions::default(), |config| Ok(adapter.start(config)));
//! println!("{}", report.summary());
//! # Ok::<(), String>(())
//! ```

mod process;
mod reply;
mod words;

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use presence_engine::{Command, Config, DeviceId, SessionView, UserId, UserStatus};

pub use process::REPLY_BYTES_MAX;
pub use words::split_words;

use crate::observe::{Refusal, Response};
use crate::subject::Subject;
use crate::trace::{config_line, quote, run_paths_on, step_line, Check, Op};
use process::{shorten, Process};

/// An adapter program, running.
pub struct Adapter {
    state: RefCell<State>,
    timeout: Duration,
}

struct State {
    process: Process,
    /// The first thing the adapter did wrong; then nothing more is asked of it.
    fault: Option<String>,
}

impl Adapter {
    /// Starts `command`, split into words without a shell ([`split_words`]), with `timeout`
    /// for each reply. An error when the command is empty or cannot be started.
    pub fn spawn(command: &str, timeout: Duration) -> Result<Adapter, String> {
        let words = split_words(command)?;
        let process = Process::spawn(&words, command)?;
        Ok(Adapter { state: RefCell::new(State { process, fault: None }), timeout })
    }

    /// Sends the configuration line (every key) that starts a fresh instance, and returns it
    /// as a [`Subject`]. A bad reply is the adapter's fault, which the subject reports.
    pub fn start(&self, config: &Config) -> AdapterSubject<'_> {
        let request = config_line(config, true);
        if let Some(reply) = self.request(&request) {
            if let Err(why) = reply::config(&reply) {
                self.fail(&request, &reply, &why);
            }
        }
        AdapterSubject { adapter: self }
    }

    /// What the adapter did wrong, if it did.
    pub fn fault(&self) -> Option<String> {
        self.state.borrow().fault.clone()
    }

    /// One request and its reply; `None` once the adapter has failed.
    fn request(&self, request: &str) -> Option<String> {
        let mut state = self.state.borrow_mut();
        if state.fault.is_some() {
            return None;
        }
        match state.process.request(request, self.timeout) {
            Ok(reply) => Some(reply),
            Err(fault) => {
                state.fault = Some(fault);
                None
            }
        }
    }

    fn fail(&self, request: &str, reply: &str, why: &str) {
        let mut state = self.state.borrow_mut();
        if state.fault.is_none() {
            state.fault =
                Some(format!("the adapter answered {} with {}: {why}", shorten(request), shorten(reply)));
        }
    }

    /// One operation: its reply read, or `None` (and the fault kept).
    fn step(&self, at_ms: u64, op: &Op) -> Option<Result<Response, Refusal>> {
        let request = step_line(at_ms, op);
        let reply = self.request(&request)?;
        match reply::step(&reply) {
            Ok(result) => Some(result),
            Err(why) => {
                self.fail(&request, &reply, &why);
                None
            }
        }
    }

    /// One check of `user`: the filled-in check, or `None` (and the fault kept).
    fn check(&self, kind: &str, user: &str) -> Option<Check> {
        let request = format!("{{\"check\": {}, \"user\": {}}}", quote(kind), quote(user));
        let reply = self.request(&request)?;
        match reply::check(&reply, kind, user) {
            Ok(check) => Some(check),
            Err(why) => {
                self.fail(&request, &reply, &why);
                None
            }
        }
    }
}

/// What the subject answers once the adapter has failed; runners look at the fault first.
fn broken() -> Refusal {
    Refusal { code: 0, message: "the adapter failed".into() }
}

/// One instance of the system behind an adapter, as a [`Subject`]: every call is a request
/// line. The direct reads are the protocol's checks, so [`Subject::sessions`] knows only
/// which devices are connected (its times are 0), and [`Subject::finish`] has no log to check.
pub struct AdapterSubject<'a> {
    adapter: &'a Adapter,
}

impl Subject for AdapterSubject<'_> {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        self.adapter.step(at_ms, &Op::Command(command)).unwrap_or_else(|| Err(broken()))
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        self.adapter.step(at_ms, &Op::Tick).unwrap_or_else(|| Err(broken()))
    }

    fn status(&self, user: &str) -> UserStatus {
        match self.adapter.check("status", user) {
            Some(Check::Status { status, .. }) => status,
            _ => UserStatus::unlogined(),
        }
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        let Some(Check::Devices { connected, disconnected, .. }) = self.adapter.check("devices", user) else {
            return Vec::new();
        };
        let view = |device: String, connected: bool| SessionView {
            device: DeviceId::from(device),
            connected,
            login_at_ms: 0,
            heartbeat_at_ms: 0,
        };
        let mut list: Vec<SessionView> = connected
            .into_iter()
            .map(|d| view(d, true))
            .chain(disconnected.into_iter().map(|d| view(d, false)))
            .collect();
        list.sort_by(|a, b| a.device.cmp(&b.device));
        list
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        match self.adapter.check("subscriptions", user) {
            Some(Check::Subscriptions { targets, .. }) => reply::ids(targets),
            _ => Vec::new(),
        }
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        match self.adapter.check("friends", user) {
            Some(Check::Friends { friends, .. }) => reply::ids(friends),
            _ => Vec::new(),
        }
    }

    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        match self.adapter.step(at_ms, &Op::Restart { disconnect }) {
            Some(result) => result.map(|_| ()),
            None => Err(broken()),
        }
    }

    fn fault(&self) -> Option<String> {
        self.adapter.fault()
    }

    fn finish(self) -> Result<(), String> {
        Ok(())
    }
}

/// Runs the traces under `paths` on the adapter, each on a fresh instance, writing
/// `FILE:LINE: expected ..., got ...` for every failure and closing with `N passed, M failed`.
/// Returns the exit status: 0 when all passed, 1 when one failed, 2 when a trace could not be
/// read or the adapter failed (after which no other trace runs).
pub fn run_traces<P: AsRef<Path>>(adapter: &Adapter, paths: &[P], out: &mut impl Write) -> i32 {
    run_paths_on(paths, out, |trace| Ok(adapter.start(&trace.config)))
}
