//! Secrets from the environment: admin API tokens with their roles.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, so
//! neither a log line nor a timing difference can give one away.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Bank statements and payments: read and write.
    Accountant,
    /// Read everything, change nothing.
    Viewer,
}

/// Environment variables listing tokens per role, comma-separated.
pub const TOKEN_VARS: [(&str, Role); 3] = [
    ("DEALBRIDGE_ADMIN_TOKENS", Role::Admin),
    ("DEALBRIDGE_ACCOUNTANT_TOKENS", Role::Accountant),
    ("DEALBRIDGE_VIEWER_TOKENS", Role::Viewer),
];

const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("environment variable {var}: {message}")]
pub struct SecretError {
    pub var: String,
    pub message: String,
}

/// The configured API tokens. `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct ApiTokens {
    digests: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.digests.len())
    }
}

impl ApiTokens {
    /// Reads the token variables through `lookup` (the process environment
    /// in production, a map in tests).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SecretError> {
        let mut tokens = Self::default();
        for (var, role) in TOKEN_VARS {
            let Some(list) = lookup(var) else { continue };
            for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.len() < MIN_TOKEN_LEN {
                    return Err(SecretError {
                        var: var.into(),
                        message: format!("every token must be at least {MIN_TOKEN_LEN} characters"),
                    });
                }
                tokens.digests.push((Sha256::digest(token.as_bytes()).into(), role));
            }
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The role of a presented token. Every configured digest is compared
    /// (no early exit), each in constant time.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (known, role) in &self.digests {
            if bool::from(known.ct_eq(&digest)) && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn tokens_map_to_their_roles() {
        let t = ApiTokens::from_env(env(&[
            ("DEALBRIDGE_ADMIN_TOKENS", "admin-token-0123456789"),
            ("DEALBRIDGE_VIEWER_TOKENS", "viewer-token-0123456789, viewer-token-abcdefghij"),
        ]))
        .unwrap();
        assert_eq!(t.role_of("admin-token-0123456789"), Some(Role::Admin));
        assert_eq!(t.role_of("viewer-token-abcdefghij"), Some(Role::Viewer));
        assert_eq!(t.role_of("viewer-token-012345678"), None);
        assert_eq!(format!("{t:?}"), "ApiTokens(3 tokens)");
    }

    #[test]
    fn short_tokens_are_refused_without_echoing_them() {
        let err = ApiTokens::from_env(env(&[("DEALBRIDGE_ADMIN_TOKENS", "short")])).unwrap_err();
        assert_eq!(err.var, "DEALBRIDGE_ADMIN_TOKENS");
        assert!(!err.to_string().contains("short,"));
    }
}
