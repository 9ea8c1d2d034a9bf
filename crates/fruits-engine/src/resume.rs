//! Resume: a run stopped part-way (SIGKILL, Ctrl-C, a crash, a lost machine, or an error that
//! failed it) and started again with the same command continues where it stopped.
//!
//! A run's staging area is named by its [`run_key`], a hash of everything that decides what it
//! stages: input and output, the photos to featurise (path, size, version) and how they are
//! split into partitions, the weights, the preprocessing version and the image limits. The same
//! command on the same input gives the same key, so it finds the area the interrupted run left
//! ([`fruits_store::Staging::begin_keyed`] keeps it; any other left over is deleted).
//!
//! In that area a partition counts as done only when both its staged part and its task report
//! are there: the task writes the part, makes it durable, then writes the report
//! ([`crate::plan::WriteExec`]). [`resumable`] takes those partitions' reports and removes
//! everything else the interrupted run left (unfinished parts, later stages' output); only the
//! other partitions are featurised again.

use fruits_store::{ImageRef, Location};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::EngineError;
use crate::vocab::names::{part_name, report_name, FEATURES_DIR, OWNER_FILE, SUMS_DIR};
use crate::vocab::{TaskReport, WriteKind};

/// What decides a run's staged work, besides its partitions.
#[derive(Debug)]
pub struct KeyParts<'a> {
    /// The input URI.
    pub input: &'a str,
    /// The output URI.
    pub output: &'a str,
    /// The weights: where they come from, and their hash where this process loaded them.
    pub weights: String,
    /// Everything else that changes a staged row (preprocessing version, image limits, mode).
    pub settings: String,
}

/// The staging key of a run featurising `partitions` (see the module docs): 20 hex digits.
pub fn run_key(parts: &KeyParts, partitions: &[&[ImageRef]]) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"fruits-run-1");
    field(parts.input.as_bytes());
    field(parts.output.as_bytes());
    field(parts.weights.as_bytes());
    field(parts.settings.as_bytes());
    field(&(partitions.len() as u64).to_le_bytes());
    for images in partitions {
        field(&(images.len() as u64).to_le_bytes());
        for i in *images {
            field(i.path.as_ref().as_bytes());
            field(&i.size.to_le_bytes());
            field(i.version.as_deref().unwrap_or("").as_bytes());
        }
    }
    let digest = h.finalize();
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// The reports of the partitions an interrupted run finished in `staged` (part and report both
/// there, the report matching the partition), in partition order; everything else it left is
/// deleted, but for the PCA sums' snapshots ([`crate::reduction`]), which count only finished
/// partitions, and the owner mark ([`OWNER_FILE`]) the resuming run has written.
pub async fn resumable(
    staged: &Location,
    partitions: &[&[ImageRef]],
) -> Result<Vec<TaskReport>, EngineError> {
    let done = finished(staged, partitions).await?;
    let keep: std::collections::HashSet<String> = done
        .iter()
        .flat_map(|r| {
            [
                part_name(FEATURES_DIR, r.partition),
                report_name(WriteKind::Features, r.partition),
            ]
        })
        .collect();
    let sums = format!("{SUMS_DIR}/");
    staged
        .retain(|rel| {
            keep.contains(rel)
                || rel == OWNER_FILE
                || (rel.starts_with(&sums) && rel.ends_with(".sums"))
        })
        .await?;
    Ok(done)
}

/// The reports of the partitions finished in `staged` (part and report both there, the report
/// matching the partition), in partition order: what a run of the same key would resume.
pub async fn finished(
    staged: &Location,
    partitions: &[&[ImageRef]],
) -> Result<Vec<TaskReport>, EngineError> {
    let present: std::collections::HashSet<String> = staged
        .list_paths()
        .await?
        .iter()
        .map(|p| staged.relative(p))
        .collect();
    let candidates: Vec<usize> = (0..partitions.len())
        .filter(|&p| {
            present.contains(&part_name(FEATURES_DIR, p))
                && present.contains(&report_name(WriteKind::Features, p))
        })
        .collect();
    let done: Vec<TaskReport> = read_reports(staged, WriteKind::Features, &candidates)
        .await
        .into_iter()
        .zip(&candidates)
        .filter_map(|(r, &p)| {
            r.filter(|r| r.partition == p && r.images == partitions[p].len() as u64)
        })
        .collect();
    Ok(done)
}

