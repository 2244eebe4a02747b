"""Reads the weights out of a BERT ONNX export into a Hugging Face-layout
model.safetensors (MatMul weights are named by the bias their output is added
to, and transposed back to [out, in])."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

onnx_path, out_path = sys.argv[1], sys.argv[2]
graph = onnx.load(onnx_path).graph
inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
consumers = {}
for node in graph.node:
    for name in node.input:
        consumers.setdefault(name, []).append(node)

tensors = {}
prefix = "model.0.auto_model."
for name, value in inits.items():
    if name.startswith(prefix):
        tensors[name[len(prefix):]] = value
for node in graph.node:
    if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith(prefix):
        continue
    adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
    biases = [i for n in adds for i in n.input if i.startswith(prefix) and i.endswith(".bias")]
    if len(biases) != 1:
        sys.exit(f"cannot name MatMul weight {node.input[1]}: biases {biases}")
    weight = biases[0][len(prefix):-len(".bias")] + ".weight"
    tensors[weight] = np.ascontiguousarray(inits[node.input[1]].T)
layers = sum(1 for k in tensors if k.endswith("attention.self.query.weight"))
expected = 5 + layers * 16
if len(tensors) != expected:
    sys.exit(f"expected {expected} tensors for {layers} layers, found {len(tensors)}")
save_file({k: v.astype(np.float32) for k, v in tensors.items()}, out_path)
print(layers)
