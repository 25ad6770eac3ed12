//! Backend API keys apart from the app certificate: `osk_<name>_<secret>`, made by
//! `opensig-server api-key`, stored in the configuration file only as a SHA-256 hash
//! (`[[api_keys]]`), revoked by removing the entry and reloading (SIGHUP). A key has 256 bits
//! of randomness, so a fast hash is the right one (a password hash is for guessable secrets);
//! the comparison is constant-time. The key's name — never its secret — is what logs show.

use sha2::{Digest, Sha256};

/// What every key starts with (so leaked keys are easy to search for).
pub const PREFIX: &str = "osk_";

/// Whether `name` can name a key: 1–64 of `a-z`, `0-9`, `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A new key named `name` and the hash the configuration file keeps of it.
pub fn make(name: &str) -> (String, String) {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let key = format!("{PREFIX}{name}_{secret}");
    let hash = hash(&key);
    (key, hash)
}

/// `sha256:<hex>` of a key.
pub fn hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// Whether `hash` is one [`hash`] makes.
pub fn valid_hash(hash: &str) -> bool {
    hash.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The name a presented key claims (`None`: not a key).
pub fn name_of(key: &str) -> Option<&str> {
    let (name, secret) = key.strip_prefix(PREFIX)?.rsplit_once('_')?;
    (valid_name(name) && !secret.is_empty()).then_some(name)
}

/// Whether `key` is the one `hash` was made of (constant-time in the hash).
pub fn matches(key: &str, hash: &str) -> bool {
    same_secret(&self::hash(key), &hash.to_ascii_lowercase())
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_themselves_and_match_only_their_hash() {
        let (key, h) = make("billing-2");
        assert!(key.starts_with("osk_billing-2_"));
        assert_eq!(name_of(&key), Some("billing-2"));
        assert!(valid_hash(&h));
        assert!(matches(&key, &h));
        assert!(matches(
            &key,
            &h.to_ascii_uppercase().replace("SHA256", "sha256")
        ));
        let (other, _) = make("billing-2");
        assert!(!matches(&other, &h), "same name, another key");
        assert!(!matches(&key[..key.len() - 1], &h));
        for bad in [
            "",
            "osk_",
            "osk__x",
            "osk_Bad_x",
            "osk_n_",
            "key_n_x",
            "osk_n",
        ] {
            assert_eq!(name_of(bad), None, "{bad:?}");
        }
        assert!(!valid_name("") && !valid_name("a_b") && !valid_name(&"a".repeat(65)));
        assert!(!valid_hash("sha256:xyz") && !valid_hash(&h[7..]));
    }
}
