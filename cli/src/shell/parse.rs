//! A shell line as a request: a command or tick at a time, a check, a configuration.

use presence_engine::{Command, Config};
use serde_json::{Map, Value};

/// What one line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `config KEY=VALUE...`: a fresh engine.
    Config(Config),
    /// `at MS COMMAND ...`.
    Command(u64, Command),
    /// `at MS tick`.
    Tick(u64),
    /// `at MS restart keep|disconnect`.
    Restart(u64, bool),
    /// `check status|devices|subscriptions|friends USER`.
    Check(CheckKind, String),
    /// `show USER`: every check.
    Show(String),
    /// `help`.
    Help,
}

/// The reads of `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Status, custom status and last time online.
    Status,
    /// The sessions.
    Devices,
    /// The subscription list, oldest first.
    Subscriptions,
    /// The friends.
    Friends,
}

impl CheckKind {
    /// All four, in `show`'s order.
    pub const ALL: [CheckKind; 4] =
        [CheckKind::Status, CheckKind::Devices, CheckKind::Subscriptions, CheckKind::Friends];
}

/// The request of a line's words (`None` for none: a blank line).
pub fn request(words: &[String]) -> Result<Option<Request>, String> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let request = match words.as_slice() {
        [] => return Ok(None),
        ["help"] => Request::Help,
        ["config", pairs @ ..] => Request::Config(config(pairs)?),
        ["check", kind, user] => Request::Check(check_kind(kind)?, user.to_string()),
        ["check", ..] => return Err("check takes status|devices|subscriptions|friends USER".into()),
        ["show", user] => Request::Show(user.to_string()),
        ["at", time, op, args @ ..] => {
            let at_ms: u64 = time.parse().map_err(|_| format!("{time:?} is not a time in milliseconds"))?;
            match (*op, args) {
                ("tick", []) => Request::Tick(at_ms),
                ("restart", ["keep"]) => Request::Restart(at_ms, false),
                ("restart", ["disconnect"]) => Request::Restart(at_ms, true),
                ("restart", _) => return Err("restart takes keep or disconnect".into()),
                _ => Request::Command(at_ms, command(op, args)?),
            }
        }
        [first, ..] => return Err(format!("unknown request {first:?} (try help)")),
    };
    Ok(Some(request))
}

fn check_kind(kind: &str) -> Result<CheckKind, String> {
    match kind {
        "status" => Ok(CheckKind::Status),
        "devices" => Ok(CheckKind::Devices),
        "subscriptions" => Ok(CheckKind::Subscriptions),
        "friends" => Ok(CheckKind::Friends),
        other => Err(format!("unknown check {other:?}: status, devices, subscriptions or friends")),
    }
}

/// `KEY=VALUE` pairs over SPEC.md's defaults; a value is JSON if it reads as JSON
/// (`max_subscriptions=3`, `friend_notifications=true`), else a string (`edition=standard`).
fn config(pairs: &[&str]) -> Result<Config, String> {
    let mut object = Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        object.insert(key.to_string(), value);
    }
    let config: Config =
        serde_json::from_value(Value::Object(object)).map_err(|e| format!("bad config: {e}"))?;
    config.validate().map_err(|e| format!("bad config: {e}"))?;
    Ok(config)
}

