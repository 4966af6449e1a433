//! Remote-desktop screenshots (RFB, X11) and RDP probing.
