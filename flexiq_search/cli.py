"""`flexiq`: the command-line front door.

Bad input ends with one line on stderr and exit code 2. Machine-readable output (`--json`) goes to
stdout alone; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from .errors import FlexiqError, first_line
from .home import data_home

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3  # a latency backend that cannot run on this machine, or a part not installed
DEFAULT_RATIOS = "0,0.25,0.5,0.75,1"


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage over several lines
        self.exit(EXIT_BAD_INPUT, f"flexiq: error: {message}\n")


def ratio_list(text: str) -> list[float]:
    ratios = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"ratio {part.strip()!r} is not a number") from None
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError(f"ratio {value} is outside [0, 1]")
        ratios.append(value)
    return ratios


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_quant_options(parser: argparse.ArgumentParser) -> None:
    """Quantization flags; unset ones take the recommended settings (config.RECOMMENDED_QUANT)."""
    from .config import RECOMMENDED_QUANT

    parser.add_argument("--group-size", type=positive_int, default=None,
                        help=f"input channels per precision group (default {RECOMMENDED_QUANT['group_size']})")
    parser.add_argument("--observer", default=None,  # checked by QuantConfig against the observer registry
                        help=f"activation calibration: minmax, percentile, mse (default {RECOMMENDED_QUANT['observer']})")
    parser.add_argument("--extraction", choices=["shift", "naive"], default="shift",
                        help="skip unused high bits (FlexiQ) or always take the top 4 bits")
    parser.add_argument("--budget", choices=["global", "per-layer"], default="global",
                        help="spend the 4-bit MAC share over the whole model or in every layer")
    parser.add_argument("--int4-first-last", action="store_true",
                        help="let the first conv and the classifier go 4-bit too")
    parser.add_argument("--activation-shift", choices=["static", "dynamic"], default=None,
                        help="activation extraction shifts fixed at calibration or per sample from the live tensor "
                             f"(default {RECOMMENDED_QUANT['activation_shift']})")
    parser.add_argument("--dynamic-extraction", dest="activation_shift", action="store_const", const="dynamic",
                        help="the same as --activation-shift dynamic (also over a selection made static)")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                        help="per-level offsets that cancel the mean output shift of the 4-bit groups "
                             f"(default {'on' if RECOMMENDED_QUANT['bias_correction'] else 'off'})")
    parser.add_argument("--keep-depthwise-int8", action=argparse.BooleanOptionalAction, default=None,
                        help="depthwise convs stay INT8 and leave the 4-bit MAC budget "
                             f"(default {'on' if RECOMMENDED_QUANT['keep_depthwise_int8'] else 'off'})")


def quant_config(args: argparse.Namespace, selection=None):
    """The QuantConfig of the command line, or the one a selection was made with (it must match)."""
    from .config import RECOMMENDED_QUANT, QuantConfig, config_from_dict

    if selection is not None and "quant_config" in selection.provenance:
        config = config_from_dict(selection.provenance["quant_config"])
        # Dynamic extraction changes no stored value: it may be switched on over any selection.
        dynamic = getattr(args, "activation_shift", None) == "dynamic"
        return dataclasses.replace(config, activation_shift="dynamic") if dynamic else config
    chosen = {key: getattr(args, key) for key in RECOMMENDED_QUANT if getattr(args, key, None) is not None}
    return QuantConfig(**{**RECOMMENDED_QUANT, **chosen}, extraction=args.extraction, budget=args.budget,
                       keep_first_int8=not args.int4_first_last, keep_last_int8=not args.int4_first_last)


MODEL_HELP = "a registered name (flexiq models), any timm architecture, or your code as package.module:factory"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--checkpoint", default=None, help="flexiq checkpoint; without it, offline pretrained weights")
    parser.add_argument("--weights", default=None,
                        help="the model's weights: a safetensors file or a state dict (read with weights_only=True)")
    parser.add_argument("--dataset", required=True, help="digits, fashion-mnist or imagefolder:PATH")
    parser.add_argument("--calibration", type=positive_int, default=None,
                        help="calibration samples (default 512, or what the selection was made with)")
    parser.add_argument("--calibration-data", default=None,
                        help="calibrate on this dataset spec (e.g. imagefolder:UNLABELLED_DIR); all of --dataset is scored")
    parser.add_argument("--calibration-share", type=share, default=None,
                        help="share of a single image folder held out for calibration (default 0.2); never scored")
    parser.add_argument("--fold", type=int, default=0,
                        help="which seeded share of the folder calibrates (0, 1, ...; e.g. 0 and 1 with share 0.5)")
    add_device_option(parser)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    from .config import DEVICE_AUTO, DEVICE_HELP  # no torch: listing and --help stay light

    parser.add_argument("--device", default=DEVICE_AUTO, help=DEVICE_HELP)


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1)")
    return value


def data_options(args: argparse.Namespace) -> dict:
    """Where calibration images come from (prepare_model's keyword arguments)."""
    from .data import DEFAULT_CALIBRATION_SHARE

    chosen = getattr(args, "calibration_share", None)  # `latency` has no such options
    return {"calibration_data": getattr(args, "calibration_data", None), "fold": getattr(args, "fold", 0),
            "calibration_share": DEFAULT_CALIBRATION_SHARE if chosen is None else chosen}


def nonnegative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def write_text_atomically(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="flexiq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    train = sub.add_parser("train", help="train an FP32 base model and save a checkpoint")
    train.add_argument("--model", required=True)
    train.add_argument("--dataset", required=True)
    train.add_argument("--epochs", type=positive_int, required=True)
    train.add_argument("--out", required=True, help="checkpoint path (.pt)")
    train.add_argument("--batch-size", type=positive_int, default=128)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--train-samples", type=positive_int, default=None, help="train on a fixed subset")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--json", action="store_true")
    add_device_option(train)

    evaluate = sub.add_parser("evaluate", help="accuracy of FP32, INT8 and each 4-bit ratio")
    add_model_options(evaluate)
    evaluate.add_argument("--ratios", type=ratio_list, default=ratio_list(DEFAULT_RATIOS))
    evaluate.add_argument("--method", default="range", help="selection method when no --selection is given")
    evaluate.add_argument("--selection", default=None,
                          help="a `flexiq select` file (its quantization settings and calibration size are used)")
    evaluate.add_argument("--samples", type=positive_int, default=None, help="evaluate on a fixed test subset")
    evaluate.add_argument("--batch-size", type=positive_int, default=256)
    evaluate.add_argument("--json", action="store_true")
    add_quant_options(evaluate)

    select = sub.add_parser("select", help="choose the 4-bit channel groups of every ratio level")
    add_model_options(select)
    select.add_argument("--method", default="evolution",
                        help="evolution, range, greedy-error, random, uniform-int4, hawq")
    select.add_argument("--ratios", type=ratio_list, default=ratio_list("0.25,0.5,0.75,1"))
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--population", type=positive_int, default=16)
    select.add_argument("--generations", type=nonnegative_int, default=20)
    select.add_argument("--metric", choices=["mse", "kl"], default="kl",
                        help="fitness: logit distance to INT8 (KL tracks top-1 better than MSE: docs/RESULTS.md)")
    select.add_argument("--validation-share", type=float, default=None,
                        help="evolution: share of the calibration images held out to choose each level's winner "
                             "(default 0.25; 0: choose on the search images)")
    select.add_argument("--acceptance-z", type=float, default=None,
                        help="evolution: standard errors (paired, per validation image) by which an evolved "
                             "winner must beat the best seed (default 1.0; 0: any lower mean)")
    select.add_argument("--out", required=True, help="selection file (.json)")
    select.add_argument("--json", action="store_true")
    add_quant_options(select)

    finetune = sub.add_parser("finetune", help="quantization-aware finetuning of the one INT8 model for all ratios")
    add_model_options(finetune)
    finetune.add_argument("--selection", default=None, help="a `flexiq select` file; without it, --method selects")
    finetune.add_argument("--method", default="range")
    finetune.add_argument("--ratios", type=ratio_list, default=ratio_list("0.25,0.5,0.75,1"))
    finetune.add_argument("--epochs", type=positive_int, default=1)
    finetune.add_argument("--lr", type=float, default=1e-4)
    finetune.add_argument("--train-samples", type=positive_int, default=10000)
    finetune.add_argument("--batch-size", type=positive_int, default=128)
    finetune.add_argument("--temperature", type=float, default=2.0)
    finetune.add_argument("--label-weight", type=float, default=0.0)
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--out", required=True, help="quantized checkpoint (.pt) that `flexiq evaluate` reads")
    finetune.add_argument("--json", action="store_true")
    add_quant_options(finetune)

    latency = sub.add_parser("latency", help="latency of each ratio level on a backend (simulated or measured)")
    latency.add_argument("--backend", default="npu-sim")
    latency.add_argument("--model", required=True)
    latency.add_argument("--checkpoint", default=None, help="FP32 checkpoint (without it: random weights, shapes only)")
    latency.add_argument("--dataset", default=None, help="calibration data; without it, random images")
    latency.add_argument("--image-size", type=positive_int, default=224, help="input size without --dataset")
    latency.add_argument("--in-chans", type=positive_int, default=3)
    latency.add_argument("--batch", type=positive_int, default=1)
    latency.add_argument("--ratios", type=ratio_list, default=ratio_list(DEFAULT_RATIOS))
    latency.add_argument("--method", default="range", help="selection method when no --selection is given")
    latency.add_argument("--selection", default=None)
    latency.add_argument("--calibration", type=positive_int, default=None)
    latency.add_argument("--rows", type=positive_int, default=32, help="npu-sim: PE array rows")
    latency.add_argument("--cols", type=positive_int, default=32, help="npu-sim: PE array columns")
    latency.add_argument("--dataflow", choices=["os", "ws"], default="os", help="npu-sim: output or weight stationary")
    latency.add_argument("--clock-mhz", type=float, default=1000.0)
    latency.add_argument("--dram-bytes-per-cycle", type=float, default=64.0)
    latency.add_argument("--rounds", type=positive_int, default=10, help="cpu/gpu: timed rounds (median reported)")
    latency.add_argument("--device", default=None, help="gpu: which CUDA device is timed (default cuda, i.e. cuda:0)")
    latency.add_argument("--json", action="store_true")
    add_quant_options(latency)

    sub.add_parser("models", help="the curated models, and what else --model accepts")

    demo = sub.add_parser("demo", help="the main job on the embedded default: train (or reuse), then a search study")
    demo.add_argument("--epochs", type=positive_int, default=3)
    demo.add_argument("--dataset", default="fashion-mnist")
    demo.add_argument("--no-ray", action="store_true", help="run the search in this process")

    search = sub.add_parser("search", help="a FlexiQ search study on Ray (Optuna trials x evolution), stored in SQL")
    search.add_argument("--config", default=None, help="YAML file with SearchConfig keys (flags override it)")
    search.add_argument("--model", default=None)
    search.add_argument("--checkpoint", default=None)
    search.add_argument("--weights", default=None, help="the model's weights (safetensors or a state dict)")
    search.add_argument("--dataset", default=None)
    search.add_argument("--name", default=None, help="study name (default <model>-<dataset>-seed<seed>)")
    search.add_argument("--backends", default=None, help="comma-separated latency backends, e.g. npu-sim,cpu")
    search.add_argument("--ratios", default=None, help="comma-separated 4-bit levels")
    for flag in ("generations", "population", "islands", "workers", "trials", "calibration", "eval-samples"):
        search.add_argument(f"--{flag}", type=int, default=None)
    search.add_argument("--seed", type=int, default=None)
    search.add_argument("--device", default=None, help="fitness, evaluation and finetuning device: auto (default: "
                        "CUDA when present; Ray actors then ask for GPU shares), cpu, cuda, cuda:N")
    search.add_argument("--calibration-data", default=None,
                        help="calibrate on this dataset spec (e.g. imagefolder:UNLABELLED_DIR); all of --dataset is scored")
    search.add_argument("--calibration-share", type=share, default=None,
                        help="share of a single image folder held out for calibration (default 0.2); never scored")
    search.add_argument("--db", default=None, help="SQLAlchemy URL (default: $FLEXIQ_DB or a SQLite file in the data folder)")
    search.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    search.add_argument("--no-ray", action="store_true", help="run everything in this process")
    search.add_argument("--resume", action="store_true", help="continue the study of the same name")
    search.add_argument("--job-id", default=None, help="submission id recorded in the jobs table (default: Ray's job id)")
    search.add_argument("--schedule-run", type=positive_int, default=None,
                        help="run a scheduled slot: config, study name and job id come from the store's run")

    export = sub.add_parser("export", help="a stored study's trial as one deployable .flexiq file")
    export.add_argument("--study", required=True, help="study id or name")
    export.add_argument("--point", type=int, default=None, help="K-th Pareto point (fastest first) of the first backend")
    export.add_argument("--trial", type=int, default=None, help="trial number (default: best mean top-1)")
    export.add_argument("--out", required=True)
    export.add_argument("--db", default=None)
    export.add_argument("--json", action="store_true")

    bench = sub.add_parser("serve-bench", help="adaptive ratio vs static INT8 / all-4-bit under a request trace")
    bench.add_argument("--model", required=True, help="a .flexiq file (flexiq export)")
    bench.add_argument("--trace", default="steps", help="poisson, steps (low <-> 3x) or file:PATH (time_s,rate_rps)")
    bench.add_argument("--slo-ms", type=float, required=True)
    bench.add_argument("--duration", type=float, default=10.0, help="seconds of trace")
    bench.add_argument("--backend", choices=["npu-sim", "cpu"], default="npu-sim",
                       help="npu-sim: discrete-event simulation on the simulator's latencies; cpu: runs for real")
    bench.add_argument("--load", type=float, default=0.4, help="base request rate as a share of INT8 capacity")
    bench.add_argument("--max-batch", type=positive_int, default=8)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--plot", default=None, help="write the ratio over time to this HTML file")
    bench.add_argument("--json", action="store_true")

    studies = sub.add_parser("studies", help="stored search studies and their Pareto fronts")
    studies.add_argument("action", choices=["list", "show", "pareto"])
    studies.add_argument("study", nargs="?", default=None, help="study id or name (show, pareto)")
    studies.add_argument("--db", default=None)
    studies.add_argument("--json", action="store_true")

    schedule = sub.add_parser("schedule", help="recurring (cron) searches stored in the database")
    schedule.add_argument("action", choices=["add", "list", "remove", "runs", "enable", "disable"])
    schedule.add_argument("name", nargs="?", default=None,
                          help="schedule name (add: default the config's name or file name; runs: a filter)")
    schedule.add_argument("--cron", default=None, help='five-field cron expression, e.g. "0 2 * * *" (add)')
    schedule.add_argument("--timezone", default="UTC", help="IANA time zone the cron expression is read in (add)")
    schedule.add_argument("--config", default=None, help="search config YAML, as for flexiq search (add)")
    schedule.add_argument("--limit", type=positive_int, default=20, help="newest runs shown (runs)")
    schedule.add_argument("--db", default=None)
    schedule.add_argument("--json", action="store_true")

    scheduler = sub.add_parser("scheduler", help="start the due runs of the stored schedules (long-running)")
    scheduler.add_argument("--db", default=None, help="database URL (default: $FLEXIQ_DB, else the SQLite file)")
    scheduler.add_argument("--address", default=None,
                           help="Ray job server (the dashboard, e.g. http://127.0.0.1:8265); default: local processes")
    scheduler.add_argument("--job-python", default="python", help="the cluster's Python for Ray jobs (--address)")
    scheduler.add_argument("--send-db-url", action="store_true",
                           help="send a URL with a password to Ray jobs (default: jobs use the cluster's FLEXIQ_DB)")
    scheduler.add_argument("--no-ray", action="store_true", help="local runs search in-process, without a local Ray")
    scheduler.add_argument("--poll", type=float, default=30.0, help="seconds between looks for new schedules")
    scheduler.add_argument("--once", action="store_true",
                           help="one pass, waiting for local runs it started (for a systemd timer); exit 1 if one failed")
    scheduler.add_argument("--now", default=None, help="ISO time to take as now (with --once; for tests and drills)")

    dashboard = sub.add_parser("dashboard", help="browse the stored studies in a Streamlit web app (read-only)")
    dashboard.add_argument("--db", default=None, help="database URL (default: $FLEXIQ_DB, else the SQLite file)")
    dashboard.add_argument("--port", type=positive_int, default=8501)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from .data import get_dataset
    from .devices import resolve_device
    from .evaluation import check_runs_on
    from .models import create_model, get_model_entry, save_checkpoint
    from .training import accuracy, train_model

    get_model_entry(args.model)
    bundle = get_dataset(args.dataset)
    model_kwargs = {"num_classes": bundle.num_classes, "in_chans": bundle.in_chans}
    if get_model_entry(args.model).family == "vit":
        model_kwargs["img_size"] = bundle.image_size
    model = create_model(args.model, **model_kwargs)
    check_runs_on(model, bundle, args.model)
    model.to(resolve_device(args.device))
    started = time.perf_counter()
    train_model(model, bundle, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                train_samples=args.train_samples)
    top1, top5 = accuracy(model, bundle.test, num_classes=bundle.num_classes, desc="test")
    metrics = {"top1": top1, "top5": top5, "epochs": args.epochs, "seconds": time.perf_counter() - started}
    save_checkpoint(args.out, model, model_name=args.model, model_kwargs=model_kwargs, dataset=bundle.name,
                    metrics=metrics)
    if args.json:
        print(json.dumps({"model": args.model, "dataset": bundle.name, "checkpoint": str(args.out), **metrics}))
    else:
        print(f"{args.model} on {bundle.name}: test top-1 {top1:.2f}% after {args.epochs} epochs "
              f"({metrics['seconds']:.0f} s); saved {args.out}")


def load_selection(args: argparse.Namespace):
    from .selection import Selection

    return Selection.load(args.selection) if getattr(args, "selection", None) else None


def calibration_size(args: argparse.Namespace, selection) -> int:
    if args.calibration is not None:
        return args.calibration
    return int(selection.provenance.get("calibration", 512)) if selection is not None else 512


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_ratios, format_report, prepare_model

    selection = load_selection(args)
    quant = quant_config(args, selection)
    prepared = prepare_model(args.model, args.dataset, args.checkpoint, weights=getattr(args, "weights", None),
                             device=args.device, **data_options(args))
    report = evaluate_ratios(prepared, args.ratios, calibration=calibration_size(args, selection),
                             samples=args.samples, quant=quant, method=args.method, selection=selection,
                             batch_size=args.batch_size)
    print(json.dumps(report) if args.json else format_report(report))


def converted_with_images(args: argparse.Namespace, selection=None, device: str | None = None):
    """(prepared FP32 model, quant config, converted model, calibration images) for select/finetune,
    on `device` (default: the command's --device)."""
    from .api import quantize
    from .evaluation import prepare_model

    quant = quant_config(args, selection)
    prepared = prepare_model(args.model, args.dataset, args.checkpoint, weights=getattr(args, "weights", None),
                             device=device or args.device, **data_options(args))
    if prepared.quantized is not None:
        raise FlexiqError(f"{args.checkpoint} is already quantized; pass the FP32 checkpoint")
    flexiq = quantize(prepared.model, prepared.bundle, quant, samples=calibration_size(args, selection))
    return prepared, quant, flexiq.quantized, flexiq.calibration_images


def cmd_select(args: argparse.Namespace) -> None:
    from .config import config_to_dict
    from .selection import apply_selection, create_strategy
    from .selection.base import validate_levels
    from .selection.fitness import FitnessEvaluator, current_masks
    from .quant.convert import mac_share_4bit, set_ratio

    levels = validate_levels(args.ratios)
    if not levels:
        raise FlexiqError("--ratios needs at least one level above 0")
    options = {}
    if args.method == "evolution":
        options = {"population": args.population, "generations": args.generations, "metric": args.metric,
                   "progress": True}
        if args.validation_share is not None:
            options["validation_share"] = args.validation_share
        if args.acceptance_z is not None:
            options["acceptance_z"] = args.acceptance_z
    prepared, quant, qmodel, images = converted_with_images(args)
    strategy = create_strategy(args.method, budget=quant.budget, seed=args.seed, **options)
    started = time.perf_counter()
    selection = strategy.select(qmodel, levels, images)
    seconds = time.perf_counter() - started
    # Every method's levels are scored the same way, so that their fitness can be compared.
    apply_selection(qmodel, selection)
    evaluator = FitnessEvaluator(qmodel, images, metric=args.metric)
    rows = []
    for ratio in levels:
        set_ratio(qmodel, ratio)
        rows.append({"ratio": ratio, "fitness": evaluator(current_masks(qmodel)),
                     "mac_share_4bit": mac_share_4bit(qmodel)})
    selection.provenance.update({
        "seed": args.seed, "calibration": len(images), "metric": args.metric, "fitness_per_level": rows,
        "seconds": seconds, "quant_config": config_to_dict(quant), "model": args.model, "dataset": args.dataset,
    })
    write_text_atomically(args.out, selection.to_json())
    result = {"method": selection.method, "seed": args.seed, "levels": rows, "seconds": seconds,
              "evaluations": int(selection.provenance.get("evaluations", 0))}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.method} selection of {args.model} ({len(images)} calibration images, {seconds:.1f} s, "
          f"{result['evaluations']} fitness evaluations) -> {args.out}")
    print(f"{'ratio':>7}{'4-bit MACs':>12}{'fitness (' + args.metric + ')':>18}")
    for row in rows:
        print(f"{row['ratio']:>7.0%}{row['mac_share_4bit']:>12.1%}{row['fitness']:>18.5g}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .finetune import FinetuneConfig, finetune, save_quantized_checkpoint
    from .selection import apply_selection, create_strategy
    from .selection.base import validate_levels

    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, train_samples=args.train_samples,
                            batch_size=args.batch_size, temperature=args.temperature,
                            label_weight=args.label_weight, seed=args.seed)
    selection = load_selection(args)
    prepared, quant, qmodel, images = converted_with_images(args, selection)
    if selection is None:
        levels = validate_levels(args.ratios)
        if not levels:
            raise FlexiqError("--ratios needs at least one level above 0")
        selection = create_strategy(args.method, budget=quant.budget, seed=args.seed).select(qmodel, levels, images)
    apply_selection(qmodel, selection)
    started = time.perf_counter()
    summary = finetune(qmodel, prepared.model, prepared.bundle, config)
    seconds = time.perf_counter() - started
    save_quantized_checkpoint(args.out, qmodel, prepared.model, model_name=args.model,
                              model_kwargs=prepared.model_kwargs or {}, dataset=prepared.bundle.name,
                              input_shape=list(images[:1].shape), selection=selection, finetune_config=config,
                              metrics={"seconds": seconds, **summary})
    if args.json:
        print(json.dumps({"model": args.model, "checkpoint": str(args.out), "seconds": seconds, **summary}))
    else:
        print(f"finetuned {args.model} ({selection.method} selection, levels {selection.levels}) for "
              f"{args.epochs} epoch(s) on {summary['train_samples']} images in {seconds:.0f} s; saved {args.out}")


