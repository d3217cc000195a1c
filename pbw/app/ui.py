"""The Gradio page over `Painter`: pick an image, brush a region (or select a bird part), type words,
press Paint."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page: no calls home
import gradio as gr  # noqa: E402

from pbw.app.core import (  # noqa: E402
    PHOTO_TYPES,
    AppInputError,
    Painter,
    add_layer,
    describe,
    format_metrics,
    score_report,
    to_pil,
)
from pbw.data.synthetic import PARTS  # noqa: E402
from pbw.editing.masks import mask_overlay  # noqa: E402
from pbw.editing.module import OPTIMIZERS  # noqa: E402
from pbw.editing.project import reconstruction  # noqa: E402
from pbw.editing.result import EditResult  # noqa: E402

log = logging.getLogger(__name__)
DISPLAY = 384  # canvas side in pixels; strokes are area-averaged down to the generator's resolution
LAYERS = 4  # brush layers the page takes words for (Paint's words_2 .. words_4)
BRUSH = (26, 255, 77)  # the brush colour (RGB), also of a selected part
TINT = tuple(c / 255 for c in BRUSH)  # the painted region's tint in the before image
CSS = """
#status { font-size: 1.1em; padding: 0.6em 0.9em; border: 2px solid var(--color-accent); border-radius: 8px;
          min-height: 3em; }
