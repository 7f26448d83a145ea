//! Who may use the hub (issue 16): clients known by the static key of the
//! secure channel they reach the hub through, and what each may do, read
//! from an access file (TOML) at start and again on `SIGHUP`.
//!
//! ```toml
//! # Who may connect at all: a name for each client's static X25519
//! # public key (64 hexadecimal digits, as `SecureChannel::remote_static`
//! # shows it).
//! [identities]
//! alice = "5f1c0d2e..."
//! bob = "9a0b7c11..."
//!
//! # Per stream-name pattern (`*`, `?` and `[...]`, as in file names), who
//! # may push and who may pull (and keep a read position); `"*"` is every
//! # identity above. The first rule whose pattern matches a stream decides;
//! # a stream no rule matches is refused to everyone.
//! [[streams]]
//! names = "sensor-*"
//! push = ["alice"]
//! pull = ["alice", "bob"]
//!
//! # Who may register forwarders.
//! [forwarders]
//! register = ["alice"]
//! ```
//!
//! With an access file the hub is *closed*: its services answer only what
//! comes through a secure channel to its listener from an identity the file
//! names, and a client's read positions are its identity's own. Without
//! one it is *open*, as the 2021 hub was, and says so at start.
//!
//! The Kafka back end (`stream_kafka`, `stream_kafka_index`) follows the
//! same rules, in the hub's process or in its child (see
//! [`crate::kafka_child`]); a read position kept in Kafka is the consumer
//! group `{prefix}{identity}/{client_id}` (see [`crate::KafkaConfig::group`]).

use ockam_core::internal::sync::{read, write};
use ockam_core::{Error, ErrorKind, Result};
use ockam_vault::PublicKey;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tracing::{info, warn};

/// What a request asks to do, for [`Access::check`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operation<'a> {
    /// Anything at all: echo, sending through a forwarder, unregistering
    /// one's forwarder. (Opening a stream needs the right to push or to
    /// pull it.)
    Connect,
    /// Push into the stream.
    Push(&'a str),
    /// Pull from the stream, or get or save a read position in it.
    Pull(&'a str),
    /// Register a forwarder.
    RegisterForwarder,
}

impl std::fmt::Display for Operation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operation::Connect => f.write_str("use this hub"),
            Operation::Push(s) => write!(f, "push to stream {s:?}"),
            Operation::Pull(s) => write!(f, "read stream {s:?}"),
            Operation::RegisterForwarder => f.write_str("register forwarders"),
        }
    }
}

