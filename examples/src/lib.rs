//! Runnable examples live as [[bin]] targets of this crate.
