//! The decision log: a bounded in-memory ring (dashboard, `/api/decisions`), a broadcast for `/events` (of
//! events the server renders once), the
//! seed-style `llm.log` (prompt and reply per decision) and, with `DUMP_DATASET`, a JSONL dataset.
//!
//! Files are opened in append mode and each record is written with a single `write` of a complete entry, so
//! concurrent writers never interleave within an entry and a crash loses at most the entry being written — unlike
//! the seed, which rewrote its whole dataset file on every call. Both files rotate by size (`llm.log` →
//! `llm.log.1` … `llm.log.3`, the oldest deleted), so each stays under its cap however long the agent runs.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use ipa_core::{Recommendation, TargetRef};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::Error;
use crate::engine::{Attempt, Outcome};

/// Which protocol a decision came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `POST /v1/recommend`
    V1,
    /// `POST /askllm` or `/llmagent`
    Seed,
}

/// One decision, as shown on the dashboard and returned by `/api/decisions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub id: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub target: TargetRef,
    pub route: Route,
    pub provider: String,
    pub current_replicas: u32,
    /// The snapshot in the prompt's words (the data part of the prompt).
    pub snapshot_summary: String,
    pub prompt_system: String,
    pub prompt_user: String,
    pub attempts: Vec<Attempt>,
    pub recommendation: Recommendation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

impl DecisionRecord {
    pub fn from_outcome(
        id: u64,
        at_ms: i64,
        route: Route,
        provider: &str,
        target: TargetRef,
        current_replicas: u32,
        outcome: &Outcome,
    ) -> Self {
        Self {
            id,
            at_ms,
            target,
            route,
            provider: provider.to_string(),
            current_replicas,
            snapshot_summary: outcome.prompt.user.clone(),
            prompt_system: outcome.prompt.system.clone(),
            prompt_user: outcome.prompt.user.clone(),
            attempts: outcome.attempts.clone(),
            recommendation: outcome.recommendation.clone(),
            fallback_reason: outcome.fallback_reason.clone(),
        }
    }

    /// The reply the decision rests on: the last raw model reply, or the recommendation in reply form.
    pub fn output_text(&self) -> String {
        self.attempts
            .iter()
            .rev()
            .find_map(|a| a.reply.clone())
            .filter(|_| self.fallback_reason.is_none())
            .unwrap_or_else(|| ipa_core::reply::to_reply_json(&self.recommendation).to_string())
    }
}

/// Bytes the ring may hold, whatever `--history` says: records are dropped oldest first beyond it.
pub const MAX_RING_BYTES: usize = 32 * 1024 * 1024;

impl DecisionRecord {
    /// The record's text, roughly what it takes in memory (strings dominate).
    pub fn approx_bytes(&self) -> usize {
        let attempts: usize = self
            .attempts
            .iter()
            .map(|a| {
                a.reply.as_ref().map_or(0, String::len)
                    + a.error.as_ref().map_or(0, String::len)
                    + 64
            })
            .sum();
        let rec = &self.recommendation;
        512 + self.target.namespace.len()
            + self.target.deployment.len()
            + self.provider.len()
            + self.snapshot_summary.len()
            + self.prompt_system.len()
            + self.prompt_user.len()
            + self.fallback_reason.as_ref().map_or(0, String::len)
            + attempts
            + rec.rationale.len()
            + rec.model.as_ref().map_or(0, String::len)
            + rec
                .containers
                .iter()
                .map(|c| c.name.len() + 64)
                .sum::<usize>()
            + rec
                .notes
                .iter()
                .map(|n| n.message.len() + 32)
                .sum::<usize>()
    }
}

/// The ring and the bytes its records hold.
#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<Arc<DecisionRecord>>,
    bytes: usize,
}

