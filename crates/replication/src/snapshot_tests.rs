//! Snapshots and clones against memory devices: bytes compared with what was written.

use std::sync::Arc;

use blockdev::{BlockDevice, MemDevice};
use bytes::Bytes;

use crate::{
    bitmap::CHUNK,
    clone::{Clone, Phase},
    pool::Pool,
    snapshot::{Broken, Snapshot},
    volume::{Volume, WriteHook, run_restore},
};

const SIZE: u64 = 16 * CHUNK;

fn volume() -> Arc<Volume> {
    Volume::new("v", Arc::new(MemDevice::new(SIZE)))
}

fn fill(v: &Volume, off: u64, len: usize, byte: u8) {
    v.write_at(&[Bytes::from(vec![byte; len])], off, false)
        .unwrap();
}

fn read(dev: &dyn BlockDevice, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    dev.read_at(&mut b, off).unwrap();
    b
}

fn snapshot(v: &Arc<Volume>, dir: &std::path::Path, name: &str, pool: &Arc<Pool>) -> Arc<Snapshot> {
    let store: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(SIZE));
    let s = Snapshot::open(v, store, &dir.join(name), pool.clone(), false).unwrap();
    let _q = v.quiesce();
    v.add_hook(s.clone());
    s
}

#[test]
fn snapshot_keeps_the_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    fill(&v, 0, SIZE as usize, b'a');
    let s = snapshot(&v, dir.path(), "s1", &pool);
    // Overwrite part of chunk 2 and all of chunk 5.
    fill(&v, 2 * CHUNK + 100, 1000, b'b');
    fill(&v, 5 * CHUNK, CHUNK as usize, b'c');
    let view = s.view();
    assert!(read(&*view, 0, SIZE as usize).iter().all(|&x| x == b'a'));
    v.flush().unwrap();
    // Saved: the one block the first write touched, the 16 blocks of chunk 5.
    assert_eq!(s.block_size(), 4096);
    assert_eq!(
        s.saved_blocks(),
        17,
        "only the first write to each block copies it"
    );
    assert_eq!(pool.used(), 17 * 4096);
    fill(&v, 2 * CHUNK, 10, b'd');
    v.flush().unwrap();
    assert_eq!(s.saved_blocks(), 17);
    assert_eq!(read(&*v, 2 * CHUNK, 1)[0], b'd');
    // A second snapshot sees the new data.
    let s2 = snapshot(&v, dir.path(), "s2", &pool);
    fill(&v, 2 * CHUNK, 10, b'e');
    assert_eq!(read(&*s2.view(), 2 * CHUNK, 1)[0], b'd');
    assert_eq!(read(&*s.view(), 2 * CHUNK, 1)[0], b'a');
    assert!(
        view.write_at(&[Bytes::from_static(b"x")], 0, false)
            .is_err(),
        "read-only by default"
    );
}

#[test]
fn snapshot_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    fill(&v, 0, SIZE as usize, 1);
    let store: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(SIZE));
    let s = Snapshot::open(&v, store.clone(), &dir.path().join("s"), pool, false).unwrap();
    v.add_hook(s.clone());
    fill(&v, 3 * CHUNK, 5, 2);
    let h: Arc<dyn WriteHook> = s.clone();
    {
        let _q = v.quiesce();
        v.remove_hook(&h);
    }
    drop(s);
    // Reopened from its map (as after a restart, with a fresh pool): the block is still
    // served from the store, and charged to the pool again.
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let s = Snapshot::open(&v, store, &dir.path().join("s"), pool.clone(), false).unwrap();
    assert_eq!(s.saved_blocks(), 1);
    assert_eq!(pool.used(), 4096);
    assert!(read(&*s.view(), 3 * CHUNK, 10).iter().all(|&x| x == 1));
}

