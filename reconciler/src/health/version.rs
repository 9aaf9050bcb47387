//! The version a daemon says it runs ([`DaemonVersion`]), read from its own answer
//! (`getnetworkinfo`'s `subversion`, `web3_clientVersion`, an http probe's version pointer),
//! and **the one rule** for whether it is the version fleet recorded ([`DaemonVersion::is`]).
//!
//! Clients say their version in their own words: bitcoind `/Satoshi:28.1.0/`, litecoind
//! `/LitecoinCore:0.21.4/`, geth `Geth/v1.14.12-stable-293a300d/linux-amd64/go1.23.4`, anvil
//! `anvil/v1.7.1`. The first `v`-prefixed dotted number that starts a word is the version,
//! else the first dotted number that does, up to four parts. A tag and a report are the same version
//! when their numbers are equal with trailing zeros ignored: tag `28.1` is `28.1.0`, tag
//! `v1.14.12` is `1.14.12`, tag `1.14.12-alltools` is `1.14.12`. A tag with no number leading
//! it (`latest`) cannot be compared, and then the tag stands.

use fleet_repo_schema::values::Version;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most parts read of a version (0.21.2.2 has four).
const MAX_PARTS: usize = 4;

/// A version as a daemon reports it: its dotted numbers. Small and `Copy`, so a reading
/// carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DaemonVersion {
    parts: [u32; MAX_PARTS],
    len: u8,
}

impl DaemonVersion {
    /// The version in a client's own words, or None when it names none: the first
    /// `v`-prefixed dotted number that starts a word (`Geth/10.0.1.5/v1.14.12…`: a node
    /// identity before the version is not taken for it), else the first dotted number that
    /// starts a word (`/Satoshi:28.1.0/`). A lone number (`0x0`, a build count) is none.
    pub fn from_client(text: &str) -> Option<DaemonVersion> {
        let b = text.as_bytes();
        let word_start =
            |i: usize| i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let mut first = None;
        let mut i = 0;
        while i < b.len() {
            let prefixed = (b[i] == b'v' || b[i] == b'V')
                && word_start(i)
                && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            let plain = b[i].is_ascii_digit() && word_start(i);
            if !prefixed && !plain {
                i += 1;
                continue;
            }
            let at = if prefixed { i + 1 } else { i };
            // The whole dotted token, so that a failed one is skipped at once.
            let len = b[at..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == b'.')
                .count();
            let found = numbers(&text[at..at + len]).filter(|v| v.len > 1);
            match found {
                Some(v) if prefixed => return Some(v),
                Some(v) => {
                    first = first.or(Some(v));
                }
                None => {}
            }
            i = at + len.max(1);
        }
        first
    }

    /// A recorded version's numbers (None: it has none leading it, e.g. `latest`).
    pub fn of_tag(tag: &Version) -> Option<DaemonVersion> {
        let s = tag.as_str();
        numbers(s.strip_prefix(['v', 'V']).unwrap_or(s))
    }

    /// The one rule: whether the daemon runs `tag`. None when `tag` cannot be compared (no
    /// number leads it): then the tag stands.
    pub fn is(&self, tag: &Version) -> Option<bool> {
        DaemonVersion::of_tag(tag).map(|t| t.trimmed() == self.trimmed())
    }

    fn trimmed(&self) -> &[u32] {
        let mut n = self.len as usize;
        while n > 1 && self.parts[n - 1] == 0 {
            n -= 1;
        }
        &self.parts[..n]
    }
}

/// Dotted numbers at the start of `s`: `28.1.0/` → 28.1.0. None unless it starts with a digit
/// or a part does not fit.
fn numbers(s: &str) -> Option<DaemonVersion> {
    let mut v = DaemonVersion {
        parts: [0; MAX_PARTS],
        len: 0,
    };
    for part in s.split('.') {
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || v.len as usize == MAX_PARTS {
            break;
        }
        v.parts[v.len as usize] = part[..digits].parse().ok()?;
        v.len += 1;
        if digits < part.len() {
            break;
        }
    }
    (v.len > 0).then_some(v)
}

