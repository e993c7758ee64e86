"""Synthetic ImageNet-shaped data for models without real weights or data (ResNet-18, MobileNets).

No ImageNet images or weights can be downloaded here, so the CNNs have random weights and the data
is random. Only fidelity (cosine to the uncompressed model's logits) means anything then, and only if
two traps are avoided, both measured on ResNet-18 and MobileNetV2 at 224 px:

* White noise gives every image the same statistics, so global pooling makes all logits alike
  (pairwise cosine 0.999): a model that outputs a constant scored 0.999 fidelity. The images here
  are natural-image-like instead (1/f^k spectra with a random k per image, random contrast and colour
  cast) and the random networks get a data-dependent init (:func:`data_dependent_init`) that
  centres their logits, so the constant model scores ~0.2 and only input-dependent logits count.
* Random BatchNorm networks are chaotic: a tiny error in an early layer grows with depth. Residual
  branches are damped (as in SkipInit/Fixup): int8 per-channel weights score 0.998 (ResNet-18) and
  0.98 (MobileNetV2; ~0.88 undamped), 4-bit 0.62 and 0.23.

The numbers that come out are harsher than on trained networks (nothing in random weights is
redundant); compare methods on them, never against published ImageNet results.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from compressor.errors import CompressorError, DataError
from compressor.hf import input_spec
from compressor.task import Task, constant_output_fidelity, reference_outputs
from compressor.zoo.registry import register_dataset

#: Images are made in chunks of this many, which bounds the temporary memory at any ``samples``.
_CHUNK = 32
#: Scale of residual branches after BatchNorm calibration (1 = undamped; best of 1, 0.5, 0.25, 0.1).
RESIDUAL_GAIN = 0.5
#: Seed of the init's calibration images: far from the dataset splits' seeds (``seed``, ``seed + 1``).
_INIT_SEED = 2**31 - 1

NOTE = ("Random images (no ImageNet here) and, for zoo models, random weights: only fidelity to the "
        "uncompressed model is meaningful, and it is harsher than on a trained network; a constant "
        "output would score {floor:.2f}.")


def synthetic_images(samples: int, resolution: int = 224, seed: int = 0) -> Tensor:
    """Deterministic natural-image-like images, ``(samples, 3, resolution, resolution)``, ~N(0, 1).

    Sums of upsampled Gaussian noise, one octave each from full resolution down to 4 px, weighted by
    ``(octave size)^-k`` with a random k in [0, 1.5] per image (natural images are close to k = 1), then a random contrast in [0.3, 1.5]
    and colour cast, so images differ in their statistics and not only in their pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, samples, _CHUNK):
        n = min(_CHUNK, samples - start)
        slope = 1.5 * torch.rand(n, 1, 1, 1, generator=gen)
        x = torch.zeros(n, 3, resolution, resolution)
        size = resolution
        while size >= 4:
            noise = torch.randn(n, 3, size, size, generator=gen)
            x += F.interpolate(noise, size=resolution, mode="bilinear", align_corners=False) * (size / 4) ** -slope
            size //= 2
        x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)
        contrast = 0.3 + 1.2 * torch.rand(n, 1, 1, 1, generator=gen)
        chunks.append(x * contrast + 0.5 * torch.randn(n, 3, 1, 1, generator=gen))
    return torch.cat(chunks)


@torch.no_grad()
def data_dependent_init(model: nn.Module, head: nn.Linear, residual_norms: list[nn.BatchNorm2d],
                        resolution: int = 224) -> nn.Module:
    """Make a randomly initialised CNN behave like a trained one where fidelity can tell.

    On 32 synthetic images of size ``resolution`` (from a seed no dataset split uses): BatchNorm
    statistics are set from them (otherwise MobileNetV2's logits vanish to 1e-9), the BatchNorms
    ending residual branches are scaled by :data:`RESIDUAL_GAIN`, and the head's bias is shifted so
    that the mean logit is zero. Returns ``model`` in eval mode.
    """
    images = synthetic_images(32, resolution, seed=_INIT_SEED)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch sets the statistics exactly
    model.train()
    model(images)
    model.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for m in residual_norms:
        m.weight.mul_(RESIDUAL_GAIN)
        m.bias.mul_(RESIDUAL_GAIN)
    head.bias.sub_(model(images).mean(0))
    return model


@register_dataset("imagenet-synthetic", description="synthetic 3xRxR images (256 train / 64 held-out; R: the "
                  "model's image size or 224), targets: the original model's outputs (fidelity)")
def imagenet_synthetic_task(model: nn.Module | None = None, *, resolution: int | None = None, train_samples: int = 256,
                            val_samples: int = 64, seed: int = 0, batch_size: int = 32) -> Task:
    """Seeded synthetic images with the uncompressed model's outputs as targets.

    256 + 64 images at 224 px take 190 MB as float32, enough for int8 calibration (256 samples)
    while a fine-tune epoch stays short on a CPU. ``resolution`` defaults to a Hugging Face
    model's ``image_size``, else 224. Warns when a constant output (the mean training output)
    would score over 0.5 fidelity: the metric could not tell a broken model from a good one,
    typically because the model was built for another ``resolution``.
    """
    if model is None:
        raise CompressorError("dataset 'imagenet-synthetic' measures fidelity: it needs the uncompressed model")
    spec = input_spec(model)
    if spec is not None and spec.image_shape is None:
        raise DataError(f"dataset 'imagenet-synthetic': images, but the model reads {spec.modality} ({spec.kind})")
    if spec is not None and spec.image_shape[0] != 3:
        raise DataError(f"dataset 'imagenet-synthetic' makes RGB images; the model reads {spec.image_shape[0]} channels")
    resolution = resolution or (spec.image_shape[1] if spec is not None else 224)
    splits = []
    for samples, split_seed in ((train_samples, seed), (val_samples, seed + 1)):
        images = synthetic_images(samples, resolution, split_seed)
        splits.append(TensorDataset(images, reference_outputs(model, (images,), batch_size)))
    floor = constant_output_fidelity(*splits)
    if floor > 0.5:
        warnings.warn(f"imagenet-synthetic: a constant output scores {floor:.2f} fidelity, so fidelity "
                      f"barely depends on the input (zoo models: build them with resolution={resolution})",
                      stacklevel=2)
    image, out = (spec.input_names[0], spec.output_name) if spec is not None else ("image", "logits")
    return Task(name="imagenet-synthetic", metric="fidelity", train=splits[0], val=splits[1],
                input_names=[image], output_names=[out],
                dynamic_axes={image: {0: "batch"}, out: {0: "batch"}},
                preprocessing={image: f"RGB, NCHW (N, 3, {resolution}, {resolution}), float32, normalised "
                                      "like ImageNet (per-channel mean 0, std 1)",
                               out: "class logits: argmax is the prediction" if out == "logits" else "pooled features"},
                synthetic=True, note=NOTE.format(floor=floor), batch_size=batch_size)
