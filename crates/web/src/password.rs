//! Password hashes: Argon2id in PHC strings, computed in memory this process keeps and reuses.
//!
//! Each hash fills 19 MiB (the crate's recommended parameters). Allocated and freed per hash,
//! that memory stayed with the process: glibc raises its mmap threshold when a large block is
//! freed, so the next 19 MiB came from an arena and was kept there, one arena per thread that
//! hashed (60 MiB of the demo's resident memory before this module). And nothing bounded how
//! many ran at once: a flood of sign-in attempts held 19 MiB per blocking thread.
//!
//! So at most [`AT_ONCE`] hashes run at a time in the process ([`on_turn`]); a request that
//! waits longer than [`WAIT`] for its turn is answered 503 "busy". Their memory is allocated
//! once per turn, wiped after each hash and kept for the next, never freed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroize;

use crate::error::ApiError;

/// Longest accepted password, in characters (at most 1 KiB: argon2 over megabytes would be a
/// cheap denial of service).
pub const PASSWORD_LEN_MAX: usize = 256;
/// Shortest password a new user may get, in characters.
pub const PASSWORD_LEN_MIN: usize = 8;
/// Password hashes computed at once in this process: one per core of the machines it runs on;
/// more would only share the cores and hold more memory.
pub const AT_ONCE: usize = 2;
/// How long a request waits for its turn before it is answered busy.
pub const WAIT: Duration = Duration::from_secs(5);
/// Most memory (in KiB) a stored hash may ask for; a hash asking for more never matches. Ours
/// ask for 19 MiB.
const M_COST_MAX: u32 = 64 * 1024;

/// A hash of no one's password, with the parameters ours have: checked when the username is
/// unknown or disabled, so that the answer takes as long as for a real user.
const NOBODY: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

static TURNS: Semaphore = Semaphore::const_new(AT_ONCE);
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
static MEMORY_MADE: AtomicUsize = AtomicUsize::new(0);

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password must be {PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX} characters")]
    Length,
    #[error("no randomness: {0}")]
    Random(String),
    #[error("argon2: {0}")]
    Argon2(String),
}

/// How many hash memories this process has allocated: at most [`AT_ONCE`] when every hash goes
/// through [`on_turn`].
pub fn memory_made() -> usize {
    MEMORY_MADE.load(Ordering::Relaxed)
}

/// Runs `f` with `blocks` blocks of hash memory: a kept one if free, else a new one. The used
/// part is wiped afterwards (it is derived from the password) and kept for the next hash.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    let kept = MEMORY.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut memory = kept.unwrap_or_else(|| {
        MEMORY_MADE.fetch_add(1, Ordering::Relaxed);
        Vec::new()
    });
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let used = memory.get_mut(..blocks).unwrap_or_default();
    let out = f(used);
    used.iter_mut().for_each(Zeroize::zeroize);
    let mut pool = MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < AT_ONCE {
        pool.push(memory);
    }
    out
}

