//! Steps run in this process: each on a thread of the executor's, computing with the shared
//! [`Compute`] path. The steps that use every core share rayon's one global pool, so the
//! executor starts one of them at a time here.

use pipe_steps::Events;

use super::compute::Compute;
use super::{Backend, StepUpdate};
use crate::plan::PlannedStep;
use crate::step_outcome::StepOutcome;

pub struct LocalBackend<'a> {
    pub compute: Compute<'a>,
}

impl Backend for LocalBackend<'_> {
    fn local(&self) -> bool {
        true
    }

    fn execute(&self, job: &PlannedStep, events: &dyn Events, notify: &mut dyn FnMut(StepUpdate)) -> StepOutcome {
        self.compute.run(job, events, &mut || notify(StepUpdate::Running(None)))
    }
}
