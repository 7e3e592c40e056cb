"""Run one ``ja.sweep`` in a subprocess (used by the kill test and the 2-process test).

    python tests/_sweep_worker.py MODEL_DIR TOKENS.npy OUT_DIR --chunk-size N
        [--sleep SECONDS] [--distributed PORT PROCESS_ID NUM_PROCESSES] [--report FILE]

``--sleep`` pauses after every chunk (so that a test can kill the process mid-run);
``--distributed`` joins a ``jax.distributed`` job on localhost (CPU), so the worker index comes
from ``jax.process_index()``; ``--report`` writes the computed chunk indices and the values.
"""

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokens")
    parser.add_argument("out")
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--distributed", type=int, nargs=3, default=None)
    parser.add_argument("--report", default=None)
    args = parser.parse_args()

    import jax

    if args.distributed is not None:
        port, process_id, num_processes = args.distributed
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    import numpy as np

    import jaxablate as ja

    model = ja.load_model(args.model)
    tokens = np.load(args.tokens)
    computed = []

    def on_chunk(index: int, start: int, stop: int) -> None:
        computed.append(index)
        if args.sleep:
            time.sleep(args.sleep)

    values = ja.sweep(
        model,
        ja.heads(model.config),
        "all",
        tokens,
        args.out,
        chunk_size=args.chunk_size,
        eval_chunk_size=2,
        progress=False,
        on_chunk=on_chunk,
        poll_interval=0.05,
        timeout=120,
    )
    if args.report:
        report = {
            "computed": computed,
            "values": values.tolist(),
            "process": [jax.process_index(), jax.process_count()],
        }
        with open(args.report, "w") as f:
            json.dump(report, f)
    if args.distributed is not None:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
