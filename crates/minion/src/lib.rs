//! overlord-minion (skeleton; see docs/DESIGN.md).
