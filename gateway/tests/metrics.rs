//! `GET /metrics`: Prometheus's text format behind the host's bearer, with requests counted
//! by op and result code, logins, connections by state, closes by code, notices and the
//! runtime's histograms; every line parses, `promtool check metrics` (Prometheus's own
//! checker and linter) accepts the whole exposition, and a real Prometheus scrapes it with the
//! bearer in its configuration (and fails to without).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{secret, start, Client, WAIT};
use presence_testkit::process::{find_program, free_ports, wait_until, ServerProcess};
use serde_json::json;
use tungstenite::Message;

/// One sample: its labels, sorted, and its value.
type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

/// `GET /metrics` with `bearer`: the status, the content type and the body.
fn scrape(addr: SocketAddr, bearer: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The host's scrape.
fn metrics(addr: SocketAddr) -> String {
    let (status, content_type, body) = scrape(addr, Some(&secret().host_bearer()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    body
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `name{label="value",...} value` (label values unescaped).
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => panic!("no value: {line:?}"),
    };
    assert!(is_name(name), "a metric name: {line:?}");
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once("=\"").unwrap_or_else(|| panic!("a label: {line:?}"));
            assert!(is_name(label) && !label.starts_with("__"), "a label name: {line:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("a bad escape {other:?}: {line:?}"),
                    },
                    Some((at, '"')) => break at,
                    Some((_, c)) => value.push(c),
                    None => panic!("an unterminated label value: {line:?}"),
                }
            };
            labels.push((label.to_string(), value));
            inner = &after[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("one space before the value: {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("a value ({e}): {line:?}")),
    };
    labels.sort();
    (name.to_string(), labels, value)
}

/// Parses the whole exposition as Prometheus's text format 0.0.4 says, failing on any line
/// that does not: each family's `# HELP` and `# TYPE` once, before its samples; a counter's
/// name ending in `_total`; a histogram's buckets cumulative up to `+Inf`, which equals its
/// `_count`. Returns every sample.
fn parse(text: &str) -> Series {
    assert!(text.ends_with('\n'), "the last line ends with a line feed");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut series = Series::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').unwrap_or_else(|| panic!("help text: {line:?}"));
            assert!(is_name(name) && !text.trim().is_empty(), "{line:?}");
            assert!(helps.insert(name.to_string(), text.to_string()).is_none(), "one HELP: {line:?}");
            current = Some(name.to_string());
            continue;
        }
        if let Some(kind) = line.strip_prefix("# TYPE ") {
            let (name, kind) = kind.split_once(' ').unwrap_or_else(|| panic!("a type: {line:?}"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line:?}");
            assert_eq!(current.as_deref(), Some(name), "TYPE right after its HELP: {line:?}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "one TYPE: {line:?}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter's name ends in _total: {line:?}");
            }
            continue;
        }
        assert!(!line.starts_with('#') && !line.trim().is_empty(), "a stray line: {line:?}");
        let (name, labels, value) = parse_sample(line);
        let family = current.as_deref().unwrap_or_else(|| panic!("a sample before any TYPE: {line:?}"));
        let kind = types.get(family).map(String::as_str);
        match kind {
            Some("histogram") => assert!(
                [format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")]
                    .contains(&name),
                "a histogram's sample: {line:?}"
            ),
            _ => assert_eq!(name, family, "a sample of the family just declared: {line:?}"),
        }
        assert!(value.is_finite() || name.ends_with("_bucket"), "{line:?}");
        assert!(series.insert((name, labels), value).is_none(), "one sample per series: {line:?}");
    }
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<(f64, f64)> = series
            .iter()
            .filter(|((name, _), _)| *name == format!("{family}_bucket"))
            .map(|((_, labels), v)| {
                let le = &labels.iter().find(|(l, _)| l == "le").unwrap().1;
                (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v)
            })
            .collect();
        let mut sorted = buckets.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(sorted.windows(2).all(|w| w[0].1 <= w[1].1), "{family}: cumulative buckets {sorted:?}");
        let inf =
            sorted.last().filter(|(le, _)| le.is_infinite()).unwrap_or_else(|| panic!("{family}: +Inf"));
        assert_eq!(
            Some(&inf.1),
            series.get(&(format!("{family}_count"), vec![])),
            "{family}: +Inf is the count"
        );
        assert!(series.contains_key(&(format!("{family}_sum"), vec![])), "{family}: a sum");
    }
    series
}

