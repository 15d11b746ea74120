//! ffprobe and ffmpeg as child processes: a typed error, a timeout, and `kill_on_drop` so an
//! abandoned job never leaves an ffmpeg running.
//!
//! Uploaded bytes are hostile. ffmpeg's demuxers for playlists and scripts (HLS, DASH,
//! ffconcat, SDP, IMF, ...) open whatever files or URLs the bytes name, so a "video" that is a
//! playlist of a file on the converter's disk would come back as that file's audio. Both
//! programs therefore open the input with [`INPUT_FORMATS`] as the only demuxers allowed and
//! `file` as the only protocol: a playlist is refused as "not on whitelist", and `subfile:`,
//! `data:`, `concat:`, `http:` and the like can be named by nothing.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::ffi::OsString;

use common::jobs::OutputOptions;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

/// The demuxers allowed to read an upload: real media containers that hold their media
/// themselves. ffmpeg matches each name against a demuxer's comma-separated names, so `mov`
/// also admits mp4/m4a/3gp and `matroska` also webm. Deliberately absent: every demuxer that
/// follows references (hls, dash, concat, imf, sdp, rtp, rtsp, webm_dash_manifest, image2,
/// lavfi, ...) and text formats in general. `mov` follows its external data references only with
/// `enable_drefs`, which is off by default.
pub const INPUT_FORMATS: &str = "matroska,mov,avi,asf,flv,mpegts,mpeg,mp3,wav,w64,aiff,ogg,flac,aac,ac3,eac3,amr,caf,wv,ape,dts,au";

/// Most of ffprobe's stdout kept (its JSON for a normal file is a few kB).
const MAX_STDOUT: usize = 1 << 20;
/// How much of stderr's end is kept: ffmpeg says what went wrong last, and a hostile file can
/// make it print warnings without end.
const STDERR_TAIL: usize = 4096;

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
    #[error("{program} wrote more than {MAX_STDOUT} bytes to stdout")]
    TooMuchOutput { program: String },
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

/// Starts `program` with `args`, its output piped and no input; killed when its handle drops
/// (a job that times out or is cancelled leaves no ffmpeg behind).
fn spawn(program: &Path, args: &[impl AsRef<OsStr>]) -> Result<tokio::process::Child, FfError> {
    Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().map_err(
        |e| {
            let program = program.display().to_string();
            match e.kind() {
                std::io::ErrorKind::NotFound => FfError::NotFound { program },
                _ => FfError::Io { program, source: e },
            }
        },
    )
}

async fn run(program: &Path, args: &[&OsStr], timeout: Duration) -> Result<Vec<u8>, FfError> {
    let name = program.display().to_string();
    let mut child = spawn(program, args)?;
    let (stdout, stderr) = (child.stdout.take().expect("stdout is piped"), child.stderr.take().expect("stderr is piped"));
    // Both pipes are drained to the end while the child runs (a full pipe would stall it), but
    // only a bounded amount of each is kept.
    let work = async { tokio::join!(read_capped(stdout, MAX_STDOUT), read_tail(stderr, STDERR_TAIL), child.wait()) };
    let (out, err, status) =
        tokio::time::timeout(timeout, work).await.map_err(|_| FfError::TimedOut { program: name.clone(), after: timeout })?;
    let io = |e| FfError::Io { program: name.clone(), source: e };
    let (status, (out, overflowed), err) = (status.map_err(io)?, out.map_err(io)?, err.map_err(io)?);
    if !status.success() {
        return Err(FfError::Failed { program: name, status, stderr: tail(&err) });
    }
    if overflowed {
        return Err(FfError::TooMuchOutput { program: name });
    }
    Ok(out)
}

/// Reads `r` to its end, keeping the first `cap` bytes; true when more came.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let (mut kept, mut buf, mut overflowed) = (Vec::new(), vec![0u8; 8192], false);
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, overflowed));
        }
        let room = cap - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
        overflowed |= n > room;
    }
}

/// Reads `r` to its end, keeping (at most about twice) its last `keep` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> std::io::Result<Vec<u8>> {
    let (mut kept, mut buf) = (Vec::with_capacity(2 * keep), vec![0u8; 8192]);
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let start = kept.len().saturating_sub(keep);
            return Ok(kept.split_off(start));
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
        }
    }
}

