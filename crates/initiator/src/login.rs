//! The login phase of a session: the connection while logging in, the security stage
//! (CHAP, one-way or mutual) and the operational stage, and what was negotiated.

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use bytes::BytesMut;
use iscsi_proto::{
    chap::{self, ChapAlgorithm},
    frame::{Digests, FrameDecoder, FrameEncoder},
    pdu::{LoginRequest, LoginResponse, Pdu},
    text::TextKeys,
};

use crate::session::{Config, Error, Negotiated, io_err};

/// A connection during the login: whole PDUs in and out.
pub(crate) struct LoginConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    pub(crate) dec: FrameDecoder,
    pub(crate) enc: FrameEncoder,
}

impl LoginConn {
    fn send(&mut self, pdu: &Pdu) -> Result<(), Error> {
        self.stream
            .write_all(&self.enc.encode(pdu).to_bytes())
            .map_err(io_err)
    }

    fn recv(&mut self) -> Result<Pdu, Error> {
        loop {
            if let Some(f) = self
                .dec
                .decode(&mut self.buf)
                .map_err(|e| Error::Protocol(e.to_string()))?
            {
                return f.pdu().map_err(|e| Error::Protocol(e.to_string()));
            }
            let mut tmp = [0u8; 16384];
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    return Err(Error::Disconnected(
                        "the target closed the connection".into(),
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

/// The login's exchanges.
pub(crate) struct Exchange<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) cmd_sn: u32,
    pub(crate) exp_stat_sn: u32,
    pub(crate) tsih: u16,
}

impl Exchange<'_> {
    fn step(
        &mut self,
        c: &mut LoginConn,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &TextKeys,
    ) -> Result<LoginResponse, Error> {
        let req = LoginRequest {
            transit,
            csg,
            nsg,
            isid: self.cfg.isid,
            tsih: self.tsih,
            itt: 1,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: keys.encode(),
            ..Default::default()
        };
        c.send(&Pdu::LoginRequest(req))?;
        match c.recv()? {
            Pdu::LoginResponse(r) => {
                self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                if r.status_class != 0 {
                    return Err(Error::LoginRefused(r.status_class, r.status_detail));
                }
                Ok(r)
            }
            other => Err(Error::Protocol(format!(
                "expected a login response, got {other:?}"
            ))),
        }
    }

    fn identity(&self, keys: &mut TextKeys) {
        keys.push("InitiatorName", self.cfg.initiator_name.clone());
        keys.push("TargetName", self.cfg.target.clone());
        keys.push("SessionType", "Normal");
    }

    pub(crate) fn security(&mut self, c: &mut LoginConn) -> Result<(), Error> {
        let Some(cred) = self.cfg.chap.clone() else {
            return Ok(());
        };
        let mut keys = TextKeys::default();
        self.identity(&mut keys);
        keys.push("AuthMethod", "CHAP");
        let r = self.step(c, 0, 1, false, &keys)?;
        let k = TextKeys::parse(&r.data).map_err(|e| Error::Protocol(e.to_string()))?;
        if k.get("AuthMethod") != Some("CHAP") {
            return Err(Error::Auth("the target does not use CHAP".into()));
        }
        let mut keys = TextKeys::default();
        keys.push("CHAP_A", "7,6,5,8");
        let r = self.step(c, 0, 1, false, &keys)?;
        let k = TextKeys::parse(&r.data).map_err(|e| Error::Protocol(e.to_string()))?;
        let alg = k
            .get("CHAP_A")
            .and_then(|a| a.parse().ok())
            .and_then(ChapAlgorithm::from_code)
            .ok_or_else(|| Error::Auth("no CHAP algorithm agreed".into()))?;
        let id: u8 = k
            .get("CHAP_I")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Auth("no CHAP_I".into()))?;
        let challenge = k
            .get("CHAP_C")
            .and_then(chap::decode_binary)
            .ok_or_else(|| Error::Auth("no CHAP_C".into()))?;
        let mut keys = TextKeys::default();
        keys.push("CHAP_N", cred.user.clone());
        keys.push(
            "CHAP_R",
            chap::encode_hex(&alg.response(id, &cred.secret, &challenge)),
        );
        let mine = self.cfg.mutual.as_ref().map(|_| {
            let id = chap::random_bytes(1)[0];
            let c = chap::random_bytes(alg.digest_len().max(16));
            (id, c)
        });
        if let Some((id, c)) = &mine {
            keys.push("CHAP_I", id.to_string());
            keys.push("CHAP_C", chap::encode_hex(c));
        }
        let r = self.step(c, 0, 1, true, &keys)?;
        if let (Some((id, ch)), Some(target)) = (&mine, &self.cfg.mutual) {
            let k = TextKeys::parse(&r.data).map_err(|e| Error::Protocol(e.to_string()))?;
            let got = k
                .get("CHAP_R")
                .and_then(chap::decode_binary)
                .unwrap_or_default();
            let want = alg.response(*id, &target.secret, ch);
            if k.get("CHAP_N") != Some(target.user.as_str()) || !chap::ct_eq(&got, &want) {
                return Err(Error::Auth("the target failed mutual CHAP".into()));
            }
        }
        if !(r.transit && r.nsg == 1) {
            return Err(Error::Protocol(
                "the target did not leave the security stage".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn operational(
        &mut self,
        c: &mut LoginConn,
    ) -> Result<(TextKeys, LoginResponse), Error> {
        let mut keys = TextKeys::default();
        if self.cfg.chap.is_none() {
            self.identity(&mut keys);
        }
        let digest = if self.cfg.digests {
            "CRC32C,None"
        } else {
            "None"
        };
        for (k, v) in [
            ("HeaderDigest", digest),
            ("DataDigest", digest),
            ("ErrorRecoveryLevel", "0"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"),
            ("MaxOutstandingR2T", "1"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("MaxRecvDataSegmentLength", "262144"),
        ] {
            keys.push(k, v);
        }
        let mut all = TextKeys::default();
        let mut r = self.step(c, 1, 3, true, &keys)?;
        for _ in 0..8 {
            let k = TextKeys::parse(&r.data).map_err(|e| Error::Protocol(e.to_string()))?;
            for (a, b) in k.iter() {
                all.push(a, b);
            }
            self.tsih = r.tsih;
            if r.transit && r.nsg == 3 {
                return Ok((all, r));
            }
            r = self.step(c, 1, 3, true, &TextKeys::default())?;
        }
        Err(Error::Protocol("the login did not finish".into()))
    }
}

/// The parameters from the target's answers (RFC 7143 result functions).
pub(crate) fn negotiated(k: &TextKeys, tsih: u16) -> Result<Negotiated, Error> {
    let num =
        |key: &str, default: usize| k.get(key).and_then(|v| v.parse().ok()).unwrap_or(default);
    let yes = |key: &str, default: bool| k.get(key).map_or(default, |v| v == "Yes");
    let first_burst = num("FirstBurstLength", 65_536).min(262_144);
    let max_burst = num("MaxBurstLength", 262_144).min(16_776_192);
    Ok(Negotiated {
        max_send: num("MaxRecvDataSegmentLength", 8192).clamp(512, 16_777_215),
        first_burst: first_burst.min(max_burst),
        max_burst,
        // ImmediateData is AND, InitialR2T is OR: the target's answer is the result.
        immediate_data: yes("ImmediateData", true),
        initial_r2t: yes("InitialR2T", true),
        digests: Digests {
            header: k.get("HeaderDigest") == Some("CRC32C"),
            data: k.get("DataDigest") == Some("CRC32C"),
        },
        tsih,
    })
}