#[test]
fn full_pool_breaks_the_snapshot_not_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    // Room for two saved blocks.
    let pool = Arc::new(Pool::new("p", dir.path(), 2 * 4096).unwrap());
    let v = volume();
    let s = snapshot(&v, dir.path(), "s", &pool);
    fill(&v, 0, 10, 1);
    fill(&v, CHUNK, 10, 1);
    v.flush().unwrap();
    assert!(s.broken().is_none());
    fill(&v, 2 * CHUNK, 10, 1);
    v.flush().unwrap();
    assert_eq!(s.broken(), Some(Broken::NoSpace));
    fill(&v, 3 * CHUNK, 10, 7);
    assert_eq!(read(&*v, 3 * CHUNK, 1)[0], 7, "origin writes go on");
    assert!(
        s.view().read_at(&mut [0u8; 8], 0).is_err(),
        "a broken snapshot is not readable"
    );
}

#[test]
fn restore_from_snapshot_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    fill(&v, 0, SIZE as usize, b'a');
    let s = snapshot(&v, dir.path(), "s", &pool);
    for c in [1, 4, 9] {
        fill(&v, c * CHUNK, 100, b'z');
    }
    // As the service installs a restore: the chunks to bring back are taken from a
    // quiescent origin.
    let src = {
        let _q = v.quiesce();
        let src = s.restore_source();
        v.set_restore(Some(src.clone()));
        src
    };
    // Reads of pending chunks already show the snapshot.
    assert_eq!(read(&*v, 4 * CHUNK, 1)[0], b'a');
    // A write during the restore lands on restored data.
    fill(&v, 9 * CHUNK + 50, 10, b'w');
    let n = run_restore(&v, &*src, &|_, _| {}, &|| false).unwrap();
    assert_eq!(n, 2, "chunk 9 was brought back by the write");
    v.set_restore(None);
    let data = read(&*v, 0, SIZE as usize);
    for (i, &b) in data.iter().enumerate() {
        let want = if (9 * CHUNK as usize + 50..9 * CHUNK as usize + 60).contains(&i) {
            b'w'
        } else {
            b'a'
        };
        assert_eq!(b, want, "byte {i}");
    }
}

#[test]
fn a_snapshot_of_an_earlier_version_is_converted_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    fill(&v, 0, SIZE as usize, b'a');
    // As an earlier version left a snapshot: chunk 3 saved at its own offset in the store
    // (the cut's data, 'o'), its number in the chunk log, the origin changed since.
    let store: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(SIZE));
    store
        .write_at(&[Bytes::from(vec![b'o'; CHUNK as usize])], 3 * CHUNK, false)
        .unwrap();
    let legacy = dir.path().join("s");
    {
        let (log, _) = crate::bitmap::ChunkLog::open(&legacy, 16).unwrap();
        let g = log.append(&[3]).unwrap();
        log.sync(g, &|| Ok(())).unwrap();
    }
    let s = Snapshot::open(&v, store.clone(), &legacy, pool.clone(), false).unwrap();
    {
        let _q = v.quiesce();
        v.add_hook(s.clone());
    }
    assert!(!legacy.exists() && dir.path().join("s.map").exists());
    assert_eq!((s.block_size(), s.saved_blocks()), (CHUNK, 1));
    assert_eq!(pool.used(), CHUNK);
    assert_eq!(
        read(&*s.view(), 3 * CHUNK, CHUNK as usize),
        vec![b'o'; CHUNK as usize]
    );
    // A first write after the upgrade saves its chunk at its own offset, as before.
    fill(&v, 6 * CHUNK + 10, 10, b'x');
    v.flush().unwrap();
    assert_eq!(
        read(&*store, 6 * CHUNK, CHUNK as usize),
        vec![b'a'; CHUNK as usize]
    );
    assert_eq!(
        read(&*s.view(), 6 * CHUNK, CHUNK as usize),
        vec![b'a'; CHUNK as usize]
    );
    // A new point in time takes the current layout.
    {
        let _q = v.quiesce();
        s.retake().unwrap();
    }
    assert_eq!(
        (s.block_size(), s.saved_blocks(), pool.used()),
        (4096, 0, 0)
    );
    fill(&v, 9 * CHUNK, 10, b'y');
    v.flush().unwrap();
    assert_eq!(s.store_offset(9 * CHUNK), Some(0));
    assert_eq!(read(&*s.view(), 9 * CHUNK, 4096), vec![b'a'; 4096]);
}

