//! The session table: TSIH allocation and session reinstatement (RFC 7143 section 6.3.5).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use iscsi_proto::{LoginStatus, login::LoginOutcome};
use tokio::sync::watch;

/// Identifies a session: InitiatorName, ISID and the target (empty for discovery).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// InitiatorName (as sent).
    pub initiator: String,
    /// ISID.
    pub isid: [u8; 6],
    /// TargetName, lower-cased; empty for discovery sessions.
    pub target: String,
}

impl SessionKey {
    /// The key of a login.
    pub fn of(o: &LoginOutcome) -> Self {
        Self {
            initiator: o.initiator_name.clone(),
            isid: o.isid,
            target: o
                .target_name
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    tsih: u16,
    stop: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
}

/// What an admitted login gets.
#[derive(Debug)]
pub struct Admission {
    /// Unique id of this session instance.
    pub id: u64,
    /// TSIH to put in the final login response.
    pub tsih: u16,
    /// Becomes true when the session must end (reinstated or server shutdown).
    pub stop: watch::Receiver<bool>,
    /// Set to true when the session has ended and its tasks are drained.
    pub finished: watch::Sender<bool>,
    /// A reinstated session to wait for before answering the login.
    pub replaced: Option<watch::Receiver<bool>>,
}

/// All sessions of the server.
#[derive(Debug, Default)]
pub struct SessionTable {
    inner: Mutex<HashMap<SessionKey, Entry>>,
    next_id: AtomicU64,
    next_tsih: Mutex<u16>,
}

impl SessionTable {
    /// Admit a completed login: a new session (TSIH 0, reinstating any session with the same
    /// key) or, with a TSIH, a connection for an existing session, which this server does not
    /// accept (MaxConnections is 1).
    pub fn admit(&self, o: &LoginOutcome) -> Result<Admission, LoginStatus> {
        let key = SessionKey::of(o);
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if o.tsih != 0 {
            return Err(match map.get(&key) {
                Some(e) if e.tsih == o.tsih => LoginStatus::TOO_MANY_CONNECTIONS,
                _ => LoginStatus::SESSION_DOES_NOT_EXIST,
            });
        }
        let replaced = map.remove(&key).map(|old| {
            tracing::info!(initiator = %key.initiator, tsih = old.tsih, "session reinstatement");
            let _ = old.stop.send(true);
            old.finished
        });
        let in_use: Vec<u16> = map.values().map(|e| e.tsih).collect();
        let tsih = {
            let mut next = self
                .next_tsih
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                *next = next.wrapping_add(1);
                if *next != 0 && !in_use.contains(&*next) {
                    break *next;
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (fin_tx, fin_rx) = watch::channel(false);
        map.insert(
            key,
            Entry {
                id,
                tsih,
                stop: stop_tx,
                finished: fin_rx,
            },
        );
        Ok(Admission {
            id,
            tsih,
            stop: stop_rx,
            finished: fin_tx,
            replaced,
        })
    }

    /// A session ended: forget it unless a newer one has replaced it.
    pub fn remove(&self, key: &SessionKey, id: u64) {
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(key).is_some_and(|e| e.id == id) {
            map.remove(key);
        }
    }

    /// Ask every session to end.
    pub fn stop_all(&self) {
        let map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in map.values() {
            let _ = e.stop.send(true);
        }
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}
