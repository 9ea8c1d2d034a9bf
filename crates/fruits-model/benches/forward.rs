//! Model-alone throughput, side by side with ONNX Runtime in the same run.
//!
//! ```text
//! cargo bench -p fruits-model --bench forward -- [THREADS] [BATCH] [SECONDS] [ROUNDS]
//! ```
//!
//! Needs the weights (`$FRUITS_WEIGHTS`, else `../shared/models/mobilenet_v2_1.0_224`) and
//! prints our images/s on random inputs in `[-1, 1]`: the median of 5 timed runs per round.
//! With `FRUITS_ORT_PYTHON` (a Python that has `onnxruntime`) and `FRUITS_ORT_MODEL` (the
//! model exported by `../shared/anchors/export_onnx.py`), each round also times ONNX Runtime
//! at batch 1 and at batch 32 with the same threads (`../shared/anchors/ort_bench.py`),
//! alternating with ours so both see the same machine, and the ratio to ORT's better batch.

use std::process::Command;
use std::time::Instant;

use fruits_model::{MobileNetV2, FEATURES, INPUT_LEN};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, d: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (threads, batch) = (arg(0, 2.0) as usize, arg(1, 32.0) as usize);
    let (secs, rounds) = (arg(2, 3.0), arg(3, 1.0) as usize);
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");
    let path = std::env::var("FRUITS_WEIGHTS")
        .unwrap_or_else(|_| format!("{shared}/models/mobilenet_v2_1.0_224"));
    let net = match fruits_weights::read(std::path::Path::new(&path))
        .and_then(|t| MobileNetV2::from_tensors(&t).map_err(Into::into))
    {
        Ok(net) => net,
        Err(e) => {
            eprintln!("SKIP: the model bench needs the weights ({e})");
            return;
        }
    };
    let ort = match (
        std::env::var("FRUITS_ORT_PYTHON"),
        std::env::var("FRUITS_ORT_MODEL"),
    ) {
        (Ok(python), Ok(model)) => Some((python, model, format!("{shared}/anchors/ort_bench.py"))),
        _ => {
            eprintln!("(set FRUITS_ORT_PYTHON and FRUITS_ORT_MODEL to time ONNX Runtime too)");
            None
        }
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let x: Vec<f32> = (0..batch * INPUT_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let mut y = vec![0.0f32; batch * FEATURES];
    net.forward(&x, &mut y, threads);

    let (mut ours, mut ort1, mut ort32) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut rates: Vec<f64> = (0..5)
            .map(|_| {
                let (mut n, t) = (0, Instant::now());
                while t.elapsed().as_secs_f64() < secs {
                    net.forward(&x, &mut y, threads);
                    n += batch;
                }
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        ours.push(median(&mut rates));
        print!(
            "round {round}: fruits {:.1} images/s (threads {threads}, batch {batch})",
            ours[round - 1]
        );
        if let Some((python, model, script)) = &ort {
            let time = |b: usize| -> Option<f64> {
                let out = Command::new(python)
                    .args([
                        script,
                        model,
                        &b.to_string(),
                        &threads.to_string(),
                        &secs.to_string(),
                    ])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            };
            match (time(1), time(32)) {
                (Some(a), Some(b)) => {
                    ort1.push(a);
                    ort32.push(b);
                    print!("; onnxruntime {a:.1} (batch 1), {b:.1} (batch 32)");
                }
                _ => print!("; onnxruntime failed to run: check FRUITS_ORT_PYTHON/MODEL"),
            }
        }
        println!();
    }
    let ours = median(&mut ours);
    println!("fruits model alone: {ours:.1} images/s (threads {threads}, batch {batch}; median of {rounds} rounds)");
    if !ort1.is_empty() {
        let (a, b) = (median(&mut ort1), median(&mut ort32));
        println!(
            "onnxruntime: {a:.1} images/s at batch 1, {b:.1} at batch 32; fruits / best = {:.2}x",
            ours / a.max(b)
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
