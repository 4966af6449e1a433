//! A one-process cluster: a coordinator (which runs `leak` lookups itself) and N minions
//! (of different providers) talking real gRPC over loopback sockets, with the coordinator's sled
//! data in a data directory.

use anyhow::{Context, Result};
use overlord_coordinator::Settings;
use overlord_core::scope::Scope;
use overlord_minion::MinionSettings;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

pub struct Embedded {
    pub url: String,
    pub coordinator: overlord_coordinator::Running,
    minions: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

pub fn minion_settings(url: &str, id: &str, provider: &str, capacity: u32) -> MinionSettings {
    MinionSettings {
        id: id.into(),
        provider: provider.into(),
        coordinator: url.into(),
        capacity,
        capabilities: Vec::new(),
        modules: overlord_minion::modules::builtin()
            .iter()
            .map(|m| m.name().to_string())
            .collect(),
        scope: Scope::loopback(),
        reconnect_max: Duration::from_millis(1000),
        tls: None,
        internal_secret: None,
        input_dir: None,
    }
}

impl Embedded {
    pub async fn start(data_dir: PathBuf, minions: usize, capacity: u32) -> Result<Self> {
        Self::start_with(Settings::local(data_dir), minions, capacity).await
    }

    /// Like [`Embedded::start`] with coordinator settings (e.g. `images.leaks`, a leak file). The
    /// minions read file inputs (enrich images, beacon logs) only below the current directory.
    pub async fn start_with(settings: Settings, minions: usize, capacity: u32) -> Result<Self> {
        let here = std::env::current_dir().ok();
        Self::start_with_inputs(settings, minions, capacity, here).await
    }

    /// Like [`Embedded::start_with`], with the directory the minions may read file inputs from
    /// (`None`: no file inputs at all).
    pub async fn start_with_inputs(
        settings: Settings,
        minions: usize,
        capacity: u32,
        input_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let input_dir = match input_dir {
            Some(d) => Some(
                std::fs::canonicalize(&d)
                    .with_context(|| format!("input directory {}", d.display()))?,
            ),
            None => None,
        };
        let data_dir = settings.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let coordinator = overlord_coordinator::start(settings, listener)
            .await
            .with_context(|| format!("starting embedded coordinator on {}", data_dir.display()))?;
        let url = coordinator.local_url();
        let minion_url = coordinator.minion_url();
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..minions {
            let (id, provider) = (
                format!("embedded-{}", i + 1),
                format!("local-{}", (b'a' + i as u8) as char),
            );
            let mut s = minion_settings(&minion_url, &id, &provider, capacity);
            s.input_dir = input_dir.clone();
            // A secured embedded cluster: each minion gets a certificate from the cluster CA.
            if let Some(ca) = &coordinator.ca {
                let cert = ca.issue_internal(&id, &provider)?;
                s.tls = Some(overlord_minion::config::ClientTls {
                    ca_pem: ca.ca_pem.clone(),
                    cert_pem: cert.cert_pem,
                    key_pem: cert.key_pem,
                });
            }
            let mut rx = stop.subscribe();
            handles.push(tokio::spawn(async move {
                let _ = overlord_minion::run(s, overlord_minion::modules::builtin(), async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
            }));
        }
        Ok(Embedded {
            url,
            coordinator,
            minions: handles,
            stop,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.minions {
            let _ = h.await;
        }
        self.coordinator.shutdown().await;
    }
}
