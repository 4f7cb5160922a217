//! The login phase (RFC 7143 sections 6.3 and 6.4) of one connection, on the target side:
//! security and operational stages, transit and continue, CHAP, and the declarative keys.
//!
//! ```text
//!             first Login PDU
//!                   |
//!        CSG=0      v        CSG=1
//!   +----------- [start] -------------+
//!   v                                 v
//! Security --(T=1, auth done)--> Operational --(T=1, NSG=3)--> Complete
//!   |                                                             ^
//!   +------------------(T=1, NSG=3, auth done)--------------------+
//! any stage --(bad key, auth failure, unknown target)--> Fail(status)
//! ```

use bytes::{Bytes, BytesMut};

use crate::{
    chap::{self, ChapAlgorithm},
    error::LoginStatus,
    negotiate::{NegotiationError, Negotiator, Params, SessionType, TargetLimits},
    pdu::{LoginRequest, LoginResponse},
    text::{MAX_TEXT_LEN, TextKeys},
};

/// The security stage.
pub const STAGE_SECURITY: u8 = 0;
/// The operational negotiation stage.
pub const STAGE_OPERATIONAL: u8 = 1;
/// The full feature phase.
pub const STAGE_FULL_FEATURE: u8 = 3;

/// A secret that never shows in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<Vec<u8>>) -> Self {
        Self(s.into())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A CHAP user name and secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// CHAP_N.
    pub user: String,
    /// The shared secret.
    pub secret: Secret,
}

/// How an initiator must authenticate to a target (or to discovery).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Initiator credentials the target accepts; empty means no authentication is required.
    pub users: Vec<Credential>,
    /// The target's own credential for mutual CHAP; when set, mutual CHAP is required.
    pub mutual: Option<Credential>,
}

impl AuthPolicy {
    /// Whether CHAP is required.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }
}

/// The result of looking up the target an initiator asks for.
#[derive(Clone, Debug)]
pub enum TargetLookup {
    /// The target exists and admits the initiator.
    Found {
        /// TargetAlias to declare.
        alias: Option<String>,
        /// Authentication required.
        auth: AuthPolicy,
    },
    /// No such target.
    NotFound,
    /// The initiator is not on the target's allow-list.
    NotAuthorized,
}

/// What the login machine needs to know about the server.
pub trait LoginContext {
    /// Look up a target for an initiator.
    fn lookup_target(&self, target: &str, initiator: &str) -> TargetLookup;
    /// Authentication policy for discovery sessions.
    fn discovery_auth(&self, initiator: &str) -> AuthPolicy;
}

/// Static settings of the portal the connection arrived on.
#[derive(Clone, Debug)]
pub struct LoginConfig {
    /// Negotiation limits.
    pub limits: TargetLimits,
    /// TargetPortalGroupTag of the portal.
    pub portal_group_tag: u16,
    /// The CmdSN window size granted to a session.
    pub queue_depth: u32,
}

/// Everything the full feature phase needs from a completed login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    /// InitiatorName.
    pub initiator_name: String,
    /// InitiatorAlias, if declared.
    pub initiator_alias: Option<String>,
    /// TargetName (None for discovery).
    pub target_name: Option<String>,
    /// Session type.
    pub session_type: SessionType,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH the initiator asked for (0: new session).
    pub tsih: u16,
    /// CID.
    pub cid: u16,
    /// Negotiated parameters.
    pub params: Params,
    /// Next expected CmdSN.
    pub exp_cmd_sn: u32,
    /// Next StatSN to send.
    pub stat_sn: u32,
    /// The CHAP user that authenticated, if any.
    pub chap_user: Option<String>,
}

/// What to do after a Login Request.
#[derive(Clone, Debug)]
pub enum LoginStep {
    /// Send the response; more Login Requests follow.
    Continue(LoginResponse),
    /// Send the (failure) response and close the connection.
    Fail(LoginResponse, LoginStatus),
    /// Send the response (after setting its TSIH) and enter the full feature phase.
    Complete(LoginResponse, Box<LoginOutcome>),
}

