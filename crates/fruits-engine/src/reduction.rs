//! The PCA reduction, in bytes independent of the number of tasks.
//!
//! A featurize task no longer stores its own partial sums (1280 x 1281 f64, 13 MB, whatever its
//! size). It adds them, once its part and report are durable, to its process's
//! accumulator for the run. When no task of the run has been running in that process for
//! [`FLUSH_DELAY`], the process writes what it accumulated as one snapshot
//! (`_sums/<worker>-<n>.sums`: the partitions it holds, then the sums) and starts afresh. A busy
//! executor runs task after task without a pause, so it flushes about once per run: the bytes
//! moved grow with the number of processes, not of tasks.
//!
//! The client ([`reduce`]) waits until the snapshots cover every partition (at most
//! [`FLUSH_WAIT`]), takes snapshots that do not overlap (a partition run twice, say after a
//! lost executor, is counted once), and sums any partition no snapshot holds (its process died
//! before flushing) from its staged features. The result is exact whatever was lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use fruits_model::FEATURES;
use fruits_pca::PartialSums;
use fruits_store::Location;

use crate::error::EngineError;
use crate::process::worker_name;
use crate::result::visit_batches;
use crate::vocab::names::{part_name, FEATURES_DIR, SUMS_DIR};
use crate::vocab::schema::FeatureRows;
pub use crate::vocab::summary::Reduction;

/// How long a process waits, with none of a run's tasks running, before it flushes.
pub const FLUSH_DELAY: Duration = Duration::from_secs(1);

/// How long the client waits for the snapshots to cover every partition.
pub const FLUSH_WAIT: Duration = Duration::from_secs(20);

/// One process's sums for one run, since its last flush.
#[derive(Debug)]
struct Accumulator {
    sums: PartialSums,
    partitions: BTreeSet<usize>,
    running: usize,
    /// Bumped at every start and finish: a flush goes ahead only if nothing happened since.
    events: u64,
}

/// Accumulators of this process, by staging location.
static ACCUMULATORS: LazyLock<Mutex<HashMap<String, Accumulator>>> =
    LazyLock::new(Default::default);

/// Snapshots this process has written (their names).
static FLUSHES: AtomicU64 = AtomicU64::new(0);

fn accumulators() -> std::sync::MutexGuard<'static, HashMap<String, Accumulator>> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    ACCUMULATORS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A featurize task of a run, running in this process; dropping it ends the task.
#[derive(Debug)]
pub struct Running {
    staged: Location,
    key: String,
}

impl Running {
    /// A task of the run staged at `staged` starts.
    pub fn start(staged: &Location) -> Running {
        let key = staged.uri();
        let mut all = accumulators();
        let acc = all.entry(key.clone()).or_insert_with(|| Accumulator {
            sums: PartialSums::new(FEATURES),
            partitions: BTreeSet::new(),
            running: 0,
            events: 0,
        });
        acc.running += 1;
        acc.events += 1;
        Running {
            staged: staged.clone(),
            key,
        }
    }

    /// Adds partition `p`'s sums: call once its part and report are durable. A partition this
    /// process already holds is not added again (a re-run gives the same rows).
    pub fn done(&self, p: usize, sums: &PartialSums) -> Result<(), EngineError> {
        let mut all = accumulators();
        if let Some(acc) = all.get_mut(&self.key) {
            if acc.partitions.insert(p) {
                acc.sums.merge(sums)?;
            }
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let events = {
            let mut all = accumulators();
            let Some(acc) = all.get_mut(&self.key) else {
                return;
            };
            acc.running -= 1;
            acc.events += 1;
            if acc.running > 0 {
                return;
            }
            acc.events
        };
        let staged = self.staged.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(FLUSH_DELAY).await;
                flush(&staged, Some(events)).await;
            });
        }
    }
}

/// Writes this process's accumulator for the run at `staged` as a snapshot, if no task of the
/// run runs here (and, with `events`, nothing happened since).
async fn flush(staged: &Location, events: Option<u64>) {
    let key = staged.uri();
    let taken = {
        let mut all = accumulators();
        match all.get(&key) {
            Some(acc) if acc.running == 0 && events.is_none_or(|e| e == acc.events) => {
                all.remove(&key)
            }
            _ => None,
        }
    };
    let Some(acc) = taken.filter(|a| !a.partitions.is_empty()) else {
        return;
    };
    let n = FLUSHES.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{SUMS_DIR}/{}-{}-{n}.sums",
        worker_name().replace(['/', ':'], "_"),
        std::process::id()
    );
    if let Err(e) = staged
        .put_rel(&name, encode(&acc.partitions, &acc.sums))
        .await
    {
        // The client sums these partitions from their staged features instead.
        tracing::warn!(%e, snapshot = name, "could not write the PCA partial sums");
    }
}

