"""Does the trained discriminator know which samples are whole birds? (2026-12-05.)

For 2048 samples of the bundled mini StyleGAN2 (EMA generator, z from
seed 20000, none of the evaluation seeds), the part segmenter says whole bird or not; this prints the
AUC with which D's logit ranks whole birds above broken ones, D's mean logit on real and fake birds
(sharp and blurred), and, for comparison, the 5-fold cross-validated AUC of a linear probe on the
yardstick's and the tiny CLIP's frozen image features. Needs scikit-learn. Run from the repository root:

    python -m lab.experiments.discriminator_probe
"""

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from torchvision.transforms.functional import gaussian_blur

from lab.state import load_module
from pbw.data.synthetic import draw_birds
from pbw.evaluation.segmenter import is_whole_bird, load_segmenter, segment
from pbw.evaluation.yardstick import load_yardstick
from pbw.semantic.clip import SemanticNet


def batched(fn, x, size=128):
    return torch.cat([fn(b) for b in x.split(size)])


def probe_auc(features, whole):
    p = cross_val_predict(LogisticRegression(max_iter=2000), features, whole, cv=5, method="predict_proba")[:, 1]
    return roc_auc_score(whole, p)


@torch.no_grad()
def main():
    m = load_module()
    z = torch.randn(2048, m.hparams.z_dim, generator=torch.Generator().manual_seed(20000))
    fake = batched(lambda b: m.generator_ema(b, noise_mode="const"), z).clamp(-1, 1)
    seg = load_segmenter()
    whole = is_whole_bird(segment(fake, seg), seg.info["share_ranges"])[:, -1].astype(int)
    logits = batched(m.discriminator, fake).squeeze(-1).numpy()
    real = draw_birds(512, 64, seed=300).tensors()
    print(f"bird rate {whole.mean():.3f}; D logit AUC whole vs broken {roc_auc_score(whole, logits):.3f}")
    print(
        f"D mean logit: real {batched(m.discriminator, real).mean():.2f}, whole fakes {logits[whole == 1].mean():.2f},"
        f" broken fakes {logits[whole == 0].mean():.2f}"
    )
    for sigma in (0.5, 1.0, 2.0):

        def blurred_logits(x):
            return m.discriminator(gaussian_blur(x, 2 * round(3 * sigma) + 1, sigma))

        print(
            f"blur sigma {sigma}: real {batched(blurred_logits, real).mean():.2f}, "
            f"fakes {batched(blurred_logits, fake[:512]).mean():.2f}"
        )
    print(
        f"linear probe AUC, yardstick features: {probe_auc(batched(load_yardstick().embed, fake).numpy(), whole):.3f}"
    )
    clip = SemanticNet("local-dir:pbw/assets/mini/clip", None).eval()
    clip_features = batched(lambda b: clip.model.visual(((b + 1) / 2 - clip.mean) / clip.std), fake).numpy()
    print(f"linear probe AUC, tiny CLIP embedding: {probe_auc(clip_features, whole):.3f}")


if __name__ == "__main__":
    main()