/// The value of `name` with `labels`, or `None` when there is no such series.
fn value(series: &Series, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> =
        labels.iter().map(|(l, v)| (l.to_string(), v.to_string())).collect();
    labels.sort();
    series.get(&(name.to_string(), labels)).copied()
}

/// Scrapes until `ready` holds for the samples, or fails after `WAIT` (the counts of a close
/// land when the socket's task has finished).
fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&Series) -> bool) -> Series {
    let started = Instant::now();
    loop {
        let series = parse(&metrics(addr));
        if ready(&series) {
            return series;
        }
        assert!(started.elapsed() < WAIT, "{what}: not after {WAIT:?}; the last scrape:\n{series:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_requests_by_op_and_code_logins_connections_and_closes() {
    let gateway = start("");
    let addr = gateway.addr();

    // The host's, like /stats.
    let (status, _, body) = scrape(addr, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(scrape(addr, Some("not the bearer")).0, 401);

    let mut alice = Client::login(addr, "alice", "phone");
    let mut mallory = Client::connect(addr);
    let forged =
        mallory.request(json!({"op": "login", "token": "v1.YWxpY2U.9999999999.AAAA", "device": "d"}));
    assert_eq!(forged["code"], 8006, "{forged}");
    let mut anonymous = Client::connect(addr);
    assert_eq!(anonymous.request(json!({"op": "heartbeat"}))["code"], 8004);

    assert_eq!(alice.request(json!({"op": "set_status", "custom": "busy"}))["ok"], true);
    let long = "x".repeat(51);
    assert_eq!(alice.request(json!({"op": "set_status", "custom": long}))["code"], 6017, "R3.1's limit");
    assert_eq!(alice.request(json!({"op": "get_status", "targets": ["bob"]}))["ok"], true);
    // Right after a get_status: a frame that is not a request is not counted as the last op.
    alice.send(Message::binary(vec![1, 2, 3]));
    assert_eq!(alice.reply_to(None)["code"], 8000);
    assert_eq!(alice.request(json!({"op": "dance"}))["code"], 8002);

    let series = parse(&metrics(addr));
    let requests = |op: &str, code: &str| {
        value(&series, "presence_gateway_requests_total", &[("op", op), ("code", code)])
    };
    assert_eq!(requests("login", "0"), Some(1.0));
    assert_eq!(requests("login", "8006"), Some(1.0));
    assert_eq!(requests("heartbeat", "8004"), Some(1.0));
    assert_eq!(requests("set_status", "0"), Some(1.0));
    assert_eq!(requests("set_status", "6017"), Some(1.0));
    assert_eq!(requests("get_status", "0"), Some(1.0));
    assert_eq!(requests("invalid", "8002"), Some(1.0));
    assert_eq!(requests("invalid", "8000"), Some(1.0));
    let answered: f64 = series
        .iter()
        .filter(|((name, _), _)| name == "presence_gateway_requests_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(answered, 8.0, "one count per reply: {series:#?}");
    assert_eq!(value(&series, "presence_gateway_logins_total", &[("code", "0")]), Some(1.0));
    assert_eq!(value(&series, "presence_gateway_logins_total", &[("code", "8006")]), Some(1.0));
    // Connections count from accept: the two refused scrapes, three sockets and this scrape.
    assert_eq!(value(&series, "presence_gateway_connections_accepted_total", &[]), Some(6.0));
    let refused =
        |reason: &str| value(&series, "presence_gateway_connections_refused_total", &[("reason", reason)]);
    assert_eq!((refused("full"), refused("address")), (Some(0.0), Some(0.0)));
    assert_eq!(value(&series, "presence_gateway_connections_evicted_total", &[]), Some(0.0));
    assert_eq!(value(&series, "presence_gateway_accept_errors_total", &[]), Some(0.0));
    // Alice's socket is logged in; mallory's and the anonymous one are not, nor is the scrape
    // (the refused scrapes' connections are gone once the server has closed them).
    scrape_until(addr, "one connection logged in, three anonymous", |series| {
        let connections = |state: &str| value(series, "presence_gateway_connections", &[("state", state)]);
        (connections("logged_in"), connections("anonymous")) == (Some(1.0), Some(3.0))
    });
    // Alice hears her own login and status (R5.3); nobody else is told anything.
    assert_eq!(value(&series, "presence_gateway_notices_queued_total", &[]), Some(2.0));
    let dropped =
        |reason: &str| value(&series, "presence_gateway_notices_dropped_total", &[("reason", reason)]);
    assert_eq!((dropped("unrouted"), dropped("slow_reader")), (Some(0.0), Some(0.0)));
    // The runtime ran the login and one status (and refused the long one), each answered.
    assert!(value(&series, "presence_runtime_commands_total", &[("result", "ok")]).unwrap() >= 2.0);
    assert!(value(&series, "presence_runtime_commands_total", &[("result", "refused")]).unwrap() >= 1.0);
    assert!(value(&series, "presence_runtime_turns_total", &[]).unwrap() >= 1.0);
    assert!(value(&series, "presence_runtime_reply_duration_seconds_count", &[]).unwrap() >= 3.0);
    assert!(value(&series, "presence_runtime_turn_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert!(value(&series, "presence_runtime_appended_bytes_total", &[]).unwrap() > 0.0);
    assert!(value(&series, "presence_runtime_queue_capacity", &[]).unwrap() >= 1.0);
    assert_eq!(value(&series, "presence_runtime_snapshots_total", &[("result", "saved")]), Some(0.0));

    // Closes, by code and reason: a logout (1000), a client that left (no close frame sent).
    assert_eq!(alice.request(json!({"op": "logout"}))["ok"], true);
    assert_eq!(alice.close_code(), 1000);
    mallory.close();
    let series = scrape_until(addr, "two closes counted", |series| {
        let closes = |code: &str, reason: &str| {
            value(series, "presence_gateway_closes_total", &[("code", code), ("reason", reason)])
        };
        let connections = |state: &str| value(series, "presence_gateway_connections", &[("state", state)]);
        closes("1000", "logged_out") == Some(1.0)
            && closes("1000", "client_gone") == Some(1.0)
            // The anonymous socket and the scrape.
            && (connections("logged_in"), connections("anonymous")) == (Some(0.0), Some(2.0))
    });
    assert_eq!(
        value(&series, "presence_gateway_requests_total", &[("op", "logout"), ("code", "0")]),
        Some(1.0)
    );
    drop(anonymous);
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    let good = "# HELP m_total a count\n# TYPE m_total counter\nm_total{a=\"x\\\"y\"} 1\n";
    assert_eq!(parse(good).len(), 1);
    let bad = [
        "m_total 1\n",                                                       // no HELP or TYPE
        "# HELP m a count\n# TYPE m counter\nm 1\n",                       // a counter without _total
        "# HELP m_total a count\n# TYPE m_total counter\nm_total{a=\"x} 1\n", // an open label
        "# HELP m_total a count\n# TYPE m_total counter\nm_total one\n",   // not a number
        "# HELP m_total a count\n# TYPE m_total counter\nother_total 1\n", // another family
        "# HELP h a histogram\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ];
    for text in bad {
        assert!(std::panic::catch_unwind(|| parse(text)).is_err(), "accepted {text:?}");
    }
}

/// Runs `promtool check metrics` on `exposition`; returns whether it passed and what it said.
fn promtool_check(exposition: &str) -> (bool, String) {
    let program = find_program("promtool").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&program)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("promtool check metrics did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    child.stdout.take().unwrap().read_to_string(&mut said).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut said).unwrap();
    (status.success() && said.trim().is_empty(), said)
}

#[test]
fn promtool_check_metrics_accepts_the_exposition_idle_and_busy() {
    // The checker itself: it fails what it should, so its silence below means something.
    let (passed, said) =
        promtool_check("# HELP requests a counter without _total\n# TYPE requests counter\nrequests 1\n");
    assert!(!passed, "promtool should lint a counter without _total: {said:?}");

    let gateway = start("");
    let addr = gateway.addr();
    let idle = metrics(addr);
    let (passed, said) = promtool_check(&idle);
    assert!(passed, "promtool check metrics, idle:\n{said}\n{idle}");

    let mut alice = Client::login(addr, "alice", "phone");
    let mut bob = Client::login(addr, "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    assert_eq!(alice.request(json!({"op": "set_status", "custom": "in a meeting"}))["ok"], true);
    assert_eq!(alice.request(json!({"op": "nonsense"}))["code"], 8002);
    assert_eq!(bob.notice_about("alice")["custom"], "in a meeting");
    gateway.handle().snapshot().unwrap().wait().unwrap();
    bob.close();
    let busy = scrape_until(addr, "bob's close counted", |series| {
        value(series, "presence_gateway_closes_total", &[("code", "1000"), ("reason", "client_gone")])
            .is_some()
    });
    assert_eq!(value(&busy, "presence_runtime_snapshots_total", &[("result", "saved")]), Some(1.0));
    let text = metrics(addr);
    let (passed, said) = promtool_check(&text);
    assert!(passed, "promtool check metrics, busy:\n{said}\n{text}");
}

/// How long Prometheus may take to start and scrape twice, on a loaded machine.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// Asks Prometheus's API for `query` (an instant query): the response's text, or `None`
/// while it is not listening yet.
fn prometheus_query(port: u16, query: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    // HTTP/1.0: the whole body, never chunked.
    let request = format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The value of the one series `query` returns, if it returns one.
fn prometheus_value(port: u16, query: &str) -> Option<f64> {
    let body: serde_json::Value = serde_json::from_str(&prometheus_query(port, query)?).ok()?;
    let result = body["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[test]
fn prometheus_scrapes_it_with_the_bearer_in_its_configuration_and_not_without() {
    let program = find_program("prometheus").unwrap_or_else(|e| panic!("{e}"));
    let gateway = start("");
    let _alice = Client::login(gateway.addr(), "alice", "phone");
    let dir = tempfile::tempdir().unwrap();
    let bearer_file = dir.path().join("presence.bearer");
    std::fs::write(&bearer_file, secret().host_bearer()).unwrap();
    // The configuration PROTOCOL.md gives, and the same target without the bearer.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
         \x20 - job_name: presence\n\
         \x20   authorization:\n\
         \x20     type: Bearer\n\
         \x20     credentials_file: {bearer}\n\
         \x20   static_configs:\n\
         \x20     - targets: [\"{addr}\"]\n\
         \x20 - job_name: no_bearer\n\
         \x20   static_configs:\n\
         \x20     - targets: [\"{addr}\"]\n",
        bearer = bearer_file.display(),
        addr = gateway.addr(),
    );
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let port = free_ports(1)[0];
    let args = [
        format!("--config.file={}", config_file.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let mut prometheus = ServerProcess::spawn(&program, &args, &dir.path().join("prometheus.log")).unwrap();
    let scraped = wait_until(PROMETHEUS_WAIT, "Prometheus scraped the gateway", || {
        assert!(prometheus.is_running(), "Prometheus exited; its log:\n{}", prometheus.log_tail(30));
        prometheus_value(port, "up{job=\"presence\"}") == Some(1.0)
            && prometheus_value(port, "up{job=\"no_bearer\"}").is_some()
    });
    if let Err(e) = scraped {
        panic!("{e}; Prometheus's log:\n{}", prometheus.log_tail(30));
    }
    // Without the bearer the scrape fails (401): the target is down.
    assert_eq!(prometheus_value(port, "up{job=\"no_bearer\"}"), Some(0.0));
    // With it, the samples arrived as the gateway wrote them.
    let logged_in = "presence_gateway_connections{job=\"presence\",state=\"logged_in\"}";
    assert_eq!(prometheus_value(port, logged_in), Some(1.0));
    let logins = "presence_gateway_requests_total{job=\"presence\",op=\"login\",code=\"0\"}";
    assert_eq!(prometheus_value(port, logins), Some(1.0));
    let replies = "presence_runtime_reply_duration_seconds_count{job=\"presence\"}";
    assert!(prometheus_value(port, replies).is_some_and(|n| n >= 1.0));
    prometheus.kill();
}
