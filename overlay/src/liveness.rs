//! Liveness: whether each known node is reachable now, judged from what this
//! node sees itself (connections that close, dials that fail, pings that
//! time out), never from how long the node's own announcement says it is
//! valid. A killed node is offline here within seconds; an announcement
//! stays valid for `peer_ttl` (45 min by default).
//!
//! Owns the per-node contact record and the probe schedule as a state
//! machine driven by the event loop with the current time: it decides which
//! nodes to dial and when a node changes between online and offline. It
//! must not dial, read clocks or touch the grid view (the event loop applies
//! the [`Change`]s it returns).

use std::collections::HashMap;
use std::time::Duration;

use strew_coordinator::NodeId;
use tokio::time::Instant;

/// Consecutive failed dials after which a node counts as offline.
pub const OFFLINE_AFTER_FAILURES: u32 = 2;
/// How soon a node whose connection closed is dialled again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(2);
/// Between dials of a node that failed once (suspect, still online).
pub const SUSPECT_RETRY: Duration = Duration::from_secs(5);
/// Between dials of an offline node (to see it come back).
pub const OFFLINE_RETRY: Duration = Duration::from_secs(60);
/// Dials that fail after a node announced new addresses and are retried at
/// the suspect's pace even if it is offline: a relayed address can fail
/// while the node's reservation settles, and two nodes behind NAT should not
/// then wait a minute to find each other.
pub const READDRESSED_RETRIES: u8 = 3;
/// How long a probe may take before the node may be picked again.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// Shortest time between two scans of the grid view for due probes (a scan
/// is linear in the view; the event loop's housekeeping ticks faster).
pub const PROBE_ROUND: Duration = Duration::from_secs(1);

/// A node became reachable again or stopped being reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Online(NodeId),
    Offline(NodeId),
}

#[derive(Debug, Clone)]
struct Contact {
    connected: bool,
    failures: u32,
    offline: bool,
    /// When to dial next; `None` while connected or never due.
    next_probe: Option<Instant>,
    /// Failed dials left to retry soon since the node's addresses changed.
    soon: u8,
}

impl Contact {
    fn new() -> Self {
        Contact {
            connected: false,
            failures: 0,
            offline: false,
            next_probe: None,
            soon: 0,
        }
    }
}

/// Probe policy: whether idle, unconnected nodes are dialled at all and how
/// often, and how many dials one housekeeping round may start.
#[derive(Debug, Clone)]
pub struct ProbePolicy {
    /// Dial known nodes this node has no connection with, every `every`
    /// (coordinator-eligible nodes: the manager's view decides placement).
    /// Others only re-check nodes they were connected to.
    pub watch_all: bool,
    pub every: Duration,
    /// Dials started per round at most: the cost is bounded whatever the grid size.
    pub per_round: usize,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        ProbePolicy {
            watch_all: false,
            every: Duration::from_secs(30),
            per_round: 4,
        }
    }
}

/// Reachability of the nodes this node knows.
#[derive(Debug, Default)]
pub struct Liveness {
    contacts: HashMap<NodeId, Contact>,
    policy: ProbePolicy,
    /// When the last scan for due probes ran.
    last_round: Option<Instant>,
}

impl Liveness {
    pub fn new(policy: ProbePolicy) -> Self {
        Liveness {
            contacts: HashMap::new(),
            policy,
            last_round: None,
        }
    }

    /// A connection to `node` is up: it is online.
    pub fn connected(&mut self, node: NodeId) -> Option<Change> {
        let c = self.contacts.entry(node).or_insert_with(Contact::new);
        c.connected = true;
        c.failures = 0;
        c.next_probe = None;
        c.soon = 0;
        if c.offline {
            c.offline = false;
            return Some(Change::Online(node));
        }
        None
    }

    /// The last connection to `node` closed: dial it again soon to tell a
    /// closed connection from a dead node.
    pub fn disconnected(&mut self, node: NodeId, now: Instant) {
        let c = self.contacts.entry(node).or_insert_with(Contact::new);
        c.connected = false;
        if !c.offline {
            c.next_probe = Some(now + RECHECK_AFTER);
        }
    }

    /// A dial to `node` failed (not one this node refused itself).
    pub fn dial_failed(&mut self, node: NodeId, now: Instant) -> Option<Change> {
        let c = self.contacts.entry(node).or_insert_with(Contact::new);
        if c.connected {
            return None;
        }
        c.failures = c.failures.saturating_add(1);
        let went_offline = c.failures >= OFFLINE_AFTER_FAILURES && !c.offline;
        c.offline |= went_offline;
        let wait = if c.soon > 0 {
            c.soon -= 1;
            SUSPECT_RETRY
        } else if c.offline {
            OFFLINE_RETRY
        } else {
            SUSPECT_RETRY
        };
        c.next_probe = Some(now + wait);
        went_offline.then_some(Change::Offline(node))
    }

    /// The node announced new addresses (e.g. through a relay, once it found
    /// itself behind NAT): a node this one could not reach is tried again
    /// now, and the next [`READDRESSED_RETRIES`] failures are retried soon.
    pub fn addresses_changed(&mut self, node: NodeId, now: Instant) {
        if let Some(c) = self.contacts.get_mut(&node)
            && !c.connected
        {
            c.next_probe = Some(now);
            c.soon = READDRESSED_RETRIES;
        }
    }

    /// The node left the grid view: nothing more to watch.
    pub fn forget(&mut self, node: &NodeId) {
        self.contacts.remove(node);
    }

    pub fn is_offline(&self, node: &NodeId) -> bool {
        self.contacts.get(node).is_some_and(|c| c.offline)
    }

