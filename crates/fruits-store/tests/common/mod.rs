//! Fault injection at every step of a commit, shared by the local and S3 tests.

use fruits_store::{Location, Staging, StoreError};

/// The objects of the old and of the new result (the new one has fewer parts).
const OLD: [&str; 5] = [
    "part-00000.parquet",
    "part-00001.parquet",
    "_pca/mean.npy",
    "_pca/pca.json",
    "_errors.json",
];
const NEW: [&str; 4] = [
    "part-00000.parquet",
    "_pca/mean.npy",
    "_pca/pca.json",
    "_errors.json",
];

/// Stages `files` (each holding `<label>:<name>`) as run `run` and commits, failing at `fault`.
async fn publish(
    out: &Location,
    run: &str,
    label: &str,
    files: &[&str],
    exchange: bool,
    fault: Option<usize>,
) -> Result<(), StoreError> {
    let mut s = Staging::begin(out, true, run).await?;
    if !exchange {
        s.without_exchange();
    }
    if let Some(step) = fault {
        s.fail_at(step);
    }
    for f in files {
        s.location()
            .put_rel(f, format!("{label}:{f}").into_bytes())
            .await?;
    }
    s.commit(serde_json::json!({ "label": label })).await
}

/// What a reader that trusts `_SUCCESS` finds: the label of a complete, unmixed result, or
/// `None` where there is no `_SUCCESS`. Panics on a mixed or incomplete result.
pub async fn committed(out: &Location) -> Option<String> {
    let marker = match out.get_rel("_SUCCESS").await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return None,
        Err(e) => panic!("{e}"),
    };
    let v: serde_json::Value = serde_json::from_slice(&marker).unwrap();
    let label = v["label"].as_str().unwrap().to_string();
    let run = v["commit"]["run"].as_str().unwrap().to_string();
    let objects: Vec<String> = v["commit"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    let expected: &[&str] = if label == "old" { &OLD } else { &NEW };
    assert_eq!(objects.len(), expected.len() + 1, "{objects:?}");
    for name in expected {
        let published = if name.starts_with('_') {
            name.to_string()
        } else {
            name.replace(".parquet", &format!("-{run}.parquet"))
        };
        assert!(
            objects.contains(&published),
            "{published} not in {objects:?}"
        );
        let bytes = out
            .get_rel(&published)
            .await
            .unwrap_or_else(|e| panic!("{published} listed in _SUCCESS but unreadable: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            format!("{label}:{name}"),
            "{published} belongs to another result"
        );
    }
    Some(label)
}

/// Every object below `out`, relative to it.
pub async fn names(out: &Location) -> Vec<String> {
    let mut v: Vec<String> = out
        .list_paths()
        .await
        .unwrap()
        .iter()
        .map(|p| out.relative(p))
        .collect();
    v.sort();
    v
}

/// Fails the commit of a new result over an old one at each of its steps in turn; after each
/// failure a reader finds the old or the new result whole (or no `_SUCCESS`, while the journal
/// holds the new one), and recovery leaves a complete result. Returns the number of steps.
pub async fn every_step_leaves_old_or_new(out: &Location, exchange: bool) -> usize {
    publish(out, "old", "old", &OLD, exchange, None)
        .await
        .unwrap();
    assert_eq!(committed(out).await.as_deref(), Some("old"));
    for step in 0..100 {
        let run = format!("new{step}");
        match publish(out, &run, "new", &NEW, exchange, Some(step)).await {
            Ok(()) => {
                assert_eq!(committed(out).await.as_deref(), Some("new"));
                let mut want: Vec<String> = NEW
                    .iter()
                    .map(|n| n.replace(".parquet", &format!("-{run}.parquet")))
                    .collect();
                want.push("_SUCCESS".into());
                want.sort();
                assert_eq!(names(out).await, want, "nothing else remains");
                return step;
            }
            Err(StoreError::Injected(_)) => {
                let seen = committed(out).await;
                assert!(seen.is_some() || !exchange, "step {step}: no _SUCCESS");
                Staging::recover(out).await.unwrap();
                // Recovery finishes a journaled commit, or leaves the old result.
                let after = committed(out).await.expect("complete after recovery");
                if after == "new" {
                    publish(out, "old", "old", &OLD, exchange, None)
                        .await
                        .unwrap();
                }
                assert!(
                    !names(out)
                        .await
                        .iter()
                        .any(|n| n.starts_with("_temporary/old")
                            || n.starts_with(&format!("_temporary/{run}/"))),
                    "staging left behind"
                );
            }
            Err(e) => panic!("step {step}: {e}"),
        }
    }
    panic!("the commit never succeeded");
}

/// A second run on the same output is refused while the first one lives.
pub async fn a_second_writer_is_refused(out: &Location) {
    let first = Staging::begin(out, true, "first").await.unwrap();
    let err = Staging::begin(out, true, "second").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Busy { .. }) && err.to_string().contains("another run"),
        "{err}"
    );
    first.abort().await.unwrap();
    Staging::begin(out, true, "third")
        .await
        .unwrap()
        .abort()
        .await
        .unwrap();
}
