//! Operational parameter negotiation (RFC 7143 sections 6.2 and 13): every key with its own
//! result function, plus NotUnderstood, Irrelevant and Reject answers.

use crate::text::TextKeys;

/// The target's own limits and preferences, from its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLimits {
    /// MaxRecvDataSegmentLength we declare: the largest data segment we accept.
    pub max_recv_data_segment_length: u32,
    /// Largest MaxBurstLength we accept.
    pub max_burst_length: u32,
    /// Largest FirstBurstLength we accept.
    pub first_burst_length: u32,
    /// Largest MaxOutstandingR2T we accept.
    pub max_outstanding_r2t: u32,
    /// Our InitialR2T value (the result is the OR with the initiator's).
    pub initial_r2t: bool,
    /// Our ImmediateData value (the result is the AND with the initiator's).
    pub immediate_data: bool,
    /// Our DefaultTime2Wait (result: max).
    pub default_time2wait: u32,
    /// Our DefaultTime2Retain (result: min).
    pub default_time2retain: u32,
    /// Whether digests may be used, and whether they are required.
    pub digest_policy: DigestPolicy,
}

impl Default for TargetLimits {
    fn default() -> Self {
        Self {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 262_144,
            max_outstanding_r2t: 8,
            initial_r2t: false,
            immediate_data: true,
            default_time2wait: 2,
            default_time2retain: 0,
            digest_policy: DigestPolicy::Allow,
        }
    }
}

/// What the target accepts for HeaderDigest and DataDigest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigestPolicy {
    /// Accept CRC32C or None, taking the initiator's preference.
    #[default]
    Allow,
    /// Accept only CRC32C.
    Require,
    /// Accept only None.
    Refuse,
}

/// Negotiated session and connection parameters (RFC 7143 section 13 defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// HeaderDigest=CRC32C.
    pub header_digest: bool,
    /// DataDigest=CRC32C.
    pub data_digest: bool,
    /// MaxConnections.
    pub max_connections: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxRecvDataSegmentLength declared by the initiator: the largest data segment we send.
    pub max_xmit_data_segment_length: u32,
    /// MaxRecvDataSegmentLength we declared: the largest data segment we accept.
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// DefaultTime2Wait.
    pub default_time2wait: u32,
    /// DefaultTime2Retain.
    pub default_time2retain: u32,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_xmit_data_segment_length: 8192,
            max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Which kind of session is being negotiated: some keys are irrelevant in discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionType {
    /// A discovery session (SendTargets only).
    Discovery,
    /// A normal session.
    Normal,
}

/// Keys handled by the login state machine itself, not by [`Negotiator`].
pub const LOGIN_KEYS: &[&str] = &[
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "SessionType",
    "AuthMethod",
    "CHAP_A",
    "CHAP_I",
    "CHAP_C",
    "CHAP_N",
    "CHAP_R",
];

/// An invalid negotiation that fails the login (initiator error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// A key was offered twice with different values.
    #[error("key {0} negotiated twice")]
    Renegotiated(String),
    /// The initiator insists on something the target cannot do (e.g., digests refused).
    #[error("no acceptable value for {0}")]
    NoCommonValue(String),
    /// After negotiation FirstBurstLength exceeds MaxBurstLength.
    #[error("FirstBurstLength exceeds MaxBurstLength")]
    FirstBurstExceedsMaxBurst,
}

/// Negotiates operational keys over the PDUs of one login.
#[derive(Clone, Debug)]
pub struct Negotiator {
    limits: TargetLimits,
    session_type: SessionType,
    params: Params,
    seen: Vec<(String, String)>,
}

impl Negotiator {
    /// A negotiator with the target's limits.
    pub fn new(limits: TargetLimits, session_type: SessionType) -> Self {
        let params = Params {
            max_recv_data_segment_length: limits.max_recv_data_segment_length,
            ..Params::default()
        };
        Self {
            limits,
            session_type,
            params,
            seen: Vec::new(),
        }
    }

    /// Change the session type once SessionType has been read.
    pub fn set_session_type(&mut self, t: SessionType) {
        self.session_type = t;
    }

    /// The parameters negotiated so far.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Check the combination once the login is complete.
    pub fn finish(&mut self) -> Result<Params, NegotiationError> {
        if self.session_type == SessionType::Normal
            && (!self.params.initial_r2t || self.params.immediate_data)
            && self.params.first_burst_length > self.params.max_burst_length
        {
            return Err(NegotiationError::FirstBurstExceedsMaxBurst);
        }
        Ok(self.params.clone())
    }

    /// Negotiate one offered key, appending the answer (if any) to `answer`.
    pub fn offer(
        &mut self,
        key: &str,
        value: &str,
        answer: &mut TextKeys,
    ) -> Result<(), NegotiationError> {
        if matches!(value, "NotUnderstood" | "Irrelevant" | "Reject") {
            // An answer to a key we offered: nothing to respond.
            return Ok(());
        }
        if let Some((_, prev)) = self.seen.iter().find(|(k, _)| k == key) {
            if prev != value {
                return Err(NegotiationError::Renegotiated(key.to_owned()));
            }
        } else {
            self.seen.push((key.to_owned(), value.to_owned()));
        }
        let reply = match key {
            "HeaderDigest" => Answer::Value(self.digest(key, value, true)?),
            "DataDigest" => Answer::Value(self.digest(key, value, false)?),
            _ => self.operational(key, value),
        };
        match reply {
            Answer::Value(v) => answer.push(key, v),
            Answer::Reject => answer.push(key, "Reject"),
            Answer::Silent => {}
        }
        Ok(())
    }