/// The last few hundred characters of stderr, where ffmpeg says what went wrong.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let start = text.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

/// The input options both programs put before the upload: only [`INPUT_FORMATS`], only the
/// `file` protocol, and the path spelled as a `file:` URL so that no part of it is read as
/// another protocol's prefix.
fn input_args(input: &Path) -> Vec<std::ffi::OsString> {
    let mut url = std::ffi::OsString::from("file:");
    url.push(input.as_os_str());
    ["-protocol_whitelist", "file", "-format_whitelist", INPUT_FORMATS, "-i"].into_iter().map(Into::into).chain([url]).collect()
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
    let mut args: Vec<std::ffi::OsString> =
        ["-v", "error", "-print_format", "json", "-show_streams", "-show_format"].into_iter().map(Into::into).collect();
    args.extend(input_args(input));
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run(ffprobe, &args, timeout).await?;
    let parsed: ProbeJson = serde_json::from_slice(&out).map_err(FfError::BadProbe)?;
    let audio = parsed.streams.iter().find(|s| s.codec_type.as_deref() == Some("audio"));
    let seconds = |d: &Option<String>| d.as_deref().and_then(|d| d.parse::<f64>().ok()).filter(|d| d.is_finite() && *d > 0.0);
    let audio_seconds = audio.and_then(|a| seconds(&a.duration).or_else(|| parsed.format.as_ref().and_then(|f| seconds(&f.duration))));
    Ok(Probe { audio_codec: audio.map(|s| s.codec_name.clone().unwrap_or_default()), audio_seconds })
}

/// The ffmpeg arguments: the first audio track only (video, subtitles and data are not even
/// decoded), MP3 via libmp3lame at VBR quality 4 (~165 kb/s, transparent for speech and most
/// music, and lame's fastest good setting) unless the owner asked for a bitrate or quality, or a
/// plain stream copy when the audio already is MP3 and nothing asks for a re-encode. A cut seeks
/// the input (`-ss` before `-i`, exact for audio) and bounds the output's length (`-t`).
/// With `progress`, ffmpeg reports its position on stdout (`-progress pipe:1`).
pub fn convert_args(input: &Path, output: &Path, copy: bool, options: &OutputOptions, progress: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"].iter().map(OsString::from).collect();
    if let Some(start) = options.start.filter(|s| *s > 0.0) {
        args.extend(["-ss".into(), format!("{start:.3}").into()]);
    }
    args.extend(input_args(input));
    for a in ["-map", "0:a:0", "-vn", "-sn", "-dn"] {
        args.push(a.into());
    }
    if let Some(end) = options.end {
        let length = end - options.start.unwrap_or(0.0);
        args.extend(["-t".into(), format!("{length:.3}").into()]);
    }
    let codec: Vec<String> = match (&options.bitrate, options.quality) {
        _ if copy => vec!["-c:a".into(), "copy".into()],
        (Some(b), _) => vec!["-c:a".into(), "libmp3lame".into(), "-b:a".into(), b.clone()],
        (None, Some(q)) => vec!["-c:a".into(), "libmp3lame".into(), "-q:a".into(), q.to_string()],
        (None, None) => vec!["-c:a".into(), "libmp3lame".into(), "-q:a".into(), "4".into()],
    };
    args.extend(codec.into_iter().map(OsString::from));
    if progress {
        args.extend(["-progress", "pipe:1", "-nostats"].map(OsString::from));
    }
    args.extend(["-f".into(), "mp3".into(), output.as_os_str().to_owned()]);
    args
}

