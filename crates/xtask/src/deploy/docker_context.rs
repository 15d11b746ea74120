//! The Docker build context holds what docker/Dockerfile's builder needs: `COPY . .` must see
//! Cargo.toml, Cargo.lock (`cargo build --locked`) and every workspace member (none excluded by
//! .dockerignore), and every `-p NAME` the Dockerfile builds must be a package of the workspace;
//! the converter's minimal ffmpeg must have a demuxer for each of the converter's INPUT_FORMATS.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// The problems found, and the summary line (`9 paths kept, 4 packages built, 0 problems`).
pub struct Report {
    pub problems: Vec<String>,
    pub summary: String,
}

/// The workspace's members (folders relative to the root) and package names, from
/// `cargo metadata` (cargo reads Cargo.toml as the build does).
fn workspace(root: &Path) -> anyhow::Result<(Vec<String>, BTreeSet<String>)> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .context("run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata's output")?;
    let root_dir = meta["workspace_root"].as_str().context("cargo metadata: no workspace_root")?;
    let (mut members, mut packages) = (Vec::new(), BTreeSet::new());
    for p in meta["packages"].as_array().into_iter().flatten() {
        let manifest = Path::new(p["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().and_then(|d| d.strip_prefix(root_dir).ok()).context("a member outside the workspace")?;
        members.push(dir.to_string_lossy().into_owned());
        packages.insert(p["name"].as_str().unwrap_or_default().to_owned());
    }
    members.sort();
    Ok((members, packages))
}

pub fn check(root: &Path) -> anyhow::Result<Report> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).with_context(|| format!("read {p}"));
    let patterns = ignore_patterns(&read(".dockerignore")?);
    let (members, packages) = workspace(root)?;
    let needed: Vec<String> = ["Cargo.toml", "Cargo.lock"].into_iter().map(str::to_owned).chain(members).collect();
    let mut problems: Vec<String> =
        needed.iter().filter(|p| excluded(p, &patterns)).map(|p| format!("{p} is excluded by .dockerignore")).collect();
    if !root.join("Cargo.lock").exists() {
        problems.push("Cargo.lock does not exist".into());
    }
    let dockerfile = read("docker/Dockerfile")?;
    let built = built_packages(&dockerfile);
    problems.extend(built.difference(&packages).map(|b| format!("docker/Dockerfile builds -p {b}, which is no workspace package")));
    // The converter image's minimal ffmpeg must have a demuxer for every input format the
    // converter allows (INPUT_FORMATS); ffmpeg names the mpegps demuxer "mpeg".
    if let Some(allowed) = input_formats(&read("services/converter/src/ffmpeg.rs")?) {
        let demuxers = demuxers(&dockerfile);
        let wanted: BTreeSet<&str> = allowed.split(',').map(|f| if f == "mpeg" { "mpegps" } else { f }).collect();
        problems.extend(
            wanted
                .iter()
                .filter(|f| !demuxers.contains(**f))
                .map(|f| format!("docker/Dockerfile's ffmpeg has no {f} demuxer, which INPUT_FORMATS allows")),
        );
    }
    let summary = format!("{} paths kept, {} packages built, {} problems", needed.len(), built.len(), problems.len());
    Ok(Report { problems, summary })
}

/// .dockerignore's patterns, as paths relative to the context (`**/` and slashes dropped).
fn ignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let l = l.trim_matches('/');
            l.strip_prefix("**/").unwrap_or(l).to_owned()
        })
        .collect()
}

/// Whether the path or one of its parent folders matches a pattern.
fn excluded(path: &str, patterns: &[String]) -> bool {
    let prefixes = path.match_indices('/').map(|(i, _)| &path[..i]).chain([path]);
    prefixes.into_iter().any(|p| patterns.iter().any(|pat| fnmatch(p.as_bytes(), pat.as_bytes())))
}

/// Shell-style matching as Python's fnmatch: `*` (any run, `/` included), `?`, `[seq]`, `[!seq]`.
fn fnmatch(name: &[u8], pat: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| fnmatch(&name[i..], rest)),
        Some((b'?', rest)) => !name.is_empty() && fnmatch(&name[1..], rest),
        Some((b'[', rest)) => {
            let negate = rest.first() == Some(&b'!');
            let body = if negate { &rest[1..] } else { rest };
            // A `]` right after `[` or `[!` is part of the set; no closing `]` means a literal `[`.
            let Some(end) = body.iter().skip(1).position(|c| *c == b']').map(|i| i + 1) else {
                return name.first() == Some(&b'[') && fnmatch(&name[1..], rest);
            };
            let (set, after) = (&body[..end], &body[end + 1..]);
            let Some((&c, tail)) = name.split_first() else { return false };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && fnmatch(tail, after)
        }
        Some((&p, rest)) => name.first() == Some(&p) && fnmatch(&name[1..], rest),
    }
}

/// Every `-p NAME` on a line that runs `cargo build`.
fn built_packages(dockerfile: &str) -> BTreeSet<String> {
    let mut built = BTreeSet::new();
    for line in dockerfile.lines() {
        let Some(i) = line.find("cargo build") else { continue };
        let mut rest = &line[i..];
        while let Some(j) = rest.find("-p ") {
            rest = &rest[j + 3..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if end > 0 {
                built.insert(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    built
}

/// `INPUT_FORMATS: &str = "mkv,mp4,..."` in the converter's source.
fn input_formats(source: &str) -> Option<&str> {
    const DECL: &str = "INPUT_FORMATS: &str = \"";
    let start = source.find(DECL)? + DECL.len();
    source[start..].find('"').map(|end| &source[start..start + end])
}

/// The demuxers of every `--enable-demuxer=a,b,c` of the ffmpeg build.
fn demuxers(dockerfile: &str) -> BTreeSet<&str> {
    const FLAG: &str = "--enable-demuxer=";
    dockerfile
        .match_indices(FLAG)
        .map(|(i, _)| &dockerfile[i + FLAG.len()..])
        .map(|rest| &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())])
        .flat_map(|list| list.split(',').map(str::trim))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns_exclude_folders_and_their_contents() {
        let patterns = ignore_patterns("# comment\ntarget/\n**/*.log\n\ncrates/x[0-9]\n");
        assert_eq!(patterns, ["target", "*.log", "crates/x[0-9]"]);
        assert!(excluded("target/debug/xtask", &patterns));
        assert!(excluded("crates/a/b.log", &patterns));
        assert!(excluded("crates/x1", &patterns));
        assert!(!excluded("crates/xtask", &patterns));
        assert!(!excluded("Cargo.lock", &patterns));
        // An excluded workspace member is what the check reports.
        assert!(excluded("crates/common", &ignore_patterns("crates/\n")));
    }

    #[test]
    fn dockerfile_packages_and_demuxers() {
        let df = "RUN cargo build --release --locked -p auth -p gateway \\\n    -p converter\n\
                  RUN ./configure --enable-demuxer=matroska,mov --enable-demuxer=mpegps\n";
        assert_eq!(built_packages(df), BTreeSet::from(["auth".to_owned(), "gateway".to_owned()]));
        assert_eq!(demuxers(df), BTreeSet::from(["matroska", "mov", "mpegps"]));
        assert_eq!(input_formats("pub const INPUT_FORMATS: &str = \"matroska,mov,mpeg\";"), Some("matroska,mov,mpeg"));
    }
}
