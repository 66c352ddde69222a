"""`namexp explain`: where a run's model looks (Grad-CAM) and whether its attention modules attend at all.

* ``images``: a fixed, seeded, class-balanced selection of a split's images.
* ``gates``: forward hooks on every attention site capture the gate each module multiplies in, and summarise it.
* ``gradcam``: captum's LayerGradCam on the last convolutional stage, upsampled to the image size.
* ``grid``: the Grad-CAM picture (rows images, columns runs).
* ``report``: diagnostics.json / diagnostics.md / the rich table.
* ``command``: the command itself.
"""

from __future__ import annotations
