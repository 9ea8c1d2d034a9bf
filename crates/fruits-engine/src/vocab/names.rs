//! The names of the objects a run stages and publishes, formatted and parsed here only.

use serde::{Deserialize, Serialize};

/// Staged features, below the staging location; removed before publishing.
pub const FEATURES_DIR: &str = "_features";
/// Staged PCA partial sums, one file per partition; removed before publishing.
pub const SUMS_DIR: &str = "_sums";
/// Task reports, one file per task; removed before publishing.
pub const REPORTS_DIR: &str = "_reports";
/// The run that owns a staging area (its id), written when it starts: tasks of an earlier run
/// of the same command stop on seeing another. Removed with the reports.
pub const OWNER_FILE: &str = "_reports/owner";
/// The fitted (or applied) PCA, published beside the data.
pub const PCA_DIR: &str = "_pca";
/// The images a run set aside, and why.
pub const ERRORS_FILE: &str = "_errors.json";
/// The photos a result's rows came from, with their sizes and versions (`--mode update`): in
/// a folder, so that a reader's `<output>/*.parquet` (DuckDB's glob) never takes it for a part.
pub const INPUTS_FILE: &str = "_inputs/inputs.parquet";

/// The run's report page, beside its result.
pub const REPORT_FILE: &str = "_report.html";

/// Which write a task does; it names the task's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteKind {
    /// Featurised rows → staged features without the skipped images, and the partition's PCA
    /// partial sums.
    Features,
    /// Projected rows → a final part.
    Output,
}

impl WriteKind {
    fn as_str(self) -> &'static str {
        match self {
            WriteKind::Features => "features",
            WriteKind::Output => "output",
        }
    }
}

/// Name of partition `p`'s part below `dir` ("" for the output's top level).
pub fn part_name(dir: &str, p: usize) -> String {
    if dir.is_empty() {
        format!("part-{p:05}.parquet")
    } else {
        format!("{dir}/part-{p:05}.parquet")
    }
}

/// Name of the report partition `p`'s task of `kind` stores last, once its output is complete
/// (the run's evidence if the engine loses the task's answer).
pub fn report_name(kind: WriteKind, p: usize) -> String {
    format!("{REPORTS_DIR}/{}", report_file(kind, p))
}

fn report_file(kind: WriteKind, p: usize) -> String {
    format!("{}-{p:05}.json", kind.as_str())
}

/// The partition whose `kind` report a file of [`REPORTS_DIR`] is, if it is one.
pub fn parse_report_file(kind: WriteKind, file: &str) -> Option<usize> {
    let p = file
        .strip_prefix(kind.as_str())?
        .strip_prefix('-')?
        .strip_suffix(".json")?;
    let p: usize = p.parse().ok()?;
    (report_file(kind, p) == file).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_parse_back_and_nothing_else_does() {
        for p in [0, 7, 12345, 123456] {
            for kind in [WriteKind::Features, WriteKind::Output] {
                let name = report_name(kind, p);
                let file = name.rsplit('/').next().unwrap();
                assert_eq!(parse_report_file(kind, file), Some(p), "{name}");
            }
        }
        let file = report_file(WriteKind::Output, 3);
        assert_eq!(parse_report_file(WriteKind::Features, &file), None);
        for odd in [
            "features-7.json",
            "features-00007.json.tmp",
            "features--0001.json",
        ] {
            assert_eq!(parse_report_file(WriteKind::Features, odd), None, "{odd}");
        }
    }
}
