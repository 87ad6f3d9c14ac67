# ruff: noqa: E501
"""Experiment (not project code): a nucleus size from the image alone, by scale-space.

Per image and zoom factor: the nuclei-bright gray (appearance.nuclei_bright) and, for
stained images, the haematoxylin optical density (skimage rgb2hed). For sigma on a
geometric grid (on an area-averaged pyramid) the scale-normalised -LoG response; the
sigma that maximises a statistic of it is the blob scale. Truth: inference.median_diameter
of the (resampled) labels. Writes one row per image/factor/rep/sigma.
"""

import sys

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.color import rgb2hed

from unet_tf import appearance, config, data, datasets, inference

FACTORS = (0.5, 1.0, 2.0, 2.5, 4.0)
SIGMAS = (1.0, 1.19, 1.41, 1.68, 2.0)  # one octave per pyramid level


def gray_nb(image):
    return appearance.nuclei_bright(image.astype(np.float32)).numpy()[..., 0]


def gray_h(image):
    rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image, 3, -1)
    h = rgb2hed(np.clip(rgb, 1e-3, 1))[..., 0]
    lo, hi = np.percentile(h, (1, 99.8))
    return np.clip((h - lo) / max(hi - lo, 1e-6), 0, 1)


def responses(gray, levels=7):
    img = gray.astype(np.float32)
    for level in range(levels):
        if min(img.shape) < 24:
            break
        for s in SIGMAS:
            r = np.maximum(-(s**2) * ndimage.gaussian_laplace(img, s), 0)
            yield s * 2**level, float((r**2).mean()), float(np.percentile(r, 99)), float(r.mean())
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        img = img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def main(which, count):
    ds = datasets.open_dataset("dsb2018")
    val = data.load_ids(config.VALIDATION_IDS)
    ids = [i for i in ds.ids() if i not in set(val)] if which == "train" else list(val)
    if count and count < len(ids):
        ids = sorted(np.random.default_rng(0).choice(ids, count, replace=False))
    rows = []
    for image_id, image, labels in ds.load(ids):
        kind = data.imaging_type(image)
        for factor in FACTORS:
            (sample,) = inference.resample_samples([(image_id, image, labels)], factor)
            truth = inference.median_diameter(sample[2])
            if truth is None:
                continue
            reps = [("nb", gray_nb)] + ([("h", gray_h)] if kind == "stained" else [])
            for rep, fn in reps:
                for sigma, e2, p99, mean in responses(fn(sample[1])):
                    rows.append(
                        dict(
                            id=image_id,
                            kind=kind,
                            factor=factor,
                            truth=truth,
                            rep=rep,
                            sigma=sigma,
                            e2=e2,
                            p99=p99,
                            mean=mean,
                        )
                    )
        print(image_id[:10], kind, flush=True)
    pd.DataFrame(rows).to_csv(f"/tmp/exp/blob2_{which}.csv", index=False)


main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)

# analysis (run after both "val" and "train"):
# import numpy as np, pandas as pd
# tr = pd.read_csv("/tmp/exp/blob2_train.csv"); va = pd.read_csv("/tmp/exp/blob2_val.csv")
#
# def peaks(df, stat):
#     out = []
#     for key, g in df.groupby(["id", "factor", "rep"]):
#         g = g.sort_values("sigma")
#         v = g[stat].to_numpy(); s = np.log(g.sigma.to_numpy())
#         i = int(np.argmax(v))
#         ls = s[i]
#         if 0 < i < len(v) - 1:  # parabola through the peak in log sigma
#             a, b, c = v[i - 1], v[i], v[i + 1]
#             den = a - 2 * b + c
#             if den < 0:
#                 ls = s[i] + 0.5 * (a - c) / den * (s[i + 1] - s[i - 1]) / 2
#         out.append(dict(id=key[0], factor=key[1], rep=key[2], kind=g.kind.iloc[0],
#                         truth=g.truth.iloc[0], sigma=float(np.exp(ls))))
#     return pd.DataFrame(out)
#
# for stat in ("e2", "p99", "mean"):
#     ptr, pva = peaks(tr, stat), peaks(va, stat)
#     for rep in ("nb", "h"):
#         t = ptr[ptr.rep == rep]
#         if t.empty: continue
#         k = float(np.exp(np.median(np.log(t.truth / t.sigma))))
#         v = pva[pva.rep == rep].copy()
#         v["ratio"] = k * v.sigma / v.truth
#         v["ok"] = (v.ratio < 1.3) & (v.ratio > 1 / 1.3)
#         t = t.copy(); t["ratio"] = k * t.sigma / t.truth; t["ok"] = (t.ratio < 1.3) & (t.ratio > 1/1.3)
#         print(f"\n== {stat} {rep} k={k:.2f}  train within 1.3: {t.ok.mean():.2f}  val: {v.ok.mean():.2f}")
#         print(v.pivot_table(index="kind", columns="factor", values="ok", aggfunc="mean").round(2).to_string())
#         print("median ratio", v.pivot_table(index="kind", columns="factor", values="ratio", aggfunc="median").round(2).to_string())
