//! What replication adds to a host write, measured in one process: no network, no initiator,
//! only the replication layer and the image files, so that the ratios are not drowned in
//! the noise of TCP and a third-party initiator sharing the machine's cores
//! (`scripts/bench-replication.sh` measures the same through iSCSI).
//!
//! One replication service over four image files: a volume without replication, the source
//! of a synchronous mirror, of an asynchronous mirror, and of a snapshot. Each round writes
//! the same pattern to each (one after the other, the order reversed every other round) the
//! way the server does (in memory if it can, else the path that may wait), and takes each
//! run's process CPU time (every thread: the asynchronous mirror's run lasts until its
//! journal is shipped) and wall time relative to the plain volume's run of the same round.
//! The table shows the medians of those ratios and their range.
//!
//! ```text
//! cargo bench -p replication --bench write_cost [-- --quick] [-- --rounds N]
//! IRONLUN_BENCH_DIR=/dev/shm   where the images go (default /var/tmp)
//! ```

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use blockdev::{BlockDevice, FileDevice};
use bytes::Bytes;
use replication::{
    CopyState,
    service::{
        CreateGroupReplica, ModifyReplicaSynchronization, ReplicationService, ServiceConfig,
    },
    types::JobState,
    volume::Volume,
};

const MIB: u64 = 1 << 20;
const PLAIN: &str = "plain";
const SYNC: &str = "syncsrc";
const ASYNC: &str = "asyncsrc";
const SNAP: &str = "snapsrc";

struct Sizes {
    volume: u64,
    n4k: u64,
    n1m: u64,
    nsnap: u64,
    rounds: usize,
}

/// What a failed step of the benchmark reports.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut sz = if quick {
        Sizes {
            volume: 16 * MIB,
            n4k: 512,
            n1m: 8,
            nsnap: 128,
            rounds: 1,
        }
    } else {
        Sizes {
            volume: 256 * MIB,
            n4k: 16384,
            n1m: 128,
            nsnap: 4096,
            rounds: 7,
        }
    };
    if let Some(n) = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
    {
        sz.rounds = n;
    }
    let base = std::env::var("IRONLUN_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("ironlun-write-cost.")
        .tempdir_in(&base)
        .map_err(|e| format!("a directory for the images in {base}: {e}"))?;
    let bench = Bench::new(dir.path(), &sz)?;
    let r = bench.rounds(&sz);
    bench.svc.shutdown();
    r
}

struct Bench {
    svc: Arc<ReplicationService>,
    /// The asynchronous pair (for its lag).
    async_pair: u64,
}

