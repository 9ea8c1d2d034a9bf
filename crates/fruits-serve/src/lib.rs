//! The fruit recogniser over HTTP: `fruits serve`.
//!
//! * `POST /v1/predict`: the image bytes (`image/jpeg`, `image/png`) or a multipart form with
//!   a field `image`, `?top=K` → the top classes as JSON.
//! * `GET /`: a page a phone can use (camera or file, top 5 as bars; no external resource).
//! * `GET /v1/model`, `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text).
//!
//! Requests go to a bounded queue; each model worker takes what is waiting as one batch
//! (micro-batching) and runs the same featurisation as `extract`
//! ([`fruits_engine::udf::featurize_bytes`]) and the classifier. A full queue answers 503 with
//! `Retry-After`; bad input gets a 4xx with a JSON `{"error": ...}` line; nothing panics the
//! server. [`serve`] returns once its shutdown signal fired and every accepted request has
//! its answer.
//!
//! ```no_run
//! # async fn demo(service: fruits_serve::Service) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! fruits_serve::serve(listener, service, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

#![deny(missing_docs)]

mod metrics;
mod queue;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fruits_classify::Classifier;
use fruits_engine::Limits;
use fruits_model::MobileNetV2;
use serde::Deserialize;

pub use metrics::Metrics;
use queue::{Job, Queue};

/// The page `GET /` serves.
const PAGE: &str = include_str!("page.html");

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Requests waiting for a model worker before the service answers 503.
    pub queue: usize,
    /// Images a worker runs together at most.
    pub max_batch: usize,
    /// Model workers (one core each).
    pub workers: usize,
    /// What one image may cost (decoded pixels).
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body: 10 << 20,
            queue: 64,
            max_batch: 16,
            workers: 1,
            limits: Limits::DEFAULT,
        }
    }
}

/// What the service answers with: the network, the classifier and the settings.
#[derive(Clone)]
pub struct Service {
    /// The network the classifier's features come from.
    pub model: Arc<MobileNetV2>,
    /// The classifier.
    pub classifier: Arc<Classifier>,
    /// Settings.
    pub options: Options,
}

#[derive(Clone)]
struct AppState {
    service: Service,
    queue: Queue,
    metrics: Arc<Metrics>,
}

/// Serves `service` on `listener` until `shutdown` completes; then stops accepting, answers
/// every request already accepted, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let queue = Queue::start(&service, metrics.clone());
    let state = AppState {
        service,
        queue: queue.clone(),
        metrics,
    };
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    queue.close();
    result
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route".into()) })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts every answer by route and status, and times predictions.
async fn count(State(s): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let route = match req.uri().path() {
        p @ ("/" | "/v1/predict" | "/v1/model" | "/healthz" | "/readyz" | "/metrics") => p,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    s.metrics
        .record(&route, response.status().as_u16(), started.elapsed());
    response
}

/// A JSON error answer: `{"error": "..."}`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn model(State(s): State<AppState>) -> Json<serde_json::Value> {
    let c = &s.service.classifier;
    Json(serde_json::json!({
        "classes": c.classes,
        "info": c.info,
    }))
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.queue.is_open() {
        Json(serde_json::json!({"ready": true, "classes": s.service.classifier.classes.len()}))
            .into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into())
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(s.queue.depth()),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PredictQuery {
    top: Option<String>,
}

async fn predict(
    State(s): State<AppState>,
    Query(q): Query<PredictQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let top = match q.top.as_deref().map(str::parse::<usize>) {
        None => 5,
        Some(Ok(k)) if (1..=1000).contains(&k) => k,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "top must be a whole number from 1 to 1000".into(),
            )
        }
    };
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = kind.split(';').next().unwrap_or("").trim().to_string();
    if !matches!(
        essence.as_str(),
        "image/jpeg" | "image/png" | "multipart/form-data"
    ) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send image/jpeg, image/png or multipart/form-data with a field \"image\", not {:?}", essence),
        );
    }
    let max = s.service.options.max_body;
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds {max} bytes (--max-body)"),
            )
        }
    };
    let image = if essence == "multipart/form-data" {
        match image_field(&kind, bytes).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    } else {
        bytes
    };
    if image.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the image is empty".into());
    }
    if let Some(why) = s.service.options.limits.refuse_bytes(&image) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let (job, answer) = Job::new(image);
    if !s.queue.offer(job) {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: every model worker is taken and the queue is full; try again".into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    let Ok(done) = answer.await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    match done.features {
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("not a readable image: {e}"),
        ),
        Ok(features) => {
            let predictions = s.service.classifier.top(&features, top).remove(0);
            let info = &s.service.classifier.info;
            Json(serde_json::json!({
                "predictions": predictions,
                "model": {
                    "format": info.format,
                    "space": info.space,
                    "classes": s.service.classifier.classes.len(),
                    "weights_hash": info.weights_hash,
                    "validation_top1": info.validation_top1,
                },
                "timing_ms": {
                    "queue": done.waited.as_secs_f64() * 1e3,
                    "model": done.ran.as_secs_f64() * 1e3,
                    "batch": done.batch,
                    "total": started.elapsed().as_secs_f64() * 1e3,
                },
            }))
            .into_response()
        }
    }
}

/// The bytes of the multipart field `image`.
async fn image_field(
    content_type: &str,
    body: axum::body::Bytes,
) -> Result<axum::body::Bytes, String> {
    let request = Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .map_err(|e| e.to_string())?;
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| format!("not a multipart form: {}", e.body_text()))?;
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("image") => {
                return field
                    .bytes()
                    .await
                    .map_err(|e| format!("reading the field \"image\": {}", e.body_text()));
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err("the form has no field \"image\"".into()),
            Err(e) => return Err(format!("not a multipart form: {}", e.body_text())),
        }
    }
}
