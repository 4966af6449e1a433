//! The coordinator's decisions as plain types, without actors or sockets: the slot planner
//! ([`planner`]) and one job's task model ([`job`]). Their methods take the time and return effects that the actors apply.
//! `sim` (tests only) runs them together under any interleaving of messages and faults.

pub mod job;
pub mod planner;
#[cfg(test)]
pub mod sim;
#[cfg(test)]
mod tests;