/// CPU time of the whole process so far.
fn cpu_now() -> Res<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(format!(
            "clock_gettime(CLOCK_PROCESS_CPUTIME_ID): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

impl Bench {
    fn new(dir: &Path, sz: &Sizes) -> Res<Self> {
        let svc = ReplicationService::open(ServiceConfig::new(&dir.join("data")))
            .map_err(|e| format!("opening the replication service: {e}"))?;
        for (i, name) in [PLAIN, SYNC, ASYNC, SNAP].into_iter().enumerate() {
            let path = dir.join(format!("{name}.img"));
            let dev = FileDevice::open(&path, Some(sz.volume), false)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // Fully written, so that no run pays for allocating blocks.
            let fill = Bytes::from(vec![0x11; MIB as usize]);
            for off in (0..sz.volume).step_by(MIB as usize) {
                dev.write_at(std::slice::from_ref(&fill), off, false)?;
            }
            dev.flush()?;
            svc.register_configured(name, Arc::new(dev), &path, 512, 0x5000 + i as u64);
        }
        svc.start()
            .map_err(|e| format!("starting the service: {e}"))?;
        let bench = Self { svc, async_pair: 0 };
        bench.create(SYNC, "syncm", 6, Some(2))?;
        let group = bench.create(ASYNC, "asyncm", 6, Some(3))?;
        let async_pair = bench.svc.catalog().group_syncs[&group].members[0];
        Ok(Self {
            async_pair,
            ..bench
        })
    }

    /// Create a relationship of `source` and wait for its job; returns the group
    /// relationship.
    fn create(&self, source: &str, name: &str, sync_type: u16, mode: Option<u16>) -> Res<u64> {
        let out = self
            .svc
            .create_group_replica(CreateGroupReplica {
                relationship_name: Some(name.into()),
                sync_type: Some(sync_type),
                mode,
                source_element: Some(source.into()),
                ..Default::default()
            })
            .map_err(|e| format!("creating a replica of {source}: {e:?}"))?;
        if let Some(job) = out.job {
            let info = self.svc.jobs.wait(job, Duration::from_secs(600));
            if info.as_ref().is_none_or(|j| j.state != JobState::Completed) {
                return Err(format!("the job of {name} did not complete: {info:?}").into());
            }
        }
        Ok(out
            .synchronization
            .ok_or_else(|| format!("no relationship for {name}"))?)
    }

    fn async_state(&self) -> CopyState {
        self.svc.catalog().syncs[&self.async_pair].state
    }

    /// When the asynchronous pair last finished a copy (a journal overflow makes it
    /// resynchronize).
    fn synced(&self) -> Option<u64> {
        self.svc.catalog().syncs[&self.async_pair].synced
    }

    fn volume(&self, name: &str) -> Res<Arc<Volume>> {
        Ok(self
            .svc
            .volume(name)
            .ok_or_else(|| format!("no volume {name}"))?)
    }

    /// Write `count` times `len` bytes, `step` apart from offset 0 (wrapping at the end of
    /// the volume) as the server does: in memory if the volume can, else by the path that
    /// may wait. Then flush if asked, and wait for the asynchronous mirror to ship. Returns
    /// (CPU, wall time of the writes and the flush).
    fn measure(&self, name: &str, len: u64, step: u64, count: u64, flush: bool) -> Res<(f64, f64)> {
        let v = self.volume(name)?;
        let data = [Bytes::from(vec![0x5a; len as usize])];
        let size = v.size();
        let synced = self.synced();
        let (c0, t0) = (cpu_now()?, Instant::now());
        for i in 0..count {
            let off = (i * step) % size;
            match v.write_at_nowait(&data, off, false) {
                Ok(true) => {}
                Ok(false) => v.write_at(&data, off, false)?,
                Err(e) => return Err(format!("write to {name}: {e}").into()),
            }
        }
        if flush {
            v.flush()?;
        }
        let wall = t0.elapsed();
        if name == ASYNC {
            let overflowed = self.async_state() != CopyState::Synchronized;
            let t = Instant::now();
            while self
                .svc
                .mirror_detail(self.async_pair)
                .is_some_and(|d| d.2 > 0)
                || self.async_state() != CopyState::Synchronized
            {
                if t.elapsed() > Duration::from_secs(120) {
                    return Err("the asynchronous mirror did not catch up in 120 s".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if overflowed || self.synced() != synced {
                println!(
                    "(a run of {count} writes of {len} bytes overflowed the asynchronous \
                     journal: its CPU includes the resynchronization)"
                );
            }
        }
        Ok(((cpu_now()? - c0).as_secs_f64(), wall.as_secs_f64()))
    }

    fn rounds(&self, sz: &Sizes) -> Res<()> {
        // (pattern, volume) -> one (CPU, wall) per round.
        let mut got: HashMap<(&str, &str), Vec<(f64, f64)>> = HashMap::new();
        for round in 0..sz.rounds {
            let mut order = [PLAIN, SYNC, ASYNC];
            if round % 2 == 1 {
                order.reverse();
            }
            for v in order {
                let r = self.measure(v, 4096, 4096, sz.n4k, false)?;
                got.entry(("4k", v)).or_default().push(r);
            }
            for v in order {
                let r = self.measure(v, MIB, MIB, sz.n1m, false)?;
                got.entry(("1m", v)).or_default().push(r);
            }
            // A fresh snapshot, then one 4 KiB write per 64 KiB (each the first write to
            // its block since the cut), then the same writes again; the plain volume
            // alongside. These runs end with a flush: a first write is held in memory
            // until its block is saved, and the flush pays for the rest.
            let snap = self.create(SNAP, &format!("snap-{round}"), 7, None)?;
            for (key, v) in [
                ("first", PLAIN),
                ("first", SNAP),
                ("over", SNAP),
                ("over", PLAIN),
            ] {
                let r = self.measure(v, 4096, 64 << 10, sz.nsnap, true)?;
                got.entry((key, v)).or_default().push(r);
            }
            let out = self
                .svc
                .modify_replica_synchronization(ModifyReplicaSynchronization {
                    operation: Some(19), // Return To ResourcePool
                    synchronization: Some(snap),
                    ..Default::default()
                })
                .map_err(|e| format!("returning the snapshot to its pool: {e:?}"))?;
            if let Some(job) = out.job {
                self.svc.jobs.wait(job, Duration::from_secs(600));
            }
        }
        println!(
            "ironlun replication write cost in one process, {} round(s); medians, ratios to the \
             volume without replication in the same round (range)",
            sz.rounds
        );
        println!(
            "{:<36} {:>9} {:>7} {:>13} {:>9} {:>7} {:>13}",
            "pattern / volume", "CPU us/w", "CPU", "(range)", "wall us/w", "wall", "(range)"
        );
        let rows = [
            ("4 KiB sequential, no replication", "4k", PLAIN, sz.n4k),
            ("4 KiB sequential, sync mirror", "4k", SYNC, sz.n4k),
            ("4 KiB sequential, async mirror", "4k", ASYNC, sz.n4k),
            ("1 MiB sequential, no replication", "1m", PLAIN, sz.n1m),
            ("1 MiB sequential, sync mirror", "1m", SYNC, sz.n1m),
            ("1 MiB sequential, async mirror", "1m", ASYNC, sz.n1m),
            ("4 KiB per 64 KiB, no replication", "first", PLAIN, sz.nsnap),
            ("4 KiB per 64 KiB, snapshot first", "first", SNAP, sz.nsnap),
            ("4 KiB per 64 KiB, snapshot over", "over", SNAP, sz.nsnap),
        ];
        for (label, key, v, writes) in rows {
            let runs = &got[&(key, v)];
            let plain = &got[&(key, PLAIN)];
            let per = |f: fn(&(f64, f64)) -> f64| {
                median(runs.iter().map(|r| f(r) / writes as f64 * 1e6).collect())
            };
            let ratios = |f: fn(&(f64, f64)) -> f64| {
                let r: Vec<f64> = runs.iter().zip(plain).map(|(a, b)| f(a) / f(b)).collect();
                let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = r.iter().copied().fold(0.0, f64::max);
                (median(r), lo, hi)
            };
            let (c, clo, chi) = ratios(|r| r.0);
            let (w, wlo, whi) = ratios(|r| r.1);
            println!(
                "{label:<36} {:>9.2} {c:>6.2}x {:>13} {:>9.2} {w:>6.2}x {:>13}",
                per(|r| r.0),
                format!("{clo:.2}-{chi:.2}x"),
                per(|r| r.1),
                format!("{wlo:.2}-{whi:.2}x"),
            );
        }
        println!(
            "(CPU: the process's, every thread, until the asynchronous mirror has shipped the \
             run; wall: the writes (and the flush) as the host would wait for them)"
        );
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
