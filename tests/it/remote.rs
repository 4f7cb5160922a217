//! ironlun's initiator (crates/initiator) against real targets: ironlun itself and tgt.

use std::{sync::Arc, time::Duration};

use blockdev::{BlockDevice, BlockErrorKind};
use bytes::Bytes;
use initiator::{Config, Credential, RemoteLun};

use crate::{
    harness::{IQN, Server},
    tgt::Tgt,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|x| (x as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn exercise(dev: &RemoteLun) {
    // 1 MiB: immediate data, unsolicited Data-Out, then R2T-solicited data.
    let big = pattern(1 << 20, 1);
    dev.write_at(&[Bytes::from(big.clone())], 4096, false)
        .unwrap();
    let mut back = vec![0u8; 1 << 20];
    dev.read_at(&mut back, 4096).unwrap();
    assert_eq!(back, big);
    // Several buffers, FUA, flush.
    dev.write_at(
        &[Bytes::from(vec![7u8; 512]), Bytes::from(vec![8u8; 512])],
        0,
        true,
    )
    .unwrap();
    dev.flush().unwrap();
    let mut b = vec![0u8; 1024];
    dev.read_at(&mut b, 0).unwrap();
    assert_eq!((&b[..512], &b[512..]), (&[7u8; 512][..], &[8u8; 512][..]));
    // Zeroes.
    dev.write_zeroes(4096, 65536, false).unwrap();
    let mut z = vec![1u8; 65536];
    dev.read_at(&mut z, 4096).unwrap();
    assert!(z.iter().all(|&x| x == 0));
    // Out of range.
    let e = dev.read_at(&mut [0u8; 512], dev.size()).unwrap_err();
    assert_eq!(e.kind, BlockErrorKind::OutOfBounds);
}

#[test]
fn remote_lun_on_ironlun_with_mutual_chap_and_concurrent_writers() {
    let s = Server::start(
        r#"chap = [{ user = "mirror", secret = "mirror-secret-77" }]
mutual_chap = { user = "tgtuser", secret = "target-secret-88" }"#,
    );
    let mut cfg = Config::new(&s.addr().to_string(), IQN, "iqn.2026-11.test:initiator");
    cfg.chap = Some(Credential {
        user: "mirror".into(),
        secret: b"mirror-secret-77".to_vec(),
    });
    cfg.mutual = Some(Credential {
        user: "tgtuser".into(),
        secret: b"target-secret-88".to_vec(),
    });
    cfg.digests = true;
    let dev = Arc::new(RemoteLun::open(cfg.clone(), 0).expect("login"));
    assert_eq!(dev.size(), 64 << 20);
    exercise(&dev);
    // Eight threads share the session.
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                for k in 0..50u64 {
                    let off = (u64::from(t) * 1000 + k) * 8192 + (8 << 20);
                    let data = vec![t.wrapping_add(k as u8); 8192];
                    dev.write_at(&[Bytes::from(data.clone())], off, false)
                        .unwrap();
                    let mut back = vec![0u8; 8192];
                    dev.read_at(&mut back, off).unwrap();
                    assert_eq!(back, data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A wrong mutual secret: the initiator refuses the target.
    cfg.mutual = Some(Credential {
        user: "tgtuser".into(),
        secret: b"not-the-secret-1".to_vec(),
    });
    assert!(matches!(
        RemoteLun::open(cfg, 0),
        Err(initiator::Error::Auth(_))
    ));
}

#[test]
fn remote_lun_on_tgt() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("tgt.img");
    std::fs::write(&img, vec![0u8; 16 << 20]).unwrap();
    let t = Tgt::start(dir.path(), "iqn.2026-11.test:tgt", &img);
    let cfg = Config::new(&t.addr.to_string(), &t.iqn, "iqn.2026-11.test:initiator");
    let dev = RemoteLun::open(cfg, 1).expect("login to tgt");
    assert_eq!(dev.size(), 16 << 20);
    exercise(&dev);
    dev.flush().unwrap();
    let file = std::fs::read(&img).unwrap();
    assert_eq!(&file[4096..4096 + 65536], &[0u8; 65536][..]);
    assert_eq!(&file[0..512], &[7u8; 512][..]);
}

#[test]
fn a_lost_link_is_unreachable_until_the_target_returns() {
    let mut s = Server::start("");
    let cfg = Config::new(&s.addr().to_string(), IQN, "iqn.2026-11.test:initiator");
    let dev = RemoteLun::open(cfg, 0).expect("login");
    dev.write_at(&[Bytes::from(vec![3u8; 4096])], 0, false)
        .unwrap();
    // The server goes away: Unreachable, not an I/O error of the disk.
    s.restart(true);
    let e = dev
        .write_at(&[Bytes::from(vec![4u8; 4096])], 0, false)
        .unwrap_err();
    assert_eq!(e.kind, BlockErrorKind::Unreachable);
    // The restarted server listens on a new port: a device for the new address reconnects.
    let dev = RemoteLun::open(
        Config::new(&s.addr().to_string(), IQN, "iqn.2026-11.test:initiator"),
        0,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let mut b = vec![0u8; 4096];
    dev.read_at(&mut b, 0).unwrap();
    assert_eq!(b, vec![3u8; 4096]);
}

/// Wait until a relationship reaches `want`.
fn wait_state(c: &mut admin::client::Client, sync: &str, want: u64) {
    let t = std::time::Instant::now();
    loop {
        let s = crate::replication::copy_state(c, sync);
        if s == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{sync} stuck in CopyState {s}, waiting for {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A remote mirror of LUN 0 of `s` to the access point `ap`; returns the pair.
fn remote_mirror(
    c: &mut admin::client::Client,
    ap: serde_json::Value,
    mode: u16,
    recovery: Option<u16>,
) -> String {
    use crate::replication::{ok, pairs};
    ok(c, "CreateAccessPoint", ap);
    let mut p = serde_json::json!({"SyncType": 6, "Mode": mode, "SourceElement": "volume:test-lun0", "TargetAccessPoint": "accesspoint:peer", "RelationshipName": "dr", "WaitForCopyState": 4});
    if let Some(r) = recovery {
        p["ReplicationSettingData"] = serde_json::json!({"CopyRecoveryMode": r});
    }
    let r = ok(c, "CreateGroupReplica", p);
    let gsync = r.str("Synchronization").unwrap().to_owned();
    pairs(c, &gsync).remove(0)
}

/// A synchronous and then an asynchronous remote mirror to tgt: every write reaches tgt's
/// image file.
#[test]
fn remote_mirror_to_tgt() {
    use crate::replication::{login, pattern, write_ok};
    for (mode, name) in [(2u16, "sync"), (3, "async")] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("tgt.img");
        std::fs::write(&img, vec![0u8; 16 << 20]).unwrap();
        let t = Tgt::start(dir.path(), "iqn.2026-11.test:tgt", &img);
        let s = crate::replication::server(1, "16MiB", "");
        let mut i = login(&s);
        write_ok(&mut i, 0, 0, &pattern(4 << 20, 1));
        let mut c = s.admin();
        let pair = remote_mirror(
            &mut c,
            serde_json::json!({"Name": "peer", "Portal": t.addr.to_string(), "Target": t.iqn, "Lun": 1}),
            mode,
            None,
        );
        let inst = crate::replication::instance(&mut c, &pair);
        assert_eq!(inst["CopyState"], serde_json::json!(4), "{name}");
        for k in 0..8u32 {
            write_ok(&mut i, 0, k * 3000, &pattern(128 << 10, k as u8));
        }
        // Asynchronous: wait for the journal to drain.
        let t0 = std::time::Instant::now();
        while crate::replication::instance(&mut c, &pair)["IronLun_LagBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            assert!(t0.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(20));
        }
        let src = std::fs::read(s.path("lun0.img")).unwrap();
        let dst = std::fs::read(&img).unwrap();
        assert!(src == dst, "{name}: tgt's LUN differs from the source");
        let ap = crate::replication::instance(&mut c, "accesspoint:peer");
        assert_eq!(
            ap["IronLun_Target"],
            serde_json::json!("iqn.2026-11.test:tgt")
        );
        drop(t);
    }
}

/// The link to a remote target is cut during writes: the host's writes go on, the pair is
/// Partitioned and tracks them; when the link returns it resynchronizes exactly the changed
/// chunks, by itself (CopyRecoveryMode automatic) or on Resume (manual).
#[test]
fn a_cut_link_partitions_the_pair_and_resyncs_only_changed_chunks() {
    use crate::replication::{instance, login, ok, pattern, read, write_ok};
    for recovery in [2u16, 3] {
        let peer = crate::replication::server(1, "16MiB", "");
        let proxy = crate::proxy::Proxy::start(peer.addr());
        let s = crate::replication::server(1, "16MiB", "");
        let mut i = login(&s);
        let mut model = vec![0u8; 16 << 20];
        let base = pattern(2 << 20, 9);
        write_ok(&mut i, 0, 0, &base);
        model[..2 << 20].copy_from_slice(&base);
        let mut c = s.admin();
        let pair = remote_mirror(
            &mut c,
            serde_json::json!({"Name": "peer", "Portal": proxy.addr.to_string(), "Target": IQN, "Lun": 0, "InitiatorName": "iqn.2026-11.test:mirror"}),
            2,
            Some(recovery),
        );
        let peer_img = || std::fs::read(peer.path("lun0.img")).unwrap();
        assert!(peer_img() == model, "the initial copy");
        proxy.cut();
        // Writes to 5 chunks (64 KiB each) while the link is down: the host sees success.
        for (k, lba) in [4096u32, 4224, 9000, 20_000, 30_000]
            .into_iter()
            .enumerate()
        {
            let data = pattern(64 << 10, 40 + k as u8);
            write_ok(&mut i, 0, lba, &data);
            model[lba as usize * 512..lba as usize * 512 + data.len()].copy_from_slice(&data);
        }
        wait_state(&mut c, &pair, 16);
        let inst = instance(&mut c, &pair);
        let dirty = inst["IronLun_DirtyChunks"].as_u64().unwrap();
        assert!(
            (5..=10).contains(&dirty),
            "{dirty} chunks tracked for 5 writes"
        );
        assert_eq!(
            read(&mut i, 0, 4096, 128),
            model[4096 * 512..4096 * 512 + (64 << 10)]
        );
        proxy.restore();
        if recovery == 3 {
            wait_state(&mut c, &pair, 9);
            let gsync = inst["IronLun_GroupSynchronized"]
                .as_str()
                .unwrap()
                .to_owned();
            ok(
                &mut c,
                "ModifyReplicaSynchronization",
                serde_json::json!({"Operation": 16, "Synchronization": gsync}),
            );
        }
        wait_state(&mut c, &pair, 4);
        let inst = instance(&mut c, &pair);
        assert_eq!(
            inst["IronLun_ChunksCopied"].as_u64(),
            Some(dirty),
            "only the changed chunks were copied"
        );
        assert!(
            peer_img() == model,
            "the peer equals the model after the resync"
        );
        // And it follows again.
        let data = pattern(64 << 10, 99);
        write_ok(&mut i, 0, 100, &data);
        model[100 * 512..100 * 512 + data.len()].copy_from_slice(&data);
        assert!(peer_img() == model);
    }
}
