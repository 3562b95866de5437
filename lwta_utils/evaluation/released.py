"""The LWTA authors' released CIFAR-10 checkpoint: finding its files, checking them, loading the
weights strictly, and its evaluation (the authors' setting first, then the attack suite).

Files (``StudyConfig.released``, :class:`~lwta_utils.config.schema.ReleasedConfig`): the checkpoint
and the first 1,000 CIFAR-10 test images stay where they are (``released.root``, by default
``../shared/released``, beside the repository); nothing is copied into the repository. A clone
without that folder looks in ``released.fetch_root`` and, with ``released.fetch``, fetches the
checkpoint from the authors' public repository and reads the images from the CIFAR-10 test batch
through the project's CIFAR-10 reader (downloaded there by torchvision). Every file is checked by
its md5. A file that is not there and cannot be fetched raises :class:`ReleasedUnavailable` (the
chain step then skips with its message); a file that is there but is another file (md5), or a
checkpoint whose tensors do not fit the architecture, raises a ConfigError.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.config.schema import DataConfig, ReleasedConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.fileio import atomic_path
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.paths import resolve
from lwta_utils.core.registry import DATASETS
from lwta_utils.core.switches import noise_from, switches
from lwta_utils.evaluation.evaluate import ModelEvaluation, evaluate_model, mean_true_class_probs
from lwta_utils.evaluation.records import make_draw_record
from lwta_utils.evaluation.sanity import two_pass_gradients
from lwta_utils.models.inference import draw_logits
from lwta_utils.models.released import UNUSED_PREFIX, build_released_model, released_architecture


class ReleasedUnavailable(ConfigError):
    """A file of the released checkpoint is in none of the places looked at and cannot be fetched."""


def md5sum(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, expected: str, param: str) -> None:
    """A ConfigError naming the file when its md5 is not ``expected`` (the setting ``param``)."""
    found = md5sum(path)
    if found != expected:
        raise ConfigError(f"{path} is another file: md5 {found}, expected {expected} ({param}); put the "
                          f"original file there (docs/released_checkpoint.md says where it comes from)")


def images_md5(x: np.ndarray, y: np.ndarray) -> str:
    """md5 of uint8 images ``x`` then int64 labels ``y`` (their bytes, C order)."""
    return hashlib.md5(np.ascontiguousarray(x, np.uint8).tobytes()
                       + np.ascontiguousarray(y, np.int64).tobytes()).hexdigest()


# -- the checkpoint ---------------------------------------------------------------------------


def load_released_state(path: str | Path, md5: str) -> dict:
    """The checkpoint file at ``path`` (checked: it exists, its md5 is ``md5``), as a dict with
    'model_state_dict' (and the authors' 'epoch' when there)."""
    path = Path(path)
    if not path.is_file():
        raise ReleasedUnavailable(f"the released checkpoint {path} does not exist")
    check_md5(path, md5, "released.checkpoint_md5")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (truncated or not a torch file: one message)
        raise ConfigError(f"{path} cannot be read by torch.load ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        raise ConfigError(f"{path} holds no 'model_state_dict' (keys: {sorted(ckpt) if isinstance(ckpt, dict) else '-'})")
    return ckpt


def load_released_model(path: str | Path, md5: str, info, device: str | torch.device = "cpu"
                        ) -> tuple[nn.Module, dict]:
    """The project's WideResNet with the authors' weights from the checkpoint at ``path``, strictly:
    every tensor the forward pass uses comes from the file, every tensor of the file finds its
    place, except ``sub_block1`` (built by the authors' constructor, never used by their forward
    pass), which is ignored and named in the report. A missing file, another file (md5) or a
    tensor of another shape is one ConfigError. Returns (model in eval mode, report)."""
    ckpt = load_released_state(path, md5)
    model, (mapped, problems) = build_released_model(ckpt["model_state_dict"], info)
    wrong = [(what, problems[what]) for what in ("missing", "shape", "unexpected") if problems[what]]
    if wrong:
        what = "; ".join(f"{len(keys)} {kind} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                         for kind, keys in wrong)
        raise ConfigError(f"{path} does not fit the LWTA WideResNet it describes: {what}")
    model.load_state_dict(mapped, strict=True)
    model.to(device).eval()
    ignored = problems["ignored"]
    depth, widen_factor = released_architecture(ckpt["model_state_dict"])
    report = {"loaded": len(mapped), "ignored": ignored, "epoch": ckpt.get("epoch"), "depth": depth,
              "widen_factor": widen_factor,
              "message": (f"loaded {len(mapped)} tensors (every one the forward pass uses); ignored "
                          f"{len(ignored)} tensors of {UNUSED_PREFIX[:-1]} (a block the authors' constructor "
                          f"builds and their forward pass never uses)") if ignored else
                         f"loaded {len(mapped)} tensors (every one the forward pass uses)"}
    return model, report


# -- finding and fetching the files ------------------------------------------------------------


@dataclass
class ReleasedFiles:
    """Where the step found (or fetched) its inputs; ``images`` is None when the images come from
    the CIFAR-10 files under ``cifar_root`` (read through the project's reader)."""

    checkpoint: Path
    images: Path | None
    cifar_root: Path | None = None
    fetched: list[str] = field(default_factory=list)


def where_to_put(r: ReleasedConfig) -> str:
    """The one message of a skip: which files to put where."""
    return (f"put {r.checkpoint} (md5 {r.checkpoint_md5}; the authors' model-cifar-wideResNet/ckpt.pt, "
            f"{r.checkpoint_url}) and {r.images} (md5 {r.images_md5}; the first 1,000 CIFAR-10 test images, "
            f"docs/released_checkpoint.md) in {r.root}/ or {r.fetch_root}/, or CIFAR-10's python batches in "
            f"{r.fetch_root}/cifar-10-batches-py/ (released.root, released.fetch_root)")


def fetch_url(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (atomically) and check its md5; a file of another md5 is removed.
    Raises ReleasedUnavailable when the network (or the file) is not there or the md5 differs."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh)
            found = md5sum(tmp)
            if found != md5:
                raise ReleasedUnavailable(f"{url} gave a file of md5 {found}, not the expected {md5}")
    except ReleasedUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 (no network, 404, refused, timeout: one message)
        raise ReleasedUnavailable(f"cannot fetch {url} ({type(exc).__name__}: {exc})") from None
    return dest


def find_released(r: ReleasedConfig, *, fetch: bool | None = None) -> ReleasedFiles:
    """The files of the released checkpoint: each in ``root``, else in ``fetch_root``, else fetched
    there (``fetch``, default ``r.fetch``). A file found is checked by md5 (ConfigError); a file
    found nowhere and not fetched raises ReleasedUnavailable with :func:`where_to_put`."""
    fetch = r.fetch if fetch is None else fetch
    roots = [resolve(r.root), resolve(r.fetch_root)]
    fetched, reasons = [], []
    ckpt = next((d / r.checkpoint for d in roots if (d / r.checkpoint).is_file()), None)
    if ckpt is None and fetch:
        try:
            ckpt = fetch_url(r.checkpoint_url, roots[1] / r.checkpoint, r.checkpoint_md5)
            fetched.append(str(ckpt))
        except ReleasedUnavailable as exc:
            reasons.append(str(exc))
    images = next((d / r.images for d in roots if (d / r.images).is_file()), None)
    cifar_root = None
    if images is None:
        batches = roots[1] / "cifar-10-batches-py" / "test_batch"
        if batches.is_file() or fetch:
            cifar_root = roots[1]
    if ckpt is None or (images is None and cifar_root is None):
        missing = [name for name, found in ((r.checkpoint, ckpt), (r.images, images or cifar_root)) if found is None]
        raise ReleasedUnavailable(f"the released checkpoint step needs {' and '.join(missing)}, found in neither "
                                  f"{r.root}/ nor {r.fetch_root}/" + (f" ({'; '.join(reasons)})" if reasons else "")
                                  + f": {where_to_put(r)}")
    check_md5(ckpt, r.checkpoint_md5, "released.checkpoint_md5")
    if images is not None:
        check_md5(images, r.images_md5, "released.images_md5")
    return ReleasedFiles(ckpt, images, cifar_root, fetched)


def load_released_images(files: ReleasedFiles, r: ReleasedConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``r.n_images`` images (float pixels in [0, 1], (N, 3, 32, 32)) and labels: from the
    npz (checked by md5 in :func:`find_released`), or from the CIFAR-10 test batch through the
    project's reader (downloaded under ``cifar_root`` by torchvision when allowed), checked by
    ``images_content_md5``."""
    if files.images is not None:
        with np.load(files.images) as data:
            if "x" not in data.files or "y" not in data.files:
                raise ConfigError(f"{files.images} holds {data.files}, not 'x' (uint8 images) and 'y' (labels)")
            x, y = data["x"], data["y"]
    else:
        loader, _ = DATASETS.lookup("data.name", "cifar10")
        try:
            _, _, xt, yt = loader(DataConfig(name="cifar10", root=str(files.cifar_root), download=True))
        except ConfigError as exc:  # no files and no torchvision / network
            raise ReleasedUnavailable(f"the CIFAR-10 test images cannot be read ({exc}): {where_to_put(r)}") from None
        x = (xt[:1000] * 255).round().to(torch.uint8).numpy()
        y = yt[:1000].numpy().astype(np.int64)
        found = images_md5(x, y)
        if found != r.images_content_md5:
            raise ConfigError(f"the first 1,000 CIFAR-10 test images under {files.cifar_root} have md5 {found}, "
                              f"expected {r.images_content_md5} (released.images_content_md5): another file")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32) or len(y) != len(x) or len(x) < r.n_images:
        raise ConfigError(f"the released images are {x.dtype} {x.shape} with {len(y)} labels; expected uint8 "
                          f"(>= {r.n_images}, 3, 32, 32) and as many labels")
    return (torch.as_tensor(x[: r.n_images]).float() / 255.0, torch.as_tensor(y[: r.n_images], dtype=torch.int64))


# -- the evaluation --------------------------------------------------------------------------


HASHED_FIELDS = ("checkpoint_md5", "images_md5", "n_images", "batch_size", "draws", "attack_draws", "eps",
                 "authors_attack", "attacks", "cascade", "n_gradients", "n_saved_examples", "example_attacks")


def released_hash(r: ReleasedConfig, seed: int, sanity=None, confirm_draws: int = 1) -> str:
    """Hash of everything the step's records depend on: the files (md5), the settings of the
    evaluation, the sanity thresholds, the draws that confirm an attack's success and the seed (not
    where the files are, nor the display name)."""
    settings = {k: v for k, v in dataclasses.asdict(r).items() if k in HASHED_FIELDS}
    payload = {"released": settings, "seed": seed, "confirm_draws": confirm_draws,
               "sanity": dataclasses.asdict(sanity) if sanity is not None else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def suite_attacks(r: ReleasedConfig) -> list:
    """The attacks of the step: the authors' first, then the suite."""
    return [r.authors_attack, *r.attacks]


def clean_draws(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, batch_size: int,
                generator: torch.Generator) -> torch.Tensor:
    """Logits of ``draws`` forward passes (draws, N, classes), in eval mode, at the test
    temperature with sampling on (the authors' test-time behaviour), the winners drawn from
    ``generator``."""
    with eval_mode(model), noise_from(model, generator), switches(model, phase="test", stochastic=True,
                                                                     test_mode="sample"):
        return draw_logits(model, x, draws, batch_size)


GRADIENT_MODES = ("relaxed", "straight_through")  # the LWTA layer's two gradients


def gradient_cosines(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                     generator: torch.Generator) -> dict[str, np.ndarray]:
    """Per image and gradient mode ('relaxed': the model's own; 'straight_through': the drawn
    winner mask held constant in the backward pass): the cosine between the input gradients
    (cross-entropy) of two forward passes with fresh draws, and whether a gradient is all zero."""
    out = {}
    for mode in GRADIENT_MODES:
        cos, zero = [], []
        with eval_mode(model), noise_from(model, generator), switches(model, phase="test", stochastic=True,
                                                                         test_mode="sample", gradient=mode):
            for i in range(0, len(x), batch_size):
                g1, g2 = two_pass_gradients(model, x[i:i + batch_size], y[i:i + batch_size])
                cos.append(F.cosine_similarity(g1, g2, dim=1, eps=1e-30))
                zero.append((g1 == 0).all(1) | (g2 == 0).all(1))
        out[mode], out[f"{mode}_zero"] = torch.cat(cos).numpy(), torch.cat(zero).numpy()
    return out


def gradient_rows(cos: dict[str, np.ndarray]) -> list[dict]:
    """The table of :func:`gradient_cosines`: per mode, n, mean, sd and median cosine, zero share."""
    return [{"gradient": mode, "temperature": "test (0.01)", "n": int(len(cos[mode])),
             "cos_mean": float(cos[mode].mean()), "cos_sd": float(cos[mode].std(ddof=1)) if len(cos[mode]) > 1 else 0.0,
             "cos_median": float(np.median(cos[mode])), "zero_gradient_share": float(cos[f"{mode}_zero"].mean())}
            for mode in GRADIENT_MODES]


def sanity_gradients(cos: dict[str, np.ndarray]) -> dict:
    """The gradient statistics the sanity checks read (the model's own, relaxed, gradient, as for
    every model), with the straight-through ones beside them."""
    rel, st = cos["relaxed"], cos["straight_through"]
    return {"gradient_cosine_median": float(np.median(rel)), "gradient_cosine_mean": float(rel.mean()),
            "zero_gradient_share": float(cos["relaxed_zero"].mean()), "n_examples": int(len(rel)),
            "straight_through_cosine_median": float(np.median(st)),
            "straight_through_cosine_mean": float(st.mean())}


def evaluate_released(model: nn.Module, x: torch.Tensor, y: torch.Tensor, r: ReleasedConfig, *, seed: int,
                      meta: dict, confirm_draws: int = 1, progress: bool = True) -> tuple[ModelEvaluation, dict]:
    """The authors' setting, then the suite, on ``x``, ``y``:

    1. clean accuracy over ``r.draws`` forward passes (mean +- sd; the clean record), the
       winners drawn from an evaluation generator of their own;
    2. every attack of ``[r.authors_attack, *r.attacks]``, each image classified ``r.attack_draws``
       times after it (those of ``r.cascade`` as the adaptive cascade at ``r.eps``), and the
       per-image worst case at ``r.eps`` (``evaluate_model``).

    Returns the evaluation (the clean record, probabilities and correctness are those of the
    ``r.draws`` passes) and the clean draw statistics with the wall times."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed + 1)  # evaluation draws: their own stream
    logits = clean_draws(model, x, y, r.draws, r.batch_size, gen)
    correct = (logits.argmax(2) == y).numpy()
    clean_wall = time.perf_counter() - t0
    clean = make_draw_record(correct, attack="none", attack_name="none", attack_label="clean", kind="clean",
                             eps=0.0, steps=0, step_size=0.0, restarts=0, eot_samples=1, seed=seed, stochastic=True,
                             wall_time_s=clean_wall, **meta)
    if progress:
        print(f"  clean, {r.draws} draws: {100 * clean.accuracy:.2f}% +- {100 * clean.accuracy_sd:.2f} (sd over draws) "
              f"[{100 * clean.ci_low:.1f}, {100 * clean.ci_high:.1f}], correct in every draw "
              f"{100 * clean.worst_accuracy:.1f}% ({clean_wall:.1f}s)", flush=True)
    ev = evaluate_model(model, x, y, suite_attacks(r), batch_size=r.batch_size, seed=seed, meta=meta,
                        draws=r.attack_draws, confirm_draws=confirm_draws, headline_eps=r.eps, cascade=tuple(r.cascade),
                        example_attacks=tuple(r.example_attacks),
                        n_saved_examples=r.n_saved_examples, progress=progress)
    ev.correct["none_attack_draws@0"] = ev.correct["none@0"]  # the clean pass of the suite's own draws
    ev.correct["none@0"] = correct
    ev.probs["none@0"] = mean_true_class_probs(logits, y)
    ev.records[0] = clean
    per_draw = correct.mean(1)
    stats = {"draws": int(r.draws), "n": int(len(y)), "per_draw_accuracy": [float(a) for a in per_draw],
             "mean": float(per_draw.mean()), "sd": float(per_draw.std(ddof=1)), "min": float(per_draw.min()),
             "max": float(per_draw.max()), "correct_in_every_draw": float(correct.all(0).mean()),
             "share_changing": float((correct != correct[0]).any(0).mean()), "wall_time_s": clean_wall}
    return ev, stats
