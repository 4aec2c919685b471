//! A Slurm job's state, as `squeue` (`%T`) and `scontrol show job` (`JobState=`) name it, and
//! what pipe makes of each: waiting (`queued`), running, or ended. The one place these names
//! are read; the executor, `pipe status` and the run record's job state all go through it.
//!
//! Not in it: why a job waits (`Reason`) or how it exited (`ExitCode`): those stay text.

use std::fmt;

/// A job's state. `Unknown` is pipe's own: the cluster no longer knows the job (purged after
/// `MinJobAge`, or never submitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlurmState {
    Pending,
    Configuring,
    Requeued,
    RequeueHold,
    RequeueFed,
    ResvDelHold,
    Running,
    Completing,
    StageOut,
    Signaling,
    Stopped,
    Suspended,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    Revoked,
    SpecialExit,
    Unknown,
    /// A state this pipe does not know (a newer Slurm): neither waiting nor ended.
    Other(String),
}

/// Slurm's name of each state, in one table both ways.
const NAMES: &[(&str, SlurmState)] = &[
    ("PENDING", SlurmState::Pending),
    ("CONFIGURING", SlurmState::Configuring),
    ("REQUEUED", SlurmState::Requeued),
    ("REQUEUE_HOLD", SlurmState::RequeueHold),
    ("REQUEUE_FED", SlurmState::RequeueFed),
    ("RESV_DEL_HOLD", SlurmState::ResvDelHold),
    ("RUNNING", SlurmState::Running),
    ("COMPLETING", SlurmState::Completing),
    ("STAGE_OUT", SlurmState::StageOut),
    ("SIGNALING", SlurmState::Signaling),
    ("STOPPED", SlurmState::Stopped),
    ("SUSPENDED", SlurmState::Suspended),
    ("COMPLETED", SlurmState::Completed),
    ("FAILED", SlurmState::Failed),
    ("CANCELLED", SlurmState::Cancelled),
    ("TIMEOUT", SlurmState::Timeout),
    ("OUT_OF_MEMORY", SlurmState::OutOfMemory),
    ("NODE_FAIL", SlurmState::NodeFail),
    ("PREEMPTED", SlurmState::Preempted),
    ("BOOT_FAIL", SlurmState::BootFail),
    ("DEADLINE", SlurmState::Deadline),
    ("REVOKED", SlurmState::Revoked),
    ("SPECIAL_EXIT", SlurmState::SpecialExit),
    ("UNKNOWN", SlurmState::Unknown),
];

impl SlurmState {
    /// From Slurm's word; `CANCELLED by 1000` (scontrol) is `Cancelled`.
    pub fn parse(text: &str) -> SlurmState {
        let word = text.split_whitespace().next().unwrap_or("");
        NAMES.iter().find(|(n, _)| *n == word).map(|(_, s)| s.clone()).unwrap_or_else(|| SlurmState::Other(word.into()))
    }

    /// Slurm's name (`OUT_OF_MEMORY`).
    pub fn as_str(&self) -> &str {
        match self {
            SlurmState::Other(s) => s,
            known => NAMES.iter().find(|(_, s)| s == known).map(|(n, _)| *n).unwrap_or("UNKNOWN"),
        }
    }

    /// Waiting to start (again).
    pub fn is_queued(&self) -> bool {
        use SlurmState::*;
        matches!(self, Pending | Configuring | Requeued | RequeueHold | RequeueFed | ResvDelHold)
    }

    /// Started and not ended (a suspended job is still the node's).
    pub fn is_running(&self) -> bool {
        use SlurmState::*;
        matches!(self, Running | Completing | StageOut | Signaling | Stopped | Suspended)
    }

    /// Ended: the job never runs again (unless the cluster requeues it, see
    /// [`SlurmState::may_requeue`]).
    pub fn is_terminal(&self) -> bool {
        use SlurmState::*;
        matches!(
            self,
            Completed
                | Failed
                | Cancelled
                | Timeout
                | OutOfMemory
                | NodeFail
                | Preempted
                | BootFail
                | Deadline
                | Revoked
                | SpecialExit
        )
    }

    /// A state a job the cluster requeues passes through.
    pub fn may_requeue(&self) -> bool {
        matches!(self, SlurmState::Preempted | SlurmState::NodeFail | SlurmState::BootFail)
    }

    /// The run record's word for it (`out_of_memory`, `running`).
    pub fn word(&self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

impl fmt::Display for SlurmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_both_ways_and_are_classified() {
        for (name, state) in NAMES {
            assert_eq!(&SlurmState::parse(name), state);
            assert_eq!(state.as_str(), *name);
        }
        assert_eq!(SlurmState::parse("CANCELLED by 1000"), SlurmState::Cancelled);
        assert_eq!(SlurmState::parse("RESIZING"), SlurmState::Other("RESIZING".into()));
        assert!(SlurmState::OutOfMemory.is_terminal() && SlurmState::Preempted.is_terminal());
        assert!(!SlurmState::Pending.is_terminal() && SlurmState::Pending.is_queued());
        assert!(SlurmState::Completing.is_running() && !SlurmState::Pending.is_running());
        let other = SlurmState::Other("RESIZING".into());
        assert!(!other.is_queued() && !other.is_running() && !other.is_terminal());
        assert_eq!(SlurmState::OutOfMemory.word(), "out_of_memory");
    }
}
