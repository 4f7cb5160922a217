//! Restarts and crashes: relationships, bitmaps, activity logs and running restores across
//! a clean stop, a restart and a simulated crash.

use super::*;

#[test]
fn relationships_survive_a_clean_restart() {
    let mut rig = Rig::new(&[("a", 2 * MIB), ("b", 2 * MIB)]);
    rig.write("a", 0, (2 * MIB) as usize, 1);
    rig.write("b", 0, (2 * MIB) as usize, 2);
    let snap = rig.create(replica(7, "a", "s"));
    let mirror = rig.create(replica(6, "b", "m"));
    let clone = rig.create(replica(8, "a", "c"));
    let cut = rig.read_all("s_1");
    rig.write("a", 0, CHUNK as usize, 9);
    rig.modify(FRACTURE, mirror);
    rig.write("b", 5 * CHUNK, 512, 3);
    let before = rig.svc.catalog();
    rig.restart();
    let after = rig.svc.catalog();
    for (id, s) in &before.syncs {
        assert_eq!(
            (after.syncs[id].state, &after.syncs[id].target),
            (s.state, &s.target),
            "sync:{id}"
        );
    }
    let _ = (snap, clone);
    assert_same(&rig.read_all("s_1"), &cut, "images");
    assert_same(&rig.read_all("c_1"), &cut, "images");
    // The fracture's tracking survived: Resync copies just the one chunk.
    rig.modify(RESYNC, mirror);
    let m = rig.pairs(mirror)[0];
    assert_eq!(rig.sync(m).last_copy_chunks, 1);
    assert_same(&rig.read_all("m_1"), &rig.read_all("b"), "images");
}

/// After a crash a synchronous mirror resynchronizes the activity log's extents, not the
/// whole volume.
#[test]
fn crash_resyncs_only_the_activity_log() {
    let mut rig = Rig::new(&[("a", 64 * MIB)]);
    let gid = rig.create(replica(6, "a", "m"));
    let id = rig.pairs(gid)[0];
    assert_eq!(rig.sync(id).last_copy_chunks, 1024);
    rig.write("a", 9 * MIB, 8192, 7);
    rig.crash_and_reopen();
    rig.idle();
    rig.eventually("the resync", || rig.state(id) == CopyState::Synchronized);
    let n = rig.sync(id).last_copy_chunks;
    assert!(
        n > 0 && n <= 64,
        "resynced {n} chunks; one 4 MiB extent is 64"
    );
    assert_same(&rig.read_all("m_1"), &rig.read_all("a"), "images");
}

/// Volume `a` (8 MiB of 1s), its snapshot (group relationship returned), `a` rewritten
/// with 2s, then a slow source (5 ms per write) and a Restore from the snapshot started:
/// (the rig, the group relationship, the snapshot's image, the restore's job).
fn slow_restore() -> (Rig, u64, Vec<u8>, u64) {
    let rig = Rig::new(&[("a", 8 * MIB)]);
    rig.write("a", 0, (8 * MIB) as usize, 1);
    let gid = rig.create(replica(7, "a", "s"));
    let cut = rig.read_all("s_1");
    rig.write("a", 0, (8 * MIB) as usize, 2);
    rig.faulty["a"].latency_us.store(5_000, Ordering::Relaxed);
    let out = rig.start_modify(RESTORE, gid).unwrap();
    assert_eq!(out.code, ReturnCode::JobStarted);
    let job = out.job.expect("a job");
    (rig, gid, cut, job)
}

/// A restore interrupted by a crash resumes, and a host write made after a chunk was
/// restored is not undone by it.
#[test]
fn restore_resumes_after_a_crash_without_undoing_host_writes() {
    let (mut rig, gid, cut, _) = slow_restore();
    // The source reads as the snapshot at once.
    assert_same(&rig.read_all("a"), &cut, "images");
    // A host write to the last chunk restores it first, then lands.
    rig.write("a", 127 * CHUNK, 512, 0x99);
    let mut want = cut;
    want[(127 * CHUNK) as usize..(127 * CHUNK) as usize + 512].fill(0x99);
    rig.faulty["a"].latency_us.store(0, Ordering::Relaxed);
    rig.crash_and_reopen();
    let id = rig.pairs(gid)[0];
    assert!(rig.sync(id).restoring || rig.read_all("a") == want);
    assert_same(&rig.read_all("a"), &want, "images");
    rig.idle();
    rig.eventually("the restore to finish", || !rig.sync(id).restoring);
    assert_same(&rig.read_all("a"), &want, "images");
}

/// A clean stop waits for a running restore to stop at a chunk and record where it stopped,
/// so that nothing is written after the stop; the restore resumes at the next start.
#[test]
fn a_clean_stop_waits_for_a_running_restore_which_resumes_at_the_next_start() {
    // The restore (128 chunks at 5 ms or more each) outlasts the stop.
    let (mut rig, gid, cut, job) = slow_restore();
    rig.svc.shutdown();
    let info = rig.svc.jobs.get(job).expect("the job");
    assert_eq!(
        info.state,
        replication::types::JobState::Exception,
        "the restore job when the stop returned: {info:?}"
    );
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.contains("stopping")),
        "{info:?}"
    );
    rig.faulty["a"].latency_us.store(0, Ordering::Relaxed);
    rig.restart();
    rig.idle();
    let id = rig.pairs(gid)[0];
    rig.eventually("the restore to finish", || !rig.sync(id).restoring);
    assert_same(&rig.read_all("a"), &cut, "images");
}
