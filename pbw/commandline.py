"""What every pbw command line shares."""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")
