"""The deploy plugin: ``facelab predict`` (classify every face in photos with a trained model) and
``facelab export`` (Keras, SavedModel, TFLite or ONNX, checked against the Keras model).

A model carries what it needs to be used elsewhere in its ``model_spec.json``
(:mod:`facelab.modelspec`): the tasks and class names, the input shape and colour mode, and the
detector component that crops its faces. This module imports nothing heavy: the commands import
TensorFlow, Keras, MLflow and the export runtimes when they run.
"""

from __future__ import annotations

import facelab


@facelab.hookimpl
def register_commands(cli):
    from facelab.plugins.deploy.commands import export, predict

    cli.add_command(predict)
    cli.add_command(export)
