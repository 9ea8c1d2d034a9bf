//! The exact nearest-neighbour search of the report's checks at 100,000 photos: on the full
//! 1280 features and on 473 PCA features (the `k` Fruits-360 Test keeps at 95 % variance).
//!
//! `cargo bench -p fruits-checks` (set `FRUITS_BENCH_ROWS` for another size).

use std::time::Instant;

fn main() {
    let n: usize = std::env::var("FRUITS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(fruits_checks::MAX_EXACT_ROWS);
    for dim in [1280, 473] {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let x: Vec<f32> = (0..n * dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        let t = Instant::now();
        let unit = fruits_checks::Unit::new(&x, dim);
        let nn = fruits_checks::nearest(&unit, &unit, 10, true);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(nn.of(0));
        println!(
            "nearest 10 of {n} rows x {dim}: {secs:.1} s on {} threads",
            rayon::current_num_threads()
        );
    }
}
