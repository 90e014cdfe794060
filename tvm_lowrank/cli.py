"""`tvm-lowrank` command line: parses arguments and calls the Python API, nothing more."""

from __future__ import annotations

import argparse
import sys

from .errors import LowRankError


def _cmd_compile(args) -> int:
    from .api import compile_model

    result = compile_model(
        args.model, target=args.target, method=args.method, rank=args.rank, rank_file=args.rank_file,
        out=args.out, min_top1_agreement=args.min_top1_agreement, verify=not args.no_verify,
        database=args.schedules, rpc=args.rpc, key=args.key,
    )
    print(result.report)
    schedules = result.artifact.manifest.get("schedules")
    if schedules:
        print(f"tuned kernels: {schedules['kernels_from_database']} of {schedules['kernels']} "
              f"from {schedules['database']}")
        if schedules.get("outdated_kernels"):
            print(f"tuned before today's default schedules (re-tune): {len(schedules['outdated_kernels'])} "
                  "kernel(s)")
    cuda = result.artifact.manifest.get("cuda")
    if cuda:
        print(f"CUDA kernels: source; {cuda['note']}" if "note" in cuda else
              f"CUDA kernels: {cuda['kernels']} for {cuda['arch']} (loads with the TVM runtime alone)")
    if result.verification is not None:
        print(result.verification.summary())
    else:
        print((result.artifact.manifest.get("verification") or {}).get("skipped", "not verified"))
    print(f"artifact: {result.artifact.path}")
    return 0


def _cmd_tune(args) -> int:
    from .tune import tune_model

    try:
        result = tune_model(
            args.model, target=args.target, method=args.method, rank=args.rank, rank_file=args.rank_file,
            database_dir=args.database, trials=args.trials, min_trials_per_task=args.min_trials_per_task,
            seed_schedules=not args.no_seed, spread=not args.no_spread, rpc=args.rpc, key=args.key,
            num_cores=args.num_cores, random_seed=args.seed, confirm_top=args.confirm_top,
        )
    except KeyboardInterrupt:  # tune_model said what is kept; no traceback
        return 130
    print(result.summary())
    return 0


def _cmd_verify(args) -> int:
    from .api import time_artifact, verify_artifact

    print(verify_artifact(args.artifact, min_top1_agreement=args.min_top1_agreement, rpc=args.rpc,
                          key=args.key).summary())
    if args.repeat > 0:
        print(time_artifact(args.artifact, rpc=args.rpc, key=args.key, repeat=args.repeat,
                            number=args.number).summary())
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, eval_images=args.eval_images, rank=args.rank, method=args.method)
    return 0


def _cmd_bench(args) -> int:
    from .bench import BenchSettings, run_bench
    from .bench.grid import split_list
    from .targets import host_cpu_target

    settings = BenchSettings(repeat=args.repeat, accuracy_images=args.accuracy_images, dataset=args.dataset,
                             database=args.schedules, tracker=args.tracker, baselines=not args.no_baselines,
                             kernels=not args.no_kernels, **({"threads": args.threads} if args.threads else {}))
    result = run_bench(split_list(args.models), split_list(args.methods), split_list(args.rank),
                       split_list(args.targets) if args.targets else [host_cpu_target()], args.out, settings,
                       plot_emulated=args.plot_emulated)
    print(result.summary())
    print("wrote " + ", ".join(str(path) for path in result.outputs))
    return 1 if result.failed else 0


def _cmd_targets(args) -> int:
    from .runner import where_it_runs
    from .targets import list_targets, load_target

    for name in list_targets():
        spec = load_target(name)
        print(f"{name:16s} {spec.description}  [{where_it_runs(spec)}]")
    return 0


def _cmd_models(args) -> int:
    from .models import list_models

    print("\n".join(list_models()))
    return 0


