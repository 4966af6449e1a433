//! `enrich`: the image workflow of `overlord-enrich` on a screenshot — the task's blob (a PNG
//! from a `screenshot` finding) or its `input` (a path to a PNG/JPEG readable by the minion).
//! Emits one `enrichment` finding whose data is the whole analysis (blank, entropy, hashes, text,
//! words, e-mails, faces, logos, tags, timings) plus the image's sha256 when known.
//!
//! Tesseract's engine is `Send` but not `Sync`: the module owns a small pool of worker threads
//! (OS threads, off the async runtime), each with its own `Analyzer`, created on first use.
//! Params: none. Leak lookups happen where the leak database lives (the coordinator itself runs
//! `leak` tasks). A screenshot's PNG is not sent back with its enrichment.

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::{Enrichment, Payload};
use overlord_enrich::{Analysis, Analyzer, AnalyzerConfig, EnrichError};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Job = (
    Vec<u8>,
    tokio::sync::oneshot::Sender<Result<Analysis, EnrichError>>,
);

pub struct Enrich {
    workers: usize,
    pool: OnceLock<Result<mpsc::SyncSender<Job>, String>>,
}

impl Default for Enrich {
    fn default() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        Enrich {
            workers,
            pool: OnceLock::new(),
        }
    }
}

impl Enrich {
    /// Starts the worker threads; fails if no analyzer can be built (tesseract data or the Haar
    /// cascade missing).
    fn pool(&self) -> Result<&mpsc::SyncSender<Job>, ModuleError> {
        self.pool
            .get_or_init(|| {
                // build one analyzer up front so a missing model is reported, not hidden in a thread
                let first = Analyzer::new(AnalyzerConfig::default()).map_err(|e| e.to_string())?;
                let (tx, rx) = mpsc::sync_channel::<Job>(64);
                let rx = Arc::new(Mutex::new(rx));
                let mut first = Some(first);
                for i in 0..self.workers {
                    let rx = Arc::clone(&rx);
                    let analyzer = first.take();
                    std::thread::Builder::new()
                        .name(format!("enrich-{i}"))
                        .spawn(move || worker(analyzer, rx))
                        .map_err(|e| e.to_string())?;
                }
                Ok(tx)
            })
            .as_ref()
            .map_err(|e| ModuleError::Failed(format!("enrich unavailable: {e}")))
    }
}

fn worker(analyzer: Option<Analyzer>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut analyzer = match analyzer
        .map(Ok)
        .unwrap_or_else(|| Analyzer::new(AnalyzerConfig::default()))
    {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "enrich worker cannot build an analyzer");
            return;
        }
    };
    loop {
        let job = match rx.lock() {
            Ok(g) => g.recv(),
            Err(_) => return,
        };
        let Ok((bytes, reply)) = job else { return };
        let _ = reply.send(analyzer.analyze(&bytes));
    }
}

