//! The coordinator's decisions as plain types, without actors, sockets or storage: the slot
//! planner ([`planner`]). Their methods take the time and return effects that the actors apply.
//! `sim` (tests only) runs them together under any interleaving of messages and faults.

pub mod planner;
#[cfg(test)]
pub mod sim;
#[cfg(test)]
mod tests;
