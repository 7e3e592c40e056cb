"""Run one checkpointed ``ja.recover`` call for the interrupt-and-resume test.

Usage: ``python tests/_recovery_worker.py MODEL_DIR DATA_NPZ CHECKPOINT_DIR``. After each
checkpoint it prints ``saved <step>`` and sleeps, so the test can SIGKILL it after a checkpoint
and before the run ends.
"""

import sys
import time

import jax
import numpy as np

import jaxablate as ja
from jaxablate import _recovery_ckpt
from jaxablate.recovery import recover


def main() -> None:
    model_dir, data_path, ckpt_dir = sys.argv[1:4]
    original_save = _recovery_ckpt.Store.save

    def save_then_pause(self, step, *args, **kwargs):
        original_save(self, step, *args, **kwargs)
        print(f"saved {step}", flush=True)
        time.sleep(2.0)

    _recovery_ckpt.Store.save = save_then_pause
    data = np.load(data_path)
    model = ja.load_model(model_dir)
    comps = ja.heads(model.config) + ja.blocks(model.config, "mlp")
    recover(
        model,
        comps,
        data["rows"],
        data["train"],
        steps=int(data["steps"]),
        eval_tokens=data["eval"],
        eval_every=int(data["eval_every"]),
        batch_size=int(data["batch_size"]),
        key=jax.random.key(int(data["seed"])),
        checkpoint_dir=ckpt_dir,
        checkpoint_every=int(data["eval_every"]),
        progress=False,
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
