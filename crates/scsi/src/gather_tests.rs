//! Write gathering ([`crate::WriteRun`]) against a device that records its calls.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use blockdev::{BlockDevice, BlockError, BlockErrorKind, MemDevice};
use bytes::Bytes;

use crate::{
    Fit, Joined, LogicalUnit, LuConfig, LunMap, Request, Response, WriteRun,
    tests::{T, nexus, read10, sense3, write10},
};

const BS: u64 = 512;
const BLOCKS: u64 = 4096;

/// Records every write call (offset, length, FUA); can be told to wait or to fail.
#[derive(Debug)]
struct Calls {
    mem: MemDevice,
    writes: Mutex<Vec<(u64, u64, bool)>>,
    cold: AtomicBool,
    broken: AtomicBool,
}

impl Calls {
    fn writes(&self) -> Vec<(u64, u64, bool)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

impl BlockDevice for Calls {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> blockdev::Result<()> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(BlockError::new(BlockErrorKind::Io, "broken"));
        }
        let len = bufs.iter().map(|b| b.len() as u64).sum();
        self.writes.lock().unwrap().push((offset, len, fua));
        self.mem.write_at(bufs, offset, fua)
    }
    fn write_at_nowait(&self, bufs: &[Bytes], offset: u64, fua: bool) -> blockdev::Result<bool> {
        if fua || self.cold.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.write_at(bufs, offset, false)?;
        Ok(true)
    }
    fn flush(&self) -> blockdev::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> blockdev::Result<()> {
        self.mem.discard(offset, len)
    }
}