    /// The result function of every operational key but the digests.
    fn operational(&mut self, key: &str, value: &str) -> Answer {
        let discovery = self.session_type == SessionType::Discovery;
        let l = &self.limits;
        let p = &mut self.params;
        let irrelevant = || Answer::Value("Irrelevant".into());
        let result = match key {
            "MaxConnections" if discovery => return irrelevant(),
            "MaxConnections" => numeric(value, 1, 65535).map(|v| {
                p.max_connections = v.min(1);
                p.max_connections.to_string()
            }),
            "InitialR2T" if discovery => return irrelevant(),
            "InitialR2T" => boolean(value).map(|v| {
                p.initial_r2t = v || l.initial_r2t;
                yes_no(p.initial_r2t)
            }),
            "ImmediateData" if discovery => return irrelevant(),
            "ImmediateData" => boolean(value).map(|v| {
                p.immediate_data = v && l.immediate_data;
                yes_no(p.immediate_data)
            }),
            "MaxRecvDataSegmentLength" => {
                // Declarative: our own value is declared by the login machine.
                return match numeric(value, 512, 16_777_215) {
                    Some(v) => {
                        p.max_xmit_data_segment_length = v;
                        Answer::Silent
                    }
                    None => Answer::Reject,
                };
            }
            "MaxBurstLength" if discovery => return irrelevant(),
            "MaxBurstLength" => numeric(value, 512, 16_777_215).map(|v| {
                p.max_burst_length = v.min(l.max_burst_length);
                p.max_burst_length.to_string()
            }),
            "FirstBurstLength" if discovery => return irrelevant(),
            "FirstBurstLength" => numeric(value, 512, 16_777_215).map(|v| {
                p.first_burst_length = v.min(l.first_burst_length);
                p.first_burst_length.to_string()
            }),
            "DefaultTime2Wait" => numeric(value, 0, 3600).map(|v| {
                p.default_time2wait = v.max(l.default_time2wait);
                p.default_time2wait.to_string()
            }),
            "DefaultTime2Retain" => numeric(value, 0, 3600).map(|v| {
                p.default_time2retain = v.min(l.default_time2retain);
                p.default_time2retain.to_string()
            }),
            "MaxOutstandingR2T" if discovery => return irrelevant(),
            "MaxOutstandingR2T" => numeric(value, 1, 65535).map(|v| {
                p.max_outstanding_r2t = v.min(l.max_outstanding_r2t);
                p.max_outstanding_r2t.to_string()
            }),
            // OR with our own Yes: the result is always Yes.
            "DataPDUInOrder" if discovery => return irrelevant(),
            "DataPDUInOrder" => boolean(value).map(|_| {
                p.data_pdu_in_order = true;
                yes_no(true)
            }),
            "DataSequenceInOrder" if discovery => return irrelevant(),
            "DataSequenceInOrder" => boolean(value).map(|_| {
                p.data_sequence_in_order = true;
                yes_no(true)
            }),
            // Only level 0 is implemented: min(offer, 0).
            "ErrorRecoveryLevel" => numeric(value, 0, 2).map(|_| {
                p.error_recovery_level = 0;
                "0".to_owned()
            }),
            // Markers were removed by RFC 7143; answer the AND with our No.
            "IFMarker" | "OFMarker" | "RDMAExtensions" => boolean(value).map(|_| "No".into()),
            "IFMarkInt" | "OFMarkInt" => return irrelevant(),
            "TaskReporting" => Some("RFC3720".into()),
            "iSCSIProtocolLevel" => numeric(value, 0, 31).map(|v| v.min(1).to_string()),
            // Declarations only a target makes.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" | "SendTargets" => {
                return irrelevant();
            }
            _ => return Answer::Value("NotUnderstood".into()),
        };
        result.map_or(Answer::Reject, Answer::Value)
    }

    fn digest(&mut self, key: &str, value: &str, header: bool) -> Result<String, NegotiationError> {
        let policy = self.limits.digest_policy;
        let choice = value.split(',').map(str::trim).find(|v| {
            matches!(
                (*v, policy),
                ("CRC32C", DigestPolicy::Allow | DigestPolicy::Require)
                    | ("None", DigestPolicy::Allow | DigestPolicy::Refuse)
            )
        });
        let Some(choice) = choice else {
            return match value
                .split(',')
                .all(|v| matches!(v.trim(), "CRC32C" | "None"))
            {
                true => Err(NegotiationError::NoCommonValue(key.to_owned())),
                false => Ok("Reject".into()),
            };
        };
        let on = choice == "CRC32C";
        if header {
            self.params.header_digest = on;
        } else {
            self.params.data_digest = on;
        }
        Ok(choice.to_owned())
    }
}

/// The answer to one key.
enum Answer {
    /// Respond with this value.
    Value(String),
    /// The value was invalid: respond `key=Reject`.
    Reject,
    /// A declaration that needs no response.
    Silent,
}

fn yes_no(v: bool) -> String {
    if v { "Yes" } else { "No" }.to_owned()
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// A numerical value in decimal or `0x` hex (RFC 7143 section 6.1), within `min..=max`.
pub fn numeric(v: &str, min: u32, max: u32) -> Option<u32> {
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else {
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        v.parse::<u64>().ok()?
    };
    u32::try_from(n).ok().filter(|n| (min..=max).contains(n))
}

#[cfg(test)]
mod tests;