#[test]
fn an_origin_that_ends_inside_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let size = 3 * CHUNK - 512;
    let v = Volume::new("v", Arc::new(MemDevice::new(size)));
    fill(&v, 0, size as usize, b'a');
    let store: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(crate::snapmap::store_size(size)));
    let s = Snapshot::open(&v, store, &dir.path().join("s"), pool, false).unwrap();
    {
        let _q = v.quiesce();
        v.add_hook(s.clone());
    }
    // The last block (3584 bytes) first, then one before it: the last block's slot is not
    // at the end of the store.
    fill(&v, size - 512, 512, b'z');
    fill(&v, CHUNK, 4096, b'z');
    v.flush().unwrap();
    assert_eq!(s.saved_blocks(), 2);
    assert!(
        read(&*s.view(), 0, size as usize)
            .iter()
            .all(|&x| x == b'a')
    );
    assert_eq!(read(&*v, size - 512, 512), vec![b'z'; 512]);
    let small: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(size));
    assert!(
        Snapshot::open(
            &v,
            small,
            &dir.path().join("t"),
            Arc::new(Pool::new("q", dir.path(), 0).unwrap()),
            false
        )
        .is_err(),
        "a store without room for whole blocks is refused"
    );
}

#[test]
fn clone_copies_the_point_in_time_while_the_origin_changes() {
    let dir = tempfile::tempdir().unwrap();
    let v = volume();
    for c in 0..16u64 {
        fill(&v, c * CHUNK, CHUNK as usize, c as u8);
    }
    let target: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(SIZE));
    let k = Clone::open(&v, target.clone(), &dir.path().join("k"), false).unwrap();
    {
        let _q = v.quiesce();
        v.add_hook(k.clone());
    }
    // Writes before the background copy reaches these chunks.
    fill(&v, 7 * CHUNK, 10, 0xee);
    fill(&v, 15 * CHUNK, CHUNK as usize, 0xff);
    // The clone view already shows the point in time.
    assert_eq!(read(&*k.view(), 7 * CHUNK, 1)[0], 7);
    let copied = k.run_copy(&|_, _| {}, &|| false).unwrap();
    assert_eq!(copied, 14, "two chunks were copied before the writes");
    assert_eq!(k.phase(), Phase::Complete);
    for c in 0..16u64 {
        assert!(
            read(&*target, c * CHUNK, CHUNK as usize)
                .iter()
                .all(|&x| x == c as u8),
            "chunk {c}"
        );
    }
    // Incremental resync to a new point in time: only the chunks changed since the first
    // one (7 and 15 during the copy, 3 after it) are copied again.
    fill(&v, 3 * CHUNK, 1, 0x33);
    assert_eq!(k.retake().unwrap(), 3);
    assert_eq!(k.run_copy(&|_, _| {}, &|| false).unwrap(), 3);
    assert_eq!(read(&*target, 3 * CHUNK, 1)[0], 0x33);
    assert_eq!(read(&*target, 7 * CHUNK, 1)[0], 0xee);
    assert_eq!(read(&*target, 15 * CHUNK, 1)[0], 0xff);
}

#[test]
fn clone_restore_copies_back_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let v = volume();
    fill(&v, 0, SIZE as usize, 1);
    let target: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(SIZE));
    let k = Clone::open(&v, target, &dir.path().join("k"), false).unwrap();
    v.add_hook(k.clone());
    k.run_copy(&|_, _| {}, &|| false).unwrap();
    fill(&v, 2 * CHUNK, 10, 9);
    k.view()
        .write_at(&[Bytes::from_static(&[8; 4])], 6 * CHUNK, false)
        .unwrap();
    let src = k.restore_source();
    assert_eq!(src.remaining(), 2);
    v.set_restore(Some(src.clone()));
    run_restore(&v, &*src, &|_, _| {}, &|| false).unwrap();
    v.set_restore(None);
    assert_eq!(read(&*v, 2 * CHUNK, 1)[0], 1);
    assert_eq!(read(&*v, 6 * CHUNK, 4), vec![8; 4]);
}

