//! The scheduler: runs the stages a target needs, each on its own thread as soon as every stage it
//! depends on (its FROM stage, `COPY --from`, `RUN --mount from=`) has finished, at most `parallel`
//! at once — BuildKit's solver runs independent vertices concurrently the same way. Stages the plan
//! pruned for the target are not in `order` and never start.
//!
//! Events are produced on the stage threads and handed to the caller's sink on the calling thread,
//! in the order they happen; each stage's own events stay in order, and step numbers are fixed by
//! the plan (`Engine::first_step`), so they do not depend on which stage started first. The first
//! stage to fail cancels its siblings (through a child of the build's `Cancel`, so the build ends
//! with that failure, not "cancelled"); a user's cancel stops every stage.
//!
//! Must not: run a stage before its dependencies, or call the event sink from another thread.

use std::collections::BTreeSet;
use std::sync::mpsc;

use super::stage::Engine;
use super::{BuildError, Event};
use crate::exec::Cancel;

enum Msg {
    Event(Event),
    Done(usize, Result<(), BuildError>),
}

/// Run `order` (dependencies first) on `engine`, whose `inputs.cancel` must be `siblings`.
pub(super) fn build_stages(
    engine: &Engine<'_>,
    order: &[usize],
    parallel: usize,
    siblings: &Cancel,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    let wanted: BTreeSet<usize> = order.iter().copied().collect();
    let deps_of = |i: usize| {
        engine.inputs.plan.stages[i]
            .deps
            .iter()
            .copied()
            .filter(|d| wanted.contains(d))
            .collect::<Vec<_>>()
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut pending: Vec<usize> = order.to_vec();
        let mut done = BTreeSet::new();
        let mut running = 0usize;
        let mut failure: Option<BuildError> = None;
        loop {
            while running < parallel.max(1) && failure.is_none() {
                let Some(pos) = pending
                    .iter()
                    .position(|&i| deps_of(i).iter().all(|d| done.contains(d)))
                else {
                    break;
                };
                let index = pending.remove(pos);
                let tx = tx.clone();
                running += 1;
                scope.spawn(move || {
                    let mut emit = |e: &Event| {
                        let _ = tx.send(Msg::Event(e.clone()));
                    };
                    let result = engine.build_stage(index, &mut emit);
                    let _ = tx.send(Msg::Done(index, result));
                });
            }
            if running == 0 {
                break;
            }
            match rx.recv() {
                Ok(Msg::Event(e)) => on_event(&e),
                Ok(Msg::Done(index, result)) => {
                    running -= 1;
                    match result {
                        Ok(()) => {
                            done.insert(index);
                        }
                        Err(e) => {
                            siblings.cancel();
                            // A sibling's "cancelled" is our doing; keep the first real failure.
                            let replace = match &failure {
                                None => true,
                                Some(BuildError::Cancelled) => !matches!(e, BuildError::Cancelled),
                                Some(_) => false,
                            };
                            if replace {
                                failure = Some(e);
                            }
                        }
                    }
                }
                Err(_) => break,
            }
        }
        // Events sent after the last Done (none today) would be dropped with the channel.
        match failure {
            Some(e) => Err(e),
            None if !pending.is_empty() => Err(BuildError::Step {
                file: engine.inputs.file_name.to_string(),
                line: 0,
                instruction: "FROM".into(),
                message: format!("stages {pending:?} have dependencies that never finished"),
                source: None,
            }),
            None => Ok(()),
        }
    })
}
