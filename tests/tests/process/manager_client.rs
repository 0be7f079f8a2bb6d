//! What the adversary tests of the manager share: a small open grid of
//! real nodes around one coordinator, a node's identity taken over (from
//! its data dir, the node stopped), and the in-test libp2p client of the
//! manager protocol that sends whatever requests the test chooses as that
//! node, and reads the answers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};
use strew_overlay::ManagerResponse;
use strew_overlay::budget::InboundBudget;
use strew_overlay::manager::{MANAGER_PROTOCOL, ManagerCodec};
use strew_tests::{Node, NodeOptions, wait_for};

/// A grid's founder and coordinator, the nodes that joined it, and the
/// coordinator's node id (the manager).
pub struct SmallGrid {
    pub coordinator: Node,
    pub nodes: Vec<Node>,
    pub manager_id: String,
    /// The coordinator's bootstrap address.
    pub boot: String,
}

impl SmallGrid {
    /// Founds an open grid with `founder` as its coordinator, joins every
    /// node of `others` to it, and waits until all know the manager and
    /// the manager knows them all.
    pub fn start(mut founder: NodeOptions, others: Vec<NodeOptions>) -> Result<SmallGrid> {
        founder.found_grid = true;
        founder.extra.push("--coordinator".into());
        let coordinator = Node::start(founder)?;
        let boot = coordinator.bootstrap_addr()?;
        let manager_id = coordinator.node_id()?;
        let mut nodes = Vec::new();
        for options in others {
            nodes.push(Node::start(options.bootstrap(boot.clone()))?);
        }
        for node in &nodes {
            wait_for(
                "every node to know the manager",
                Duration::from_secs(90),
                || {
                    let s = node.daemon_status().ok()?;
                    (s["manager"].as_str() == Some(manager_id.as_str())).then_some(())
                },
            )?;
        }
        coordinator.wait_for_manager_view(nodes.len() as u64 + 1, Duration::from_secs(60))?;
        Ok(SmallGrid {
            coordinator,
            nodes,
            manager_id,
            boot,
        })
    }

    /// The coordinator's address without its peer id (a client dials it
    /// with the manager's).
    pub fn manager_addr(&self) -> Result<Multiaddr> {
        let addr: Multiaddr = self.boot.parse()?;
        Ok(addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect())
    }
}

/// Backs up 1 MB of noise (`seed`) from `node`, erasure 2+1, and checks
/// that it committed; a failure shows `log_of`'s log (the coordinator's).
pub fn honest_backup(node: &Node, log_of: &Node, seed: u64) -> Result<()> {
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("honest.bin"), strew_tests::noise(1_000_000, seed))?;
    let out = node
        .cli_json(&[
            "backup",
            tree.to_str().context("utf-8 path")?,
            "--redundancy",
            "erasure:2+1",
            "--name",
            "honest",
            "--json",
        ])
        .map_err(|e| anyhow::anyhow!("{e}; coordinator log:\n{}", log_of.log()))?;
    ensure!(
        out["snapshot"].as_str().is_some(),
        "the honest backup did not commit: {out}"
    );
    Ok(())
}

/// `node`'s identity, for a client to speak as it; the node is stopped.
pub fn take_identity(node: &mut Node) -> Result<Keypair> {
    let key =
        Keypair::from_protobuf_encoding(&std::fs::read(node.data_dir().join("identity.key"))?)?;
    node.kill();
    Ok(key)
}

pub type ManagerSwarm = libp2p::Swarm<request_response::Behaviour<ManagerCodec>>;

/// A client speaking as `key`, each call failing after `timeout`.
pub fn manager_client(key: Keypair, timeout: Duration) -> Result<ManagerSwarm> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                ManagerCodec::new(InboundBudget::new(64 << 20)),
                [(
                    StreamProtocol::new(MANAGER_PROTOCOL),
                    request_response::ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(timeout),
            )
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build())
}

/// The next answer to one of the client's calls (or how the call failed
/// on the wire), driving the swarm meanwhile; an error past `until`.
pub async fn next_answer(
    swarm: &mut ManagerSwarm,
    until: Instant,
) -> Result<(OutboundRequestId, Result<ManagerResponse, String>)> {
    loop {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), swarm.next()).await
        else {
            ensure!(Instant::now() < until, "no answer from the manager in time");
            continue;
        };
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => return Ok((request_id, Ok(response))),
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => return Ok((request_id, Err(error.to_string()))),
            _ => {}
        }
    }
}
