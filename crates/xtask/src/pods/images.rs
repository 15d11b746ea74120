//! `xtask images`: build the four images from docker/Dockerfile and tag them as the manifests name
//! them (mp3converter/<service>:dev). With Docker when an engine answers (`docker info`), else
//! with podman, which scripts/container-env.sh installs (apt-get) and configures for us (runc,
//! cgroupfs, ulimits within the machine's; never the machine's global configuration).
//!
//! No registry is reachable from our machines: when the engine lacks the Dockerfile's base images
//! (debian:bookworm-slim, rust:1-bookworm) scripts/container-env.sh makes them with debootstrap,
//! the builder with this machine's Rust toolchain. Where a registry is reachable Docker pulls the
//! official ones.
//!
//! The builder stage compiles the four binaries at once; its layer and the Dockerfile's cache
//! mounts (cargo registry, target/) persist between runs, so a second run with nothing changed
//! takes seconds and a source change recompiles our crates only.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use super::{log, Podman, SERVICES};

const ME: &str = "images";

#[derive(clap::Args, Default)]
pub struct Options {
    /// The tag of the images.
    #[arg(long, default_value = "dev")]
    tag: String,
    /// Services to build (default: all four).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(SERVICES))]
    services: Vec<String>,
    /// Build without the layer cache (a cold build; the cache mounts are kept). Also IMAGES_NO_CACHE=1.
    #[arg(long)]
    no_cache: bool,
}

/// Builds the images and prints each one's size (base + our layers) and the build time.
pub fn build(opts: &Options) -> anyhow::Result<()> {
    let root = testkit::repo_root();
    let tag = if opts.tag.is_empty() { "dev" } else { &opts.tag };
    // Build order: the services share the builder stage, built with the first.
    let services: Vec<&str> = if opts.services.is_empty() {
        vec!["auth", "gateway", "notification", "converter"]
    } else {
        opts.services.iter().map(String::as_str).collect()
    };
    let engine = super::engine();
    let podman = if engine == "podman" {
        let podman = Podman::setup()?;
        let base = Command::new("bash").arg(root.join("scripts/container-env.sh")).args(["base-images", "podman"]).status()?;
        if !base.success() {
            bail!("scripts/container-env.sh base-images failed");
        }
        Some(podman)
    } else {
        None
    };
    let cmd = || podman.as_ref().map_or_else(|| Command::new(&engine), Podman::cmd);
    log(ME, format!("engine: {engine}"));

    let mut args = vec!["build", "-f", "docker/Dockerfile"];
    if podman.is_some() {
        // crates.io and Debian's mirrors are reached from RUN steps through the host's network.
        args.extend(["--network", "host", "--layers"]);
    }
    if opts.no_cache || std::env::var("IMAGES_NO_CACHE").is_ok_and(|v| v == "1") {
        args.push("--no-cache");
    }
    let logs = crate::dev_dir().join("logs");
    std::fs::create_dir_all(&logs)?;

    let start_all = Instant::now();
    for svc in &services {
        let start = Instant::now();
        let image = format!("mp3converter/{svc}:{tag}");
        let log_path = logs.join(format!("image-{svc}.log"));
        log(ME, format!("building {image} (log: {})", log_path.display()));
        let file = std::fs::File::create(&log_path)?;
        let mut build = cmd();
        build.current_dir(&root).args(&args).args(["--target", svc, "-t", &image, "."]).env("DOCKER_BUILDKIT", "1");
        let status =
            build.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).status().with_context(|| format!("run {engine} build"))?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("----- last lines of {}", log_path.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
            bail!("building {image} failed; log: {}", log_path.display());
        }
        log(ME, format!("{image} built in {} s", start.elapsed().as_secs()));
    }
    let took = start_all.elapsed().as_secs();

    // Sizes as base + our layers: what a user with the official base already pulled downloads.
    let size_of = |image: &str| -> anyhow::Result<u64> {
        let out = super::run_checked("image inspect", cmd().args(["image", "inspect", "--format", "{{.Size}}", image]))?;
        String::from_utf8_lossy(&out.stdout).trim().parse().context("an image size")
    };
    let mb = |bytes: f64| format!("{:.1} MB", bytes / 1e6);
    let base = size_of("docker.io/library/debian:bookworm-slim").or_else(|_| size_of("debian:bookworm-slim"))?;
    let mut table = format!("\n{:<32} {:>12} {:>14}\n", "image", "total", "our layers");
    for svc in &services {
        let image = format!("mp3converter/{svc}:{tag}");
        let total = size_of(&image)?;
        writeln!(table, "{image:<32} {:>12} {:>14}", mb(total as f64), mb(total as f64 - base as f64))?;
    }
    writeln!(
        table,
        "{:<32} {:>12}   (made here with debootstrap when absent; the official slim image is ~75 MB)",
        "debian:bookworm-slim",
        mb(base as f64)
    )?;
    write!(table, "built {} image(s) in {took} s with {engine}", services.len())?;
    println!("{table}");
    Ok(())
}
