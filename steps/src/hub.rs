//! The Hugging Face hub: model ids, revisions, and fetching files at a pinned revision.

use crate::error::StepResult;
use crate::step::{Environment, Params};

/// Pins parameter `name` when it holds a hub model id without a full revision: replaces it by
/// `id@<commit sha>` the hub serves now. Local paths and already pinned ids are left alone.
pub fn pin_param(_params: &mut Params, _name: &str, _env: &Environment) -> StepResult<()> {
    // Being written (hub revisions): until then ids stay unpinned.
    Ok(())
}
