#!/usr/bin/env python3
"""onnxruntime side of the edge latency benchmark (`cargo bench -p dekm-cli --bench edge`).

Builds the exported encoder (convolutions with the strides and paddings the Rust side passes in
--layers, ReLU after each (leaky ReLU of slope 0.2 with --leaky), the dense layers after them
that the file holds, then the linear latent layer) as an ONNX graph from the weights in
model.safetensors, runs it with onnxruntime on one thread, and prints one JSON line:

    {"batch1_p50_us": ..., "batch1_mean_us": ..., "batch_per_s": ..., "version": ...}

Times are per `session.run` call measured from Python, so they include about a microsecond or
two of binding overhead. onnxruntime is a yardstick only, never a dependency of the product:
`pip install onnx onnxruntime safetensors numpy` where it is missing.
"""

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="model.safetensors")
    p.add_argument("--layers", required=True, help='JSON [{"stride": s, "pad": p}, ...]')
    p.add_argument("--input", required=True, help="C,H,W")
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--leaky", action="store_true", help="leaky ReLU (0.2) instead of ReLU")
    a = p.parse_args()
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from safetensors.numpy import load_file
    except ImportError as e:
        print(json.dumps({"error": f"{e}; pip install onnx onnxruntime safetensors numpy"}))
        return

    w = load_file(a.model)
    c, h, wd = (int(v) for v in a.input.split(","))
    layers = json.loads(a.layers)
    nodes, inits = [], []
    cur = "x"

    def activation(src: str, dst: str) -> None:
        if a.leaky:
            nodes.append(helper.make_node("LeakyRelu", [src], [dst], alpha=0.2))
        else:
            nodes.append(helper.make_node("Relu", [src], [dst]))

    for i, l in enumerate(layers):
        wn, bn = f"encoder.conv{i}.weight", f"encoder.conv{i}.bias"
        inits += [numpy_helper.from_array(w[wn], wn), numpy_helper.from_array(w[bn], bn)]
        k = w[wn].shape[2]
        pad = l["pad"]
        nodes.append(helper.make_node("Conv", [cur, wn, bn], [f"c{i}"], kernel_shape=[k, k],
                                      strides=[l["stride"]] * 2, pads=[pad] * 4))
        activation(f"c{i}", f"r{i}")
        cur = f"r{i}"
    nodes.append(helper.make_node("Flatten", [cur], ["flat"], axis=1))
    cur = "flat"
    i = 0
    while f"encoder.dense{i}.weight" in w:
        wn, bn = f"encoder.dense{i}.weight", f"encoder.dense{i}.bias"
        inits += [numpy_helper.from_array(w[wn], wn), numpy_helper.from_array(w[bn], bn)]
        nodes.append(helper.make_node("Gemm", [cur, wn, bn], [f"g{i}"], transB=1))
        activation(f"g{i}", f"h{i}")
        cur = f"h{i}"
        i += 1
    wn, bn = "encoder.latent.weight", "encoder.latent.bias"
    inits += [numpy_helper.from_array(w[wn], wn), numpy_helper.from_array(w[bn], bn)]
    nodes.append(helper.make_node("Gemm", [cur, wn, bn], ["z"], transB=1))
    d = w[wn].shape[0]
    graph = helper.make_graph(
        nodes, "dekm_encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, h, wd])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    xs = rng.random((256, c, h, wd), dtype=np.float32)
    for i in range(300):
        sess.run(None, {"x": xs[i % 256:i % 256 + 1]})
    lat = []
    for i in range(a.samples):
        x = xs[i % 256:i % 256 + 1]
        t = time.perf_counter_ns()
        sess.run(None, {"x": x})
        lat.append((time.perf_counter_ns() - t) / 1e3)
    lat.sort()
    xb = xs[:a.batch]
    sess.run(None, {"x": xb})
    batches = max(a.samples // a.batch, 1)
    t = time.perf_counter()
    for _ in range(batches):
        sess.run(None, {"x": xb})
    per_s = batches * a.batch / (time.perf_counter() - t)
    print(json.dumps({
        "batch1_p50_us": lat[len(lat) // 2],
        "batch1_mean_us": sum(lat) / len(lat),
        "batch_per_s": per_s,
        "version": ort.__version__,
    }))


if __name__ == "__main__":
    main()
