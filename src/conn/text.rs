//! Answering the Text keys the protocol machine forwards: SendTargets, and the vendor keys
//! of which only the HA peer protocol's is understood (from a target's replica peers).

use std::{net::SocketAddr, sync::Arc};

use iscsi_proto::{negotiate::SessionType, text::TextKeys};
use replication::service::peer::PEER_KEY;
use tokio::sync::mpsc;

use super::{Conn, Session};
use crate::{registry::Target, server::Server};

/// What answering a session's Text keys needs, apart from the connection.
struct Asker {
    server: Arc<Server>,
    target: Option<Arc<Target>>,
    initiator: String,
    /// The session's target; `None` in a discovery session.
    session_target: Option<String>,
    local: SocketAddr,
}

impl Conn {
    /// Answer forwarded Text keys: here, or, when they hold an HA peer request (which may
    /// wait for commands to drain), on a thread of its own, the answer coming back on
    /// `answers` while the connection goes on serving.
    pub(super) fn text_keys(
        &self,
        s: &Session,
        itt: u32,
        keys: TextKeys,
        answers: &mpsc::UnboundedSender<(u32, TextKeys)>,
    ) -> Option<TextKeys> {
        let asker = Asker {
            server: self.server.clone(),
            target: s.target.clone(),
            initiator: s.outcome.initiator_name.clone(),
            session_target: match s.outcome.session_type {
                SessionType::Discovery => None,
                SessionType::Normal => s.outcome.target_name.clone(),
            },
            local: self
                .local
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3260))),
        };
        if asker.peer().is_none() || keys.get(PEER_KEY).is_none() {
            return Some(asker.answer(&keys));
        }
        let answers = answers.clone();
        let spawned = std::thread::Builder::new()
            .name("ironlun-peer".into())
            .spawn(move || {
                let _ = answers.send((itt, asker.answer(&keys)));
            });
        match spawned {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "no thread for a peer request");
                let mut answer = TextKeys::default();
                answer.push(PEER_KEY, "Reject");
                Some(answer)
            }
        }
    }
}

impl Asker {
    /// The session's target when the initiator is one of its replica peers.
    fn peer(&self) -> Option<&Arc<Target>> {
        self.target.as_ref().filter(|t| {
            t.replica_peers
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&self.initiator))
        })
    }

    fn answer(&self, keys: &TextKeys) -> TextKeys {
        let mut answer = match keys.get("SendTargets") {
            Some(which) => self.send_targets(which),
            None => TextKeys::default(),
        };
        for (k, v) in keys.iter() {
            if k == "SendTargets" {
                continue;
            }
            let value = match self.peer() {
                Some(t) if k == PEER_KEY => {
                    self.server
                        .replication
                        .peer_request(&self.initiator, &t.name, v)
                }
                _ => "NotUnderstood".to_owned(),
            };
            answer.push(k, &value);
        }
        answer
    }

    fn send_targets(&self, which: &str) -> TextKeys {
        // In a normal session only the session's own target may be listed.
        let which = if self.session_target.is_some() && which == "All" {
            ""
        } else {
            which
        };
        self.server.registry.send_targets(
            which,
            &self.initiator,
            self.session_target.as_deref(),
            self.local,
        )
    }
}
