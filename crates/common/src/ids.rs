//! Typed GridFS file ids, so an mp3 id can't be used where a video id belongs.

use std::fmt;
use std::str::FromStr;

use mongodb::bson::oid::ObjectId;

/// Why a string is not a file id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a file id: expected 24 hexadecimal characters")]
pub struct InvalidId;

macro_rules! file_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(ObjectId);

        impl $name {
            pub fn new(oid: ObjectId) -> Self { Self(oid) }
            pub fn oid(&self) -> ObjectId { self.0 }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                // ObjectId::parse_str accepts exactly 24 hex digits.
                ObjectId::parse_str(s).map(Self).map_err(|_| InvalidId)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { self.0.to_hex().fmt(f) }
        }
    };
}

file_id!(
    /// The GridFS id of an uploaded video (database `videos`).
    VideoId
);
file_id!(
    /// The GridFS id of a converted mp3 (database `mp3s`).
    Mp3Id
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_24_hex() {
        let id: VideoId = "65f0c0ffee0123456789abcd".parse().unwrap();
        assert_eq!(id.to_string(), "65f0c0ffee0123456789abcd");
        for bad in ["", "65f0c0ffee0123456789abc", "65f0c0ffee0123456789abcdd", "zzf0c0ffee0123456789abcd", "../../etc/passwd"] {
            assert_eq!(bad.parse::<Mp3Id>(), Err(InvalidId), "{bad:?}");
        }
    }
}
