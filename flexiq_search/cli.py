"""`flexiq`: the command-line front door.

Bad input ends with one line on stderr and exit code 2. Machine-readable output (`--json`) goes to
stdout alone; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import FlexiqError

EXIT_BAD_INPUT = 2
DEFAULT_RATIOS = "0,0.25,0.5,0.75,1"


def data_home() -> Path:
    """Where the embedded default keeps its files: $FLEXIQ_HOME or the XDG data folder."""
    if "FLEXIQ_HOME" in os.environ:
        return Path(os.environ["FLEXIQ_HOME"])
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "flexiq"


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
    parser.add_argument("--group-size", type=positive_int, default=8, help="input channels per precision group")
    parser.add_argument("--observer", choices=["minmax", "percentile"], default="minmax")
    parser.add_argument("--extraction", choices=["shift", "naive"], default="shift",
                        help="skip unused high bits (FlexiQ) or always take the top 4 bits")
    parser.add_argument("--budget", choices=["global", "per-layer"], default="global",
                        help="spend the 4-bit MAC share over the whole model or in every layer")
    parser.add_argument("--int4-first-last", action="store_true",
                        help="let the first conv and the classifier go 4-bit too")


def quant_config(args: argparse.Namespace):
    from .config import QuantConfig

    return QuantConfig(group_size=args.group_size, observer=args.observer, extraction=args.extraction,
                       budget=args.budget, keep_first_int8=not args.int4_first_last,
                       keep_last_int8=not args.int4_first_last)


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

    evaluate = sub.add_parser("evaluate", help="accuracy of FP32, INT8 and each 4-bit ratio")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--checkpoint", default=None, help="flexiq checkpoint; without it, offline pretrained weights")
    evaluate.add_argument("--dataset", required=True, help="digits, fashion-mnist or imagefolder:PATH")
    evaluate.add_argument("--ratios", type=ratio_list, default=ratio_list(DEFAULT_RATIOS))
    evaluate.add_argument("--calibration", type=positive_int, default=512, help="calibration samples")
    evaluate.add_argument("--samples", type=positive_int, default=None, help="evaluate on a fixed test subset")
    evaluate.add_argument("--batch-size", type=positive_int, default=256)
    evaluate.add_argument("--json", action="store_true")
    add_quant_options(evaluate)

    sub.add_parser("models", help="list registered models")

    demo = sub.add_parser("demo", help="the main job on the embedded default: train (or reuse) and evaluate")
    demo.add_argument("--epochs", type=positive_int, default=3)
    demo.add_argument("--dataset", default="fashion-mnist")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from .data import get_dataset
    from .models import create_model, get_model_entry, save_checkpoint
    from .training import accuracy, train_model

    get_model_entry(args.model)
    bundle = get_dataset(args.dataset)
    model_kwargs = {"num_classes": bundle.num_classes, "in_chans": bundle.in_chans}
    if get_model_entry(args.model).family == "vit":
        model_kwargs["img_size"] = bundle.image_size
    model = create_model(args.model, **model_kwargs)
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


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_ratios, format_report, prepare_model

    quant = quant_config(args)
    prepared = prepare_model(args.model, args.dataset, args.checkpoint)
    report = evaluate_ratios(prepared, args.ratios, calibration=args.calibration, samples=args.samples,
                             quant=quant, batch_size=args.batch_size)
    print(json.dumps(report) if args.json else format_report(report))


def cmd_models(args: argparse.Namespace) -> None:
    from .models import get_model_entry, list_models

    for name in list_models():
        entry = get_model_entry(name)
        print(f"{name:<20}{entry.family:<6}{entry.description}")


def cmd_demo(args: argparse.Namespace) -> None:
    """Train a ResNet-20 once (reused afterwards) and print its FlexiQ accuracy table."""
    from .evaluation import evaluate_ratios, format_report, prepare_model

    checkpoint = data_home() / f"resnet20-{args.dataset}-e{args.epochs}.pt"
    if checkpoint.is_file():
        print(f"reusing {checkpoint}", file=sys.stderr)
    else:
        print(f"training resnet20 on {args.dataset} for {args.epochs} epochs -> {checkpoint}", file=sys.stderr)
        cmd_train(argparse.Namespace(model="resnet20", dataset=args.dataset, epochs=args.epochs, out=checkpoint,
                                     batch_size=128, lr=0.1, train_samples=None, seed=0, json=False))
    prepared = prepare_model("resnet20", args.dataset, str(checkpoint))
    report = evaluate_ratios(prepared, ratio_list(DEFAULT_RATIOS))
    print(format_report(report))


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "models": cmd_models, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (FlexiqError, ValueError) as exc:
        print(f"flexiq: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
