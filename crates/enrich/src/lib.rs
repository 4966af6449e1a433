//! overlord-enrich (skeleton; see docs/DESIGN.md).