impl fmt::Display for DaemonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts[..self.len as usize].iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl From<DaemonVersion> for String {
    fn from(v: DaemonVersion) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for DaemonVersion {
    type Error = String;
    fn try_from(s: String) -> Result<DaemonVersion, String> {
        numbers(&s).ok_or_else(|| format!("not a version: {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(s: &str) -> Option<String> {
        DaemonVersion::from_client(s).map(|v| v.to_string())
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn clients_say_their_version_in_their_own_words() {
        assert_eq!(client("/Satoshi:28.1.0/").as_deref(), Some("28.1.0"));
        assert_eq!(client("/LitecoinCore:0.21.4/").as_deref(), Some("0.21.4"));
        assert_eq!(
            client("/Satoshi:0.21.2.2(comment)/").as_deref(),
            Some("0.21.2.2")
        );
        assert_eq!(
            client("Geth/v1.14.12-stable-293a300d/linux-amd64/go1.23.4").as_deref(),
            Some("1.14.12")
        );
        assert_eq!(client("anvil/v1.7.1").as_deref(), Some("1.7.1"));
        assert_eq!(client("2.0.2").as_deref(), Some("2.0.2"));
        // A lone number is not a version; the first dotted one is.
        assert_eq!(client("0x0"), None);
        assert_eq!(client("build 7, v2.1"), Some("2.1".into()));
        assert_eq!(
            client("erigon/2.60.1/linux-amd64").as_deref(),
            Some("2.60.1")
        );
        // A digit inside a word is not a version; nothing at all is None.
        assert_eq!(client("x86_64 build"), None);
        assert_eq!(client("bor"), None);
        assert_eq!(client(""), None);
        assert_eq!(client("/Satoshi:99999999999.1/"), None);
        assert_eq!(client("1..2"), None);
        // Five parts read as four.
        assert_eq!(client("1.2.3.4.5").as_deref(), Some("1.2.3.4"));
        // A node identity before geth's version is not its version; a number too large to
        // be one is skipped whole, not read from its middle.
        assert_eq!(
            client("Geth/10.0.1.5/v1.14.12-stable/linux-amd64/go1.23.4").as_deref(),
            Some("1.14.12")
        );
        assert_eq!(client("v4294967296.28.1"), None);
        assert_eq!(client("4294967296.1 and 2.3").as_deref(), Some("2.3"));
    }

    #[test]
    fn the_one_rule_ignores_trailing_zeros_and_a_tags_prefix_and_suffix() {
        let d = |s: &str| DaemonVersion::from_client(s).unwrap();
        assert_eq!(d("/Satoshi:28.1.0/").is(&v("28.1")), Some(true));
        assert_eq!(d("/Satoshi:28.0.0/").is(&v("28.1")), Some(false));
        assert_eq!(d("Geth/v1.14.12-stable").is(&v("v1.14.12")), Some(true));
        assert_eq!(d("Geth/v1.14.12").is(&v("1.14.12-alltools")), Some(true));
        assert_eq!(d("28.0").is(&v("28.0.0")), Some(true));
        assert_eq!(d("28.0").is(&v("28")), Some(true));
        assert_eq!(d("28.0.1").is(&v("28")), Some(false));
        assert_eq!(d("1.0").is(&v("latest")), None);
    }

    #[test]
    fn round_trips_as_a_string() {
        let x = DaemonVersion::from_client("/Satoshi:28.1.0/").unwrap();
        let j = serde_json::to_string(&x).unwrap();
        assert_eq!(j, "\"28.1.0\"");
        assert_eq!(serde_json::from_str::<DaemonVersion>(&j).unwrap(), x);
        assert!(serde_json::from_str::<DaemonVersion>("\"x\"").is_err());
    }
}
