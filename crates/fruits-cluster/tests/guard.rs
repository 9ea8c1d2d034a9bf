//! An executor runs signed fruits plans only: a plain DataFusion plan that reaches it through
//! the scheduler (which has no fruits node to check a signature on) is refused before it runs.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::memory::MemorySourceConfig;
use fruits_cluster::auth::ClusterToken;
use fruits_engine::Engine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_is_not_a_fruits_write_is_refused_by_the_executor() {
    let token = ClusterToken::new(b"guard-test-token-0123").unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = fruits_cluster::SchedulerOptions {
        bind: "127.0.0.1:0".into(),
        executor_timeout: Duration::from_secs(10),
        token: token.clone(),
    };
    tokio::spawn(fruits_cluster::run_scheduler(opts, move |addr| {
        let _ = tx.send(addr);
    }));
    let addr = rx.await.unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let opts = fruits_cluster::ExecutorOptions {
        scheduler: addr.to_string(),
        bind: None,
        external_host: None,
        concurrency: 1,
        work_dir: None,
        heartbeat: Duration::from_secs(1),
        token: token.clone(),
    };
    tokio::spawn(fruits_cluster::run_executor(opts, move |_| {
        let _ = ready_tx.send(());
    }));
    ready_rx.await.unwrap();

    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
    let plan = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap();
    let cluster = fruits_cluster::Cluster::connect(&format!("df://{addr}"), token)
        .await
        .unwrap();
    let err = cluster.run(plan).await.unwrap_err().to_string();
    assert!(err.contains("runs fruits plans only"), "{err}");
}
