//! `sid2 info`: the resolved config and what the network costs.

use model3d::network::cost;

use crate::config::RunConfig;

pub fn describe(config: &RunConfig) -> String {
    let c = cost(&config.model, [config.data.frames, config.data.size, config.data.size]);
    let per = if config.data.frames > 1 { "clip" } else { "image" };
    format!(
        "{}\n# parameters: {} ({:.1} M)\n# forward: {:.2} GFLOP per {per} ({:.1}% in attention matmuls)\n# training: {:.2} GFLOP per {per} (forward + backward)\n",
        config.to_toml(),
        c.params,
        c.params as f64 / 1e6,
        c.forward_flops / 1e9,
        100.0 * c.attention_flops / c.forward_flops,
        c.train_flops() / 1e9,
    )
}