impl Module for Enrich {
    fn name(&self) -> &'static str {
        "enrich"
    }
    fn capability(&self) -> &'static str {
        "enrich"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            let bytes = match (&task.blob, &task.input) {
                (Some(b), _) => b.to_vec(),
                (None, Some(name)) => {
                    // Confined to the minion's input directory, size checked before reading.
                    let cap = AnalyzerConfig::default().caps.max_bytes as u64;
                    let input = crate::inputs::open_input(ctx, name, cap)?;
                    let shown = input.name.clone();
                    tokio::task::spawn_blocking(move || {
                        use std::io::Read;
                        let mut buf = Vec::with_capacity(input.size as usize);
                        (&input.file)
                            .take(cap + 1)
                            .read_to_end(&mut buf)
                            .map(|_| buf)
                    })
                    .await
                    .map_err(|e| ModuleError::Failed(e.to_string()))?
                    .map_err(|e| {
                        ModuleError::Invalid(format!("input {shown:?}: cannot read ({})", e.kind()))
                    })?
                }
                (None, None) => {
                    return Err(ModuleError::Invalid(
                        "enrich needs a blob (PNG) or an input path".into(),
                    ));
                }
            };
            // An image read from a file travels with its enrichment (so it can be served); a
            // screenshot's PNG (the task's blob) is already stored: the finding refers to it (the
            // coordinator gives it the task's blob id), so the PNG crosses the wire once each way.
            let blob = task
                .blob
                .is_none()
                .then(|| bytes::Bytes::from(bytes.clone()));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let pool = self.pool()?.clone();
            // the channel is bounded: wait for room off the runtime
            tokio::task::spawn_blocking(move || pool.send((bytes, tx)))
                .await
                .map_err(|e| ModuleError::Failed(e.to_string()))?
                .map_err(|_| ModuleError::Failed("enrich workers stopped".into()))?;
            let analysis = rx
                .await
                .map_err(|_| ModuleError::Failed("enrich worker died".into()))?
                .map_err(|e| match e {
                    // bad images never get better on retry
                    EnrichError::Ocr(_) | EnrichError::Io { .. } | EnrichError::Storage(_) => {
                        ModuleError::Failed(e.to_string())
                    }
                    _ => ModuleError::Invalid(e.to_string()),
                })?;
            let mut enrichment = Enrichment::from(analysis);
            enrichment.input = task.input.clone();
            let mut f = FindingOut::new(
                task.target,
                task.ports.first().copied(),
                Payload::Enrichment(Box::new(enrichment)),
            );
            f.blob = blob;
            Ok(vec![f])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::scope::Scope;

    fn task(blob: Option<Vec<u8>>, input: Option<String>) -> TaskInput {
        TaskInput {
            job_id: 1,
            task_id: 2,
            parent_task_id: Some(1),
            module: "enrich".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports: vec![5900],
            params: serde_json::json!({}),
            blob: blob.map(bytes::Bytes::from),
            input,
            ranges: Vec::new(),
        }
    }

    fn ctx() -> ModuleCtx {
        ModuleCtx {
            minion_id: "m1".into(),
            provider: "local".into(),
            scope: Scope::loopback(),
            input_dir: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enriches_a_screenshot_blob_and_an_input_path_and_refuses_garbage() {
        let dir = overlord_enrich::metrics::fixtures_dir()
            .expect("fixtures")
            .join("screens");
        let m = Enrich::default();
        let png = std::fs::read(dir.join("07_mail_from_light.png")).unwrap();
        let out = m
            .run(&task(Some(png), None), &ctx())
            .await
            .expect("enrichment");
        assert_eq!(out.len(), 1);
        let enrichment = |f: &FindingOut| match &f.payload {
            Payload::Enrichment(e) => e.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(out[0].port, Some(5900));
        assert!(out[0].blob.is_none(), "a screenshot's PNG is not sent back");
        let emails = enrichment(&out[0]).emails;
        assert_eq!(emails.len(), 3);
        // A file input: only from the minion's input directory.
        let path = dir.join("02_blank_black_pure.png").display().to_string();
        let err = m
            .run(&task(None, Some(path.clone())), &ctx())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("input_dir"), "{err}");
        let mut c = ctx();
        c.input_dir = Some(std::fs::canonicalize(&dir).unwrap());
        let out = m
            .run(&task(None, Some("02_blank_black_pure.png".into())), &c)
            .await
            .expect("enrichment");
        let e = enrichment(&out[0]);
        assert!(
            out[0].blob.is_some(),
            "a file's image travels with its enrichment"
        );
        assert!(e.blank);
        assert_eq!(e.input.as_deref(), Some("02_blank_black_pure.png"));
        let err = m
            .run(
                &task(Some(b"\x89PNG\r\n\x1a\ntruncated".to_vec()), None),
                &ctx(),
            )
            .await
            .unwrap_err();
        assert!(err.permanent(), "a corrupt image is not retried: {err}");
        let err = m.run(&task(None, None), &ctx()).await.unwrap_err();
        assert!(matches!(err, ModuleError::Invalid(_)));
    }
}
