//! HMAC-SHA256 signatures in the Standard Webhooks format.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// A shared signing secret. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningSecretError {
    #[error("the secret after `whsec_` is not valid base64")]
    NotBase64,
    #[error("the secret is shorter than 16 bytes")]
    TooShort,
}

impl SigningSecret {
    /// Accepts `whsec_<base64>` as Standard Webhooks senders issue it, or
    /// any other string, whose UTF-8 bytes are then the key.
    pub fn parse(text: &str) -> Result<Self, SigningSecretError> {
        let text = text.trim();
        let key = match text.strip_prefix("whsec_") {
            Some(b64) => STANDARD.decode(b64).map_err(|_| SigningSecretError::NotBase64)?,
            None => text.as_bytes().to_vec(),
        };
        if key.len() < 16 {
            return Err(SigningSecretError::TooShort);
        }
        Ok(Self { key })
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// True when any `v1,<base64>` entry of the header matches, compared in
    /// constant time.
    pub fn verify(&self, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
        let expected = self.mac(id, timestamp, body);
        header
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|sig| sig.len() == expected.len() && bool::from(sig.ct_eq(&expected)))
    }
}

/// The `webhook-signature` header value for a message: `v1,<base64>`.
pub fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(secret.mac(id, &timestamp.to_string(), body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks reference libraries' tests.
    #[test]
    fn matches_the_reference_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_never_printed() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
    }

    #[test]
    fn short_or_broken_secrets_are_refused() {
        assert_eq!(SigningSecret::parse("short").unwrap_err(), SigningSecretError::TooShort);
        assert_eq!(SigningSecret::parse("whsec_!!!").unwrap_err(), SigningSecretError::NotBase64);
    }
}
