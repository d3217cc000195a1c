"""The experiment runner on the paper's configs, end to end at tiny scale and offline: the shipped YAMLs with
their generator paths overridden by tiny pbw checkpoints written here, a random tiny optimizing CLIP and a
different random tiny evaluator, tiny CUB captions, a tiny Places365 class list and real-image folder.
Also: the evaluator-vs-optimizer rule, the pairwise preference against a hand computation, masks from
files, a segmenter and bird parts (per row too), the gallery's links and an offline W&B table."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import write_tiny_cub
from PIL import Image

from pbw.checkpoints.core import ImportedNetworks, save_pbw_checkpoint
from pbw.evaluation.judges import SameEvaluatorError, check_independent, preservation_outside
from pbw.evaluation.preference import pairwise_preference
from pbw.models.biggan import BigGANDiscriminator, BigGANGenerator
from pbw.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from pbw.reproduce import ExperimentError, Masks, Prompts, Task, Variant, load_experiment, main, validate
from pbw.reproduce.sources import PromptItem, plan_requests
from pbw.semantic import SemanticNet, register_model_configs

CONFIGS = Path(__file__).resolve().parents[1] / "pbw" / "configs" / "reproduce"
PAPER_CONFIGS = ("cub_text_to_image", "bedroom", "places")
SCENES = ["mountain", "lake/natural", "beach", "field/wild", "church/outdoor", "castle", "tower", "skyscraper"]
CLIP, EVALUATOR = "pbw-tiny-clip:random", "pbw-mini-clip:random"  # two different random tiny CLIPs
TINY = [
    "--clip",
    CLIP,
    "--evaluators",
    json.dumps([EVALUATOR]),
    "--device",
    "cpu",
    "--lpips",
    "false",
    "--settings.steps",
    "1",
    "--settings.generations",
    "1",
    "--settings.population",
    "2",
    "--settings.crops",
    "1",
    "--settings.batch_size",
    "8",
    "--real.features",
    "random",
    "--real.kid_subset_size",
    "3",
    "--max_seeds",
    "1",
]


def tiny_stylegan2(path: Path) -> Path:
    torch.manual_seed(0)
    gk = dict(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    dk = dict(resolution=32, channel_base=256, channel_max=16)
    save_pbw_checkpoint(
        ImportedNetworks(
            "pbw",
            "stylegan2",
            gk,
            {"generator_ema": StyleGAN2Generator(**gk).state_dict()},
            dk,
            StyleGAN2Discriminator(**dk).state_dict(),
        ),
        path,
    )
    return path


def tiny_biggan(path: Path) -> Path:
    torch.manual_seed(0)
    gk = dict(resolution=32, ch=4, n_classes=len(SCENES), dim_z=32, shared_dim=8, attention=None)
    dk = dict(resolution=32, ch=4, n_classes=len(SCENES), attention=None)
    save_pbw_checkpoint(
        ImportedNetworks(
            "pbw",
            "biggan",
            gk,
            {"generator_ema": BigGANGenerator(**gk).state_dict()},
            dk,
            BigGANDiscriminator(**dk).state_dict(),
        ),
        path,
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny checkpoints, captions, a Places365-style class list and a folder of real images."""
    d = tmp_path_factory.mktemp("paper")
    real = d / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(real / f"{i}.png")
    (d / "categories.txt").write_text("".join(f"/{n[0]}/{n} {i}\n" for i, n in enumerate(SCENES)))
    return {
        "sg2": tiny_stylegan2(d / "sg2.ckpt"),
        "biggan": tiny_biggan(d / "biggan.ckpt"),
        "cub": write_tiny_cub(d / "cub", n_classes=2, per_class=4, size=32).parent,
        "real": real,
        "classes": d / "categories.txt",
    }


