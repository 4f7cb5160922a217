//! Admin requests: `admin::Dispatcher::handle_line` on arbitrary lines and on requests built
//! from the protocol's method and parameter names, against one replication service opened
//! once per process on a temporary directory, with two configured volumes on memory devices
//! and an in-memory export table.
//!
//! Input: if the first byte is `!`, the rest drives a generator that builds up to four
//! requests (method, parameters, values: references to the objects that exist or could
//! exist, numbers, booleans, strings, settings objects, CIM-XML); otherwise the input is up
//! to eight request lines separated by newlines.
//!
//! State accumulates across inputs (volumes, groups, relationships); it is kept bounded:
//! requests that would create a volume larger than 4 MiB are not sent, nor are requests that
//! create objects once the service holds 64 volumes.
#![no_main]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use admin::{Dispatcher, Exports, METHODS};
use blockdev::MemDevice;
use libfuzzer_sys::fuzz_target;
use replication::service::{ExposedVolume, PoolConfig, ReplicationService, ServiceConfig};
use serde_json::{Map, Value, json};

const TARGET: &str = "iqn.2026-11.io.ironlun:fuzz";
const MAX_VOLUME_BYTES: u64 = 4 << 20;
const MAX_VOLUMES: usize = 64;

/// Methods that create volumes or relationships.
const CREATING: &[&str] = &[
    "CreateVolume",
    "CreateGroupReplica",
    "CreateGroup",
    "AddMembers",
];

const NAMES: &[&str] = &[
    "vol0", "vol1", "v0", "v1", "v2", "v3", "g0", "g1", "g2", "r0", "", "a:b", "..", "x y",
];

const SETTINGS: &[&str] = &[
    "ConsistentPointInTime",
    "DesiredCopyMethodology",
    "CopyPriority",
    "CopyRecoveryMode",
    "Pairing",
    "UnequalGroupsAction",
    "TargetElementSupplier",
    "ThinProvisioningPolicy",
    "OnGroupOrListError",
    "ElementName",
];

/// The export table of the server, in memory.
#[derive(Debug, Default)]
struct Table(Mutex<BTreeSet<(String, u16)>>);

impl Exports for Table {
    fn has_target(&self, iqn: &str) -> bool {
        iqn.eq_ignore_ascii_case(TARGET)
    }

    fn luns_in_use(&self, iqn: &str) -> Vec<u16> {
        let t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.iter()
            .filter(|(i, _)| i.eq_ignore_ascii_case(iqn))
            .map(|(_, l)| *l)
            .collect()
    }

    fn expose(&self, v: &ExposedVolume) -> Result<(), String> {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (v.exposure.target.to_ascii_lowercase(), v.exposure.lun);
        if !t.insert(key) {
            return Err(format!("LUN {} is in use", v.exposure.lun));
        }
        Ok(())
    }

    fn hide(&self, iqn: &str, lun: u16) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.remove(&(iqn.to_ascii_lowercase(), lun));
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    svc: Arc<ReplicationService>,
    dispatcher: Dispatcher,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut cfg = ServiceConfig::new(&data);
        cfg.quick_wait = Duration::from_millis(20);
        cfg.drain_timeout = Duration::from_millis(200);
        cfg.pools.push(PoolConfig {
            name: "small".into(),
            dir: data.join("small"),
            limit: 256 << 10,
        });
        let svc = ReplicationService::open(cfg).expect("open the service");
        for (i, (name, size)) in [("vol0", 1u64 << 20), ("vol1", 512 << 10)]
            .into_iter()
            .enumerate()
        {
            let dev = Arc::new(MemDevice::new(size));
            let path = dir.path().join(format!("{name}.img"));
            svc.register_configured(name, dev, &path, 512, 0x1000 + i as u64);
        }
        svc.start().expect("start the service");
        let dispatcher = Dispatcher::new(svc.clone(), Arc::new(Table::default()));
        Rig {
            _dir: dir,
            svc,
            dispatcher,
        }
    })
}

/// Whether a request may be sent without growing the service past its bounds.
fn allowed(rig: &Rig, line: &[u8]) -> bool {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(line) else {
        return true;
    };
    let Some(Value::String(method)) = req.get("method") else {
        return true;
    };
    if !CREATING.contains(&method.as_str()) {
        return true;
    }
    if method == "CreateVolume"
        && let Some(Value::Object(p)) = req.get("params")
        && let Some(size) = p.get("Size").and_then(Value::as_u64)
        && size > MAX_VOLUME_BYTES
    {
        return false;
    }
    rig.svc.catalog().volumes.len() < MAX_VOLUMES
}

fn send(rig: &Rig, line: &[u8]) {
    if !allowed(rig, line) {
        return;
    }
    let resp = rig.dispatcher.handle_line(line);
    let Value::Object(o) = &resp else {
        panic!("a response is not an object: {resp}");
    };
    let Some(rv) = o.get("ReturnValue").and_then(Value::as_u64) else {
        panic!("a response without ReturnValue: {resp}");
    };
    assert!(o.contains_key("id"), "a response without id: {resp}");
    if !matches!(rv, 0 | 4096) {
        assert!(o.contains_key("Error"), "a failure without Error: {resp}");
    }
    // The server writes the response as one line.
    let text = serde_json::to_string(&resp).expect("a response serializes");
    assert!(!text.contains('\n'));
}

