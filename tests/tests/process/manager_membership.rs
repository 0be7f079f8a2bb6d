//! Membership of the coordinator group on real processes: four coordinators
//! make three voters and a learner; a voter gone from the grid for longer
//! than the grace period (`STREW_GROUP_GRACE`, shortened here) is removed and
//! the learner promoted, so the group keeps three voters; `strew status`
//! shows the group to people.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{Node, NodeOptions, cities, wait_for};

fn group(node: &Node) -> Option<Value> {
    let g = node.daemon_status().ok()?["group"].clone();
    g.is_object().then_some(g)
}

fn roles(g: &Value) -> Vec<(String, String)> {
    g["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["node_id"].as_str().unwrap_or_default().to_string(),
                m["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_gone_voter_is_replaced_after_the_grace_period() -> Result<()> {
    let places = cities(5)?;
    let options = |i: usize| {
        let mut o = NodeOptions::at(places[i].location());
        o.peer_ttl = "4s".into();
        o.env.push(("STREW_GROUP_GRACE".into(), "3s".into()));
        o
    };
    let seed = Node::start(options(4))?;
    let boot = seed.bootstrap_addr()?;
    let mut coordinators = Vec::new();
    for i in 0..4 {
        let mut o = options(i).bootstrap(boot.clone());
        o.extra.push("--coordinator".into());
        // The first founds the grid (`strew grid create`); it admits the others.
        o.found_grid = i == 0;
        coordinators.push(Node::start(o)?);
    }
    for i in 1..coordinators.len() {
        coordinators[0].admit(&coordinators[i])?;
    }
    let ids: Vec<String> = coordinators
        .iter()
        .map(Node::node_id)
        .collect::<Result<_>>()?;

    let leader = wait_for(
        "three voters and a learner",
        Duration::from_secs(90),
        || {
            (0..coordinators.len()).find(|&i| {
                group(&coordinators[i]).is_some_and(|g| {
                    let r = roles(&g);
                    g["state"] == "Leader"
                        && r.iter().filter(|(_, role)| role == "voter").count() == 3
                        && r.iter().filter(|(_, role)| role == "learner").count() == 1
                })
            })
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", coordinators[0].log()))?;
    let out = coordinators[leader].cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("group     leader in term") && text.contains(" voter"),
        "status shows the group: {text}"
    );

    // Kill a voter that does not lead.
    let g = group(&coordinators[leader]).context("group")?;
    let victim = (0..coordinators.len())
        .find(|&i| {
            i != leader
                && roles(&g)
                    .iter()
                    .any(|(id, role)| *id == ids[i] && role == "voter")
        })
        .context("a voter besides the leader")?;
    coordinators[victim].kill();
    wait_for(
        "the gone voter replaced by the learner",
        Duration::from_secs(60),
        || {
            let r = roles(&group(&coordinators[leader])?);
            let voters: Vec<&String> = r
                .iter()
                .filter(|(_, role)| role == "voter")
                .map(|(id, _)| id)
                .collect();
            (voters.len() == 3 && !r.iter().any(|(id, _)| *id == ids[victim])).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", coordinators[leader].log()))?;
    Ok(())
}
