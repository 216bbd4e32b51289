"""facelab's built-in plugins. Each module listed in BUILTIN is loaded like any other plugin."""

#: Module paths of the built-in plugins, registered by the core's plugin manager.
BUILTIN: tuple[str, ...] = (
    "facelab.plugins.datasets.utkface",
    "facelab.plugins.datasets.synthetic",
    "facelab.plugins.detectors.none",
    "facelab.plugins.balancers.none",
    "facelab.plugins.augment.keras_layers",
    "facelab.plugins.augment.keras_cv",
    "facelab.plugins.backbones.simple_cnn",
    "facelab.plugins.attention.none",
    "facelab.plugins.heads.classification",
    "facelab.plugins.losses.cross_entropy",
    "facelab.plugins.detectors.mtcnn",
    "facelab.plugins.balancers.smote",
    "facelab.plugins.balancers.oversample",
    "facelab.plugins.balancers.undersample",
    "facelab.plugins.backbones.efficientnet",
    "facelab.plugins.attention.cbam",
    "facelab.plugins.attention.se",
    "facelab.plugins.datasets.genki4k",
    "facelab.plugins.datasets.imdb_wiki",
    "facelab.plugins.augment.crop",
    "facelab.plugins.backbones.bknet",
    "facelab.plugins.heads.multitask",
    "facelab.plugins.losses.masked_multitask",
)
