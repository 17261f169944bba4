//! One build, many platforms: what the driver (`build.rs`) needs to build every `--platform` side
//! by side and hand back one image — how each platform's foreign RUN steps run ([`runners`], before
//! any step runs), the rendezvous where every platform's plan is counted before the first step
//! ([`Gate`]), the events of each platform renumbered into one build's ([`Member::relabel`]), and
//! and the image index is made by `attestations::index_of` with the attestation manifests.
//!
//! BuildKit builds each platform as its own solve of the same frontend and merges them in the
//! exporter (`exporter/containerimage/writer.go` writes the index from per-platform refs); a
//! `FROM --platform=$BUILDPLATFORM` stage has the same cache key in every platform, so the step
//! single-flight (`step/flight.rs`) runs it once and the other platforms take it from the cache.
//! Attestation manifests per platform would be added to the index here, next to their image.
//!
//! Must not: run steps or publish anything — it decides, counts, relabels and writes one blob.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, OnceLock};

use super::{BuildError, BuildRequest, Event};
use crate::exec::{self, Runner};
use crate::plan::{Instruction, Plan};

/// How the RUN steps of every architecture the plan runs them on will run; an architecture with
/// no way to run is an error before any step runs.
pub(super) fn runners(
    plan: &Plan,
    req: &BuildRequest,
) -> Result<BTreeMap<String, Runner>, BuildError> {
    let mut out = BTreeMap::new();
    for &i in &plan.order {
        let stage = &plan.stages[i];
        let runs = stage
            .steps
            .iter()
            .any(|s| matches!(s.instruction, Instruction::Run(_)));
        let arch = &stage.platform.architecture;
        if !runs || out.contains_key(arch) {
            continue;
        }
        let r = exec::emulate::runner(&stage.platform.to_string(), arch, &req.sandbox.emulation)
            .map_err(BuildError::Emulation)?;
        out.insert(arch.clone(), r);
    }
    Ok(out)
}

/// A platform's place in the build's step numbering, known once every platform has planned.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Offsets {
    /// Added to this platform's step numbers.
    pub first_step: usize,
    /// Stages and steps of the whole build (every platform).
    pub stages: usize,
    pub steps: usize,
}

/// Where a platform's build waits, planned, until the others have planned.
pub(super) trait Gate: Sync {
    fn ready(&self, stages: usize, steps: usize) -> Result<Offsets, BuildError>;
}

/// The only platform of a build: nothing to wait for.
pub(super) struct Solo;

impl Gate for Solo {
    fn ready(&self, stages: usize, steps: usize) -> Result<Offsets, BuildError> {
        Ok(Offsets {
            first_step: 0,
            stages,
            steps,
        })
    }
}

/// Every platform's plan size, and whether one failed before running anything.
pub(super) struct Rendezvous {
    state: Mutex<Arrivals>,
    cv: Condvar,
}

struct Arrivals {
    /// (stages, steps) of each platform that has planned.
    sizes: Vec<Option<(usize, usize)>>,
    failed: bool,
}