def cmd_latency(args: argparse.Namespace) -> None:
    """Latency per ratio: the backend is checked first, so an unavailable one fails before any work."""
    import torch

    from kernels.npu_sim import NpuConfig
    from .latency import create_backend
    from .api import quantize
    from .models import create_model, get_model_entry
    from .selection import apply_selection, create_strategy
    from .selection.base import validate_levels

    options = {}
    if args.backend == "npu-sim":
        options["config"] = NpuConfig(rows=args.rows, cols=args.cols, dataflow=args.dataflow, clock_mhz=args.clock_mhz,
                                      dram_bytes_per_cycle=args.dram_bytes_per_cycle)
    elif args.backend in ("cpu", "gpu"):
        options["rounds"] = args.rounds
    if args.backend == "gpu" and args.device:
        options["device"] = args.device
    backend = create_backend(args.backend, **options)
    selection = load_selection(args)
    quant = quant_config(args, selection)
    levels = validate_levels(args.ratios)
    if args.dataset:
        from .devices import HOST

        # backends take host models (the gpu backend moves what it times to its --device)
        prepared, quant, qmodel, images = converted_with_images(args, selection, device=str(HOST))
        float_model = prepared.model
    else:
        get_model_entry(args.model)
        if args.checkpoint:
            from .models import load_checkpoint_model

            float_model, _ = load_checkpoint_model(args.checkpoint, expected_model=args.model)
        else:
            float_model = create_model(args.model, in_chans=args.in_chans).eval()
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.calibration or 16, args.in_chans, args.image_size, args.image_size,
                             generator=generator)
        qmodel = quantize(float_model, list(images.split(8)), quant).quantized
    if selection is None and levels:
        selection = create_strategy(args.method, budget=quant.budget).select(qmodel, levels, images)
    if selection is not None:
        apply_selection(qmodel, selection)
    example = images[:1].expand(args.batch, *images.shape[1:])
    result = backend.measure(qmodel, example, args.ratios, args.model)
    result["selection"] = selection.method if selection else None
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model} on {backend.name} ({result['provenance']}; {result['hardware'].get('simulator') or result['hardware'].get('cpu', '')}), "
          f"batch {result['batch']}, selection {result['selection']}")
    print(f"{'ratio':>7}{'latency us':>14}{'cycles':>14}{'speed-up':>10}")
    for row in result["ratios"]:
        cycles = "-" if row["cycles"] is None else str(row["cycles"])
        print(f"{row['ratio']:>7.0%}{row['latency_us']:>14.1f}{cycles:>14}{row['speedup_vs_int8']:>9.3f}x")
    if result["switch_us"] is not None:
        print(f"ratio switch: {result['switch_us']:.3f} us")


