"""Expected GPU memory of the paper profiles' networks, measured on CPU with the same shapes.

For each network: parameters; weights + gradients + Adam moments in fp32 (16 bytes per trainable parameter);
and the peak resident memory of one forward + backward pass at the paper's input shape, measured in a fresh
process as the growth of the peak RSS (``resource.getrusage``) over the model's own footprint. On a GPU add the
CUDA context (~0.5 GiB); bf16/fp16 autocast roughly halves the activations.

    .venv/bin/python scripts/gpu_memory.py            # prints a Markdown table (minutes on a CPU)
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys

CASES = {
    # name: (what, input shape (B, C, H, W), train?)
    "rescsrnet-w1": ("ResCSRNet width 1.0 (PromptMix paper: full-size 1024×768 images, batch 1)", (1, 3, 768, 1024),
                     True),
    "mcnn": ("MCNN annotator inference, 1024×768 grey", (1, 1, 768, 1024), False),
    "csrnet": ("CSRNet annotator inference, 1024×768", (1, 3, 768, 1024), False),
    "dssinet": ("RDBT R: DSSINet full width, scales 0.5/1/2, 224-px crops, batch 4", (4, 3, 224, 224), True),
    "csp": ("RDBT D: CSP ResNet-50, 224-px crops, batch 4", (4, 3, 224, 224), True),
}


def build(name: str):
    import torch

    if name == "rescsrnet-w1":
        from harness.models.rescsrnet import ResCSRNet
        return ResCSRNet(width=1.0)
    if name == "mcnn":
        from harness.models.mcnn import MCNN
        return MCNN()
    if name == "csrnet":
        from harness.models.csrnet import CSRNet
        return CSRNet()
    if name == "dssinet":
        from harness_rdbt.models import DSSINet
        return DSSINet(1.0, (1.0, 0.5, 2.0), 2, False)
    if name == "csp":
        from harness_rdbt.models import CSPNet
        return CSPNet("resnet50", 1.0)
    raise KeyError(name)


def measure(name: str) -> dict:
    """Run in a fresh process: parameters, model RSS, peak RSS of one pass."""
    import torch

    torch.set_num_threads(2)
    _, shape, train = CASES[name]
    model = build(name)
    n = sum(p.numel() for p in model.parameters())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = torch.randn(*shape)
    if train:
        model.train()
        out = model(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (tuple, list)) else [out]))
        loss.backward()
    else:
        model.eval()
        with torch.inference_mode():
            model(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"params": n, "pass_mib": (peak - base) / 1024}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2])))
        return
    rows = ["| network (paper shapes) | parameters | weights+grads+Adam (fp32) | one pass, peak (CPU RSS) | "
            "expected GPU memory |", "|---|---|---|---|---|"]
    for name, (what, _, train) in CASES.items():
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True)
        if out.returncode:
            rows.append(f"| {what} | – | – | failed: {out.stderr.strip().splitlines()[-1][:80]} | – |")
            continue
        r = json.loads(out.stdout)
        state = r["params"] * (16 if train else 4) / 2**20
        total = (state + r["pass_mib"]) / 1024 + 0.5
        rows.append(f"| {what} | {r['params'] / 1e6:.1f} M | {state:.0f} MiB | {r['pass_mib']:.0f} MiB | "
                    f"≈ {total:.1f} GiB |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
