//! A hostile peer on the announcement topic: forged, impossible, garbage,
//! relayed-by-the-wrong-author and oversized announcements are rejected (and
//! counted), never enter the grid view, and the victim keeps serving honest nodes.

mod common;

use std::time::Duration;

use common::{addr_of, config, start, wait_for};
use futures::StreamExt;
use strew_overlay::gossip::{ANNOUNCE_TOPIC, topic};
use strew_overlay::libp2p::gossipsub::{self, IdentTopic};
use strew_overlay::libp2p::identity::Keypair;
use strew_overlay::libp2p::swarm::SwarmEvent;
use strew_overlay::libp2p::{SwarmBuilder, noise, tcp, yamux};
use strew_overlay::metrics::ResultLabel;
use strew_overlay::{Announcement, PROTOCOL_VERSION, now_ms, peer};

fn announcement(key: &Keypair, lat: f64) -> Announcement {
    Announcement {
        protocol_version: PROTOCOL_VERSION,
        node_id: peer::node_id_of_key(&key.public()).unwrap().0,
        issued_at: now_ms(),
        valid_for_secs: 60,
        lat,
        lon: 0.0,
        storage_allocated: 1000,
        storage_free: 10,
        bandwidth_limit: 0,
        load: 0.0,
        uptime_secs: 1,
        coordinator_eligible: false,
        x25519_public: [0; 32],
        listen_addrs: vec![],
        external_addrs: Vec::new(),
        behind_nat: false,
        work_nonce: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_announcements_are_rejected_and_the_victim_keeps_serving() {
    let victim = start(config(48.85, 2.35, vec![]), 1 << 20);
    let victim_addr = addr_of(&victim).await;

    // The attacker: a bare gossipsub node that signs its envelopes but lies inside them.
    let attacker_key = Keypair::generate_ed25519();
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .max_transmit_size(256 * 1024)
        .build()
        .unwrap();
    let mut attacker = SwarmBuilder::with_existing_identity(attacker_key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| {
            gossipsub::Behaviour::<
                gossipsub::IdentityTransform,
                gossipsub::AllowAllSubscriptionFilter,
            >::new(
                gossipsub::MessageAuthenticity::Signed(k.clone()),
                gossip_cfg,
            )
            .unwrap()
        })
        .unwrap()
        .build();
    let t: IdentTopic = topic();
    attacker.behaviour_mut().subscribe(&t).unwrap();
    attacker.dial(victim_addr).unwrap();
    let subscribed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { topic, .. }) =
                attacker.select_next_some().await
                && topic.as_str() == ANNOUNCE_TOPIC
            {
                break;
            }
        }
    })
    .await;
    assert!(subscribed.is_ok(), "victim subscribed to the topic");

    let someone = Keypair::generate_ed25519();
    let forged = announcement(&someone, 10.0).sign(&attacker_key).unwrap(); // claims someone, signed by attacker
    let impossible = announcement(&attacker_key, 123.0)
        .sign(&attacker_key)
        .unwrap();
    let relayed = announcement(&someone, 10.0).sign(&someone).unwrap(); // valid, but author != announced node
    let garbage = b"\xa1\x64body\x40 definitely not an announcement".to_vec();
    let oversized = vec![0x41u8; 100 * 1024];
    for msg in [forged, impossible, relayed, garbage, oversized] {
        let _ = attacker.behaviour_mut().publish(t.clone(), msg);
        // Let the swarm flush.
        let _ = tokio::time::timeout(Duration::from_millis(100), attacker.select_next_some()).await;
    }
    let metrics = victim.handle.metrics().clone();
    let rejected = move || {
        metrics
            .announcements
            .get_or_create(&ResultLabel { result: "rejected" })
            .get()
    };
    // Keep the attacker's connection alive while the victim processes.
    let drive = tokio::spawn(async move {
        loop {
            attacker.select_next_some().await;
        }
    });
    wait_for("three rejections", Duration::from_secs(20), || {
        rejected() >= 3
    })
    .await;
    let listed: Vec<_> = victim.handle.peers().iter().map(|p| p.node_id).collect();
    for k in [&attacker_key, &someone] {
        assert!(!listed.contains(&peer::node_id_of_key(&k.public()).unwrap()));
    }

    // The victim still serves: an honest node joins through it and both see each other.
    let honest = start(config(52.52, 13.40, vec![addr_of(&victim).await]), 1 << 20);
    let honest_id = honest.handle.node_id();
    let victim_id = victim.handle.node_id();
    wait_for(
        "victim to see the honest node",
        Duration::from_secs(20),
        || victim.handle.peers().iter().any(|p| p.node_id == honest_id),
    )
    .await;
    wait_for(
        "honest node to see the victim",
        Duration::from_secs(20),
        || honest.handle.peers().iter().any(|p| p.node_id == victim_id),
    )
    .await;
    drive.abort();
}
