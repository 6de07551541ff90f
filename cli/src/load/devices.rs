//! The simulated devices: one task and one real WebSocket each, speaking docs/PROTOCOL.md.
//!
//! Each device is user `u{i}` on device `d`. It logs in, subscribes to a few random users and
//! to each popular user with even odds, then until its session ends: sends a WebSocket ping
//! every `ping_every`, changes its custom status every `status_every` on average (one time in
//! ten it reads three statuses instead), and reads what it is pushed. A session lasts
//! `session` on average; then the device logs out or vanishes (its TCP connection closes
//! without a WebSocket close), and comes back half a second later.
//!
//! A custom status is `t` and the microseconds since the run began, so that a device that
//! hears of another's change knows how long the notice took from the command's send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What every device shares.
pub struct Plan {
    pub url: String,
    pub devices: usize,
    pub popular: usize,
    pub follows: usize,
    pub status_every: Duration,
    pub ping_every: Duration,
    pub session: Duration,
    /// When the run began: the zero of the timestamps in custom statuses.
    pub epoch: Instant,
    /// Logins are spread over [epoch, measure_from).
    pub measure_from: Instant,
    pub measure_until: Instant,
    pub seed: u64,
    /// A login token per user.
    pub tokens: Vec<String>,
}

/// What one device saw inside the measured window.
pub struct Tally {
    pub answered: u64,
    pub busy: u64,
    pub refused: u64,
    pub refused_codes: HashMap<u64, u64>,
    pub notices: u64,
    pub pings: u64,
    pub sessions: u64,
    pub connect_failures: u64,
    pub latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            answered: 0,
            busy: 0,
            refused: 0,
            refused_codes: HashMap::new(),
            notices: 0,
            pings: 0,
            sessions: 0,
            connect_failures: 0,
            latency_us: latency_histogram(),
        }
    }

    /// Adds another device's tally.
    pub fn add(&mut self, other: &Tally) {
        self.answered += other.answered;
        self.busy += other.busy;
        self.refused += other.refused;
        for (code, n) in &other.refused_codes {
            *self.refused_codes.entry(*code).or_default() += n;
        }
        self.notices += other.notices;
        self.pings += other.pings;
        self.sessions += other.sessions;
        self.connect_failures += other.connect_failures;
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// An empty tally.
    pub fn empty() -> Tally {
        Tally::new()
    }
}

/// Latencies from 1 µs to a minute, two significant digits.
fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000, 2) {
        Ok(histogram) => histogram,
        Err(_) => unreachable!("constant bounds hdrhistogram accepts"),
    }
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponentially distributed duration with this mean (capped at ten times it).
    fn exponential(&mut self, mean: Duration) -> Duration {
        let factor = -(1.0 - self.unit()).ln();
        mean.mul_f64(factor.min(10.0))
    }
}

fn user(i: usize) -> String {
    format!("u{i}")
}

