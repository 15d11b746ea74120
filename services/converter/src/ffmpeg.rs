//! ffprobe and ffmpeg as child processes: a typed error, a timeout, and `kill_on_drop` so an
//! abandoned job never leaves an ffmpeg running.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum FfError {
    #[error("{program} not found; install ffmpeg or set FFMPEG_PATH/FFPROBE_PATH")]
    NotFound { program: String },
    #[error("{program} timed out after {after:?}")]
    TimedOut { program: String, after: Duration },
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: String, status: std::process::ExitStatus, stderr: String },
    #[error("running {program} failed")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unreadable ffprobe output")]
    BadProbe(#[source] serde_json::Error),
}

/// What ffprobe says of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Codec of the first audio stream, if there is one.
    pub audio_codec: Option<String>,
    /// Length of the audio stream (or, when the container only knows its own, of the file) in
    /// seconds, when ffprobe can tell: the conversion speed metric divides by it.
    pub audio_seconds: Option<f64>,
}

/// Checks, without running it, that `program` is an executable file (a bare name is looked up
/// on `PATH`), so that a missing ffmpeg stops the converter at start-up instead of failing
/// every job.
pub fn ensure_executable(program: &Path) -> Result<(), FfError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if program.components().count() > 1 {
        executable(program)
    } else {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
    };
    if found {
        Ok(())
    } else {
        Err(FfError::NotFound { program: program.display().to_string() })
    }
}

async fn run(program: &Path, args: &[&std::ffi::OsStr], timeout: Duration) -> Result<Vec<u8>, FfError> {
    let name = program.display().to_string();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FfError::NotFound { program: name.clone() },
            _ => FfError::Io { program: name.clone(), source: e },
        })?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| FfError::TimedOut { program: name.clone(), after: timeout })?
        .map_err(|e| FfError::Io { program: name.clone(), source: e })?;
    if !output.status.success() {
        return Err(FfError::Failed { program: name, status: output.status, stderr: tail(&output.stderr) });
    }
    Ok(output.stdout)
}

/// The last few hundred bytes of stderr, where ffmpeg says what went wrong.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let start = text.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Deserialize)]
struct FormatJson {
    duration: Option<String>,
}

#[derive(Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    duration: Option<String>,
}

pub async fn probe(ffprobe: &Path, input: &Path, timeout: Duration) -> Result<Probe, FfError> {
    let args: [&std::ffi::OsStr; 8] = [
        "-v".as_ref(),
        "error".as_ref(),
        "-print_format".as_ref(),
        "json".as_ref(),
        "-show_streams".as_ref(),
        "-show_format".as_ref(),
        "--".as_ref(),
        input.as_os_str(),
    ];
    let out = run(ffprobe, &args, timeout).await?;
    let parsed: ProbeJson = serde_json::from_slice(&out).map_err(FfError::BadProbe)?;
    let audio = parsed.streams.iter().find(|s| s.codec_type.as_deref() == Some("audio"));
    let seconds = |d: &Option<String>| d.as_deref().and_then(|d| d.parse::<f64>().ok()).filter(|d| d.is_finite() && *d > 0.0);
    let audio_seconds = audio.and_then(|a| seconds(&a.duration).or_else(|| parsed.format.as_ref().and_then(|f| seconds(&f.duration))));
    Ok(Probe { audio_codec: audio.map(|s| s.codec_name.clone().unwrap_or_default()), audio_seconds })
}

/// The ffmpeg arguments: the first audio track only (video, subtitles and data are not even
/// decoded), MP3 via libmp3lame at VBR quality 4 (~165 kb/s, transparent for speech and most
/// music, and lame's fastest good setting) or a plain stream copy when the audio already is MP3.
pub fn convert_args<'a>(input: &'a Path, output: &'a Path, copy: bool) -> Vec<&'a std::ffi::OsStr> {
    let mut args: Vec<&std::ffi::OsStr> =
        ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"].iter().map(|s| s.as_ref()).collect();
    args.push(input.as_os_str());
    let codec: &[&str] = if copy { &["-c:a", "copy"] } else { &["-c:a", "libmp3lame", "-q:a", "4"] };
    for a in ["-map", "0:a:0", "-vn", "-sn", "-dn"].iter().chain(codec).chain(&["-f", "mp3"]) {
        args.push(a.as_ref());
    }
    args.push(output.as_os_str());
    args
}

pub async fn convert(ffmpeg: &Path, input: &Path, output: &Path, copy: bool, timeout: Duration) -> Result<(), FfError> {
    run(ffmpeg, &convert_args(input, output, copy), timeout).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_select_first_audio_track() {
        let a = convert_args(Path::new("/t/in"), Path::new("/t/out.mp3"), false);
        let s: Vec<_> = a.iter().map(|x| x.to_str().unwrap()).collect();
        assert_eq!(
            s.join(" "),
            "-nostdin -hide_banner -loglevel error -y -i /t/in -map 0:a:0 -vn -sn -dn -c:a libmp3lame -q:a 4 -f mp3 /t/out.mp3"
        );
        let c = convert_args(Path::new("in"), Path::new("out"), true);
        assert!(c.iter().any(|x| *x == "copy"));
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(1000) + "the real error";
        let t = tail(long.as_bytes());
        assert!(t.ends_with("the real error") && t.chars().count() == 400);
    }

    #[tokio::test]
    async fn missing_program_is_named() {
        let e = probe(Path::new("/nonexistent/ffprobe"), Path::new("x"), Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, FfError::NotFound { .. }), "{e}");
    }

    #[test]
    fn executables_are_found_on_path_or_by_path() {
        assert!(ensure_executable(Path::new("sh")).is_ok());
        assert!(ensure_executable(Path::new("/bin/sh")).is_ok());
        assert!(matches!(ensure_executable(Path::new("no-such-ffmpeg")), Err(FfError::NotFound { .. })));
        let not_executable = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(ensure_executable(not_executable.path()), Err(FfError::NotFound { .. })));
    }

    #[tokio::test]
    async fn timeout_kills() {
        let e = run(Path::new("sleep"), &["5".as_ref()], Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, FfError::TimedOut { .. }), "{e}");
    }
}
