//! `kiln-build`: the engine.
