//! Signed download links: `<PUBLIC_URL>/jobs/<id>/download?expires=<unix seconds>&sig=<mac>`,
//! where `mac` is HMAC-SHA256 over the job id and the expiry, keyed with
//! `DOWNLOAD_LINK_SECRET`. The gateway checks them; the notifier makes them for the "ready"
//! mail. A link works without a token (mail clients, `<audio>` elements), for one job, until
//! it expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::ids::VideoId;

/// The development key: refused by the services unless `PUBLIC_URL` points at this machine.
pub const DEVELOPMENT_SECRET: &str = "DEVELOPMENT-ONLY-download-link-secret-do-not-deploy";

/// Shortest accepted key (bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("invalid download link: it was altered or is incomplete")]
    Tampered,
    #[error("this download link has expired; open the job again for a fresh link")]
    Expired,
}

/// Makes and checks links.
#[derive(Clone)]
pub struct LinkSigner {
    key: SecretString,
    /// `PUBLIC_URL` without a trailing slash.
    base: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").field("base", &self.base).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// True when `url`'s host is this machine (development setups).
pub fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// Checks the key and the base URL: the marked development key only with a local base URL.
pub fn check_settings(key: &SecretString, base: &str) -> Result<(), String> {
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!("expected an absolute http(s) URL, got {base:?}"));
    }
    let k = key.expose_secret();
    if k == DEVELOPMENT_SECRET && !is_local(base) {
        return Err(
            "the development value is refused when PUBLIC_URL is not this machine; generate one (scripts/minikube-up.sh does)".into()
        );
    }
    if k.len() < MIN_SECRET_LEN {
        return Err(format!("must be at least {MIN_SECRET_LEN} bytes"));
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl LinkSigner {
    pub fn new(key: SecretString, base: &str, ttl: Duration) -> Self {
        Self { key, base: base.trim_end_matches('/').to_owned(), ttl }
    }

    fn mac(&self, job: VideoId, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes()).expect("HMAC takes any key length");
        mac.update(format!("download:{job}:{expires}").as_bytes());
        mac
    }

    /// The link to `job`'s mp3, valid for the configured time from now.
    pub fn url(&self, job: VideoId) -> String {
        self.url_expiring(job, unix_now() + self.ttl.as_secs())
    }

    /// The link with an explicit expiry (unix seconds).
    pub fn url_expiring(&self, job: VideoId, expires: u64) -> String {
        let sig = URL_SAFE_NO_PAD.encode(self.mac(job, expires).finalize().into_bytes());
        format!("{}/jobs/{job}/download?expires={expires}&sig={sig}", self.base)
    }

    /// Checks a link's query values for `job`. The signature is checked first (in constant
    /// time), so an altered expiry is "tampered", never "expired".
    pub fn verify(&self, job: VideoId, expires: Option<&str>, sig: Option<&str>) -> Result<(), LinkError> {
        let expires: u64 = expires.and_then(|e| e.parse().ok()).ok_or(LinkError::Tampered)?;
        let sig = sig.and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()).ok_or(LinkError::Tampered)?;
        self.mac(job, expires).verify_slice(&sig).map_err(|_| LinkError::Tampered)?;
        if expires <= unix_now() {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(SecretString::from("k".repeat(40)), "http://127.0.0.1:8080/", Duration::from_secs(60))
    }

    fn query(url: &str) -> (String, String) {
        let q = url.split_once('?').unwrap().1;
        let get = |k: &str| q.split('&').find_map(|p| p.strip_prefix(&format!("{k}="))).unwrap().to_owned();
        (get("expires"), get("sig"))
    }

    #[test]
    fn signed_links_verify_and_alterations_do_not() {
        let s = signer();
        let job: VideoId = "65f0c0ffee0123456789abcd".parse().unwrap();
        let url = s.url(job);
        assert!(url.starts_with("http://127.0.0.1:8080/jobs/65f0c0ffee0123456789abcd/download?expires="), "{url}");
        let (e, sig) = query(&url);
        assert_eq!(s.verify(job, Some(&e), Some(&sig)), Ok(()));
        let other: VideoId = "65f0c0ffee0123456789abce".parse().unwrap();
        assert_eq!(s.verify(other, Some(&e), Some(&sig)), Err(LinkError::Tampered));
        let later = (e.parse::<u64>().unwrap() + 1).to_string();
        assert_eq!(s.verify(job, Some(&later), Some(&sig)), Err(LinkError::Tampered));
        assert_eq!(s.verify(job, Some(&e), None), Err(LinkError::Tampered));
        assert_eq!(s.verify(job, Some(&e), Some("!!")), Err(LinkError::Tampered));
        let other_key = LinkSigner::new(SecretString::from("j".repeat(40)), "http://x", Duration::from_secs(60));
        assert_eq!(other_key.verify(job, Some(&e), Some(&sig)), Err(LinkError::Tampered));
        let (e, sig) = query(&s.url_expiring(job, 1000));
        assert_eq!(s.verify(job, Some(&e), Some(&sig)), Err(LinkError::Expired));
    }

    #[test]
    fn the_development_key_only_serves_local_urls() {
        let dev = SecretString::from(DEVELOPMENT_SECRET);
        assert!(check_settings(&dev, "http://127.0.0.1:8080").is_ok());
        assert!(check_settings(&dev, "http://localhost").is_ok());
        assert!(check_settings(&dev, "http://mp3converter.com").is_err());
        assert!(check_settings(&SecretString::from("short"), "http://localhost").is_err());
        assert!(check_settings(&SecretString::from("k".repeat(40)), "mp3converter.com").is_err());
        assert!(check_settings(&SecretString::from("k".repeat(40)), "https://mp3converter.com").is_ok());
    }
}
