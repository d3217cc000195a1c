"""EditResult: one edit's images, latents, metrics and settings, and their saved form.

`EditResult.save` is the only writer of `latents.pt` and `EditResult.load` its only reader. The file
is a `torch.save` dict read with `weights_only=True`:

- format 4: format 3 and `regions`, a list of {"prompt": {"texts", "weights"}, "mask": [1, 1, R, R]},
  one per region of an edit of several regions; such an edit's layer holds K latents ([K, ...]) and a
  K-channel mask ([1, K, R, R]). Written only for results with such a layer, so that a pbw reading only
  format 3 refuses them; every other result is written as before;
- format 3: format 2 and `generator_file`, the name of a file next to latents.pt (`generator.pt`:
  a `torch.save`d dict of parameter name -> tensor) holding the generator weights a photo was
  projected with (pivotal tuning; `EditResult.generator_state`). Written only for results that carry
  tuned weights, so that a pbw reading only format 2 refuses them (it would replay them with the wrong
  weights); every other result is still written as format 2;
- format 2: `format_version`, `name`, `prompt`, `codes`, `w0`, `space`, `latents`,
  `mask`, `layers`, `source`, `original`, `edited`, `metrics`, `settings`, `notes`;
- format 1 (before the version field): pbw-edit wrote `codes`, `w0`, `latents`, `mask`; the app
  added `layers`, a list of (W+ latent, mask) pairs. Loading these needs the generator, which
  re-renders their images.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import save_image

from pbw.data.common import to01
from pbw.editing.figures import comparison_image
from pbw.editing.masks import mask_overlay
from pbw.models.maskable import Codes, MaskableGenerator, resize_mask

FORMAT_VERSION = 4
GENERATOR_FILE = "generator.pt"


@dataclass
class Layer:
    """One masked edit painted over an image: latents in `space` acting inside `mask` ([1, 1, R, R]).
    An edit of K regions: K latents ([K, ...]) and a K-channel mask ([1, K, R, R]), one each."""

    space: str
    latents: dict[str, torch.Tensor]
    mask: torch.Tensor

    @property
    def regions(self) -> int:
        return self.mask.shape[1]


@dataclass
class EditResult:
    """An image and how it was made.

    `codes` and `w0` are the image's codes and decode latent outside any painted layer (for a
    whole-image edit: the optimized ones); `layers` are the masked edits painted over it since, in
    order, the last one being this edit's (empty for a start image or a whole-image edit).
    `original` and `edited` are [1, 3, R, R] in [-1, 1] on the CPU; `mask` is this edit's mask
    (None: whole image or no edit). `source` is "sample" (decode(w0) with the layers) or "photo"
    (a projected photo, whose pixels are kept outside every mask). `generator_state`: the generator
    weights that differ from the checkpoint's (a photo projected with pivotal tuning, and every edit
    of it), or None; `tuned_generator` applies them. An edit of several regions: `regions` holds each
    region's prompt ({"texts", "weights"}) and mask ([1, 1, R, R]), in order; `prompt` is all their
    words together and `mask` the union of their masks (empty `regions`: a one-region edit)."""

    codes: Codes
    w0: torch.Tensor
    original: torch.Tensor
    edited: torch.Tensor
    name: str = ""
    prompt: dict | None = None  # {"texts": [...], "weights": [...]}; None: no edit (a start image)
    space: str | None = None
    latents: dict[str, torch.Tensor] = field(default_factory=dict)
    mask: torch.Tensor | None = None
    layers: list[Layer] = field(default_factory=list)
    source: str = "sample"
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    generator_state: dict[str, torch.Tensor] | None = None
    regions: list[dict] = field(default_factory=list)

    # ---- continuing from a result ---------------------------------------------------------------
    def as_base(self) -> tuple[Codes, torch.Tensor, torch.Tensor | None]:
        """(codes, w0, image to keep outside the next mask, or None when it is just decode(w0))."""
        kept = self.edited if self.layers or self.source == "photo" else None
        return self.codes, self.w0, kept

    def tuned_generator(self, generator: MaskableGenerator) -> MaskableGenerator:
        """The generator this result's images come from: `generator` itself, or a copy of it with the
        tuned weights of `generator_state`."""
        return generator if self.generator_state is None else apply_generator_state(generator, self.generator_state)

    # ---- saved form -----------------------------------------------------------------------------
    def comparison(self) -> Image.Image:
        """The labelled strip original | mask (its overlay, masked edits only) | edited, each panel
        upscaled to at least 256 px, with the prompt as caption."""
        panels = [("original", to01(self.original))]
        if self.mask is not None:
            overlay = mask_overlay(self.original, resize_mask(self.mask.float(), self.original.shape[-1]))
            panels.append(("mask", to01(overlay)))
        panels.append(("edited", to01(self.edited)))
        if self.regions:
            caption = "edited: " + "; ".join(
                f"{prompt_text(r['prompt'])} in region {i + 1}" for i, r in enumerate(self.regions)
            )
        else:
            caption = f"edited: {prompt_text(self.prompt)}" if self.prompt else None
        return comparison_image(panels, caption=caption)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write original.png, edited.png, mask.png (edits with a mask; these three at the native size),
        comparison.png (`comparison`), metrics.json, latents.pt and, with tuned generator weights,
        generator.pt into `folder`; returns their paths by name."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {name: folder / f"{name}.png" for name in ("original", "edited", "comparison")}
        save_image(to01(self.original), files["original"])
        save_image(to01(self.edited), files["edited"])
        if self.mask is not None:
            files["mask"] = folder / "mask.png"
            save_image(self.mask.float().cpu(), files["mask"])
        self.comparison().save(files["comparison"])
        files["metrics"] = folder / "metrics.json"
        files["metrics"].write_text(
            json.dumps(
                {
                    "name": self.name,
                    "prompt": (self.prompt or {}).get("texts"),
                    "prompt_weights": (self.prompt or {}).get("weights"),
                    "space": self.space,
                    "metrics": self.metrics,
                    "notes": self.notes,
                    "settings": self.settings,
                    "history": self.history,
                    **({"regions": [r["prompt"] for r in self.regions]} if self.regions else {}),
                },
                indent=2,
            )
        )
        files["latents"] = folder / "latents.pt"
        cpu = lambda d: {k: v.detach().cpu() for k, v in d.items()}  # noqa: E731
        tuned = {}
        if self.generator_state is not None:
            files["generator"] = folder / GENERATOR_FILE
            torch.save(cpu(self.generator_state), files["generator"])
            tuned = {"generator_file": GENERATOR_FILE}
        regions = {}
        if self.regions or any(ly.regions > 1 for ly in self.layers):
            regions = {"regions": [{"prompt": r["prompt"], "mask": r["mask"].cpu()} for r in self.regions]}
        torch.save(
            {
                "format_version": 4 if regions else 3 if tuned else 2,
                **tuned,
                **regions,
                "name": self.name,
                "prompt": self.prompt,
                "codes": cpu(self.codes),
                "w0": self.w0.cpu(),
                "space": self.space,
                "latents": cpu(self.latents),
                "mask": None if self.mask is None else self.mask.cpu(),
                "layers": [
                    {"space": ly.space, "latents": cpu(ly.latents), "mask": ly.mask.cpu()} for ly in self.layers
                ],
                "source": self.source,
                "original": self.original.cpu(),
                "edited": self.edited.cpu(),
                "metrics": self.metrics,
                "settings": self.settings,
                "notes": self.notes,
            },
            files["latents"],
        )
        return files

    @classmethod
    def load(
        cls, path: str | Path, generator: MaskableGenerator | None = None, generator_file: str | Path | None = None
    ) -> EditResult:
        """Read a result folder or its latents.pt (any format since the first release). With a
        `generator`, check that the file belongs to it; files of format 1 need it (their images are
        re-rendered). Tuned generator weights (format 3) are read from the generator.pt next to
        latents.pt, or from `generator_file` (e.g. an upload stored elsewhere)."""
        path = Path(path)
        file = path / "latents.pt" if path.is_dir() else path
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{file} is not a saved edit (latents.pt from pbw's app or pbw-edit): {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("codes"), dict) or not torch.is_tensor(data.get("w0")):
            raise ValueError(
                f"{file} is not a saved edit: it needs 'codes' and 'w0' (as in latents.pt from pbw's app or pbw-edit)"
            )
        version = data.get("format_version", 1)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{file} was written by a newer pbw (format {version}; this one reads up to "
                f"{FORMAT_VERSION}): upgrade pbw"
            )
        if generator is not None:  # before format 1's images are re-rendered with it
            check_fits(data["codes"], data["w0"], generator, file.name, data.get("edited"))
        state = None
        if data.get("generator_file"):
            gfile = Path(generator_file) if generator_file else file.parent / Path(str(data["generator_file"])).name
            try:
                state = torch.load(gfile, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ValueError(
                    f"{file} was projected with tuned generator weights, which should be in {gfile}: {e}"
                ) from e
        if version == 1:
            if generator is None:
                raise ValueError(
                    f"{file} is an edit saved by an older pbw: load it with the generator, which re-renders its images"
                )
            return _from_format_1(data, generator)
        return cls(
            codes=data["codes"],
            w0=data["w0"],
            original=data["original"],
            edited=data["edited"],
            name=data.get("name", ""),
            prompt=data.get("prompt"),
            space=data.get("space"),
            latents=data.get("latents", {}),
            mask=data.get("mask"),
            layers=[Layer(**ly) for ly in data.get("layers", [])],
            source=data.get("source", "sample"),
            metrics=data.get("metrics", {}),
            settings=data.get("settings", {}),
            notes=data.get("notes", []),
            generator_state=state,
            regions=data.get("regions", []),
        )


def prompt_text(prompt: dict) -> str:
    """A result's prompt as text: '"a red head"::2 | "a crown" | "blurry"::-1' (weights other than 1 shown)."""
    return " | ".join(
        f'"{t}"' + ("" if w == 1 else f"::{w:g}") for t, w in zip(prompt["texts"], prompt["weights"], strict=True)
    )