/// The access file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    identities: HashMap<String, String>,
    #[serde(default)]
    streams: Vec<StreamRuleFile>,
    #[serde(default)]
    forwarders: ForwardersFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamRuleFile {
    names: String,
    #[serde(default)]
    push: Vec<String>,
    #[serde(default)]
    pull: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardersFile {
    #[serde(default)]
    register: Vec<String>,
}

/// Identities named in the file: a set of keys, or every identity (`"*"`).
#[derive(Debug, Clone)]
enum Who {
    Every,
    Only(HashSet<PublicKey>),
}

impl Who {
    fn includes(&self, key: &PublicKey) -> bool {
        match self {
            Who::Every => true,
            Who::Only(keys) => keys.contains(key),
        }
    }
}

#[derive(Debug)]
struct StreamRule {
    names: glob::Pattern,
    push: Who,
    pull: Who,
}

/// An access file, read and checked.
#[derive(Debug)]
pub struct AccessPolicy {
    names: HashMap<PublicKey, String>,
    streams: Vec<StreamRule>,
    forwarders: Who,
}

impl AccessPolicy {
    /// Reads the access file at `path`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when it cannot be read; [`ErrorKind::InvalidInput`]
    /// when it is not valid TOML of the documented shape, a key is not 64
    /// hexadecimal digits, a pattern is malformed, or a rule names an
    /// identity the file does not define (the message says which).
    pub fn load(path: &Path) -> Result<AccessPolicy> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot read the access file {}", path.display()),
                e,
            )
        })?;
        Self::parse(&text).map_err(|e| {
            Error::new(
                e.kind(),
                format!("the access file {}: {}", path.display(), e.message()),
            )
        })
    }

    /// Reads an access file's text.
    ///
    /// # Errors
    /// As [`AccessPolicy::load`], except for reading.
    pub fn parse(text: &str) -> Result<AccessPolicy> {
        let invalid = |why: String| Error::new(ErrorKind::InvalidInput, why);
        let file: AccessFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut keys = HashMap::new();
        let mut names = HashMap::new();
        for (name, hex) in &file.identities {
            let key: PublicKey = hex
                .parse()
                .map_err(|e: Error| invalid(format!("identity {name:?}: {}", e.message())))?;
            keys.insert(name.clone(), key);
            names.insert(key, name.clone());
        }
        let who = |list: &[String], what: &str| -> Result<Who> {
            if list.iter().any(|n| n == "*") {
                return Ok(Who::Every);
            }
            list.iter()
                .map(|n| {
                    keys.get(n).copied().ok_or_else(|| {
                        invalid(format!(
                            "{what} names {n:?}, which [identities] does not define"
                        ))
                    })
                })
                .collect::<Result<HashSet<_>>>()
                .map(Who::Only)
        };
        let mut streams = Vec::new();
        for rule in &file.streams {
            let what = format!("the stream rule for {:?}", rule.names);
            streams.push(StreamRule {
                names: glob::Pattern::new(&rule.names)
                    .map_err(|e| invalid(format!("{what}: {e}")))?,
                push: who(&rule.push, &what)?,
                pull: who(&rule.pull, &what)?,
            });
        }
        Ok(AccessPolicy {
            names,
            forwarders: who(&file.forwarders.register, "[forwarders]")?,
            streams,
        })
    }

    /// Whether `key` may do `op`; if not, why.
    fn check(&self, key: &PublicKey, op: Operation<'_>) -> std::result::Result<(), String> {
        let Some(name) = self.names.get(key) else {
            return Err(format!(
                "identity {key} is not allowed to use this hub (not in its access file)"
            ));
        };
        let allowed = match op {
            Operation::Connect => true,
            Operation::RegisterForwarder => self.forwarders.includes(key),
            Operation::Push(stream) | Operation::Pull(stream) => {
                match self.streams.iter().find(|r| r.names.matches(stream)) {
                    None => false,
                    Some(rule) if matches!(op, Operation::Push(_)) => rule.push.includes(key),
                    Some(rule) => rule.pull.includes(key),
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(format!("identity {name:?} ({key}) may not {op}"))
        }
    }
}

/// The hub's access rule, shared by its services: open, or closed by an
/// access file that `SIGHUP` reloads.
#[derive(Clone, Debug)]
pub enum Access {
    /// Anyone who reaches the hub may do anything (the default, for
    /// development: the hub warns at start).
    Open,
    /// Only identities in the access file, through a secure channel.
    Closed {
        /// The access file.
        path: PathBuf,
        /// What it said when last read.
        policy: Arc<RwLock<Arc<AccessPolicy>>>,
    },
    /// The Kafka child of a closed hub (see [`crate::kafka_child`]): only
    /// requests that the hub passed on through its gate, over a secure
    /// channel from the hub's identity `hub`. The hub checked each against
    /// its access file; client ids of read positions arrive as
    /// `{identity}/{client_id}`.
    Relayed {
        /// The identity (secure channel static key) of the hub.
        hub: PublicKey,
    },
}

impl Access {
    /// Closed by the access file at `path`.
    ///
    /// # Errors
    /// As [`AccessPolicy::load`].
    pub fn closed(path: impl Into<PathBuf>) -> Result<Access> {
        let path = path.into();
        let policy = AccessPolicy::load(&path)?;
        Ok(Access::Closed {
            path,
            policy: Arc::new(RwLock::new(Arc::new(policy))),
        })
    }

    /// Reads the access file again; a file that does not read or check
    /// leaves the rules as they were (logged). Nothing for an open hub.
    pub fn reload(&self) {
        let Access::Closed { path, policy } = self else {
            return;
        };
        match AccessPolicy::load(path) {
            Ok(new) => {
                let identities = new.names.len();
                *write(policy) = Arc::new(new);
                info!(file = %path.display(), identities, "access file reloaded");
            }
            Err(e) => {
                warn!(error = %e, "the access file did not reload; the rules stay as they were")
            }
        }
    }

    /// Whether the hub is closed (by an access file).
    pub fn is_closed(&self) -> bool {
        matches!(self, Access::Closed { .. })
    }

    /// Whether a secure channel from `key` may be made.
    pub(crate) fn admits(&self, key: &PublicKey) -> bool {
        self.check(Some(key), Operation::Connect).is_ok()
    }

    /// Whether a request from `identity` (the static key of the secure
    /// channel it came through; `None`: it did not come through one) may
    /// do `op`; if not, the reason to answer.
    pub(crate) fn check(
        &self,
        identity: Option<&PublicKey>,
        op: Operation<'_>,
    ) -> std::result::Result<(), String> {
        let policy = match self {
            Access::Open => return Ok(()),
            Access::Relayed { hub } if identity == Some(hub) => return Ok(()),
            Access::Relayed { .. } => return Err(RELAYED_ONLY.to_string()),
            Access::Closed { policy, .. } => policy,
        };
        let Some(key) = identity else {
            return Err(format!(
                "this hub is closed: reach it through a secure channel to its listener \
                 {LISTENER:?}, as an identity its access file names, to {op}"
            ));
        };
        let policy = read(policy).clone();
        policy.check(key, op)
    }
}

/// Why a closed hub's Kafka child ([`Access::Relayed`]) refuses what did
/// not come from its hub's gate.
pub(crate) const RELAYED_ONLY: &str =
    "this is a hub's Kafka child: only that hub may use it, through its gate";

/// The address of the hub's secure channel listener.
pub const LISTENER: &str = "secure_channel_listener";

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn policy() -> AccessPolicy {
        AccessPolicy::parse(&format!(
            r#"
            [identities]
            alice = "{}"
            bob = "{}"

            [[streams]]
            names = "sensor-*"
            push = ["alice"]
            pull = ["alice", "bob"]

            [[streams]]
            names = "public"
            push = ["*"]
            pull = ["*"]

            [forwarders]
            register = ["alice"]
            "#,
            key(1),
            key(2)
        ))
        .unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides_and_strangers_may_nothing() {
        let p = policy();
        let (alice, bob, eve) = (key(1), key(2), key(3));
        assert!(p.check(&alice, Operation::Push("sensor-1")).is_ok());
        assert!(p.check(&bob, Operation::Pull("sensor-1")).is_ok());
        let why = p.check(&bob, Operation::Push("sensor-1")).unwrap_err();
        assert!(why.contains("\"bob\"") && why.contains("push"), "{why}");
        assert!(p.check(&bob, Operation::Push("public")).is_ok());
        assert!(p.check(&alice, Operation::Pull("elsewhere")).is_err());
        assert!(p.check(&alice, Operation::RegisterForwarder).is_ok());
        assert!(p.check(&bob, Operation::RegisterForwarder).is_err());
        for op in [Operation::Connect, Operation::Pull("public")] {
            let why = p.check(&eve, op).unwrap_err();
            assert!(why.contains("not allowed to use this hub"), "{why}");
        }
    }

    #[test]
    fn a_malformed_access_file_is_refused_saying_where() {
        for (text, says) in [
            ("[identities]\nalice = \"00\"", "identity \"alice\""),
            (
                "[[streams]]\nnames = \"s\"\npush = [\"carol\"]",
                "which [identities] does not define",
            ),
            ("[[streams]]\nnames = \"[\"", "the stream rule"),
            ("[unknown]\nx = 1", "unknown field"),
            ("not toml at all", ""),
        ] {
            let err = AccessPolicy::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.message().contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_open_hub_allows_everything_and_a_closed_one_wants_a_channel() {
        assert!(Access::Open.check(None, Operation::Push("x")).is_ok());
        let closed = Access::Closed {
            path: PathBuf::new(),
            policy: Arc::new(RwLock::new(Arc::new(policy()))),
        };
        let why = closed.check(None, Operation::Connect).unwrap_err();
        assert!(why.contains("secure channel"), "{why}");
        assert!(closed.admits(&key(1)));
        assert!(!closed.admits(&key(3)));
    }
}