/// Runs ffmpeg; with `progress`, sends the output position (seconds) as ffmpeg reports it
/// (about twice a second).
pub async fn convert(
    ffmpeg: &Path,
    input: &Path,
    output: &Path,
    copy: bool,
    options: &OutputOptions,
    progress: Option<watch::Sender<f64>>,
    timeout: Duration,
) -> Result<(), FfError> {
    let args = convert_args(input, output, copy, options, progress.is_some());
    let Some(progress) = progress else {
        let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        return run(ffmpeg, &refs, timeout).await.map(|_| ());
    };
    let name = ffmpeg.display().to_string();
    let io_error = |e: std::io::Error| FfError::Io { program: name.clone(), source: e };
    let mut child = spawn(ffmpeg, &args)?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let report = async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // `out_time_us` is the position in microseconds (`N/A` before the first frame).
            if let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.trim().parse::<i64>().ok()) {
                progress.send_replace(us.max(0) as f64 / 1e6);
            }
        }
    };
    let errors = async move { read_tail(stderr, STDERR_TAIL).await.unwrap_or_default() };
    let work = async {
        let (_, stderr, status) = tokio::join!(report, errors, child.wait());
        (stderr, status)
    };
    let (stderr, status) =
        tokio::time::timeout(timeout, work).await.map_err(|_| FfError::TimedOut { program: name.clone(), after: timeout })?;
    let status = status.map_err(io_error)?;
    if !status.success() {
        return Err(FfError::Failed { program: name, status, stderr: tail(&stderr) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_select_first_audio_track() {
        let joined = |a: Vec<OsString>| a.iter().map(|x| x.to_str().unwrap().to_owned()).collect::<Vec<_>>().join(" ");
        let none = OutputOptions::default();
        assert_eq!(
            joined(convert_args(Path::new("/t/in"), Path::new("/t/out.mp3"), false, &none, false)),
            format!(
                "-nostdin -hide_banner -loglevel error -y -protocol_whitelist file -format_whitelist {INPUT_FORMATS} -i file:/t/in \
                 -map 0:a:0 -vn -sn -dn -c:a libmp3lame -q:a 4 -f mp3 /t/out.mp3"
            )
        );
        let c = convert_args(Path::new("in"), Path::new("out"), true, &none, false);
        assert!(c.iter().any(|x| *x == "copy"));
        let cut = OutputOptions { bitrate: Some("128k".into()), start: Some(1.5), end: Some(4.0), ..Default::default() };
        assert_eq!(
            joined(convert_args(Path::new("in"), Path::new("out"), false, &cut, true)),
            format!(
                "-nostdin -hide_banner -loglevel error -y -ss 1.500 -protocol_whitelist file -format_whitelist {INPUT_FORMATS} -i file:in \
                 -map 0:a:0 -vn -sn -dn -t 2.500 -c:a libmp3lame -b:a 128k -progress pipe:1 -nostats -f mp3 out"
            )
        );
        let q = OutputOptions { quality: Some(7), end: Some(3.0), ..Default::default() };
        assert!(joined(convert_args(Path::new("in"), Path::new("out"), false, &q, false)).contains("-t 3.000 -c:a libmp3lame -q:a 7"));
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
    async fn output_kept_in_memory_is_bounded() {
        // 8 MB of stderr, then the real error, then a failure: only the end is kept.
        let script = "head -c 8000000 /dev/zero | tr '\\0' x >&2; echo; echo 'the real error' >&2; exit 3";
        let e = run(Path::new("sh"), &["-c".as_ref(), script.as_ref()], Duration::from_secs(30)).await.unwrap_err();
        let FfError::Failed { stderr, .. } = e else { panic!("{e}") };
        assert!(stderr.ends_with("the real error") && stderr.len() <= 400, "{} bytes", stderr.len());
        let (kept, overflowed) = read_capped(&b"abcdef"[..], 4).await.unwrap();
        assert_eq!((kept.as_slice(), overflowed), (&b"abcd"[..], true));
        let big = vec![7u8; 100_000];
        let tail = read_tail(&big[..], 1000).await.unwrap();
        assert_eq!(tail.len(), 1000);
        // Too much stdout (a probe of a file with endless streams) is an error, not a huge Vec.
        let e = run(Path::new("sh"), &["-c".as_ref(), "head -c 3000000 /dev/zero".as_ref()], Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(e, FfError::TooMuchOutput { .. }), "{e}");
    }

    #[tokio::test]
    async fn timeout_kills() {
        let e = run(Path::new("sleep"), &["5".as_ref()], Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, FfError::TimedOut { .. }), "{e}");
    }
}
