//! TCP connect port scan and generic banner grab.
