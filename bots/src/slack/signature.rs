//! Verifying that a request comes from Slack (the `v0` signing scheme).
//!
//! Slack signs every request it sends to an app: `X-Slack-Signature` is `v0=` and the hex
//! HMAC-SHA256, under the app's signing secret, of `v0:<X-Slack-Request-Timestamp>:<body>`.
//! A request is accepted only when the signature matches (compared in constant time by
//! `hmac`'s `verify_slice`), the timestamp is within five minutes of now (either side), and
//! the same signature was not seen before within that window (a captured request replayed
//! while still fresh).

use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::sync::Mutex;

/// Largest age (or lead) of a request's timestamp, seconds.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request was refused. Messages are safe to return to the caller: they never show
/// the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signing secret is configured: nothing can be verified.
    #[error(
        "no Slack signing secret configured (set the variable named by slack.signing_secret_env)"
    )]
    NotConfigured,
    /// A header is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The timestamp is not a number.
    #[error("X-Slack-Request-Timestamp is not a unix time")]
    BadTimestamp,
    /// Older than five minutes.
    #[error("request timestamp is {0} s old (over 5 minutes): refused as a possible replay")]
    Stale(i64),
    /// More than five minutes ahead.
    #[error("request timestamp is {0} s in the future (over 5 minutes)")]
    Future(i64),
    /// Not `v0=<64 hex>`.
    #[error("X-Slack-Signature is not v0=<hex>")]
    Malformed,
    /// Does not match.
    #[error("signature does not match")]
    Mismatch,
    /// Seen before.
    #[error("this signed request was already received: refused as a replay")]
    Replayed,
}

/// A signing secret. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// From the secret's text.
    pub fn new(s: impl Into<Vec<u8>>) -> SigningSecret {
        SigningSecret(s.into())
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Check one request, statelessly: signature and timestamp window. `now_s` is unix seconds.
pub fn verify(
    secret: &SigningSecret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::Missing("X-Slack-Request-Timestamp"))?;
    let sig = signature.ok_or(SignatureError::Missing("X-Slack-Signature"))?;
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let age = now_s.saturating_sub(t);
    if age > MAX_SKEW_SECS {
        return Err(SignatureError::Stale(age));
    }
    if -age > MAX_SKEW_SECS {
        return Err(SignatureError::Future(-age));
    }
    let hex = sig
        .trim()
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed)?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret.0)
        .map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v0:");
    mac.update(ts.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// [`verify`] plus replay protection: remembers the signatures it accepted for the
/// five-minute window and refuses a second delivery of the same one.
#[derive(Debug)]
pub struct Verifier {
    secret: Option<SigningSecret>,
    seen: Mutex<HashMap<String, i64>>,
}

impl Verifier {
    /// A verifier; `None` refuses everything with [`SignatureError::NotConfigured`].
    pub fn new(secret: Option<SigningSecret>) -> Verifier {
        Verifier {
            secret,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a secret is configured.
    pub fn configured(&self) -> bool {
        self.secret.is_some()
    }

    /// Check a request at `now_s`.
    pub fn check(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), SignatureError> {
        let secret = self.secret.as_ref().ok_or(SignatureError::NotConfigured)?;
        verify(secret, timestamp, signature, body, now_s)?;
        let sig = signature.unwrap_or_default().trim().to_ascii_lowercase();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| now_s.saturating_sub(*at) <= 2 * MAX_SKEW_SECS);
        if seen.contains_key(&sig) {
            return Err(SignatureError::Replayed);
        }
        seen.insert(sig, now_s);
        Ok(())
    }
}

/// The `v0=` signature of `body` at `timestamp` (for tests and tools that call fleet as
/// Slack would).
pub fn sign(secret: &SigningSecret, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut s = String::from("v0=");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Slack's "Verifying requests from Slack" documentation.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn s() -> SigningSecret {
        SigningSecret::new(SECRET)
    }

    #[test]
    fn slacks_published_example() {
        let now = 1_531_420_618 + 10;
        assert_eq!(
            verify(&s(), Some(TS), Some(SIG), BODY.as_bytes(), now),
            Ok(())
        );
        assert_eq!(sign(&s(), TS, BODY.as_bytes()), SIG);
    }

    #[test]
    fn tampered_wrong_secret_and_malformed_are_refused() {
        let now = 1_531_420_618;
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify(&s(), Some(TS), Some(SIG), tampered.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &SigningSecret::new("wrong"),
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: the same body and signature at another time fail.
        assert_eq!(
            verify(&s(), Some("1531420619"), Some(SIG), BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&s(), Some(TS), Some(&SIG[3..]), BODY.as_bytes(), now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&s(), Some(TS), Some("v0=zz"), BODY.as_bytes(), now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&s(), None, Some(SIG), BODY.as_bytes(), now),
            Err(SignatureError::Missing("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            verify(&s(), Some(TS), None, BODY.as_bytes(), now),
            Err(SignatureError::Missing("X-Slack-Signature"))
        );
        assert_eq!(
            verify(&s(), Some("soon"), Some(SIG), BODY.as_bytes(), now),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let t = 1_531_420_618;
        assert_eq!(
            verify(&s(), Some(TS), Some(SIG), BODY.as_bytes(), t + 300),
            Ok(())
        );
        assert_eq!(
            verify(&s(), Some(TS), Some(SIG), BODY.as_bytes(), t + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(&s(), Some(TS), Some(SIG), BODY.as_bytes(), t - 300),
            Ok(())
        );
        assert_eq!(
            verify(&s(), Some(TS), Some(SIG), BODY.as_bytes(), t - 301),
            Err(SignatureError::Future(301))
        );
    }

    #[test]
    fn a_replay_within_the_window_is_refused() {
        let v = Verifier::new(Some(s()));
        let t = 1_531_420_618;
        assert_eq!(v.check(Some(TS), Some(SIG), BODY.as_bytes(), t), Ok(()));
        assert_eq!(
            v.check(Some(TS), Some(SIG), BODY.as_bytes(), t + 5),
            Err(SignatureError::Replayed)
        );
        // After the window the timestamp itself is too old.
        assert_eq!(
            v.check(Some(TS), Some(SIG), BODY.as_bytes(), t + 400),
            Err(SignatureError::Stale(400))
        );
        let none = Verifier::new(None);
        assert_eq!(
            none.check(Some(TS), Some(SIG), BODY.as_bytes(), t),
            Err(SignatureError::NotConfigured)
        );
        assert!(!format!("{:?}", s()).contains(SECRET));
    }
}