/// Runs device `i` until the measured window ends.
pub async fn run(i: usize, plan: Arc<Plan>) -> Tally {
    let mut rng = Rng(plan.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut tally = Tally::new();
    let me = user(i);
    let mut follows: Vec<String> =
        (0..plan.popular).filter(|&p| p != i && rng.below(2) == 0).map(user).collect();
    while follows.len() < plan.popular + plan.follows && plan.devices > 1 {
        let target = rng.below(plan.devices as u64) as usize;
        if target != i && !follows.contains(&user(target)) {
            follows.push(user(target));
        }
        if follows.len() >= plan.devices - 1 {
            break;
        }
    }
    // Logins spread over the first part of the warm-up.
    let spread = plan.measure_from.saturating_duration_since(plan.epoch).mul_f64(0.6);
    tokio::time::sleep(spread.mul_f64(rng.unit())).await;
    while Instant::now() < plan.measure_until {
        let session_end = (Instant::now() + rng.exponential(plan.session)).min(plan.measure_until);
        match session(&plan, &me, i, &follows, session_end, &mut rng, &mut tally).await {
            Ok(()) => {}
            Err(()) => tally.connect_failures += u64::from(Instant::now() < plan.measure_until),
        }
        if Instant::now() < plan.measure_until {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tally
}

fn in_window(plan: &Plan, at: Instant) -> bool {
    at >= plan.measure_from && at < plan.measure_until
}

/// One session: connect, log in, subscribe, live until `end`, then log out or vanish (or,
/// at the end of the run, close politely).
async fn session(
    plan: &Plan,
    me: &str,
    i: usize,
    follows: &[String],
    end: Instant,
    rng: &mut Rng,
    tally: &mut Tally,
) -> Result<(), ()> {
    // TCP_NODELAY, as the servers: a small frame goes out at once.
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(plan.url.as_str(), None, true).await.map_err(|_| ())?;
    let (mut sink, mut stream) = socket.split();
    let mut next_id = 0u64;
    let mut request = |op: Value| {
        next_id += 1;
        let mut op = op;
        op["id"] = json!(next_id);
        Message::text(op.to_string())
    };
    let token = plan.tokens.get(i).cloned().unwrap_or_default();
    sink.send(request(json!({"op": "login", "token": token, "device": "d"}))).await.map_err(|_| ())?;
    if !follows.is_empty() {
        sink.send(request(json!({"op": "subscribe", "targets": follows}))).await.map_err(|_| ())?;
    }
    tally.sessions += u64::from(in_window(plan, Instant::now()));
    let mut next_status = Instant::now() + rng.exponential(plan.status_every);
    let mut next_ping = Instant::now() + plan.ping_every;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => heard(plan, me, text.as_str(), tally),
                Some(Ok(_)) => {}
                // The server closed (or the connection broke): a new session after a pause.
                Some(Err(_)) | None => return Ok(()),
            },
            _ = tokio::time::sleep_until(next_status) => {
                let message = match rng.below(10) {
                    0 => {
                        let targets: Vec<String> = (0..3).map(|_| user(rng.below(plan.devices as u64) as usize)).collect();
                        request(json!({"op": "get_status", "targets": targets}))
                    }
                    _ => {
                        let sent_us = plan.epoch.elapsed().as_micros();
                        request(json!({"op": "set_status", "custom": format!("t{sent_us}")}))
                    }
                };
                if sink.send(message).await.is_err() {
                    return Ok(());
                }
                next_status += rng.exponential(plan.status_every);
            }
            _ = tokio::time::sleep_until(next_ping) => {
                if sink.send(Message::Ping(vec![0].into())).await.is_err() {
                    return Ok(());
                }
                tally.pings += u64::from(in_window(plan, Instant::now()));
                next_ping += plan.ping_every;
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    if Instant::now() >= plan.measure_until || rng.below(2) == 0 {
        // A logout (or the run's end): the server answers and closes.
        let logout = Instant::now() >= plan.measure_until;
        let message = match logout {
            true => Message::Close(None),
            false => request(json!({"op": "logout"})),
        };
        if sink.send(message).await.is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, stream.next()).await {
                if let Message::Text(text) = frame {
                    heard(plan, me, text.as_str(), tally);
                }
            }
        }
    }
    // Otherwise the device vanishes: the connection drops without a close frame.
    Ok(())
}

/// A frame from the server: a reply (counted) or a notice (counted, and timed when it is
/// another device's custom status).
fn heard(plan: &Plan, me: &str, text: &str, tally: &mut Tally) {
    let now = Instant::now();
    if !in_window(plan, now) {
        return;
    }
    let Ok(frame) = serde_json::from_str::<Value>(text) else { return };
    if let Some(notice) = frame.get("notice") {
        tally.notices += 1;
        let about_other = notice["user"].as_str().is_some_and(|u| u != me);
        let sent_us =
            notice["custom"].as_str().and_then(|c| c.strip_prefix('t')).and_then(|t| t.parse::<u128>().ok());
        if let (true, Some(sent_us)) = (about_other, sent_us) {
            let latency = now.duration_since(plan.epoch).as_micros().saturating_sub(sent_us);
            let _ = tally.latency_us.record(u64::try_from(latency).unwrap_or(u64::MAX).clamp(1, 60_000_000));
        }
        return;
    }
    match (frame["ok"].as_bool(), frame["code"].as_u64()) {
        (Some(true), _) => tally.answered += 1,
        (_, Some(8008)) => tally.busy += 1,
        (_, code) => {
            tally.refused += 1;
            *tally.refused_codes.entry(code.unwrap_or(0)).or_default() += 1;
        }
    }
}