/// A command of SPEC.md from its name and arguments.
fn command(op: &str, args: &[&str]) -> Result<Command, String> {
    let targets = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let command = match (op, args) {
        ("login", [user, device]) => Command::login(*user, *device),
        ("login", [user, device, owner]) => Command::login_with_owner(*user, *device, *owner),
        ("logout", [user, device]) => Command::logout(*user, *device),
        ("disconnect", [user, device]) => Command::disconnect(*user, *device),
        ("heartbeat", [user, device]) => Command::heartbeat(*user, *device),
        ("set_status", [user, device, custom]) => Command::set_status(*user, *device, *custom),
        ("get_status", [user, device, list @ ..]) => Command::get_status(*user, *device, targets(list)),
        ("subscribe", [user, device, list @ ..]) => Command::subscribe(*user, *device, targets(list)),
        ("unsubscribe", [user, device, list @ ..]) => Command::unsubscribe(*user, *device, targets(list)),
        ("add_friend", [user, friend]) => Command::add_friend(*user, *friend),
        ("remove_friend", [user, friend]) => Command::remove_friend(*user, *friend),
        ("disconnect_sessions", []) => Command::disconnect_all(),
        ("disconnect_sessions", [owner]) => Command::disconnect_owner(*owner),
        _ => return Err(usage(op)),
    };
    Ok(command)
}

fn usage(op: &str) -> String {
    let args = match op {
        "login" => "USER DEVICE [OWNER]",
        "logout" | "disconnect" | "heartbeat" => "USER DEVICE",
        "set_status" => "USER DEVICE CUSTOM",
        "get_status" | "subscribe" | "unsubscribe" => "USER DEVICE [TARGET...]",
        "add_friend" | "remove_friend" => "USER FRIEND",
        "disconnect_sessions" => "[OWNER]",
        other => return format!("unknown operation {other:?} (try help)"),
    };
    format!("{op} takes {args}")
}

/// What `help` prints.
pub const HELP: &str = "\
config [KEY=VALUE...]                    a fresh engine in memory (keys: docs/SPEC.md's table)
at MS login USER DEVICE [OWNER]          commands, each at its time in milliseconds (R1.3)
at MS logout|disconnect|heartbeat USER DEVICE
at MS set_status USER DEVICE CUSTOM
at MS get_status|subscribe|unsubscribe USER DEVICE [TARGET...]
at MS add_friend|remove_friend USER FRIEND
at MS disconnect_sessions [OWNER]
at MS tick                               the clock moves: timeouts and retention (R2.4, R4.5)
at MS restart keep|disconnect            reopen the engine over its store (R8.2, R8.4)
check status|devices|subscriptions|friends USER
show USER                                every check of USER
Words with blanks or control characters, and the empty word, are JSON strings: \"\", \"a b\".
Each request ends with `ok`, `error CODE ...` or `bad ...` (not understood).";

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        super::super::text::words(line).unwrap()
    }

    #[test]
    fn lines_become_requests() {
        assert_eq!(
            request(&words("at 120 subscribe bob pc alice carol")).unwrap(),
            Some(Request::Command(120, Command::subscribe("bob", "pc", ["alice", "carol"])))
        );
        assert_eq!(request(&words("at 500 tick")).unwrap(), Some(Request::Tick(500)));
        assert_eq!(request(&words("at 5 restart disconnect")).unwrap(), Some(Request::Restart(5, true)));
        assert_eq!(
            request(&words("at 0 login a p gw1")).unwrap(),
            Some(Request::Command(0, Command::login_with_owner("a", "p", "gw1")))
        );
        assert_eq!(
            request(&words("check devices alice")).unwrap(),
            Some(Request::Check(CheckKind::Devices, "alice".into()))
        );
        let config =
            Config { edition: presence_engine::Edition::Standard, max_subscriptions: 3, ..Config::default() };
        assert_eq!(
            request(&words("config edition=standard max_subscriptions=3")).unwrap(),
            Some(Request::Config(config))
        );
        assert_eq!(request(&[]).unwrap(), None);
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, why) in [
            ("at x tick", "not a time"),
            ("at 5 login alice", "login takes USER DEVICE [OWNER]"),
            ("at 5 fly", "unknown operation"),
            ("config max_subscriptions=0", "bad config"),
            ("config colour=blue", "bad config"),
            ("check weather alice", "unknown check"),
            ("dance", "unknown request"),
        ] {
            let error = request(&words(line)).unwrap_err();
            assert!(error.contains(why), "{line}: {error}");
        }
    }
}
