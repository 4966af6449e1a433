//! The module catalog: every module name a job may enable, the capability a minion must declare to
//! run it, and how root tasks are made for it. Module helpers add one line here when they add a
//! module (and one line in the minion's registry).

/// How the root tasks of a job are made for a module (when it is the job's root module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// One task per (block of target addresses, chunk of ports). `probes_per_task` sizes the
    /// block: `probes_per_task / ports in the chunk` addresses (at least 1); 0 = one address per
    /// task (modules that work on one host at a time).
    Network {
        ports_per_task: u32,
        probes_per_task: u32,
    },
    /// One task per entry of the job's `inputs`.
    Input,
    /// `params.count` tasks with no target (benchmarks).
    Count,
    /// Only spawned by follow-up rules.
    FollowUpOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: &'static str,
    pub capability: &'static str,
    pub root: RootKind,
}

/// Whether `module` is a port scan sized by probes (`portscan`, `syn`): its tasks report open
/// ports and can be re-run by another minion to estimate misses (the quality ledger).
pub fn is_port_scan(module: &str) -> bool {
    info(module).is_some_and(
        |i| matches!(i.root, RootKind::Network { probes_per_task, .. } if probes_per_task > 0),
    )
}

/// Order matters: the first enabled module with a root kind that fits the job is its root module.
pub const CATALOG: &[ModuleInfo] = &[
    ModuleInfo {
        name: "portscan",
        capability: "scan",
        root: RootKind::Network {
            ports_per_task: 2048,
            probes_per_task: 4096,
        },
    },
    ModuleInfo {
        name: "syn",
        capability: "raw",
        root: RootKind::Network {
            ports_per_task: 4096,
            probes_per_task: 16384,
        },
    },
    ModuleInfo {
        name: "service",
        capability: "grab",
        root: RootKind::Network {
            ports_per_task: 16,
            probes_per_task: 0,
        },
    },
    ModuleInfo {
        name: "banner",
        capability: "grab",
        root: RootKind::Network {
            ports_per_task: 16,
            probes_per_task: 0,
        },
    },
    ModuleInfo {
        name: "udp",
        capability: "scan",
        root: RootKind::Network {
            ports_per_task: 256,
            probes_per_task: 0,
        },
    },
    ModuleInfo {
        name: "screenshot",
        capability: "screenshot",
        root: RootKind::Network {
            ports_per_task: 1,
            probes_per_task: 0,
        },
    },
    ModuleInfo {
        name: "enrich",
        capability: "enrich",
        root: RootKind::Input,
    },
    ModuleInfo {
        name: "leak",
        capability: "leak",
        root: RootKind::FollowUpOnly,
    },
    ModuleInfo {
        name: "beacon",
        capability: "analytics",
        root: RootKind::Input,
    },
    ModuleInfo {
        name: "noop",
        capability: "noop",
        root: RootKind::Count,
    },
];

pub fn info(name: &str) -> Option<&'static ModuleInfo> {
    CATALOG.iter().find(|m| m.name == name)
}

pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|m| m.name).collect()
}
