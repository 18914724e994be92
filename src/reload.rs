//! Hot reload of the mapping set.
//!
//! Admins edit files under `mappings/` on a running hub. Each change (after
//! a short debounce, since editors write files in several steps) reloads
//! and validates the *whole* set off the async runtime; only a set that is
//! valid as a whole replaces the running one, atomically. An invalid edit
//! is logged with its `file:line:column` diagnostics and counted, and the
//! last good set keeps running. `reload_now` does the same on demand (an
//! API call or SIGHUP), for editors on network shares that inotify misses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// Loads and validates a whole set from a directory; on failure, every
/// problem as a `file:line:column: message` line.
pub type LoadFn<T> = Arc<dyn Fn(&Path) -> Result<T, Vec<String>> + Send + Sync>;

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Swapped,
    /// The edit was invalid; the previous set keeps running.
    Rejected(Vec<String>),
}

/// The running set and how to reload it.
pub struct LiveSet<T> {
    dir: PathBuf,
    current: ArcSwap<T>,
    load: LoadFn<T>,
}

impl<T: Send + Sync + 'static> LiveSet<T> {
    /// Loads the initial set; an invalid initial set is an error (the hub
    /// does not start on mappings it cannot use).
    pub fn load(dir: &Path, load: LoadFn<T>) -> Result<Arc<Self>, Vec<String>> {
        let first = load(dir)?;
        Ok(Arc::new(Self { dir: dir.to_owned(), current: ArcSwap::from_pointee(first), load }))
    }

    /// The set in force now; cheap, lock-free.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Reloads from disk; swaps only when the whole set is valid.
    pub async fn reload_now(self: &Arc<Self>) -> ReloadOutcome {
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || (this.load)(&this.dir)).await;
        let outcome = match loaded {
            Ok(Ok(set)) => {
                self.current.store(Arc::new(set));
                ReloadOutcome::Swapped
            }
            Ok(Err(problems)) => ReloadOutcome::Rejected(problems),
            Err(join) => ReloadOutcome::Rejected(vec![format!("the loader crashed: {join}")]),
        };
        match &outcome {
            ReloadOutcome::Swapped => {
                metrics::counter!("dealbridge_mapping_reloads_total", "outcome" => "swapped").increment(1);
                tracing::info!(dir = %self.dir.display(), "Mapping set reloaded.");
            }
            ReloadOutcome::Rejected(problems) => {
                metrics::counter!("dealbridge_mapping_reloads_total", "outcome" => "rejected").increment(1);
                for problem in problems {
                    tracing::warn!(problem = %problem, "Invalid mapping edit; the last good set keeps running.");
                }
            }
        }
        outcome
    }

    /// Watches the directory and reloads on every (debounced) change until
    /// the returned watcher is dropped.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> notify::Result<MappingWatcher> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            // A full channel already means "reload pending": coalesce.
            if result.is_ok_and(|events| !events.is_empty()) {
                let _ = tx.try_send(());
            }
        })?;
        debouncer.watch(&self.dir, RecursiveMode::Recursive)?;
        let this = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                this.reload_now().await;
            }
        });
        Ok(MappingWatcher { _debouncer: debouncer, task })
    }
}

/// Keeps the file watch alive; dropping it stops watching.
pub struct MappingWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MappingWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy loader: the set is the list of `*.txt` files, and a file that
    /// contains `bad` is invalid.
    fn toy_loader() -> LoadFn<Vec<String>> {
        Arc::new(|dir: &Path| {
            let mut names = Vec::new();
            let mut problems = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(|e| vec![e.to_string()])? {
                let path = entry.map_err(|e| vec![e.to_string()])?.path();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.contains("bad") {
                    problems.push(format!("{}:1:1: bad content", path.display()));
                }
                names.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
            names.sort();
            if problems.is_empty() { Ok(names) } else { Err(problems) }
        })
    }

    async fn eventually(mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..100 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_valid_edit_is_swapped_in_and_an_invalid_one_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "ok").unwrap();
        let live = LiveSet::load(dir.path(), toy_loader()).unwrap();
        let _watch = live.watch(Duration::from_millis(100)).unwrap();
        assert_eq!(*live.current(), vec!["a.txt"]);

        std::fs::write(dir.path().join("b.txt"), "ok").unwrap();
        assert!(eventually(|| live.current().len() == 2).await, "the valid edit was not picked up");

        std::fs::write(dir.path().join("c.txt"), "bad").unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(*live.current(), vec!["a.txt", "b.txt"], "the last good set keeps running");
        match live.reload_now().await {
            ReloadOutcome::Rejected(p) => assert!(p[0].ends_with("c.txt:1:1: bad content")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_invalid_initial_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.txt"), "bad").unwrap();
        assert!(LiveSet::load(dir.path(), toy_loader()).is_err());
    }
}
