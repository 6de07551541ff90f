//! Every conformance trace on a cluster (docs/SPEC.md R9.4): two nodes in this process over a
//! nats-server with JetStream, each trace on a deployment of its own with the trace's engine
//! configuration, every step followed by the nodes' quiescence. The cluster must answer as one
//! engine does: results, error codes, notices (versions and causes included) and reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use presence_cluster::wire::{Control, NoticeOut};
use presence_cluster::{assign, run_node, ClientError, ClusterClient, NodeConfig, NodeOptions, Notices};
use presence_conformance::observe::{FlatNotice, Refusal, Response};
use presence_conformance::subject::Subject;
use presence_conformance::trace::{parse, run_trace};
use presence_engine::{Command, Config, Reply, SessionView, UserId, UserStatus};
use presence_testkit::process::wait_until;
use presence_testkit::NatsServer;

const SHARDS: u32 = 4;
const NODES: [&str; 2] = ["t1", "t2"];

/// A cluster of two in-process nodes as one implementation.
struct ClusterSubject {
    client: ClusterClient,
    notices: Notices,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    nodes: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    runtime: tokio::runtime::Runtime,
    /// The latest time the deployment adopted (R1.3: the host gives one time to all shards).
    latest_ms: u64,
    /// After a restart that kept the sessions, the first time adopted is every shard's
    /// recovery time (R8.2).
    resume: bool,
}

impl ClusterSubject {
    fn start(nats: &NatsServer, deployment: &str, engine: Config) -> ClusterSubject {
        let url = &nats.url();

        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = NodeConfig {
            deployment: deployment.into(),
            shards: SHARDS,
            replicas: 1,
            // Long enough that a node slowed by a busy machine (a debug build, other tests)
            // is not taken for lost, which would move shards in the middle of a trace.
            node_timeout_ms: 3_000,
            tick_interval_ms: 0,
            follow_interval_ms: 5,
            engine,
            ..NodeConfig::default()
        };
        let mut stops = Vec::new();
        let mut nodes = Vec::new();
        for id in NODES {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let options = NodeOptions { nats_url: url.into(), node_id: id.into(), config: config.clone() };
            nodes.push(runtime.spawn(run_node(options, async move {
                let _ = stopped.await;
            })));
            stops.push(stop);
        }
        let client = ClusterClient::connect(url, deployment, SHARDS).unwrap();
        let want: Vec<Option<&str>> = assign(SHARDS, NODES);
        let mut seen = Vec::new();
        let served = wait_until(Duration::from_secs(60), "every shard served by its owner", || {
            let mut owners = vec![None; SHARDS as usize];
            seen = client.nodes(Duration::from_millis(600));
            for alive in &seen {
                for (shard, _) in &alive.shards {
                    owners[*shard as usize] = NODES.iter().copied().find(|n| *n == alive.node);
                }
            }
            owners == want
        });
        if let Err(e) = served {
            // Say what each node advertised, and why a node that stopped stopped.
            let ended: Vec<String> = nodes
                .into_iter()
                .zip(NODES)
                .filter(|(node, _)| node.is_finished())
                .map(|(node, id)| format!("{id} ended: {:?}", runtime.block_on(node)))
                .collect();
            panic!(
                "{deployment}: {e}; want {want:?}; heard {seen:?}; {ended:?}; nats-server's log ends:\n{}",
                nats.log_tail(30)
            );
        }
        let notices = client.notices().unwrap();
        ClusterSubject { client, notices, stops, nodes, runtime, latest_ms: 0, resume: false }
    }

    fn control(&self, control: &Control) -> Vec<presence_cluster::wire::ControlAnswer> {
        NODES.iter().map(|node| self.client.control(node, control).unwrap()).collect()
    }

    /// Waits until every change the step caused is taken in everywhere, and returns the
    /// notices it caused.
    fn settle(&self) -> Vec<FlatNotice> {
        self.control(&Control::Quiesce);
        self.control(&Control::Quiesce);
        self.notices
            .drain()
            .into_iter()
            .flat_map(|(_, batch)| batch.notices)
            .map(|notice| match notice {
                NoticeOut::Status { to, device, about, status, custom, version, cause } => {
                    FlatNotice::Status {
                        to,
                        device,
                        about,
                        status,
                        custom,
                        version: Some(version),
                        cause: Some(cause),
                    }
                }
                NoticeOut::Kicked { to, device } => FlatNotice::Kicked { to, device },
            })
            .collect()
    }

