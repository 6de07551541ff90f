//! `presence shell`: the engine in memory, driven by text lines with explicit times, one
//! request a line on standard input and its results on standard output. A tool for people
//! (try a scenario, watch its notices) and for programs in any language (the Python adapter
//! of the conformance kit drives it).
//!
//! ```text
//! > at 100 login alice phone
//! notice to=alice device=phone about=alice status=ONLINE custom="" version=1 cause=login cause_device=phone
//! ok
//! > at 120 get_status alice phone alice
//! result user=alice status=ONLINE custom="" version=1
//! ok
//! > check devices alice
//! device user=alice device=phone connected=true login_at=100 heartbeat_at=100
//! ok
//! ```
//!
//! Every request's answer ends with one line: `ok` (`ok disconnected=N remaining=M` for
//! `disconnect_sessions`), `error CODE ...` (SPEC.md R7.1), or `bad ...` when the line was not
//! understood. Before it come `result` lines (the statuses of `get_status` and `subscribe`, in
//! order), `notice` and `kicked` lines (one per device), or the lines of a check. Values are
//! bare words, or JSON strings when empty or holding blanks or control characters. Blank lines
//! and lines starting with `#` are ignored. It ends at the end of its input.

mod parse;
mod text;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use presence_engine::{
    Config, Engine, EngineOptions, Error, LastOnline, Notice, Outcome, Reply, RestoredSessions,
};
use presence_storage_mem::MemStore;

use parse::{request, CheckKind, Request, HELP};
use text::{field, one_line, words};