/// The log. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct DecisionLog {
    ring: Mutex<Ring>,
    capacity: usize,
    max_bytes: usize,
    next_id: AtomicU64,
    events: broadcast::Sender<LiveEvent>,
    llm_log: Option<RotatingFile>,
    dataset: Option<RotatingFile>,
}

/// One `/events` message: the dashboard's live update for a decision, rendered once and shared by every
/// subscriber (rendering per subscriber cost 63 ms per decision with 200 of them, issue 11 #6).
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub id: u64,
    pub data: Arc<str>,
}

/// Default disk cap of `llm.log` and of the dataset, each: both together stay well inside the install's 256 MiB
/// `emptyDir`.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Rotated files kept beside the live one (`llm.log.1` newest … `llm.log.3` oldest).
pub const ROTATED_FILES: usize = 3;
/// Longest entry written. A longer `llm.log` entry is cut (its prompt can be as long as a request body); a longer
/// dataset line is skipped, since half a JSON line is no data. Bounding the entry is what makes the cap exact.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// Smallest cap: every file must hold at least one longest entry beyond its rotation threshold.
pub const MIN_LOG_MAX_BYTES: u64 = ((ROTATED_FILES + 1) * 2 * MAX_ENTRY_BYTES) as u64;

/// Which files the log writes, and the disk cap of each (rotated files included).
#[derive(Debug, Clone, Copy)]
pub struct LogFiles<'a> {
    pub llm_log: Option<&'a Path>,
    pub dataset: Option<&'a Path>,
    pub max_bytes: u64,
}

/// A file rotated by size: the live file moves to `.1` once it passed its threshold, `.1` to `.2` and so on, and
/// the oldest is deleted. The live file is at most `threshold + MAX_ENTRY_BYTES`, so all
/// `ROTATED_FILES + 1` files together stay under the cap.
struct RotatingFile {
    path: PathBuf,
    file: Mutex<FileRotate<AppendCount>>,
}

impl std::fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RotatingFile {
    /// Opens (or continues) `path` with a disk cap of `max_bytes` over it and its rotated files.
    fn open(path: &Path, max_bytes: u64) -> Result<Self, Error> {
        let failed = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        // file-rotate panics when it cannot create or list the directory, or resolve a relative path: everything
        // it needs is checked here first, so a bad `--log-file` is a start-up error, not a panic.
        let path = std::path::absolute(path).map_err(failed)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(failed)?;
        std::fs::read_dir(dir).map_err(failed)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(failed)?;
        let per_file = max_bytes.max(MIN_LOG_MAX_BYTES) / (ROTATED_FILES as u64 + 1);
        let threshold = usize::try_from(per_file)
            .unwrap_or(usize::MAX)
            .saturating_sub(MAX_ENTRY_BYTES)
            .max(1);
        let file = FileRotate::new(
            &path,
            AppendCount::new(ROTATED_FILES),
            ContentLimit::BytesSurpassed(threshold),
            Compression::None,
            None,
        );
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends one complete entry with a single write. File errors are logged, not returned: a full disk must
    /// not stop recommendations.
    fn append(&self, entry: &str) {
        // A poisoned lock means a write panicked half-way; the writer reopens its file on the next rotation.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(entry.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the decision log");
        }
    }
}

impl DecisionLog {
    pub fn new(capacity: usize, files: &LogFiles<'_>) -> Result<Self, Error> {
        let (events, _) = broadcast::channel(256);
        let open = |path: Option<&Path>| {
            path.map(|p| RotatingFile::open(p, files.max_bytes))
                .transpose()
        };
        Ok(Self {
            ring: Mutex::new(Ring {
                records: VecDeque::with_capacity(capacity.min(4096)),
                bytes: 0,
            }),
            capacity: capacity.max(1),
            max_bytes: MAX_RING_BYTES,
            next_id: AtomicU64::new(1),
            events,
            llm_log: open(files.llm_log)?,
            dataset: open(files.dataset)?,
        })
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// Sends a rendered event to every live subscriber (none is fine).
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.events.send(event);
    }