def cmd_models(args: argparse.Namespace) -> None:
    """The curated registry (tested settings, offline weights), and what else `--model` takes."""
    from .models import get_model_entry, list_models

    print(f"{'name':<20}{'family':<8}{'pretrained weights':<34}description")
    for name in list_models():
        entry = get_model_entry(name)
        print(f"{name:<20}{entry.family:<8}{entry.pretrained_source or '-':<34}{entry.description}")
    print("\nAlso accepted by --model: any timm architecture (e.g. resnet34; weights from --weights PATH or the "
          "local timm/Hugging Face cache) and your own code as package.module:factory (imported from the working "
          "directory or PYTHONPATH; the factory may take num_classes, in_chans, pretrained).")


def cmd_demo(args: argparse.Namespace) -> None:
    """The main job on the embedded default: train a ResNet-20 once (reused afterwards), then a
    search study on a local Ray into the SQLite store (a finished study is shown, not rerun)."""
    from .store import Repository, default_db_url

    checkpoint = data_home() / f"resnet20-{args.dataset}-e{args.epochs}.pt"
    if checkpoint.is_file():
        print(f"reusing {checkpoint}", file=sys.stderr)
    else:
        print(f"training resnet20 on {args.dataset} for {args.epochs} epochs -> {checkpoint}", file=sys.stderr)
        cmd_train(argparse.Namespace(model="resnet20", dataset=args.dataset, epochs=args.epochs, out=checkpoint,
                                     batch_size=128, lr=0.1, train_samples=None, seed=0, json=False, device="auto"))
    name = f"demo-resnet20-{args.dataset}-e{args.epochs}"
    url = default_db_url()
    study = Repository.open(url).get_study(name)
    if study is not None and study["status"] == "finished":
        print(f"reusing study {name!r} (id {study['id']})", file=sys.stderr)
        cmd_studies(build_parser().parse_args(["studies", "pareto", str(study["id"]), "--db", url]))
        return
    search = ["search", "--model", "resnet20", "--checkpoint", str(checkpoint), "--dataset", args.dataset,
              "--name", name, "--backends", "npu-sim,cpu", "--calibration", "256", "--eval-samples", "2000",
              "--population", "12", "--generations", "8", "--workers", "2", "--db", url]
    if study is not None:
        search.append("--resume")
    if args.no_ray:
        search.append("--no-ray")
    cmd_search(build_parser().parse_args(search))

