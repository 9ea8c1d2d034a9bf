//! The report as one HTML page.

use std::fmt::Write;

use base64::Engine as _;

use crate::charts::{class_bars, class_colour, hex, projection, variance_curve};
use crate::{Report, ReportError, Similar, Thumbnails, SHOWN_PER_CHECK};

const STYLE: &str = "body{font-family:sans-serif;margin:0 auto;max-width:860px;padding:12px;color:#222}\
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}\
table{border-collapse:collapse}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.grid{display:flex;flex-wrap:wrap;gap:8px}.cell{width:96px;font-size:11px;text-align:center;word-wrap:break-word}\
.cell img,.pair img{width:64px;height:64px;object-fit:contain;background:#eee;display:block}.cell img{margin:0 auto}\
.pair{display:flex;gap:6px;align-items:center;font-size:12px;margin:6px 0}.pair span{max-width:300px;word-wrap:break-word}\
.sw{display:inline-block;width:10px;height:10px;margin-right:4px}\
.legend{columns:3;font-size:11px;list-style:none;padding:0}.note{color:#666;font-size:0.9em}\
svg{max-width:100%;height:auto}";

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The last two segments of a URI (class folder and file), as people name a photo.
fn short(uri: &str) -> &str {
    let mut cut = uri.len();
    for _ in 0..2 {
        match uri[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return uri,
        }
    }
    &uri[cut + 1..]
}

fn img(thumbs: &Thumbnails, uri: &str) -> String {
    match thumbs.get(uri) {
        Some(jpeg) => format!(
            "<img alt=\"{}\" src=\"data:image/jpeg;base64,{}\">",
            esc(short(uri)),
            base64::engine::general_purpose::STANDARD.encode(jpeg)
        ),
        None => format!("<img alt=\"{} (not readable)\">", esc(short(uri))),
    }
}