/// LUN 0 over a recording device, LUN 3 over memory; the first command's unit attention is
/// consumed on LUN 0.
fn setup() -> (T, LunMap, Arc<Calls>) {
    let dev = Arc::new(Calls {
        mem: MemDevice::new(BLOCKS * BS),
        writes: Mutex::default(),
        cold: AtomicBool::new(false),
        broken: AtomicBool::new(false),
    });
    let mut naa = [0u8; 8];
    naa[0] = 0x30;
    naa[7] = 9;
    let lu = Arc::new(LogicalUnit::new(
        LuConfig::new("GATHER0001", naa, BS as u32),
        dev.clone(),
    ));
    let (other, _) = crate::tests::lu();
    let mut map = LunMap::new();
    map.insert(0, lu.clone());
    map.insert(3, other);
    let t = T {
        lu,
        nexus: nexus("iqn.i"),
    };
    assert_eq!(sense3(&t.run(&[0, 0, 0, 0, 0, 0], &[])), (6, 0x29, 0));
    (t, map, dev)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Offer a WRITE to the run as the transport does: its fit, then its join.
fn offer(
    run: &mut WriteRun<u32>,
    map: &LunMap,
    t: &T,
    lun: u16,
    cdb: &[u8],
    data: &[Bytes],
    tag: u32,
) -> (Fit, Option<Joined>) {
    let fit = run.fit(map, Some(lun), cdb, data);
    if fit != Fit::Joins {
        return (fit, None);
    }
    let req = Request::new(&t.nexus, cdb, data, &[0, 3], None, None);
    (fit, Some(run.join(map, Some(lun), &req, tag)))
}

fn write16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x8a;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn answers(run: &mut WriteRun<u32>) -> Vec<(u32, Response)> {
    let mut out = Vec::new();
    assert!(run.write_nowait(|tag, r| out.push((tag, r))));
    assert!(run.is_empty());
    out
}

#[test]
fn adjacent_writes_are_written_with_one_device_call() {
    let (t, map, dev) = setup();
    let (a, b, c) = (pattern(1, 1024), pattern(2, 512), pattern(3, 1536));
    let mut run = WriteRun::default();
    let bufs_a = [Bytes::from(a.clone())];
    // The second write's Data-Out came in two PDUs.
    let bufs_b = [
        Bytes::from(b[..256].to_vec()),
        Bytes::from(b[256..].to_vec()),
    ];
    let bufs_c = [Bytes::from(c.clone())];
    for (cdb, bufs, tag) in [
        (&write10(100, 2)[..], &bufs_a[..], 7),
        (&write10(102, 1)[..], &bufs_b[..], 8),
        (&write16(103, 3)[..], &bufs_c[..], 9),
    ] {
        let (fit, joined) = offer(&mut run, &map, &t, 0, cdb, bufs, tag);
        assert_eq!(fit, Fit::Joins);
        assert!(matches!(joined, Some(Joined::Yes)), "{joined:?}");
    }
    assert_eq!(run.tags().copied().collect::<Vec<_>>(), vec![7, 8, 9]);
    assert!(dev.writes().is_empty(), "nothing is written before the run");
    assert!(t.run(&read10(100, 6), &[]).data.iter().all(|&b| b == 0));

    let done = answers(&mut run);
    let got: Vec<_> = done
        .iter()
        .map(|(t, r)| (*t, r.status, r.write_len))
        .collect();
    assert_eq!(got, vec![(7, 0, 1024), (8, 0, 512), (9, 0, 1536)]);
    assert_eq!(dev.writes(), vec![(100 * BS, 3072, false)], "one call");
    let want: Vec<u8> = [a, b, c].concat();
    assert_eq!(t.run(&read10(100, 6), &[]).data.to_vec(), want);
}

#[test]
fn only_plain_writes_of_whole_blocks_that_continue_the_run_join() {
    let (t, map, _dev) = setup();
    let mut run = WriteRun::<u32>::default();
    let one = [Bytes::from(vec![1u8; 512])];
    let fit =
        |run: &WriteRun<u32>, lun, cdb: &[u8], data: &[Bytes]| run.fit(&map, Some(lun), cdb, data);
    let mut fua = write10(10, 1);
    fua[1] = 0x08;
    let mut protect = write10(10, 1);
    protect[1] = 0x20;
    assert_eq!(fit(&run, 0, &fua, &one), Fit::No, "FUA");
    assert_eq!(fit(&run, 0, &protect, &one), Fit::No, "WRPROTECT");
    assert_eq!(fit(&run, 0, &read10(10, 1), &[]), Fit::No, "a READ");
    assert_eq!(fit(&run, 0, &write10(10, 2), &one), Fit::No, "data short");
    assert_eq!(fit(&run, 0, &write10(10, 0), &[]), Fit::No, "no blocks");
    assert_eq!(fit(&run, 9, &write10(10, 1), &one), Fit::No, "no such LUN");
    let mut wv = write10(10, 1);
    wv[0] = 0x2e;
    assert_eq!(fit(&run, 0, &wv, &one), Fit::No, "WRITE AND VERIFY");

    assert!(matches!(
        offer(&mut run, &map, &t, 0, &write10(10, 1), &one, 1).1,
        Some(Joined::Yes)
    ));
    assert_eq!(fit(&run, 0, &write10(11, 1), &one), Fit::Joins);
    assert_eq!(fit(&run, 0, &write10(12, 1), &one), Fit::AfterRun, "a gap");
    assert_eq!(fit(&run, 0, &write10(10, 1), &one), Fit::AfterRun, "again");
    assert_eq!(fit(&run, 0, &write10(9, 1), &one), Fit::AfterRun, "before");
    assert_eq!(fit(&run, 3, &write10(11, 1), &one), Fit::AfterRun, "LUN 3");
    // A run holds at most MAX_RUN_BYTES.
    let blocks = (crate::MAX_RUN_BYTES / BS) as u16;
    let full = [Bytes::from(vec![2u8; crate::MAX_RUN_BYTES as usize])];
    assert_eq!(fit(&run, 0, &write10(11, blocks), &full), Fit::AfterRun);
    let almost = [Bytes::from(vec![2u8; crate::MAX_RUN_BYTES as usize - 512])];
    assert_eq!(fit(&run, 0, &write10(11, blocks - 1), &almost), Fit::Joins);
    assert_eq!(answers(&mut run).len(), 1);
    assert_eq!(fit(&run, 0, &write10(11, blocks), &full), Fit::Joins);
}

#[test]
fn a_member_refused_by_its_checks_is_answered_at_once_and_the_run_goes_on() {
    let (t, map, dev) = setup();
    let mut run = WriteRun::default();
    let one = |b: u8| [Bytes::from(vec![b; 512])];
    let last = (BLOCKS - 1) as u32;
    assert!(matches!(
        offer(&mut run, &map, &t, 0, &write10(last, 1), &one(1), 1).1,
        Some(Joined::Yes)
    ));
    // It continues the run, past the end of the medium.
    let (fit, joined) = offer(&mut run, &map, &t, 0, &write10(last + 1, 1), &one(2), 2);
    assert_eq!(fit, Fit::Joins);
    match joined {
        Some(Joined::Done(r)) => assert_eq!(sense3(&r), (5, 0x21, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(run.tags().copied().collect::<Vec<_>>(), vec![1]);
    let done = answers(&mut run);
    assert_eq!(done.len(), 1);
    assert_eq!(dev.writes(), vec![((BLOCKS - 1) * BS, 512, false)]);

    // A unit attention is reported by the write that meets it, which is not written.
    t.lu.unit_attention_all(crate::Sense::BUS_DEVICE_RESET, None);
    match offer(&mut run, &map, &t, 0, &write10(5, 1), &one(3), 3).1 {
        Some(Joined::Done(r)) => assert_eq!(sense3(&r), (6, 0x29, 3)),
        other => panic!("{other:?}"),
    }
    assert!(run.is_empty());
    assert!(
        t.lu.settle(std::time::Duration::ZERO),
        "an empty run holds nothing"
    );
    assert!(dev.writes().is_empty());
}

#[test]
fn with_the_write_cache_off_writes_take_the_usual_path() {
    let (t, map, dev) = setup();
    // MODE SELECT(6) of the caching page with WCE cleared.
    let r = t.run(&[0x1a, 0x08, 0x08, 0, 255, 0], &[]);
    let at = 4 + usize::from(r.data[3]);
    let mut page = r.data[at..at + 20].to_vec();
    page[0] &= 0x3f;
    page[2] &= !0x04;
    let mut p = vec![0u8, 0, 0, 0];
    p.extend_from_slice(&page);
    assert_eq!(t.run(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p).status, 0);

    let mut run = WriteRun::default();
    let data = [Bytes::from(vec![4u8; 512])];
    let (fit, joined) = offer(&mut run, &map, &t, 0, &write10(20, 1), &data, 1);
    assert_eq!(fit, Fit::Joins, "the CDB alone cannot tell");
    assert!(matches!(joined, Some(Joined::No)));
    assert!(run.is_empty());
    assert!(dev.writes().is_empty(), "nothing of it was done");
    assert!(t.lu.settle(std::time::Duration::ZERO));
    // The usual path then writes it through.
    assert_eq!(t.run(&write10(20, 1), &[4u8; 512]).status, 0);
    assert_eq!(dev.writes(), vec![(20 * BS, 512, true)]);
}

#[test]
fn a_run_counts_as_a_running_command_until_it_is_written() {
    let (t, map, _dev) = setup();
    let mut run = WriteRun::default();
    let data = [Bytes::from(vec![5u8; 512])];
    offer(&mut run, &map, &t, 0, &write10(30, 1), &data, 1);
    assert!(
        !t.lu.settle(std::time::Duration::from_millis(20)),
        "an access state change waits for the run"
    );
    answers(&mut run);
    assert!(t.lu.settle(std::time::Duration::ZERO));
    // A run dropped unwritten (its connection gone) holds nothing either.
    offer(&mut run, &map, &t, 0, &write10(30, 1), &data, 1);
    drop(run);
    assert!(t.lu.settle(std::time::Duration::ZERO));
}

#[test]
fn a_run_that_would_wait_is_kept_whole_and_written_where_waiting_is_allowed() {
    let (t, map, dev) = setup();
    let mut run = WriteRun::default();
    for i in 0..4u8 {
        let data = [Bytes::from(vec![10 + i; 512])];
        let lba = 40 + u32::from(i);
        offer(&mut run, &map, &t, 0, &write10(lba, 1), &data, u32::from(i));
    }
    dev.cold.store(true, Ordering::Relaxed);
    let mut early = Vec::new();
    assert!(!run.write_nowait(|tag, r| early.push((tag, r))));
    assert!(early.is_empty() && dev.writes().is_empty());
    assert_eq!(run.tags().count(), 4, "kept whole");
    let run = std::mem::take(&mut run);
    let done = std::thread::spawn(move || {
        let mut done = Vec::new();
        run.write(|tag, r| done.push((tag, r.status, r.write_len)));
        done
    })
    .join()
    .unwrap();
    assert_eq!(
        done,
        vec![(0, 0, 512), (1, 0, 512), (2, 0, 512), (3, 0, 512)]
    );
    assert_eq!(dev.writes(), vec![(40 * BS, 2048, false)]);
    let r = t.run(&read10(40, 4), &[]);
    for i in 0..4usize {
        assert!(
            r.data[i * 512..(i + 1) * 512]
                .iter()
                .all(|&b| b == 10 + i as u8)
        );
    }
}

#[test]
fn a_run_that_fails_answers_every_member_with_the_error() {
    let (t, map, dev) = setup();
    let mut run = WriteRun::default();
    for i in 0..3u32 {
        let data = [Bytes::from(vec![1u8; 512])];
        offer(&mut run, &map, &t, 0, &write10(50 + i, 1), &data, i);
    }
    dev.broken.store(true, Ordering::Relaxed);
    let done = answers(&mut run);
    assert_eq!(done.len(), 3);
    for (_, r) in &done {
        assert_eq!(sense3(r), (3, 0x0c, 0), "WRITE ERROR");
    }
    assert!(t.lu.settle(std::time::Duration::ZERO));
}
