//! HMAC-SHA256 signatures: the webhook's `X-Sentinel-Signature` header and the signed,
//! expiring tokens of acknowledge links. Comparisons are constant-time (the `hmac` crate's
//! `verify_slice`), so a forger learns nothing from how long a refusal took.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the webhook signature header.
pub const SIGNATURE_HEADER: &str = "x-sentinel-signature";

/// Receivers should refuse signatures older than this (replay protection).
#[allow(dead_code)] // the receiver's side, kept beside the sender's so the two cannot drift
pub const MAX_SIGNATURE_AGE_SECS: i64 = 300;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `t=<unix secs>,v1=<hex hmac_sha256(secret, "<t>.<body>")>`.
pub fn webhook_signature(secret: &[u8], unix_secs: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(unix_secs.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("t={unix_secs},v1={}", hex(&m.finalize().into_bytes()))
}

#[allow(dead_code)] // the receiver's side (see MAX_SIGNATURE_AGE_SECS)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is too old or from the future (replay?)")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Check a webhook signature header as a receiver would (the algorithm documented in
/// docs/notifications.md).
#[allow(dead_code)] // the receiver's side (see MAX_SIGNATURE_AGE_SECS)
pub fn verify_webhook_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = unhex(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    if (now_secs - t).abs() > MAX_SIGNATURE_AGE_SECS {
        return Err(SignatureError::Stale);
    }
    let mut m = mac(secret);
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.verify_slice(&v1).map_err(|_| SignatureError::Mismatch)
}

/// What an acknowledge link grants: one alarm, for one contact, until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaim {
    pub alarm_id: u64,
    pub contact: String,
    pub expires_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link has expired")]
    Expired,
    #[error("the link's signature does not match")]
    Forged,
}

/// `<hex payload>.<hex hmac>` where payload is `ack:<alarm_id>:<contact>:<expires>`. Hex keeps
/// the token URL-safe without another dependency; contact names are short by validation.
pub fn ack_token(secret: &[u8], claim: &AckClaim) -> String {
    let payload = format!(
        "ack:{}:{}:{}",
        claim.alarm_id, claim.contact, claim.expires_secs
    );
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!(
        "{}.{}",
        hex(payload.as_bytes()),
        hex(&m.finalize().into_bytes())
    )
}

pub fn verify_ack_token(secret: &[u8], token: &str, now_secs: i64) -> Result<AckClaim, TokenError> {
    let (payload_hex, sig_hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = unhex(payload_hex).ok_or(TokenError::Malformed)?;
    let sig = unhex(sig_hex).ok_or(TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(&payload);
    m.verify_slice(&sig).map_err(|_| TokenError::Forged)?;
    let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
    let mut parts = payload.splitn(4, ':');
    let (Some("ack"), Some(id), Some(contact), Some(exp)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let claim = AckClaim {
        alarm_id: id.parse().map_err(|_| TokenError::Malformed)?,
        contact: contact.to_owned(),
        expires_secs: exp.parse().map_err(|_| TokenError::Malformed)?,
    };
    if now_secs > claim.expires_secs {
        return Err(TokenError::Expired);
    }
    Ok(claim)
}

/// SHA-256 of a bearer token, hex (how `[[security.tokens]]` stores them).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex(&Sha256::digest(s.as_bytes()))
}

/// Constant-time equality of two byte strings of possibly different length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signature_round_trips_and_refuses_tampering_and_replay() {
        let body = br#"{"id":"s-1-1"}"#;
        let h = webhook_signature(b"k", 1_000, body);
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(verify_webhook_signature(b"k", &h, body, 1_010), Ok(()));
        assert_eq!(
            verify_webhook_signature(b"other", &h, body, 1_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_webhook_signature(b"k", &h, b"{}", 1_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_webhook_signature(b"k", &h, body, 1_000 + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_webhook_signature(b"k", "v1=00", body, 1_000),
            Err(SignatureError::Malformed)
        );
        // The timestamp is covered: moving it breaks the signature.
        let moved = h.replace("t=1000", "t=1001");
        assert_eq!(
            verify_webhook_signature(b"k", &moved, body, 1_001),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut m = mac(b"Jefe");
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ack_tokens_expire_and_cannot_be_forged() {
        let claim = AckClaim {
            alarm_id: 7,
            contact: "wang".into(),
            expires_secs: 2_000,
        };
        let t = ack_token(b"secret", &claim);
        assert_eq!(verify_ack_token(b"secret", &t, 1_999), Ok(claim.clone()));
        assert_eq!(
            verify_ack_token(b"secret", &t, 2_001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_ack_token(b"wrong", &t, 1_000),
            Err(TokenError::Forged)
        );
        let other = ack_token(
            b"secret",
            &AckClaim {
                alarm_id: 8,
                ..claim
            },
        );
        let (payload8, _) = other.split_once('.').unwrap_or_default();
        let (_, sig7) = t.split_once('.').unwrap_or_default();
        assert_eq!(
            verify_ack_token(b"secret", &format!("{payload8}.{sig7}"), 1_000),
            Err(TokenError::Forged)
        );
        assert_eq!(
            verify_ack_token(b"secret", "zz", 1_000),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