def cmd_search(args: argparse.Namespace) -> None:
    """A search study: the config is validated and the database opened before any work starts.
    With --schedule-run the config, study name and job id are the scheduled run's, and the run is
    marked succeeded or failed when the search ends."""
    from .search import check_search_inputs, load_search_config
    from .store import Repository, default_db_url

    overrides = {key: getattr(args, key) for key in ("model", "checkpoint", "weights", "dataset", "name", "backends",
                                                      "ratios", "generations", "population", "islands", "workers", "trials",
                                                      "calibration", "eval_samples", "seed", "calibration_data",
                                                      "calibration_share", "device")}
    url = args.db or default_db_url()
    if args.schedule_run is None:
        if overrides["ratios"] is not None:
            overrides["ratios"] = [r for r in ratio_list(overrides["ratios"]) if r > 0]
        config = load_search_config(args.config, overrides)
        check_search_inputs(config)
        run_search(args, config, Repository.open(url), url, args.job_id)
        return
    if args.config or args.resume or args.job_id or any(value is not None for value in overrides.values()):
        raise FlexiqError("--schedule-run takes config, study name and job id from the schedule; "
                          "give no --config, --resume, --job-id or config flags with it")
    repo = Repository.open(url)
    run = repo.schedule_run(args.schedule_run)
    try:  # whatever stops a scheduled search (a checkpoint gone since, a crash) ends up on its run
        config = scheduled_search_config(run)
        check_search_inputs(config)
        run_search(args, config, repo, url, run["submission_id"])
    except BaseException as exc:
        repo.update_schedule_run(run["id"], "failed", message=first_line(exc))
        raise
    repo.update_schedule_run(run["id"], "succeeded")