    /// Nodes to dial now, at most `policy.per_round`, earliest due first.
    /// `known` is the grid view (this node excluded). A node picked here is
    /// not picked again before [`PROBE_TIMEOUT`] unless a dial outcome
    /// reschedules it.
    pub fn due(&mut self, known: impl Iterator<Item = NodeId>, now: Instant) -> Vec<NodeId> {
        if self
            .last_round
            .is_some_and(|at| now.saturating_duration_since(at) < PROBE_ROUND)
        {
            return Vec::new();
        }
        self.last_round = Some(now);
        let mut due: Vec<(Instant, NodeId)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for node in known {
            seen.insert(node);
            let watch_all = self.policy.watch_all;
            let c = self.contacts.entry(node).or_insert_with(|| {
                let mut c = Contact::new();
                // First sight: a watcher checks it now, others leave it be.
                c.next_probe = watch_all.then_some(now);
                c
            });
            if c.connected {
                continue;
            }
            if c.next_probe.is_none() && watch_all {
                c.next_probe = Some(now + self.policy.every);
            }
            if let Some(at) = c.next_probe
                && at <= now
            {
                due.push((at, node));
            }
        }
        // Nodes that left the view (expired or evicted) are not watched.
        self.contacts.retain(|n, _| seen.contains(n));
        due.sort_unstable();
        due.truncate(self.policy.per_round);
        let picked: Vec<NodeId> = due.into_iter().map(|(_, n)| n).collect();
        for node in &picked {
            if let Some(c) = self.contacts.get_mut(node) {
                c.next_probe = Some(now + PROBE_TIMEOUT.max(self.policy.every));
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn a_node_that_stops_answering_goes_offline_after_two_failed_dials_and_comes_back() {
        let mut l = Liveness::new(ProbePolicy::default());
        let t0 = Instant::now();
        assert_eq!(l.connected(id(1)), None);
        l.disconnected(id(1), t0);
        assert!(l.due([id(1)].into_iter(), t0).is_empty(), "not due yet");
        let t1 = t0 + RECHECK_AFTER;
        assert_eq!(l.due([id(1)].into_iter(), t1), vec![id(1)]);
        assert_eq!(l.dial_failed(id(1), t1), None, "one failure is a suspicion");
        assert!(!l.is_offline(&id(1)));
        let t2 = t1 + SUSPECT_RETRY;
        assert_eq!(l.due([id(1)].into_iter(), t2), vec![id(1)]);
        assert_eq!(l.dial_failed(id(1), t2), Some(Change::Offline(id(1))));
        assert!(l.is_offline(&id(1)));
        // Offline nodes are retried slowly, and a connection brings them back.
        assert!(l.due([id(1)].into_iter(), t2 + SUSPECT_RETRY).is_empty());
        assert_eq!(l.due([id(1)].into_iter(), t2 + OFFLINE_RETRY), vec![id(1)]);
        assert_eq!(l.connected(id(1)), Some(Change::Online(id(1))));
        assert!(!l.is_offline(&id(1)));
    }

    #[test]
    fn plain_nodes_leave_strangers_alone_and_watchers_probe_within_budget() {
        let t0 = Instant::now();
        let mut plain = Liveness::new(ProbePolicy::default());
        assert!(plain.due((1..50).map(id), t0).is_empty());
        let mut watcher = Liveness::new(ProbePolicy {
            watch_all: true,
            every: Duration::from_secs(30),
            per_round: 3,
        });
        let first = watcher.due((1..50).map(id), t0);
        assert_eq!(first.len(), 3);
        assert!(
            watcher.due((1..50).map(id), t0).is_empty(),
            "at most one scan of the view per round"
        );
        let second = watcher.due((1..50).map(id), t0 + PROBE_ROUND);
        assert_eq!(second.len(), 3);
        assert!(
            first.iter().all(|n| !second.contains(n)),
            "picked once per timeout"
        );
        // Connected nodes are never probed.
        for n in 1..50 {
            watcher.connected(id(n));
        }
        assert!(watcher.due((1..50).map(id), t0 + OFFLINE_RETRY).is_empty());
    }

    #[test]
    fn an_offline_node_with_new_addresses_is_retried_soon_a_few_times() {
        let mut l = Liveness::new(ProbePolicy::default());
        let mut t = Instant::now();
        l.connected(id(3));
        l.disconnected(id(3), t);
        l.dial_failed(id(3), t);
        assert_eq!(l.dial_failed(id(3), t), Some(Change::Offline(id(3))));
        t += Duration::from_secs(10);
        assert!(
            l.due([id(3)].into_iter(), t).is_empty(),
            "offline: a minute"
        );
        t += PROBE_ROUND;
        l.addresses_changed(id(3), t);
        // The dial at the change, then READDRESSED_RETRIES retries soon.
        for retry in 0..=READDRESSED_RETRIES {
            assert_eq!(l.due([id(3)].into_iter(), t), vec![id(3)], "retry {retry}");
            assert_eq!(l.dial_failed(id(3), t), None, "still offline, no change");
            t += SUSPECT_RETRY;
        }
        assert!(
            l.due([id(3)].into_iter(), t).is_empty(),
            "after the quick retries, back to the offline pace"
        );
        assert_eq!(
            l.due([id(3)].into_iter(), t - SUSPECT_RETRY + OFFLINE_RETRY),
            vec![id(3)]
        );
        assert!(l.is_offline(&id(3)));
    }

    #[test]
    fn failures_while_a_connection_is_up_do_not_count() {
        let mut l = Liveness::new(ProbePolicy::default());
        let t0 = Instant::now();
        l.connected(id(2));
        assert_eq!(l.dial_failed(id(2), t0), None);
        assert_eq!(l.dial_failed(id(2), t0), None);
        assert!(!l.is_offline(&id(2)));
    }
}
