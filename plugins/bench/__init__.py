"""``facelab bench``: a recipe's training and inference speed, side by side with a plain Keras
loop on the same model and data.

- :mod:`.measure`: the measurements (TensorFlow imported when measuring);
- :mod:`.commands`: the ``facelab bench`` command, its tables (and the race paper's Table 3
  layout) and JSON;
- :mod:`.record`: ``--log``, an MLflow run per recipe tagged ``facelab.bench=true``, read by
  ``facelab paper-diff``.
"""

from __future__ import annotations

import facelab


@facelab.hookimpl
def register_commands(cli):
    from facelab.plugins.bench.commands import bench

    cli.add_command(bench)
