//! overlord-coordinator (skeleton; see docs/DESIGN.md).
