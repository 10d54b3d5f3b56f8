//! Prints the noise schedule and the loss weights a config trains with, per noise level:
//! `cargo run --example schedule_table -- configs/imagenet256.toml`.
//!
//! Useful when choosing the sigmoid bias and the schedule shift for a new resolution (method.md §1.4,
//! §2.3): the v-space weight column is what multiplies ‖v − v̂‖² in training.

use model3d::schedule::alpha_sigma;
use pipeline::config::RunConfig;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "configs/k600_64.toml".into());
    let config = RunConfig::load(std::path::Path::new(&path), &[])?;
    let diffusion = config.diffusion.build(config.data.frames, config.data.size)?;
    println!("{path}: {}x{} frames, {:?}", config.data.size, config.data.size, diffusion.weighting);
    println!("{:>5} {:>8} {:>7} {:>7} {:>9} {:>10} {:>10}", "t", "logSNR", "alpha", "sigma", "-dλ/dt", "w_eps", "w_v");
    for i in 0..=20 {
        let t = (i as f64 / 20.0).clamp(0.005, 0.995);
        let (l, d) = (diffusion.schedule.logsnr(t), diffusion.schedule.dlogsnr_dt(t));
        let (a, s) = alpha_sigma(l);
        println!(
            "{t:5.3} {l:8.3} {a:7.4} {s:7.4} {:9.3} {:10.4} {:10.4}",
            -d,
            diffusion.weighting.eps_weight(l, d),
            diffusion.weighting.v_weight(l, d)
        );
    }
    Ok(())
}
