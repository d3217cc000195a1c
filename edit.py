#!/usr/bin/env python
"""Paint by Word: edit a generated image with words inside a mask. See `pbw-edit --help`."""

from pbw.editing.cli import main

if __name__ == "__main__":
    main()
