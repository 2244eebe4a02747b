"""llama.cpp side of `cargo bench --bench llama_cpp` (llama-cpp-python).

Loads one GGUF twice (flash attention off and on), same thread count as ours,
one batch per prompt; then reads one JSON request per line
({"ids": [...], "flash": bool, "output": bool}), prefills those token ids
from an empty cache and answers {"ms": time of the prefill, "logits": the
last position's logits (when asked)}."""
import json
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

model, threads, longest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engines = {
    flash: Llama(
        model_path=model,
        n_ctx=longest + 8,
        n_batch=longest + 8,
        n_ubatch=longest + 8,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=flash,
        logits_all=False,
        verbose=False,
    )
    for flash in (False, True)
}
print(json.dumps({"ready": True, "version": llama_cpp.__version__}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    llm = engines[bool(request.get("flash"))]
    llm.reset()
    start = time.perf_counter()
    llm.eval(request["ids"])
    ms = (time.perf_counter() - start) * 1e3
    answer = {"ms": ms}
    if request.get("output"):
        # Without logits_all only the last position's logits are computed,
        # and llama-cpp-python no longer copies them into `scores`.
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        answer["logits"] = [float(x) for x in logits]
    print(json.dumps(answer), flush=True)
