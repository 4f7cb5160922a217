//! Mirrors against memory and fault-injecting devices.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use blockdev::{BlockDevice, BlockErrorKind, MemDevice, after_ack};
use bytes::Bytes;

use crate::{
    al::ActivityLog,
    bitmap::{Bitmap, CHUNK},
    mirror::Mirror,
    testing::{FaultyDevice, new_mirror},
    types::{CopyState, Mode},
    volume::Volume,
};

const CHUNKS: u64 = 32;
const SIZE: u64 = CHUNKS * CHUNK;

fn pair(mode: Mode) -> (Arc<Volume>, Arc<Volume>, Arc<FaultyDevice>, Arc<Mirror>) {
    pair_with_id(mode, 1)
}

/// A pair with relationship id `id` (pairs sharing a journal need distinct ids).
fn pair_with_id(mode: Mode, id: u64) -> (Arc<Volume>, Arc<Volume>, Arc<FaultyDevice>, Arc<Mirror>) {
    let src = Volume::new("src", Arc::new(MemDevice::new(SIZE)));
    let faulty = FaultyDevice::new(Arc::new(MemDevice::new(SIZE)));
    let tgt = Volume::new("tgt", faulty.clone());
    let m = new_mirror(id, &src, &tgt, mode);
    (src, tgt, faulty, m)
}

fn w(v: &dyn BlockDevice, off: u64, len: usize, b: u8) -> blockdev::Result<()> {
    v.write_at(&[Bytes::from(vec![b; len])], off, false)
}

fn all(v: &dyn BlockDevice) -> Vec<u8> {
    let mut b = vec![0u8; v.size() as usize];
    v.read_at(&mut b, 0).unwrap();
    b
}

/// The scheduling policy of the thread named `name` in this process.
fn policy_of_thread(name: &str) -> Option<i32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|t| {
        let t = t.ok()?;
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        let tid = t.file_name().to_str()?.parse().ok()?;
        (comm.trim_end() == name).then(|| crate::sched::policy(tid))?
    })
}

/// Wait (up to 10 s) until `cond` holds.
fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sync_mirror_initial_copy_then_every_write() {
    let (src, tgt, _, m) = pair(Mode::Synchronous);
    w(&*src, 0, SIZE as usize, 1).unwrap();
    // Writes during the initial copy reach the target too.
    assert_eq!(m.resync(&|_, _| {}, &|| false).unwrap(), CHUNKS);
    assert_eq!(m.state(), CopyState::Synchronized);
    for i in 0..50u64 {
        w(&*src, (i * 7919) % (SIZE - 4096), 4096, i as u8).unwrap();
        assert_eq!(all(&**src.base()), all(&**tgt.base()), "after write {i}");
    }
    // The target refuses host writes while it follows.
    let err = w(&*tgt, 0, 512, 9).unwrap_err();
    assert_eq!(err.kind, BlockErrorKind::ReadOnly);
}

