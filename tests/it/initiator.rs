//! A small blocking iSCSI initiator built on the protocol crate, for raw PDU tests.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use iscsi_proto::{
    frame::{Digests, FrameDecoder, FrameEncoder},
    pdu::{DataOut, LoginRequest, LoginResponse, Pdu, RESERVED_TAG, ScsiCommand},
    text::TextKeys,
};

/// A connection speaking raw PDUs.
pub struct Initiator {
    pub stream: TcpStream,
    buf: BytesMut,
    pub dec: FrameDecoder,
    pub enc: FrameEncoder,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    next_itt: u32,
    pub isid: [u8; 6],
    /// The target's MaxRecvDataSegmentLength.
    pub max_send: usize,
}

/// Keys open-iscsi sends in a normal login (shared/spec/open-iscsi-notes.md).
pub const OPERATIONAL: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("MaxRecvDataSegmentLength", "262144"),
];

/// The outcome of a SCSI command.
#[derive(Debug)]
pub struct Outcome {
    pub status: u8,
    pub sense: Vec<u8>,
    pub data: Vec<u8>,
    pub residual: (bool, bool, u32),
}

impl Initiator {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
            dec: FrameDecoder {
                max_data_segment: 1 << 24,
                ..FrameDecoder::default()
            },
            enc: FrameEncoder::default(),
            cmd_sn: 0,
            exp_stat_sn: 0,
            next_itt: 1,
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
            max_send: 8192,
        }
    }

    pub fn itt(&mut self) -> u32 {
        self.next_itt += 1;
        self.next_itt
    }

    pub fn send(&mut self, pdu: &Pdu) {
        let f = self.enc.encode(pdu);
        self.stream.write_all(&f.to_bytes()).expect("send");
    }

    /// Send raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("send raw");
    }

    /// Next PDU, or None if the connection closed.
    pub fn try_recv(&mut self) -> Option<Pdu> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).expect("decode") {
                let pdu = f.pdu().expect("parse");
                if let Some(sn) = stat_sn(&pdu) {
                    self.exp_stat_sn = sn.wrapping_add(1);
                }
                return Some(pdu);
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Next PDU within `t`; None on timeout or close.
    pub fn recv_within(&mut self, t: Duration) -> Option<Pdu> {
        let old = self.stream.read_timeout().ok().flatten();
        let _ = self.stream.set_read_timeout(Some(t));
        let r = loop {
            if let Some(f) = self.dec.decode(&mut self.buf).expect("decode") {
                let pdu = f.pdu().expect("parse");
                if let Some(sn) = stat_sn(&pdu) {
                    self.exp_stat_sn = sn.wrapping_add(1);
                }
                break Some(pdu);
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) | Err(_) => break None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        };
        let _ = self.stream.set_read_timeout(old);
        r
    }

    pub fn recv(&mut self) -> Pdu {
        self.try_recv().expect("connection closed")
    }

    /// Whether the target closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        self.try_recv().is_none()
    }

    pub fn login_request(
        &self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> LoginRequest {
        let mut t = TextKeys::default();
        for (k, v) in keys {
            t.push(*k, *v);
        }
        LoginRequest {
            transit,
            csg,
            nsg,
            isid: self.isid,
            itt: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: t.encode(),
            ..Default::default()
        }
    }

    /// One Login PDU; returns the response.
    pub fn login_step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> LoginResponse {
        let req = self.login_request(csg, nsg, transit, keys);
        self.send(&Pdu::LoginRequest(req));
        match self.recv() {
            Pdu::LoginResponse(r) => r,
            other => panic!("expected a login response, got {other:?}"),
        }
    }

    /// A normal-session login in one operational-stage PDU (as open-iscsi does without auth).
    pub fn login(
        &mut self,
        initiator: &str,
        target: &str,
        extra: &[(&str, &str)],
    ) -> LoginResponse {
        let mut keys = vec![
            ("InitiatorName", initiator),
            ("TargetName", target),
            ("SessionType", "Normal"),
        ];
        keys.extend_from_slice(OPERATIONAL);
        keys.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        keys.extend_from_slice(extra);
        let r = self.login_step(1, 3, true, &keys);
        self.after_login(&r);
        r
    }

    /// Apply a successful final login response (digests, limits).
    pub fn after_login(&mut self, r: &LoginResponse) {
        if r.status_class != 0 || !r.transit || r.nsg != 3 {
            return;
        }
        let k = TextKeys::parse(&r.data).expect("keys");
        let on = |key| k.get(key) == Some("CRC32C");
        let d = Digests {
            header: on("HeaderDigest"),
            data: on("DataDigest"),
        };
        self.dec.digests = d;
        self.enc.digests = d;
        if let Some(m) = k.get("MaxRecvDataSegmentLength") {
            self.max_send = m.parse().expect("number");
        }
    }

    /// Run a SCSI command with immediate data up to the first burst and Data-Out per R2T.
    pub fn scsi(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        edtl: u32,
        read: bool,
    ) -> Outcome {
        let itt = self.itt();
        let mut c = [0u8; 16];
        c[..cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let imm = data_out.len().min(self.max_send).min(262_144);
        let cmd = ScsiCommand {
            final_bit: imm == data_out.len(),
            read,
            write: !data_out.is_empty(),
            attr: 1,
            lun,
            itt,
            expected_len: edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: iscsi_proto::pdu::Cdb::from_slice(if cdb.len() > 16 { cdb } else { &c }),
            data: Bytes::copy_from_slice(&data_out[..imm]),
            ..Default::default()
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&Pdu::ScsiCommand(cmd));
        // Unsolicited data beyond the immediate part, up to FirstBurstLength (262144).
        let first_burst = data_out.len().min(262_144);
        let mut off = imm;
        let mut sn = 0;
        while off < first_burst {
            let n = (first_burst - off).min(self.max_send);
            self.send(&Pdu::DataOut(DataOut {
                final_bit: off + n == first_burst,
                itt,
                ttt: RESERVED_TAG,
                data_sn: sn,
                buffer_offset: off as u32,
                data: Bytes::copy_from_slice(&data_out[off..off + n]),
                exp_stat_sn: self.exp_stat_sn,
                ..Default::default()
            }));
            sn += 1;
            off += n;
        }
        let mut data = Vec::new();
        loop {
            match self.recv() {
                Pdu::R2t(r) => {
                    let end = (r.buffer_offset + r.desired_len) as usize;
                    let mut o = r.buffer_offset as usize;
                    let mut sn = 0;
                    while o < end {
                        let n = (end - o).min(self.max_send);
                        self.send(&Pdu::DataOut(DataOut {
                            final_bit: o + n == end,
                            itt,
                            ttt: r.ttt,
                            data_sn: sn,
                            buffer_offset: o as u32,
                            data: Bytes::copy_from_slice(&data_out[o..o + n]),
                            exp_stat_sn: self.exp_stat_sn,
                            ..Default::default()
                        }));
                        sn += 1;
                        o += n;
                    }
                }
                Pdu::DataIn(d) => {
                    assert_eq!(d.itt, itt);
                    assert_eq!(d.buffer_offset as usize, data.len(), "Data-In in order");
                    data.extend_from_slice(&d.data);
                    if let Some(status) = d.status {
                        return Outcome {
                            status,
                            sense: Vec::new(),
                            data,
                            residual: (d.underflow, d.overflow, d.residual),
                        };
                    }
                }
                Pdu::ScsiResponse(r) => {
                    assert_eq!(r.itt, itt);
                    return Outcome {
                        status: r.status,
                        sense: r.sense().map(<[u8]>::to_vec).unwrap_or_default(),
                        data,
                        residual: (r.underflow, r.overflow, r.residual),
                    };
                }
                Pdu::NopIn(n) if n.itt == RESERVED_TAG => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Clear the first-command unit attention with TEST UNIT READY.
    pub fn clear_ua(&mut self, lun: u64) {
        for _ in 0..5 {
            if self.scsi(lun, &[0; 6], &[], 0, false).status == 0 {
                return;
            }
        }
        panic!("unit attention did not clear");
    }
}

fn stat_sn(p: &Pdu) -> Option<u32> {
    match p {
        Pdu::ScsiResponse(r) => Some(r.stat_sn),
        Pdu::DataIn(d) if d.status.is_some() => Some(d.stat_sn),
        Pdu::NopIn(n) if n.itt != RESERVED_TAG => Some(n.stat_sn),
        Pdu::TaskMgmtResponse(r) => Some(r.stat_sn),
        Pdu::TextResponse(r) => Some(r.stat_sn),
        Pdu::LogoutResponse(r) => Some(r.stat_sn),
        Pdu::LoginResponse(r) => Some(r.stat_sn),
        Pdu::Reject(r) => Some(r.stat_sn),
        _ => None,
    }
}
