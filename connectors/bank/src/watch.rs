//! A watched folder: statement files dropped into `[bank] watch_dir` are
//! imported by themselves. An imported file moves to `processed/`, a
//! rejected one to `failed/` with `<name>.error.txt` beside it saying why.
//! When the store cannot be reached the file stays and is tried again.
//!
//! A file is taken only once its size and modification time stayed the
//! same over two scans, so a file still being copied in is not read half.
//! Hidden files (`.name`) and `*.part`/`*.tmp` files are left alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dealbridge_core::mapping::MappingSet;
use tokio_util::sync::CancellationToken;

use crate::import::{ImportError, ImportSource, StatementImporter};

/// The mapping set in force when a file is imported.
pub type CurrentSet = Arc<dyn Fn() -> Arc<MappingSet> + Send + Sync>;

pub struct WatchedFolder {
    pub dir: PathBuf,
    pub importer: StatementImporter,
    pub mappings: CurrentSet,
    pub poll: Duration,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    Imported {
        moved_to: PathBuf,
    },
    Failed {
        moved_to: PathBuf,
        reason: String,
    },
    /// Left in place to be tried again (the store was not available).
    Retry {
        reason: String,
    },
}

impl WatchedFolder {
    pub async fn run(self, stop: CancellationToken) {
        for sub in ["processed", "failed"] {
            if let Err(e) = std::fs::create_dir_all(self.dir.join(sub)) {
                tracing::error!(dir = %self.dir.display(), error = %e, "Cannot prepare the watched statement folder.");
                return;
            }
        }
        tracing::info!(dir = %self.dir.display(), "Watching for bank statements.");
        let mut last_seen: HashMap<PathBuf, (u64, Option<SystemTime>)> = HashMap::new();
        while !stop.is_cancelled() {
            let ready = ready_files(&self.dir, &mut last_seen);
            for path in ready {
                let outcome = self.import_file(&path).await;
                match &outcome {
                    FileOutcome::Imported { moved_to } => {
                        tracing::info!(file = %path.display(), to = %moved_to.display(), "Statement imported.")
                    }
                    FileOutcome::Failed { moved_to, reason } => {
                        tracing::warn!(file = %path.display(), to = %moved_to.display(), %reason, "Statement rejected.")
                    }
                    FileOutcome::Retry { reason } => {
                        tracing::warn!(file = %path.display(), %reason, "Statement not imported yet; will retry.")
                    }
                }
                last_seen.remove(&path);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Imports one file and moves it where it belongs.
    pub async fn import_file(&self, path: &Path) -> FileOutcome {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return FileOutcome::Retry { reason: format!("reading the file: {e}") },
        };
        let set = (self.mappings)();
        match self.importer.import(&set, &bytes, Some(&name), ImportSource::Watch).await {
            Ok(report) => {
                let to = free_name(&self.dir.join("processed"), &name);
                match std::fs::rename(path, &to) {
                    Ok(()) => {
                        tracing::info!(
                            statement = %report.statement_id,
                            new = report.payments.new,
                            matched = report.payments.matched,
                            review = report.payments.review,
                            already = report.already_imported,
                            "Watched statement stored."
                        );
                        FileOutcome::Imported { moved_to: to }
                    }
                    Err(e) => FileOutcome::Retry { reason: format!("imported, but moving it failed: {e}") },
                }
            }
            Err(ImportError::Rejected(e)) => {
                let reason = format!("{name}: rejected, nothing imported: {e}");
                let to = free_name(&self.dir.join("failed"), &name);
                let mut note = to.clone().into_os_string();
                note.push(".error.txt");
                let _ = std::fs::write(&note, format!("{reason}\n"));
                match std::fs::rename(path, &to) {
                    Ok(()) => FileOutcome::Failed { moved_to: to, reason },
                    Err(e) => FileOutcome::Retry { reason: format!("{reason}; moving it failed: {e}") },
                }
            }
            Err(other) => FileOutcome::Retry { reason: other.to_string() },
        }
    }
}

/// Files whose size and modification time are the same as at the last scan.
fn ready_files(dir: &Path, last_seen: &mut HashMap<PathBuf, (u64, Option<SystemTime>)>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut ready = Vec::new();
    let mut present = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let seen = (meta.len(), meta.modified().ok());
        present.push(path.clone());
        if last_seen.insert(path.clone(), seen) == Some(seen) {
            ready.push(path);
        }
    }
    last_seen.retain(|p, _| present.contains(p));
    ready.sort();
    ready
}

/// `dir/name`, or `dir/name.<n>` when that is taken.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..).map(|n| dir.join(format!("{name}.{n}"))).find(|p| !p.exists()).unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_ready_once_it_stopped_changing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kl_to_1c.txt");
        std::fs::write(&file, "1CClientBankExchange\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        std::fs::write(dir.path().join("copying.part"), "x").unwrap();
        let mut seen = HashMap::new();
        assert!(ready_files(dir.path(), &mut seen).is_empty(), "first sight: wait one more scan");
        assert_eq!(ready_files(dir.path(), &mut seen), vec![file.clone()]);
        std::fs::write(&file, "1CClientBankExchange\nВерсияФормата=1.03\n").unwrap();
        assert!(ready_files(dir.path(), &mut seen).is_empty(), "it changed: wait again");
    }

    #[test]
    fn names_in_processed_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_name(dir.path(), "a.txt"), dir.path().join("a.txt"));
        std::fs::write(dir.path().join("a.txt"), "").unwrap();
        assert_eq!(free_name(dir.path(), "a.txt"), dir.path().join("a.txt.1"));
    }
}
