//! Output options sent with an upload as multipart text fields: `bitrate` or `quality`, and a
//! cut (`start`, `end`). Parsed at the edge into `common::jobs::OutputOptions`; anything
//! invalid is a 400 naming the field.

use common::jobs::OutputOptions;

use crate::error::GatewayError;

/// MPEG-1 Layer III bitrates from 64k up (the encoder only makes these).
pub const BITRATES: [u32; 10] = [64, 80, 96, 112, 128, 160, 192, 224, 256, 320];

/// The option fields; any other text field is ignored, as before options existed.
pub const FIELDS: [&str; 4] = ["bitrate", "quality", "start", "end"];

/// Longest accepted option value (bytes): `HH:MM:SS.mmm` with room to spare.
pub const MAX_VALUE_LEN: usize = 32;

fn invalid(field: &'static str, reason: &str) -> GatewayError {
    GatewayError::InvalidOption { field, reason: reason.to_owned() }
}

/// Collects option fields as they arrive.
#[derive(Default)]
pub struct OptionsBuilder {
    options: OutputOptions,
}

impl OptionsBuilder {
    /// Takes one field's value; `name` must be one of [`FIELDS`].
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), GatewayError> {
        let value = value.trim();
        match name {
            "bitrate" => {
                let field = "bitrate";
                if self.options.bitrate.is_some() {
                    return Err(invalid(field, "given twice"));
                }
                self.options.bitrate = Some(parse_bitrate(value)?);
            }
            "quality" => {
                if self.options.quality.is_some() {
                    return Err(invalid("quality", "given twice"));
                }
                match value.parse::<u8>() {
                    Ok(q) if q <= 9 => self.options.quality = Some(q),
                    _ => return Err(invalid("quality", "expected a LAME VBR quality from 0 (best) to 9")),
                }
            }
            "start" => {
                if self.options.start.is_some() {
                    return Err(invalid("start", "given twice"));
                }
                self.options.start = Some(parse_time(value).ok_or_else(|| invalid("start", TIME_FORMAT))?);
            }
            "end" => {
                if self.options.end.is_some() {
                    return Err(invalid("end", "given twice"));
                }
                self.options.end = Some(parse_time(value).ok_or_else(|| invalid("end", TIME_FORMAT))?);
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks the fields against each other.
    pub fn finish(self) -> Result<OutputOptions, GatewayError> {
        let o = self.options;
        if o.bitrate.is_some() && o.quality.is_some() {
            return Err(invalid("quality", "give either bitrate (constant) or quality (variable), not both"));
        }
        if let (Some(start), Some(end)) = (o.start, o.end) {
            if end <= start {
                return Err(invalid("end", "must be after start"));
            }
        }
        if o.end == Some(0.0) {
            return Err(invalid("end", "must be after the beginning"));
        }
        Ok(o)
    }
}

const TIME_FORMAT: &str = "expected seconds (e.g. 90 or 12.5) or HH:MM:SS(.mmm)";

fn parse_bitrate(value: &str) -> Result<String, GatewayError> {
    let kbps = value.strip_suffix(['k', 'K']).unwrap_or(value).parse::<u32>().ok();
    match kbps {
        Some(k) if BITRATES.contains(&k) => Ok(format!("{k}k")),
        _ => {
            let list: Vec<String> = BITRATES.iter().map(|b| format!("{b}k")).collect();
            Err(invalid("bitrate", &format!("expected one of {}", list.join(", "))))
        }
    }
}

/// Seconds (`90`, `12.5`) or `HH:MM:SS(.mmm)`; at most a day, millisecond precision.
pub fn parse_time(value: &str) -> Option<f64> {
    let seconds = |s: &str| -> Option<f64> {
        // Plain digits with at most one point and three decimals: no signs, exponents, NaN.
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || whole.len() > 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
            return None;
        }
        s.parse().ok()
    };
    let total = match value.split(':').collect::<Vec<_>>()[..] {
        [s] => seconds(s)?,
        [h, m, s] => {
            let two = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
            if !(two(m) && s.split('.').next().is_some_and(two)) || h.is_empty() || h.len() > 2 || !h.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (m, s) = (m.parse::<f64>().ok()?, seconds(s)?);
            if m >= 60.0 || s >= 60.0 {
                return None;
            }
            h.parse::<f64>().ok()? * 3600.0 + m * 60.0 + s
        }
        _ => return None,
    };
    (total <= 86_400.0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(fields: &[(&str, &str)]) -> Result<OutputOptions, String> {
        let mut b = OptionsBuilder::default();
        for (k, v) in fields {
            b.set(k, v).map_err(|e| e.to_string())?;
        }
        b.finish().map_err(|e| e.to_string())
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("90"), Some(90.0));
        assert_eq!(parse_time("12.5"), Some(12.5));
        assert_eq!(parse_time("00:01:30"), Some(90.0));
        assert_eq!(parse_time("01:00:00.250"), Some(3600.25));
        for bad in [
            "", "-1", "1e3", "NaN", "inf", "1.", ".5", "1.2345", "00:60:00", "00:00:60", "1:2:3", "00:01", "a:bc:de", "99999999",
            "25:00:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn options_are_checked_and_named() {
        assert_eq!(build(&[]).unwrap(), OutputOptions::default());
        let o = build(&[("bitrate", "192k"), ("start", "1"), ("end", "00:00:03.5")]).unwrap();
        assert_eq!((o.bitrate.as_deref(), o.start, o.end), (Some("192k"), Some(1.0), Some(3.5)));
        assert_eq!(build(&[("bitrate", "128")]).unwrap().bitrate.as_deref(), Some("128k"));
        assert_eq!(build(&[("quality", "0")]).unwrap().quality, Some(0));
        for (fields, named) in [
            (&[("bitrate", "100k")][..], "bitrate"),
            (&[("bitrate", "32k")][..], "bitrate"),
            (&[("bitrate", "999999999999k")][..], "bitrate"),
            (&[("quality", "10")][..], "quality"),
            (&[("quality", "-1")][..], "quality"),
            (&[("bitrate", "128k"), ("quality", "2")][..], "quality"),
            (&[("start", "abc")][..], "start"),
            (&[("end", "1:2")][..], "end"),
            (&[("start", "5"), ("end", "4")][..], "end"),
            (&[("start", "5"), ("start", "6")][..], "start"),
        ] {
            let e = build(fields).unwrap_err();
            assert!(e.contains(&format!("invalid {named}:")), "{fields:?}: {e}");
        }
    }
}
