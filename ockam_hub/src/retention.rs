//! How much of each stream the durable store keeps (issue 17): at most
//! so many bytes, so many messages, or messages younger than so long,
//! per hub and per stream-name pattern. The oldest messages go first, in
//! the background (see [`crate::DurableStore::start_retention`]); a reader
//! whose position was trimmed away is told so and continues from the
//! oldest kept message ([`ockam_stream_client::protocol::StreamError::trimmed`]).
//!
//! The file (`--retention-file`, TOML) overrides the hub's defaults
//! (`--retention-max-bytes`, `--retention-max-messages`,
//! `--retention-max-age`) per stream-name pattern; the first pattern that
//! matches a stream decides, and a limit it leaves out is the default's:
//!
//! ```toml
//! [[streams]]
//! names = "metrics-*"
//! max_age = "1h"          # s, m, h or d
//! max_bytes = 1073741824  # bytes
//!
//! [[streams]]
//! names = "audit-*"
//! max_messages = 10000000
//! ```
//!
//! Kafka's streams are kept as the Kafka topics' own retention says.

use ockam_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Limits on what one stream keeps; `None`: no limit of that kind. A
/// stream over any of them loses its oldest messages until it is under
/// all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Most bytes of message data.
    pub max_bytes: Option<u64>,
    /// Most messages.
    pub max_messages: Option<u64>,
    /// Oldest a message may be (from when the hub stored it; the durable
    /// store knows that to the second, and removes a message up to a
    /// second after it passed this age, never before).
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Whether it limits anything.
    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_messages.is_some() || self.max_age.is_some()
    }

    /// `self`'s limits, and `default`'s where `self` has none.
    fn or(self, default: Retention) -> Retention {
        Retention {
            max_bytes: self.max_bytes.or(default.max_bytes),
            max_messages: self.max_messages.or(default.max_messages),
            max_age: self.max_age.or(default.max_age),
        }
    }
}

/// The hub's retention: defaults and per-pattern overrides.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// For streams no rule names.
    pub default: Retention,
    rules: Vec<(glob::Pattern, Retention)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    #[serde(default)]
    streams: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    names: String,
    max_bytes: Option<u64>,
    max_messages: Option<u64>,
    max_age: Option<String>,
}

/// Parses a duration such as `90s`, `15m`, `1h` or `7d` (a number and a
/// unit: s, m, h or d).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for anything else.
pub fn parse_age(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if seconds > 0 && n > 0 => Ok(Duration::from_secs(n.saturating_mul(seconds))),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{text:?} is not an age such as 90s, 15m, 1h or 7d"),
        )),
    }
}

impl RetentionPolicy {
    /// `default` for every stream.
    pub fn new(default: Retention) -> Self {
        RetentionPolicy {
            default,
            rules: Vec::new(),
        }
    }

    /// `default`, overridden per pattern by the retention file at `path`
    /// (see the [module docs](self)).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when it cannot be read; [`ErrorKind::InvalidInput`]
    /// when it is not valid TOML of that shape, a pattern is malformed or
    /// an age does not parse (the message says which).
    pub fn load(default: Retention, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot read the retention file {}", path.display()),
                e,
            )
        })?;
        Self::parse(default, &text).map_err(|e| {
            Error::new(
                e.kind(),
                format!("the retention file {}: {}", path.display(), e.message()),
            )
        })
    }

    /// [`RetentionPolicy::load`] of the file's text.
    ///
    /// # Errors
    /// As [`RetentionPolicy::load`], except for reading.
    pub fn parse(default: Retention, text: &str) -> Result<Self> {
        let invalid = |why: String| Error::new(ErrorKind::InvalidInput, why);
        let file: RetentionFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut rules = Vec::new();
        for rule in file.streams {
            let names = glob::Pattern::new(&rule.names)
                .map_err(|e| invalid(format!("the rule for {:?}: {e}", rule.names)))?;
            let max_age = rule
                .max_age
                .as_deref()
                .map(parse_age)
                .transpose()
                .map_err(|e| invalid(format!("the rule for {:?}: {}", rule.names, e.message())))?;
            rules.push((
                names,
                Retention {
                    max_bytes: rule.max_bytes,
                    max_messages: rule.max_messages,
                    max_age,
                },
            ));
        }
        Ok(RetentionPolicy { default, rules })
    }

    /// The limits of `stream`.
    pub fn for_stream(&self, stream: &str) -> Retention {
        self.rules
            .iter()
            .find(|(names, _)| names.matches(stream))
            .map_or(self.default, |(_, r)| r.or(self.default))
    }

    /// Whether any stream has a limit.
    pub fn is_limited(&self) -> bool {
        self.default.is_limited() || self.rules.iter().any(|(_, r)| r.is_limited())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_decides_over_the_defaults() {
        let default = Retention {
            max_messages: Some(100),
            ..Default::default()
        };
        let p = RetentionPolicy::parse(
            default,
            r#"
            [[streams]]
            names = "metrics-*"
            max_age = "1h"
            max_bytes = 1000

            [[streams]]
            names = "metrics-raw"
            max_messages = 5
            "#,
        )
        .unwrap();
        let m = p.for_stream("metrics-raw");
        assert_eq!(m.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(m.max_bytes, Some(1000));
        assert_eq!(m.max_messages, Some(100), "the default fills in");
        assert_eq!(p.for_stream("other"), default);
        assert!(p.is_limited());
        assert!(!RetentionPolicy::default().is_limited());
    }

    #[test]
    fn bad_files_and_ages_are_refused_saying_where() {
        for (text, says) in [
            ("[[streams]]\nnames = \"[\"", "the rule for"),
            (
                "[[streams]]\nnames = \"a\"\nmax_age = \"3 weeks\"",
                "not an age",
            ),
            ("[[streams]]\nnames = \"a\"\nmax_size = 3", "unknown field"),
        ] {
            let err = RetentionPolicy::parse(Retention::default(), text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.message().contains(says), "{text:?}: {err}");
        }
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("h").is_err());
    }
}