/// The stored `kind` reports of `partitions` of the run staged at `staged`, in that order:
/// `None` for one missing or unreadable. Read a few at a time.
pub(crate) async fn read_reports(
    staged: &Location,
    kind: WriteKind,
    partitions: &[usize],
) -> Vec<Option<TaskReport>> {
    futures::stream::iter(partitions)
        .map(|&p| async move { staged.get_rel(&report_name(kind, p)).await })
        .buffered(8)
        .map(|bytes| serde_json::from_slice(&bytes.ok()?).ok())
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(i: usize, size: u64) -> ImageRef {
        ImageRef {
            uri: format!("file:///x/{i}.jpg"),
            label: "x".into(),
            path: format!("x/{i}.jpg").into(),
            size,
            version: Some("mtime:1".into()),
        }
    }

    #[test]
    fn the_key_changes_with_anything_that_changes_the_staged_work() {
        let images: Vec<_> = (0..6).map(|i| image(i, 10)).collect();
        let parts = KeyParts {
            input: "in",
            output: "out",
            weights: "w".into(),
            settings: "s".into(),
        };
        let halves: Vec<&[ImageRef]> = images.chunks(3).collect();
        let key = run_key(&parts, &halves);
        assert_eq!(key.len(), 20);
        assert_eq!(
            key,
            run_key(&parts, &halves),
            "the same command, the same key"
        );
        let thirds: Vec<&[ImageRef]> = images.chunks(2).collect();
        assert_ne!(key, run_key(&parts, &thirds), "other partitions");
        let mut grown = images.clone();
        grown[4].size = 11;
        let grown: Vec<&[ImageRef]> = grown.chunks(3).collect();
        assert_ne!(key, run_key(&parts, &grown), "a changed photo");
        let other = KeyParts {
            weights: "v".into(),
            ..parts
        };
        assert_ne!(key, run_key(&other, &halves), "other weights");
    }

    #[tokio::test]
    async fn only_partitions_with_part_and_report_resume_and_the_rest_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let images: Vec<_> = (0..6).map(|i| image(i, 10)).collect();
        let partitions: Vec<&[ImageRef]> = images.chunks(2).collect();
        let report = |p: usize, n: u64| TaskReport {
            partition: p,
            rows: n,
            images: n,
            skipped: Vec::new(),
            labels: vec!["x".into()],
            worker: "local".into(),
            weights: None,
        };
        let put = |rel: String, body: Vec<u8>| {
            let staged = staged.clone();
            async move { staged.put_rel(&rel, body).await.unwrap() }
        };
        // 0: done. 1: part without report (killed between them). 2: report of another size.
        put(part_name(FEATURES_DIR, 0), b"part".to_vec()).await;
        put(report_name(WriteKind::Features, 0), report(0, 2).to_json()).await;
        put(part_name(FEATURES_DIR, 1), b"part".to_vec()).await;
        put(part_name(FEATURES_DIR, 2), b"part".to_vec()).await;
        put(report_name(WriteKind::Features, 2), report(2, 5).to_json()).await;
        put(format!("{SUMS_DIR}/w-1-0.sums"), b"sums".to_vec()).await;
        put(OWNER_FILE.into(), b"run-2".to_vec()).await;
        put("part-00000.parquet".into(), b"projected".to_vec()).await;
        std::fs::write(dir.path().join("_features/part-00001.parquet#3"), b"half").unwrap();

        let done = resumable(&staged, &partitions).await.unwrap();
        assert_eq!(done, vec![report(0, 2)]);
        let mut left: Vec<String> = walk(dir.path());
        left.sort();
        assert_eq!(
            left,
            [
                "_features/part-00000.parquet",
                "_reports/features-00000.json",
                "_reports/owner",
                "_sums/w-1-0.sums"
            ]
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out
    }
}