def run_search(args: argparse.Namespace, config, repo, url: str, submission_id: str | None) -> None:
    from .search import LocalExecutor, SearchRunner
    from .store import optuna_storage_url, redact_url

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if args.no_ray:
        executor = LocalExecutor()
    else:
        from workers import RayExecutor  # only this command needs Ray

        executor = RayExecutor(address=args.address, workers=config.workers)
        submission_id = submission_id or f"ray-{executor.job_id}"
    runner = SearchRunner(config, repo, optuna_storage_url(url), executor, log=log, submission_id=submission_id,
                          store_label=redact_url(url))
    started = time.perf_counter()
    study_id = runner.run(resume=args.resume)
    log(f"search finished in {time.perf_counter() - started:.0f} s")
    print_pareto(repo.pareto(study_id), config.study_name)
    print(f"dashboard: flexiq dashboard --db '{redact_url(url)}'")


def scheduled_search_config(run: dict):
    """The SearchConfig a scheduled run starts from: its schedule's, under the run's study name."""
    from .config import config_from_dict

    try:
        return dataclasses.replace(config_from_dict(run["config"]), name=run["study_name"])
    except (ValueError, TypeError) as exc:
        raise FlexiqError(f"schedule run {run['id']}: its stored config cannot be loaded: {exc}") from None


