//! Console sign-in: operators' Argon2id password hashes (from the configuration file), the
//! sign-ins a node holds (a random token in an `HttpOnly`, `SameSite=Strict` cookie, and a
//! CSRF token every state-changing request carries), and failed sign-ins counted per name
//! and locked out. Everything here is bounded: sign-ins by `console_sessions_max`, the
//! failure ledger by [`FAILURES_MAX`] names, password checks by [`VERIFYING_MAX`] at once.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use crate::apikeys::same_secret;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use opensig_protocol::Limits;
use parking_lot::Mutex;

/// Names whose failed sign-ins are remembered at once; past it, a sign-in under a name not
/// in the ledger is refused as locked until entries expire (an attacker spraying names
/// cannot grow it).
pub const FAILURES_MAX: usize = 10_000;
/// Password checks running at once (each takes tens of milliseconds of one core).
pub const VERIFYING_MAX: usize = 2;

/// The Argon2id hash of `password` (PHC string, random salt, the crate's default cost:
/// 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .expect("Argon2 hashes with its default parameters")
}

/// Whether `hash` is an Argon2id PHC string.
pub fn valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

/// Whether `password` is the one `hash` was made from (`None`: no such operator; the check
/// runs against a hash of nothing anyone knows, so it takes as long).
pub fn verify(password: &str, hash: Option<&str>) -> bool {
    static NOBODY: OnceLock<String> = OnceLock::new();
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| {
        NOBODY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())))
    });
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

/// An operator signed in, as requests carry it past the console's guard.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The operator's name.
    pub name: String,
    /// May look, not act.
    pub read_only: bool,
}

struct Signin {
    operator: String,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
struct Failures {
    count: u32,
    first: Option<Instant>,
    locked_until: Option<Instant>,
}

/// Forget failure windows that are over and lockouts that ended.
fn forget_old(f: &mut HashMap<String, Failures>, limits: &Limits, now: Instant) {
    let window = Duration::from_secs(limits.console_lockout_secs);
    f.retain(|_, e| {
        e.locked_until.is_some_and(|t| t > now)
            || e.first.is_some_and(|t| now.duration_since(t) < window)
    });
}

/// A sign-in that was let in: the cookie's token and the CSRF token.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Goes in the cookie only.
    pub token: String,
    /// Goes in every state-changing request's header.
    pub csrf: String,
}

/// The sign-ins this node holds and its ledger of failed ones.
pub struct Signins {
    open: Mutex<HashMap<String, Signin>>,
    failures: Mutex<HashMap<String, Failures>>,
    /// Bounds the password checks running at once.
    pub verifying: tokio::sync::Semaphore,
}

impl Default for Signins {
    fn default() -> Self {
        Signins {
            open: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            verifying: tokio::sync::Semaphore::new(VERIFYING_MAX),
        }
    }
}

impl Signins {
    /// Whether sign-ins under `name` are refused now (locked out, or the ledger is full).
    pub fn locked(&self, name: &str, limits: &Limits, now: Instant) -> bool {
        let mut f = self.failures.lock();
        if f.len() >= FAILURES_MAX {
            forget_old(&mut f, limits, now);
        }
        match f.get(name) {
            Some(e) => e.locked_until.is_some_and(|t| t > now),
            None => f.len() >= FAILURES_MAX,
        }
    }

    /// A failed sign-in under `name`: the name is locked once `console_signin_failures` of
    /// them fall within `console_lockout_secs`.
    pub fn failed(&self, name: &str, limits: &Limits, now: Instant) {
        let window = Duration::from_secs(limits.console_lockout_secs);
        let mut f = self.failures.lock();
        forget_old(&mut f, limits, now);
        if f.len() >= FAILURES_MAX && !f.contains_key(name) {
            return;
        }
        let e = f.entry(name.to_string()).or_default();
        if e.first.is_none_or(|t| now.duration_since(t) >= window) {
            *e = Failures {
                count: 0,
                first: Some(now),
                locked_until: None,
            };
        }
        e.count += 1;
        if e.count >= limits.console_signin_failures.max(1) {
            e.locked_until = Some(now + window);
        }
    }

    /// A successful sign-in under `name`: its failures are forgotten, a sign-in is opened
    /// (the oldest one signed out when `console_sessions_max` are open).
    pub fn open(&self, name: &str, limits: &Limits, now: Instant) -> Opened {
        self.failures.lock().remove(name);
        let opened = Opened {
            token: hex::encode(rand::random::<[u8; 32]>()),
            csrf: hex::encode(rand::random::<[u8; 32]>()),
        };
        let mut open = self.open.lock();
        open.retain(|_, s| s.expires > now);
        while open.len() >= limits.console_sessions_max.max(1) {
            let oldest = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => open.remove(&k),
                None => break,
            };
        }
        open.insert(
            opened.token.clone(),
            Signin {
                operator: name.to_string(),
                csrf: opened.csrf.clone(),
                expires: now + Duration::from_secs(limits.console_session_secs),
            },
        );
        opened
    }

    /// The operator and CSRF token of the sign-in `token`, while it lasts.
    pub fn get(&self, token: &str, now: Instant) -> Option<(String, String)> {
        let open = self.open.lock();
        let s = open.get(token).filter(|s| s.expires > now)?;
        Some((s.operator.clone(), s.csrf.clone()))
    }

    /// End the sign-in `token`.
    pub fn close(&self, token: &str) {
        self.open.lock().remove(token);
    }

    /// Sign-ins open now.
    pub fn count(&self) -> usize {
        self.open.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let h = hash_password("correct horse");
        assert!(valid_hash(&h) && h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("correct hors", Some(&h)));
        assert!(!verify("correct horse", None), "no operator: never let in");
        assert!(!valid_hash("sha256:00") && !valid_hash(""));
    }

    #[test]
    fn failures_lock_a_name_for_the_window_and_success_forgets_them() {
        let limits = Limits {
            console_signin_failures: 3,
            console_lockout_secs: 60,
            ..Limits::default()
        };
        let s = Signins::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            s.failed("ops", &limits, t0);
        }
        assert!(!s.locked("ops", &limits, t0));
        s.open("ops", &limits, t0);
        s.failed("ops", &limits, t0);
        s.failed("ops", &limits, t0);
        assert!(
            !s.locked("ops", &limits, t0),
            "a success forgot the earlier failures"
        );
        s.failed("ops", &limits, t0);
        assert!(s.locked("ops", &limits, t0) && !s.locked("other", &limits, t0));
        assert!(!s.locked("ops", &limits, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn sign_ins_expire_and_are_bounded() {
        let limits = Limits {
            console_sessions_max: 2,
            console_session_secs: 10,
            ..Limits::default()
        };
        let s = Signins::default();
        let t0 = Instant::now();
        let a = s.open("a", &limits, t0);
        let b = s.open("b", &limits, t0 + Duration::from_secs(1));
        let c = s.open("c", &limits, t0 + Duration::from_secs(2));
        assert_eq!(s.count(), 2);
        assert!(s.get(&a.token, t0).is_none(), "the oldest was signed out");
        assert_eq!(s.get(&b.token, t0).unwrap().1, b.csrf);
        assert!(s.get(&c.token, t0 + Duration::from_secs(13)).is_none());
        assert!(same_secret(&c.csrf, &c.csrf.clone()) && !same_secret(&c.csrf, &b.csrf));
    }
}
