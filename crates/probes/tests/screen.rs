//! Screenshot tests against real servers on loopback (Xvfb, x11vnc, TigerVNC Xvnc) and hostile
//! fake servers. One test binary; helpers in `screen/`.

#[path = "screen/harness.rs"]
mod harness;
#[path = "screen/hostile.rs"]
mod hostile;
#[path = "screen/real.rs"]
mod real;
