"""pbw: Paint by Word. Train image generators, then edit their images with words."""

__version__ = "0.1.0"
