"""Sketches of float data: equal up to last-bit differences, different for any real change.

A sweep or recovery run resumed on another machine recomputes its mean or resample replacements
and metric data with different last bits; their sketches must agree there (and only there).
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxablate._fingerprint import reconcile, sketch, sketches_agree
from jaxablate._recovery_ckpt import optimizer_fields
from tests._elsewhere import optimizer_elsewhere

SHAPES = [(3,), (4, 1, 8, 4, 8), (2, 4096 * 3 + 7)]  # one row, several, a partial last row


def _ulps(a: np.ndarray, every: int = 1) -> np.ndarray:
    """``a`` with every ``every``-th value moved by one unit in the last place."""
    b = a.copy().reshape(-1)
    b[::every] = np.nextafter(b[::every], np.inf).astype(a.dtype)
    return b.reshape(a.shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_last_bits_agree_and_a_real_change_does_not(shape):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert sketches_agree(sketch({"z": a}), sketch({"z": _ulps(a)}))
    assert sketches_agree(sketch({"z": a}), sketch({"z": _ulps(a) * (1 + 2e-6)}))
    for index in (0, -1):  # one value changed (the first row, the last partial one)
        b = a.copy().reshape(-1)
        b[index] = b[index] * 1.1 + 0.1
        assert not sketches_agree(sketch({"z": a}), sketch({"z": b.reshape(shape)}))
    noisy = a + 1e-3 * np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    assert not sketches_agree(sketch({"z": a}), sketch({"z": noisy}))


def test_bfloat16_last_bits_agree():
    a = np.random.default_rng(2).standard_normal((6, 300)).astype(jnp.bfloat16)
    b = a.view(np.uint16).copy()
    b[::7] += 1  # a tenth of the values one bfloat16 ulp up
    assert sketches_agree(sketch(a), sketch(b.view(jnp.bfloat16)))
    assert not sketches_agree(sketch(a), sketch((a.astype(np.float32) * 1.05).astype(a.dtype)))


def test_structure_dtype_and_exact_leaves():
    a = np.ones((2, 3), np.float32)
    ids = np.array([1, 2, 3])
    base = sketch({"w": a, "ids": ids})
    assert sketches_agree(base, sketch({"w": a, "ids": ids}))
    assert not sketches_agree(base, sketch({"w": a, "ids": ids + 1}))  # ints: exact
    assert not sketches_agree(base, sketch({"v": a, "ids": ids}))
    assert not sketches_agree(base, sketch({"w": a.reshape(3, 2), "ids": ids}))
    assert not sketches_agree(base, sketch({"w": a.astype(np.float64), "ids": ids}))
    assert not sketches_agree(base, sketch({"w": a}))
    assert sketches_agree(sketch(None), sketch(None))
    assert not sketches_agree(base, "not a sketch")


def test_reconcile_takes_the_stored_field_only_when_digests_alone_differ():
    a = np.random.default_rng(3).standard_normal(50).astype(np.float32)
    stored = {
        "ablation": {"kind": "mean", "sha256": "a" * 64},
        "ablation_sketch": sketch(a),
        "metric": ["loss", "b" * 64, None],
        "metric_sketch": sketch(None),
    }
    current = dict(stored, ablation={"kind": "mean", "sha256": "c" * 64})
    current["ablation_sketch"] = sketch(_ulps(a))
    out, near = reconcile(stored, current, ("ablation", "metric"))
    assert near == ["ablation"] and out == stored
    renamed = dict(current, metric=["accuracy", "d" * 64, None])
    out, near = reconcile(stored, renamed, ("ablation", "metric"))
    assert near == ["ablation"] and out["metric"] == ["accuracy", "d" * 64, None]  # refused later
    changed = dict(current, ablation_sketch=sketch(a * 1.1))
    out, near = reconcile(stored, changed, ("ablation", "metric"))
    assert near == [] and out["ablation"] != stored["ablation"]
    # written before sketches: compared exactly, as it was written to be
    old = {k: v for k, v in stored.items() if not k.endswith("_sketch")}
    out, near = reconcile(old, current, ("ablation", "metric"))
    assert near == [] and "ablation_sketch" not in out and out["ablation"] == current["ablation"]


#: Changes of a recovery optimizer that its fingerprint must refuse, the smallest usual ones.
OPTIMIZER_CHANGES = {
    "learning rate +1%": optax.adamw(1.01e-3),
    "b1 0.9 -> 0.91": optax.adamw(1e-3, b1=0.91),
    "b2 0.999 -> 0.9999": optax.adamw(1e-3, b2=0.9999),
    "weight decay 1e-4 -> 1.1e-4": optax.adamw(1e-3, weight_decay=1.1e-4),
    "eps 1e-8 -> 1e-7": optax.adamw(1e-3, eps=1e-7),
    "schedule": optax.adamw(optax.linear_schedule(1e-3, 0.0, 10)),
    "clipping": optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
    "another optimizer": optax.adam(1e-3),
}


def optimizer_fingerprint(tx: optax.GradientTransformation) -> str:
    return optimizer_fields(tx)["optimizer"]


def optimizer_sketch(tx: optax.GradientTransformation) -> list | None:
    return optimizer_fields(tx)["optimizer_sketch"]


def test_optimizer_on_another_device_agrees_and_any_real_change_does_not():
    base = optax.adamw(1e-3)
    probed = optimizer_sketch(base)
    assert sketches_agree(probed, optimizer_sketch(optax.adamw(1e-3)))
    elsewhere = optimizer_elsewhere(base)  # its updates two ulps off
    assert optimizer_fingerprint(elsewhere) != optimizer_fingerprint(base)  # digest alone: refused
    assert sketches_agree(probed, optimizer_sketch(elsewhere))
    for change, tx in OPTIMIZER_CHANGES.items():
        assert optimizer_fingerprint(tx) != optimizer_fingerprint(base), change
        assert not sketches_agree(probed, optimizer_sketch(tx)), change


def test_an_optimizer_that_cannot_be_probed_compares_by_its_digest():
    def update(grads, state, params=None, *, value):  # needs an extra argument
        return grads, state

    tx = optax.GradientTransformation(lambda params: (), update)
    assert optimizer_fingerprint(tx) == "unprobed:GradientTransformation:TypeError"
    assert optimizer_sketch(tx) is None
    stored = {"optimizer": optimizer_fingerprint(tx), "optimizer_sketch": None}
    other = {"optimizer": "unprobed:Other:TypeError", "optimizer_sketch": None}
    assert reconcile(stored, other) == (other, [])