def print_pareto(points: list[dict], title: str) -> None:
    """The front per backend; `point` is what `flexiq export --point` takes (on the first backend)."""
    print(f"Pareto front of {title} (top-1 vs latency, per backend; export --point takes the first backend's point)")
    print(f"{'point':>5}  {'backend':<10}{'provenance':<12}{'trial':>5}{'ratio':>7}{'top-1':>9}{'latency us':>14}  method")
    for p in points:
        print(f"{p['point']:>5}  {p['backend']:<10}{p['provenance']:<12}{p['trial']:>5}{p['ratio']:>7.0%}"
              f"{p['top1']:>9.2f}{p['latency_us']:>14.1f}  {p['method']}")


def print_study(study: dict, trials: list[dict]) -> None:
    """One line per trial: what it drew and its objectives (the numbers Optuna ranked it on)."""
    from .store.repository import params_label

    data = study["config"].get("_data", {})
    print(f"study {study['id']} {study['name']!r}: {study['status']}, {study['model']} on {study['dataset']}, "
          f"{len(trials)} trial(s); ratios {data.get('ratios')}, population {data.get('population')}, "
          f"generations {data.get('generations')}")
    backends = study["backends"]
    header = f"{'trial':>5}  {'status':<10}{'mean top-1':>11}" + "".join(f"{'us on ' + b:>16}" for b in backends)
    print(header + "  params drawn")

    def number(value, spec):
        return format(value, spec) if value is not None else "-"

    for trial in trials:
        latencies = "".join(f"{number(trial['mean_latency_us'][b], '.1f'):>16}" for b in backends)
        params = params_label(trial["params"]) or "(the config's own values)"
        print(f"{trial['number']:>5}  {trial['status']:<10}{number(trial['mean_top1'], '.2f'):>11}{latencies}  {params}")
    print("mean top-1 and latency are over the 4-bit levels (ratio > 0); the first backend's is the one Optuna ranks")


