//! A checked email address: what logins are keyed by and what mail is sent to.

use std::fmt;
use std::str::FromStr;

/// A syntactically valid email address (one `@`, a non-empty local part and a dotted or
/// `localhost` domain, no whitespace, control characters or header syntax, at most 254 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address")]
pub struct InvalidEmail;

impl FromStr for Email {
    type Err = InvalidEmail;

    fn from_str(s: &str) -> Result<Self, InvalidEmail> {
        if s.is_empty() || s.len() > 254 {
            return Err(InvalidEmail);
        }
        let (local, domain) = s.split_once('@').ok_or(InvalidEmail)?;
        let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c);
        if local.is_empty() || local.len() > 64 || domain.is_empty() || local.chars().any(bad) || domain.chars().any(bad) {
            return Err(InvalidEmail);
        }
        let labels_ok = domain.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !labels_ok {
            return Err(InvalidEmail);
        }
        Ok(Self(s.to_owned()))
    }
}

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in ["georgio@email.com", "a.b+c@sub.example.org", "mp3converter@localhost"] {
            assert_eq!(ok.parse::<Email>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_header_injection_and_junk() {
        for bad in ["", "plain", "@x.com", "a@", "a@b..c", "a b@c.d", "a@b.c\r\nBcc: x@y.z", "a@b.c>", "\"q\"@x.y", "a@b@c.d"] {
            assert_eq!(bad.parse::<Email>(), Err(InvalidEmail), "{bad:?}");
        }
    }
}