    /// Live `/events` listeners right now.
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Records a decision everywhere it goes. File errors are logged, not returned: a full disk must not stop
    /// recommendations.
    pub fn record(&self, record: DecisionRecord) -> Arc<DecisionRecord> {
        let record = Arc::new(record);
        if let Some(file) = &self.llm_log {
            file.append(&cut_entry(llm_log_entry(&record)));
        }
        if let Some(file) = &self.dataset {
            let line = serde_json::json!({
                "input": format!("{}\n\n{}", record.prompt_system, record.prompt_user),
                "output": record.output_text(),
                "target": record.target,
                "source": record.recommendation.source,
                "model": record.recommendation.model,
                "timestamp_ms": record.at_ms,
            });
            let line = format!("{line}\n");
            if line.len() <= MAX_ENTRY_BYTES {
                file.append(&line);
            } else {
                tracing::warn!(
                    bytes = line.len(),
                    "dataset line longer than {MAX_ENTRY_BYTES} bytes skipped"
                );
            }
        }
        if let Ok(mut ring) = self.ring.lock() {
            let size = record.approx_bytes();
            ring.bytes += size;
            ring.records.push_back(Arc::clone(&record));
            // Bounded by count and by bytes; the newest record always stays.
            while ring.records.len() > self.capacity
                || (ring.bytes > self.max_bytes && ring.records.len() > 1)
            {
                match ring.records.pop_front() {
                    Some(old) => ring.bytes = ring.bytes.saturating_sub(old.approx_bytes()),
                    None => break,
                }
            }
        }
        record
    }

    /// Newest first, skipping `offset`, at most `limit`, optionally only one target.
    pub fn page(
        &self,
        offset: usize,
        limit: usize,
        target: Option<&str>,
    ) -> (usize, Vec<Arc<DecisionRecord>>) {
        let Ok(ring) = self.ring.lock() else {
            return (0, Vec::new());
        };
        let ring = &ring.records;
        let matching = |r: &&Arc<DecisionRecord>| target.is_none_or(|t| r.target.to_string() == t);
        let total = ring.iter().filter(matching).count();
        let items = ring
            .iter()
            .rev()
            .filter(matching)
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        (total, items)
    }

