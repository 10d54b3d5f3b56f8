//! `sid2 info`: the resolved config and what the network costs.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use model3d::network::cost;

use crate::config::RunConfig;
use crate::globals::Globals;
use crate::run::RunDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A config file.
    #[arg(long, group = "what")]
    pub config: Option<PathBuf>,
    /// A run folder (its saved config).
    #[arg(long, group = "what")]
    pub run: Option<PathBuf>,
    /// Override a config key, e.g. `--set model.temporal=[true,true,false]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let config = match (&args.config, &args.run) {
        (Some(c), _) => RunConfig::load(c, &args.overrides)?,
        (_, Some(r)) => RunConfig::parse(&RunDir::new(r).load_config()?.to_toml(), &args.overrides).with_context(|| format!("--set on run {}", r.display()))?,
        _ => bail!("give --config or --run"),
    };
    print!("{}", describe(&config));
    println!("# device: {}", globals.device_name()?);
    Ok(())
}

/// The config as TOML, followed by parameter and FLOP counts as comments.
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