    fn adopt(&mut self, at_ms: u64) {
        self.latest_ms = self.latest_ms.max(at_ms);
        if std::mem::take(&mut self.resume) {
            self.control(&Control::Resume { at_ms });
        }
    }

    fn stop(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for node in self.nodes.drain(..) {
            self.runtime.block_on(node).unwrap().unwrap();
        }
    }
}

impl Subject for ClusterSubject {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        let at_ms = at_ms.max(self.latest_ms);
        let reply = self.client.execute(command, Some(at_ms));
        if reply.is_ok() {
            self.adopt(at_ms);
        }
        let notices = self.settle();
        match reply {
            Ok(reply) => Ok(Response::new(reply, notices)),
            Err(ClientError::Refused { code, message }) => Err(Refusal { code, message }),
            Err(e) => Err(Refusal { code: 9000, message: e.to_string() }),
        }
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        let at_ms = at_ms.max(self.latest_ms);
        // A tick fixes every shard's recovery time itself.
        self.resume = false;
        self.latest_ms = at_ms;
        self.control(&Control::Tick { at_ms });
        Ok(Response::new(Reply::Done, self.settle()))
    }

    fn status(&self, user: &str) -> UserStatus {
        self.client.view(user).map(|v| v.status).unwrap_or_else(|_| UserStatus::unlogined())
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        let Ok(view) = self.client.view(user) else { return Vec::new() };
        view.sessions
            .into_iter()
            .map(|s| SessionView {
                device: s.device.as_str().into(),
                connected: s.connected,
                login_at_ms: s.login_at_ms,
                heartbeat_at_ms: s.heartbeat_at_ms,
            })
            .collect()
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.client.view(user).map(|v| v.subscriptions).unwrap_or_default()
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        self.client.view(user).map(|v| v.friends).unwrap_or_default()
    }

    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        let latest = self.control(&Control::Restart).iter().map(|a| a.latest_ms).max().unwrap_or(0);
        // R1.3 after a restart: the latest time any shard logged.
        self.latest_ms = latest;
        if disconnect {
            let at_ms = at_ms.max(latest);
            self.control(&Control::DisconnectRestored { at_ms });
            self.latest_ms = at_ms;
        } else {
            self.resume = true;
        }
        self.control(&Control::Rebuild);
        self.settle();
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        self.stop();
        Ok(())
    }
}

/// One cluster at a time: two would compete for the machine's cores, and a node starved
/// long enough misses its heartbeats and loses its shards.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_trace_passes_on_a_cluster() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);

    let nats = NatsServer::start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/traces");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    assert!(files.len() >= 40);
    // To look at one trace: PRESENCE_TRACE=r8.5 cargo test -p presence-cli --test cluster_traces
    if let Ok(only) = std::env::var("PRESENCE_TRACE") {
        files.retain(|f| f.display().to_string().contains(&only));
    }
    let mut failed = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        let trace = parse(&text).unwrap();
        let subject = ClusterSubject::start(&nats, &format!("trace{i}"), trace.config.clone());
        let failures = run_trace(&trace, subject);
        if !failures.is_empty() {
            failed.push(format!("{}: {failures:?}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} traces failed on the cluster:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

/// The conformance kit's random cases against the cluster, as another implementation would run
/// them: each case on a fresh deployment of the same two nodes' kind, compared with the
/// reference model after every step (fewer and shorter cases than on one engine: a case
/// starts two nodes).
#[test]
fn the_kit_passes_on_a_cluster() {
    use presence_conformance::kit::{self, KitOptions, Ops};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let nats = NatsServer::start();
    let options = KitOptions { cases: 6, seed: 31, ops: Ops::all(), max_steps: 30, shrink_iters: 20 };
    let mut next = 0;
    let report = kit::check(&options, |config| {
        next += 1;
        Ok(ClusterSubject::start(&nats, &format!("kit{next}"), config.clone()))
    });
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.passed, options.cases);
}
