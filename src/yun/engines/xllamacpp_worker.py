"""Replica process: runs one model in xllamacpp's in-process llama.cpp HTTP server.

Started by a `Cluster` backend (`yun.cluster.local`, or a Ray actor) as
`python -m yun.engines.xllamacpp_worker ...`. It binds the address it is given (127.0.0.1 unless the
replica must be reached from other machines) and, when `YUN_ENGINE_SECRET` is set in its environment
(never on its command line, which every local user can read), refuses every request that does not
carry it as `Authorization: Bearer <secret>`: only the controller and the gateways know it. It exits when
its parent dies, so a killed `yun serve` or Ray actor never leaves orphaned models holding memory.

LoRA adapters (`--lora FILE`, repeatable; llama.cpp adapter GGUFs of this base, as the trainer writes
them) are loaded with the model and numbered from 0 in the order given. Each loads at scale 0, so a
request that names none is answered by the base; a request picks one with llama.cpp's per-request
`"lora": [{"id": N, "scale": 1.0}]`. The set is fixed for the life of the process (TRAINING.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

__all__ = ["main"]


def _build_params(args: argparse.Namespace) -> object:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.port = args.port
    p.hostnames = [args.host]
    secret = os.environ.pop("YUN_ENGINE_SECRET", None)  # its children (none today) never inherit it
    if secret:
        p.api_keys = [secret]
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx * args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.verbosity = -1 if not args.verbose else 1
    p.warmup = False
    p.use_jinja = True
    if args.lora:
        # Scale 0: off unless a request turns it on (`lora_init_without_apply` does not switch one off).
        p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(path, 0.0) for path in args.lora]
    p.endpoint_metrics = True
    # One HTTP thread per open connection: keep more threads than the gateway's connection cap so a
    # health probe is always answered, even when every slot is busy and requests are queueing.
    p.n_threads_http = args.http_threads
    if args.embedding:
        p.embedding = True
        p.n_batch = args.ctx
        p.n_ubatch = args.ctx
        p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    return p


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yun-xllamacpp-worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (the node's, for other machines)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=4096, help="context per slot")
    parser.add_argument("--http-threads", type=int, default=80)
    parser.add_argument("--embedding", action="store_true")
    parser.add_argument("--lora", action="append", default=[], help="a LoRA adapter GGUF (repeatable; ids from 0)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):  # llama.cpp would only say "Failed to init server"
        parser.error(f"no model file at {args.model}")
    for path in args.lora:  # one bad adapter fails the whole server with a generic error: name it first
        if not os.path.isfile(path):
            parser.error(f"no LoRA adapter file at {path}")

    import xllamacpp

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    server = xllamacpp.Server(_build_params(args))
    print(f"listening {server.listening_address}", flush=True)  # noqa: T201 - parent reads this line
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