#[test]
fn writes_that_must_not_wait_leave_volumes_with_relationships_to_the_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    fill(&v, 0, SIZE as usize, b'a');
    // No relationship: written in place.
    let b = [Bytes::from(vec![b'x'; 4096])];
    assert!(v.write_at_nowait(&b, CHUNK, false).unwrap());
    assert_eq!(read(&*v, CHUNK, 4096), vec![b'x'; 4096]);
    // A snapshot must save the chunk first, durably: a FUA write cannot be done without
    // waiting, so it is refused with nothing written.
    let s = snapshot(&v, dir.path(), "s1", &pool);
    let b = [Bytes::from(vec![b'y'; 4096])];
    assert!(!v.write_at_nowait(&b, 3 * CHUNK, true).unwrap());
    assert_eq!(read(&*v, 3 * CHUNK, 4096), vec![b'a'; 4096]);
    assert_eq!(s.saved_blocks(), 0);
    // Without FUA it is held in the volume's write cache: reads see it at once, the
    // snapshot still reads the cut, and a flush applies it once the chunk is saved.
    let z = [Bytes::from(vec![b'z'; 100])];
    assert!(v.write_at_nowait(&z, 3 * CHUNK, false).unwrap());
    assert_eq!(read(&*v, 3 * CHUNK, 1), vec![b'z']);
    assert_eq!(read(&*s.view(), 3 * CHUNK, 4096), vec![b'a'; 4096]);
    v.flush().unwrap();
    assert_eq!(s.saved_blocks(), 1);
    assert_eq!(read(&**v.base(), 3 * CHUNK, 1), vec![b'z']);
    // Once the chunk is preserved, an overwrite needs nothing but memory.
    assert!(v.write_at_nowait(&b, 3 * CHUNK, false).unwrap());
    assert_eq!(read(&**v.base(), 3 * CHUNK, 4096), vec![b'y'; 4096]);
    assert_eq!(read(&*s.view(), 3 * CHUNK, 4096), vec![b'a'; 4096]);
    // While a point in time is being cut, writes wait for it: refused too.
    drop(s);
    let v2 = volume();
    let q = v2.quiesce();
    assert!(!v2.write_at_nowait(&b, 0, false).unwrap());
    drop(q);
    assert!(v2.write_at_nowait(&b, 0, false).unwrap());
    assert_eq!(read(&*v2, 0, 4096), vec![b'y'; 4096]);
    // Out of range is an error, not a refusal.
    assert!(v2.write_at_nowait(&b, SIZE - 100, false).is_err());
}

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Host writes to the origin (held, FUA, through the direct path) race host writes to the
/// same blocks of a writable snapshot, four pairs of writers at once. Afterwards, and after
/// the snapshot is reopened from its map, the origin holds exactly the origin writes and
/// the snapshot exactly the cut plus the snapshot writes.
#[test]
fn origin_and_snapshot_writers_racing_on_the_same_blocks() {
    const REGION: u64 = 4 * CHUNK;
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    let cut: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    v.write_at(&[Bytes::from(cut.clone())], 0, false).unwrap();
    let store: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(SIZE));
    let s = Snapshot::open(&v, store.clone(), &dir.path().join("s"), pool.clone(), true).unwrap();
    {
        let _q = v.quiesce();
        v.add_hook(s.clone());
    }
    let view = s.view();
    let mut origin_want = cut.clone();
    let mut snap_want = cut;
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for k in 0..(SIZE / REGION) {
            for on_snapshot in [false, true] {
                let dev: Arc<dyn BlockDevice> = if on_snapshot { view.clone() } else { v.clone() };
                handles.push((
                    k,
                    on_snapshot,
                    scope.spawn(move || {
                        let mut rng =
                            Rng(0x9e37_79b9_7f4a_7c15 ^ (k * 2 + u64::from(on_snapshot) + 1));
                        let mut done = Vec::new();
                        for i in 0..150u64 {
                            let len = 1 + rng.below(3 * 4096);
                            let off = k * REGION + rng.below(REGION - len);
                            let fua = rng.below(4) == 0;
                            let byte = (i % 200) as u8 + 1 + u8::from(on_snapshot) * 50;
                            dev.write_at(&[Bytes::from(vec![byte; len as usize])], off, fua)
                                .unwrap();
                            done.push((off, len, byte));
                        }
                        done
                    }),
                ));
            }
        }
        for (_, on_snapshot, h) in handles {
            let want = if on_snapshot {
                &mut snap_want
            } else {
                &mut origin_want
            };
            for (off, len, byte) in h.join().unwrap() {
                want[off as usize..(off + len) as usize].fill(byte);
            }
        }
    });
    v.flush().unwrap();
    assert!(s.broken().is_none());
    assert_same(&read(&*v, 0, SIZE as usize), &origin_want, "origin");
    assert_same(&read(&*view, 0, SIZE as usize), &snap_want, "snapshot");
    assert_eq!(
        pool.used(),
        s.saved_blocks() * s.block_size(),
        "each saved block charged once"
    );
    // Reopened from its map, as after a restart.
    let h: Arc<dyn WriteHook> = s.clone();
    {
        let _q = v.quiesce();
        v.remove_hook(&h);
    }
    drop((h, view, s));
    let again = Snapshot::open(&v, store, &dir.path().join("s"), pool, true).unwrap();
    assert_same(
        &read(&*again.view(), 0, SIZE as usize),
        &snap_want,
        "reopened snapshot",
    );
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} (chunk {}): got {}, want {}",
            i as u64 / CHUNK,
            got[i],
            want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}");
}