def _cmd_train(args) -> int:
    from .train import MethodOptions, train_model

    options = MethodOptions(rank=args.rank, switch_every=args.switch_every, rank1_terms=args.rank1_terms,
                            period=args.period, deeptwist_form=args.deeptwist_form,
                            cp_steps_per_layer=args.cp_steps_per_layer)
    run = train_model(args.method, model=args.model, epochs=args.epochs, out=args.out, options=options,
                      train_limit=args.train_limit, test_limit=args.test_limit, seed=args.seed, lr=args.lr,
                      compile_target=args.compile)
    print(run.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvm-lowrank", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    compile_ = commands.add_parser("compile", help="compile a model for a target and verify it")
    compile_.add_argument("model", help="a .onnx file, a torch.export .pt2 file, or module:function "
                                        "returning (nn.Module, example input)")
    compile_.add_argument("--target", default="x86-avx2", help="a name from `tvm-lowrank targets` or a .json path")
    compile_.add_argument("--method", default="tai", help="tai, cp, rank1, tucker2, im2col, or dense (no rewrite)")
    compile_.add_argument("--rank", default="energy:0.95",
                          help="N (every layer, clamped per layer), energy:F, macs:R or params:R")
    compile_.add_argument("--rank-file", help="JSON of per-layer ranks (layer names as in the report)")
    compile_.add_argument("--out", default="build/model", help="artifact directory")
    compile_.add_argument("--min-top1-agreement", type=float, default=0.99,
                          help="required top-1 agreement with the original model")
    compile_.add_argument("--no-verify", action="store_true", help="build without running the checks")
    compile_.add_argument("--schedules", nargs="?", const="default", default=None, metavar="DIR",
                          help="apply a tuning database: DIR, or schedules/<target>/ when no DIR is given")
    compile_.add_argument("--rpc", metavar="HOST:PORT",
                          help="verify the build on a board registered on this RPC tracker")
    compile_.add_argument("--key", help="the board's tracker key (default: the target's rpc_key)")
    compile_.set_defaults(run=_cmd_compile)

    tune = commands.add_parser("tune", help="tune the model's kernels for a target into its schedules "
                                            "database (MetaSchedule); resumable")
    tune.add_argument("model", help="as for compile")
    tune.add_argument("--target", default="x86-avx2", help="a name from `tvm-lowrank targets` or a .json path")
    tune.add_argument("--method", default="tai", help="as for compile (the kernels of that build are tuned)")
    tune.add_argument("--rank", default="energy:0.95", help="as for compile")
    tune.add_argument("--rank-file", help="as for compile")
    tune.add_argument("--database", help="database directory (default: schedules/<target>/)")
    tune.add_argument("--trials", type=int, default=None,
                      help="measurements for the model, records already in the database included "
                           "(default: 32 per kernel)")
    tune.add_argument("--min-trials-per-task", type=int, default=8,
                      help="floor per kernel where the budget allows; the rest goes by latency share")
    tune.add_argument("--rpc", metavar="HOST:PORT", help="RPC tracker of the board to measure on")
    tune.add_argument("--key", help="the board's tracker key (default: the target's rpc_key)")
    tune.add_argument("--num-cores", type=int, default=None,
                      help="cores the code may use (default: this machine's, or 4 on a board)")
    tune.add_argument("--no-seed", action="store_true",
                      help="do not start from our default schedules")
    tune.add_argument("--no-spread", action="store_true",
                      help="let MetaSchedule's gradient scheduler split the trials instead")
    tune.add_argument("--seed", type=int, default=None, help="random seed of the search")
    tune.add_argument("--confirm-top", type=int, default=2,
                      help="best schedules of each task measured again with ours after its search (0: none)")
    tune.set_defaults(run=_cmd_tune)

    verify = commands.add_parser("verify", help="re-run the accuracy checks of an artifact")
    verify.add_argument("artifact")
    verify.add_argument("--min-top1-agreement", type=float, default=None)
    verify.add_argument("--rpc", metavar="HOST:PORT", help="RPC tracker of the board to run it on "
                                                           "(default: this machine)")
    verify.add_argument("--key", help="the board's tracker key (default: the target's rpc_key)")
    verify.add_argument("--repeat", type=int, default=5,
                        help="timing samples after the checks (0: no timing)")
    verify.add_argument("--number", type=int, default=3, help="runs averaged per timing sample")
    verify.set_defaults(run=_cmd_verify)

    demo = commands.add_parser("demo", help="compile the bundled Fashion-MNIST CNN dense and low-rank, "
                                            "verify, and compare accuracy and latency with PyTorch")
    demo.add_argument("--out", default="build/demo")
    demo.add_argument("--eval-images", type=int, default=1000, help="test images run through each build")
    demo.add_argument("--method", default="tai")
    demo.add_argument("--rank", default=None, help="rank policy (default: the demo's)")
    demo.set_defaults(run=_cmd_demo)

    bench = commands.add_parser("bench", help="benchmark models x methods x rank policies x targets: "
                                              "accuracy, agreement, MACs, size, latency; CSV/JSON/Markdown "
                                              "and plots; cached, failed cells reported")
    bench.add_argument("--models", required=True,
                       help="comma-separated: bundled model names and/or MODEL forms of compile")
    bench.add_argument("--methods", default="dense,tai", help="comma-separated methods (dense: no rewrite)")
    bench.add_argument("--rank", default="macs:0.25", help="comma-separated rank policies of the low-rank methods")
    bench.add_argument("--targets", default=None, help="comma-separated targets (default: this machine's x86)")
    bench.add_argument("--tracker", metavar="HOST:PORT", help="RPC tracker of the boards for remote targets")
    bench.add_argument("--out", default="reports/bench", help="output directory (its cache/ is reused)")
    bench.add_argument("--schedules", nargs="?", const="default", default=None, metavar="DIR",
                       help="apply a tuning database: DIR, or schedules/<target>/ when no DIR is given")
    bench.add_argument("--repeat", type=int, default=30, help="timing samples per latency")
    bench.add_argument("--accuracy-images", type=int, default=1000,
                       help="test images run through each build (0: no accuracy)")
    bench.add_argument("--dataset", default="auto", choices=("auto", "fashion-mnist", "none"),
                       help="test set for accuracy (auto: Fashion-MNIST for the bundled fmnist models)")
    bench.add_argument("--threads", type=int, default=None, help="threads of TVM, PyTorch and ORT (default: all)")
    bench.add_argument("--no-baselines", action="store_true", help="do not time PyTorch eager and ONNX Runtime")
    bench.add_argument("--no-kernels", action="store_true", help="no per-kernel roofline timings")
    bench.add_argument("--plot-emulated", action="store_true", help="show emulated devices in the speed plots")
    bench.set_defaults(run=_cmd_bench)

    train = commands.add_parser("train", help="train a low-rank model on Fashion-MNIST by one of the papers' "
                                              "methods and save it for `compile`")
    train.add_argument("--method", required=True,
                       help="atcd, atcd-fixed, tai-scratch (from scratch); tai-finetune, cp-iterative, deeptwist "
                            "(from the bundled trained model)")
    train.add_argument("--model", default="vgg-fmnist", help="a bundled model name (`tvm-lowrank models`)")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--out", default="model.pt2",
                       help=".pt2 (torch.export, what compile reads) or .pt (pickled module, .pt2 written beside)")
    train.add_argument("--rank", default="macs:0.25", help="rank policy of tai-*, cp-iterative, deeptwist")
    train.add_argument("--switch-every", default="1epoch", help="ATCD alternation: e.g. 50steps or 0.5epoch")
    train.add_argument("--rank1-terms", type=int, default=1, help="ATCD: rank-1 terms per filter")
    train.add_argument("--period", type=int, default=50, help="DeepTwist: steps between distortions")
    train.add_argument("--deeptwist-form", default="tai", help="DeepTwist's low-rank form: tai or im2col")
    train.add_argument("--cp-steps-per-layer", type=int, default=None,
                       help="cp-iterative: fine-tuning steps after each layer (default: the epochs split evenly)")
    train.add_argument("--train-limit", type=int, default=None, help="first N training images (default: all)")
    train.add_argument("--test-limit", type=int, default=None, help="first N test images (default: all)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the method's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--compile", metavar="TARGET", default=None,
                       help="also compile and verify the trained model for TARGET (artifact beside --out)")
    train.set_defaults(run=_cmd_train)

    commands.add_parser("targets", help="list the known targets").set_defaults(run=_cmd_targets)
    commands.add_parser("models", help="list the bundled models").set_defaults(run=_cmd_models)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (LowRankError, ValueError, FileNotFoundError) as error:
        print(f"tvm-lowrank {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
