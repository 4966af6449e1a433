//! overlord-probes: data-collection modules usable as a plain library (no cluster dependency).
//!
//! - [`scan`]: TCP connect port scan and the generic banner grab.
//! - [`netns`]: network namespaces for tests and benchmarks (lossy links, raw packets).
//! - [`service`]: service identification (nmap-service-probes compatible engine, TLS, structured grabbers).
//! - [`udp`]: UDP scan (open / open|filtered / closed via ICMP) with protocol payloads and identification.
//! - [`screen`]: screenshots of open remote desktops (VNC/RFB, X11) and RDP security probing.

pub mod netns;
pub mod scan;
pub mod screen;
pub mod service;
pub mod udp;
