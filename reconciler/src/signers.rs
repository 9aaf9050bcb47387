//! Which commits of the fleet repository may be applied: `repo.verify.allowed_signers`, git's
//! SSH signature format (`gpg.format ssh`), checked as `git verify-commit` with
//! `gpg.ssh.allowedSignersFile` checks it, in Rust (the RustCrypto `ssh-key` crate), never by
//! shelling out.
//!
//! The file is OpenSSH's `allowed_signers` format (`ssh-keygen(1)`, ALLOWED SIGNERS): one
//! key per line, `principals [options] keytype base64-key [comment]`; `#` comments and blank
//! lines. Options understood: `namespaces="git,…"` (the key signs commits only when `git` is
//! listed), `valid-after=` / `valid-before=` (`YYYYMMDD[HHMM[SS]]`, UTC with `Z` or without:
//! the commit's committer time must fall inside). `cert-authority` is refused when the file is
//! read (certificates are not supported), as is any option this module does not know: a
//! file that means more than fleet checks is a configuration error, not a weaker check.
//!
//! A commit is good when it carries an SSH signature (`gpgsig` header, `-----BEGIN SSH
//! SIGNATURE-----`) in the `git` namespace, made by a key the file lists for that namespace
//! and time, over the commit object without that header. Anything else (unsigned, OpenPGP,
//! another key, a signature that does not verify) is a [`Refusal`] that says which.

use ssh_key::{HashAlg, PublicKey, SshSig};
use std::fmt;

/// Git's namespace for commit and tag signatures.
pub const GIT_NAMESPACE: &str = "git";

/// One line of the file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// Who (`principals`, e.g. an e-mail address), as written.
    pub principals: String,
    /// The key.
    pub key: PublicKey,
    /// `namespaces=`, when given.
    pub namespaces: Option<Vec<String>>,
    /// `valid-after=`, unix seconds.
    pub valid_after: Option<i64>,
    /// `valid-before=`, unix seconds.
    pub valid_before: Option<i64>,
}

/// The whole file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    /// Its keys, in file order.
    pub signers: Vec<AllowedSigner>,
}

/// Why a line of the file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why a commit is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No signature at all.
    Unsigned,
    /// A signature that is not an SSH one (OpenPGP, X.509), or not readable.
    NotSsh {
        /// Why.
        detail: String,
    },
    /// Signed in another namespace than `git` (a signature made for another purpose).
    WrongNamespace {
        /// The one it has.
        namespace: String,
    },
    /// Made by a key the file does not list (for `git`, at the commit's time).
    UnknownKey {
        /// The key's SHA-256 fingerprint.
        fingerprint: String,
    },
    /// By a listed key, but it does not verify: the commit was changed after it was signed,
    /// or the signature forged.
    BadSignature {
        /// The key's SHA-256 fingerprint.
        fingerprint: String,
        /// Who the file says it is.
        principals: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unsigned => f.write_str("the commit is not signed"),
            Refusal::NotSsh { detail } => write!(
                f,
                "the commit's signature is not an SSH signature ({detail}); sign with `git config gpg.format ssh`"
            ),
            Refusal::WrongNamespace { namespace } => write!(
                f,
                "the commit's SSH signature is for namespace `{namespace}`, not `git`"
            ),
            Refusal::UnknownKey { fingerprint } => write!(
                f,
                "the commit is signed by {fingerprint}, which repo.verify.allowed_signers does not allow"
            ),
            Refusal::BadSignature {
                fingerprint,
                principals,
            } => write!(
                f,
                "the commit's signature by {fingerprint} ({principals}) does not verify: the commit was changed after it was signed"
            ),
        }
    }
}

/// A good signature: who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The file's principals for the key.
    pub principals: String,
    /// The key's SHA-256 fingerprint.
    pub fingerprint: String,
}