/// A cursor over the generator's input; exhausted input reads as zeros.
struct Gen<'a>(&'a [u8]);

impl Gen<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<'s, T>(&mut self, list: &'s [T]) -> &'s T {
        &list[usize::from(self.byte()) % list.len()]
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.byte()))
    }

    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 24);
        let bytes: Vec<u8> = (0..n).map(|_| self.byte()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn name(&mut self) -> String {
        (*self.pick(NAMES)).to_owned()
    }

    fn reference(&mut self) -> String {
        let k = self.byte();
        match k % 13 {
            0 | 1 => format!("volume:{}", self.name()),
            2 => format!("group:{}", self.name()),
            3 | 4 => format!("sync:{}", self.byte() % 48),
            5 => format!("job:{}", self.byte() % 48),
            6 => format!("pool:{}", *self.pick(&["default", "small", "none"])),
            7 => format!("aspect:{}", self.byte() % 48),
            8 => "service:replication".to_owned(),
            9 => format!("sync:{}", self.u64()),
            10 => format!("{}:{}", self.text(), self.text()),
            11 => format!("volume:{}", "v".repeat(usize::from(self.byte()))),
            _ => self.text(),
        }
    }

    fn settings(&mut self) -> Value {
        let mut m = Map::new();
        for _ in 0..self.byte() % 4 {
            let k = (*self.pick(SETTINGS)).to_owned();
            let v = self.scalar();
            m.insert(k, v);
        }
        Value::Object(m)
    }

    fn cim_xml(&mut self) -> String {
        let mut s = String::from("<INSTANCE CLASSNAME=\"CIM_ReplicationSettingData\">");
        for _ in 0..self.byte() % 4 {
            let k = *self.pick(SETTINGS);
            let v = match self.byte() % 3 {
                0 => (self.byte() % 12).to_string(),
                1 => "true".to_owned(),
                _ => self.text(),
            };
            s.push_str(&format!(
                "<PROPERTY NAME=\"{k}\" TYPE=\"uint16\"><VALUE>{v}</VALUE></PROPERTY>"
            ));
        }
        s.push_str("</INSTANCE>");
        if self.byte() & 1 != 0 {
            s = s
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;");
        }
        s
    }

    fn scalar(&mut self) -> Value {
        match self.byte() % 8 {
            0 => Value::Null,
            1 => json!(self.byte() & 1 != 0),
            2 | 3 => json!(self.byte() % 32),
            4 => json!(u16::from_be_bytes([self.byte(), self.byte()])),
            5 => json!(-i64::from(self.byte())),
            6 => json!(f64::from(self.byte()) / 3.0),
            _ => json!(self.text()),
        }
    }

    fn value(&mut self, param: &str) -> Value {
        match self.byte() % 16 {
            0 => Value::Null,
            1 => json!(self.byte() & 1 != 0),
            2..=4 => json!(self.byte() % 32),
            5 => json!(self.u64()),
            6 => json!(u64::from(self.byte() % 16 + 1) * 65_536),
            7 | 8 => json!(self.reference()),
            9 => {
                let n = self.byte() % 5;
                Value::Array((0..n).map(|_| json!(self.reference())).collect())
            }
            10 => json!(self.name()),
            11 => json!(*self.pick(&[TARGET, "IQN.2026-11.IO.IRONLUN:FUZZ", "iqn.other"])),
            12 if param == "ReplicationSettingData" => self.settings(),
            12 => json!(*self.pick(admin::instances::CLASSES)),
            13 if param == "ReplicationSettingData" => json!(self.cim_xml()),
            13 => self.scalar(),
            14 => Value::Array((0..self.byte() % 3).map(|_| self.scalar()).collect()),
            _ => json!(self.text()),
        }
    }

    fn request(&mut self) -> Value {
        let (method, params) = *self.pick(METHODS);
        let mut p = Map::new();
        for _ in 0..self.byte() % (params.len() as u8 + 2) {
            let name = match (self.byte(), params.is_empty()) {
                (0xff, _) | (_, true) => self.text(),
                _ => (*self.pick(params)).to_owned(),
            };
            let v = self.value(&name);
            p.insert(name, v);
        }
        let mut req = Map::new();
        req.insert("id".into(), json!(self.byte()));
        req.insert("method".into(), json!(method));
        if self.byte() != 0xff {
            req.insert("params".into(), Value::Object(p));
        }
        Value::Object(req)
    }
}

fuzz_target!(|data: &[u8]| {
    let rig = rig();
    if let Some(rest) = data.strip_prefix(b"!") {
        let mut g = Gen(rest);
        for _ in 0..4 {
            if g.0.is_empty() {
                break;
            }
            let line = g.request().to_string();
            send(rig, line.as_bytes());
        }
    } else {
        for line in data.split(|&b| b == b'\n').take(8) {
            send(rig, line);
        }
    }
});
