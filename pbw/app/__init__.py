"""Paint by Word in the browser: `python -m pbw.app` serves a local page (Gradio) over `Painter`."""
from pbw.app.core import AppInputError, Canvas, EditTimeout, Painter, Step, brush_mask, parse_seeds

__all__ = ["AppInputError", "Canvas", "EditTimeout", "Painter", "Step", "brush_mask", "parse_seeds"]
