//! `fruits report`: a result's `_report.html`, or its figures as JSON.

use anyhow::{Context, Result};
use clap::Args;
use fruits_engine::report::{report, write_page, Subject};

/// Arguments of `fruits report`.
#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The result (folder, file:// or s3:// URI of an `extract` output).
    uri: String,
    /// Another result (say a test set): list its photos with a near-duplicate in this one.
    #[arg(long, value_name = "URI")]
    compare: Option<String>,
    /// Print the figures and every flagged photo as JSON instead of writing the page.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: crate::S3Args,
}

pub(crate) fn run(a: ReportArgs) -> Result<()> {
    let rt = crate::runtime(crate::default_threads(None))?;
    let s3 = a.s3.settings();
    rt.block_on(async {
        let subject = Subject::read(&a.uri, &s3)
            .await
            .with_context(|| format!("reading {}", a.uri))?;
        let compare = match &a.compare {
            Some(uri) => Some(
                Subject::read(uri, &s3)
                    .await
                    .with_context(|| format!("reading {uri}"))?,
            ),
            None => None,
        };
        let (figures, thumbs) = report(&subject, compare.as_ref(), &s3).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&figures)?);
            return Ok(());
        }
        let at = &subject.home;
        write_page(at, &figures, &thumbs).await?;
        let c = &figures.checks;
        println!("wrote {}/_report.html", at.uri());
        println!(
            "{} photos checked in {:.1} s: {} exact-duplicate groups, {} with a near-duplicate ({:.1} %), {} near-duplicate pairs with different labels, {} suspected mislabels",
            c.checked,
            c.seconds,
            c.exact_duplicates.len(),
            c.near_duplicates.photos,
            100.0 * c.near_duplicates.share,
            c.near_duplicates.cross_label.len(),
            c.mislabels.len()
        );
        if let Some(l) = &c.leakage {
            println!(
                "leakage: {} of {} photos of {} ({:.1} %) have a near-duplicate here",
                l.leaking,
                l.photos,
                l.compare,
                100.0 * l.share
            );
        }
        Ok(())
    })
}