/// `YYYYMMDD[HHMM[SS]][Z]` as unix seconds (UTC).
fn parse_time(s: &str) -> Option<i64> {
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .unwrap_or(s);
    if !s.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&s.len()) {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (h, mi, se) = if s.len() >= 12 {
        (
            n(8, 10)?,
            n(10, 12)?,
            if s.len() == 14 { n(12, 14)? } else { 0 },
        )
    } else {
        (0, 0, 0)
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Split `s` at `sep` outside double quotes (quotes kept).
fn split_unquoted(s: &str, sep: impl Fn(char) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        if ch == '"' {
            quoted = !quoted;
            cur.push(ch);
        } else if sep(ch) && !quoted {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(ch);
        }
    }
    if quoted {
        return Err("an unclosed `\"`".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn is_key_type(w: &str) -> bool {
    w.starts_with("ssh-") || w.starts_with("ecdsa-sha2-") || w.starts_with("sk-")
}

impl AllowedSigners {
    /// Read the file's text; every line that cannot be read is an error (none is skipped).
    pub fn parse(text: &str) -> Result<AllowedSigners, Vec<LineError>> {
        let mut signers = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match Self::line(line) {
                Ok(s) => signers.push(s),
                Err(message) => errors.push(LineError {
                    line: i + 1,
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if signers.is_empty() {
            return Err(vec![LineError {
                line: 1,
                message: "the file lists no key: every commit would be refused".into(),
            }]);
        }
        Ok(AllowedSigners { signers })
    }

    fn line(line: &str) -> Result<AllowedSigner, String> {
        let w = split_unquoted(line, char::is_whitespace)?;
        let principals = w.first().ok_or("an empty line")?.clone();
        let at = w
            .iter()
            .position(|x| is_key_type(x))
            .ok_or("no key type (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa …) on the line")?;
        if at == 0 {
            return Err(
                "the line starts with a key: put the signer's principals (an e-mail address) first"
                    .into(),
            );
        }
        let options = &w[1..at];
        let key_text = w[at..].join(" ");
        let key = PublicKey::from_openssh(&key_text)
            .map_err(|e| format!("the key does not read: {e}"))?;
        let mut s = AllowedSigner {
            principals,
            key,
            namespaces: None,
            valid_after: None,
            valid_before: None,
        };
        let mut opts = Vec::new();
        for o in options {
            opts.extend(split_unquoted(o, |c| c == ',')?);
        }
        for o in &opts {
            let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
            let v = v.trim_matches('"');
            match k.to_ascii_lowercase().as_str() {
                "namespaces" => {
                    s.namespaces = Some(v.split(',').map(|n| n.trim().to_string()).collect())
                }
                "valid-after" => {
                    s.valid_after =
                        Some(parse_time(v).ok_or_else(|| {
                            format!("valid-after={v}: expected YYYYMMDD[HHMM[SS]]")
                        })?)
                }
                "valid-before" => {
                    s.valid_before =
                        Some(parse_time(v).ok_or_else(|| {
                            format!("valid-before={v}: expected YYYYMMDD[HHMM[SS]]")
                        })?)
                }
                "cert-authority" => {
                    return Err("cert-authority keys (SSH certificates) are not supported: list each signing key".into());
                }
                other => return Err(format!("unknown option `{other}`")),
            }
        }
        Ok(s)
    }

    /// Check `signature` (the commit's `gpgsig` header) over `signed` (the commit object
    /// without it), for a commit made at `time` (committer time, unix seconds).
    pub fn verify(&self, signature: &[u8], signed: &[u8], time: i64) -> Result<Signed, Refusal> {
        let text = String::from_utf8_lossy(signature);
        if !text
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            let kind = text.lines().next().unwrap_or("").trim().to_string();
            return Err(Refusal::NotSsh { detail: kind });
        }
        let sig = SshSig::from_pem(signature).map_err(|e| Refusal::NotSsh {
            detail: e.to_string(),
        })?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(Refusal::WrongNamespace {
                namespace: sig.namespace().to_string(),
            });
        }
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        let allowed = self.signers.iter().find(|s| {
            s.key.key_data() == sig.public_key()
                && s.namespaces
                    .as_ref()
                    .is_none_or(|n| n.iter().any(|x| x == GIT_NAMESPACE))
                && s.valid_after.is_none_or(|a| time >= a)
                && s.valid_before.is_none_or(|b| time <= b)
        });
        let Some(allowed) = allowed else {
            return Err(Refusal::UnknownKey { fingerprint });
        };
        allowed
            .key
            .verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|_| Refusal::BadSignature {
                fingerprint: fingerprint.clone(),
                principals: allowed.principals.clone(),
            })?;
        Ok(Signed {
            principals: allowed.principals.clone(),
            fingerprint,
        })
    }

    /// Check commit `oid` of `repo`.
    pub fn verify_commit(
        &self,
        repo: &git2::Repository,
        oid: git2::Oid,
    ) -> Result<Signed, Refusal> {
        let time = repo
            .find_commit(oid)
            .map(|c| c.committer().when().seconds())
            .unwrap_or(0);
        match repo.extract_signature(&oid, None) {
            Ok((sig, signed)) => self.verify(&sig, &signed, time),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Err(Refusal::Unsigned),
            Err(e) => Err(Refusal::NotSsh {
                detail: e.message().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMv4+0fCEavYMb51TF5NynYid7E+GzGmk+9+MBsu7tD2";

    #[test]
    fn the_file_reads_keys_options_and_comments() {
        let text = format!(
            "# the release managers\n\nalice@acme.example {KEY} alice's laptop\nbob@acme.example namespaces=\"git,file\",valid-after=20260101,valid-before=\"20271231235959Z\" {KEY}\n"
        );
        let s = AllowedSigners::parse(&text).unwrap();
        assert_eq!(s.signers.len(), 2);
        assert_eq!(s.signers[0].principals, "alice@acme.example");
        assert_eq!(
            s.signers[1].namespaces.as_deref(),
            Some(&["git".to_string(), "file".to_string()][..])
        );
        assert_eq!(s.signers[1].valid_after, Some(1_767_225_600));
        assert_eq!(s.signers[1].valid_before, Some(1_830_297_599));
    }

    #[test]
    fn every_line_that_cannot_be_read_is_located() {
        let text = format!(
            "{KEY}\nalice@x cert-authority {KEY}\nbob@x no-such-option {KEY}\ncarol@x ssh-ed25519 AAAAnotakey\ndave@x valid-after=2026 {KEY}\n"
        );
        let e = AllowedSigners::parse(&text).unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5], "{e:?}");
        assert!(e[1].message.contains("cert-authority"));
        assert!(e[2].message.contains("no-such-option"));
        assert!(AllowedSigners::parse("# nothing\n").is_err());
    }

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(parse_time("19700101"), Some(0));
        assert_eq!(parse_time("20261204"), Some(1_796_342_400));
        assert_eq!(parse_time("202612040130Z"), Some(1_796_347_800));
        assert_eq!(parse_time("2026120401"), None);
        assert_eq!(parse_time("20261304"), None);
    }

    #[test]
    fn what_is_not_an_ssh_signature_is_refused_as_such() {
        let s = AllowedSigners::parse(&format!("a@x {KEY}")).unwrap();
        let pgp = b"-----BEGIN PGP SIGNATURE-----\n\niQEz\n-----END PGP SIGNATURE-----\n";
        assert!(matches!(
            s.verify(pgp, b"tree 0", 0),
            Err(Refusal::NotSsh { .. })
        ));
        let junk = b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n";
        assert!(matches!(
            s.verify(junk, b"tree 0", 0),
            Err(Refusal::NotSsh { .. })
        ));
    }
}
