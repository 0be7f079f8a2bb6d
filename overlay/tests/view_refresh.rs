//! A node stays in the grid view of a peer it is connected to even when its
//! gossip stops reaching that peer: the peer asks it for its own
//! announcement (a one-announcement sync page) once it has been missing
//! for half a peer TTL. Seen in a million-chunk run, where the sequence
//! manager's gossip from every node stopped under a long load while the
//! connections lived on: its view emptied, and its collection of a forget
//! and its placements waited for nodes it was connected to all along.

mod common;

use std::time::Duration;

use common::{addr_of, config, start, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_node_whose_gossip_does_not_arrive_is_refreshed_into_the_view() {
    // The hub takes one new identity a minute per delivering IP from gossip:
    // on loopback, every node after the first that it learns by gossip (not
    // by the sync it runs with its first two peers) is ignored for a minute.
    let mut hub_cfg = config(48.85, 2.35, vec![]);
    hub_cfg.new_nodes_per_ip = 1;
    let hub = start(hub_cfg, 1 << 20);
    let boot = addr_of(&hub).await;
    let mut nodes = Vec::new();
    for (i, (lat, lon)) in [(52.52, 13.40), (41.39, 2.17), (45.46, 9.19), (50.08, 14.43)]
        .into_iter()
        .enumerate()
    {
        let node = start(config(lat, lon, vec![boot.clone()]), 1 << 20);
        let id = node.handle.node_id();
        // One at a time, so the hub syncs with the first two only.
        wait_for("the node to connect", Duration::from_secs(10), || {
            node.handle.connected_peers() > 0
        })
        .await;
        nodes.push((i, id, node));
    }
    // Every node is connected to the hub, and within 15 s (a tenth of the
    // gossip budget's minute) in its view: the nodes gossip did not bring
    // in were asked for their announcements.
    let in_view = |id| {
        hub.handle
            .with_grid_view(|v| v.get(&id).is_some())
            .unwrap_or(false)
    };
    wait_for(
        "every connected node in the hub's grid view",
        Duration::from_secs(15),
        || nodes.iter().all(|(_, id, _)| in_view(*id)),
    )
    .await;
    let refreshes = hub.handle.metrics().view_refreshes.get();
    let ignored: u64 = hub
        .handle
        .metrics()
        .announcements
        .get_or_create(&strew_overlay::metrics::ResultLabel { result: "ip_rate" })
        .get();
    assert!(
        ignored >= 1 && refreshes >= 1,
        "gossip from a node was ignored ({ignored}) and refreshed ({refreshes})"
    );
    // A node that left is not kept: it is not asked once disconnected, and
    // its announcement expires (peer TTL 5 s).
    let (_, gone, node) = nodes.pop().expect("four nodes");
    drop(node);
    wait_for(
        "the hub to see the node go",
        Duration::from_secs(10),
        || hub.handle.connected_peers() == nodes.len(),
    )
    .await;
    wait_for(
        "the node that left to expire from the view",
        Duration::from_secs(10),
        || !in_view(gone),
    )
    .await;
}