impl Rendezvous {
    pub(super) fn new(n: usize) -> Rendezvous {
        Rendezvous {
            state: Mutex::new(Arrivals {
                sizes: vec![None; n],
                failed: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// A platform failed: the others stop waiting (and end as cancelled).
    pub(super) fn fail(&self) {
        crate::sync::lock(&self.state).failed = true;
        self.cv.notify_all();
    }

    pub(super) fn member(&self, index: usize, platform: String) -> Member<'_> {
        Member {
            rendezvous: self,
            index,
            platform,
            offsets: OnceLock::new(),
        }
    }
}

/// One platform's side of the [`Rendezvous`].
pub(super) struct Member<'a> {
    rendezvous: &'a Rendezvous,
    index: usize,
    platform: String,
    offsets: OnceLock<Offsets>,
}

impl Gate for Member<'_> {
    fn ready(&self, stages: usize, steps: usize) -> Result<Offsets, BuildError> {
        let rv = self.rendezvous;
        let mut st = crate::sync::lock(&rv.state);
        st.sizes[self.index] = Some((stages, steps));
        rv.cv.notify_all();
        while !st.failed && st.sizes.iter().any(Option::is_none) {
            st = crate::sync::wait(&rv.cv, st);
        }
        if st.failed {
            return Err(BuildError::Cancelled);
        }
        let sizes: Vec<(usize, usize)> = st.sizes.iter().flatten().copied().collect();
        let offsets = Offsets {
            first_step: sizes[..self.index].iter().map(|s| s.1).sum(),
            stages: sizes.iter().map(|s| s.0).sum(),
            steps: sizes.iter().map(|s| s.1).sum(),
        };
        let _ = self.offsets.set(offsets);
        Ok(offsets)
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        // A platform that panicked must not leave the others waiting for its plan.
        if std::thread::panicking() {
            self.rendezvous.fail();
        }
    }
}

impl Member<'_> {
    /// This platform's event as the whole build tells it: steps numbered after the platforms
    /// before it, stages named with the platform (BuildKit prints `[linux/arm64 builder 2/3]`),
    /// `Planned` with the whole build's size (the driver forwards the first one only).
    pub(super) fn relabel(&self, e: &Event) -> Event {
        let off = self.offsets.get().copied().unwrap_or_default();
        let name = |s: &str| format!("{} {s}", self.platform);
        let mut e = e.clone();
        match &mut e {
            Event::Planned { stages, steps } => {
                *stages = off.stages;
                *steps = off.steps;
            }
            Event::StageStarted { stage, .. } => *stage = name(stage),
            Event::StepStarted {
                step, total, stage, ..
            } => {
                *step += off.first_step;
                *total = off.steps;
                *stage = name(stage);
            }
            Event::StepProgress { step, .. }
            | Event::Log { step, .. }
            | Event::StepFinished { step, .. } => *step += off.first_step,
            _ => {}
        }
        e
    }
}

/// At most `max-parallelism` platforms run their stages at once (each with its share of it), so a
/// build of many platforms stays within the machine's budget; the rest wait, already planned.
pub(super) struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

/// A running platform's slot, given back when dropped.
pub(super) struct Slot<'a>(&'a Slots);

impl Slots {
    pub(super) fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    /// Wait for a slot; None when `cancel` fires first (another platform failed).
    pub(super) fn acquire(&self, cancel: &exec::Cancel) -> Option<Slot<'_>> {
        let mut free = crate::sync::lock(&self.free);
        while *free == 0 {
            if cancel.is_cancelled() {
                return None;
            }
            let tick = std::time::Duration::from_millis(100);
            free = crate::sync::wait_timeout(&self.cv, free, tick);
        }
        *free -= 1;
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *crate::sync::lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_number_their_steps_after_the_ones_before_them() {
        let rv = Rendezvous::new(2);
        let (a, b) = (
            rv.member(0, "linux/amd64".into()),
            rv.member(1, "linux/arm64".into()),
        );
        let (oa, ob) = std::thread::scope(|s| {
            let hb = s.spawn(|| b.ready(2, 5).unwrap());
            let oa = a.ready(1, 3).unwrap();
            (oa, hb.join().unwrap())
        });
        assert_eq!((oa.first_step, oa.stages, oa.steps), (0, 3, 8));
        assert_eq!((ob.first_step, ob.stages, ob.steps), (3, 3, 8));
        let e = b.relabel(&Event::StepStarted {
            step: 2,
            total: 5,
            stage: "builder".into(),
            line: 1,
            instruction: "RUN true".into(),
        });
        match e {
            Event::StepStarted {
                step, total, stage, ..
            } => assert_eq!((step, total, stage.as_str()), (5, 8, "linux/arm64 builder")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_platform_releases_the_waiting_ones_and_slots_give_way_to_cancel() {
        let rv = Rendezvous::new(2);
        let a = rv.member(0, "linux/amd64".into());
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| a.ready(1, 1));
            rv.fail();
            h.join().unwrap()
        });
        assert!(matches!(r, Err(BuildError::Cancelled)));
        let slots = Slots::new(1);
        let cancel = exec::Cancel::new();
        let held = slots.acquire(&cancel).unwrap();
        cancel.cancel();
        assert!(slots.acquire(&cancel).is_none());
        drop(held);
        assert!(slots.acquire(&exec::Cancel::new()).is_some());
    }
}
