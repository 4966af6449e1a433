//! Service identification.
