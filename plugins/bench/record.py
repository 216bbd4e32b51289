"""``facelab bench --log``: one MLflow run per benched recipe, in the recipe's tracking store and
experiment, tagged ``facelab.bench=true``, so ``facelab paper-diff`` can put the speeds next to
a paper's (its Table 3). MLflow is imported only here, when logging."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

#: The tag marking a bench run; paper-diff looks for it.
BENCH_TAG = "facelab.bench"
#: The tag naming the device the bench ran on.
DEVICE_TAG = "facelab.device"
#: The bench's JSON, logged as this artifact.
ARTIFACT = "bench/bench.json"


def bench_tags(recipe, result) -> dict[str, str]:
    """A run's tags (provenance, then the plugins' ``run_tags``, then the recipe's own), and the
    bench's."""
    from facelab.manager import get_plugin_manager
    from facelab.runner import collect_tags

    tags = collect_tags(get_plugin_manager().hook, recipe)
    tags.update({BENCH_TAG: "true", DEVICE_TAG: result.device})
    return tags


def bench_params(recipe, result) -> dict[str, str]:
    """The resolved recipe (as a run logs it) and how the bench measured (``bench.*``)."""
    from facelab.plugins.mlflow.tracking import _param_text

    params = dict(recipe.flat())
    params.update({
        "bench.device": result.device, "bench.input_shape": "x".join(map(str, result.input_shape)),
        "bench.batches": result.batches, "bench.rounds": result.rounds,
        "bench.epochs": result.epochs, "bench.train_samples": result.train_samples.count,
        "bench.train_samples_source": result.train_samples.source,
        "bench.train_seconds": "estimate: epochs x train_samples / measured training images/s"})
    return {key: _param_text(value) for key, value in params.items()}


def log_result(recipe, result) -> str:
    """Log one bench result as a FINISHED MLflow run; returns its run id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from facelab.plugins.mlflow import tracking

    settings = recipe.schema.tracking
    tracking.quiet_mlflow()
    tracking.check_store(settings.uri)
    experiment = tracking.use_experiment(settings.uri, settings.experiment)
    client = MlflowClient(tracking.tracking_uri(settings.uri))
    tags = {k: tracking.tag_text(v) for k, v in bench_tags(recipe, result).items()}
    run = client.create_run(experiment.experiment_id, run_name=f"bench {recipe.name}",
                            tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(tracking._metric_key(k), v, now, 0) for k, v in result.metrics().items()]
        tracking.log_batches(client, run_id, params=bench_params(recipe, result),
                             metrics=metrics)
        with tempfile.TemporaryDirectory(prefix="facelab-bench-") as folder:
            path = Path(folder) / Path(ARTIFACT).name
            path.write_text(json.dumps(result.to_json(), indent=2))
            client.log_artifact(run_id, str(path), str(Path(ARTIFACT).parent))
    except BaseException as exc:
        client.set_tag(run_id, "facelab.error", tracking.tag_text(f"{type(exc).__name__}: {exc}"))
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
