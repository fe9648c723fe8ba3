"""Source of truth for the lesson notebooks: one function per notebook, written with nbformat.

    python notebooks/build_notebooks.py          # (re)write notebooks/*.ipynb and the student copies
    python notebooks/build_notebooks.py --check  # exit 1 if a committed notebook differs from this file

Edit the lessons here, not in Jupyter: the .ipynb files are generated, committed without outputs,
and tests/test_notebooks.py checks that they match this file. Cell ids are fixed (``nbNN-MM``) so
that a rebuild of an unchanged lesson is byte-identical.

Each notebook's first code cell (tagged ``parameters``) chooses a scale from the environment:
``MINISPDF_SCALE=default`` (laptop CPU, a few minutes), ``gpu`` (one GPU, bigger) or ``smoke``
(CI, seconds). Run times in the first cell of each lesson are measured (``MEASURED_MINUTES``).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

# Wall-clock minutes of a full default-scale run, measured once with nbclient on a 2-core CPU
# (torch's default 2 threads, no other load; see notebooks/README.md). Update after changing a
# lesson's default scale.
MEASURED_MINUTES = {
    "00_quickstart": 0.8,
    "01_gpt_and_masks": 0.3,
    "02_flop_accounting": 0.1,
    "03_sparse_pretraining": 1.2,
    "04_dense_finetuning": 1.5,
    "05_paper_findings_small_scale": 0.1,  # reads the committed study (RERUN=True: the quick grid)
    "06_beyond_the_paper": 2.4,  # 1.8 + 0.6 for the sparse-kernel section (timed at 1 thread, under load)
}


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def md(text: str):
    return nbformat.v4.new_markdown_cell(_src(text))


def code(text: str, tags=(), exercise: str | None = None):
    cell = nbformat.v4.new_code_cell(_src(text))
    if tags:
        cell.metadata["tags"] = list(tags)
    if exercise:
        cell.metadata["tags"] = list(tags) + ["exercise"]
        cell.metadata["minispdf"] = {"exercise": exercise}
    return cell


def runtime(name: str) -> str:
    minutes = MEASURED_MINUTES.get(name)
    if minutes is None:
        return "*Run time at the default scale: not measured yet.*"
    return (f"*Runs in about {minutes:g} min on a 2-core CPU (measured, default scale; "
            "`MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a larger scale).*")


def parameters(scales: str, extra: str = "") -> object:
    """The one parameters cell: the scale comes from MINISPDF_SCALE; ``scales`` is the SCALES dict."""
    body = _src(scales)
    text = (
        "import os\n\n"
        "# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds\n"
        'SCALE = os.environ.get("MINISPDF_SCALE", "default")\n'
        f"{body}\n"
        'assert SCALE in SCALES, f"MINISPDF_SCALE={SCALE!r}: choose one of {sorted(SCALES)}"\n'
        "P = SCALES[SCALE]\n"
        'DEVICE = "auto"  # cuda if present, else mps, else cpu\n'
        'PROGRESS = SCALE != "smoke"  # progress bars while training'
        + (f"\n{_src(extra)}" if extra else "")
    )
    return code(text, tags=("parameters",))


def notebook(name: str, cells: list):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    prefix = "nb" + name[:2]
    for i, cell in enumerate(cells):
        cell.id = f"{prefix}-{i:02d}"
    nb.cells = cells
    return nb


# =====================================================================================  00


def nb00_quickstart():
    return notebook("00_quickstart", [
        md(f"""
        # 00 · Quickstart: the SPDF recipe in a few cells

        **Question:** can a GPT whose attention and MLP weights were 75% zeros during pre-training
        still learn a downstream task once those zeros may train, and how many pre-training FLOPs
        did the zeros save?

        {runtime("00_quickstart")}

        SPDF (Thangarasa et al., 2023) splits training in two. **Sparse pre-training** keeps a fixed
        random mask on the block matrices, because pre-training is where almost all the FLOPs are
        spent. **Dense fine-tuning** drops the mask: the pruned weights start at 0.0 and learn, so
        the model gets its full capacity back for the cheap phase. Everything below runs offline on
        data that ships with Python.
        """),
        parameters("""
        SCALES = {
            "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                            pretrain_steps=1200, finetune_steps=800, n_train=1000, n_eval=100, max_new_tokens=200),
            "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                        pretrain_steps=3000, finetune_steps=1000, n_train=4000, n_eval=300, max_new_tokens=200),
            "smoke": dict(preset="nano", block_size=256, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                          pretrain_steps=12, finetune_steps=8, n_train=40, n_eval=6, max_new_tokens=30),
        }""", extra='RUNS = "runs/00_quickstart"  # checkpoints and logs go here'),
        code("""
        import matplotlib.pyplot as plt

        from minispdf import plots
        from minispdf.data import get_tokenizer
        from minispdf.evaluate import decode, evaluate_task
        from minispdf.spdf import finetune, pretrain
        from minispdf.tasks import make_builtin_task

        # the same training settings for every run of this notebook
        settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"],
                        device=DEVICE, progress=PROGRESS)
        evals = lambda steps: max(1, steps // 6)  # evaluate ~6 times per run, for the curves
        """),
        md("""
        ## 1 · Sparse pre-training

        `pretrain(sparsity=0.75)` builds a GPT, gives every q/k/v, attention-output and MLP matrix a
        random mask that keeps exactly 25% of its weights, and trains a character-level language
        model on Python's own documentation. The mask never changes; the training loop keeps the
        pruned weights, their gradients and their Adam moments at exactly zero.
        """),
        code("""
        sparse = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=0.75, data="builtin",
                          max_steps=P["pretrain_steps"], eval_interval=evals(P["pretrain_steps"]),
                          out=f"{RUNS}/pretrain-sparse75", overwrite=True, **settings)
        print(f"validation loss {sparse['val_loss']:.3f} nats per character after {sparse['step']} steps")
        print(f"pre-training FLOPs {sparse['flops']:.3g}; the same run dense: {sparse['flops_dense']:.3g} "
              f"-> {sparse['flops_dense'] / sparse['flops']:.2f}x fewer")
        """),
        md("""
        ## 2 · Dense fine-tuning

        `finetune(init_from=...)` loads the checkpoint and **drops the masks** (`densify`), then trains
        every weight on a data-to-text task: restaurant meaning representations to descriptions, in
        the style of the E2E challenge the paper uses, generated offline. The loss counts only the
        description, not the input it is conditioned on.
        """),
        code("""
        task = make_builtin_task(n_train=P["n_train"], n_val=P["n_eval"], n_test=P["n_eval"], min_slots=3, max_slots=5)
        print(task.description)
        print("input:    ", task.train[0].input)
        print("reference:", task.train[0].references[0])
        tuned = finetune(init_from=f"{RUNS}/pretrain-sparse75", task=task, max_steps=P["finetune_steps"],
                         weight_decay=0.01, eval_interval=evals(P["finetune_steps"]),
                         out=f"{RUNS}/finetune-spdf", overwrite=True, **settings)
        print(f"fine-tuning validation loss {tuned['val_loss']:.3f} nats per target character")
        """),
        md("""
        ## 3 · Evaluate

        Greedy decoding of held-out inputs, scored with BLEU against all their references (sacrebleu,
        lowercased like the official E2E script), plus the perplexity of the references.
        """),
        code("""
        tok = get_tokenizer("char")
        metrics = evaluate_task(tuned["model"], tok, task.test, limit=P["n_eval"], max_new_tokens=P["max_new_tokens"])
        print(f"BLEU {metrics['bleu']:.1f} on {metrics['n_inputs']} test inputs; "
              f"reference perplexity {metrics['perplexity']:.2f} per character")
        shown = task.test[:3]
        outputs = decode(tuned["model"], tok, [ex.input for ex in shown], max_new_tokens=P["max_new_tokens"])
        print(plots.format_samples([ex.input for ex in shown], {"SPDF model": outputs},
                                   [ex.references for ex in shown], n=3))
        """),
        code("""
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        plots.plot_curves({"75% sparse": sparse}, ax=a, title="Phase 1: sparse pre-training (language model)")
        plots.plot_curves({"densified": tuned}, ax=b, title="Phase 2: dense fine-tuning (data-to-text)")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        **What to take away.** The 75% sparse model pre-trained with fewer FLOPs than a dense one
        (the factor printed in step 1; it is modest for this 2-layer, 64-wide model and grows with
        width: notebook 02), and after densifying it learns the task. Whether it learns it *as well
        as* a dense model is notebook 04.

        Next: `01_gpt_and_masks` (where the masks act), `02_flop_accounting` (what is saved and why
        your hardware does not notice), `03_sparse_pretraining`, `04_dense_finetuning`,
        `05_paper_findings_small_scale`, `06_beyond_the_paper`.
        """),
    ])


# =====================================================================================  01


def nb01_gpt_and_masks():
    return notebook("01_gpt_and_masks", [
        md(f"""
        # 01 · The GPT and its masks

        **Question:** where exactly does SPDF's mask act, what does a mask look like, and what
        changes when it is dropped for fine-tuning?

        {runtime("01_gpt_and_masks")}
        """),
        parameters("""
        SCALES = {
            "default": dict(preset="nano", block_size=128, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                            train_steps=600, dense_steps=200),
            "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                        train_steps=2000, dense_steps=400),
            "smoke": dict(preset="nano", block_size=64, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                          train_steps=8, dense_steps=4),
        }""", extra='RUNS = "runs/01_gpt_and_masks"'),
        code("""
        import copy

        import matplotlib.pyplot as plt
        import torch

        from minispdf import GPT, densify, load_checkpoint, plots, preset_config, sparsify, sparsity_report
        from minispdf.sparsity import format_sparsity_report, masked_parameters, target_parameters
        from minispdf.spdf import finetune, pretrain

        settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"],
                        eval_interval=0, device=DEVICE, progress=PROGRESS)
        """),
        md("""
        ## 1 · Where the masks act

        Each GPT-2 block has four weight matrices: the fused q/k/v projection `attn.c_attn`, the
        attention output `attn.c_proj`, and the MLP's `mlp.c_fc` and `mlp.c_proj`. The paper masks
        exactly these, because they carry most of the parameters and most of the FLOPs. The token
        embedding is a lookup (nothing to save), the LM head shares its weight with it, and
        LayerNorms and biases are tiny, so all of those stay dense.
        """),
        code("""
        model = GPT(preset_config(P["preset"], block_size=P["block_size"]))
        targets = {name for name, _ in target_parameters(model)}
        rows = [dict(parameter=name, shape="x".join(map(str, p.shape)), numel=p.numel(), masked="yes" if name in targets else "")
                for name, p in model.named_parameters()]
        print(plots.format_table(rows[:8] + rows[-2:]))
        print(f"... {len(rows)} tensors in all")

        share = {}
        for name in (P["preset"], "gpt2", "gpt3-xl"):
            with torch.device("meta"):  # shapes only: no memory for GPT-3 XL's 1.3B weights
                m = GPT(preset_config(name))
            share[name] = sum(p.numel() for _, p in target_parameters(m)) / m.num_params()
        print({k: f"{v:.0%} of the parameters are maskable" for k, v in share.items()})
        """),
        md("""
        GPT-2 small has a 50k-token vocabulary, so its embedding is a third of the model and only
        ~68% of the weights can be masked; in GPT-3 XL it is ~92%. The kit's small models read bytes
        (257 tokens), so their embedding is small and, like the large model, most weights are maskable.

        ## 2 · A random mask

        `sparsify` gives each target matrix a bool buffer `weight_mask` (True = kept) and sets the
        pruned weights to exactly 0.0. The random mask keeps an *exact* count per matrix, so every
        matrix is exactly 75% sparse, as in the paper's "uniform" distribution.
        """),
        code("""
        masks = sparsify(model, 0.75, method="random", seed=0)
        layer = model.transformer.h[0].attn.c_attn
        print(layer)
        print("mask:", layer.weight_mask.dtype, tuple(layer.weight_mask.shape),
              f"kept {int(layer.weight_mask.sum())} of {layer.weight_mask.numel()}")
        print("pruned weights are exactly zero:", bool((layer.weight[~layer.weight_mask] == 0).all()))
        """),
        md("""
        ## 3 · Random vs magnitude masks, drawn

        A magnitude mask keeps the largest |w| and so needs trained weights to mean anything. We
        train a dense model briefly, then mask copies of it both ways. The random mask is uniform
        noise by construction; the magnitude mask follows the structure the weights learned
        (stripes where whole input or output features are large or small). SPDF uses random masks:
        they need no trained model, and they prune every feature evenly.
        """),
        code("""
        dense_run = pretrain(preset=P["preset"], block_size=P["block_size"], max_steps=P["train_steps"],
                             out=f"{RUNS}/dense", overwrite=True, **settings)
        trained = dense_run["model"].cpu()
        by_method = {}
        for method in ("random", "magnitude"):
            m = copy.deepcopy(trained)
            by_method[method] = sparsify(m, 0.75, method=method, seed=0)
        name_qkv, name_fc = "transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight"
        plots.show_masks({
            "random, layer 0 q/k/v": by_method["random"][name_qkv],
            "magnitude, layer 0 q/k/v": by_method["magnitude"][name_qkv],
            "random, layer 0 MLP in": by_method["random"][name_fc],
            "magnitude, layer 0 MLP in": by_method["magnitude"][name_fc],
        }, crop=64, title="75% masks (black = kept), top-left 64x64 corner")
        plt.show()
        """),
        md("""
        ## 4 · Sparsity per layer

        "75% sparse" can be spread over the layers in different ways. The paper's **uniform**
        distribution gives every matrix 75%. **ERK** (from RigL) keeps more of the small matrices
        (here the attention output) and less of the big ones. A **global magnitude** mask keeps the
        largest weights of the whole network, so layers end up wherever their weights put them.
        """),
        code("""
        reports = {}
        for label, kwargs in {"uniform random (paper)": dict(method="random"),
                              "ERK random": dict(method="random", distribution="erk"),
                              "global magnitude": dict(method="magnitude", scope="global")}.items():
            m = copy.deepcopy(trained)
            sparsify(m, 0.75, seed=0, **kwargs)
            reports[label] = sparsity_report(m)
        plots.plot_layer_sparsity(reports, title="Three ways to be 75% sparse")
        plt.show()
        """),
        md("""
        ## 5 · Sparse training keeps the zeros at zero

        During sparse pre-training the loop masks the gradients (a multiply by the mask, redone with
        a `where` if a NaN or inf shows up, so that nothing in a pruned slot can leak), clips, steps
        AdamW, then re-applies the mask to the weights. After training, every masked weight is still
        exactly zero.
        """),
        code("""
        sparse_run = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=0.75, max_steps=P["train_steps"],
                              out=f"{RUNS}/sparse75", overwrite=True, **settings)
        report = sparsity_report(sparse_run["model"])
        print(format_sparsity_report(report))
        print("zeros == masked in every matrix:", all(r["zeros"] == r["masked"] for r in report["layers"]))
        print(f"dense val loss {dense_run['val_loss']:.3f} vs 75% sparse {sparse_run['val_loss']:.3f} (same steps)")
        """),
        md("""
        ## 6 · What densify changes

        `densify` deletes the mask buffers and nothing else: the weights are unchanged, still 75%
        zeros. What changes is that the optimizer may now move them. We densify the sparse
        checkpoint and continue pre-training it densely for a few steps
        (`finetune(init_from=..., data="builtin")`), then look at the formerly pruned weights.
        """),
        code("""
        sparse_model, _ = load_checkpoint(f"{RUNS}/sparse75")
        old_masks = {name: mask.clone() for name, _, mask in masked_parameters(sparse_model)}
        densify(sparse_model)
        print("after densify: masks left =", len(masked_parameters(sparse_model)),
              f"| block sparsity still {sparsity_report(sparse_model)['total']['sparsity']:.0%}")

        cont = finetune(init_from=f"{RUNS}/sparse75", data="builtin", max_steps=P["dense_steps"], seed=2,
                        out=f"{RUNS}/densified", overwrite=True, **settings)
        stats = plots.regrowth(old_masks, cont["model"])
        nonzero = sum(r["nonzero_fraction"] * r["pruned"] for r in stats["layers"]) / sum(r["pruned"] for r in stats["layers"])
        print(f"after {P['dense_steps']} dense steps: {nonzero:.1%} of the formerly pruned weights are nonzero; "
              f"val loss {sparse_run['val_loss']:.3f} -> {cont['val_loss']:.3f}")
        plots.plot_regrowth(stats)
        plt.show()
        """),
        md("""
        Every pruned weight moves after the first dense step (AdamW's first update has the size of
        the learning rate, whatever the gradient), but they start far below the trained weights:
        dense fine-tuning adds capacity gently, on top of what sparse pre-training learned.

        ## Exercises

        Write the two masks yourself. The cell under each exercise checks your function against
        the library's `sparsify` (the same checks `python -m minispdf.assignments grade` runs).

        **Exercise 1: random mask.** Return a bool tensor of `shape` (True = kept) that keeps
        **exactly** `round((1 - sparsity) * numel)` weights chosen uniformly at random, drawing all
        randomness from `generator`. (Why exact? A Bernoulli draw `rand() > sparsity` is right only
        on average, and the FLOP count assumes the exact density.)
        """),
        code("""
        import torch


        def random_mask(shape, sparsity, generator=None):
            ### BEGIN SOLUTION
            numel = 1
            for n in shape:
                numel *= n
            n_keep = round((1.0 - sparsity) * numel)
            order = torch.randperm(numel, generator=generator)
            mask = torch.zeros(numel, dtype=torch.bool)
            mask[order[:n_keep]] = True
            return mask.view(*shape)
            ### END SOLUTION
        """, exercise="random_mask"),
        code("""
        from minispdf.assignments import check

        check("random_mask", random_mask);
        """),
        md("""
        **Exercise 2: magnitude mask.** Return a bool tensor shaped like `weight` that keeps the
        `round((1 - sparsity) * numel)` weights with the largest absolute value. Do not modify
        `weight`.
        """),
        code("""
        def magnitude_mask(weight, sparsity):
            ### BEGIN SOLUTION
            n_keep = round((1.0 - sparsity) * weight.numel())
            mask = torch.zeros(weight.numel(), dtype=torch.bool)
            if n_keep > 0:
                mask[weight.detach().abs().flatten().topk(n_keep).indices] = True
            return mask.view_as(weight)
            ### END SOLUTION
        """, exercise="magnitude_mask"),
        code("""
        check("magnitude_mask", magnitude_mask)
        w = trained.transformer.h[0].attn.c_attn.weight.detach()
        plots.show_masks({"your random mask": random_mask(tuple(w.shape), 0.75, torch.Generator().manual_seed(0)),
                          "your magnitude mask": magnitude_mask(w, 0.75)}, crop=64)
        plt.show()
        """),
    ])


# =====================================================================================  02


def nb02_flop_accounting():
    return notebook("02_flop_accounting", [
        md(f"""
        # 02 · FLOP accounting: what sparse pre-training saves

        **Question:** the paper reports 2.5x fewer pre-training FLOPs for GPT-3 XL at 75% sparsity.
        Where does that number come from, why is it not 4x, why would a small model save much less,
        and why does masked training not run any faster on a GPU or CPU?

        {runtime("02_flop_accounting")}

        The count is Chinchilla-style, per sequence of T tokens (d = width, L = layers, V = vocab):

        | component | forward FLOPs | shrinks with density? |
        |---|---|---|
        | q/k/v, attention output, MLP | L·2T·(3d² + d² + 8d²) | yes: these are the masked matrices |
        | attention scores, attention × values, softmax | L·(4T²d + 3hT²) | no: activations × activations |
        | logits (LM head) | 2TdV | no: stays dense |

        Training = 3 x forward (the backward pass costs twice the forward, sparse or dense).
        """),
        parameters("""
        SCALES = {
            "default": dict(counter_preset="tiny", bench_preset="tiny", bench_batch=8, bench_steps=10,
                            bench_warmup=3, bench_sparsities=(0.5, 0.75, 0.9)),
            "gpu": dict(counter_preset="mini", bench_preset="gpt2", bench_batch=8, bench_steps=20,
                        bench_warmup=5, bench_sparsities=(0.5, 0.75, 0.9)),
            "smoke": dict(counter_preset="nano", bench_preset="nano", bench_batch=2, bench_steps=2,
                          bench_warmup=1, bench_sparsities=(0.75,)),
        }"""),
        code("""
        import matplotlib.pyplot as plt
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from minispdf import GPT, GPTConfig, flop_report, plots, preset_config, sparsify
        from minispdf.bench import bench
        from minispdf.flops import flop_table, weight_matmul_flops

        print(flop_report("gpt3-xl", sparsity=0.75).format())
        """),
        md("""
        ## 1 · The paper's 2.5x, reproduced

        GPT-3 XL with a 2048-token context: the masked matrices are ~80% of the forward FLOPs, so
        masking 75% of them removes ~60% of the total, a 2.49x reduction. The rest (attention over
        the context and the LM head) is untouched, which is why the reduction stays far below
        1/(1 - s) = 4x.
        """),
        code("""
        rows = flop_table(presets=("gpt2", "gpt3-xl"), sparsities=(0.5, 0.75, 0.9), seq_len=2048)
        print(plots.format_table(rows, {"preset": "model", "seq_len": "T", "sparsity": "sparsity",
                                        "train_dense": "dense FLOPs/seq", "train_sparse": "sparse FLOPs/seq",
                                        "reduction": "reduction (x)"}, floatfmt="{:.2f}"))
        xl = flop_report("gpt3-xl", sparsity=0.75, seq_len=2048)
        print(f"GPT-3 XL at 75%: {xl.reduction:.2f}x fewer training FLOPs (the paper: 2.5x)")

        fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw=dict(width_ratios=[1.4, 1]))
        plots.plot_flop_breakdown({"GPT-2 small": flop_report("gpt2", 0.75, seq_len=2048), "GPT-3 XL": xl,
                                   "tiny (bytes)": flop_report("tiny", 0.75)}, ax=a)
        sparsities = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95]
        series = {f"{name} (T={2048 if name != 'tiny' else 64})":
                  [flop_report(name, s, seq_len=2048 if name != "tiny" else None).reduction for s in sparsities]
                  for name in ("gpt2", "gpt3-xl", "gpt3-6.7b", "tiny")}
        series["ideal 1/(1-s)"] = [1 / (1 - s) for s in sparsities]
        plots.plot_lines(sparsities, series, ax=b, xlabel="sparsity of the masked matrices", logy=True,
                         ylabel="training FLOP reduction (x, log)", title="Reduction vs sparsity",
                         styles={"ideal 1/(1-s)": "k--"})
        fig.tight_layout()
        plt.show()
        """),
        md("""
        ## 2 · Width and vocabulary decide the saving

        The masked matrices grow with d², the LM head with d·V and attention with T²·d. So a narrow
        model with GPT-2's 50k-token vocabulary spends most of its FLOPs in the dense LM head and
        saves almost nothing, while a wide one moves towards the 4x limit. A byte vocabulary (257
        tokens) makes the head negligible, which is why this kit's small models save more than
        their size suggests. It is one reason larger models gain more from SPDF.
        """),
        code("""
        widths = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
        def reduction(d, vocab, T=1024, layers=12):
            cfg = GPTConfig(n_layer=layers, n_embd=d, n_head=max(1, d // 64), block_size=T, vocab_size=vocab)
            return flop_report(cfg, sparsity=0.75).reduction
        series = {"GPT-2 vocabulary (50257)": [reduction(d, 50257) for d in widths],
                  "byte vocabulary (257)": [reduction(d, 257) for d in widths]}
        plots.plot_lines(widths, series, xlabel="width d (12 layers, T=1024)", ylabel="training FLOP reduction at 75%",
                         title="A wider model saves more; a big vocabulary hides the saving", logx=True)
        plt.show()
        for vocab in (50257, 257):
            print(f"vocab {vocab}: width 128 -> {reduction(128, vocab):.2f}x, width 4096 -> {reduction(4096, vocab):.2f}x")
        """),
        md("""
        ## 3 · Cross-check: count what torch actually executes

        `torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of every matmul a forward and
        backward pass runs. The weight matmuls (`mm`, `addmm`) must equal 3x the analytic weight
        terms exactly. And the counter sees the *same* work for a 75%-masked model: the zeros are
        stored and multiplied like any other number.
        """),
        code("""
        def counted(model, B=2):
            T = model.config.block_size
            x = torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
            with FlopCounterMode(display=False) as counter:
                _, loss = model(x, x)
                loss.backward()
            return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}

        cfg = preset_config(P["counter_preset"])
        torch.manual_seed(0)
        dense_model = GPT(cfg)
        masked_model = GPT(cfg)
        sparsify(masked_model, 0.75, seed=0)
        dense_ops, masked_ops = counted(dense_model), counted(masked_model)
        weight = sum(n for op, n in dense_ops.items() if op.endswith(("mm", "addmm")) and "bmm" not in op)
        print("ops counted (dense):", dense_ops)
        print(f"weight matmuls counted {weight:,} vs analytic 3 x {weight_matmul_flops(cfg, cfg.block_size, 2):,} "
              f"= {3 * weight_matmul_flops(cfg, cfg.block_size, 2):,} -> exact: {weight == 3 * weight_matmul_flops(cfg, cfg.block_size, 2)}")
        print("masked model runs the same FLOPs:", masked_ops == dense_ops,
              f"| the analytic sparse count would be {flop_report(masked_model).reduction:.2f}x fewer")
        """),
        md("""
        (On a CPU the fused attention kernel is not registered with the counter, so only the weight
        matmuls appear; on a GPU the attention shows up as its own op.)

        ## 4 · Is masked training faster on this machine?

        `minispdf.bench` times full training steps of the same model dense and masked, interleaved
        step by step so that background load hits both alike. Dense kernels multiply the zeros, so
        expect the same time (or slightly more: the masked step also masks gradients and weights).
        The hatched bar is what hardware that skips zeros, like the Cerebras CS-2 the paper used,
        could reach in theory.
        """),
        code("""
        results = [bench(preset=P["bench_preset"], sparsity=s, batch_size=P["bench_batch"], steps=P["bench_steps"],
                         warmup=P["bench_warmup"], device=DEVICE, memory=False) for s in P["bench_sparsities"]]
        for r in results:
            print(f"{r['preset']} at {r['sparsity']:.0%}: dense {r['dense_step_ms']:.1f} ms, masked {r['sparse_step_ms']:.1f} ms "
                  f"({r['sparse_over_dense']:.2f}x); theory says {r['theoretical_flop_reduction']:.2f}x fewer FLOPs")
        plots.plot_bench(results)
        plt.show()
        """),
        md("""
        The FLOP saving of SPDF is real arithmetic but only hardware that skips zeros turns it into
        time. On GPUs, PyTorch speeds up only a *structured* pattern (2:4 semi-structured
        sparsity, modestly); SPDF's unstructured masks get no faster kernels. Notebook 06 measures
        this once more, next to the equal-FLOP question.

        ## Exercise

        **Exercise 3: the sparse FLOPs of one block.** Return the forward FLOPs of one transformer
        block for one sequence of `seq_len` tokens, width `d_model`, `n_head` heads, MLP width
        4·d_model, when the q/k/v, attention-output and MLP matrices are `sparsity` sparse. Count a
        multiply-add as 2 FLOPs and include the softmax (3 FLOPs per score per head).
        """),
        code("""
        def block_forward_flops(d_model, seq_len, n_head, sparsity):
            ### BEGIN SOLUTION
            d, T, h = d_model, seq_len, n_head
            density = 1.0 - sparsity
            weights = 2 * T * (3 * d * d + d * d + 2 * d * 4 * d)  # qkv, output projection, MLP
            attention = 2 * T * T * d + 3 * h * T * T + 2 * T * T * d  # scores, softmax, x values
            return weights * density + attention
            ### END SOLUTION
        """, exercise="block_flops"),
        code("""
        from minispdf.assignments import check

        check("block_flops", block_forward_flops)
        c = preset_config("gpt3-xl")
        mine = c.n_layer * block_forward_flops(c.n_embd, c.block_size, c.n_head, 0.75) + 2 * c.block_size * c.n_embd * c.vocab_size
        print(f"GPT-3 XL forward, 75% sparse: yours {mine:.4g}, library {flop_report('gpt3-xl', 0.75).forward_sparse:.4g}")
        """),
    ])


# =====================================================================================  03


def nb03_sparse_pretraining():
    return notebook("03_sparse_pretraining", [
        md(f"""
        # 03 · Sparse pre-training: what the zeros cost

        **Question:** with the same data, steps and hyperparameters, how much worse is a language
        model whose block matrices are 50% or 75% zeros, measured per step and per FLOP?

        {runtime("03_sparse_pretraining")}

        All runs share the seed, so they see the same batches in the same order, and the same
        learning-rate schedule: the paper did not retune per sparsity either, so any gap is the
        mask's doing.
        """),
        parameters("""
        SCALES = {
            "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                            steps=1200, sparsities=(0.0, 0.5, 0.75)),
            "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                        steps=3000, sparsities=(0.0, 0.5, 0.75, 0.9)),
            "smoke": dict(preset="nano", block_size=64, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                          steps=12, sparsities=(0.0, 0.5, 0.75)),
        }""", extra='RUNS = "runs/03_sparse_pretraining"'),
        code("""
        import matplotlib.pyplot as plt

        from minispdf import plots, sparsity_report
        from minispdf.spdf import pretrain

        runs = {}
        for s in P["sparsities"]:
            label = "dense" if s == 0 else f"{s:.0%} sparse"
            runs[label] = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=s, data="builtin",
                                   max_steps=P["steps"], eval_interval=max(1, P["steps"] // 6), batch_size=P["batch_size"],
                                   lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"], device=DEVICE,
                                   progress=PROGRESS, out=f"{RUNS}/sparsity-{s}", overwrite=True)
            print(f"{label:>11}: val loss {runs[label]['val_loss']:.3f}")
        """),
        code("""
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
        plots.plot_curves(runs, x="step", ax=a, title="Per step: the sparse models learn slower")
        plots.plot_curves(runs, x="flops", ax=b, title="Per FLOP: each sparse step is cheaper")
        b.set_ylim(top=min(b.get_ylim()[1], 3.0))  # zoom in on the part after the first plateau
        fig.tight_layout()
        plt.show()
        """),
        md("""
        Left: at equal steps, fewer trainable weights mean a higher loss, and the gap grows with
        sparsity. Right: the same curves against the FLOPs each run was charged (sparse matmuls at
        their density). Each sparse step is cheaper, so its curve shifts left; whether it ends
        *below* dense at equal FLOPs is notebook 06's question. (The validation dots sit below the
        training lines because the held-out text, the last 10% of the corpus, happens to be
        easier; compare runs with each other, not train with validation.)
        """),
        code("""
        dense = runs["dense"]
        rows = [dict(run=label, val_loss=r["val_loss"], gap=r["val_loss"] - dense["val_loss"],
                     flops=r["flops"], flops_x_dense=r["flops"] / dense["flops"],
                     sparsity=sparsity_report(r["model"])["total"]["sparsity"])
                for label, r in runs.items()]
        print(plots.format_table(rows, {"run": "run", "sparsity": "measured sparsity", "val_loss": "val loss",
                                        "gap": "gap to dense", "flops": "train FLOPs", "flops_x_dense": "FLOPs (x dense)"}))
        """),
        md("""
        The measured sparsity of the trained models is exactly the nominal one: the mask held for
        every step. The gap to dense at equal steps is what dense fine-tuning has to close
        (notebook 04). The saving column is the theoretical one; on this CPU every run took about
        the same time per step (notebook 02, section 4).
        """),
    ])


# =====================================================================================  04


def nb04_dense_finetuning():
    return notebook("04_dense_finetuning", [
        md(f"""
        # 04 · Dense fine-tuning: SPDF vs the alternatives

        **Question:** after 75% sparse pre-training, does fine-tuning *densely* (SPDF) get close to a
        dense model, and is it better than fine-tuning with the mask kept (SPSF) or than skipping
        pre-training altogether?

        {runtime("04_dense_finetuning")}

        Four arms, one task, identical fine-tuning settings:

        | arm | pre-training | fine-tuning |
        |---|---|---|
        | dense | dense | dense |
        | SPDF | 75% sparse | dense (masks dropped) |
        | SPSF | 75% sparse | sparse (masks kept) |
        | scratch | none | dense |
        """),
        parameters("""
        SCALES = {
            "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                            pretrain_steps=1000, finetune_steps=600, n_train=1000, n_eval=100, max_new_tokens=200),
            "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                        pretrain_steps=3000, finetune_steps=1000, n_train=4000, n_eval=300, max_new_tokens=200),
            "smoke": dict(preset="nano", block_size=256, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                          pretrain_steps=10, finetune_steps=6, n_train=40, n_eval=6, max_new_tokens=30),
        }""", extra='RUNS = "runs/04_dense_finetuning"'),
        code("""
        import matplotlib.pyplot as plt

        from minispdf import plots
        from minispdf.data import get_tokenizer
        from minispdf.evaluate import decode, evaluate_task
        from minispdf.spdf import finetune, pretrain
        from minispdf.tasks import encode_example, encode_prompt, make_builtin_task

        tok = get_tokenizer("char")
        settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"],
                        device=DEVICE, progress=PROGRESS)
        pre = {}
        for s in (0.0, 0.75):
            pre[s] = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=s, data="builtin",
                              max_steps=P["pretrain_steps"], eval_interval=0, out=f"{RUNS}/pretrain-{s}",
                              overwrite=True, **settings)
            print(f"pre-trained {s:.0%} sparse: val loss {pre[s]['val_loss']:.3f}, FLOPs {pre[s]['flops']:.3g}")
        """),
        md("""
        ## The task and its loss mask

        Each training sequence is `input + "\\n" + reference + <end-of-text>`. The model reads the
        whole sequence, but the loss counts only the positions whose *next* token belongs to the
        reference or is the end-of-text: we want it to learn to write descriptions, not to predict
        meaning representations. Below, `^` marks the characters that are predicted with loss.
        """),
        code("""
        task = make_builtin_task(n_train=P["n_train"], n_val=P["n_eval"], n_test=P["n_eval"], min_slots=3, max_slots=5)
        print(task.description)
        ex = task.train[0]
        tokens, mask = encode_example(tok, ex.input, ex.references[0], block_size=P["block_size"])
        text = tok.decode(tokens).replace("\\n", "|")
        print(text)
        print("".join("^" if m else " " for m in [0] + mask)[: len(text)])  # mask[i] scores the prediction of tokens[i+1]
        """),
        md("""
        ## Fine-tune the four arms

        Same steps, learning rate and data order for every arm.
        """),
        code("""
        arms = {"dense": dict(init_from=f"{RUNS}/pretrain-0.0"),
                "SPDF": dict(init_from=f"{RUNS}/pretrain-0.75"),
                "SPSF": dict(init_from=f"{RUNS}/pretrain-0.75", keep_masks=True),
                "scratch": dict(preset=P["preset"], block_size=P["block_size"])}
        tuned, scores = {}, {}
        for label, how in arms.items():
            tuned[label] = finetune(task=task, max_steps=P["finetune_steps"], weight_decay=0.01,
                                    eval_interval=max(1, P["finetune_steps"] // 6), out=f"{RUNS}/finetune-{label}",
                                    overwrite=True, **settings, **how)
            scores[label] = evaluate_task(tuned[label]["model"], tok, task.test, limit=P["n_eval"],
                                          max_new_tokens=P["max_new_tokens"])
            print(f"{label:>8}: test loss {scores[label]['loss']:.3f}, BLEU {scores[label]['bleu']:.1f}")
        """),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        plots.plot_curves(tuned, ax=axes[0], title="Fine-tuning loss (target tokens only)")
        plots.plot_bars({k: v["loss"] for k, v in scores.items()}, ax=axes[1], fmt="{:.3f}",
                        ylabel="test loss (nats per target char, lower is better)", title="Reference likelihood",
                        reference=scores["dense"]["loss"], reference_label="dense", xlabel="arm")
        plots.plot_bars({k: v["bleu"] for k, v in scores.items()}, ax=axes[2], fmt="{:.1f}",
                        ylabel="BLEU (greedy, higher is better)", title=f"BLEU on {scores['dense']['n_inputs']} test inputs",
                        reference=scores["dense"]["bleu"], reference_label="dense", xlabel="arm")
        fig.tight_layout()
        plt.show()

        rows = [dict(arm=k, pretrain_flops=pre[0.75 if k in ("SPDF", "SPSF") else 0.0]["flops"] if k != "scratch" else 0.0,
                     test_loss=v["loss"], perplexity=v["perplexity"], bleu=v["bleu"]) for k, v in scores.items()]
        print(plots.format_table(rows, {"arm": "arm", "pretrain_flops": "pre-training FLOPs", "test_loss": "test loss",
                                        "perplexity": "perplexity", "bleu": "BLEU"}))
        gap = scores["SPDF"]["loss"] - scores["dense"]["loss"]
        print(f"SPDF is {gap:+.3f} nats from dense with {pre[0.0]['flops'] / pre[0.75]['flops']:.2f}x fewer pre-training FLOPs; "
              f"SPSF {scores['SPSF']['loss'] - scores['dense']['loss']:+.3f}; scratch {scores['scratch']['loss'] - scores['dense']['loss']:+.3f}")
        """),
        md("""
        **Reading it.** Look at the ordering first. Pre-training of any kind beats scratch: the
        language model already knows spelling and word order. Keeping the mask (SPSF) is far behind
        fine-tuning the *same* checkpoint densely: that is the paper's case for switching to dense
        for the cheap phase. Whether SPDF *matches* dense depends on scale: the paper's claim is for
        125M-1.3B models pre-trained on billions of tokens, while this 2-layer model pre-trained for
        a minute has no capacity to spare, so 75% zeros cost it more (notebook 05 varies the model
        size; the `gpu` scale trains larger models longer). One seed: differences of a few
        hundredths of a nat can be noise, differences of tenths are not. The test loss is steadier
        than BLEU, which hinges on every greedy choice.

        What the models write for the same inputs:
        """),
        code("""
        shown = task.test[:2]
        outputs = {label: decode(r["model"], tok, [ex.input for ex in shown], max_new_tokens=P["max_new_tokens"])
                   for label, r in tuned.items()}
        print(plots.format_samples([ex.input for ex in shown], outputs, [ex.references for ex in shown], n=2))
        """),
        md("""
        ## Exercise

        **Exercise 4: the fine-tuning loss mask.** A sequence is `prompt + target + [eot]`, where
        the prompt (input and separator) has `prompt_len` tokens and the whole sequence `n_tokens`.
        The model reads `x = tokens[:-1]` and predicts `y = tokens[1:]`. Return a list of
        `n_tokens - 1` ints, 1 where `y[i]` is a target token or the eot, 0 where it is part of the
        prompt.
        """),
        code("""
        def loss_mask(prompt_len, n_tokens):
            ### BEGIN SOLUTION
            return [0] * (prompt_len - 1) + [1] * (n_tokens - prompt_len)
            ### END SOLUTION
        """, exercise="loss_mask"),
        code("""
        from minispdf.assignments import check

        check("loss_mask", loss_mask)
        print(loss_mask(len(encode_prompt(tok, ex.input)), len(tokens)) == mask)
        """),
    ])


# =====================================================================================  05


def nb05_paper_findings():
    return notebook("05_paper_findings_small_scale", [
        md(f"""
        # 05 · The paper's findings, at small scale: reading a study

        **Question:** the paper reports that 50-75% sparse pre-training loses nothing significant
        downstream, that sparse fine-tuning (SPSF) is worse than dense fine-tuning, that harder
        tasks and smaller models suffer more, and that the fine-tuning set size matters. Which of
        these can a small study on a CPU confirm, refute, or not test at all?

        {runtime("05_paper_findings_small_scale")}

        This lesson does not train anything by default: it reads the results of `minispdf
        reproduce` (the kit's study, committed under `results/`) and shows how to judge a claim
        with a handful of seeds. Set `RERUN = True` to run the `quick` grid yourself (about 10
        minutes on a 2-core CPU); its results replace the committed ones in the figures.
        """),
        parameters("""
        SCALES = {
            # which committed study to read, and which grid a rerun runs
            # jobs: parallel runs of a rerun (None: one per CPU core)
            "default": dict(results="../results/default/results.json", grid="quick", jobs=None),
            "gpu": dict(results="../results/gpu-quick/results.json", grid="gpu-quick", jobs=1),
            "smoke": dict(results="../results/quick/results.json", grid="smoke", jobs=1),
        }
        RERUN = False  # True: run P["grid"] here (the smoke grid takes seconds, quick about 10 minutes)""",
                   extra='RUNS = "runs/05_paper_findings"'),
        code("""
        import json
        import os

        import matplotlib.pyplot as plt

        from minispdf.study import report, resolve_grid, run_study

        if RERUN or not os.path.exists(P["results"]):
            results = run_study(resolve_grid(P["grid"]), out=f"{RUNS}/study-{P['grid']}", device=DEVICE, jobs=P["jobs"])
        else:
            with open(P["results"]) as f:
                results = json.load(f)
        grid = results["grid"]
        print(f"grid {grid['name']!r}: {grid['description']}")
        print(f"{results['n_cells_done']} cells, {len(results['pretrains'])} pre-training runs, "
              f"run on {results['machine']['cpu']} at commit {results['commit']}")
        """),
        md("""
        ## Arms, paired by seed

        Every arm of a cell (task, model size, fine-tuning set) starts from the same initial weights
        and sees the same data order for a given seed: `dense`, `spdf50`, `spdf75` (sparse
        pre-training, dense fine-tuning), `spsf75` (masks kept while fine-tuning), `eqflop75` (dense
        pre-training stopped at the FLOPs of `spdf75`) and `scratch` (no pre-training). So the
        noise two arms share cancels in their per-seed difference. The table shows each arm's mean
        over seeds and its gap to dense with a 95% t-interval.
        """),
        code("""
        print(report.summary_markdown(results["summary"]))
        """),
        md("""
        ## The gaps, with their intervals

        A gap whose interval crosses zero is not distinguishable from dense with these seeds. The
        dashed line is the margin declared in the grid *before* the run (1% of the dense test loss,
        1 BLEU point): "no significant loss" holds only when the interval sits left of it.
        """),
        code("""
        report.plot_gaps(results)
        plt.show()
        """),
        md("""
        ## The verdicts

        Each claim is judged by a rule that could have gone the other way: *holds*, *fails*,
        *inconclusive* (the interval is too wide to tell) or *untestable* (a gate failed: the dense
        model did not beat no pre-training, its BLEU is below 10, or pre-training never left the
        loss of a unigram model). One row per claim at the grid's primary cell; the last column
        tallies the verdicts over every cell where the claim could be judged.
        """),
        code("""
        print(report.headline_table(results["claims"]))
        print()
        print(results["flop_claim"]["reason"])
        """),
        md("""
        **Reading it, against the paper.**

        1. *No significant loss.* At 0.1-0.3M parameters the models have no capacity to spare:
           expect the 75% arm to lose more than a 1% margin, and the 50% arm to lose less. The
           paper's claim is about 125M-1.3B parameters; a failure here does not contradict it, it
           shows where the claim stops holding.
        2. *SPSF worse than SPDF.* Dropping the mask gives the fine-tuning the full capacity back;
           this direction should be visible at any scale.
        3. *Equal FLOPs.* `eqflop75` asks the question the paper does not: is sparse pre-training
           better than simply pre-training the dense model for fewer steps? The retained benefit
           `R = (scratch - spdf) / (scratch - dense)` reads at a glance how much of pre-training's
           value a sparse run kept.
        4. *Harder tasks, larger models, set size.* Directional claims are judged on a difference
           of differences per seed; with 3-5 seeds only large effects clear the interval.

        Try: set `RERUN = True` and rerun with other seeds (`resolve_grid("quick", seeds=5)`), and
        see which verdicts move.
        """),
    ])


# =====================================================================================  06


def nb06_beyond_the_paper():
    return notebook("06_beyond_the_paper", [
        md(f"""
        # 06 · Beyond the paper

        Three questions the paper leaves open, each answered by measurement:

        1. **Equal FLOPs.** A sparse step is cheaper, so for the same FLOP budget a sparse model can
           see more tokens. Does it then beat the dense model?
        2. **Variable SPDF.** The authors' follow-up adds a short *dense pre-training* phase after
           sparse pre-training, before fine-tuning. Does it close the gap, and at what FLOP cost?
        3. **Does sparsity make my hardware faster?**

        {runtime("06_beyond_the_paper")}
        """),
        parameters("""
        SCALES = {
            "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                            lm_steps=400, sparsity=0.75, vspdf_sparsity=0.9, vspdf_steps=800, dense_phase=0.2,
                            finetune_steps=600, n_train=1000, n_eval=60, max_new_tokens=150,
                            bench_presets=("nano", "tiny"), bench_steps=10,
                            kernel_sparsities=(0.5, 0.75, 0.9, 0.95, 0.99), kernel_repeats=3, gpt2_batch=1,
                            gpt2_block=128, gpt2_step=False),
            "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                        lm_steps=2000, sparsity=0.75, vspdf_sparsity=0.9, vspdf_steps=3000, dense_phase=0.15,
                        finetune_steps=800, n_train=4000, n_eval=200, max_new_tokens=200,
                        bench_presets=("small", "gpt2"), bench_steps=20,
                        kernel_sparsities=(0.5, 0.75, 0.9, 0.95, 0.99), kernel_repeats=9, gpt2_batch=8,
                        gpt2_block=1024, gpt2_step=True),
            "smoke": dict(preset="nano", block_size=256, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                          lm_steps=4, sparsity=0.75, vspdf_sparsity=0.9, vspdf_steps=4, dense_phase=0.5,
                          finetune_steps=3, n_train=40, n_eval=4, max_new_tokens=20,
                          bench_presets=("nano",), bench_steps=2,
                          kernel_sparsities=(0.5, 0.99), kernel_repeats=1, gpt2_batch=1, gpt2_block=8,
                          gpt2_step=False),
        }""", extra='RUNS = "runs/06_beyond_the_paper"'),
        code("""
        import math

        import matplotlib.pyplot as plt

        from minispdf import flop_report, plots, preset_config
        from minispdf.bench import bench
        from minispdf.data import get_tokenizer
        from minispdf.evaluate import evaluate_task
        from minispdf.kernels import format_break_even, format_kernel_bench, kernel_bench
        from minispdf.spdf import finetune, pretrain
        from minispdf.tasks import make_builtin_task

        tok = get_tokenizer("char")
        settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"],
                        device=DEVICE, progress=PROGRESS)
        """),
        md("""
        ## 1 · Sparse and longer vs dense, at equal FLOPs

        The dense model trains for N steps. The sparse model trains once for the same N steps and
        once for N x (FLOP reduction) steps, which costs the same FLOPs as the dense run. Each run
        has its own full learning-rate schedule, so each is a finished training run of its budget.
        """),
        code("""
        cfg = preset_config(P["preset"], block_size=P["block_size"])
        ratio = flop_report(cfg, sparsity=P["sparsity"]).reduction
        N = P["lm_steps"]
        plan = {"dense, N steps": (0.0, N), f"{P['sparsity']:.0%} sparse, N steps": (P["sparsity"], N),
                f"{P['sparsity']:.0%} sparse, {ratio:.2f}N steps (equal FLOPs)": (P["sparsity"], math.ceil(N * ratio))}
        lm = {}
        for label, (s, steps) in plan.items():
            lm[label] = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=s, data="builtin",
                                 max_steps=steps, eval_interval=max(1, steps // 6), out=f"{RUNS}/lm-{s}-{steps}",
                                 overwrite=True, **settings)
        print(plots.format_table([dict(run=k, steps=r["step"], tokens=r["tokens"], flops=r["flops"], val_loss=r["val_loss"])
                                  for k, r in lm.items()]))
        plots.plot_curves(lm, x="flops", y="val_loss", title="Validation loss against FLOPs spent")
        plt.show()
        dense_loss, equal_loss = lm["dense, N steps"]["val_loss"], list(lm.values())[-1]["val_loss"]
        print(f"at equal FLOPs the sparse model is {'better' if equal_loss < dense_loss else 'worse'} by "
              f"{abs(equal_loss - dense_loss):.3f} nats ({equal_loss:.3f} vs dense {dense_loss:.3f})")
        """),
        md("""
        At equal FLOPs the sparse model sees more tokens (the reduction factor above) with a quarter
        of the block weights. Whether that wins depends on the regime: a model far from convergence
        gains more from extra tokens than it loses to fewer weights. With one seed, treat a difference
        of a few hundredths of a nat as a tie. And this is a FLOP comparison, not a time comparison:
        on this CPU the longer sparse run took proportionally longer (section 3).

        ## 2 · Variable SPDF: a short dense phase before fine-tuning

        Sparse pre-training at high sparsity (the follow-up used 90%), then a short phase of
        *dense* pre-training on the same language-modelling data, then dense fine-tuning. The
        dense phase is `finetune(init_from=..., data="builtin")`: it densifies the checkpoint and
        continues language modelling. We compare it with plain SPDF and with dense, all fine-tuned
        the same way, and count the pre-training FLOPs of both phases.
        """),
        code("""
        n, s = P["vspdf_steps"], P["vspdf_sparsity"]
        base = dict(preset=P["preset"], block_size=P["block_size"], data="builtin", max_steps=n, eval_interval=0,
                    overwrite=True, **settings)
        dense_pt = pretrain(sparsity=0.0, out=f"{RUNS}/vspdf-dense", **base)
        sparse_pt = pretrain(sparsity=s, out=f"{RUNS}/vspdf-sparse", **base)
        dense_phase_steps = max(1, round(P["dense_phase"] * n))
        # seed=2: the dense phase draws other windows than pre-training did
        phase = finetune(init_from=f"{RUNS}/vspdf-sparse", data="builtin", max_steps=dense_phase_steps, eval_interval=0,
                         seed=2, out=f"{RUNS}/vspdf-dense-phase", overwrite=True, **settings)
        pretraining = {"dense": (f"{RUNS}/vspdf-dense", dense_pt["flops"]),
                       f"SPDF ({s:.0%})": (f"{RUNS}/vspdf-sparse", sparse_pt["flops"]),
                       f"Variable SPDF ({s:.0%}, then {P['dense_phase']:.0%} more steps dense)": (f"{RUNS}/vspdf-dense-phase", sparse_pt["flops"] + phase["flops"])}

        task = make_builtin_task(n_train=P["n_train"], n_val=P["n_eval"], n_test=P["n_eval"], min_slots=3, max_slots=5)
        rows = []
        for label, (ckpt, pt_flops) in pretraining.items():
            r = finetune(init_from=ckpt, task=task, max_steps=P["finetune_steps"], weight_decay=0.01,
                         eval_interval=0, out=f"{RUNS}/vspdf-finetune", overwrite=True, **settings)
            ev = evaluate_task(r["model"], tok, task.test, limit=P["n_eval"], max_new_tokens=P["max_new_tokens"])
            rows.append(dict(arm=label, pretrain_flops_x_dense=pt_flops / dense_pt["flops"], test_loss=ev["loss"], bleu=ev["bleu"]))
        print(plots.format_table(rows, {"arm": "arm", "pretrain_flops_x_dense": "pre-training FLOPs (x dense)",
                                        "test_loss": "test loss", "bleu": "BLEU"}))
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
        plots.plot_bars({r["arm"]: r["pretrain_flops_x_dense"] for r in rows}, ax=a, ylabel="pre-training FLOPs (x dense)",
                        title="What each recipe spends", fmt="{:.2f}", xlabel="recipe")
        plots.plot_bars({r["arm"]: r["test_loss"] for r in rows}, ax=b, ylabel="test loss after fine-tuning (lower is better)",
                        title="What it buys", fmt="{:.3f}", reference=rows[0]["test_loss"], reference_label="dense",
                        xlabel="recipe")
        fig.tight_layout()
        plt.show()
        """),
        md("""
        The dense phase lets the pruned weights learn from the large language-modelling corpus
        rather than from the small task set, at the price of a few dense steps: look at how much of
        the SPDF-to-dense gap it recovers per extra FLOP. The follow-up reported matching dense
        quality with 64% fewer pre-training FLOPs at 6.7B parameters; at toy scale treat this as a
        method to measure, not a number to reproduce.

        ## 3 · Does sparsity make my hardware faster?

        `minispdf.bench` on this machine, dense vs masked, at the sparsities used above.
        """),
        code("""
        results = [bench(preset=p, sparsity=sp, batch_size=8, steps=P["bench_steps"], warmup=2, device=DEVICE, memory=False)
                   for p in P["bench_presets"] for sp in (P["sparsity"], P["vspdf_sparsity"])]
        plots.plot_bench(results)
        plt.show()
        worst = max(r["sparse_over_dense"] for r in results)
        best = min(r["sparse_over_dense"] for r in results)
        print(f"masked step / dense step: {best:.2f}x to {worst:.2f}x; theory would allow "
              f"{max(r['theoretical_flop_reduction'] for r in results):.2f}x fewer FLOPs")
        """),
        md("""
        **No, not as the kit trains.** On a CPU or GPU with dense kernels a masked step costs what a
        dense step costs (give or take noise and the small cost of re-applying the masks): the
        zeros are stored inside dense matrices and multiplied like any other number.

        ### Sparse kernels: when does a sparse format pay off?

        A sparse format stores only the kept weights and their positions, and its kernels skip the
        rest. `minispdf.kernels.kernel_bench` (the command line's `minispdf bench --kernels`) times
        the three matmuls of each masked layer -- forward, the gradient with respect to the input,
        and the weight gradient at the kept entries only -- for the four masked matrix shapes, at
        the tokens of one training batch: dense weights, dense weights holding zeros, and
        `torch.sparse` CSR weights (on a recent NVIDIA GPU also 2:4 semi-structured weights).
        Below: the speedup over dense against sparsity, for this lesson's model and for GPT-2
        Small's shapes (at fewer tokens than GPT-2's training batch on a CPU, to keep it quick).
        """),
        code("""
        kern = kernel_bench(P["preset"], sparsities=P["kernel_sparsities"], batch_size=P["batch_size"],
                            block_size=P["block_size"], repeats=P["kernel_repeats"], device=DEVICE)
        kern_gpt2 = kernel_bench("gpt2", sparsities=P["kernel_sparsities"], batch_size=P["gpt2_batch"],
                                 block_size=P["gpt2_block"], repeats=P["kernel_repeats"], device=DEVICE,
                                 step=P["gpt2_step"])
        for r in (kern, kern_gpt2):
            plots.plot_kernel_speedups(r)
            plt.show()
            for shape, be in r["break_even"].items():
                print(f"{r['preset']} {shape:<9} CSR, all three matmuls: {format_break_even(be['total'])}")
        """),
        md("""
        The dotted lines (zeros in dense) stay near 1, up to timing noise: dense kernels do not care
        what the numbers are.
        The CSR lines start well below 1 -- a CSR kernel does irregular memory accesses and
        bookkeeping per kept weight, so at 50% or 75% sparsity it is *slower* than the dense kernel
        that does twice or four times the arithmetic -- and cross 1 only at high sparsity (the
        break-even above). On the 2-core CPU we measured, SPDF's 75% sat below the break-even for
        every shape; look where it sits on yours.

        ### What it means for a training step

        The masked matmuls are only part of a step: attention between activations, the dense LM
        head, LayerNorms and the optimizer stay. The kernel bench also profiles one dense training
        step with `torch.profiler` (**measured**: which fraction of the step each masked matmul
        takes) and applies Amdahl's law with the measured kernel speedups (**derived**): the step
        speedup if the masked matmuls used CSR, if they used CSR only where it beats dense, and if
        their time fell in proportion to their FLOPs (what hardware that skips zeros promises). The
        FLOP reduction beside it is counted, not timed.
        """),
        code("""
        p = kern["step"]
        print(f"{kern['preset']} training step: {p['step_ms']:.1f} ms, masked matmuls {p['masked_fraction']:.0%} of it (measured)")
        print(plots.format_table(
            [dict(sparsity=e["sparsity"], flops=e["flop_reduction"], csr=e["csr"], best=e["csr_where_faster"],
                  ideal=e["flop_proportional"]) for e in p["estimates"] if "csr" in e],
            {"sparsity": "sparsity", "flops": "FLOP reduction (counted)", "csr": "step speedup, CSR (derived)",
             "best": "CSR where faster (derived)", "ideal": "FLOP-proportional (derived)"}))
        print(f"upper limit if the masked matmuls cost nothing: {p['limit']:.2f}x")
        """),
        md("""
        Read the table row of SPDF's 75%: a FLOP count that promises a saving, and a measured
        wall-clock change that (on a CPU) is a slowdown with CSR and nothing with dense kernels. Even
        at 99% the step gains less than the FLOP reduction says, because the rest of the step does
        not shrink -- and at small width that rest is a large share. (`minispdf bench --kernels
        --preset gpt2` runs the same for GPT-2 Small's step; the README shows one CPU's table.)

        **Why unstructured sparsity needs hardware that skips zeros.** A CPU or GPU is fastest on
        dense, regular blocks of numbers: wide vector units and tensor cores multiply whole tiles
        at once, fed by predictable memory reads. An unstructured mask scatters the kept weights, so
        a sparse kernel must read an index for every weight and gather the matching activations;
        that costs more per useful multiply than the dense kernel wastes on zeros, until almost
        all weights are zero. The Cerebras CS-2 that the paper trained on is built the other way:
        its cores are driven by the data, store only the non-zero weights and do no work for a
        zero, so a 75%-sparse matmul does about a quarter of the dense work -- SPDF's FLOP saving
        becomes time there. NVIDIA GPUs since Ampere accelerate one *structured* pattern,
        2:4 (two of every four consecutive weights zero, exactly 50%): the tensor cores skip the
        zeros because their positions follow a fixed rule: at most 2x on the matmul (the math rate
        doubles), less in practice, and less again on a whole step. That pattern is not SPDF's unstructured mask, and it stops at 50%.
        What you *can* take from SPDF on ordinary hardware is the training recipe, and the FLOP
        accounting for the day your hardware can exploit unstructured sparsity.
        """),
    ])


NOTEBOOKS = {
    "00_quickstart": nb00_quickstart,
    "01_gpt_and_masks": nb01_gpt_and_masks,
    "02_flop_accounting": nb02_flop_accounting,
    "03_sparse_pretraining": nb03_sparse_pretraining,
    "04_dense_finetuning": nb04_dense_finetuning,
    "05_paper_findings_small_scale": nb05_paper_findings,
    "06_beyond_the_paper": nb06_beyond_the_paper,
}


def build() -> dict[str, str]:
    """``{file name: notebook text}`` for every lesson, exactly as committed."""
    from minispdf.assignments import dumps

    out = {}
    for name, make in NOTEBOOKS.items():
        nb = make()
        nbformat.validate(nb)
        out[f"{name}.ipynb"] = dumps(nb)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    built = build()
    if "--check" in argv:
        stale = [n for n, text in built.items()
                 if not (HERE / n).exists() or (HERE / n).read_text(encoding="utf-8") != text]
        for n in stale:
            print(f"notebooks/{n} differs from build_notebooks.py: run python notebooks/build_notebooks.py")
        return 1 if stale else 0
    for n, text in built.items():
        (HERE / n).write_text(text, encoding="utf-8")
        print(f"wrote notebooks/{n}")
    from minispdf.assignments import make_student_copies

    for path in make_student_copies(str(HERE), str(HERE / "student")):
        print(f"wrote {Path(path).relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
