//! Issuing and checking HS256 tokens. The algorithm is pinned: `alg: none` or any other
//! algorithm is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::claims::Claims;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// What a token carries: the contract's claims (all `/validate` returns) and the account's token
/// generation when it was issued (0 for tokens made before generations existed).
#[derive(Serialize, Deserialize)]
struct TokenClaims {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    gen: u32,
}

/// The signing and verification keys derived from `JWT_SECRET`.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Keys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iat"]);
        Self { encoding: EncodingKey::from_secret(bytes), decoding: DecodingKey::from_secret(bytes), validation, ttl }
    }

    /// A token for `username` at the account's current token `generation`.
    pub fn issue(&self, username: &str, admin: bool, generation: u32) -> anyhow::Result<String> {
        let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims { username: username.to_owned(), iat, exp: iat + self.ttl.as_secs(), admin };
        Ok(encode(&Header::new(Algorithm::HS256), &TokenClaims { claims, gen: generation }, &self.encoding)?)
    }

    /// The claims and token generation of a valid, unexpired token signed with our key.
    pub fn verify(&self, token: &str) -> Option<(Claims, u32)> {
        decode::<TokenClaims>(token, &self.decoding, &self.validation).ok().map(|d| (d.claims.claims, d.claims.gen))
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    fn keys() -> Keys {
        Keys::new(&SecretString::from("k".repeat(32)), Duration::from_secs(60))
    }

    #[test]
    fn issues_verifiable_tokens_with_the_contract_claims() {
        let k = keys();
        let t = k.issue("georgio@email.com", true, 3).unwrap();
        let (c, generation) = k.verify(&t).unwrap();
        assert_eq!(generation, 3);
        assert_eq!(c.username, "georgio@email.com");
        assert!(c.admin);
        assert_eq!(c.exp - c.iat, 60);
    }

    #[test]
    fn refuses_forgeries() {
        let k = keys();
        let t = k.issue("a@b.c", false, 0).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        // alg none
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(k.verify(&format!("{none_header}.{}.", parts[1])).is_none());
        // tampered payload (admin flipped), old signature
        let payload = URL_SAFE_NO_PAD.encode(br#"{"username":"a@b.c","exp":99999999999,"iat":1,"admin":true}"#);
        assert!(k.verify(&format!("{}.{payload}.{}", parts[0], parts[2])).is_none());
        // other key
        let other = Keys::new(&SecretString::from("x".repeat(32)), Duration::from_secs(60));
        assert!(other.verify(&t).is_none());
        // HS512 with the right key is still refused
        let (claims, _) = k.verify(&t).unwrap();
        let hs512 = encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret("k".repeat(32).as_bytes())).unwrap();
        assert!(k.verify(&hs512).is_none());
        assert!(k.verify("").is_none());
        assert!(k.verify("not.a.jwt").is_none());
    }

    #[test]
    fn refuses_expired_and_exp_less_tokens() {
        let k = keys();
        let key = EncodingKey::from_secret("k".repeat(32).as_bytes());
        let past = Claims { username: "a@b.c".into(), iat: 1, exp: 2, admin: true };
        assert!(k.verify(&encode(&Header::default(), &past, &key).unwrap()).is_none());
        let no_exp = serde_json::json!({"username": "a@b.c", "iat": 1, "admin": true});
        assert!(k.verify(&encode(&Header::default(), &no_exp, &key).unwrap()).is_none());
    }
}
