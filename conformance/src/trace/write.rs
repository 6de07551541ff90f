//! Writing traces (docs/TRACE-FORMAT.md): the lines the parser reads, in the project's own
//! style (`{"at": 0, "op": "login", "user": "alice", "device": "phone"}`), so that generated
//! traces and shrunk failures read like the hand-written ones. `parse(write(x))` gives `x`
//! back.

use presence_engine::{Command, Config};
use serde_json::Value;

use super::parse::{Check, Expectation, ExpectedStatus, Op};
use crate::observe::{cause_json, FlatNotice};

/// The names of the configuration, in SPEC.md's table order; a key not named here (one added
/// to [`Config`] later) is written after them, never dropped.
const CONFIG_KEYS: [&str; 14] = [
    "edition",
    "status_feature",
    "friend_notifications",
    "heartbeat_timeout_ms",
    "max_devices_per_user",
    "max_subscriptions",
    "max_subscribe_batch",
    "max_query_batch",
    "rate_limit_calls",
    "rate_limit_window_ms",
    "subscription_retention_ms",
    "max_custom_status_bytes",
    "max_user_id_bytes",
    "max_device_id_bytes",
];

/// A trace being written, line by line.
///
/// ```
/// use presence_conformance::trace::{parse, Expectation, Op, TraceWriter};
/// use presence_engine::{Command, Config};
///
/// let mut trace = TraceWriter::new();
/// trace.comment("rules: R2.1");
/// trace.config(&Config { max_devices_per_user: 1, ..Config::default() });
/// trace.step(0, &Op::Command(Command::login("alice", "phone")));
/// trace.expect(&Expectation::Ok);
/// assert_eq!(
///     trace.text(),
///     "# rules: R2.1\n\
///      {\"config\": {\"max_devices_per_user\": 1}}\n\
///      {\"at\": 0, \"op\": \"login\", \"user\": \"alice\", \"device\": \"phone\"}\n\
///      {\"expect\": \"ok\"}\n"
/// );
/// assert_eq!(parse(&trace.text()).unwrap().items.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TraceWriter {
    lines: Vec<String>,
}

impl TraceWriter {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// A comment: each line of `text` becomes a `# ` line.
    pub fn comment(&mut self, text: &str) {
        self.lines.extend(text.lines().map(|l| format!("# {l}").trim_end().to_string()));
    }

    /// The configuration line, with only the values that differ from SPEC.md's defaults;
    /// nothing when none does.
    pub fn config(&mut self, config: &Config) {
        if *config != Config::default() {
            self.lines.push(config_line(config, false));
        }
    }

    /// A command, tick or restart at `at_ms`.
    pub fn step(&mut self, at_ms: u64, op: &Op) {
        self.lines.push(step_line(at_ms, op));
    }

    /// An expectation about the command just above.
    pub fn expect(&mut self, expectation: &Expectation) {
        self.lines.push(expectation_line(expectation));
    }

    /// A check of the state.
    pub fn check(&mut self, check: &Check) {
        self.lines.push(check_line(check));
    }

    /// The number of lines so far (the line number of the last one).
    pub fn lines(&self) -> usize {
        self.lines.len()
    }

