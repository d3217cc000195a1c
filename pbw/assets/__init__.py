"""The bundled miniature models (no download): a 64 px StyleGAN2, a 64 px species-conditional BigGAN
and a tiny CLIP, all trained on the synthetic birds (`pbw.data.synthetic`). `lab/retrain_mini.sh`
retrains and re-bundles them.

Also the mini world's judges, trained on real synthetic birds only (no generator involved): the
yardstick (species / part-color classifier and FID/KID features, `pbw.evaluation.yardstick`) and the
part segmenter (part masks and the bird rate, `pbw.evaluation.segmenter`); each retrains in minutes with
``python -m pbw.evaluation.<yardstick|segmenter> train --out <its path here>``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

MINI_DIR = Path(__file__).resolve().parent / "mini"
GENERATOR_FILES = {"stylegan2": "stylegan2.ckpt", "biggan": "biggan.ckpt"}
CLIP_DIR = "clip"
CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")
#: the edit settings each bundled generator carries in its checkpoint (`MaskableGenerator.edit_settings`), as
#: measured with configs/reproduce/mini.yaml (pixel oracle, 128 masked edits a row): StyleGAN2 masked edits
#: 0.85 at lr 0.4, 0.91 at 0.8, 0.91 at 1.6; its text to image 0.86 at 0.05, 0.55 at 0.4; BigGAN masked
#: edits 0.31 at 0.05, 0.48 at 0.4
MINI_EDIT_SETTINGS = {
    "stylegan2": {"masked": {"lr": 0.8}, "whole": {"lr": 0.05}},
    "biggan": {"masked": {"lr": 0.4}, "whole": {"lr": 0.05}},
}
JUDGE_FILES = {
    "yardstick": "yardstick.safetensors",
    "segmenter": "segmenter.safetensors",
    "segmenter_masks": "segmenter_masks.safetensors",
}


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"the bundled mini model {path} is missing; rebuild it with lab/retrain_mini.sh "
        "(or `pbw-reproduce bundle LIGHTNING_CKPT CLIP_DIR`)"
    )


def mini_generator_path(family: str = "stylegan2") -> Path:
    """The bundled mini generator of `family` (stylegan2 or biggan): a pbw checkpoint with the EMA
    generator and the discriminator, in fp16."""
    if family not in GENERATOR_FILES:
        raise ValueError(f"no bundled mini {family!r} generator; choose one of {list(GENERATOR_FILES)}")
    path = MINI_DIR / GENERATOR_FILES[family]
    if not path.is_file():
        raise _missing(path)
    return path


def _judge_path(name: str) -> Path:
    path = MINI_DIR / JUDGE_FILES[name]
    if not path.is_file():
        module, flag = name.split("_")[0], " --no-negatives" if name.endswith("_masks") else ""
        raise FileNotFoundError(
            f"the bundled mini {name} {path} is missing; train it with "
            f"`python -m pbw.evaluation.{module} train --out {path}{flag}`"
        )
    return path


def mini_yardstick_path() -> Path:
    """The bundled yardstick: species / part-color classifier and FID/KID features of the mini world."""
    return _judge_path("yardstick")


def mini_segmenter_path(kind: str = "judge") -> Path:
    """A bundled part segmenter of the mini world: `judge` (the bird rate: it finds parts only in a whole,
    well-formed bird; trained with negatives) or `masks` (part masks: it finds the parts of anything
    bird-like, e.g. a generator's imperfect bird; trained on real birds only)."""
    if kind not in ("judge", "masks"):
        raise ValueError(f"segmenter kind must be 'judge' or 'masks', got {kind!r}")
    return _judge_path("segmenter" if kind == "judge" else "segmenter_masks")


def mini_clip_dir() -> Path:
    """The bundled tiny CLIP as an open_clip folder."""
    path = MINI_DIR / CLIP_DIR
    for name in CLIP_FILES:
        if not (path / name).is_file():
            raise _missing(path / name)
    return path


def mini_clip_spec() -> str:
    """The `--clip` spec of the bundled tiny CLIP: ``local-dir:<path>``."""
    return f"local-dir:{mini_clip_dir()}"


def resolve_generator_path(path: str | Path) -> Path:
    """A generator given by the user: a file, or `bundled:stylegan2` / `bundled:biggan` (the miniature's)."""
    path = str(path)
    if path.startswith("bundled:"):
        return mini_generator_path(path.removeprefix("bundled:"))
    return Path(path).expanduser()


def resolve_clip_spec(spec: str) -> str:
    """A CLIP spec given by the user: `bundled:clip` is the miniature's tiny CLIP (a local-dir: folder)."""
    return mini_clip_spec() if spec == "bundled:clip" else spec


def _bundle_generator(generator_ckpt: str | Path, target: Path, half: bool, family: str) -> None:
    from pbw.checkpoints import load_generator
    from pbw.checkpoints.core import save_pbw_checkpoint
    from pbw.checkpoints.loader import read_checkpoint

    imported = read_checkpoint(generator_ckpt)
    imported.edit_settings = MINI_EDIT_SETTINGS[family]
    if imported.discriminator is None:
        raise ValueError(f"{generator_ckpt} has no discriminator; the bundle needs it for the realism score")
    imported.generators = {k: v for k, v in imported.generators.items() if k == "generator_ema"} or imported.generators
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / target.name
        save_pbw_checkpoint(imported, full, source=Path(generator_ckpt).name)
        ckpt = torch.load(full, weights_only=True)
    if half:
        ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, target)
    load_generator(target)  # the bundle must read back


def bundle_mini(
    generator_ckpt: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path = MINI_DIR,
    half: bool = True,
    biggan_ckpt: str | Path | None = None,
) -> dict[str, int]:
    """Write the bundle from a trained StyleGAN2 checkpoint (any format `pbw.checkpoints` reads, e.g. a
    Lightning `last.ckpt`), an open_clip folder and, optionally, a trained BigGAN checkpoint. Only the
    EMA generators and the discriminators are kept (the raw generator is a training-only copy), stored
    in fp16 when `half` (the loader casts back to fp32), with their `MINI_EDIT_SETTINGS`. Returns the file
    sizes in bytes."""
    out_dir = Path(out_dir)
    (out_dir / CLIP_DIR).mkdir(parents=True, exist_ok=True)
    written = []
    for family, ckpt in (("stylegan2", generator_ckpt), ("biggan", biggan_ckpt)):
        if ckpt is not None:
            written.append(out_dir / GENERATOR_FILES[family])
            _bundle_generator(ckpt, written[-1], half, family)
    for name in CLIP_FILES:
        shutil.copyfile(Path(clip_dir) / name, out_dir / CLIP_DIR / name)
        written.append(out_dir / CLIP_DIR / name)
    return {str(p.relative_to(out_dir)): p.stat().st_size for p in written}