/// Flushes this process's accumulator for the run at `staged` now (an in-process run, whose
/// tasks have all ended, need not wait [`FLUSH_DELAY`]).
pub async fn flush_now(staged: &Location) {
    flush(staged, None).await;
}

fn encode(partitions: &BTreeSet<usize>, sums: &PartialSums) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(partitions.len() as u64).to_le_bytes());
    for p in partitions {
        out.extend_from_slice(&(*p as u64).to_le_bytes());
    }
    out.extend_from_slice(&sums.to_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<(BTreeSet<usize>, PartialSums), EngineError> {
    let bad = || EngineError::Task("a PCA partial-sums snapshot is truncated".into());
    let word = |i: usize| -> Result<u64, EngineError> {
        let b = bytes.get(i * 8..i * 8 + 8).ok_or_else(bad)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| bad())?))
    };
    let n = word(0)? as usize;
    let partitions = (1..=n)
        .map(|i| word(i).map(|p| p as usize))
        .collect::<Result<_, _>>()?;
    let sums = PartialSums::from_bytes(bytes.get((n + 1) * 8..).ok_or_else(bad)?)?;
    Ok((partitions, sums))
}

/// The snapshots to count: in name order, each that overlaps none taken before it; and the
/// expected partitions none of them holds.
fn choose(
    snapshots: &BTreeMap<String, (BTreeSet<usize>, Arc<PartialSums>)>,
    expected: usize,
) -> (Vec<&str>, Vec<usize>) {
    let mut covered = BTreeSet::new();
    let mut taken = Vec::new();
    for (name, (partitions, _)) in snapshots {
        if partitions
            .iter()
            .all(|p| *p < expected && !covered.contains(p))
        {
            covered.extend(partitions.iter().copied());
            taken.push(name.as_str());
        }
    }
    let missing = (0..expected).filter(|p| !covered.contains(p)).collect();
    (taken, missing)
}

/// The PCA partial sums of partitions `0..n` of the run staged at `staged`, each counted
/// exactly once (see the module docs), and what the reduction moved. Partitions in
/// `resumed` were staged by an interrupted run ([`crate::resume`]): no process will flush
/// them, so they are not waited for; a snapshot the interrupted run left may still hold them.
pub async fn reduce(
    staged: &Location,
    n: usize,
    resumed: &BTreeSet<usize>,
) -> Result<(PartialSums, Reduction), EngineError> {
    reduce_within(staged, n, resumed, FLUSH_WAIT).await
}