    /// The trace's text, each line ending in a newline.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// `{"config": {...}}`: every key when `full`, else only the values that differ from SPEC.md's
/// defaults.
pub fn config_line(config: &Config, full: bool) -> String {
    let (Ok(Value::Object(values)), Ok(Value::Object(defaults))) =
        (serde_json::to_value(config), serde_json::to_value(Config::default()))
    else {
        // A `Config` is plain fields; it always serializes to an object.
        return object(&[("config", "{}".into())]);
    };
    let rank = |key: &str| CONFIG_KEYS.iter().position(|k| *k == key).unwrap_or(CONFIG_KEYS.len());
    let mut keys: Vec<&String> = values.keys().collect();
    keys.sort_by_key(|k| (rank(k), k.as_str()));
    let pairs: Vec<(&str, String)> = keys
        .into_iter()
        .filter(|k| full || values.get(k.as_str()) != defaults.get(k.as_str()))
        .filter_map(|k| values.get(k.as_str()).map(|v| (k.as_str(), v.to_string())))
        .collect();
    object(&[("config", object(&pairs))])
}

/// A command, tick or restart line.
pub fn step_line(at_ms: u64, op: &Op) -> String {
    let mut pairs = vec![("at", at_ms.to_string())];
    let name = |n: &str| quote(n);
    match op {
        Op::Tick => pairs.push(("op", name("tick"))),
        Op::Restart { disconnect } => {
            pairs.push(("op", name("restart")));
            pairs.push(("sessions", name(if *disconnect { "disconnect" } else { "keep" })));
        }
        Op::Command(command) => {
            pairs.push(("op", name(command.name())));
            pairs.extend(command_fields(command));
        }
    }
    object(&pairs)
}

fn command_fields(command: &Command) -> Vec<(&'static str, String)> {
    let ids = |list: &[presence_engine::UserId]| array(list.iter().map(|t| quote(t))); // targets
    match command {
        Command::Login { user, device, owner } => {
            let mut pairs = vec![("user", quote(user)), ("device", quote(device))];
            if let Some(owner) = owner {
                pairs.push(("owner", quote(owner)));
            }
            pairs
        }
        Command::Logout { user, device }
        | Command::Disconnect { user, device }
        | Command::Heartbeat { user, device } => vec![("user", quote(user)), ("device", quote(device))],
        Command::SetStatus { user, device, custom } => {
            vec![("user", quote(user)), ("device", quote(device)), ("custom", quote(custom))]
        }
        Command::GetStatus { user, device, targets }
        | Command::Subscribe { user, device, targets }
        | Command::Unsubscribe { user, device, targets } => {
            vec![("user", quote(user)), ("device", quote(device)), ("targets", ids(targets))]
        }
        Command::AddFriend { user, friend } | Command::RemoveFriend { user, friend } => {
            vec![("user", quote(user)), ("friend", quote(friend))]
        }
        Command::DisconnectSessions { owner } => owner.iter().map(|o| ("owner", quote(o))).collect(),
    }
}

/// An expectation line.
pub fn expectation_line(expectation: &Expectation) -> String {
    match expectation {
        Expectation::Ok => object(&[("expect", quote("ok"))]),
        Expectation::Error(code) => object(&[("expect", quote("error")), ("code", code.to_string())]),
        Expectation::Statuses(list) => {
            object(&[("expect", quote("statuses")), ("statuses", array(list.iter().map(status_json)))])
        }
        Expectation::Notices(list) => {
            object(&[("expect", quote("notices")), ("notices", array(list.iter().map(notice_json)))])
        }
    }
}

/// A check line, with what it expects.
pub fn check_line(check: &Check) -> String {
    match check {
        Check::Status { user, status } => object(&[
            ("check", quote("status")),
            ("user", quote(user)),
            ("status", quote(status.general.name())),
            ("custom", quote(&status.custom)),
        ]),
        Check::Subscriptions { user, targets } => object(&[
            ("check", quote("subscriptions")),
            ("user", quote(user)),
            ("targets", array(targets.iter().map(|t| quote(t)))),
        ]),
        Check::Friends { user, friends } => object(&[
            ("check", quote("friends")),
            ("user", quote(user)),
            ("friends", array(friends.iter().map(|t| quote(t)))),
        ]),
        Check::Devices { user, connected, disconnected } => object(&[
            ("check", quote("devices")),
            ("user", quote(user)),
            ("connected", array(connected.iter().map(|t| quote(t)))),
            ("disconnected", array(disconnected.iter().map(|t| quote(t)))),
        ]),
    }
}

/// A status `S` of a result.
pub fn status_json(status: &ExpectedStatus) -> String {
    let mut pairs = vec![
        ("user", quote(&status.user)),
        ("status", quote(status.status.general.name())),
        ("custom", quote(&status.status.custom)),
    ];
    if let Some(version) = status.version {
        pairs.push(("version", version.to_string()));
    }
    object(&pairs)
}

/// A notice `N`.
pub fn notice_json(notice: &FlatNotice) -> String {
    match notice {
        FlatNotice::Status { to, device, about, status, custom, version, cause } => {
            let mut pairs = vec![
                ("to", quote(to)),
                ("device", quote(device)),
                ("about", quote(about)),
                ("status", quote(status.name())),
                ("custom", quote(custom)),
            ];
            if let Some(version) = version {
                pairs.push(("version", version.to_string()));
            }
            if let Some(cause) = cause {
                let json = cause_json(cause);
                let mut cause_pairs = Vec::new();
                if let Some(kind) = json.get("kind").and_then(Value::as_str) {
                    cause_pairs.push(("kind", quote(kind)));
                }
                if let Some(device) = json.get("device").and_then(Value::as_str) {
                    cause_pairs.push(("device", quote(device)));
                }
                pairs.push(("cause", object(&cause_pairs)));
            }
            object(&pairs)
        }
        FlatNotice::Kicked { to, device } => {
            object(&[("to", quote(to)), ("device", quote(device)), ("kicked", "true".into())])
        }
    }
}

/// A JSON string.
pub(crate) fn quote(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// A JSON object of already written values, keys in the order given.
pub(crate) fn object(pairs: &[(&str, String)]) -> String {
    let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{}: {v}", quote(k))).collect();
    format!("{{{}}}", fields.join(", "))
}

/// A JSON array of already written values.
pub(crate) fn array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}
