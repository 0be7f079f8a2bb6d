//! What a consensus layer needs from the manager: whole-state replacement
//! (snapshot install), a CBOR round trip of the whole state, and commands
//! that either apply or change nothing.

use ed25519_dalek::SigningKey;
use strew_coordinator::{
    ApplyError, Command, GeoPoint, GroupKey, Manager, ManagerConfig, ManagerError, ManagerState,
    NodeId, NodeProfile,
};

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn profile(n: u8, lat: f64, lon: f64) -> NodeProfile {
    let id = NodeId(key(n).verifying_key().to_bytes());
    NodeProfile::new(id, GeoPoint::new(lat, lon).unwrap(), 1 << 30, 0)
}

#[test]
fn replace_state_installs_a_whole_state() {
    let mut source = Manager::new(key(201), GroupKey([7; 32]), ManagerConfig::default());
    for n in 1..6u8 {
        source
            .join(profile(n, 40.0 + f64::from(n), 2.0), None, u64::from(n))
            .unwrap();
    }
    source
        .set_online(profile(3, 43.0, 2.0).node_id, false, 9)
        .unwrap();
    let bytes = strew_coordinator::cbor::encode(source.state()).unwrap();
    let shipped: ManagerState = strew_coordinator::cbor::decode(&bytes).unwrap();
    assert_eq!(&shipped, source.state());

    let mut m = Manager::new(key(200), GroupKey([7; 32]), ManagerConfig::default());
    // Records the snapshot does not hold must disappear.
    m.join(profile(9, 0.0, 0.0), None, 1).unwrap();
    m.replace_state(shipped);
    assert_eq!(m.state(), source.state());
    assert_eq!(m.view().len(), 5);
    // Later commands build on the installed state.
    m.execute(Command::SetOnline {
        node: profile(3, 43.0, 2.0).node_id,
        online: true,
        at: 10,
    })
    .unwrap();
    let mut expected = source.state().clone();
    if let Some(c) = expected.clients.get_mut(&profile(3, 43.0, 2.0).node_id) {
        assert_eq!(
            c.offline_since,
            Some(9),
            "offline since the shipped SetOnline"
        );
        c.profile.online = true;
        c.offline_since = None;
    }
    assert_eq!(m.state(), &expected);
    // A command that does not apply is an error and changes nothing.
    let unknown = Command::SetOnline {
        node: NodeId([42; 32]),
        online: true,
        at: 11,
    };
    assert!(matches!(
        m.execute(unknown),
        Err(ManagerError::Apply(ApplyError::UnknownNode(_)))
    ));
    assert_eq!(m.state(), &expected);
}

#[test]
fn nodes_join_after_a_whole_state_was_installed() {
    // rstar's bulk load can build trees that a later insert panics on
    // (georust/rstar#239); the view must survive joins after any install.
    use rand::seq::SliceRandom;
    use rand::{RngExt, SeedableRng};
    let far = |k: u32| {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&k.to_be_bytes());
        seed[31] = 0x5A;
        let id = NodeId(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
        let lat = -60.0 + f64::from(k % 120);
        let lon = -170.0 + f64::from((k * 7) % 340);
        NodeProfile::new(id, GeoPoint::new(lat, lon).unwrap(), 1 << 30, 0)
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..100 {
        let mut ks: Vec<u32> = (0..400).collect();
        ks.shuffle(&mut rng);
        let n = rng.random_range(1..250);
        let mut source = Manager::new(key(201), GroupKey([7; 32]), ManagerConfig::default());
        for &k in &ks[..n] {
            source.join(far(k), None, 1).unwrap();
        }
        let mut m = Manager::new(key(202), GroupKey([7; 32]), ManagerConfig::default());
        m.replace_state(source.state().clone());
        for &k in &ks[n..n + 100] {
            m.join(far(k), None, 2).unwrap();
        }
        assert_eq!(m.view().len(), n + 100);
    }
}
