//! `sid2 prepare`: decodes a folder of videos, an image folder or Kinetics-600 downloads into
//! checksummed shards, resumably, with a manifest of everything skipped or damaged.

use std::path::PathBuf;

use anyhow::{Result, bail};
use video_io::datasets::{image_folder, kinetics, read_class_list, read_kinetics_csv, video_folder};
use video_io::prepare::{MANIFEST, prepare};

use crate::config::RunConfig;
use crate::globals::Globals;
use crate::paths::{check_output_dir, existing_file, existing_folder};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run config whose [data] section says what clips to make.
    #[arg(long)]
    pub config: PathBuf,
    /// The shard folder to write (or to continue, when a run stopped part-way).
    #[arg(long)]
    pub out: PathBuf,
    /// A folder of videos (one subfolder per class, or videos directly inside).
    #[arg(long, group = "source")]
    pub videos: Option<PathBuf>,
    /// An ImageNet-style folder (one subfolder of images per class).
    #[arg(long, group = "source")]
    pub images: Option<PathBuf>,
    /// Kinetics annotations (label,youtube_id,time_start,time_end,split); needs --kinetics-root and --classes.
    #[arg(long, group = "source", requires_all = ["kinetics_root", "classes"])]
    pub kinetics_csv: Option<PathBuf>,
    /// Where the Kinetics clips were downloaded (<split>/<label>/<id>_<start>_<end>.mp4).
    #[arg(long)]
    pub kinetics_root: Option<PathBuf>,
    /// Class list, one name per line (e.g. label_map_k600.txt).
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Inputs decoded at a time.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()), value_parser = crate::globals::at_least_one)]
    pub workers: usize,
    /// Override a config key, e.g. `--set data.size=32`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let config = RunConfig::load(&args.config, &args.overrides)?;
    if args.images.is_none() && !video_io::FFMPEG {
        bail!(video_io::NO_FFMPEG);
    }
    for (flag, dir) in [("--videos", &args.videos), ("--images", &args.images), ("--kinetics-root", &args.kinetics_root)] {
        if let Some(dir) = dir {
            existing_folder(flag, dir)?;
        }
    }
    for (flag, file) in [("--kinetics-csv", &args.kinetics_csv), ("--classes", &args.classes)] {
        if let Some(file) = file {
            existing_file(flag, file)?;
        }
    }
    check_output_dir("--out", &args.out, |_| false, &[], false)?;
    let listing = match (&args.videos, &args.images, &args.kinetics_csv, &args.kinetics_root, &args.classes) {
        (Some(dir), ..) => video_folder(dir)?,
        (_, Some(dir), ..) => image_folder(dir)?,
        (_, _, Some(csv), Some(root), Some(classes)) => kinetics(root, &read_kinetics_csv(csv)?, read_class_list(classes)?)?,
        _ => bail!("give one of --videos, --images or --kinetics-csv (with --kinetics-root and --classes)"),
    };
    let report = prepare(&listing, &config.data, &args.out, args.workers, globals.progress)?;
    if report.total_records == 0 {
        bail!(
            "no clips were made: {} inputs skipped, {} missing (their reasons are in {})",
            report.skipped + listing.unreadable.len(),
            report.missing,
            args.out.join(MANIFEST).display()
        );
    }
    println!(
        "{} records in {} new shards ({} resumed); {} inputs skipped, {} damaged (clean clips kept), {} missing; manifest: {}",
        report.records,
        report.chunks_done,
        report.chunks_resumed,
        report.skipped + listing.unreadable.len(),
        report.damaged,
        report.missing,
        args.out.join(MANIFEST).display()
    );
    Ok(())
}
