//! The coordinator's decisions as plain types, without actors or sockets: the slot planner
//! ([`planner`]) and one job's task model ([`job`]). Their methods take the time and return
//! effects that the actors apply. `sim` (tests only) runs the planner under any interleaving of
//! messages and faults; `job_tests` drives the job model and recovers it from its writes.

pub mod job;
#[cfg(test)]
mod job_tests;
pub mod planner;
#[cfg(test)]
pub mod sim;
#[cfg(test)]
mod tests;
