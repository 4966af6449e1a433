//! Cluster sandbox, fault injectors and chaos scenarios (skeleton).
