//! `${...}` templates in step args/env, process commands and launch env.
//!
//! Variables: `${app}` (the app directory), `${layer:NAME}` (a layer of the same buildpack) — both
//! expanded by whoever knows the paths (host paths for steps, image paths for processes) — and
//! `${toml:FILE:KEY}` / `${json:FILE:KEY}` (a value from a source file, resolved when planning).
//! `$$` is a literal `$`. An unknown variable or an unterminated `${` is an error.

use crate::error::Result;

/// Expands every `${var}` in `input` through `lookup` (given the text between the braces).
/// `lookup` returning `None` is an error naming the variable.
pub fn expand(input: &str, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Result<String> {
    let _ = (input, lookup);
    todo!()
}
