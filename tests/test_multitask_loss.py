"""The masked multi-task loss (the multi-task paper's eqs. 1 and 2), by hand and through Keras."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from facelab.data import Task
from facelab.errors import FacelabError
from facelab.manager import get_registry

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TASKS = {"smile": Task("smile", ("non-smile", "smile")),
         "age": Task("age", ("0-15", "16-25", "26-35", "36-45", "46-60", "61-100")),
         "gender": Task("gender", ("male", "female"))}


def component(kind: str, name: str, **values):
    entry = get_registry().get(kind, name)
    return entry, entry.validate(values, f"test.{kind}")


def loss_spec(**values):
    entry, params = component("loss", "masked-multitask", **values)
    return entry.factory(params, TASKS)


def tiny_model(seed: int = 0, backbone: str = "mbknet") -> keras.Model:
    """The core's assembly (input -> backbone -> heads) with small widths and no dropout."""
    keras.utils.set_random_seed(seed)
    b_entry, b_params = component("backbone", backbone, filters=[[4], [4], [8], [8]], init="glorot")
    h_entry, h_params = component("head", "multitask", units=[8, 8], dropout=0.0, init="glorot")
    inputs = keras.Input((16, 16, 1))
    features = b_entry.factory(b_params, (16, 16, 1))(inputs)
    return keras.Model(inputs, {t: h_entry.factory(h_params, task)(features)
                                for t, task in TASKS.items()})


def batch(seed: int = 0, m: int = 6):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (m, 16, 16, 1)).astype("float32")
    y = {"smile": np.array([1, -1, 0, -1, 1, -1]),
         "age": np.array([-1, 3, -1, 5, 0, -1]),
         "gender": np.array([-1, 1, -1, 0, 1, -1])}
    return x, {k: v[:m] for k, v in y.items()}


def test_eq1_against_a_hand_computation():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]],
                     "float32")
    labels = np.array([0, -1, 2, 1])
    # eq. 1: -(1/M) sum_i beta_i log p_i(label_i), M = 4, beta = (1, 0, 1, 1)
    by_hand = -(np.log(0.7) + np.log(0.3) + np.log(0.3))
    batch_loss = loss_spec().losses["age"]
    assert float(batch_loss(labels, probs)) == pytest.approx(by_hand / 4, rel=1e-6)
    labelled = loss_spec(normalizer="labelled").losses["age"]
    assert float(labelled(labels, probs)) == pytest.approx(by_hand / 3, rel=1e-6)
    assert float(batch_loss(np.full(4, -1), probs)) == 0.0
    # labels as a column, as Keras may pass them
    assert float(batch_loss(labels[:, None], probs)) == pytest.approx(by_hand / 4, rel=1e-6)


def branch_variables(model, task):
    return [v for v in model.trainable_variables if v.path.startswith(f"{task}_")]


def test_no_label_means_zero_gradient_into_the_branch():
    model, spec = tiny_model(), loss_spec()
    x, y = batch()
    y["smile"] = np.full(6, -1)
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        total = sum(spec.weights[t] * spec.losses[t](y[t], out[t]) for t in TASKS)
    smile = branch_variables(model, "smile")
    assert len(smile) == 6  # fc1, fc2, probs: kernel + bias
    for variable, grad in zip(smile, tape.gradient(total, smile)):
        assert grad is not None and not np.any(np.asarray(grad)), variable.path
    # the other branches do learn from this batch
    assert any(np.any(np.asarray(g)) for g in tape.gradient(total, branch_variables(model, "age")))


def test_unlabelled_samples_add_nothing_anywhere():
    """A task's gradient (backbone included) ignores the images of samples it has no label for:
    replacing them changes nothing, and it is the labelled-only gradient scaled by n_labelled/M."""
    model, spec = tiny_model(), loss_spec()
    x, y = batch()
    other = x.copy()
    unlabelled = y["smile"] < 0
    other[unlabelled] = np.random.default_rng(9).uniform(0, 255, other[unlabelled].shape)

    def grads(images, labels):
        with tf.GradientTape() as tape:
            loss = spec.losses["smile"](labels, model(images)["smile"])
        return [np.asarray(g) for g in tape.gradient(loss, model.trainable_variables)
                if g is not None]

    full, replaced = grads(x, y["smile"]), grads(other, y["smile"])
    only = grads(x[~unlabelled], y["smile"][~unlabelled])
    scale = (~unlabelled).sum() / len(x)
    assert len(full) == len(only) > 6  # backbone and smile branch
    for a, b, c in zip(full, replaced, only):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a, scale * c, rtol=1e-4, atol=1e-7)


def test_a_keras_training_step_leaves_an_unlabelled_branch_unchanged():
    model, spec = tiny_model(), loss_spec()
    spec.prepare_model(model)  # l2 = 0: nothing attached
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=spec.losses, loss_weights=spec.weights)
    x, y = batch()
    y["smile"] = np.full(6, -1)
    before = {v.path: np.asarray(v).copy() for v in model.trainable_variables}
    model.train_on_batch(x, y)
    for v in model.trainable_variables:
        changed = not np.array_equal(before[v.path], np.asarray(v))
        assert changed == (not v.path.startswith("smile_")), v.path


def kernels_squared(model) -> float:
    return sum(float(np.sum(np.square(v))) for v in model.trainable_variables
               if v.name == "kernel")


def test_eq2_compiled_total_includes_weights_and_l2():
    """evaluate()'s loss = sum_t mu_t L_t + lambda * ||W||^2 over every conv/FC kernel."""
    weights = {"smile": 2.0, "age": 0.5}
    model, spec = tiny_model(), loss_spec(weights=weights, l2=0.01)
    spec.prepare_model(model)
    model.compile(optimizer="sgd", loss=spec.losses, loss_weights=spec.weights)
    x, y = batch()
    probs = model.predict(x, verbose=0)
    mu = {"smile": 2.0, "age": 0.5, "gender": 1.0}  # unlisted tasks get 1
    by_hand = 0.0
    for task in TASKS:
        labelled = y[task] >= 0
        picked = probs[task][np.flatnonzero(labelled), y[task][labelled]]
        by_hand += mu[task] * -np.log(picked).sum() / len(x)
    l2 = 0.01 * kernels_squared(model)
    assert l2 > 0.01 * by_hand  # the term is not negligible, so the check below can fail
    result = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(by_hand + l2, rel=1e-4)
    assert float(keras.ops.sum(model.losses)) == pytest.approx(l2, rel=1e-5)
    n_kernels = sum(v.name == "kernel" for v in model.trainable_variables)
    assert sum(v.regularizer is not None for v in model.trainable_variables) == n_kernels == 4 + 9


def test_l2_scope_outputs_regularises_only_the_softmax_layers():
    model, spec = tiny_model(), loss_spec(l2=0.5, l2_scope="outputs")
    spec.prepare_model(model)
    regularised = sorted(v.path for v in model.trainable_variables if v.regularizer is not None)
    assert regularised == ["age_probs/kernel", "gender_probs/kernel", "smile_probs/kernel"]


def test_weights_must_name_trained_tasks():
    with pytest.raises(FacelabError, match=r"train\.loss\.weights\.gendre: unknown task 'gendre'; "
                                           r"did you mean 'gender'"):
        loss_spec(weights={"gendre": 1.0})
    with pytest.raises(FacelabError, match="l2"):
        component("loss", "masked-multitask", l2=-1.0)