def generator_copy(generator: MaskableGenerator) -> MaskableGenerator:
    """A deep copy of `generator` that shares its discriminator (which tuning never changes)."""
    d = generator.discriminator
    generator.discriminator = None
    try:
        out = copy.deepcopy(generator)
    finally:
        generator.discriminator = d
    out.discriminator = d
    return out


def apply_generator_state(generator: MaskableGenerator, state: dict[str, torch.Tensor]) -> MaskableGenerator:
    """A copy of `generator` (on its device, in eval mode, frozen) with the parameters in `state` replaced;
    a ValueError names what does not fit."""
    out = generator_copy(generator).eval().requires_grad_(False)
    params = dict(out.named_parameters())
    bad = [k for k, v in state.items() if k not in params or tuple(params[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(
            f"the tuned generator weights do not fit this {type(generator).__name__}: "
            f"{len(bad)} of {len(state)} tensors (e.g. {bad[0]!r}) have no parameter of that name and shape"
        )
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
    return out


def check_fits(
    codes: Codes, w0: torch.Tensor, generator: MaskableGenerator, name: str, image: torch.Tensor | None = None
) -> None:
    """Raise a ValueError naming both shapes when `codes`, `w0` (and `image`) are not of `generator`."""
    probe = generator.sample(1, seed=0)
    with torch.no_grad():
        w_shape = tuple(generator.encode(probe).shape)
    forms = {k: {tuple(v.shape)} for k, v in probe.items()}
    for k, v in generator.continuous_codes(probe).items():
        forms[k].add(tuple(v.shape))
    got = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in codes.items()}
    res = generator.resolution
    fits = (
        got.keys() == forms.keys()
        and all(got[k] in forms[k] for k in got)
        and tuple(w0.shape) == w_shape
        and (image is None or image.shape[-1] == res)
    )
    if not fits:
        raise ValueError(
            f"{name} is not an image of this generator: it has codes {got} and w0 "
            f"{tuple(w0.shape)}; this generator needs codes "
            f"{ {k: ' or '.join(map(str, f)) for k, f in forms.items()} } and w0 {w_shape}"
        )


@torch.no_grad()
def render_layers(
    generator: MaskableGenerator, codes: Codes, w0: torch.Tensor, layers: list[Layer], base: torch.Tensor | None = None
) -> torch.Tensor:
    """The image of `w0` (or the kept `base` pixels) with `layers` painted over it in order, exactly as
    the edits rendered them: each layer decodes its latent inside its mask (w0 outside), and from the
    second layer on (or over a kept base) is pasted over the image so far through its mask (a layer of
    several regions: through the union of its masks)."""
    dev = w0.device
    codes = {k: v.to(dev) for k, v in codes.items()}
    x = generator.decode(w0, cond=codes) if base is None else base.to(dev)
    for i, layer in enumerate(layers):
        k = layer.regions
        rep = {n: v.repeat_interleave(k, 0) for n, v in codes.items()}
        w, cond = generator.from_space({n: v.to(dev) for n, v in layer.latents.items()}, layer.space, rep)
        if k > 1:  # one decode latent per region
            w, cond = list(w.unbind(0)), codes
            w = [v.unsqueeze(0) for v in w]
        mask = layer.mask.to(dev)
        xl = generator.decode(w, w0, mask, cond=cond)
        if i == 0 and base is None:
            x = xl
        else:
            m = resize_mask(mask.amax(1, keepdim=True), xl.shape[-1])
            x = xl * m + x * (1 - m)
    return x


def _from_format_1(data: dict, generator: MaskableGenerator) -> EditResult:
    """A latents.pt written before format versions: pbw-edit's single edit or the app's layered history."""
    dev = next(generator.parameters()).device
    codes = {k: v.to(dev) for k, v in data["codes"].items()}
    w0 = data["w0"].to(dev).float()
    latents, mask = data.get("latents", {}), data.get("mask")
    if "layers" in data:  # the app: codes and w0 of the history's base, W+ layers painted over it
        layers = [Layer("wplus" if w.ndim == 3 else "w", {"w": w.float()}, m.float()) for w, m in data["layers"]]
    elif "w" in latents and mask is not None and bool((mask < 1).any()):  # pbw-edit: one masked edit
        layers = [Layer("wplus" if latents["w"].ndim == 3 else "w", {"w": latents["w"].float()}, mask.float())]
    else:  # pbw-edit: a whole-image edit (its optimized codes or latent)
        codes.update({k: v.to(dev) for k, v in latents.items() if k != "w"})
        w0 = latents["w"].to(dev).float() if "w" in latents else generator.encode(codes)
        layers = []
    original = generator.decode(w0, cond=codes)
    edited = render_layers(generator, codes, w0, layers)
    return EditResult(
        codes={k: v.cpu() for k, v in codes.items()},
        w0=w0.cpu(),
        original=original.cpu(),
        edited=edited.cpu(),
        layers=layers,
        mask=layers[-1].mask if layers else None,
        space=layers[-1].space if layers else None,
        notes=["loaded from a format-1 latents.pt"],
    )
