//! What can go wrong between pipe and Slurm's client commands (`sbatch`, `squeue`, `scontrol`,
//! `scancel`), each with the help a user needs. How a *job* ended (FAILED, TIMEOUT...) is not
//! here: that is the step's outcome ([`super::slurm`]); this is about talking to the cluster.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The program could not be started (not on PATH).
    #[error("cannot run {program}: {source}")]
    NotFound { program: &'static str, source: std::io::Error },
    /// `sbatch` ran and rejected the script (bad partition, limits).
    #[error("sbatch refused the job: {message}")]
    Refused { message: String, script: PathBuf },
    /// `sbatch --parsable` printed something else than a job id.
    #[error("sbatch answered `{answer}`, not a job id")]
    BadAnswer { answer: String },
    /// The command ran and failed for another reason than an unknown job (the controller is
    /// down, restarting or overloaded): worth asking again.
    #[error("`{program}` failed: {detail}")]
    Failed { program: &'static str, detail: String },
    /// The cluster did not answer about a job for the whole patience, after retries.
    #[error(
        "lost contact with the cluster: no answer about slurm job {id} for {}s ({attempts} failed calls; the last: {last})",
        waited.as_secs()
    )]
    Unreachable { id: String, waited: Duration, attempts: u32, last: Box<SlurmError>, cancelled: bool },
}

impl SlurmError {
    /// The `help:` line for the user.
    pub fn help(&self) -> Option<String> {
        match self {
            SlurmError::NotFound { .. } => Some(
                "the Slurm executor needs the Slurm client commands (sbatch, squeue, scontrol, scancel) on PATH".into(),
            ),
            SlurmError::Refused { script, .. } => Some(format!("the batch script is {}", script.display())),
            SlurmError::BadAnswer { .. } => None,
            SlurmError::Failed { .. } => {
                Some("is slurmctld up? (`scontrol ping`); `SLURM_CONF` names the cluster's configuration".into())
            }
            SlurmError::Unreachable { id, cancelled: true, .. } => Some(format!(
                "slurm job {id} was cancelled so that it does not run unwatched; run again once `squeue` answers \
                 (`PIPE_SLURM_PATIENCE` seconds is how long pipe keeps asking)"
            )),
            SlurmError::Unreachable { id, cancelled: false, .. } => Some(format!(
                "slurm job {id} may still run, unwatched: cancel it once the cluster answers (`scancel {id}`), or run \
                 again, which reattaches to it"
            )),
        }
    }

    /// Worth asking again: the cluster may answer next time.
    pub fn is_transient(&self) -> bool {
        matches!(self, SlurmError::Failed { .. })
    }
}
