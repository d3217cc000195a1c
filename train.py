"""Train a pbw model: `pbw-train fit --config stylegan2/cub256.yaml --data.root DIR`.

Subcommands and options are LightningCLI's (`pbw-train --help`, `fit --print_config`);
resume a run with `--ckpt_path last` (or a checkpoint path).
"""

from pbw.cli import train_main

if __name__ == "__main__":
    train_main()
