//! overlord-analytics (skeleton; see docs/DESIGN.md).
