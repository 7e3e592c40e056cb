"""Run one ``ja.sweep`` in a subprocess (the kill, multi-process and concurrency tests).

    python tests/_sweep_worker.py MODEL_DIR TOKENS.npy OUT_DIR --chunk-size N
        [--eval-chunk-size N|auto] [--sleep SECONDS] [--worker INDEX COUNT] [--no-wait]
        [--barrier DIR N] [--distributed PORT PROCESS_ID NUM_PROCESSES] [--report FILE]

``--sleep`` pauses after every chunk this process computes (so that a test can kill it
mid-run, or so that two processes overlap); ``--worker`` sets ``worker=(INDEX, COUNT)``;
``--no-wait`` calls ``ja.sweep_chunks`` instead of ``ja.sweep``; ``--barrier`` starts the
sweep only once ``N`` processes (this one included) have loaded and arrived in ``DIR`` (so that
concurrent processes overlap); ``--distributed`` joins a
``jax.distributed`` job on localhost (CPU), so the worker index comes from
``jax.process_index()``; ``--report`` writes the computed chunk indices, the values (as float32
bytes in hex, for bit-exact comparisons), the process and the device count.
"""

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _chunk(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokens")
    parser.add_argument("out")
    parser.add_argument("--chunk-size", type=_chunk, required=True)
    parser.add_argument("--eval-chunk-size", type=_chunk, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--worker", type=int, nargs=2, default=None)
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument("--barrier", nargs=2, default=None)
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

    kw = dict(
        chunk_size=args.chunk_size,
        eval_chunk_size=args.eval_chunk_size,
        progress=False,
        on_chunk=on_chunk,
        poll_interval=0.05,
        worker=None if args.worker is None else tuple(args.worker),
    )
    comps = ja.heads(model.config)
    if args.barrier is not None:
        os.makedirs(args.barrier[0], exist_ok=True)
        open(os.path.join(args.barrier[0], str(os.getpid())), "w").close()
        while len(os.listdir(args.barrier[0])) < int(args.barrier[1]):
            time.sleep(0.01)
    if args.no_wait:
        ja.sweep_chunks(model, comps, "all", tokens, args.out, **kw)
        values = None
    else:
        values = ja.sweep(model, comps, "all", tokens, args.out, timeout=120, **kw)
    if args.report:
        report = {
            "computed": computed,
            "values": None if values is None else values.tolist(),
            "hex": None if values is None else np.asarray(values, np.float32).tobytes().hex(),
            "process": [jax.process_index(), jax.process_count()],
            "devices": len(jax.devices()),
        }
        with open(args.report, "w") as f:
            json.dump(report, f)
    if args.distributed is not None:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
