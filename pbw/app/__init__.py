"""Paint by Word in the browser: `pbw-app` serves a local page (Gradio) over `Painter`."""

from pbw.app.core import APP_PROJECTION, APP_SETTINGS, AppInputError, Painter, brush_mask, parse_seeds

__all__ = ["APP_PROJECTION", "APP_SETTINGS", "AppInputError", "Painter", "brush_mask", "parse_seeds"]
