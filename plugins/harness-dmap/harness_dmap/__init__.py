"""harness-dmap: the density-map report (seed 003, "Custom density map generation ... VGG16 baseline", NWPU-Crowd) as
a crowd-harness plugin.

Every image is resized to 224 × 224; its training target is a map with a PIL-drawn circle at each head (§6) — or, the
report's proposed fix (§11), a Gaussian density map; a map network predicts the map — the VGG-16 one (§7: VGG-16's
first ten Keras layers, two 3 × 3 convolutions and a × 4 up-sampling, 2 031 681 parameters) or the no-pooling one
(§8: seven 3 × 3 convolutions, 4 501 889 parameters) — and a fully connected regressor (§12: flatten, three dense
layers of 4028, one output) maps the predicted map to the count. Modules:

- :mod:`harness_dmap.maps`: circle maps (PIL) and Gaussian maps at the network size;
- :mod:`harness_dmap.models`: the two map networks and the count regressor;
- :mod:`harness_dmap.config`: the options (no torch); :mod:`harness_dmap.strategy`: the ``dmap`` strategy (both stages
  on the core training loop) and its counter;
- :mod:`harness_dmap.plugin`: hook implementations (entry point ``dmap`` of the ``harness`` group).
"""
__version__ = "0.1.0"
