//! overlord-core (skeleton; see docs/DESIGN.md).
