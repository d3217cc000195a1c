"""Two-alternative preference between two variants on the same requests, as the paper's human studies:
for each request, which of A and B an automated judge prefers, and A's share with a 95% interval.

The paper's studies forced a choice; an automated judge can tie (equal scores, e.g. two variants
that left the image unchanged). Ties are counted and reported, and left out of the share: `share`
is A's wins among the requests where the judge preferred one (`decided` = a_wins + b_wins), with its
Wilson interval. `share_ties_half` counts each tie as half a win for each (over all `n`), for
comparison with studies that split ties. A request where either score is missing (NaN) is left out
of everything and counted in `missing`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pbw.evaluation.stats import wilson_interval


@dataclass
class Preference:
    """A's record against B on `n` requests (see the module's docstring)."""

    n: int
    a_wins: int
    b_wins: int
    ties: int
    missing: int
    share: float
    ci95: tuple[float, float]
    share_ties_half: float

    @property
    def decided(self) -> int:
        return self.a_wins + self.b_wins

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def pairwise_preference(
    a: Sequence[float], b: Sequence[float], higher_is_better: bool = True, tie_tolerance: float = 0.0
) -> Preference:
    """A's preference over B from per-request scores of the same requests (same order): A wins a request
    when its score is better by more than `tie_tolerance`, B when B's is, else it is a tie."""
    if len(a) != len(b):
        raise ValueError(
            f"the two variants were scored on different numbers of requests ({len(a)} vs {len(b)}); "
            "a preference needs the same requests in the same order"
        )
    if tie_tolerance < 0:
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
    a_wins = b_wins = ties = missing = 0
    for x, y in zip(a, b, strict=True):
        x, y = float(x), float(y)
        if math.isnan(x) or math.isnan(y):
            missing += 1
            continue
        d = (x - y) if higher_is_better else (y - x)
        if d > tie_tolerance:
            a_wins += 1
        elif d < -tie_tolerance:
            b_wins += 1
        else:
            ties += 1
    n = a_wins + b_wins + ties
    decided = a_wins + b_wins
    share = a_wins / decided if decided else float("nan")
    return Preference(
        n=n,
        a_wins=a_wins,
        b_wins=b_wins,
        ties=ties,
        missing=missing,
        share=share,
        ci95=wilson_interval(a_wins, decided),
        share_ties_half=(a_wins + ties / 2) / n if n else float("nan"),
    )
