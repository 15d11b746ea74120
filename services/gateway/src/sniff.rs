//! Recognising audio/video containers by their first bytes, before anything is stored.
//!
//! Hand-written rather than `infer`: the question here is narrower ("might ffmpeg read this
//! as audio or video?"), and `infer` does not know several containers we must accept (MPEG
//! program and elementary streams, MPEG-TS by two packet syncs, ADTS AAC, AMR) while it maps
//! others by MIME type that we would have to list again anyway.

/// Bytes needed to recognise every signature below.
pub const PREFIX_LEN: usize = 189;

/// True when `head` (the first bytes of a file) starts like a known audio or video container.
pub fn is_media(head: &[u8]) -> bool {
    let at = |offset: usize, sig: &[u8]| head.len() >= offset + sig.len() && &head[offset..offset + sig.len()] == sig;
    at(0, &[0x1A, 0x45, 0xDF, 0xA3]) // Matroska / WebM (EBML)
        || at(4, b"ftyp") // MP4, MOV, M4A, 3GP
        || at(4, b"moov") || at(4, b"mdat") || at(4, b"free") || at(4, b"wide") // old QuickTime
        || (at(0, b"RIFF") && (at(8, b"AVI ") || at(8, b"WAVE"))) // AVI, WAV
        || at(0, b"FLV")
        || at(0, b"OggS")
        || at(0, b"fLaC")
        || at(0, b"ID3") // MP3 with ID3 tag
        || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) // MPEG audio frame / ADTS AAC
        || at(0, &[0x00, 0x00, 0x01, 0xBA]) // MPEG program stream
        || at(0, &[0x00, 0x00, 0x01, 0xB3]) // MPEG-1/2 video elementary stream
        || (head.len() >= 189 && head[0] == 0x47 && head[188] == 0x47) // MPEG-TS: two packet syncs
        || at(0, &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) // ASF / WMV / WMA
        || at(0, b"#!AMR")
        || at(0, b"FORM") && at(8, b"AIFF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_containers() {
        assert!(is_media(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42]));
        assert!(is_media(b"\0\0\0\x20ftypisom\0\0\x02\0"));
        assert!(is_media(b"RIFF\x24\0\0\0AVI LIST"));
        assert!(is_media(b"ID3\x04\0\0\0\0\0\0"));
        assert!(is_media(b"OggS\0\x02"));
    }

    #[test]
    fn other_files() {
        assert!(!is_media(b""));
        assert!(!is_media(b"%PDF-1.7\n"));
        assert!(!is_media(b"hello world, not a video"));
        assert!(!is_media(b"\x89PNG\r\n\x1a\n"));
        assert!(!is_media(b"PK\x03\x04zip"));
        assert!(!is_media(b"RIFF\x24\0\0\0WEBPVP8 "));
        assert!(!is_media(b"GET / HTTP/1.1"), "a lone 0x47 is not a transport stream");
    }
}
