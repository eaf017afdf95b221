#!/usr/bin/env python3
"""PyTorch side of the convolution benchmark (`cargo bench -p dekm-cli --bench conv`).

Trains the paper's convolutional autoencoder exactly as `dekm` builds it (same layers, padding,
output padding, ReLU placement, MSE, Adam lr 1e-3, batch size, thread count) for a fixed number of
steps on MNIST, then times the encoder's inference pass over the images, and prints one JSON line:

    {"s_per_batch": ..., "images_per_s_train": ..., "embed_images_per_s": ..., "threads": ...}

`--device cuda` runs both on the GPU, the images loaded onto it once (as `dekm train --device
cuda` holds them), timed with the GPU synchronised; `s_per_epoch_70k` is then the figure
`scripts/gpu-check.sh` sets against dekm's pretraining epoch.

PyTorch is only a yardstick here, never a dependency of the product. `pip install torch` where it
is missing.
"""

import argparse
import gzip
import json
import os
import sys
import time


def load_mnist(data_dir: str, limit: int) -> "np.ndarray":
    """The first `limit` images of train+t10k, scaled to [0, 1], as [n, 1, 28, 28] f32."""
    out = []
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        path = os.path.join(data_dir, "mnist", name)
        opener = gzip.open if os.path.exists(path + ".gz") else open
        path = path + ".gz" if os.path.exists(path + ".gz") else path
        with opener(path, "rb") as f:
            raw = f.read()
        if int.from_bytes(raw[0:4], "big") != 0x00000803:
            sys.exit(f"{path}: not an IDX image file")
        n = int.from_bytes(raw[4:8], "big")
        out.append(np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, 28, 28))
    images = np.concatenate(out)[:limit]
    return (images.astype(np.float32) / 255.0).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embed-images", type=int, default=70000)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()

    # Missing packages are a skipped contestant, not a failed benchmark: the Rust side still
    # reports its own figures.
    global np
    try:
        import numpy as np
        import torch
        from torch import nn
    except ImportError as e:
        print(json.dumps({"error": f"{e} (pip install torch numpy)"}))
        return

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_mnist(args.data_dir, max(args.embed_images, args.batch_size * args.steps))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"error": f"--device {args.device}: torch sees no GPU"}))
        return
    device = torch.device(args.device)
    x_all = torch.from_numpy(data).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    encoder = nn.Sequential(
        nn.Conv2d(1, 32, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(32, 64, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=0), nn.ReLU(),
        nn.Flatten(), nn.Linear(1152, 10),
    )
    decoder = nn.Sequential(
        nn.Linear(10, 1152), nn.ReLU(), nn.Unflatten(1, (128, 3, 3)),
        nn.ConvTranspose2d(128, 64, 3, stride=2, padding=0), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 5, stride=2, padding=2, output_padding=1),
    )
    model = nn.Sequential(encoder, decoder).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()

    n = x_all.shape[0]
    perm = torch.randperm(n, device=device)

    def step(i: int) -> float:
        idx = perm[(i * args.batch_size) % (n - args.batch_size):][: args.batch_size]
        xb = x_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), xb)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(args.warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    sync()
    train_s = time.perf_counter() - start

    encoder.eval()
    embed_n = min(args.embed_images, n)
    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, embed_n, 1024):
            encoder(x_all[lo:lo + 1024])
    sync()
    embed_s = time.perf_counter() - start

    print(json.dumps({
        "torch": torch.__version__,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "s_per_batch": train_s / args.steps,
        "s_per_epoch_70k": train_s / args.steps * 70000 / args.batch_size,
        "images_per_s_train": args.steps * args.batch_size / train_s,
        "embed_images": embed_n,
        "embed_images_per_s": embed_n / embed_s,
    }))


if __name__ == "__main__":
    main()