/// Argon2id with the crate's recommended parameters, a fresh 16-byte salt, as a PHC string.
/// Blocking (tens of milliseconds of CPU): call it through [`on_turn`] on a server.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let chars = password.chars().count();
    if !(PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&chars) {
        return Err(HashError::Length);
    }
    let argon = |e: argon2::Error| HashError::Argon2(e.to_string());
    let phc = |e: argon2::password_hash::Error| HashError::Argon2(e.to_string());
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError::Random(e.to_string()))?;
    let params = Params::DEFAULT;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        hasher.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
    })
    .map_err(argon)?;
    let salt = SaltString::encode_b64(&salt).map_err(phc)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(phc)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(phc)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash` (the outputs are compared in constant
/// time). Blocking, as [`hash_password`].
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > 4 * PASSWORD_LEN_MAX || password.chars().count() > PASSWORD_LEN_MAX {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version {
        Some(v) => Version::try_from(v),
        None => Ok(Version::default()),
    };
    let (Ok(version), Ok(params)) = (version, Params::try_from(&parsed)) else {
        return false;
    };
    if params.m_cost() > M_COST_MAX {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let blocks = params.block_count();
    let hasher = Argon2::new(algorithm, version, params);
    let done = with_memory(blocks, |memory| {
        hasher.hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
    });
    done.is_ok() && Output::new(out).is_ok_and(|computed| computed == expected)
}

/// [`verify_password`] against a stored hash, or against no one's hash when there is none, so
/// that an unknown user takes as long as a known one; `false` then.
pub fn verify_stored(hash: Option<&str>, password: &str) -> bool {
    let matched = verify_password(hash.unwrap_or(NOBODY), password);
    matched && hash.is_some()
}

/// Runs the blocking `f` (a hash) on a blocking thread when a turn is free: at most
/// [`AT_ONCE`] at a time. Busy (503) if no turn comes within [`WAIT`]. The turn is held by the
/// blocking work itself, so a caller that goes away does not free it early.
pub async fn on_turn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    on_turn_within(WAIT, f).await
}

async fn on_turn_within<T: Send + 'static>(
    wait: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    crate::turns::on_turn_within(&TURNS, wait, "too many sign-ins at once; retry shortly", f).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher;
    use argon2::password_hash::PasswordVerifier;
    use axum::http::StatusCode;

    #[test]
    fn a_hash_that_gets_no_turn_in_time_is_answered_busy() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let release = std::sync::Arc::new(std::sync::Barrier::new(AT_ONCE + 1));
            let mut held = Vec::new();
            for _ in 0..AT_ONCE {
                let release = std::sync::Arc::clone(&release);
                held.push(tokio::spawn(on_turn(move || {
                    release.wait();
                })));
            }
            while TURNS.available_permits() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let refused = on_turn_within(Duration::from_millis(50), || 1).await;
            assert_eq!(
                refused.map_err(|e| (e.status, e.code)),
                Err((StatusCode::SERVICE_UNAVAILABLE, "busy"))
            );
            let waiting = tokio::spawn(on_turn_within(WAIT, || 2));
            release.wait();
            for turn in held {
                turn.await.unwrap().unwrap();
            }
            assert_eq!(
                waiting.await.unwrap().unwrap(),
                2,
                "served once a turn is free"
            );
        });
    }

    #[test]
    fn a_passwords_length_is_counted_in_characters() {
        // 100 Chinese characters (300 bytes): within the 256 characters the pages promise.
        let chinese = "密".repeat(100);
        let hash = hash_password(&chinese).unwrap();
        assert!(verify_password(&hash, &chinese));
        assert!(matches!(
            hash_password(&"密".repeat(PASSWORD_LEN_MAX + 1)),
            Err(HashError::Length)
        ));
        assert!(hash_password("八个字符abcd").is_ok());
        assert!(matches!(hash_password("七个字符"), Err(HashError::Length)));
    }

    #[test]
    fn our_hashes_and_the_crates_check_each_other() {
        let ours = hash_password("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
        assert!(verify_password(&ours, "correct horse"));
        assert!(!verify_password(&ours, "correct hors"));

        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            ours.split('$').nth(3),
            theirs.split('$').nth(3),
            "same params"
        );
        assert!(verify_password(&theirs, "battery staple"));
        assert!(!verify_password(&theirs, "battery stapl"));
        // Two hashes of one password differ (fresh salts).
        assert_ne!(ours, hash_password("correct horse").unwrap());
    }

    #[test]
    fn a_broken_or_greedy_hash_never_matches() {
        let ours = hash_password("correct horse").unwrap();
        let mut tampered = ours.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!verify_password(&tampered, "correct horse"));
        assert!(!verify_password("", "correct horse"));
        assert!(!verify_password("$argon2id$v=19$m=19456,t=2,p=1", "x"));
        let greedy = ours.replace("m=19456", "m=1048576");
        assert!(!verify_password(&greedy, "correct horse"));
        assert!(!verify_password(&ours, &"x".repeat(PASSWORD_LEN_MAX + 1)));
        assert!(matches!(hash_password("short"), Err(HashError::Length)));
    }

    #[test]
    fn no_ones_hash_costs_what_a_users_does() {
        let ours = hash_password("correct horse").unwrap();
        let nobody = PasswordHash::new(NOBODY).unwrap();
        let theirs = PasswordHash::new(&ours).unwrap();
        assert_eq!(nobody.algorithm, theirs.algorithm);
        assert_eq!(nobody.version, theirs.version);
        assert_eq!(nobody.params, theirs.params);
        assert_eq!(nobody.hash.map(|h| h.len()), theirs.hash.map(|h| h.len()));
        assert!(!verify_stored(None, "anything at all"));
        assert!(verify_stored(Some(&ours), "correct horse"));
        assert!(!verify_stored(Some(&ours), "anything at all"));
    }
}
