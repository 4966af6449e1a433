//! Cluster sandbox, fault injectors and chaos scenarios.

pub mod backbone_sandbox;
