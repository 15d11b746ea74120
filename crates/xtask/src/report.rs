//! The typed results of a run: what is written to `target/bench/results.json`, printed as the
//! table, and rendered into `docs/performance.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The size of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// 256 MiB, the 60 s video only, one throughput round, 3 s wrk runs (~2-3 min).
    Quick,
    /// 1 GiB, 60 s and 10 min videos, every throughput round, 10 s wrk runs (~9-11 min).
    Full,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

/// Whether a figure met its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Reported without a target.
    Info,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "-",
        }
    }
}

/// One line of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub figure: String,
    /// As shown, with its unit (medians of the repetitions).
    pub value: String,
    /// The same-run baseline the ratio is taken against.
    pub baseline: Option<String>,
    pub ratio: Option<f64>,
    pub target: Option<String>,
    pub verdict: Verdict,
}

/// The machine the run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub load_start: String,
    pub load_end: String,
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `bench` for the benchmark, `pipeline` for the upload-to-email figures.
    pub kind: String,
    pub mode: Option<Mode>,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub started: String,
    pub commit: Option<String>,
    pub machine: Machine,
    /// Which MongoDB the GridFS figures were taken against.
    pub mongodb: String,
    pub reps: usize,
    pub rows: Vec<Row>,
    /// Every repetition, as readable lines (shown under the table).
    pub raw: Vec<String>,
    /// Every repetition's number by name, for whoever wants more than medians.
    pub samples: BTreeMap<String, Vec<f64>>,
}

impl Report {
    pub fn new(kind: &str, mode: Option<Mode>, reps: usize) -> Self {
        Self {
            kind: kind.to_owned(),
            mode,
            started: crate::system::now_utc(),
            commit: crate::system::git_head(),
            machine: Machine::default(),
            mongodb: String::new(),
            reps,
            rows: Vec::new(),
            raw: Vec::new(),
            samples: BTreeMap::new(),
        }
    }

    /// Adds a row; `pass` decides PASS/FAIL when there is a target.
    pub fn row(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        baseline: Option<String>,
        ratio: Option<f64>,
        target: Option<&str>,
        pass: bool,
    ) {
        let verdict = match target {
            None => Verdict::Info,
            Some(_) if pass => Verdict::Pass,
            Some(_) => Verdict::Fail,
        };
        let row = Row { figure: figure.into(), value: value.into(), baseline, ratio, target: target.map(str::to_owned), verdict };
        eprintln!(
            "[bench] {:<46} {:<22} {:<18} {:<8} {:<14} {}",
            row.figure,
            row.value,
            row.baseline.as_deref().unwrap_or(""),
            row.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
            row.target.as_deref().unwrap_or(""),
            row.verdict.label()
        );
        self.rows.push(row);
    }

    /// A figure reported without a target.
    pub fn info(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.row(figure, value, None, None, None, true);
    }

    pub fn raw(&mut self, line: impl Into<String>) {
        self.raw.push(line.into());
    }

    pub fn sample(&mut self, name: &str, value: f64) {
        self.samples.entry(name.to_owned()).or_default().push(value);
    }

    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.verdict == Verdict::Fail)
    }

    /// The table as `scripts/bench.sh` has always printed it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "mp3converter benchmark ({}), {}", self.mode.map_or(self.kind.as_str(), |m| m.name()), self.started);
        let _ = writeln!(
            out,
            "machine: {} cores ({}), {} MiB memory; load average at start {}, at end {}",
            m.cores, m.cpu_model, m.memory_mib, m.load_start, m.load_end
        );
        let _ = writeln!(out, "MongoDB: {}; RabbitMQ and MariaDB local; medians of {} runs\n", self.mongodb, self.reps);
        let _ = writeln!(out, "{:<48} {:<30} {:<24} {:<7} {:<16} result", "figure", "value", "baseline", "ratio", "target");
        let _ = writeln!(out, "{}", "-".repeat(136));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<48} {:<30} {:<24} {:<7} {:<16} {}",
                r.figure,
                r.value,
                r.baseline.as_deref().unwrap_or("-"),
                r.ratio.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
                r.target.as_deref().unwrap_or("-"),
                r.verdict.label()
            );
        }
        let _ = writeln!(out, "\nraw measurements:");
        for line in &self.raw {
            let _ = writeln!(out, "  {line}");
        }
        out
    }

    /// The run as a section of `docs/performance.md`: the table in a fence (as printed) and
    /// the raw measurements folded under it.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let what = match self.mode {
            Some(Mode::Quick) => "Quick run (`scripts/bench.sh --quick`)",
            Some(Mode::Full) => "Full run (`scripts/bench.sh`)",
            None => "Pipeline run (`scripts/bench.sh --pipeline`)",
        };
        let at = self.commit.as_deref().map(|c| format!(", at commit {}", &c[..c.len().min(7)])).unwrap_or_default();
        let _ = writeln!(out, "### {what}, {}{at}\n", self.started.split(' ').next().unwrap_or(""));
        let passed = self.rows.iter().filter(|r| r.verdict == Verdict::Pass).count();
        let failed = self.rows.iter().filter(|r| r.verdict == Verdict::Fail).count();
        let _ = writeln!(
            out,
            "{passed} figures met their target, {failed} missed it. Generated from `target/bench/results.json` by `xtask render`.\n"
        );
        let table = self.table();
        let (head, raw) = table.split_once("\nraw measurements:\n").unwrap_or((&table, ""));
        let _ = writeln!(out, "```\n{}\n```\n", head.trim_end());
        if !raw.is_empty() {
            let _ = writeln!(out, "<details><summary>raw measurements of this run</summary>\n\n```\n{}\n```\n</details>", raw.trim_end());
        }
        out
    }
}

