//! Model-alone throughput: `cargo bench -p fruits-model --bench forward -- [THREADS] [BATCH] [SECONDS]`.
//!
//! Needs the weights (`$FRUITS_WEIGHTS`, or `../shared/models/mobilenet_v2_1.0_224`); prints the
//! median images/s of 5 timed runs on random inputs in `[-1, 1]`.

use std::time::Instant;

use fruits_model::{MobileNetV2, Tensors, FEATURES, INPUT_LEN};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, d: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (threads, batch, secs) = (arg(0, 2.0) as usize, arg(1, 32.0) as usize, arg(2, 3.0));
    let path = std::env::var("FRUITS_WEIGHTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/models/mobilenet_v2_1.0_224"
        )
        .into()
    });
    let net = match Tensors::read(std::path::Path::new(&path))
        .and_then(|t| MobileNetV2::from_tensors(&t))
    {
        Ok(net) => net,
        Err(e) => {
            eprintln!("SKIP: model bench needs the weights ({e})");
            return;
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
    rates.sort_by(f64::total_cmp);
    println!(
        "fruits model alone: {:.1} images/s (threads {threads}, batch {batch})",
        rates[2]
    );
}
