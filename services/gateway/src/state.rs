//! What every handler shares: [`AppState`].

use std::sync::Arc;

use common::amqp::Publisher;
use common::jobs::JobStore;
use common::links::LinkSigner;
use common::mp3s::Mp3Store;
use common::videos::VideoStore;

use crate::config::Quotas;
use crate::jobs::events::JobEvents;
use crate::web;

/// The auth service's endpoints, parsed once: parsing a URL on every request was ~3 % of the
/// gateway's CPU on the authenticated path.
pub struct AuthUrls {
    /// `http://<AUTH_SVC_ADDRESS>/validate`
    pub validate: reqwest::Url,
    /// `http://<AUTH_SVC_ADDRESS>/login`
    pub login: reqwest::Url,
}

impl AuthUrls {
    /// `address` is `host:port` (checked by the configuration).
    pub fn new(address: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let url =
            |path: &str| reqwest::Url::parse(&format!("http://{address}{path}")).with_context(|| format!("AUTH_SVC_ADDRESS {address:?}"));
        Ok(Self { validate: url("/validate")?, login: url("/login")? })
    }
}

/// Clients and settings shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub http: reqwest::Client,
    pub auth: Arc<AuthUrls>,
    pub videos: VideoStore,
    pub mp3s: Mp3Store,
    pub publisher: Arc<Publisher>,
    pub video_queue: String,
    /// `VIDEO_QUEUE_MAX_LENGTH`: refuse uploads while this many wait in the video queue.
    pub video_queue_max_length: Option<u32>,
    pub max_upload_bytes: u64,
    pub trusted_proxy_hops: usize,
    /// One permit per upload streaming on this replica (`MAX_CONCURRENT_UPLOADS`).
    pub upload_permits: Arc<tokio::sync::Semaphore>,
    pub quotas: Quotas,
    /// The jobs collection (state of every upload).
    pub jobs: JobStore,
    /// Makes and checks signed download links.
    pub links: LinkSigner,
    /// This process's fan-out of job changes to event streams.
    pub events: Arc<JobEvents>,
    /// The web page's assets and settings.
    pub web: Arc<web::Web>,
}
