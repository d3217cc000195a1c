"""The Gradio page over `Painter`: pick an image, brush a region, type words, press Paint."""
from __future__ import annotations

import logging
import os
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page: no calls home
import gradio as gr  # noqa: E402

from pbw.app.core import AppInputError, Painter, Step, brush_mask, format_metrics, to_pil  # noqa: E402
from pbw.editing.masks import mask_overlay  # noqa: E402
from pbw.editing.module import OPTIMIZERS  # noqa: E402

log = logging.getLogger(__name__)
DISPLAY = 384  # canvas side in pixels; strokes are area-averaged down to the generator's resolution
TINT = (0.1, 1.0, 0.3)  # the brush colour, also used to tint the painted region in the before image


def _message(text: str, kind: str = "info") -> str:
    return {"info": "", "error": "**Error:** ", "input": "**Note:** "}[kind] + text


def view(history: list[Step], message: str = "") -> tuple:
    """Outputs for a history: (history, editor, original, result, metrics, status, files)."""
    if not history:
        return history, None, None, None, "", message, None
    cur = history[-1]
    editor = {"background": to_pil(cur.image, DISPLAY), "layers": [], "composite": None}
    if len(history) == 1:
        return history, editor, to_pil(cur.image, DISPLAY), None, "", message, None
    before = history[-2].image
    if cur.layers and len(cur.layers) > len(history[-2].layers):  # a masked edit: tint the painted region
        before = mask_overlay(before, cur.layers[-1][1], color=TINT)
    before = to_pil(before, DISPLAY)
    return history, editor, before, to_pil(cur.image, DISPLAY), format_metrics(cur.metrics), message, cur.files


def _keep(message: str) -> tuple:
    """Leave everything but the status line as it is."""
    return (gr.skip(),) * 5 + (message, gr.skip())


class Handlers:
    """The page's event handlers; each returns the outputs of `view` (or leaves them and sets the status)."""

    def __init__(self, painter: Painter):
        self.painter = painter

    def show_samples(self, seeds: str, class_label: float | None):
        try:
            steps = self.painter.samples(seeds, None if class_label in (None, "") else int(class_label))
        except AppInputError as e:
            return gr.skip(), gr.skip(), _message(str(e), "input")
        gallery = [(to_pil(s.image, 128), s.label) for s in steps]
        return gallery, steps, f"{len(steps)} samples: click one to start painting."

    def pick(self, samples: list[Step], evt: gr.SelectData):
        return view([samples[evt.index]], f"Started from {samples[evt.index].label}. Paint a region and press Paint.")

    def upload(self, path: str | None):
        if path is None:
            return _keep("")
        try:
            step = self.painter.load_latents(path)
        except AppInputError as e:
            return _keep(_message(str(e), "input"))
        return view([step], f"Loaded {step.label}; {len(step.layers)} painted layer(s) replayed.")

    def paint(self, history: list[Step], editor: dict | None, prompt: str, negative: str, optimizer: str,
              steps: float, generations: float, lam: float, whole_image: bool, seed: float,
              progress=gr.Progress(track_tqdm=True)):
        if not history:
            return _keep(_message("pick a starting image first (sample seeds, or upload saved latents)", "input"))
        try:
            mask = None
            if not whole_image:
                mask = brush_mask((editor or {}).get("layers"), self.painter.resolution)
                if mask is None:
                    return _keep(_message("paint a stroke on the image first (or tick whole-image mode)", "input"))
            if not (prompt or "").strip():
                return _keep(_message("type the words to paint (the prompt is empty)", "input"))
            progress(0, desc="starting")
            nxt = self.painter.edit(history[-1], mask, prompt, negative or "", optimizer, int(steps), float(lam),
                                    int(generations), int(seed),
                                    on_step=lambda i, n: progress((i, n), desc="Adam steps"))
        except AppInputError as e:
            return _keep(_message(str(e), "input"))
        except Exception as e:  # a failed request is shown on the page; the server goes on
            log.error("edit failed:\n%s", traceback.format_exc())
            return _keep(_message(f"the edit failed: {type(e).__name__}: {e}", "error"))
        return view(history + [nxt], f"Done: {nxt.label} (step {len(history)} of the history).")

    def undo(self, history: list[Step]):
        if len(history) <= 1:
            return _keep(_message("nothing to undo", "input"))
        return view(history[:-1], f"Undone; back to: {history[-2].label or 'the start'}.")


