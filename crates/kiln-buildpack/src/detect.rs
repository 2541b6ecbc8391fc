//! Detection: which buildpacks apply to a source tree, and why (or why not).
//! Rules only look at regular files and directories inside the tree; symlinks are not followed.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::set::BuildpackSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub id: String,
    /// Human-readable: "found go.mod", "none of go.mod, main.go found".
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub detected: bool,
    /// Passing buildpacks, in the order they will run.
    pub buildpacks: Vec<Verdict>,
    pub rejected: Vec<Verdict>,
}

/// Evaluates every buildpack of `set` against the tree at `src`.
pub fn detect(set: &BuildpackSet, src: &Path) -> Result<Detection> {
    let _ = (set, src);
    todo!()
}