/// The markers between which `xtask render --write` puts the generated section.
pub const BEGIN: &str = "<!-- bench:begin (generated by `xtask render --write`; edit crates/xtask, not this) -->";
pub const END: &str = "<!-- bench:end -->";

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by `section`.
pub fn splice(doc: &str, section: &str) -> anyhow::Result<String> {
    let start = doc.find(BEGIN).ok_or_else(|| anyhow::anyhow!("the document has no {BEGIN:?} marker"))?;
    let end = doc[start..].find(END).map(|e| start + e).ok_or_else(|| anyhow::anyhow!("the document has no {END:?} marker"))?;
    Ok(format!("{}{BEGIN}\n\n{}\n{}", &doc[..start], section.trim_end(), &doc[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("bench", Some(Mode::Quick), 3);
        r.started = "2026-11-26 03:00:00".into();
        r.commit = Some("0123456789abcdef".into());
        r.mongodb = "SecantusDB".into();
        r.row("upload 256 MiB: gateway throughput", "52.4 MiB/s", Some("50.9 MiB/s".into()), Some(1.0943), Some(">= 0.80x"), true);
        r.row("convert 600 s video: converter per job", "8.330 s", Some("7.430 s ffmpeg".into()), Some(1.12), Some("<= 1.10x"), false);
        r.info("  steps: read+probe+ffmpeg+store", "1.24 s");
        r.raw("media: big 1 bytes");
        r
    }

    #[test]
    fn the_table_keeps_its_columns() {
        let t = sample().table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "mp3converter benchmark (quick), 2026-11-26 03:00:00");
        assert!(lines[4].starts_with("figure") && lines[4].ends_with("result"));
        assert_eq!(lines[5].len(), 136);
        assert_eq!(
            lines[6],
            format!(
                "{:<48} {:<30} {:<24} {:<7} {:<16} PASS",
                "upload 256 MiB: gateway throughput", "52.4 MiB/s", "50.9 MiB/s", "1.09", ">= 0.80x"
            )
        );
        assert!(lines[7].ends_with("FAIL"));
        assert!(lines[8].contains(" - ") && lines[8].ends_with(" -"));
        assert!(t.ends_with("raw measurements:\n  media: big 1 bytes\n"));
        assert!(sample().failed());
    }

    #[test]
    fn json_round_trips_and_renders() {
        let json = serde_json::to_string(&sample()).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rows.len(), 3);
        assert_eq!(back.rows[1].verdict, Verdict::Fail);
        let md = back.markdown();
        assert!(md.starts_with("### Quick run (`scripts/bench.sh --quick`), 2026-11-26, at commit 0123456\n"));
        assert!(md.contains("1 figures met their target, 1 missed it"));
        let doc = format!("intro\n{BEGIN}\nold\n{END}\nrest\n");
        let new = splice(&doc, &md).unwrap();
        assert!(new.starts_with("intro\n") && new.ends_with(&format!("{END}\nrest\n")));
        assert!(!new.contains("old") && new.contains("upload 256 MiB"));
        assert!(splice("no markers", &md).is_err());
    }
}