#[derive(Clone, Debug)]
enum Auth {
    /// Nothing negotiated yet.
    Start,
    /// AuthMethod=None agreed (or no security stage): nothing to verify.
    NoneAgreed,
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    ChapWaitAlgorithm,
    /// Challenge sent; waiting for CHAP_N and CHAP_R.
    ChapWaitResponse {
        alg: ChapAlgorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    /// CHAP succeeded.
    Authenticated { user: String },
}

/// The target side of one connection's login.
#[derive(Debug)]
pub struct Login {
    config: LoginConfig,
    started: bool,
    stage: u8,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    initiator_name: Option<String>,
    initiator_alias: Option<String>,
    target_name: Option<String>,
    session_type: Option<SessionType>,
    target_alias: Option<String>,
    policy: Option<AuthPolicy>,
    auth: Auth,
    negotiator: Negotiator,
    pending: BytesMut,
    responses_sent: u32,
    declared_mrdsl: bool,
    stat_sn: u32,
    exp_cmd_sn: u32,
}

impl Login {
    /// A login machine for a new connection.
    pub fn new(config: LoginConfig) -> Self {
        let negotiator = Negotiator::new(config.limits.clone(), SessionType::Normal);
        Self {
            config,
            started: false,
            stage: STAGE_SECURITY,
            isid: [0; 6],
            tsih: 0,
            cid: 0,
            initiator_name: None,
            initiator_alias: None,
            target_name: None,
            session_type: None,
            target_alias: None,
            policy: None,
            auth: Auth::Start,
            negotiator,
            pending: BytesMut::new(),
            responses_sent: 0,
            declared_mrdsl: false,
            stat_sn: 0,
            exp_cmd_sn: 0,
        }
    }

    /// The InitiatorName, once known (for logging).
    pub fn initiator_name(&self) -> Option<&str> {
        self.initiator_name.as_deref()
    }