"""


def _message(text: str, kind: str = "info") -> str:
    return {"info": "", "error": "**Error:** ", "input": "**Note:** "}[kind] + text


def _keep(message: str) -> tuple:
    """Leave everything but the status line as it is."""
    return (gr.skip(),) * 5 + (message, gr.skip())


class Handlers:
    """The page's event handlers; each returns the outputs of `view` (or leaves them and sets the status)."""

    def __init__(self, painter: Painter):
        self.painter = painter

    def view(self, history: list[EditResult], message: str = "") -> tuple:
        """Outputs for a history: (history, editor, before, after, metrics, status, files)."""
        if not history:
            return history, None, None, None, "", message, None
        cur = history[-1]
        editor = {"background": to_pil(cur.edited, DISPLAY), "layers": [], "composite": None}
        if len(history) == 1:  # a start; a projected photo shows its reconstruction beside it
            after = to_pil(reconstruction(cur, self.painter.generator), DISPLAY) if cur.source == "photo" else None
            return history, editor, to_pil(cur.edited, DISPLAY), after, "", message, None
        before = history[-2].edited
        if cur.mask is not None:  # a masked edit: tint the painted region
            before = mask_overlay(before, cur.mask, color=TINT)
        realism = self.painter.realism_percentile(cur.metrics["realism"]) if "realism" in cur.metrics else None
        lpips = self.painter.editor.preservation.lpips is not None
        return (
            history,
            editor,
            to_pil(before, DISPLAY),
            to_pil(cur.edited, DISPLAY),
            format_metrics(cur.metrics, realism, lpips, self.painter.barely_moved),
            message,
            self.painter.files(cur),
        )

    def canvas(self, history: list[EditResult]):
        """The canvas of the current image with no strokes (after the editor's clear button wiped it)."""
        if not history:
            return None
        return {"background": to_pil(history[-1].edited, DISPLAY), "layers": [], "composite": None}

    def step_size(self, whole_image: bool) -> float:
        return self.painter.step_size(bool(whole_image))

    def show_samples(self, seeds: str, class_label: float | None):
        try:
            starts = self.painter.samples(seeds, None if class_label in (None, "") else int(class_label))
        except AppInputError as e:
            return gr.skip(), gr.skip(), _message(str(e), "input")
        gallery = [(to_pil(s.edited, 128), s.name) for s in starts]
        return gallery, starts, f"{len(starts)} samples: click one to start painting."

    def pick(self, samples: list[EditResult], evt: gr.SelectData):
        start = samples[evt.index]
        return self.view([start], f"Started from {start.name}. Paint a region and press Paint.")

    def upload(self, path: str | None):
        if path is None:
            return _keep("")
        try:
            result = self.painter.load(path)
        except AppInputError as e:
            return _keep(_message(str(e), "input"))
        except Exception:  # e.g. an old file whose painted layers do not fit this generator
            log.error("loading %s failed:\n%s", path, traceback.format_exc())
            return _keep(
                _message(f"could not load {Path(path).name}; upload a latents.pt this page or pbw-edit saved", "error")
            )
        return self.view([result], f"Loaded {Path(path).name}; {len(result.layers)} painted layer(s) replayed.")

    def upload_photo(self, path: str | None, progress=gr.Progress()):  # noqa: B008 (gradio injects it)
        if path is None:
            return _keep("")
        try:
            progress(0, desc="projecting")
            start = self.painter.project(path, on_progress=lambda phase, i, n: progress((i, n), desc=phase))
        except AppInputError as e:
            return _keep(_message(str(e), "input"))
        except Exception:  # a failed projection is shown on the page; the server goes on
            log.error("projecting %s failed:\n%s", path, traceback.format_exc())
            return _keep(
                _message(f"could not project {Path(path).name} (the server log says why); try a {PHOTO_TYPES} photo")
            )
        m = start.metrics
        notes = "".join(f" {n[0].upper()}{n[1:]}." for n in start.notes if not n.startswith("projected into"))
        return self.view(
            [start],
            f"Projected {Path(path).name} in {m['seconds']:.0f} s (before: the photo, after: its reconstruction, "
            f"which matches it to {m['psnr']:.1f} dB PSNR; higher = closer).{notes} Paint a region and press Paint.",
        )

    def paint(
        self,
        history: list[EditResult],
        editor: dict | None,
        prompt: str,
        negative: str,
        optimizer: str,
        steps: float,
        generations: float,
        lam: float,
        lr: float,
        whole_image: bool,
        seed: float,
        words_2: str | None = None,  # None: optional for API clients of the one-layer page
        words_3: str | None = None,
        words_4: str | None = None,
        progress=gr.Progress(),  # noqa: B008 (gradio injects it)
    ):
        """Paint the canvas's layers (at most `LAYERS`), `prompt` layer 1's words, `words_k` layer k's."""
        try:
            progress(0, desc="starting")
            nxt = self.painter.paint(
                history[-1] if history else None,
                (editor or {}).get("layers"),
                [prompt or "", words_2 or "", words_3 or "", words_4 or ""],
                negative or "",
                bool(whole_image),
                optimizer=optimizer,
                steps=int(steps),
                generations=int(generations),
                lam=float(lam),
                lr=float(lr) if lr else None,
                seed=int(seed),
                on_progress=lambda phase, i, n: progress((i, n), desc=phase),
            )
        except AppInputError as e:
            return _keep(_message(str(e), "input"))
        except Exception as e:  # a failed request is shown on the page; the server goes on
            log.error("edit failed:\n%s", traceback.format_exc())
            return _keep(_message(f"the edit failed: {e}", "error"))
        notes = "".join(f" **Note:** {n}." for n in nxt.notes)
        if score_report(nxt.metrics, self.painter.barely_moved)[1]:
            notes += " **The words' score barely moved: the edit probably did not take** (see below)."
        return self.view(history + [nxt], f"Done: {describe(nxt)} (step {len(history)} of the history).{notes}")

    def select_part(self, history: list[EditResult], editor: dict | None, part: str):
        """Paint the part the segmenter finds in the current image onto the canvas, on a layer of its own
        (the first layer without strokes, else a new one)."""
        try:
            mask = self.painter.select_part(history[-1] if history else None, part)
        except AppInputError as e:
            return gr.skip(), _message(str(e), "input"), gr.skip()
        except Exception as e:  # e.g. missing segmenter weights: shown on the page; the server goes on
            log.error("selecting the %s failed:\n%s", part, traceback.format_exc())
            return gr.skip(), _message(f"selecting the {part} failed: {e}", "error"), gr.skip()
        layers, k = add_layer((editor or {}).get("layers"), mask, DISPLAY, BRUSH)
        canvas = {"background": to_pil(history[-1].edited, DISPLAY), "layers": layers, "composite": None}
        words = "the words" if k == 1 else f"its words in 'words for layer {k}'"
        status = (
            f"Selected the {part} on layer {k} ({mask.mean().item():.0%} of the image): brush more or erase, "
            f"type {words}, then press Paint."
        )
        return canvas, status, gr.Accordion(open=True) if k > 1 else gr.skip()

    def undo(self, history: list[EditResult]):
        if len(history) <= 1:
            return _keep(_message("nothing to undo", "input"))
        return self.view(history[:-1], f"Undone; back to: {describe(history[-2])}.")