fn pct(share: f64) -> String {
    format!("{:.1} %", 100.0 * share)
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report, thumbs: &Thumbnails) -> Result<String, ReportError> {
    let mut h = String::new();
    let w = &mut h;
    let run = &r.run;
    let _ = write!(
        w,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>fruits report: {}</title><style>{STYLE}</style></head><body>\
         <h1>fruits report</h1><p class=\"note\">{}</p>",
        esc(&r.result),
        esc(&r.result)
    );
    // The run.
    let _ = write!(w, "<h2>The run</h2><table>");
    let workers = run
        .workers
        .iter()
        .map(|(k, v)| format!("{} ({v})", esc(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: [(&str, String); 10] = [
        ("input", esc(&run.input)),
        ("output", esc(&run.output)),
        ("engine", esc(&run.engine)),
        ("workers (photos)", workers),
        ("photos listed", run.images.to_string()),
        ("rows written", run.rows.to_string()),
        ("skipped", run.skipped.to_string()),
        ("classes", run.classes.to_string()),
        (
            "PCA",
            format!(
                "k = {}, {} of the variance kept",
                run.k,
                pct(run.variance_kept)
            ),
        ),
        (
            "weights",
            esc(run.weights.as_deref().unwrap_or("not recorded")),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(w, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let _ = write!(w, "</table><h3>Stage times</h3><table>");
    for (stage, s) in &run.stages {
        let _ = write!(
            w,
            "<tr><th>{}</th><td class=\"n\">{s:.2} s</td></tr>",
            esc(stage)
        );
    }
    let _ = write!(
        w,
        "<tr><th>photos per second</th><td class=\"n\">{:.1}</td></tr></table>",
        run.images_per_second
    );
    if !r.skipped.is_empty() {
        let _ = write!(w, "<h3>Skipped photos</h3><table><tr><th>reason</th><th>photos</th><th>for example</th></tr>");
        for s in &r.skipped {
            let _ = write!(
                w,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&s.reason),
                s.photos,
                esc(short(&s.example))
            );
        }
        let _ = write!(w, "</table>");
    }
    // Classes.
    let _ = write!(w, "<h2>Photos per class</h2>{}", class_bars(&r.classes)?);
    let _ = write!(w, "<div class=\"grid\">");
    for c in &r.classes {
        let pic = c
            .example
            .as_deref()
            .map(|e| img(thumbs, e))
            .unwrap_or_default();
        let _ = write!(
            w,
            "<div class=\"cell\">{pic}{} ({})</div>",
            esc(&c.label),
            c.photos
        );
    }
    let _ = write!(w, "</div>");
    // PCA.
    let _ = write!(
        w,
        "<h2>Explained variance</h2>{}",
        variance_curve(&r.explained_variance_ratio, run.k)?
    );
    let _ = write!(w, "<h2>The photos on the first two components</h2>");
    if r.projection.points.len() < r.projection.of {
        let _ = write!(
            w,
            "<p class=\"note\">An even sample of {} of the {} photos.</p>",
            r.projection.points.len(),
            r.projection.of
        );
    }
    let _ = write!(
        w,
        "{}<ul class=\"legend\">",
        projection(&r.projection, r.classes.len())?
    );
    for (i, c) in r.classes.iter().enumerate() {
        let _ = write!(
            w,
            "<li><span class=\"sw\" style=\"background:{}\"></span>{}</li>",
            hex(class_colour(i, r.classes.len())),
            esc(&c.label)
        );
    }
    let _ = write!(w, "</ul>");
    checks(w, r, thumbs);
    let _ = write!(w, "</body></html>");
    Ok(h)
}

fn pair(w: &mut String, thumbs: &Thumbnails, s: &Similar) {
    let _ = write!(
        w,
        "<div class=\"pair\">{}{}<span>{} <b>{}</b><br>{} <b>{}</b><br>cosine {:.4}</span></div>",
        img(thumbs, &s.a),
        img(thumbs, &s.b),
        esc(short(&s.a)),
        esc(&s.label_a),
        esc(short(&s.b)),
        esc(&s.label_b),
        s.cosine
    );
}

fn checks(w: &mut String, r: &Report, thumbs: &Thumbnails) {
    let c = &r.checks;
    let n = SHOWN_PER_CHECK;
    let nd = &c.near_duplicates;
    let _ = write!(
        w,
        "<h2 id=\"checks\">Data checks</h2><p class=\"note\">{} Took {:.1} s.</p><table>\
         <tr><th>exact duplicates (same bytes)</th><td class=\"n\">{} group(s), {} photos</td></tr>\
         <tr><th>photos with a near-duplicate (cosine &ge; {})</th><td class=\"n\">{} ({})</td></tr>\
         <tr><th>near-duplicate pairs with different labels</th><td class=\"n\">{}</td></tr>\
         <tr><th>suspected mislabels ({} of {} nearest agree on another label)</th><td class=\"n\">{}</td></tr>",
        esc(&c.method),
        c.seconds,
        c.exact_duplicates.len(),
        c.exact_duplicates.iter().map(Vec::len).sum::<usize>(),
        c.settings.near_duplicate_cosine,
        nd.photos,
        pct(nd.share),
        nd.cross_label.len(),
        c.settings.mislabel_agreeing,
        c.settings.mislabel_neighbours,
        c.mislabels.len()
    );
    if let Some(l) = &c.leakage {
        let _ = write!(
            w,
            "<tr><th>photos of {} with a near-duplicate here</th><td class=\"n\">{} of {} ({})</td></tr>",
            esc(&l.compare),
            l.leaking,
            l.photos,
            pct(l.share)
        );
    }
    let _ = write!(w, "</table>");
    let _ = write!(
        w,
        "<p class=\"note\">A near-duplicate is a photo whose features have a cosine similarity \
         of at least {} with another's: on Fruits-360, neighbouring frames of one turntable \
         run, never two different fruits. A suspected mislabel is a photo whose nearest \
         neighbours mostly carry another label. Leakage: photos of a second result (a test \
         set) with a near-duplicate in this one (the training set) make its accuracy look \
         better than it is.</p>",
        c.settings.near_duplicate_cosine
    );
    if !c.exact_duplicates.is_empty() {
        let _ = write!(w, "<h3>Exact duplicates</h3>");
        for g in c.exact_duplicates.iter().take(n) {
            let _ = write!(w, "<div class=\"pair\">");
            for p in g.iter().take(4) {
                let _ = write!(w, "{}", img(thumbs, p));
            }
            let names: Vec<String> = g.iter().map(|p| esc(short(p))).collect();
            let _ = write!(w, "<span>{}</span></div>", names.join("<br>"));
        }
    }
    if !c.mislabels.is_empty() {
        let _ = write!(w, "<h3>Suspected mislabels</h3>");
        for s in c.mislabels.iter().take(n) {
            let _ = write!(
                w,
                "<div class=\"pair\">{}<span>{}<br>labelled <b>{}</b>, {} of {} neighbours say <b>{}</b> (cosine {:.3})</span></div>",
                img(thumbs, &s.path),
                esc(short(&s.path)),
                esc(&s.label),
                s.agreeing,
                c.settings.mislabel_neighbours,
                esc(&s.suggested),
                s.cosine
            );
        }
    }
    if !nd.cross_label.is_empty() {
        let _ = write!(w, "<h3>Near-duplicates with different labels</h3>");
        for s in r.shown_cross_label() {
            pair(w, thumbs, s);
        }
    }
    if let Some(l) = &c.leakage {
        if !l.pairs.is_empty() {
            let _ = write!(w, "<h3>Leaking photos</h3>");
            for p in l.pairs.iter().take(n) {
                let _ = write!(
                    w,
                    "<div class=\"pair\">{}{}<span>{} (compared)<br>{} (here)<br>cosine {:.4}</span></div>",
                    img(thumbs, &p.test),
                    img(thumbs, &p.train),
                    esc(short(&p.test)),
                    esc(short(&p.train)),
                    p.cosine
                );
            }
        }
    }
    if !nd.closest.is_empty() {
        let _ = write!(w, "<h3>The closest near-duplicates of one label</h3>");
        for s in nd.closest.iter().take(n) {
            pair(w, thumbs, s);
        }
    }
    if c.mislabels.len() > n || nd.cross_label.len() > n {
        let _ = write!(
            w,
            "<p class=\"note\">The first {n} of each are shown; <code>fruits report --json</code> names every one.</p>"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_photos_are_named_by_folder_and_file() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(short("s3://b/in/Kiwi/1.jpg"), "Kiwi/1.jpg");
        assert_eq!(short("x.jpg"), "x.jpg");
    }
}