/// Arguments of `presence shell` (none: it reads its standard input).
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Reads requests until the end of the input.
pub fn run(_args: Args) -> ExitCode {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut shell = Shell::new(Config::default());
    if interactive {
        let _ = writeln!(out, "presence shell: the engine in memory; `help` lists the requests");
    }
    loop {
        if interactive {
            let _ = write!(out, "> ");
            let _ = out.flush();
        }
        let mut bytes = Vec::new();
        match input.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => return ExitCode::SUCCESS,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let answer = shell.answer(line);
        if writeln!(out, "{}", answer.join("\n")).and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

/// The engine the shell drives.
struct Shell {
    config: Config,
    /// `None` only after a restart whose reopening failed.
    engine: Option<Engine<MemStore>>,
}

impl Shell {
    fn new(config: Config) -> Shell {
        let engine = Engine::open(config.clone(), MemStore::new()).ok();
        Shell { config, engine }
    }

    /// The lines answering `line`, the last being `ok ...`, `error ...` or `bad ...`.
    fn answer(&mut self, line: &str) -> Vec<String> {
        let request = match words(line).and_then(|words| request(&words)) {
            Ok(Some(request)) => request,
            Ok(None) => return Vec::new(),
            Err(why) => return vec![format!("bad {}", one_line(&why))],
        };
        match request {
            Request::Help => HELP.lines().map(String::from).chain(["ok".to_string()]).collect(),
            Request::Config(config) => {
                *self = Shell::new(config);
                match self.engine {
                    Some(_) => vec!["ok".into()],
                    None => vec!["error 6017 the engine does not open with this configuration".into()],
                }
            }
            Request::Check(kind, user) => self.check(kind, &user),
            Request::Show(user) => {
                let mut lines: Vec<String> = CheckKind::ALL
                    .into_iter()
                    .flat_map(|kind| self.check(kind, &user).into_iter().filter(|l| l != "ok"))
                    .collect();
                lines.push("ok".into());
                lines
            }
            Request::Command(at_ms, command) => self.outcome(|engine| engine.execute(command, at_ms)),
            Request::Tick(at_ms) => self.outcome(|engine| engine.tick(at_ms)),
            Request::Restart(at_ms, disconnect) => self.restart(at_ms, disconnect),
        }
    }

    fn outcome(&mut self, step: impl FnOnce(&mut Engine<MemStore>) -> Result<Outcome, Error>) -> Vec<String> {
        let Some(engine) = self.engine.as_mut() else { return vec![lost()] };
        let outcome = match step(engine) {
            Ok(outcome) => outcome,
            Err(e) => return vec![error(&e)],
        };
        let mut lines = Vec::new();
        for status in outcome.statuses() {
            lines.push(format!(
                "result {} {} {} version={}",
                field("user", &status.user),
                field("status", status.status.general.name()),
                field("custom", &status.status.custom),
                status.version
            ));
        }
        for notice in &outcome.notices {
            match notice {
                Notice::Status(n) => {
                    for &recipient in &n.recipients {
                        let (to, device) = engine.resolve(recipient);
                        let mut line = format!(
                            "notice {} {} {} {} {} version={} {}",
                            field("to", to),
                            field("device", device),
                            field("about", &n.about),
                            field("status", n.status.general.name()),
                            field("custom", &n.status.custom),
                            n.version,
                            field("cause", n.cause.kind.name()),
                        );
                        if let Some(device) = &n.cause.device {
                            line.push_str(&format!(" {}", field("cause_device", device)));
                        }
                        lines.push(line);
                    }
                }
                Notice::Kicked(recipient) => {
                    let (to, device) = engine.resolve(*recipient);
                    lines.push(format!("kicked {} {}", field("to", to), field("device", device)));
                }
            }
        }
        lines.push(match outcome.reply {
            Reply::Disconnected { sessions, remaining } => {
                format!("ok disconnected={sessions} remaining={remaining}")
            }
            Reply::Done | Reply::Statuses(_) => "ok".into(),
        });
        lines
    }

    /// R8.2, R8.4: the engine closed and opened again over its store.
    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Vec<String> {
        let Some(engine) = self.engine.take() else { return vec![lost()] };
        let restored_sessions = match disconnect {
            true => RestoredSessions::Disconnect { at_ms },
            false => RestoredSessions::Keep,
        };
        let options = EngineOptions { restored_sessions, ..EngineOptions::default() };
        match Engine::open_with(self.config.clone(), engine.into_store(), options) {
            Ok(engine) => {
                self.engine = Some(engine);
                vec!["ok".into()]
            }
            Err(e) => vec![error(&e)],
        }
    }

    /// The host's direct reads of `user` (R6.4, R6.5).
    fn check(&self, kind: CheckKind, user: &str) -> Vec<String> {
        let Some(engine) = self.engine.as_ref() else { return vec![lost()] };
        let who = field("user", user);
        let mut lines: Vec<String> = match kind {
            CheckKind::Status => {
                let status = engine.status(user);
                let last_online = match engine.last_online(user) {
                    LastOnline::Never => "never".to_string(),
                    LastOnline::Now => "now".to_string(),
                    LastOnline::At(at_ms) => at_ms.to_string(),
                };
                vec![format!(
                    "status {who} {} {} last_online={last_online}",
                    field("status", status.general.name()),
                    field("custom", &status.custom)
                )]
            }
            CheckKind::Devices => engine
                .sessions(user)
                .iter()
                .map(|s| {
                    format!(
                        "device {who} {} connected={} login_at={} heartbeat_at={}",
                        field("device", &s.device),
                        s.connected,
                        s.login_at_ms,
                        s.heartbeat_at_ms
                    )
                })
                .collect(),
            CheckKind::Subscriptions => engine
                .subscriptions(user)
                .iter()
                .map(|t| format!("subscription {who} {}", field("target", t)))
                .collect(),
            CheckKind::Friends => {
                engine.friends(user).iter().map(|f| format!("friend {who} {}", field("friend", f))).collect()
            }
        };
        lines.push("ok".into());
        lines
    }
}

fn error(e: &Error) -> String {
    format!("error {} {}", e.code(), one_line(&e.to_string()))
}

fn lost() -> String {
    "error 9000 Storage: the engine was lost when a restart failed to reopen its store".into()
}