/// A store whose next flush, once armed, waits for the test and then fails.
#[derive(Debug)]
struct GatedStore {
    inner: MemDevice,
    armed: std::sync::atomic::AtomicBool,
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl BlockDevice for GatedStore {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        self.inner.write_at(bufs, offset, fua)
    }

    fn flush(&self) -> blockdev::Result<()> {
        if self.armed.swap(false, std::sync::atomic::Ordering::AcqRel) {
            let _ = self.entered.send(());
            let _ = self.release.lock().unwrap().recv();
            return Err(blockdev::BlockError::new(
                blockdev::BlockErrorKind::Io,
                "injected: flush failed",
            ));
        }
        self.inner.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.inner.discard(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> blockdev::Result<()> {
        self.inner.write_zeroes(offset, len, fua)
    }

    fn allocation(&self, offset: u64, len: u64) -> blockdev::Result<Vec<blockdev::Extent>> {
        self.inner.allocation(offset, len)
    }
}

#[test]
fn a_failed_batch_keeps_the_charge_of_a_block_another_saver_committed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::new("p", dir.path(), 0).unwrap());
    let v = volume();
    fill(&v, 0, SIZE as usize, 0x11);
    let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::channel();
    let store = Arc::new(GatedStore {
        inner: MemDevice::new(SIZE),
        armed: std::sync::atomic::AtomicBool::new(false),
        entered: entered_tx,
        release: std::sync::Mutex::new(release_rx),
    });
    let s = Snapshot::open(&v, store.clone(), &dir.path().join("s"), pool.clone(), true).unwrap();
    {
        let _q = v.quiesce();
        v.add_hook(s.clone());
    }
    let view = s.view();
    let block = s.block_size() as usize;
    // A held first write: its batch copies the block, then waits in the store's flush.
    store
        .armed
        .store(true, std::sync::atomic::Ordering::Release);
    fill(&v, 0, block, 0x22);
    entered
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the batch reaches its commit");
    // Meanwhile a write to the snapshot finds the block copied, commits it and writes it.
    view.write_at(&[Bytes::from(vec![0x33; block])], 0, false)
        .unwrap();
    assert_eq!(s.saved_blocks(), 1);
    // The batch's commit fails now: the snapshot breaks, the block stays saved.
    release.send(()).unwrap();
    v.flush().unwrap();
    assert!(s.broken().is_some(), "a failed commit breaks the snapshot");
    assert_eq!(
        read(&*v, 0, block),
        vec![0x22; block],
        "the origin took the write"
    );
    assert_eq!(s.saved_blocks(), 1);
    assert_eq!(
        pool.used(),
        s.saved_blocks() * s.block_size(),
        "the saved block is still charged"
    );
}
