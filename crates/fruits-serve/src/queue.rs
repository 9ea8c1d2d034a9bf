//! The bounded queue between requests and the model workers, and the workers themselves.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use fruits_model::FEATURES;

use crate::{Metrics, Service};

/// One image waiting for a worker.
pub(crate) struct Job {
    image: Bytes,
    queued: Instant,
    answer: tokio::sync::oneshot::Sender<Done>,
}

/// A worker's answer.
pub(crate) struct Done {
    /// The image's features, or why it has none.
    pub(crate) features: Result<Vec<f32>, String>,
    /// Time in the queue.
    pub(crate) waited: Duration,
    /// Time in the model (for the whole batch).
    pub(crate) ran: Duration,
    /// Images in the batch.
    pub(crate) batch: usize,
}

impl Job {
    /// A job for `image` and where its answer will come.
    pub(crate) fn new(image: Bytes) -> (Job, tokio::sync::oneshot::Receiver<Done>) {
        let (answer, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            image,
            queued: Instant::now(),
            answer,
        };
        (job, rx)
    }
}

/// The sending side, shared by every request.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: Arc<Mutex<Option<SyncSender<Job>>>>,
    depth: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
}

impl Queue {
    /// A queue of `service.options.queue` places and its workers.
    pub(crate) fn start(service: &Service, metrics: Arc<Metrics>) -> Queue {
        let (tx, rx) = sync_channel::<Job>(service.options.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        for i in 0..service.options.workers.max(1) {
            let (rx, depth, service, metrics) =
                (rx.clone(), depth.clone(), service.clone(), metrics.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("fruits-serve-{i}"))
                .spawn(move || work(&rx, &depth, &service, &metrics));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a model worker");
            }
        }
        Queue {
            tx: Arc::new(Mutex::new(Some(tx))),
            depth,
            open: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Queues `job`; `false` if the queue is full or closed.
    pub(crate) fn offer(&self, job: Job) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return false;
        };
        // Counted before it is sent, so a worker never takes it below zero.
        self.depth.fetch_add(1, Ordering::Relaxed);
        if tx.try_send(job).is_ok() {
            true
        } else {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Jobs waiting.
    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Whether new jobs are taken.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes no more jobs; the workers end once the queue is empty.
    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A model worker: waits for a job, takes every job waiting behind it (up to the batch size),
/// runs them as one batch, answers each.
fn work(rx: &Mutex<Receiver<Job>>, depth: &AtomicUsize, service: &Service, metrics: &Metrics) {
    let max = service.options.max_batch.max(1);
    loop {
        let batch = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            batch
        };
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics.batch(batch.len());
        let started = Instant::now();
        let model = service.model.clone();
        let outcome =
            fruits_engine::udf::featurize_bytes(batch.iter().map(|j| Some(&j.image[..])), || {
                Ok(model)
            });
        let ran = started.elapsed();
        let n = batch.len();
        let answers: Vec<Result<Vec<f32>, String>> = match outcome {
            Err(e) => vec![Err(e.to_string()); n],
            Ok(b) => b
                .outcome
                .into_iter()
                .map(|o| match o {
                    Some(Ok(row)) => Ok(b.features[row * FEATURES..(row + 1) * FEATURES].to_vec()),
                    Some(Err(e)) => Err(e),
                    None => Err("no content".into()),
                })
                .collect(),
        };
        for (job, features) in batch.into_iter().zip(answers) {
            let done = Done {
                features,
                waited: started.duration_since(job.queued),
                ran,
                batch: n,
            };
            // The client may have gone: nothing to do then.
            let _ = job.answer.send(done);
        }
    }
}
