//! The adversary tests' client of the manager protocol: an in-test libp2p
//! peer holding a node's identity (taken from its data dir) that sends the
//! manager whatever requests the test chooses, and reads the answers.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};
use strew_overlay::ManagerResponse;
use strew_overlay::budget::InboundBudget;
use strew_overlay::manager::{MANAGER_PROTOCOL, ManagerCodec};

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
