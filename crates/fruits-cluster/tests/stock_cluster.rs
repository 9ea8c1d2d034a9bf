//! A cluster that does not know fruits' plans (stock Ballista) is refused with one clear line.

use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use fruits_engine::{ExtractConfig, PcaSpec, Progress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_ballista_scheduler_is_named_as_the_cause() {
    // Ballista's own scheduler, with Ballista's own codec only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = SchedulerConfig::default().with_port(addr.port());
    let cluster = BallistaCluster::new_from_config(&config).await.unwrap();
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .unwrap();
    tokio::spawn(start_grpc_service_with_listener(listener, scheduler));

    let dir = tempfile::tempdir().unwrap();
    fruits_testkit::write_photo_tree(&dir.path().join("in"), 1, 2);
    let cfg = ExtractConfig {
        input: dir.path().join("in").display().to_string(),
        output: dir.path().join("out").display().to_string(),
        weights: Default::default(),
        model: None,
        pca: PcaSpec::Fit(fruits_pca::Components::K(1)),
        overwrite: false,
        update: false,
        batch_size: 2,
        limits: Default::default(),
        s3: Default::default(),
        report: true,
        format: fruits_engine::Format::Parquet,
    };
    let url = format!("df://{addr}");
    let token = fruits_cluster::auth::ClusterToken::new(b"a-test-token-of-16+").unwrap();
    let cluster = fruits_cluster::Cluster::connect(&url, token).await.unwrap();
    let err = fruits_engine::extract(&cfg, &cluster, Arc::new(Progress::default()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "the cluster at {url} does not know the fruits plan nodes"
        )) && err.contains("fruits executor"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert!(!dir.path().join("out").exists(), "nothing published");
}
