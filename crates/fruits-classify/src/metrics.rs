//! How well a head does on labelled rows.

use serde::{Deserialize, Serialize};

/// Top-1, top-5, per class, and the confusion matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rows evaluated.
    pub rows: usize,
    /// Share whose most probable class is right.
    pub top1: f64,
    /// Share whose right class is among the five most probable.
    pub top5: f64,
    /// Per class: `(class, rows, top-1 accuracy)`.
    pub per_class: Vec<(String, usize, f64)>,
    /// `confusion[truth][predicted]`: row counts, classes in model order.
    pub confusion: Vec<Vec<u32>>,
    /// The most confused pairs: `(truth, predicted, rows)`, most first, at most five.
    pub most_confused: Vec<(String, String, u32)>,
}

/// The classes of `row` (one probability each), most probable first.
pub fn ranked(row: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
}

/// Scores `probabilities` (`n x classes.len()`, row-major) against `truth`.
pub fn evaluate(probabilities: &[f64], truth: &[u32], classes: &[String]) -> Metrics {
    let c = classes.len();
    let mut confusion = vec![vec![0u32; c]; c];
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &t) in probabilities.chunks_exact(c.max(1)).zip(truth) {
        let order = ranked(row);
        confusion[t as usize][order[0]] += 1;
        top1 += usize::from(order[0] == t as usize);
        top5 += usize::from(order.iter().take(5).any(|&k| k == t as usize));
    }
    let n = truth.len();
    let share = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
    let per_class = (0..c)
        .map(|k| {
            let rows: u32 = confusion[k].iter().sum();
            (
                classes[k].clone(),
                rows as usize,
                share(confusion[k][k] as usize, rows as usize),
            )
        })
        .collect();
    let mut pairs: Vec<(String, String, u32)> = (0..c)
        .flat_map(|t| (0..c).map(move |p| (t, p)))
        .filter(|&(t, p)| t != p && confusion[t][p] > 0)
        .map(|(t, p)| (classes[t].clone(), classes[p].clone(), confusion[t][p]))
        .collect();
    pairs.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| a.0.cmp(&b.0))
            .then_with(|| a.1.cmp(&b.1))
    });
    pairs.truncate(5);
    Metrics {
        rows: n,
        top1: share(top1, n),
        top5: share(top5, n),
        per_class,
        confusion,
        most_confused: pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_top1_top5_and_confusions() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let p = [0.7, 0.2, 0.1, 0.6, 0.3, 0.1, 0.1, 0.1, 0.8];
        let m = evaluate(&p, &[0, 1, 2], &classes);
        assert_eq!(m.rows, 3);
        assert!((m.top1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.top5, 1.0);
        assert_eq!(m.confusion[1][0], 1);
        assert_eq!(m.most_confused, vec![("b".into(), "a".into(), 1)]);
        assert_eq!(m.per_class[1], ("b".into(), 1, 0.0));
    }
}