def overrides(name: str, w: dict) -> list[str]:
    """Point a paper config at the tiny world (the rest of the config is the shipped one)."""
    if name == "cub_text_to_image":
        return [
            "--generators.cub.path",
            str(w["sg2"]),
            "--tasks.text_to_image.prompts.captions",
            str(w["cub"]),
            "--tasks.text_to_image.prompts.count",
            "3",
            "--real.path",
            str(w["real"]),
        ]
    if name == "bedroom":
        return ["--generators.bedroom.path", str(w["sg2"]), "--real.path", str(w["real"]), "--max_prompts", "3"]
    return [
        "--generators.places.path",
        str(w["biggan"]),
        "--generators.places.class_names",
        str(w["classes"]),
        "--tasks.natural_scenes.classes",
        '["mountain", "lake/natural"]',
        "--tasks.built_scenes.classes",
        '["castle"]',
        "--real.path",
        str(w["real"]),
        "--max_prompts",
        "2",
    ]


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    register_model_configs()
    out = {}
    for name in PAPER_CONFIGS:
        d = tmp_path_factory.mktemp(name)
        main(["run", "--config", str(CONFIGS / f"{name}.yaml"), "--out", str(d), *TINY, *overrides(name, world)])
        out[name] = (d, json.loads((d / "results.json").read_text()))
    return out


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_end_to_end(runs, name):
    out, results = runs[name]
    exp = load_experiment(CONFIGS / f"{name}.yaml")
    assert set(results["tasks"]) == set(exp.tasks) and results["evaluators"] == [EVALUATOR]
    for key, task in results["tasks"].items():
        cfg = exp.tasks[key]
        assert list(task["rows"]) == [v.name for v in cfg.variants]
        n = len(task["requests"][cfg.generator])
        for row in task["rows"].values():
            assert row["n"] == n and math.isfinite(row["semantic_score"]) and math.isfinite(row["realism"])
            assert math.isfinite(row["fid"]) and math.isfinite(row["kid"])
            ev = row["evaluators"][EVALUATOR]
            assert math.isfinite(ev["score"]) and math.isfinite(ev["score_before"]) and 0 <= ev["accuracy"] <= 1
            lo, hi = ev["accuracy_ci95"]
            assert lo <= ev["accuracy"] <= hi
            if task["kind"] == "masked edit":
                assert row["preservation_l1"] >= 0 and row["preservation_psnr"] > 0
                assert set(row["by_category"]) == {r["category"] for r in task["requests"][cfg.generator]}
        prefs = [p for p in task["preferences"] if "criterion" in p]
        assert {p["criterion"] for p in prefs} == {"accuracy", "realism"}
        for p in prefs:
            assert p["a_wins"] + p["b_wins"] + p["ties"] == p["n"] == n
    md = (out / "results.md").read_text()
    assert "Two-alternative preference" in md and EVALUATOR in md
    if name == "places":  # classes named through the class list, one scene per request
        reqs = results["tasks"]["natural_scenes"]["requests"]["places"]
        assert {r["class"] for r in reqs} == {0, 1} and {r["region"] for r in reqs} <= {"sky", "ground", "water"}
    if name == "cub_text_to_image":
        reqs = results["tasks"]["text_to_image"]["requests"]["cub"]
        assert len(reqs) == 3 and all(re.fullmatch(r"bird \d+ caption 0", r["prompt"]) for r in reqs)
        assert [r["seed"] for r in reqs] == [0, 1, 2]


def test_gallery_links_relative_pngs(runs):
    out, results = runs["bedroom"]
    page = (out / "gallery" / "index.html").read_text()
    srcs = re.findall(r"<img src='([^']+)'>", page)
    task = results["tasks"]["masked_edits"]
    n = len(task["requests"]["bedroom"])
    assert len(srcs) == n * (2 + 2)  # original, mask, two variants
    for s in srcs:
        assert not s.startswith(("/", "http")) and s.endswith(".png") and (out / "gallery" / s).is_file()
    assert "a red bed" in page and "eval " in page and "L1 " in page


def test_wandb_offline_table(runs, monkeypatch):
    from pbw.reproduce.report import log_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out, results = runs["cub_text_to_image"]
    summary = log_wandb(results, out, "pbw-test")
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/text_to_image/requests_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:8] == ["request", "prompt", "category", "region", "seed", "class", "original", "mask"]
    assert "paper: cma+adam" in table["columns"] and f"adam only | evaluator:{EVALUATOR}" in table["columns"]
    assert len(table["data"]) == 3
    assert f"text_to_image/paper: cma+adam/evaluator {EVALUATOR}/accuracy" in summary
    assert "text_to_image/preference/paper: cma+adam vs adam only/accuracy" in summary


