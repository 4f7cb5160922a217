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
