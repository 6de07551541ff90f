//! A cluster as one implementation for the conformance traces and the kit (docs/SPEC.md
//! R9.4): nodes in this process over NATS, one deployment each, every step followed by the
//! nodes' quiescence, so that the cluster must answer as one engine does: results, error
//! codes, notices (versions and causes included) and reads. `presence conform --store
//! cluster:N` runs the traces on it; `cli/tests/cluster_traces.rs` runs the kit's random cases.

use std::time::Duration;

use presence_cluster::wire::{Control, ControlAnswer, NoticeOut};
use presence_cluster::{assign, run_node, ClientError, ClusterClient, NodeConfig, NodeOptions, Notices};
use presence_conformance::observe::{FlatNotice, Refusal, Response};
use presence_conformance::subject::Subject;
use presence_engine::{Command, Config, Reply, SessionView, UserId, UserStatus};
use presence_testkit::process::wait_until;

/// How many shards each node of a deployment owns.
pub const SHARDS_PER_NODE: u32 = 2;

/// A deployment of `nodes` in-process nodes, as one implementation.
pub struct ClusterSubject {
    client: ClusterClient,
    notices: Notices,
    node_ids: Vec<String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    nodes: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    runtime: tokio::runtime::Runtime,
    /// The latest time the deployment adopted (R1.3: the host gives one time to all shards).
    latest_ms: u64,
    /// After a restart that kept the sessions, the first time adopted is every shard's
    /// recovery time (R8.2).
    resume: bool,
    /// The first request a node did not answer: the subject is broken from then on.
    fault: Option<String>,
}

impl ClusterSubject {
    /// Starts `nodes` nodes (ids `n1`, `n2`, ...) of deployment `deployment` on the NATS
    /// servers at `url`, with `SHARDS_PER_NODE` shards each and the engine configuration
    /// `engine`, and waits until every shard is served by its owner.
    pub fn start(url: &str, deployment: &str, engine: Config, nodes: u32) -> Result<ClusterSubject, String> {
        let shards = nodes * SHARDS_PER_NODE;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the nodes' runtime: {e}"))?;
        let config = NodeConfig {
            deployment: deployment.into(),
            shards,
            replicas: 1,
            // Long enough that a node slowed by a busy machine (a debug build, other tests)
            // is not taken for lost, which would move shards in the middle of a trace.
            node_timeout_ms: 3_000,
            tick_interval_ms: 0,
            follow_interval_ms: 5,
            engine,
            ..NodeConfig::default()
        };
        config.validate()?;
        let node_ids: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let mut stops = Vec::new();
        let mut handles = Vec::new();
        for id in &node_ids {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let options = NodeOptions { nats_url: url.into(), node_id: id.clone(), config: config.clone() };
            handles.push(runtime.spawn(run_node(options, async move {
                let _ = stopped.await;
            })));
            stops.push(stop);
        }
        let client = ClusterClient::connect(url, deployment, shards)?;
        let want: Vec<Option<&str>> = assign(shards, node_ids.iter().map(String::as_str));
        let mut seen = Vec::new();
        let served = wait_until(Duration::from_secs(60), "every shard served by its owner", || {
            let mut owners = vec![None; shards as usize];
            seen = client.nodes(Duration::from_millis(600));
            for alive in &seen {
                for (shard, _) in &alive.shards {
                    owners[*shard as usize] = node_ids.iter().map(String::as_str).find(|n| *n == alive.node);
                }
            }
            owners == want
        });
        if let Err(e) = served {
            // Say what each node advertised, and why a node that stopped stopped.
            let ended: Vec<String> = handles
                .into_iter()
                .zip(&node_ids)
                .filter(|(node, _)| node.is_finished())
                .map(|(node, id)| format!("{id} ended: {:?}", runtime.block_on(node)))
                .collect();
            return Err(format!("{deployment}: {e}; want {want:?}; heard {seen:?}; {ended:?}"));
        }
        let notices = client.notices()?;
        Ok(ClusterSubject {
            client,
            notices,
            node_ids,
            stops,
            nodes: handles,
            runtime,
            latest_ms: 0,
            resume: false,
            fault: None,
        })
    }

    fn control(&mut self, control: &Control) -> Vec<ControlAnswer> {
        let mut answers = Vec::new();
        for node in &self.node_ids {
            match self.client.control(node, control) {
                Ok(answer) => answers.push(answer),
                Err(e) => {
                    self.fault.get_or_insert(format!("node {node} did not answer {control:?}: {e}"));
                }
            }
        }
        answers
    }

    /// Waits until every change the step caused is taken in everywhere, and returns the
    /// notices it caused.
    fn settle(&mut self) -> Vec<FlatNotice> {
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

    /// Stops the nodes; the first that ended with an error says why.
    fn stop(mut self) -> Result<(), String> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let mut result = Ok(());
        for (node, id) in self.nodes.drain(..).zip(&self.node_ids) {
            let ended = match self.runtime.block_on(node) {
                Ok(ended) => ended,
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = ended {
                result = result.and(Err(format!("node {id}: {e}")));
            }
        }
        result
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
        // Ticks are barriers (R9.4): no node hears of another's tick before its own shards
        // have run it.
        self.control(&Control::Hold);
        self.control(&Control::Tick { at_ms });
        self.control(&Control::Release);
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

    fn fault(&self) -> Option<String> {
        self.fault.clone()
    }

    fn finish(self) -> Result<(), String> {
        self.stop()
    }
}