    /// Every record, oldest first.
    pub fn all(&self) -> Vec<Arc<DecisionRecord>> {
        self.ring
            .lock()
            .map(|r| r.records.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// An `llm.log` entry of at most `MAX_ENTRY_BYTES`: a longer one is cut at a character boundary and says so.
fn cut_entry(mut entry: String) -> String {
    const MARK: &str = "\n--- (entry cut: longer than the log's entry limit)\n";
    if entry.len() <= MAX_ENTRY_BYTES {
        return entry;
    }
    let mut end = MAX_ENTRY_BYTES - MARK.len();
    while !entry.is_char_boundary(end) {
        end -= 1;
    }
    entry.truncate(end);
    entry.push_str(MARK);
    entry
}

/// One line of untrusted text (a name, a model's reply, an error): backslash, newline, carriage return, tab and
/// every other control character escaped, so it cannot start a forged `===` entry or rewrite a terminal line.
pub fn escape_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Multi-line text the agent wrote itself (the prompt): newlines kept, every other control character escaped.
fn escape_block(text: &str) -> String {
    text.split('\n')
        .map(escape_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn llm_log_entry(r: &DecisionRecord) -> String {
    let rec = &r.recommendation;
    let mut s = format!(
        "=== {} {} route={:?} provider={} source={} model={} latency_ms={} tokens={}+{}\n--- prompt\n{}\n\n{}\n",
        format_rfc3339(r.at_ms),
        escape_line(&r.target.to_string()),
        r.route,
        escape_line(&r.provider),
        rec.source.as_str(),
        escape_line(rec.model.as_deref().unwrap_or("-")),
        rec.latency_ms.unwrap_or(0),
        rec.prompt_tokens.unwrap_or(0),
        rec.completion_tokens.unwrap_or(0),
        escape_block(&r.prompt_system),
        escape_block(&r.prompt_user),
    );
    for (i, a) in r.attempts.iter().enumerate() {
        s.push_str(&format!(
            "--- reply {} ({} ms)\n{}\n",
            i + 1,
            a.latency_ms,
            escape_line(a.reply.as_deref().unwrap_or("(none)"))
        ));
        if let Some(e) = &a.error {
            s.push_str(&format!("--- rejected: {}\n", escape_line(&e.to_string())));
        }
    }
    s.push_str(&format!(
        "--- result\n{}\n",
        serde_json::to_string(rec).unwrap_or_default()
    ));
    s
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), without a date-time dependency.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_core::Source;
    use ipa_core::prompt::Prompt;

    fn no_files() -> LogFiles<'static> {
        LogFiles {
            llm_log: None,
            dataset: None,
            max_bytes: DEFAULT_LOG_MAX_BYTES,
        }
    }

    /// Total bytes of `path` and its rotated files.
    fn bytes_on_disk(path: &Path) -> u64 {
        (0..=ROTATED_FILES)
            .map(|i| match i {
                0 => path.to_path_buf(),
                i => PathBuf::from(format!("{}.{i}", path.display())),
            })
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    #[test]
    fn files_rotate_and_stay_under_their_cap() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ipa-agent-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (llm, dataset) = (dir.join("llm.log"), dir.join("dataset.jsonl"));
        let files = LogFiles {
            llm_log: Some(&llm),
            dataset: Some(&dataset),
            max_bytes: MIN_LOG_MAX_BYTES,
        };
        let log = DecisionLog::new(10, &files)?;
        // 3 × the cap in entries of ~10 KiB, one of them longer than an entry may be.
        for i in 0..600 {
            let mut r = record(&log, "a");
            r.prompt_user = if i == 300 {
                "y".repeat(2 * MAX_ENTRY_BYTES)
            } else {
                "x".repeat(10_000)
            };
            log.record(r);
        }
        for path in [&llm, &dataset] {
            let bytes = bytes_on_disk(path);
            assert!(bytes <= MIN_LOG_MAX_BYTES, "{}: {bytes}", path.display());
            // Three full rotated files at least: a quarter of the cap each, less the room kept for one entry.
            assert!(bytes > MIN_LOG_MAX_BYTES / 3, "{}: {bytes}", path.display());
            assert!(PathBuf::from(format!("{}.{ROTATED_FILES}", path.display())).exists());
            assert!(!PathBuf::from(format!("{}.{}", path.display(), ROTATED_FILES + 1)).exists());
        }
        // Rotation never splits an entry: the live file starts with one.
        assert!(std::fs::read_to_string(&llm)?.starts_with("=== "));
        let text = std::fs::read_to_string(&dataset)?;
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_long_entry_is_cut_at_a_character_boundary() {
        let entry = format!("=== x\n{}", "é".repeat(MAX_ENTRY_BYTES));
        let cut = cut_entry(entry);
        assert!(cut.len() <= MAX_ENTRY_BYTES, "{}", cut.len());
        assert!(cut.ends_with("(entry cut: longer than the log's entry limit)\n"));
        assert_eq!(cut_entry("short\n".into()), "short\n");
    }

    #[test]
    fn an_unusable_log_path_is_an_error_not_a_panic() {
        let files = LogFiles {
            llm_log: Some(Path::new("/proc/ipa-agent-no-such-dir/llm.log")),
            dataset: None,
            max_bytes: DEFAULT_LOG_MAX_BYTES,
        };
        assert!(DecisionLog::new(10, &files).is_err());
    }

    fn record(log: &DecisionLog, deployment: &str) -> DecisionRecord {
        let outcome = Outcome {
            recommendation: Recommendation::new(2, Source::Builtin),
            prompt: Prompt {
                system: "sys".into(),
                user: "user".into(),
            },
            attempts: Vec::new(),
            fallback_reason: None,
            provider_errors: Vec::new(),
        };
        DecisionRecord::from_outcome(
            log.next_id(),
            0,
            Route::V1,
            "builtin",
            TargetRef {
                namespace: "ns".into(),
                deployment: deployment.into(),
            },
            1,
            &outcome,
        )
    }

    #[test]
    fn ring_is_bounded_and_pages_newest_first() -> Result<(), Error> {
        let log = DecisionLog::new(3, &no_files())?;
        for d in ["a", "b", "a", "b", "a"] {
            log.record(record(&log, d));
        }
        let (total, page) = log.page(0, 10, None);
        assert_eq!(total, 3);
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5, 4, 3]);
        let (total, page) = log.page(1, 1, Some("ns/a"));
        assert_eq!((total, page.len(), page[0].id), (2, 1, 3));
        Ok(())
    }

    #[test]
    fn ring_is_bounded_by_bytes_too() -> Result<(), Error> {
        let mut log = DecisionLog::new(1000, &no_files())?;
        log.max_bytes = 64 * 1024;
        for _ in 0..100 {
            let mut r = record(&log, "a");
            r.prompt_user = "x".repeat(10_000);
            log.record(r);
        }
        let records = log.all();
        let bytes: usize = records.iter().map(|r| r.approx_bytes()).sum();
        assert!(bytes <= 64 * 1024, "{bytes}");
        assert!(
            records.len() >= 5 && records.len() < 10,
            "{}",
            records.len()
        );
        assert_eq!(records.last().map(|r| r.id), Some(100));
        Ok(())
    }

    #[test]
    fn files_get_one_line_per_decision() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ipa-agent-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let dataset = dir.join("dataset.jsonl");
        let llm = dir.join("llm.log");
        let _ = std::fs::remove_file(&dataset);
        let log = DecisionLog::new(
            10,
            &LogFiles {
                llm_log: Some(&llm),
                dataset: Some(&dataset),
                max_bytes: DEFAULT_LOG_MAX_BYTES,
            },
        )?;
        log.record(record(&log, "a"));
        log.record(record(&log, "b"));
        let text = std::fs::read_to_string(&dataset)?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["input"], "sys\n\nuser");
        assert!(
            lines[0]["output"]
                .as_str()
                .unwrap_or_default()
                .contains("\"replicas\":2")
        );
        assert!(std::fs::read_to_string(&llm)?.contains("=== 1970-01-01T00:00:00.000Z ns/a"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn llm_log_cannot_be_forged_by_a_name_or_a_reply() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ipa-agent-forge-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let llm = dir.join("llm.log");
        let _ = std::fs::remove_file(&llm);
        let log = DecisionLog::new(
            10,
            &LogFiles {
                llm_log: Some(&llm),
                dataset: None,
                max_bytes: DEFAULT_LOG_MAX_BYTES,
            },
        )?;
        let mut r = record(&log, "a\n=== 2030-01-01T00:00:00.000Z forged/entry");
        r.attempts.push(Attempt {
            reply: Some(
                "{\"replicas\":2}\n=== 2030-01-01T00:00:00.000Z ns/x route=V1\r\u{1b}[2K".into(),
            ),
            error: Some("bad\nreply".into()),
            latency_ms: 1,
            prompt_tokens: None,
            completion_tokens: None,
        });
        log.record(r);
        let text = std::fs::read_to_string(&llm)?;
        let entries = text.lines().filter(|l| l.starts_with("=== ")).count();
        assert_eq!(entries, 1, "{text}");
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text}");
        assert!(text.contains("{\"replicas\":2}\\n=== 2030"), "{text}");
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(escape_line("a\\b\tc"), "a\\\\b\\tc");
        Ok(())
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_795_000_000_123),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