    /// Handle one Login Request.
    pub fn handle(&mut self, req: &LoginRequest, ctx: &dyn LoginContext) -> LoginStep {
        if !self.started {
            self.started = true;
            self.isid = req.isid;
            self.tsih = req.tsih;
            self.cid = req.cid;
            self.stat_sn = req.exp_stat_sn;
            self.exp_cmd_sn = req.cmd_sn;
            self.stage = req.csg;
        }
        match self.step(req, ctx) {
            Ok(step) => step,
            Err(status) => {
                tracing::info!(
                    initiator = self.initiator_name.as_deref().unwrap_or("?"),
                    target = self.target_name.as_deref().unwrap_or("-"),
                    %status,
                    "login refused"
                );
                LoginStep::Fail(
                    self.response(req, TextKeys::default(), false, status),
                    status,
                )
            }
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        ctx: &dyn LoginContext,
    ) -> Result<LoginStep, LoginStatus> {
        if req.version_min > 0 {
            return Err(LoginStatus::UNSUPPORTED_VERSION);
        }
        if req.csg != self.stage || req.csg > STAGE_OPERATIONAL {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if req.transit && (req.nsg <= req.csg || req.nsg == 2) {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if req.isid != self.isid || req.tsih != self.tsih || req.cid != self.cid {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if self.pending.len() + req.data.len() > MAX_TEXT_LEN {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        self.pending.extend_from_slice(&req.data);
        if req.cont {
            if req.transit {
                return Err(LoginStatus::INITIATOR_ERROR);
            }
            // Acknowledge the partial text with an empty response (RFC 7143 section 6.3).
            return Ok(LoginStep::Continue(self.response(
                req,
                TextKeys::default(),
                false,
                LoginStatus::SUCCESS,
            )));
        }
        let text = std::mem::take(&mut self.pending);
        let keys = TextKeys::parse(&text).map_err(|_| LoginStatus::INITIATOR_ERROR)?;
        let mut answer = TextKeys::default();

        self.identify(&keys, ctx)?;
        if self.responses_sent == 0 {
            answer.push(
                "TargetPortalGroupTag",
                self.config.portal_group_tag.to_string(),
            );
            if let Some(alias) = &self.target_alias {
                answer.push("TargetAlias", alias.clone());
            }
        }

        let may_transit = match req.csg {
            STAGE_SECURITY => self.security(&keys, &mut answer)?,
            _ => {
                if self.policy.as_ref().is_some_and(AuthPolicy::required)
                    && !matches!(self.auth, Auth::Authenticated { .. })
                {
                    // The initiator skipped the security stage of a target that needs CHAP.
                    return Err(LoginStatus::AUTHENTICATION_FAILURE);
                }
                self.operational(&keys, &mut answer)?;
                true
            }
        };

        let transit = req.transit && may_transit;
        if transit && req.nsg == STAGE_FULL_FEATURE {
            self.operational_declarations(&mut answer);
            let params = self.negotiator.finish().map_err(|e| {
                tracing::debug!(error = %e, "negotiation failed");
                LoginStatus::INITIATOR_ERROR
            })?;
            let resp = self.response(req, answer, true, LoginStatus::SUCCESS);
            let outcome = LoginOutcome {
                initiator_name: self.initiator_name.clone().unwrap_or_default(),
                initiator_alias: self.initiator_alias.clone(),
                target_name: self.target_name.clone(),
                session_type: self.session_type.unwrap_or(SessionType::Normal),
                isid: self.isid,
                tsih: self.tsih,
                cid: self.cid,
                params,
                exp_cmd_sn: self.exp_cmd_sn,
                stat_sn: self.stat_sn,
                chap_user: match &self.auth {
                    Auth::Authenticated { user } => Some(user.clone()),
                    _ => None,
                },
            };
            return Ok(LoginStep::Complete(resp, Box::new(outcome)));
        }
        if transit {
            self.stage = req.nsg;
        }
        Ok(LoginStep::Continue(self.response(
            req,
            answer,
            transit,
            LoginStatus::SUCCESS,
        )))
    }

    /// Read the declarative identity keys and look up the target.
    fn identify(&mut self, keys: &TextKeys, ctx: &dyn LoginContext) -> Result<(), LoginStatus> {
        for (k, v) in keys.iter() {
            match k {
                "InitiatorName" => {
                    // RFC 7143 section 4.2.7: an iSCSI name, or the login cannot name the
                    // initiator in ACLs, logs and reservations.
                    if !is_iscsi_name(v) {
                        return Err(LoginStatus::INITIATOR_ERROR);
                    }
                    set_once(&mut self.initiator_name, v)?
                }
                "InitiatorAlias" => self.initiator_alias = Some(v.to_owned()),
                "TargetName" => set_once(&mut self.target_name, v)?,
                "SessionType" => {
                    let t = match v {
                        "Normal" => SessionType::Normal,
                        "Discovery" => SessionType::Discovery,
                        _ => return Err(LoginStatus::SESSION_TYPE_NOT_SUPPORTED),
                    };
                    if self.session_type.is_some_and(|s| s != t) {
                        return Err(LoginStatus::INITIATOR_ERROR);
                    }
                    self.session_type = Some(t);
                }
                _ => {}
            }
        }
        if self.policy.is_some() {
            return Ok(());
        }
        // First PDU: everything needed to decide who may log in must be there.
        let Some(initiator) = self.initiator_name.clone() else {
            return Err(LoginStatus::MISSING_PARAMETER);
        };
        let session_type = *self.session_type.get_or_insert(SessionType::Normal);
        self.negotiator.set_session_type(session_type);
        let policy = match session_type {
            SessionType::Discovery => ctx.discovery_auth(&initiator),
            SessionType::Normal => {
                let Some(target) = self.target_name.as_deref() else {
                    return Err(LoginStatus::MISSING_PARAMETER);
                };
                match ctx.lookup_target(target, &initiator) {
                    TargetLookup::Found { alias, auth } => {
                        self.target_alias = alias;
                        auth
                    }
                    TargetLookup::NotFound => return Err(LoginStatus::TARGET_NOT_FOUND),
                    TargetLookup::NotAuthorized => return Err(LoginStatus::AUTHORIZATION_FAILURE),
                }
            }
        };
        self.policy = Some(policy);
        Ok(())
    }

    /// The security stage. Returns whether the target allows leaving it.
    fn security(&mut self, keys: &TextKeys, answer: &mut TextKeys) -> Result<bool, LoginStatus> {
        let policy = self.policy.clone().unwrap_or_default();
        for (k, v) in keys.iter() {
            match k {
                "AuthMethod" => {
                    if !matches!(self.auth, Auth::Start) {
                        return Err(LoginStatus::INITIATOR_ERROR);
                    }
                    let want = if policy.required() { "CHAP" } else { "None" };
                    if !v.split(',').map(str::trim).any(|m| m == want) {
                        answer.push("AuthMethod", "Reject");
                        return Err(LoginStatus::AUTHENTICATION_FAILURE);
                    }
                    answer.push("AuthMethod", want);
                    self.auth = if policy.required() {
                        Auth::ChapWaitAlgorithm
                    } else {
                        Auth::NoneAgreed
                    };
                }
                "CHAP_A" => {
                    if !matches!(self.auth, Auth::ChapWaitAlgorithm) {
                        return Err(LoginStatus::INITIATOR_ERROR);
                    }
                    let Some(alg) = chap::select_algorithm(v) else {
                        answer.push("CHAP_A", "Reject");
                        return Err(LoginStatus::AUTHENTICATION_FAILURE);
                    };
                    let id = chap::random_bytes(1)[0];
                    let challenge = chap::random_bytes(alg.digest_len().max(16));
                    answer.push("CHAP_A", alg.code().to_string());
                    answer.push("CHAP_I", id.to_string());
                    answer.push("CHAP_C", chap::encode_hex(&challenge));
                    self.auth = Auth::ChapWaitResponse { alg, id, challenge };
                }
                "CHAP_N" | "CHAP_R" | "CHAP_I" | "CHAP_C" => {}
                k if crate::negotiate::LOGIN_KEYS.contains(&k) => {}
                _ => self
                    .negotiator
                    .offer(k, v, answer)
                    .map_err(negotiation_status)?,
            }
        }
        if let Auth::ChapWaitResponse { .. } = self.auth {
            if keys.get("CHAP_R").is_some() {
                self.verify_chap(keys, &policy, answer)?;
            }
        } else if keys.get("CHAP_R").is_some() || keys.get("CHAP_N").is_some() {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        Ok(match self.auth {
            Auth::NoneAgreed | Auth::Authenticated { .. } => true,
            // An initiator that sends no AuthMethod to a target without authentication.
            Auth::Start => !policy.required(),
            _ => false,
        })
    }

    fn verify_chap(
        &mut self,
        keys: &TextKeys,
        policy: &AuthPolicy,
        answer: &mut TextKeys,
    ) -> Result<(), LoginStatus> {
        let Auth::ChapWaitResponse { alg, id, challenge } = &self.auth else {
            return Err(LoginStatus::INITIATOR_ERROR);
        };
        let (alg, id) = (*alg, *id);
        let fail = LoginStatus::AUTHENTICATION_FAILURE;
        let name = keys.get("CHAP_N").ok_or(fail)?;
        let response = keys
            .get("CHAP_R")
            .and_then(chap::decode_binary)
            .ok_or(fail)?;
        let cred = policy.users.iter().find(|c| c.user == name).ok_or(fail)?;
        let expect = alg.response(id, cred.secret.expose(), challenge);
        if !chap::ct_eq(&expect, &response) {
            tracing::info!(user = name, "CHAP response does not match");
            return Err(fail);
        }
        let mutual_i = keys.get("CHAP_I");
        let mutual_c = keys.get("CHAP_C");
        match (mutual_i, mutual_c, &policy.mutual) {
            (None, None, None) => {}
            (Some(i), Some(c), Some(target_cred)) => {
                let i = crate::negotiate::numeric(i, 0, 255).ok_or(fail)?;
                let c = chap::decode_binary(c).ok_or(fail)?;
                // RFC 7143 section 12.1.3: refuse a reflected challenge and a secret used in
                // both directions.
                if c.is_empty() || c.len() > 1024 || c == *challenge {
                    return Err(fail);
                }
                if target_cred.secret == cred.secret {
                    return Err(fail);
                }
                let r = alg.response(i as u8, target_cred.secret.expose(), &c);
                answer.push("CHAP_N", target_cred.user.clone());
                answer.push("CHAP_R", chap::encode_hex(&r));
            }
            // Mutual CHAP asked by one side only.
            _ => return Err(fail),
        }
        self.auth = Auth::Authenticated {
            user: name.to_owned(),
        };
        Ok(())
    }

    fn operational(&mut self, keys: &TextKeys, answer: &mut TextKeys) -> Result<(), LoginStatus> {
        for (k, v) in keys.iter() {
            match k {
                "AuthMethod" | "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R" => {
                    // Security keys are not allowed outside the security stage.
                    return Err(LoginStatus::INITIATOR_ERROR);
                }
                k if crate::negotiate::LOGIN_KEYS.contains(&k) => {}
                _ => self
                    .negotiator
                    .offer(k, v, answer)
                    .map_err(negotiation_status)?,
            }
        }
        self.operational_declarations(answer);
        Ok(())
    }

    /// Declare our MaxRecvDataSegmentLength once (RFC 7143 section 13.12: it is a
    /// declaration each side makes for itself).
    fn operational_declarations(&mut self, answer: &mut TextKeys) {
        if !self.declared_mrdsl {
            self.declared_mrdsl = true;
            answer.push(
                "MaxRecvDataSegmentLength",
                self.config.limits.max_recv_data_segment_length.to_string(),
            );
        }
    }

    fn response(
        &mut self,
        req: &LoginRequest,
        answer: TextKeys,
        transit: bool,
        status: LoginStatus,
    ) -> LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.responses_sent += 1;
        let ok = status == LoginStatus::SUCCESS;
        LoginResponse {
            transit: transit && ok,
            cont: false,
            csg: req.csg,
            nsg: if transit && ok { req.nsg } else { 0 },
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: 0,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self
                .exp_cmd_sn
                .wrapping_add(self.config.queue_depth.max(1) - 1),
            status_class: status.class,
            status_detail: status.detail,
            data: if ok { answer.encode() } else { Bytes::new() },
        }
    }
}

/// Whether `name` has the form of an iSCSI name (RFC 7143 section 4.2.7): `iqn.`, `eui.`
/// or `naa.`, at most 223 bytes of letters, digits, `.`, `-` and `:`.
pub fn is_iscsi_name(name: &str) -> bool {
    let lower = name.get(..4).map(str::to_ascii_lowercase);
    name.len() > 4
        && name.len() <= 223
        && matches!(lower.as_deref(), Some("iqn." | "eui." | "naa."))
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-:".contains(&c))
}

fn set_once(slot: &mut Option<String>, v: &str) -> Result<(), LoginStatus> {
    match slot {
        Some(prev) if prev != v => Err(LoginStatus::INITIATOR_ERROR),
        _ => {
            *slot = Some(v.to_owned());
            Ok(())
        }
    }
}

fn negotiation_status(e: NegotiationError) -> LoginStatus {
    tracing::debug!(error = %e, "negotiation failed");
    LoginStatus::INITIATOR_ERROR
}

#[cfg(test)]
mod tests;