def cmd_studies(args: argparse.Namespace) -> None:
    from .store import Repository

    repo = Repository.open(args.db)
    if args.action == "list":
        rows = repo.list_studies()
        if args.json:
            print(json.dumps(rows))
            return
        print(f"{'id':>4}  {'name':<32}{'status':<10}{'model':<18}{'dataset':<16}created")
        for row in rows:
            print(f"{row['id']:>4}  {row['name']:<32}{row['status']:<10}{row['model']:<18}{row['dataset']:<16}"
                  f"{row['created']}")
        return
    if args.study is None:
        raise FlexiqError(f"studies {args.action} needs a study id or name")
    study = repo.get_study(int(args.study) if args.study.isdigit() else args.study)
    if study is None:
        raise FlexiqError(f"no study {args.study!r} in this database")
    if args.action == "show":
        trials = repo.trial_summaries(study["id"])
        if args.json:
            print(json.dumps(dict(study, trials=trials), default=str))
        else:
            print_study(study, trials)
        return
    points = repo.pareto(study["id"])
    if args.json:
        print(json.dumps(points))
    else:
        print_pareto(points, study["name"])


def cmd_schedule(args: argparse.Namespace) -> None:
    from .scheduler import check_schedule, next_run, next_slot, utcnow
    from .store import Repository

    if args.action == "add":
        from .search import check_search_inputs, load_search_config, storable_config

        if not args.cron or not args.config:
            raise FlexiqError("schedule add needs --cron and --config")
        config = load_search_config(args.config, {})
        check_search_inputs(config)
        if config.checkpoint:  # runs start elsewhere (another directory, a service): store it absolute
            config = dataclasses.replace(config, checkpoint=str(Path(config.checkpoint).resolve()))
        name = args.name or config.name or Path(args.config).stem
        check_schedule(name, args.cron, args.timezone)
        with Repository.open(args.db) as repo:
            schedule_id = repo.add_schedule(name, args.cron, storable_config(config), args.timezone)
        first = next_slot(args.cron, args.timezone, utcnow())
        print(f"schedule {name!r} (id {schedule_id}): {args.cron} ({args.timezone}), first run {first.isoformat()}")
        return
    if args.action in ("remove", "enable", "disable"):
        if args.name is None:
            raise FlexiqError(f"schedule {args.action} needs a schedule name")
        with Repository.open(args.db) as repo:
            if args.action == "remove":
                repo.remove_schedule(args.name)
            else:
                repo.set_schedule_enabled(args.name, args.action == "enable")
        print(f"{args.action}d schedule {args.name!r}" + (" (its studies stay)" if args.action == "remove" else ""))
        return
    with Repository.open(args.db) as repo:
        if args.action == "runs":
            runs = repo.schedule_runs(schedule=args.name, limit=args.limit)
            if args.json:
                print(json.dumps(runs))
                return
            print(f"{'slot (UTC)':<27}{'status':<11}{'job':<11}{'study':<40}submission")
            for r in runs:
                print(f"{r['slot']:<27}{r['status']:<11}{r['job_status'] or '-':<11}{r['study_name']:<40}"
                      f"{r['submission_id']}" + (f"\n    {r['message']}" if r["message"] else ""))
            return
        schedules = repo.list_schedules()
    now = utcnow()
    for item in schedules:
        upcoming, problem = next_run(item, now)
        item["next_run"], item["config_error"] = upcoming and upcoming.isoformat(), problem
    if args.json:
        print(json.dumps(schedules))
        return
    print(f"{'id':>4}  {'name':<24}{'cron':<16}{'time zone':<18}{'next run (UTC)':<27}last run")
    for item in schedules:
        last = item["last_run"]
        shown = f"{last['slot']} {last['job_status'] or last['status']}" if last else "-"
        next_run = item["next_run"] or ("skipped" if item["config_error"] else "disabled")
        print(f"{item['id']:>4}  {item['name']:<24}{item['cron']:<16}{item['timezone']:<18}{next_run:<27}{shown}"
              + (f"\n    skipped by the scheduler: {item['config_error']}" if item["config_error"] else ""))


