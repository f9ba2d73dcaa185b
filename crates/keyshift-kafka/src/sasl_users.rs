//! SASL users of the embedded broker: SCRAM credentials seeded into tansu's storage.
//!
//! Why: the secured paths (SASL over every client, `--client-config`) must be tested here, on
//! the embedded broker, not only documented. tansu 0.6 authenticates SCRAM-SHA-256 and
//! SCRAM-SHA-512 against credentials in its storage (what Kafka's AlterUserScramCredentials
//! writes); its PLAIN accepts any password, so the embedded broker is for testing clients'
//! configuration, never a secure broker.
//!
//! How: [`SaslUser`]s come from `--sasl-users FILE` (one `name:password` per line) or
//! [`BrokerOptions::sasl_users`](crate::BrokerOptions::sasl_users); before tansu starts, each
//! gets both SCRAM credentials as RFC 5802 defines them — SaltedPassword = PBKDF2(HMAC-H,
//! password, salt, 4096), StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey =
//! HMAC(SaltedPassword, "Server Key") — with a random salt. The password itself is never
//! stored or printed.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use tansu_sans_io::ScramMechanism;
use tansu_storage::{ScramCredential, Storage, StorageContainer};

/// PBKDF2 iterations of the seeded credentials (Kafka's minimum and usual value).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A user of the embedded broker.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslUser {
    /// The user name.
    pub name: String,
    /// Its password (never displayed).
    pub password: String,
}

impl fmt::Debug for SaslUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaslUser({}, ***)", self.name)
    }
}

impl SaslUser {
    /// A user `name` with `password`.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            password: password.into(),
        }
    }

    /// Reads `name:password` lines (blank lines and `#` comments skipped); the error names
    /// the line, never a password.
    pub fn read_file(path: &Path) -> Result<Vec<Self>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((name, password)) if !name.trim().is_empty() && !password.is_empty() => {
                    users.push(Self::new(name.trim(), password));
                }
                _ => {
                    return Err(format!(
                        "{}, line {}: expected name:password",
                        path.display(),
                        i + 1
                    ))
                }
            }
        }
        if users.is_empty() {
            return Err(format!(
                "{}: no users (name:password lines)",
                path.display()
            ));
        }
        Ok(users)
    }
}

/// StoredKey and ServerKey of `password` with `salt` under hash `$hash` (one body for both
/// SCRAM hashes; the digest crates' generic bounds would say less than this).
macro_rules! scram_keys {
    ($hash:ty, $password:expr, $salt:expr) => {{
        let mut salted = vec![0u8; <$hash as Digest>::output_size()];
        pbkdf2::pbkdf2_hmac::<$hash>($password.as_bytes(), $salt, SCRAM_ITERATIONS, &mut salted);
        let hmac = |text: &[u8]| {
            let mut mac =
                Hmac::<$hash>::new_from_slice(&salted).expect("HMAC takes keys of any length");
            mac.update(text);
            mac.finalize().into_bytes().to_vec()
        };
        let stored_key = <$hash as Digest>::digest(hmac(b"Client Key")).to_vec();
        (stored_key, hmac(b"Server Key"))
    }};
}

/// The SCRAM credential of `password` for `mechanism` with `salt`.
pub fn scram_credential(mechanism: ScramMechanism, password: &str, salt: &[u8]) -> ScramCredential {
    let (stored_key, server_key) = match mechanism {
        ScramMechanism::Scram256 => scram_keys!(Sha256, password, salt),
        ScramMechanism::Scram512 => scram_keys!(Sha512, password, salt),
    };
    ScramCredential {
        salt: salt.to_vec().into(),
        iterations: SCRAM_ITERATIONS as i32,
        stored_key: stored_key.into(),
        server_key: server_key.into(),
    }
}

/// Writes both SCRAM credentials of every user into `storage`.
pub(crate) async fn seed(storage: &StorageContainer, users: &[SaslUser]) -> Result<(), String> {
    for user in users {
        for mechanism in [ScramMechanism::Scram256, ScramMechanism::Scram512] {
            let salt: [u8; 16] = *uuid::Uuid::new_v4().as_bytes();
            storage
                .upsert_user_scram_credential(
                    &user.name,
                    mechanism,
                    scram_credential(mechanism, &user.password, &salt),
                )
                .await
                .map_err(|e| format!("cannot store the SCRAM credentials of {}: {e}", user.name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_rfc_7677s_example() {
        // RFC 7677 §3: password "pencil", salt "W22ZaJ0SNY7soEsUEjb6gQ==", 4096 iterations.
        // The expected keys were computed with Python's hashlib/hmac, which reproduce the
        // RFC's client proof and server signature from them.
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let c = scram_credential(ScramMechanism::Scram256, "pencil", &salt);
        assert_eq!(c.iterations, 4096);
        assert_eq!(
            hex(&c.stored_key),
            "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6"
        );
        assert_eq!(
            hex(&c.server_key),
            "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5"
        );
        let c = scram_credential(ScramMechanism::Scram512, "pencil", &salt);
        assert_eq!(
            hex(&c.stored_key),
            "e8002e6f7d3ae446119b216933644dc2a2be7869eb918b8459b5e7d7d2ec12606aceef106825cd735170a675fd3611f684affad1dce3f43a0ee43bd590e1dbbe"
        );
        assert_eq!(
            hex(&c.server_key),
            "8d91db6230b5687874fe129bc7206e1858c3ae08e02934f57ac03b6b05a229c459d28ff46f5c9611e6c179256490215ec1ff759cb0df285db89af0f99e613aac"
        );
    }

    #[test]
    fn users_files_name_bad_lines_and_never_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("users");
        std::fs::write(&good, "# users\nalice:s3cret:with:colons\n\nbob:pw\n").unwrap();
        let users = SaslUser::read_file(&good).unwrap();
        assert_eq!(users[0], SaslUser::new("alice", "s3cret:with:colons"));
        assert_eq!(users[1], SaslUser::new("bob", "pw"));
        assert!(!format!("{users:?}").contains("s3cret"));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "alice:s3cret\nbob\n").unwrap();
        let err = SaslUser::read_file(&bad).unwrap_err();
        assert!(err.contains("line 2") && !err.contains("s3cret"), "{err}");
    }
}
