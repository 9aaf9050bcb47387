//! The fetcher: polls the fleet repository every `poll_interval`, and at once on a GitHub push
//! webhook or a file-system change; validates each new revision and publishes the last good
//! one on a `watch` channel. An invalid revision is reported (status, metrics, notifier) and
//! otherwise ignored: the last good revision stays in force.

use super::status::ValidationFailure;
use super::{Backoff, Good, LoopOptions, Shared};
use crate::clock::{Clock, Millis, SystemClock};
use crate::events::{Event, LocatedError, Notifier};
use crate::source::{Head, Source};
use fleet_repo_schema::Severity;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest a fetch may take before it counts as failed.
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The fetcher: runs until `shutdown`.
pub async fn fetcher(
    source: Source,
    shared: Arc<Shared>,
    notifier: Arc<dyn Notifier>,
    good_tx: watch::Sender<Option<Arc<Good>>>,
    opts: LoopOptions,
    shutdown: CancellationToken,
) {
    let mut known: Option<String> = None;
    let mut backoff = Backoff::new(
        opts.backoff_min_ms,
        opts.poll_interval_ms.max(opts.backoff_min_ms),
    );
    loop {
        shared.fetch_count.fetch_add(1, Ordering::SeqCst);
        let (src, k) = (source.clone(), known.clone());
        // libgit2 has no overall timeout: a remote that accepts and then stalls would hold
        // the fetcher for ever. After FETCH_TIMEOUT the fetch counts as failed (the blocking
        // thread is left to finish or fail on its own). A shutdown does not wait for it either.
        let fetch = tokio::time::timeout(
            FETCH_TIMEOUT,
            tokio::task::spawn_blocking(move || src.poll(k.as_deref())),
        );
        let res = match tokio::select! {
            r = fetch => r,
            _ = shutdown.cancelled() => return,
        } {
            Ok(r) => r,
            Err(_) => Ok(Err(crate::source::SourceError::Fetch {
                url: source.describe(),
                message: format!(
                    "no answer within {} s (the remote is unreachable or stalled)",
                    FETCH_TIMEOUT.as_secs()
                ),
            })),
        };
        let now = SystemClock.now_ms();
        let wait = match res {
            Ok(Ok((head, loaded))) => {
                backoff.reset();
                shared.metrics.fetch(true);
                // The webhook filters pushes on this branch: with none configured, it is the
                // remote's default, known only once a fetch resolved it.
                if let Some(b) = source.branch() {
                    *shared.branch.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
                }
                shared.status_mut(|s| {
                    s.source.head = Some(head.rev.clone());
                    s.source.last_fetch_ms = Some(now);
                    s.source.last_fetch_error = None;
                });
                if let Some(loaded) = loaded {
                    known = Some(head.rev.clone());
                    take(&shared, &*notifier, &good_tx, head, loaded, now);
                }
                opts.poll_interval_ms
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, "fetching the fleet repository failed; the last good revision stays in force");
                shared.metrics.fetch(false);
                shared.status_mut(|s| {
                    s.source.last_fetch_ms = Some(now);
                    s.source.last_fetch_error = Some(msg);
                });
                backoff.fail()
            }
            Err(e) => {
                tracing::error!(error = %e, "the fetch task ended abnormally");
                backoff.fail()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
            _ = shared.fetch_now.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A new revision was loaded: publish it if good, report it if not.
fn take(
    shared: &Shared,
    notifier: &dyn Notifier,
    good_tx: &watch::Sender<Option<Arc<Good>>>,
    head: Head,
    loaded: fleet_repo_schema::Loaded,
    now: Millis,
) {
    match loaded.desired {
        Some(desired) => {
            tracing::info!(commit = %head.rev, summary = head.summary.as_deref().unwrap_or(""), "new revision of the fleet repository is valid");
            shared.metrics.source(None);
            shared.status_mut(|s| s.validation_error = None);
            let _ = good_tx.send(Some(Arc::new(Good {
                rev: head.rev,
                summary: head.summary,
                desired: Arc::new(desired),
            })));
        }
        None => {
            let errors: Vec<LocatedError> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(LocatedError::of)
                .collect();
            let in_force = good_tx.borrow().as_ref().map(|g| g.rev.clone());
            for e in &errors {
                tracing::error!(commit = %head.rev, file = %e.file, line = e.line, column = e.column, code = %e.code, "{}", e.message);
            }
            tracing::error!(commit = %head.rev, in_force = in_force.as_deref().unwrap_or("none"), errors = errors.len(), "revision is invalid: not applied; the last good revision stays in force");
            shared.metrics.source(Some(&head.rev));
            notifier.notify(
                now,
                &Event::RepoInvalid {
                    commit: head.rev.clone(),
                    in_force,
                    errors: errors.clone(),
                },
            );
            shared.status_mut(|s| {
                s.validation_error = Some(ValidationFailure {
                    commit: head.rev,
                    at_ms: now,
                    errors,
                })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    /// A broken revision is reported to the notifier and on the status with its location,
    /// and the good one stays published; the fix replaces it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_revision_is_reported_and_the_last_good_one_stays() {
        use crate::events::RecordingNotifier;
        use crate::source::DirSource;
        let dir = tempfile::tempdir().unwrap();
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet");
        copy(&example, dir.path());
        let source = Source::Dir(Arc::new(DirSource::new(dir.path().to_path_buf())));
        let shared = Arc::new(Shared::default());
        let rec = Arc::new(RecordingNotifier::default());
        let (tx, rx) = watch::channel(None);
        let opts = LoopOptions {
            poll_interval_ms: 20,
            requeue_ms: 1_000,
            backoff_min_ms: 10,
            backoff_max_ms: 100,
            exec: crate::apply::ExecOptions::default(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(fetcher(
            source,
            Arc::clone(&shared),
            rec.clone(),
            tx,
            opts,
            stop.clone(),
        ));
        let wait = |f: &dyn Fn() -> bool| {
            let ok = (0..500).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                f()
            });
            assert!(ok, "timed out");
        };
        wait(&|| rx.borrow().is_some());
        let good = rx.borrow().as_ref().unwrap().rev.clone();
        let path = dir.path().join("coins/litecoin.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("nodes_per_zone: 1", "nodes_per_zone: -3"),
        )
        .unwrap();
        wait(&|| shared.status().validation_error.is_some());
        let v = shared.status().validation_error.unwrap();
        assert_ne!(v.commit, good);
        assert_eq!(v.errors[0].file, "coins/litecoin.yaml");
        assert!(
            v.errors[0].line > 1 && v.errors[0].column > 1,
            "{:?}",
            v.errors
        );
        assert_eq!(
            rx.borrow().as_ref().unwrap().rev,
            good,
            "the good revision stays"
        );
        let events = rec.events();
        assert!(
            events.iter().any(|(_, e)| matches!(e, Event::RepoInvalid { commit, in_force, errors }
                if *commit == v.commit && in_force.as_deref() == Some(good.as_str()) && errors[0].file == "coins/litecoin.yaml")),
            "{events:?}"
        );
        assert!(shared.metrics.render().contains("fleet_source_valid 0"));
        std::fs::write(
            &path,
            text.replace("nodes_per_zone: 1", "nodes_per_zone: 2"),
        )
        .unwrap();
        wait(&|| rx.borrow().as_ref().is_some_and(|g| g.rev != good));
        assert!(shared.status().validation_error.is_none());
        assert!(shared.metrics.render().contains("fleet_source_valid 1"));
        stop.cancel();
        task.await.unwrap();
    }
}