def build_page(painter: Painter) -> gr.Blocks:
    """The Blocks page; requests are queued and run one at a time (each within the Painter's time limit)."""
    h, settings, conditional = Handlers(painter), painter.settings, painter.generator.is_conditional
    with gr.Blocks(title="pbw: paint by word") as page:
        gr.Markdown(
            f"# Paint by Word\nPick a starting image, brush the region to change, type the words, press "
            f"**Paint**. Generator: {painter.resolution} px"
            f"{', class-conditional' if conditional else ''}."
        )
        history, samples = gr.State([]), gr.State([])
        with gr.Row():
            with gr.Column(scale=1, min_width=330):
                seeds = gr.Textbox("0-7", label="seeds", elem_id="seeds")
                n_classes = getattr(painter.generator, "n_classes", None)
                class_label = gr.Number(
                    None,
                    label=f"class (0..{n_classes - 1 if n_classes else '?'}; empty: random)",
                    precision=0,
                    visible=conditional,
                    elem_id="class",
                )
                sample_btn = gr.Button("Sample", elem_id="sample")
                gallery = gr.Gallery(
                    label="samples (click one)", columns=3, height="auto", elem_id="gallery", allow_preview=False
                )
                latents_file = gr.File(
                    label="or upload saved latents (latents.pt)", file_types=[".pt"], type="filepath", elem_id="upload"
                )
                photo_file = gr.File(
                    label=f"or upload a photo ({PHOTO_TYPES}; projected into the generator, then painted)",
                    file_types=["image"],
                    type="filepath",
                    elem_id="photo",
                )
            with gr.Column(scale=2):
                editor = gr.ImageEditor(
                    label="paint the region to change; each layer gets its own words",
                    type="numpy",
                    image_mode="RGBA",
                    sources=(),
                    transforms=(),
                    layers=gr.LayerOptions(allow_additional_layers=True),
                    canvas_size=(DISPLAY, DISPLAY),
                    fixed_canvas=True,
                    height=DISPLAY + 120,
                    elem_id="editor",
                    brush=gr.Brush(default_size=32, colors=["#{:02x}{:02x}{:02x}".format(*BRUSH)], color_mode="fixed"),
                    eraser=gr.Eraser(default_size=32),
                )
                with gr.Row(visible=painter.parts):  # where the mini part segmenter applies
                    part = gr.Dropdown(list(PARTS), value=PARTS[0], label="bird part", elem_id="part")
                    part_btn = gr.Button("Select part", elem_id="select_part")
                prompt = gr.Textbox(label="words (layer 1)", placeholder="a bird with a red body", elem_id="prompt")
                with gr.Accordion(
                    f"more layers: several regions in one Paint, each with its own words (layers 2-{LAYERS})",
                    open=False,
                    elem_id="more_layers",
                ) as more_layers:
                    more_words = [
                        gr.Textbox(
                            label=f"words for layer {k}", placeholder="a bird with blue wings", elem_id=f"words_{k}"
                        )
                        for k in range(2, LAYERS + 1)
                    ]
                negative = gr.Textbox(label="negative words (optional)", placeholder="blurry", elem_id="negative")
                with gr.Row():
                    optimizer = gr.Radio(
                        list(OPTIMIZERS), value=settings.optimizer, label="optimizer", elem_id="optimizer"
                    )
                    whole = gr.Checkbox(
                        False, label="whole image (no mask: a new image from the words)", elem_id="whole"
                    )
                with gr.Row():
                    lr = gr.Number(
                        painter.step_size(False),
                        label="step size (Adam's learning rate; this generator's own)",
                        minimum=0,
                        elem_id="lr",
                    )
                    steps = gr.Slider(0, 300, value=settings.steps, step=1, label="Adam steps", elem_id="steps")
                    generations = gr.Slider(
                        0, 50, value=settings.generations, step=1, label="CMA-ES generations", elem_id="generations"
                    )
                with gr.Row():
                    lam = gr.Slider(0, 50, value=settings.lam, step=0.5, label="preservation weight", elem_id="lam")
                    seed = gr.Number(settings.seed, label="edit seed", precision=0, elem_id="edit_seed")
                with gr.Row():
                    paint_btn = gr.Button("Paint", variant="primary", elem_id="paint")
                    undo_btn = gr.Button("Undo", elem_id="undo")
            with gr.Column(scale=2):
                status = gr.Markdown("Sample some seeds to begin.", elem_id="status")
                original = gr.Image(
                    label="before (painted region tinted)", type="pil", interactive=False, elem_id="original"
                )
                result = gr.Image(label="after", type="pil", interactive=False, elem_id="result")
                metrics = gr.Markdown(elem_id="metrics")
                files = gr.File(
                    label="download (edited PNG, latents, comparison)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="files",
                )
        outs = [history, editor, original, result, metrics, status, files]
        # progress and the queue position show on the status box and the result, never over the canvas
        on_status = dict(show_progress_on=[status, result])
        sample_btn.click(h.show_samples, [seeds, class_label], [gallery, samples, status])
        gallery.select(h.pick, [samples], outs, **on_status)
        latents_file.upload(h.upload, [latents_file], outs, api_name="load_latents", **on_status)
        photo_file.upload(h.upload_photo, [photo_file], outs, concurrency_limit=1, concurrency_id="device", **on_status)
        whole.change(h.step_size, [whole], [lr], queue=False, api_visibility="private")
        # the bin clears the strokes, the image stays
        editor.clear(h.canvas, [history], [editor], queue=False, api_visibility="private")
        # Paint is off while this visitor's edit waits in the queue or runs
        paint_btn.click(
            lambda: gr.Button(interactive=False), None, [paint_btn], queue=False, api_visibility="private"
        ).then(
            h.paint,
            [history, editor, prompt, negative, optimizer, steps, generations, lam, lr, whole, seed, *more_words],
            outs,
            concurrency_limit=1,
            concurrency_id="device",
            api_name="paint",
            **on_status,
        ).then(lambda: gr.Button(interactive=True), None, [paint_btn], queue=False, api_visibility="private")
        undo_btn.click(h.undo, [history], outs, **on_status)
        part_btn.click(h.select_part, [history, editor, part], [editor, status, more_layers], **on_status)
    page.queue(default_concurrency_limit=1, max_size=32)
    return page
