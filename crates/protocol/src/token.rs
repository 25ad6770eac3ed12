//! SignalingToken: `1:<appid>:<expiry>:<md5hex(account + appid + certificate + expiry)>`
//! (the format of Agora's `SignalingToken` tool). `expiry` is a Unix time in seconds; 0 means
//! the token never expires.
//!
//! [`fields`] reads the format (the SDK uses it to check a renewed token and to time
//! `onTokenWillExpire`); signing and verifying need the certificate and live behind the
//! `token` feature (md-5).

#[cfg(feature = "token")]
use md5::{Digest, Md5};
#[cfg(feature = "token")]
use subtle::ConstantTimeEq;

/// The readable parts of a well-formed SignalingToken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The app id it was made for.
    pub app_id: &'a str,
    /// Unix seconds after which it is refused (0: never).
    pub expiry: u64,
    /// The 32 hex digits of the signature.
    pub signature: &'a str,
}

/// The parts of `token` when it has the SignalingToken format (version 1, a canonical decimal
/// expiry, a 32-digit hex signature); `None` for anything else (`_no_need_token`, `""`, …).
pub fn fields(token: &str) -> Option<Fields<'_>> {
    let mut parts = token.splitn(4, ':');
    let (Some("1"), Some(app_id), Some(expiry), Some(signature)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    // strict: the signed text is the decimal form, so "+5" or "05" must not pass
    let value: u64 = expiry.parse().ok()?;
    let canonical =
        expiry.bytes().all(|b| b.is_ascii_digit()) && (expiry == "0" || !expiry.starts_with('0'));
    let hex = signature.len() == 32 && signature.bytes().all(|b| b.is_ascii_hexdigit());
    (canonical && hex && !app_id.is_empty()).then_some(Fields {
        app_id,
        expiry: value,
        signature,
    })
}

/// Why a token was refused. Maps to the login error strings `TokenErrorExpired` (204) and
/// `TokenErrorInvalid` (206).
#[cfg(feature = "token")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Well-formed and correctly signed, but `expiry` is in the past.
    Expired,
    /// Malformed, for another app, or signed with another certificate/account.
    Invalid,
}

#[cfg(feature = "token")]
fn signature(app_id: &str, certificate: &str, account: &str, expiry: u64) -> String {
    let mut md5 = Md5::new();
    md5.update(account.as_bytes());
    md5.update(app_id.as_bytes());
    md5.update(certificate.as_bytes());
    md5.update(expiry.to_string().as_bytes());
    hex::encode(md5.finalize())
}

#[cfg(feature = "token")]
/// Make a token for `account` valid until `expiry` (Unix seconds; 0 = forever).
pub fn sign(app_id: &str, certificate: &str, account: &str, expiry: u64) -> String {
    format!(
        "1:{app_id}:{expiry}:{}",
        signature(app_id, certificate, account, expiry)
    )
}

#[cfg(feature = "token")]
/// Check a token for `account` of `app_id` at time `now` (Unix seconds). The signature is
/// compared in constant time.
pub fn verify(
    token: &str,
    app_id: &str,
    certificate: &str,
    account: &str,
    now: u64,
) -> Result<(), TokenError> {
    let f = fields(token).ok_or(TokenError::Invalid)?;
    let expected = signature(app_id, certificate, account, f.expiry);
    let app_ok = f.app_id.as_bytes().ct_eq(app_id.as_bytes());
    let sig_ok = f.signature.as_bytes().ct_eq(expected.as_bytes());
    if !bool::from(app_ok & sig_ok) {
        return Err(TokenError::Invalid);
    }
    if f.expiry != 0 && f.expiry < now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(all(test, feature = "token"))]
mod tests {
    use super::*;

    const APP: &str = "970ca35de60c44645bbae8a215061b33";
    const CERT: &str = "5cfd2fd1755d40ecb72977518be15d3b";

    #[test]
    fn known_answer() {
        assert_eq!(
            sign(APP, CERT, "TestAccount", 1446455471),
            "1:970ca35de60c44645bbae8a215061b33:1446455471:4815d52c4fd440bac35b981c12798774"
        );
    }

    #[test]
    fn verify_paths() {
        let t = sign(APP, CERT, "TestAccount", 1446455471);
        assert_eq!(verify(&t, APP, CERT, "TestAccount", 1446455000), Ok(()));
        assert_eq!(verify(&t, APP, CERT, "TestAccount", 1446455471), Ok(()));
        assert_eq!(
            verify(&t, APP, CERT, "TestAccount", 1446455472),
            Err(TokenError::Expired)
        );
        assert_eq!(verify(&t, APP, CERT, "Other", 1), Err(TokenError::Invalid));
        assert_eq!(
            verify(&t, APP, "0000", "TestAccount", 1),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(&t, "otherapp", CERT, "TestAccount", 1),
            Err(TokenError::Invalid)
        );
        for bad in [
            "",
            "_no_need_token",
            "1:x",
            "2:a:1:b",
            "1:a:b:c",
            "1:a:+5:c",
        ] {
            assert_eq!(
                verify(bad, APP, CERT, "TestAccount", 1),
                Err(TokenError::Invalid)
            );
        }
        assert_eq!(
            fields(&t),
            Some(Fields {
                app_id: APP,
                expiry: 1446455471,
                signature: "4815d52c4fd440bac35b981c12798774"
            })
        );
        for bad in [
            "1:a:05:4815d52c4fd440bac35b981c12798774",
            "1::5:4815d52c4fd440bac35b981c12798774",
            "1:a:5:xyz",
        ] {
            assert_eq!(fields(bad), None, "{bad}");
        }
        let forever = sign(APP, CERT, "TestAccount", 0);
        assert_eq!(verify(&forever, APP, CERT, "TestAccount", u64::MAX), Ok(()));
    }
}
