//! Names checked once: an app id, an account or a channel name that passed its rule is one of
//! these types, and code that holds one never checks it again.

use alloc::string::String;
use core::fmt;
use core::ops::Deref;

use crate::codes::ErrorKind;
use crate::limits::Limits;
use crate::names::special;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Check `text` against the rule; `too_large` or `invalid_args` otherwise.
            pub fn parse(text: &str, limits: &Limits) -> Result<$name, ErrorKind> {
                let check: fn(&Limits, &str) -> Result<(), ErrorKind> = $check;
                check(limits, text)?;
                Ok($name(text.into()))
            }

            /// A name this program wrote and reads back (from a store): not empty, visible
            /// characters, no whitespace; `None` for anything else.
            pub fn from_stored(text: &str) -> Option<$name> {
                crate::limits::valid_name(text, 64 * 1024).then(|| $name(text.into()))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_type!(
    /// An app id (`vid`): 1–128 visible bytes without whitespace.
    AppId,
    |_, s| {
        if crate::limits::valid_name(s, 128) {
            Ok(())
        } else {
            Err(ErrorKind::InvalidArgs)
        }
    }
);
name_type!(
    /// An account: the account rule of `Limits::check_account`.
    Account,
    |l, s| l.check_account(s)
);
name_type!(
    /// A channel name: the rule of `Limits::check_channel`.
    ChannelName,
    |l, s| l.check_channel(s)
);

impl ChannelName {
    /// A reserved `__agora_*` channel (presence and firehose events only).
    pub fn is_special(&self) -> bool {
        self.0.starts_with(special::PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once() {
        let l = Limits::default();
        assert_eq!(Account::parse("alice", &l).unwrap().as_str(), "alice");
        assert_eq!(Account::parse("a b", &l), Err(ErrorKind::InvalidArgs));
        assert_eq!(
            ChannelName::parse(&"x".repeat(129), &l),
            Err(ErrorKind::TooLarge)
        );
        assert!(ChannelName::parse("__agora_user_online", &l)
            .unwrap()
            .is_special());
        assert!(!ChannelName::parse("room", &l).unwrap().is_special());
        assert!(AppId::parse("", &l).is_err());
    }
}
