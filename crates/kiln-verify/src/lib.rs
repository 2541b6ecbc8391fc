//! `kiln-verify`: does this image's default process start in its own filesystem?
//!
//! One job, answered before an image is written: following what the container runtime, the
//! kernel and the dynamic loader would do to start the image's entrypoint (then cmd), find every
//! file they would open *in the image* — never on the host — and report each one that is
//! missing or unusable:
//!
//! - the program: a name with a `/` from the working directory, another on the image's `PATH`
//!   (its config `Env`), symlinks followed inside the image; it must be an executable regular
//!   file;
//! - a `#!` script's interpreter (present and executable; for `#!/usr/bin/env NAME`, `NAME` on
//!   the image's `PATH`), up to the kernel's four interpreters deep;
//! - an ELF program's machine (the image's architecture), its interpreter (`PT_INTERP`) and its
//!   `DT_NEEDED` libraries, searched as glibc's loader does — `DT_RPATH` (without `DT_RUNPATH`,
//!   inherited), the image's `LD_LIBRARY_PATH`, `DT_RUNPATH`, with `$ORIGIN`, then the
//!   directories of the image's `/etc/ld.so.conf` (with its `include`s), then `/lib/<triplet>`,
//!   `/usr/lib/<triplet>`, `/lib`, `/usr/lib`, `/lib64`, `/usr/lib64` (musl: its path file or
//!   `/lib:/usr/local/lib:/usr/lib`) — and those libraries' own, recursively (bounded);
//! - for `sh -c LINE` (how Kiln runs start commands that need a shell), the shell and, best
//!   effort, the first program of `LINE` when it is a plain word (leading assignments, `exec`
//!   and builtins skipped; nothing after `cd`, an expansion or a `PATH` change).
//!
//! The image is modelled by [`ImageFs`]: its layers applied in order, whiteouts included, as
//! metadata only — no file contents are held. A built layer's file is read from its host source
//! when examined; a base layer's few files of interest (ELF files, `#!` scripts, `/etc/*.conf`)
//! are examined in the one pass that lists its blob, and what was found can be kept on disk so
//! the blob is never read again. Problems come back together in
//! [`Error::WontStart`], each naming the file and, where it can, the layer that has it elsewhere
//! or what would provide it. What is not checked: file permissions for a non-root `User`,
//! `$LIB`/`$PLATFORM` in RPATHs, glibc skipping libraries of another machine, and anything the
//! program itself opens once running.

mod check;
mod elf;
mod error;
mod image_fs;
mod shell;

pub use check::verify;
pub use error::{Error, Result};
pub use image_fs::ImageFs;

#[cfg(test)]
mod tests;
