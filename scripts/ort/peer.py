"""ONNX Runtime side of `cargo bench --bench ort`: reads one JSON request per
line ({"ids": [...], "output": bool}), runs the model on them and answers
{"ms": time of session.run, "hidden": last hidden state (when asked)}."""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, threads = sys.argv[1], int(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
hidden_name = next(o.name for o in session.get_outputs() if len(o.shape) == 3)
print(json.dumps({"ready": True, "version": ort.__version__}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    ids = np.array([request["ids"]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    start = time.perf_counter()
    outputs = session.run([hidden_name], feed)
    ms = (time.perf_counter() - start) * 1e3
    answer = {"ms": ms}
    if request.get("output"):
        answer["hidden"] = outputs[0].reshape(-1).tolist()
    print(json.dumps(answer), flush=True)