def build_page(painter: Painter) -> gr.Blocks:
    """The Blocks page; requests are queued and run one at a time (each within the Painter's time limit)."""
    h = Handlers(painter)
    with gr.Blocks(title="pbw: paint by word") as page:
        gr.Markdown(f"# Paint by Word\nPick a starting image, brush the region to change, type the words, press "
                    f"**Paint**. Generator: {painter.resolution} px"
                    f"{', class-conditional' if painter.conditional else ''}.")
        history, samples = gr.State([]), gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                seeds = gr.Textbox("0-7", label="seeds", elem_id="seeds")
                n_classes = getattr(painter.generator, "n_classes", None)
                class_label = gr.Number(None, label=f"class (0..{n_classes - 1 if n_classes else '?'}; empty: random)",
                                        precision=0, visible=painter.conditional, elem_id="class")
                sample_btn = gr.Button("Sample", elem_id="sample")
                gallery = gr.Gallery(label="samples (click one)", columns=3, height="auto", elem_id="gallery",
                                     allow_preview=False)
                latents_file = gr.File(label="or upload saved latents (latents.pt)", file_types=[".pt"],
                                       type="filepath", elem_id="upload")
            with gr.Column(scale=2):
                editor = gr.ImageEditor(label="paint the region to change", type="numpy", image_mode="RGBA",
                                        sources=(), transforms=(), layers=False, canvas_size=(DISPLAY, DISPLAY),
                                        fixed_canvas=True, height=DISPLAY + 120, elem_id="editor",
                                        brush=gr.Brush(default_size=32, colors=["#1aff4d"], color_mode="fixed"),
                                        eraser=gr.Eraser(default_size=32))
                prompt = gr.Textbox(label="words", placeholder="a red head", elem_id="prompt")
                negative = gr.Textbox(label="negative words (optional)", placeholder="blurry", elem_id="negative")
                with gr.Row():
                    optimizer = gr.Radio(list(OPTIMIZERS), value="adam", label="optimizer", elem_id="optimizer")
                    whole = gr.Checkbox(False, label="whole image (no mask: a new image from the words)",
                                        elem_id="whole")
                with gr.Row():
                    steps = gr.Slider(0, 300, value=50, step=1, label="Adam steps", elem_id="steps")
                    generations = gr.Slider(0, 50, value=5, step=1, label="CMA-ES generations", elem_id="generations")
                    lam = gr.Slider(0, 50, value=5.0, step=0.5, label="preservation weight", elem_id="lam")
                    seed = gr.Number(0, label="edit seed", precision=0, elem_id="edit_seed")
                with gr.Row():
                    paint_btn = gr.Button("Paint", variant="primary", elem_id="paint")
                    undo_btn = gr.Button("Undo", elem_id="undo")
                status = gr.Markdown("Sample some seeds to begin.", elem_id="status")
            with gr.Column(scale=2):
                original = gr.Image(label="before (painted region tinted)", type="pil", interactive=False,
                                    elem_id="original")
                result = gr.Image(label="after", type="pil", interactive=False, elem_id="result")
                metrics = gr.Markdown(elem_id="metrics")
                files = gr.File(label="download (edited PNG, latents, comparison)", file_count="multiple",
                                interactive=False, elem_id="files")
        outs = [history, editor, original, result, metrics, status, files]
        sample_btn.click(h.show_samples, [seeds, class_label], [gallery, samples, status])
        gallery.select(h.pick, [samples], outs)
        latents_file.upload(h.upload, [latents_file], outs)
        paint_btn.click(h.paint, [history, editor, prompt, negative, optimizer, steps, generations, lam, whole, seed],
                        outs, concurrency_limit=1, concurrency_id="device")
        undo_btn.click(h.undo, [history], outs)
    page.queue(default_concurrency_limit=1, max_size=32)
    return page
