"""harness-rdbt: regression-detection bi-knowledge transfer for cross-domain crowd counting.

Liu, Wang, Li, Zhang, Yang & Qin, "Towards Unsupervised Crowd Counting via Regression-Detection
Bi-knowledge Transfer", ACM MM 2020 (RDBT). Modules:

- :mod:`harness_rdbt.models`: regression counter R (DSSINet), detection counter D (CSP), Reg→Det transformer Φ
  (UNet++ with a VGG-16 first-10-conv encoder);
- :mod:`harness_rdbt.losses`: DMS-SSIM (DSSINet), focal-MSE (RDBT eq. 4–6), CSP's detection loss;
- :mod:`harness_rdbt.transforms`: pseudo boxes from points, CSP decoding, Ψ (Det→Reg, eq. 1), Φ decoding,
  density fusion (eq. 8), detection fusion + NMS with scale restoration, patch selection;
- :mod:`harness_rdbt.training`: source training and target fine-tuning (resumable);
- :mod:`harness_rdbt.strategy`: the ``rdbt`` / ``rdbt-source`` strategies and their counters;
- :mod:`harness_rdbt.plugin`: hook implementations (entry point ``rdbt`` of the ``harness`` group).
"""
__version__ = "0.1.0"