/// A small write to a synchronous mirror's source is copied to the target in memory, on the
/// host's path; a large one takes the path that may wait, where the target's copy runs on
/// a writer thread while the source is written. Both land on the target, and a failure of
/// the large one's target copy breaks the pair, not the host's write.
#[test]
fn a_large_sync_mirror_write_copies_to_the_target_alongside_the_source_write() {
    // Memory on both sides: every copy could be done in memory.
    let src = Volume::new("src", Arc::new(MemDevice::new(SIZE)));
    let tgt = Volume::new("tgt", Arc::new(MemDevice::new(SIZE)));
    let m = new_mirror(1, &src, &tgt, Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    let small = [Bytes::from(vec![1u8; 4096])];
    assert!(src.write_at_nowait(&small, 0, false).unwrap());
    let large = [Bytes::from(vec![2u8; 256 << 10])];
    assert!(
        !src.write_at_nowait(&large, CHUNK, false).unwrap(),
        "a large write takes the path that may wait"
    );
    src.write_at(&large, CHUNK, false).unwrap();
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
    assert_eq!(m.state(), CopyState::Synchronized);
    let (src, _, faulty, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    faulty.fail_writes.store(true, Ordering::Relaxed);
    src.write_at(&large, 8 * CHUNK, false).unwrap();
    assert_eq!(m.state(), CopyState::Broken);
    assert_eq!(m.dirty().0, 4, "the write's four chunks are tracked");
}

#[test]
fn failing_target_breaks_the_pair_and_the_host_keeps_writing() {
    let (src, tgt, faulty, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    faulty.fail_writes.store(true, Ordering::Relaxed);
    w(&*src, 3 * CHUNK, 100, 5).unwrap();
    w(&*src, 9 * CHUNK, 100, 6).unwrap();
    assert_eq!(m.state(), CopyState::Broken);
    assert_eq!(m.dirty().0, 2, "changed chunks are tracked");
    faulty.fail_writes.store(false, Ordering::Relaxed);
    assert_eq!(
        m.resync(&|_, _| {}, &|| false).unwrap(),
        2,
        "resync copies only the dirty chunks"
    );
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
}

#[test]
fn fracture_resync_and_restore_copy_only_changes() {
    let (src, tgt, _, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    m.stop_following(CopyState::Fractured);
    w(&*src, 0, 10, 1).unwrap();
    w(&*src, 5 * CHUNK, 10, 2).unwrap();
    w(&*tgt, 7 * CHUNK, 10, 3).unwrap(); // a fractured target may be written
    assert_eq!(m.dirty(), (2, 1));
    assert_eq!(m.resync(&|_, _| {}, &|| false).unwrap(), 3);
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
    // Restore: target changes go back to the source.
    m.stop_following(CopyState::Split);
    w(&*tgt, 11 * CHUNK, 10, 4).unwrap();
    w(&*src, 12 * CHUNK, 10, 5).unwrap();
    assert_eq!(m.restore_to_source(&|_, _| {}, &|| false).unwrap(), 2);
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
    assert_eq!(all(&**src.base())[(11 * CHUNK) as usize], 4);
    assert_eq!(
        all(&**src.base())[(12 * CHUNK) as usize],
        0,
        "source change undone"
    );
}

#[test]
fn failover_fences_the_source_and_failback_copies_back() {
    let (src, tgt, _, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    m.failover();
    assert_eq!(
        w(&*src, 0, 10, 1).unwrap_err().kind,
        BlockErrorKind::ReadOnly,
        "old primary fenced"
    );
    w(&*tgt, 2 * CHUNK, 10, 7).unwrap();
    assert_eq!(m.failback(&|_, _| {}).unwrap(), 1);
    assert_eq!(m.state(), CopyState::Synchronized);
    assert_eq!(all(&**src.base())[(2 * CHUNK) as usize], 7);
    w(&*src, 0, 10, 1).unwrap();
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
}

#[test]
fn reverse_roles_swaps_direction() {
    let (src, tgt, _, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    m.reverse();
    w(&*tgt, CHUNK, 100, 8).unwrap();
    assert_eq!(
        all(&**src.base())[CHUNK as usize],
        8,
        "the old target now replicates"
    );
    assert_eq!(
        w(&*src, 0, 1, 1).unwrap_err().kind,
        BlockErrorKind::ReadOnly
    );
}

#[test]
fn async_mirror_is_a_prefix_and_split_drains() {
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    assert_eq!(m.state(), CopyState::Synchronized);
    faulty.latency_us.store(2000, Ordering::Relaxed);
    // A sequence of writes, each recorded; the target must equal the source as it was after
    // some prefix of the sequence at every observation.
    let mut history = vec![all(&**src.base())];
    for i in 0..30u64 {
        if i % 5 == 4 {
            // Large: straight to the target when the journal is empty, else journaled.
            w(&*src, (16 + i % 4) * CHUNK, 256 << 10, i as u8 + 1).unwrap();
        } else {
            w(&*src, (i % 8) * CHUNK + i, 64, i as u8 + 1).unwrap();
        }
        history.push(all(&**src.base()));
        let t = all(&**tgt.base());
        assert!(history.contains(&t), "target is a prefix after write {i}");
    }
    faulty.latency_us.store(0, Ordering::Relaxed);
    m.split();
    assert_eq!(m.state(), CopyState::Split);
    assert_eq!(
        all(&**src.base()),
        all(&**tgt.base()),
        "split drains the journal"
    );
}

#[test]
fn async_shipper_sends_adjacent_writes_as_one() {
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    faulty.latency_us.store(200_000, Ordering::Relaxed);
    let before = faulty.writes.load(Ordering::Acquire);
    w(&*src, 20 * CHUNK, 512, 9).unwrap();
    // The shipper is inside the slow target write of the first entry...
    while faulty.writes.load(Ordering::Acquire) == before {
        std::thread::sleep(Duration::from_millis(1));
    }
    // ...while sixteen adjacent writes queue behind it.
    for i in 0..16u64 {
        w(&*src, 4 * CHUNK + i * 4096, 4096, i as u8 + 1).unwrap();
    }
    faulty.latency_us.store(0, Ordering::Relaxed);
    m.split();
    assert_eq!(all(&**src.base()), all(&**tgt.base()), "split drains");
    assert_eq!(
        faulty.writes.load(Ordering::Acquire) - before,
        2,
        "the first entry, then the sixteen queued ones as one vectored write"
    );
}

/// An asynchronous mirror's shipper runs in `SCHED_IDLE` (where it may come back) while its
/// journal is short, in the normal class once the journal holds a quarter of its bound, and
/// in `SCHED_IDLE` again once the journal is down to under an eighth.
#[test]
fn the_shipper_yields_the_cpu_until_its_journal_is_a_quarter_full() {
    const ID: u64 = 9071;
    let name = format!("journal-{ID}");
    let (src, tgt, faulty, m) = pair_with_id(Mode::Asynchronous, ID);
    m.set_max_lag(1 << 20);
    m.resync(&|_, _| {}, &|| false).unwrap();
    let background = if crate::sched::may_leave_idle() {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let shipped = || all(&**src.base()) == all(&**tgt.base());
    w(&*src, 0, 4096, 1).unwrap();
    until("the first write shipped", shipped);
    assert_eq!(policy_of_thread(&name), Some(background), "a short journal");

    // The shipper is inside a slow target write of one entry...
    faulty.latency_us.store(100_000, Ordering::Relaxed);
    let before = faulty.writes.load(Ordering::Acquire);
    w(&*src, CHUNK, 4096, 2).unwrap();
    until("the shipper took the entry", || {
        faulty.writes.load(Ordering::Acquire) > before
    });
    // ...while 320 KiB queue behind it, over a quarter of the 1 MiB bound: the next batch
    // is shipped in the normal class.
    for i in 0..5u64 {
        w(&*src, (4 + i) * CHUNK, CHUNK as usize, 3 + i as u8).unwrap();
    }
    until("the shipper took the backlog", || {
        faulty.writes.load(Ordering::Acquire) > before + 1
    });
    assert_eq!(
        policy_of_thread(&name),
        Some(libc::SCHED_OTHER),
        "a backlog"
    );
    faulty.latency_us.store(0, Ordering::Relaxed);
    until("the backlog shipped", shipped);

    w(&*src, 2 * CHUNK, 4096, 9).unwrap();
    until("the last write shipped", shipped);
    assert_eq!(
        policy_of_thread(&name),
        Some(background),
        "a short journal again"
    );
    m.split();
}

/// Two pairs on one journal (a consistent group) stop one after the other at a cut: with
/// the journal held, the second target does not move while the first pair leaves.
#[test]
fn a_held_group_journal_ships_nothing_while_its_pairs_leave() {
    let (src_a, tgt_a, slow_a, a) = pair_with_id(Mode::Asynchronous, 1);
    let (src_b, tgt_b, slow_b, b) = pair_with_id(Mode::Asynchronous, 2);
    a.resync(&|_, _| {}, &|| false).unwrap();
    b.resync(&|_, _| {}, &|| false).unwrap();
    let g = crate::mirror::JournalGroup::new(64 << 20);
    a.switch_journal(Some(g.clone()));
    b.switch_journal(Some(g));
    for d in [&slow_a, &slow_b] {
        d.latency_us.store(1000, Ordering::Relaxed);
    }
    for i in 0..24u64 {
        w(&*src_a, i * CHUNK, 512, 1 + i as u8).unwrap();
        w(&*src_b, i * CHUNK, 512, 1 + i as u8).unwrap();
    }
    let shipped = |t: &Volume| {
        let img = all(&**t.base());
        (0..24u64)
            .take_while(|&i| img[(i * CHUNK) as usize] != 0)
            .count()
    };
    let held = a.hold_journal().expect("a journal");
    let before_b = shipped(&tgt_b);
    a.stop_following(CopyState::Fractured);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        shipped(&tgt_b),
        before_b,
        "the held journal shipped nothing of B while A left"
    );
    b.stop_following(CopyState::Fractured);
    held.release();
    assert!(shipped(&tgt_b) <= shipped(&tgt_a), "B never ahead of A");
}

/// An asynchronous pair writes a large write straight to its target, alongside the source
/// write, while its journal is empty: the target has it when the host's write returns, and
/// nothing is journaled. Behind a journaled write, during a hold, to a remote target and
/// after a straight write that kept the host waiting, large writes are journaled.
#[test]
fn a_large_write_to_an_idle_asynchronous_pair_goes_straight_to_its_target() {
    // Target writes this slow (1 s) mean a write journaled behind them is not on the target
    // yet when it is looked at, however long the test's thread waits for a CPU meanwhile.
    const SLOW_US: u64 = 1_000_000;
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    const LARGE: usize = 256 << 10;
    let large = |b: u8| [Bytes::from(vec![b; LARGE])];
    let on_target = |off: u64| all(&**tgt.base())[off as usize..][..LARGE].to_vec();
    let drained = || {
        assert!(m.drain(Duration::from_secs(10)));
        assert_eq!(all(&**src.base()), all(&**tgt.base()));
    };

    assert!(
        !src.write_at_nowait(&large(1), 0, false).unwrap(),
        "a large write takes the path that may wait"
    );
    src.write_at(&large(1), 0, false).unwrap();
    assert_eq!(on_target(0), vec![1; LARGE], "on the target at once");
    assert_eq!(m.lag().0, 0, "nothing journaled");

    // Behind a small write the shipper is applying (slowly): journaled, in order.
    faulty.latency_us.store(SLOW_US, Ordering::Relaxed);
    let before = faulty.writes.load(Ordering::Acquire);
    w(&*src, 8 * CHUNK, 4096, 2).unwrap();
    until("the shipper took the small write", || {
        faulty.writes.load(Ordering::Acquire) > before
    });
    src.write_at(&large(3), 12 * CHUNK, false).unwrap();
    assert_eq!(on_target(12 * CHUNK), vec![0; LARGE], "journaled");
    assert!(m.lag().0 >= LARGE as u64);
    faulty.latency_us.store(0, Ordering::Relaxed);
    drained();

    // During a hold (a consistent cut), no target moves: journaled.
    let held = m.hold_journal().expect("a journal");
    src.write_at(&large(4), 16 * CHUNK, false).unwrap();
    assert_eq!(
        on_target(16 * CHUNK),
        vec![0; LARGE],
        "journaled while held"
    );
    held.release();
    drained();

    // A remote target: journaled, so the host never waits for the link.
    faulty.remote.store(true, Ordering::Relaxed);
    faulty.latency_us.store(SLOW_US, Ordering::Relaxed);
    src.write_at(&large(5), 20 * CHUNK, false).unwrap();
    assert_eq!(
        on_target(20 * CHUNK),
        vec![0; LARGE],
        "journaled for a remote target"
    );
    faulty.remote.store(false, Ordering::Relaxed);
    faulty.latency_us.store(0, Ordering::Relaxed);
    drained();
    assert_eq!(m.state(), CopyState::Synchronized);

    // A local target that keeps the host waiting (here 1 s): that write lands, and the
    // next large write is journaled. (A fresh pair: on a loaded machine, one of the writes
    // above may have waited long enough to journal this pair's for a second.)
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    let on_target = |off: u64| all(&**tgt.base())[off as usize..][..LARGE].to_vec();
    faulty.latency_us.store(SLOW_US, Ordering::Relaxed);
    src.write_at(&large(6), 24 * CHUNK, false).unwrap();
    assert_eq!(on_target(24 * CHUNK), vec![6; LARGE], "straight, slowly");
    src.write_at(&large(7), 28 * CHUNK, false).unwrap();
    assert_eq!(
        on_target(28 * CHUNK),
        vec![0; LARGE],
        "journaled after a slow one"
    );
    faulty.latency_us.store(0, Ordering::Relaxed);
    assert!(m.drain(Duration::from_secs(10)));
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
}

/// An asynchronous pair copies a small write straight into its target before the source
/// write, as a synchronous pair does, while its journal is empty and the copy needs nothing
/// but memory: on the target when the host's write returns, nothing journaled. During a
/// hold, or to a target that cannot take it without waiting, it is journaled.
#[test]
fn a_small_write_to_an_idle_asynchronous_pair_is_copied_straight_into_its_target() {
    small_writes_reach_an_idle_asynchronous_target(false);
}

/// Where writes are answered on the thread that makes them (an iSCSI connection's, inside
/// a `blockdev::after_ack` scope), an asynchronous pair's small writes are journaled and
/// left for after the answer, when that thread ships them: on the target once it has. During
/// a hold, or to a target that cannot take them in memory, they are left to the shipper.
#[test]
fn a_small_write_answered_where_it_is_made_is_shipped_after_its_answer() {
    small_writes_reach_an_idle_asynchronous_target(true);
}

/// The two tests above: small writes made without waiting, `answered` where they are
/// answered (the work they leave is run as the connection runs it, after the answer).
fn small_writes_reach_an_idle_asynchronous_target(answered: bool) {
    const SLOW_US: u64 = 1_000_000;
    let small = |b: u8| [Bytes::from(vec![b; 4096])];
    let write = |vol: &Volume, b: u8, off: u64| {
        let scope = answered.then(after_ack::scope);
        assert!(vol.write_at_nowait(&small(b), off, false).unwrap());
        let left = scope.map_or_else(after_ack::take, after_ack::Scope::take);
        assert_eq!(left.is_empty(), !answered, "work left for after the answer");
        left.run();
    };
    let src = Volume::new("src", Arc::new(MemDevice::new(SIZE)));
    let tgt = Volume::new("tgt", Arc::new(MemDevice::new(SIZE)));
    let m = new_mirror(1, &src, &tgt, Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    let on_target = |off: u64| all(&**tgt.base())[off as usize..][..4096].to_vec();
    write(&src, 1, 0);
    assert_eq!(on_target(0), vec![1; 4096], "on the target at once");
    src.write_at(&small(2), CHUNK, false).unwrap();
    assert_eq!(
        on_target(CHUNK),
        vec![2; 4096],
        "by the path that may wait too"
    );
    assert_eq!(m.lag().0, 0, "nothing left in the journal");

    let held = m.hold_journal().expect("a journal");
    write(&src, 3, 2 * CHUNK);
    assert_eq!(on_target(2 * CHUNK), vec![0; 4096], "journaled while held");
    assert_eq!(m.lag().0, 4096);
    held.release();
    assert!(m.drain(Duration::from_secs(10)));
    assert_eq!(all(&**src.base()), all(&**tgt.base()));

    // A target that never takes a write without waiting (and slow, so that the shipper
    // cannot have applied the write when it is looked at): journaled, the shipper's.
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    faulty.latency_us.store(SLOW_US, Ordering::Relaxed);
    write(&src, 4, 0);
    assert_eq!(&all(&**tgt.base())[..4096], &[0; 4096], "journaled");
    assert_eq!(m.lag().0, 4096);
    faulty.latency_us.store(0, Ordering::Relaxed);
    assert!(m.drain(Duration::from_secs(10)));
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
}

/// An asynchronous target that fails: the host's writes succeed, the shipper breaks the
/// pair, and every write not applied is tracked, resynchronized once the target is back. The
/// first write is large, so it goes straight to the target and fails there: it is journaled
/// like the others, not failed.
#[test]
fn failing_async_target_breaks_the_pair_and_unshipped_writes_resync() {
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    faulty.fail_writes.store(true, Ordering::Relaxed);
    w(&*src, 16 * CHUNK, 256 << 10, 16).unwrap();
    for c in [2, 3, 11] {
        w(&*src, c * CHUNK + 100, 300, c as u8).unwrap();
    }
    until("the shipper broke the pair", || {
        m.state() == CopyState::Broken
    });
    assert_eq!(m.state(), CopyState::Broken, "the shipper broke the pair");
    assert_eq!(m.dirty().0, 7, "every unshipped write's chunk is tracked");
    w(&*src, 7 * CHUNK, 100, 7).unwrap();
    assert_eq!(m.dirty().0, 8, "the host keeps writing, tracked");
    faulty.fail_writes.store(false, Ordering::Relaxed);
    assert_eq!(m.resync(&|_, _| {}, &|| false).unwrap(), 8);
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
}

#[test]
fn async_journal_overflow_falls_back_to_tracking() {
    let (src, tgt, faulty, m) = pair(Mode::Asynchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    faulty.latency_us.store(50_000, Ordering::Relaxed);
    // 64 MiB journal: write more than that quickly.
    for i in 0..80u64 {
        w(&*src, (i % CHUNKS) * CHUNK, 1 << 20 >> 4, i as u8).unwrap();
    }
    let big = Bytes::from(vec![0xabu8; SIZE as usize]);
    for _ in 0..40 {
        src.write_at(std::slice::from_ref(&big), 0, false).unwrap();
    }
    assert_eq!(m.state(), CopyState::Unsynchronized, "overflow: tracking");
    faulty.latency_us.store(0, Ordering::Relaxed);
    m.resync(&|_, _| {}, &|| false).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(m.state(), CopyState::Synchronized);
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
}

#[test]
fn activity_log_bounds_crash_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _tgt, _, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    let (al, _) = ActivityLog::open(&dir.path().join("al"), 16).unwrap();
    m.set_activity_logs(Some(Arc::new(al)), None);
    w(&*src, 3 * CHUNK, 10, 1).unwrap();
    // "Crash": reopen the log and mark what it covers.
    let (_, extents) = ActivityLog::open(&dir.path().join("al"), 16).unwrap();
    assert_eq!(extents, vec![0]);
    let src2 = Volume::new("src", Arc::new(MemDevice::new(SIZE)));
    let tgt2 = Volume::new("tgt", Arc::new(MemDevice::new(SIZE)));
    let m2 = Mirror::new(
        3,
        src2,
        tgt2,
        Mode::Synchronous,
        CopyState::Synchronized,
        Bitmap::new(CHUNKS),
        Bitmap::new(CHUNKS),
        None,
    );
    m2.recover_extents(&extents);
    assert_eq!(
        m2.dirty().0,
        CHUNKS,
        "one 4 MiB extent covers this 2 MiB volume"
    );
}

/// Concurrent overlapping writes land in the same order on the source and the target (a
/// synchronous mirror applies target writes on several threads, and so does an asynchronous
/// one for large writes while its journal is empty; the volume orders overlapping writes).
#[test]
fn overlapping_concurrent_writes_keep_source_and_target_equal() {
    for mode in [Mode::Synchronous, Mode::Asynchronous] {
        let (src, tgt, faulty, m) = pair(mode);
        m.resync(&|_, _| {}, &|| false).unwrap();
        faulty.latency_us.store(50, Ordering::Relaxed);
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let src = src.clone();
                std::thread::spawn(move || {
                    for k in 0..60u64 {
                        let b = t.wrapping_mul(60).wrapping_add(k as u8);
                        if k % 10 == 9 {
                            // Large (an asynchronous pair's may go straight to the target).
                            w(&*src, ((k + u64::from(t)) % 4) * 4096, 256 << 10, b).unwrap();
                        } else {
                            let off = ((k * 7 + u64::from(t) * 3) % 16) * 512;
                            w(&*src, off, 4096, b).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(m.drain(Duration::from_secs(10)));
        assert_eq!(all(&**src.base()), all(&**tgt.base()), "{mode:?}");
    }
}

/// Writes that must not wait: done on both sides when both are memory, refused (nothing to
/// redo beyond the write itself) when the target cannot take them or the activity log needs
/// a record, and the pair stays equal through a mix of both paths.
#[test]
fn writes_that_must_not_wait_reach_the_target_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = Volume::new("src", Arc::new(MemDevice::new(SIZE)));
    let tgt = Volume::new("tgt", Arc::new(MemDevice::new(SIZE)));
    let m = new_mirror(4, &src, &tgt, Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    let nowait = |off: u64, b: u8| {
        src.write_at_nowait(&[Bytes::from(vec![b; 4096])], off, false)
            .unwrap()
    };
    assert!(nowait(CHUNK, 1));
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
    assert_eq!(&all(&**tgt.base())[CHUNK as usize..][..4096], &[1u8; 4096]);
    // With an activity log, a write to an extent not yet logged needs a durable record.
    let (al, _) = ActivityLog::open(&dir.path().join("al"), 16).unwrap();
    m.set_activity_logs(Some(Arc::new(al)), None);
    assert!(!nowait(2 * CHUNK, 2));
    w(&*src, 2 * CHUNK, 10, 3).unwrap();
    assert!(nowait(2 * CHUNK, 4), "the extent is logged now");
    assert_eq!(all(&**src.base()), all(&**tgt.base()));
    // A fractured pair copies nothing: the write is tracked instead.
    m.stop_following(CopyState::Fractured);
    assert!(nowait(5 * CHUNK, 5));
    assert_eq!(m.dirty().0, 1, "the change is tracked for the resync");
    assert_ne!(all(&**src.base()), all(&**tgt.base()));

    // A target that cannot take a write without waiting: refused.
    let (src, _tgt, _, m) = pair(Mode::Synchronous);
    m.resync(&|_, _| {}, &|| false).unwrap();
    assert!(
        !src.write_at_nowait(&[Bytes::from(vec![7u8; 512])], 0, false)
            .unwrap()
    );
}