async fn reduce_within(
    staged: &Location,
    n: usize,
    resumed: &BTreeSet<usize>,
    wait: Duration,
) -> Result<(PartialSums, Reduction), EngineError> {
    flush_now(staged).await;
    let dir = staged.sub(SUMS_DIR);
    let deadline = Instant::now() + wait;
    let mut snapshots = BTreeMap::new();
    let mut moved = Reduction::default();
    loop {
        for path in dir.list_paths().await.unwrap_or_default() {
            let name = dir.relative(&path);
            if snapshots.contains_key(&name) {
                continue;
            }
            let bytes = dir.get(&path).await?;
            moved.objects += 1;
            moved.bytes += bytes.len() as u64;
            let (partitions, sums) = decode(&bytes)?;
            snapshots.insert(name, (partitions, Arc::new(sums)));
        }
        let (_, missing) = choose(&snapshots, n);
        if missing.iter().all(|p| resumed.contains(p)) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (taken, missing) = choose(&snapshots, n);
    let mut total = PartialSums::new(FEATURES);
    for name in taken {
        total.merge(&snapshots[name].1)?;
    }
    for p in &missing {
        total.merge(&staged_sums(staged, *p).await?)?;
    }
    moved.recomputed = missing.len() as u64;
    Ok((total, moved))
}

/// Partition `p`'s sums, from its staged features.
async fn staged_sums(staged: &Location, p: usize) -> Result<PartialSums, EngineError> {
    let mut sums = PartialSums::new(FEATURES);
    visit_batches(staged, &[part_name(FEATURES_DIR, p)], |batch, _| {
        sums.add_rows(FeatureRows::try_from(batch)?.values()?);
        Ok(())
    })
    .await?;
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ps: &[usize]) -> (BTreeSet<usize>, Arc<PartialSums>) {
        (ps.iter().copied().collect(), Arc::new(PartialSums::new(2)))
    }

    #[test]
    fn overlapping_snapshots_count_once_and_holes_are_recomputed() {
        let mut s = BTreeMap::new();
        s.insert("a".to_string(), snap(&[0, 1, 2]));
        s.insert("b".to_string(), snap(&[2, 3]));
        s.insert("c".to_string(), snap(&[4]));
        s.insert("d".to_string(), snap(&[9]));
        let (taken, missing) = choose(&s, 6);
        assert_eq!(taken, vec!["a", "c"]);
        assert_eq!(missing, vec![3, 5]);
    }

    /// `rows` features of partition `p`, staged as the featurize plan stages them.
    async fn stage_features(staged: &Location, p: usize, rows: &[f32]) {
        use arrow::array::{ArrayRef, Float32Array, ListArray, RecordBatch, StringArray};
        let n = rows.len() / FEATURES;
        let offsets = arrow::buffer::OffsetBuffer::from_lengths(vec![FEATURES; n]);
        let field = Arc::new(arrow::datatypes::Field::new_list_field(
            arrow::datatypes::DataType::Float32,
            true,
        ));
        let list = ListArray::new(
            field,
            offsets,
            Arc::new(Float32Array::from(rows.to_vec())),
            None,
        );
        let text = |s: &str| Arc::new(StringArray::from(vec![s; n])) as ArrayRef;
        let batch = RecordBatch::try_new(
            crate::vocab::schema::features_schema(),
            vec![text("p"), text("l"), Arc::new(list)],
        )
        .unwrap();
        let mut w = crate::sink::PartWriter::create(
            staged,
            &part_name(FEATURES_DIR, p),
            crate::vocab::schema::features_schema(),
        )
        .unwrap();
        w.write(&batch).await.unwrap();
        w.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_partition_counts_once_from_snapshots_or_its_staged_features() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let rows = |seed: f32, n: usize| -> Vec<f32> {
            (0..n * FEATURES)
                .map(|i| ((i as f32) * 0.37 + seed).sin())
                .collect()
        };
        let (r0, r1, r2) = (rows(0.0, 3), rows(1.0, 2), rows(2.0, 4));
        // Partitions 0 and 1 ran in this process (1 twice); 2 ran in a process that died.
        for (p, r) in [(0, &r0), (1, &r1), (1, &r1)] {
            let task = Running::start(&staged);
            let mut sums = PartialSums::new(FEATURES);
            sums.add_rows(r);
            task.done(p, &sums).unwrap();
        }
        stage_features(&staged, 2, &r2).await;
        let none = BTreeSet::new();
        let (got, moved) = reduce_within(&staged, 3, &none, Duration::ZERO)
            .await
            .unwrap();
        let mut want = PartialSums::new(FEATURES);
        for r in [&r0, &r1, &r2] {
            want.add_rows(r);
        }
        assert_eq!(got.count(), 9);
        assert_eq!(moved.objects, 1);
        assert_eq!(moved.recomputed, 1);
        let (a, b) = (got.to_bytes(), want.to_bytes());
        assert_eq!(a.len(), b.len());
        // The same sums, up to the order of additions.
        let close = a.chunks_exact(8).zip(b.chunks_exact(8)).all(|(x, y)| {
            let (x, y) = (
                f64::from_le_bytes(x.try_into().unwrap()),
                f64::from_le_bytes(y.try_into().unwrap()),
            );
            (x - y).abs() <= 1e-9 * (1.0 + y.abs())
        });
        assert!(close);
    }

    #[test]
    fn snapshots_round_trip() {
        let mut sums = PartialSums::new(FEATURES);
        sums.add_rows(&vec![0.5; FEATURES * 3]);
        let ps: BTreeSet<usize> = [3, 7].into();
        let (back, again) = decode(&encode(&ps, &sums)).unwrap();
        assert_eq!(back, ps);
        assert_eq!(again.to_bytes(), sums.to_bytes());
        assert!(decode(&[1, 0, 0]).is_err());
    }
}
