//! overlord-storage (skeleton; see docs/DESIGN.md).
