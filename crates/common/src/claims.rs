//! The JWT claims the auth service issues and the gateway receives from `/validate`.

use serde::{Deserialize, Serialize};

/// `username` is the email; `exp` and `iat` are Unix seconds; `admin` allows upload/download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub username: String,
    pub exp: u64,
    pub iat: u64,
    pub admin: bool,
}