def cmd_scheduler(args: argparse.Namespace) -> int:
    """The scheduler process: a loop (until SIGTERM/SIGINT), or one pass with --once."""
    import signal
    import threading
    from datetime import datetime, timezone

    from .scheduler import LocalSubmitter, Scheduler, utcnow
    from .store import Repository, default_db_url, redact_url

    if args.now is not None and not args.once:
        raise FlexiqError("--now needs --once (a running scheduler follows the real clock)")
    if not args.poll > 0:
        raise FlexiqError(f"--poll must be a positive number of seconds, got {args.poll}")
    clock = utcnow
    if args.now is not None:
        try:
            fixed = datetime.fromisoformat(args.now)
        except ValueError:
            raise FlexiqError(f"--now {args.now!r} is not an ISO time such as 2026-11-26T02:00:00Z") from None
        fixed = fixed if fixed.tzinfo else fixed.replace(tzinfo=timezone.utc)
        clock = lambda: fixed  # noqa: E731
    url = args.db or default_db_url()
    repo = Repository.open(url)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if args.address:
        from workers.submit import RaySubmitter  # only the Ray submitter needs Ray

        submitter = RaySubmitter(args.address, python=args.job_python, send_db_url=True if args.send_db_url else None)
        if not submitter.sends_db_url(url):
            log("Ray jobs take the database URL from the cluster's FLEXIQ_DB (this URL has a password, not sent)")
    else:
        submitter = LocalSubmitter(no_ray=args.no_ray)
    scheduler = Scheduler(repo, url, submitter, clock=clock, log=log)
    log(f"scheduler {scheduler.identity}: schedules in {redact_url(url)}, runs go to {submitter.name}"
        + (f" ({args.address})" if args.address else ""))
    if args.once:
        started = scheduler.tick()
        submitter.wait()
        scheduler.reconcile()
        ours = [repo.schedule_run(run["id"]) for run in started]
        for run in ours:
            log(f"run {run['submission_id']}: {run['status']}" + (f" ({run['message']})" if run["message"] else ""))
        return 1 if any(run["status"] == "failed" for run in ours) else 0
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    scheduler.serve(stop, poll_seconds=args.poll)
    log("scheduler stopped (runs it started keep running)")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> None:
    """Streamlit on `dashboard/app.py`, replacing this process. The database is opened read-only
    first, so an empty, unreachable or outdated one is the usual one-line error. The URL reaches the
    app in $FLEXIQ_DB, not on its command line, where other users could read the password."""
    import importlib.util

    for module in ("streamlit", "plotly"):  # the 'dashboard' extra: said here, not by the replaced process
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    from .store import Repository, default_db_url, redact_url

    url = args.db or default_db_url()
    Repository.open(url, read_only=True).close()
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    if not app.is_file():
        raise FlexiqError(f"no dashboard app at {app} (install flexiq with its dashboard package)")
    print(f"dashboard of {redact_url(url)} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host,
               "--server.port", str(args.port), "--server.headless", "true", "--server.fileWatcherType", "none",
               "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false"]
    os.execve(sys.executable, command, dict(os.environ, FLEXIQ_DB=url))


def cmd_export(args: argparse.Namespace) -> None:
    from .runtime.bench import export_study
    from .store import Repository

    if args.point is not None and args.trial is not None:
        raise FlexiqError("give --point or --trial, not both")
    with Repository.open(args.db) as repo:
        summary = export_study(repo, args.study, args.out, trial=args.trial, point=args.point)
    if args.json:
        print(json.dumps(summary))
    else:
        levels = ", ".join(f"{r:.0%} {a:.2f}" for r, a in sorted(summary["accuracy"].items()))
        print(f"exported trial {summary['trial']} of {summary['study']} to {summary['path']} (top-1: {levels})")


def cmd_serve_bench(args: argparse.Namespace) -> None:
    from .runtime.bench import plot_timeline, serve_bench

    if args.slo_ms <= 0 or args.duration <= 0 or not 0 < args.load <= 10:
        raise FlexiqError("--slo-ms and --duration must be positive, --load in (0, 10]")
    result = serve_bench(args.model, trace=args.trace, slo_ms=args.slo_ms, duration_s=args.duration,
                         backend=args.backend, load=args.load, max_batch=args.max_batch, seed=args.seed)
    if args.plot:
        plot_timeline(result, args.plot)
    result.pop("timeline")
    if args.json:
        print(json.dumps(result))
        return
    source = result["latency_source"]
    print(f"{result['trace']} trace, {result['requests']} requests, SLO {args.slo_ms:g} ms, latency from "
          f"{source['backend']} ({source['provenance']}); ratio switch {result['switch_us']:.2f} us")
    print(f"{'policy':<10}{'p50 ms':>10}{'peak p50':>10}{'p90 ms':>10}{'p99 ms':>10}{'rps':>10}{'SLO miss':>10}"
          f"{'top-1':>8}{'switches':>10}")
    for run in result["runs"]:
        peak = "n/a" if run["peak_p50_ms"] is None else f"{run['peak_p50_ms']:.3f}"
        print(f"{run['policy']:<10}{run['p50_ms']:>10.3f}{peak:>10}{run['p90_ms']:>10.3f}{run['p99_ms']:>10.3f}"
              f"{run['throughput_rps']:>10.0f}{run['slo_violation_rate']:>10.1%}{run['mean_accuracy']:>8.2f}"
              f"{run['switches']:>10}")
    if result["runs"][0]["peak_p50_ms"] is not None:
        print("peak p50: requests that arrived while the trace's rate was above the midpoint of its min and max")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "select": cmd_select, "finetune": cmd_finetune,
            "latency": cmd_latency, "models": cmd_models, "demo": cmd_demo, "search": cmd_search,
            "studies": cmd_studies, "schedule": cmd_schedule,
            "scheduler": cmd_scheduler, "export": cmd_export, "serve-bench": cmd_serve_bench, "dashboard": cmd_dashboard}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .allocator import keep_freed_memory
    from .errors import BackendUnavailable

    keep_freed_memory()
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's exit
    except BrokenPipeError:  # `flexiq studies list | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout at exit: send that nowhere
        return 0
    except BackendUnavailable as exc:
        print(f"flexiq: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ModuleNotFoundError as exc:  # a part of flexiq that was not installed (pyproject's extras)
        from .extras import missing_extra

        answer = missing_extra(exc)
        if answer is None:
            raise
        print(f"flexiq {args.command}: {answer}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (FlexiqError, ValueError, argparse.ArgumentTypeError) as exc:  # the last: a flag parsed by hand
        print(f"flexiq: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
