//! overlord-proto (skeleton; see docs/DESIGN.md).
