//! What a consensus layer needs from the manager: the replication position
//! written atomically with the state it describes, whole-state replacement
//! (snapshot install) that survives a reopen, and a CBOR round trip of the
//! whole state.

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

fn open(path: &std::path::Path) -> Manager {
    Manager::open(path, key(200), GroupKey([7; 32]), ManagerConfig::default()).unwrap()
}

#[test]
fn position_is_written_with_the_command_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manager.redb");
    let joined = profile(1, 48.0, 2.0);
    {
        let mut m = open(&path);
        assert_eq!(m.replication_position().unwrap(), None);
        m.execute_at(
            Command::Join {
                profile: joined.clone(),
                token: None,
                at: 5,
            },
            b"entry-1",
        )
        .unwrap();
        assert_eq!(m.replication_position().unwrap(), Some(b"entry-1".to_vec()));
        // A command that does not apply consumes its entry and changes nothing.
        let before = m.state().clone();
        let unknown = profile(2, 10.0, 10.0).node_id;
        let err = m
            .execute_at(
                Command::SetOnline {
                    node: unknown,
                    online: false,
                    at: 6,
                },
                b"entry-2",
            )
            .unwrap_err();
        assert!(matches!(
            err,
            ManagerError::Apply(ApplyError::UnknownNode(id)) if id == unknown
        ));
        assert_eq!(m.state(), &before);
        assert_eq!(m.replication_position().unwrap(), Some(b"entry-2".to_vec()));
        m.set_replication_position(b"entry-3").unwrap();
    }
    let m = open(&path);
    assert_eq!(m.replication_position().unwrap(), Some(b"entry-3".to_vec()));
    assert!(m.state().clients.contains_key(&joined.node_id));
}

#[test]
fn replace_state_installs_a_whole_state_durably() {
    let mut source = Manager::in_memory(key(201), GroupKey([7; 32]), ManagerConfig::default());
    for n in 1..6u8 {
        source
            .join(profile(n, 40.0 + f64::from(n), 2.0), None, u64::from(n))
            .unwrap();
    }
    source
        .set_online(profile(3, 43.0, 2.0).node_id, false, 9)
        .unwrap();
    let mut bytes = Vec::new();
    ciborium::into_writer(source.state(), &mut bytes).unwrap();
    let shipped: ManagerState = ciborium::from_reader(bytes.as_slice()).unwrap();
    assert_eq!(&shipped, source.state());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manager.redb");
    {
        let mut m = open(&path);
        // Records the snapshot does not hold must disappear.
        m.join(profile(9, 0.0, 0.0), None, 1).unwrap();
        m.replace_state(shipped, b"snapshot-at-6").unwrap();
        assert_eq!(m.state(), source.state());
        assert_eq!(m.view().len(), 5);
        // Later commands build on the installed state.
        m.execute_at(
            Command::SetOnline {
                node: profile(3, 43.0, 2.0).node_id,
                online: true,
                at: 10,
            },
            b"entry-7",
        )
        .unwrap();
    }
    let m = open(&path);
    let mut expected = source.state().clone();
    if let Some(c) = expected.clients.get_mut(&profile(3, 43.0, 2.0).node_id) {
        c.profile.online = true;
    }
    assert_eq!(m.state(), &expected);
    assert_eq!(m.replication_position().unwrap(), Some(b"entry-7".to_vec()));
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
        let mut source = Manager::in_memory(key(201), GroupKey([7; 32]), ManagerConfig::default());
        for &k in &ks[..n] {
            source.join(far(k), None, 1).unwrap();
        }
        let mut m = Manager::in_memory(key(202), GroupKey([7; 32]), ManagerConfig::default());
        m.replace_state(source.state().clone(), b"snapshot")
            .unwrap();
        for &k in &ks[n..n + 100] {
            m.join(far(k), None, 2).unwrap();
        }
        assert_eq!(m.view().len(), n + 100);
    }
}