def test_evaluator_identical_to_optimizer_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # refused before any model is loaded (the generator does not exist)
        main(
            [
                "run",
                "--config",
                str(CONFIGS / "bedroom.yaml"),
                "--out",
                str(tmp_path),
                "--clip",
                CLIP,
                "--evaluators",
                json.dumps([CLIP]),
                "--generators.bedroom.path",
                "/no/such/file.pkl",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: evaluator 'pbw-tiny-clip:random' names the CLIP the edits")
    assert "allow_same_evaluator" in err and "ViT-L-14" in err
    with pytest.raises(SameEvaluatorError):  # the same weights, quickgelu or not
        check_independent("ViT-B-32:openai", "ViT-B-32-quickgelu:openai")
    assert check_independent("ViT-B-32:openai", "ViT-L-14:openai") is None
    assert "not independent" in check_independent(CLIP, CLIP, allow_same=True)
    register_model_configs()
    torch.manual_seed(0)
    a = SemanticNet.from_spec(CLIP, crops=0)
    torch.save(a.model.state_dict(), tmp_path / "same.pt")
    b = SemanticNet.from_spec(f"pbw-tiny-clip:{tmp_path / 'same.pt'}", crops=0)
    with pytest.raises(SameEvaluatorError, match="same weights"):  # another spec, the same weights
        check_independent(CLIP, f"pbw-tiny-clip:{tmp_path / 'same.pt'}", a, b)
    assert check_independent(CLIP, EVALUATOR, a, SemanticNet.from_spec(EVALUATOR, crops=0)) is None


def test_pairwise_preference_against_hand_computation():
    a = [0.3, 0.5, 0.2, 0.4, 0.4, float("nan")]
    b = [0.2, 0.1, 0.3, 0.4, 0.1, 0.5]
    p = pairwise_preference(a, b)
    # A wins requests 0, 1, 4; B wins 2; 3 is a tie; 5 is missing. Share = 3 / 4 decided. Wilson (z = 1.959964):
    # centre = (0.75 + z^2/8) / (1 + z^2/4) = 1.230182 / 1.960365 = 0.627527,
    # half = z / 1.960365 * sqrt(0.75 * 0.25 / 4 + z^2 / 64) = 0.999796 * 0.326952 = 0.326886.
    assert (p.n, p.a_wins, p.b_wins, p.ties, p.missing) == (5, 3, 1, 1, 1)
    assert p.share == 0.75 and p.share_ties_half == pytest.approx(3.5 / 5)
    assert p.ci95 == pytest.approx((0.627527 - 0.326886, 0.627527 + 0.326886), abs=2e-6)
    q = pairwise_preference(a, b, tie_tolerance=0.15)  # differences of 0.1 become ties
    assert (q.a_wins, q.b_wins, q.ties) == (2, 0, 3) and q.share == 1.0
    r = pairwise_preference(a, b, higher_is_better=False)  # e.g. a distance: lower wins
    assert (r.a_wins, r.b_wins, r.ties) == (1, 3, 1)
    all_ties = pairwise_preference([1.0, 2.0], [1.0, 2.0])
    assert all_ties.ties == 2 and math.isnan(all_ties.share) and all_ties.share_ties_half == 0.5
    with pytest.raises(ValueError, match="same requests"):
        pairwise_preference([1.0], [1.0, 2.0])


def test_preservation_outside_the_mask():
    x0 = torch.zeros(2, 3, 4, 4)
    x1 = x0.clone()
    x1[1, :, :, :2] = 1.0  # image 1 changes by 0.5 (on the 0..1 scale) in its left half
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1  # the top half is edited
    p = preservation_outside(x0, x1, mask)
    assert p["preservation_l1"] == pytest.approx([0.0, 0.25]) and p["preservation_psnr"][0] == 100.0
    assert p["preservation_psnr"][1] == pytest.approx(-10 * math.log10(0.125))


def seg_fn(image, region, value=1.0):
    """A toy segmentation model: the left half for "left", nothing for anything else."""
    if region != "left":
        return None
    m = torch.zeros(image.shape[-2:])
    m[:, : image.shape[-1] // 2] = value
    return m


def test_masks_from_segmenter_files_and_boxes(world, tmp_path):
    from pbw.checkpoints import load_generator

    g = load_generator(world["sg2"])
    np.save(tmp_path / "5_door.npy", np.ones((32, 32), np.float32))
    items = [
        PromptItem("a left thing", region="left"),
        PromptItem("a door", region="door"),
        PromptItem("a bed", region="bed"),
        PromptItem("a sky", region="sky"),
    ]
    task = Task(
        generator="g",
        prompts=Prompts(texts=["x"]),
        variants=[Variant("v")],
        first_seed=5,
        seeds=1,
        masks=Masks(
            files=str(tmp_path / "{seed}_{region}.npy"), segmenter=f"{__name__}:seg_fn", segmenter_args={"value": 0.5}
        ),
    )
    planned, notes = plan_requests(task, items, g, [None])
    masks_of = {p.item.region: p.request.mask[0, 0] for p in planned}
    assert masks_of["door"].eq(1).all()  # the user's file for seed 5 comes first
    assert masks_of["left"][:, :16].eq(0.5).all() and masks_of["left"][:, 16:].eq(0).all()  # the segmenter's
    assert set(masks_of) == {"door", "left"} and len(notes) == 2  # no bed, no sky in the image: said, not run
    assert "left out" in notes[0] and "'bed'" in notes[0] and "'sky'" in notes[1]
    task.masks = Masks(files=str(tmp_path / "{seed}_{region}.npy"), boxes={"bed": "0,0.5,1,1"}, box="0,0,8,8")
    planned, notes = plan_requests(task, items, g, [None])
    masks_of = {p.item.region: p.request.mask[0, 0] for p in planned}
    assert masks_of["bed"][16:].eq(1).all() and masks_of["bed"][:16].eq(0).all()  # the region's box
    assert masks_of["sky"][:8, :8].eq(1).all() and masks_of["sky"].sum() == 64 and not notes  # the box for the rest


def test_part_masks_per_seed_and_rows_with_masks_of_their_own(monkeypatch):
    """`masks: {part: body}` on the bundled mini StyleGAN2: per request, the body the part segmenter finds in
    that seed's start image; a row's own masks (a box) on the same requests; a request that any of them
    leaves out is left out of every row, said."""
    import pbw.evaluation.segmenter as segmenter
    from pbw.assets import mini_generator_path
    from pbw.checkpoints import load_generator

    g = load_generator(mini_generator_path())
    starts = {}
    for seed in (1000, 1001):
        codes = g.sample(1, seed=seed)
        with torch.no_grad():
            starts[seed] = g.decode(g.encode(codes), cond=codes)[0]
    items = [PromptItem("a bird with a red body"), PromptItem("a bird with a blue body")]
    box = Masks(box="0.25,0.25,0.75,0.75")
    task = Task(
        generator="g",
        prompts=Prompts(texts=["x"]),
        first_seed=1000,
        seeds=2,
        masks=Masks(part="body"),
        variants=[Variant("paper"), Variant("box", masks=box)],
    )
    planned, notes = plan_requests(task, items, g, [None], row_masks={"box": box})
    assert not notes and [p.seed for p in planned] == [1000, 1000, 1001, 1001]
    res = g.resolution
    central = torch.zeros(res, res)
    central[res // 4 : 3 * res // 4, res // 4 : 3 * res // 4] = 1
    for p in planned:
        body = segmenter.part_mask(starts[p.seed], "body")  # the segmenter's own answer on that seed's image
        paper, boxed = p.request_for("paper"), p.request_for("box")
        assert 0 < body.mean() < 0.25 and torch.equal(paper.mask[0, 0], body) and paper is p.request
        assert "the body the part segmenter finds" in paper.notes[0]
        assert torch.equal(boxed.mask[0, 0], central) and boxed.codes is paper.codes and boxed.name == paper.name
    assert not torch.equal(planned[0].request.mask, planned[2].request.mask)  # each seed its own body

    real = segmenter.part_mask
    monkeypatch.setattr(
        segmenter,
        "part_mask",
        lambda image, parts, net=None: (  # no body in seed 1001
            torch.zeros(image.shape[-2:]) if torch.equal(image, starts[1001]) else real(image, parts, net)
        ),
    )
    planned, notes = plan_requests(task, items, g, [None], row_masks={"box": box})
    assert [p.seed for p in planned] == [1000, 1000] and len(notes) == 2
    assert "000_seed1000" not in notes[0] and "left out: the part segmenter found no body" in notes[0]

    # a row whose own masks find no region: that request is left out of the task's rows too
    items = [PromptItem("a left thing", region="left"), PromptItem("a bed", region="bed")]
    seg = Masks(segmenter=f"{__name__}:seg_fn")
    planned, notes = plan_requests(task, items, g, [None], max_seeds=1, row_masks={"seg": seg})
    assert [p.item.region for p in planned] == ["left"] and set(planned[0].row_masks) == {"seg"}
    assert notes == [
        "request 001_seed1000 ('a bed') left out: the segmenter found no 'bed' in the image (the masks of row 'seg')"
    ]


def test_task_settings_between_the_experiments_and_a_rows(world, tmp_path, monkeypatch):
    """A task's `settings` override the experiment's, a row's own override the task's; results say them."""
    from pbw.editing.editor import Editor

    seen, real = [], Editor.run
    monkeypatch.setattr(
        Editor,
        "run",
        lambda self, requests, settings=None, **kw: seen.append(settings) or real(self, requests, settings, **kw),
    )
    main(
        [
            "run",
            "--config",
            str(CONFIGS / "bedroom.yaml"),
            "--out",
            str(tmp_path),
            *TINY,
            *overrides("bedroom", world),
            "--tasks.masked_edits.settings",
            '{"lr": 0.3, "steps": 2, "mask_mode": "latent"}',
        ]
    )
    # TINY sets the experiment's steps 1 and generations 1; bedroom.yaml's second row has mask_mode image
    assert [(s.lr, s.steps, s.generations, s.mask_mode) for s in seen] == [(0.3, 2, 1, "latent"), (0.3, 2, 1, "image")]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tasks"]["masked_edits"]["settings"] == {"lr": 0.3, "steps": 2, "mask_mode": "latent"}
    assert "Settings of this task: lr 0.3, steps 2, mask_mode latent." in (tmp_path / "results.md").read_text()


def test_config_errors_are_listed_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "run",
                "--config",
                str(CONFIGS / "bedroom.yaml"),
                "--out",
                str(tmp_path),
                "--clip",
                CLIP,
                "--evaluators",
                json.dumps([EVALUATOR]),
                "--tasks.masked_edits.judges",
                '["fid", "beauty"]',
                "--tasks.masked_edits.generator",
                "church",
                "--tasks.masked_edits.variants",
                '[{"name": "a", "settings": {"stepz": 3}}, {"name": "a"}]',
                "--tasks.masked_edits.settings",
                '{"crop": 3}',
            ]
        )
    msg = capsys.readouterr().err
    assert "unknown judges ['beauty']" in msg and "'church'" in msg and "['stepz']" in msg and "repeat" in msg
    assert "task 'masked_edits': unknown settings ['crop']" in msg
    with pytest.raises(ExperimentError, match="beauty"):  # the same from Python
        validate(load_experiment(CONFIGS / "bedroom.yaml", ["--tasks.masked_edits.judges", '["beauty"]']))
    with pytest.raises(ExperimentError) as e:  # masks: part names, what they combine with, rows' own masks
        validate(
            load_experiment(
                CONFIGS / "mini_quick.yaml",
                [
                    "--tasks.masked_edits.masks.part",
                    "body+tentacle",
                    "--tasks.masked_edits.masks.box",
                    "0,0,1,1",
                    "--tasks.text_to_image.variants",
                    '[{"name": "a", "masks": {"box": "0,0,1,1"}}]',
                ],
            )
        )
    msg = str(e.value)
    assert "masks part: unknown bird part 'tentacle'; the parts are body, head, wing, tail, beak" in msg
    assert "masks part combines with files only, not ['box']" in msg
    assert "task 'text_to_image', variant 'a': masks of a row need a masked task" in msg


def test_variants_option_keeps_the_rows_it_names(capsys):
    from pbw.reproduce.cli import parse_run

    exp, _ = parse_run(["--config", str(CONFIGS / "mini.yaml"), "--variants", "paper|BigGAN"])
    assert {name: [v.name for v in task.variants] for name, task in exp.tasks.items()} == {
        "masked_edits": ["paper: cma+adam, w, latent mask", "BigGAN: cma+adam, w (block-0 features), latent mask"],
        "text_to_image": ["StyleGAN2: z (paper)", "BigGAN: z + class vector (paper)"],
    }
    exp, _ = parse_run(["--config", str(CONFIGS / "mini.yaml"), "--variants", "central box"])
    assert list(exp.tasks) == ["masked_edits"]  # text to image has no such row: left out
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(CONFIGS / "mini.yaml"), "--variants", "dalle"])
    assert e.value.code == 2 and "no variant's name contains any of ['dalle']" in capsys.readouterr().err
