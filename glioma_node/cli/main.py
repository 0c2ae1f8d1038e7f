"""The `glioma-node` command line.

Subcommands load and validate the configuration first, so a bad key stops the
command before any work with a message naming it. `synth` and `train` are training
entry points; they are imported only when called (node/ runs no model internals).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from glioma_node.service.config import ConfigError, load_config


class _PrintableFormatter(logging.Formatter):
    """Log lines for a terminal: the message's control characters escaped (a file name or
    header value in a warning cannot drive the terminal); tracebacks as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's naming)
        from glioma_node.core.text import printable

        return printable(super().formatMessage(record))


def _log_to_terminal(level: int) -> None:
    """Log records at ``level`` and above to stderr, escaped (see :class:`_PrintableFormatter`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _cmd_inspect(args: argparse.Namespace) -> int:
    from glioma_node.cli.inspect import inspect_path, render_text
    from glioma_node.core.text import printable_tree

    _log_to_terminal(logging.WARNING)  # what was skipped (a named pipe, ...) and why
    report = inspect_path(args.path, args.settings, decode=not args.headers_only)
    # JSON escapes control characters itself; the table gets every value escaped, so a
    # SeriesDescription with ESC, BEL, CR or a newline shows as \x1b..., one row per series
    print(json.dumps(report, indent=2) if args.json else render_text(printable_tree(report)))
    return 0


def _cmd_process(args: argparse.Namespace) -> int:
    from glioma_node.cli.process import process_folder
    from glioma_node.core.text import printable
    from glioma_node.inference.model_dir import ModelError
    from glioma_node.service.pipeline import OutcomeStatus

    _log_to_terminal(logging.INFO)
    try:
        outcomes = process_folder(args.path, args.out, args.settings)
    except ModelError as exc:
        print(f"glioma-node: model: {exc}", file=sys.stderr)
        return 2
    for o in outcomes:
        if o.status is OutcomeStatus.DONE and o.findings is not None:
            v = o.findings.volumes_ml
            print(f"{printable(o.study_instance_uid)}: whole tumour {v['whole_tumour']:.1f} ml, "
                  f"core {v['tumour_core']:.1f} ml, enhancing {v['enhancing_tumour']:.1f} ml -> {printable(o.folder)}")
            rg = o.findings.radiogenomics
            if rg is not None:
                parts = [f"{t.upper()} {p.status} (p={p.probability:.2f}, threshold {p.threshold:.2f}, {p.variant})"
                         for t, p in sorted(rg.predictions.items())]
                if rg.risk is not None:
                    parts.append(f"risk group {rg.risk.group} (score {rg.risk.score:.2f}, cutoff {rg.risk.cutoff:.2f})")
                print("    " + "; ".join(parts) + " [research use only, not for diagnosis]")
        else:
            print(f"{printable(o.study_instance_uid)}: FAILED: {printable(o.error)}")
    if not outcomes:
        print(f"glioma-node: no DICOM study found under {args.path}", file=sys.stderr)
        return 1
    return 0 if all(o.status is OutcomeStatus.DONE for o in outcomes) else 1


def _cmd_nifti2dicom(args: argparse.Namespace) -> int:
    from glioma_node.dicom_io.nifti import nifti_case_to_dicom

    written = nifti_case_to_dicom(Path(args.case_dir), Path(args.out), patient_id=args.patient_id)
    for role, folder in written.series_dirs.items():
        print(f"{role:5s} -> {folder}")
    print(f"study {written.study_instance_uid}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.longitudinal:
        from glioma_node.training.synth.longitudinal import write_longitudinal

        write_longitudinal(Path(args.out), patients=args.cases, seed=args.seed, progress=not args.quiet,
                           dicom=not args.nifti_only)
        return 0
    from glioma_node.training.synth.cohort import write_cohort

    write_cohort(Path(args.out), cases=args.cases, seed=args.seed, progress=not args.quiet, dicom=not args.nifti_only)
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, recorded with what a training run writes so it can be repeated."""
    return "glioma-node " + " ".join(shlex.quote(a) for a in args.argv)


def _cmd_train_radiogenomics(args: argparse.Namespace) -> int:
    from glioma_node.core.targets import TARGETS
    from glioma_node.inference.radiogenomics.cnn import DEFAULT_CNN
    from glioma_node.inference.radiogenomics.encoder import DEFAULT_ENCODER, RESNET18_WIDTHS
    from glioma_node.training.radiogenomics.train import RadiogenomicSettings, train_radiogenomics

    # The Cox model reads the MGMT and IDH probabilities, so survival trains them too.
    targets = ((*TARGETS, "survival") if args.target == "all" else ("mgmt", "idh", "survival")
               if args.target == "survival" else (args.target,))
    defaults = args.settings.training.radiogenomics
    from glioma_node.training.radiogenomics.features import MaskSource

    encoder = {**DEFAULT_ENCODER, "variant": args.encoder_variant, "crop_size": args.crop_size,
               "crop_spacing_mm": args.crop_spacing}
    if args.context_mm is not None:
        encoder["context_mm"] = args.context_mm
    backbone = args.encoder_backbone or ("medicalnet" if args.medicalnet else "lightweight")
    if backbone != "lightweight" and not args.medicalnet:
        raise SystemExit(f"glioma-node: --encoder-backbone {backbone} needs --medicalnet resnet_18.pth")
    encoder["backbone"] = backbone
    if backbone == "medicalnet":
        encoder["widths"] = list(RESNET18_WIDTHS)  # MedicalNet's weights are full width
    settings = RadiogenomicSettings(
        targets=targets, layout=args.layout, seed=args.seed, encoder_steps=args.encoder_steps,
        cross_fit_folds=args.cross_fit_folds, cnn_pretrain_steps=max(1, args.cnn_steps // 2),
        cnn_targets=tuple(args.cnn), cnn_steps=args.cnn_steps, encoder=encoder,
        cnn={**DEFAULT_CNN, "model_name": args.cnn_model or defaults.cnn_model,
             "crop_size": args.cnn_crop_size or defaults.cnn_crop_size or args.crop_size,
             "crop_spacing_mm": float(args.cnn_crop_spacing or defaults.cnn_crop_spacing_mm or args.crop_spacing),
             # the end-to-end CNN sees what the encoder sees: only the tumour's context, when it is limited
             **({"context_mm": args.context_mm} if args.context_mm is not None else {})},
        cnn_weights=args.cnn_weights,
        medicalnet=args.medicalnet, workers=args.workers, cache=args.cache, external=args.external, augment=args.augment,
        segmentation_model=args.segmentation_model or args.settings.models.segmentation.path,
        sequence_rules=args.settings.sequences, version=args.model_version, masks=MaskSource(args.masks),
        compare_masks=args.compare_masks, robust_ccc=args.robust_ccc)
    command = _command_line(args)
    result = train_radiogenomics(args.data, args.out, settings, progress=not args.quiet, command=command)
    for target, res in result["targets"].items():
        if "variants" in res:
            auc = res["variants"][res["default_variant"]]["test"]["auc"]
            print(f"{target}: default {res['default_variant']}, test AUC {auc}")
    if "survival" in result and "test" in result["survival"]:
        print(f"survival: test C-index {result['survival']['test']['c_index']}")
    if "test" in result.get("survival_known", {}):
        known = result["survival_known"]
        print(f"survival with known {'/'.join(m.upper() for m in known['markers'])}: test C-index {known['test']['c_index']}")
    print(f"model written to {args.out}")
    return 0


def _cmd_train_seg(args: argparse.Namespace) -> int:
    from glioma_node.training.seg.train import TrainSettings, train_segmentation

    settings = TrainSettings(iterations=args.iterations, patch=args.patch, seed=args.seed,
                             validate_every=args.validate_every, init=args.init,
                             learning_rate=args.learning_rate, resume=args.resume, threads=args.threads,
                             stop_after=args.stop_after, real_validation=tuple(args.real_val),
                             real_cache=args.real_cache, ema_decay=args.ema_decay, version=args.model_version)
    command = _command_line(args)
    result = train_segmentation(args.data, args.out, settings, progress=not args.quiet, command=command)
    real = result["chosen_real"]
    synthetic = result["best_validation_mean_dice"]
    print(f"kept step {result['chosen_step']} (by {result['selection']})"
          + (f": synthetic mean Dice {synthetic:.3f}" if synthetic is not None else "")
          + (f", real whole tumour median {real['median']:.3f} min {real['min']:.3f}" if real else "")
          + f"; {result['seconds']:.0f} s; model written to {args.out}")
    return 0


def _cmd_train_site_gain(args: argparse.Namespace) -> int:
    from glioma_node.training.seg.site_gain import GainSettings, site_gain

    try:
        sizes = tuple(None if s.strip() == "all" else int(s) for s in args.sizes.split(","))
    except ValueError:
        raise ValueError(f"--sizes {args.sizes!r}: give whole numbers or 'all', comma separated") from None
    settings = GainSettings(folds=args.folds, sizes=sizes, iterations=args.iterations,
                            learning_rate=args.learning_rate, validate_every=args.validate_every,
                            threads=args.threads, seed=args.seed, patient_pattern=args.patient_pattern,
                            cache=args.real_cache)
    command = _command_line(args)
    summary = site_gain(args.data, args.init, args.out, settings, progress=not args.quiet, command=command)
    print((args.out / "gain.md").read_text(), end="")
    print(f"{len(summary['rows'])} sizes measured; figures in {args.out}/gain.json, gain.md, gain.png")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from glioma_node.service.config import with_overrides
    from glioma_node.service.logs import configure
    from glioma_node.service.serve import serve

    configure()
    config = with_overrides(args.settings, data_dir=args.data_dir, port=args.port, ae_title=args.ae_title,
                            allow=args.allow, destinations=args.destination, metrics_port=args.metrics_port)
    serve(config)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from glioma_node.service.celery_worker import worker_main
    from glioma_node.service.config import EngineKind, QueueName

    config = args.settings
    if config.execution.engine is not EngineKind.CELERY:
        print("glioma-node: execution.engine is 'local' in this configuration: the node runs its own worker; "
              "set execution.engine: celery (and execution.broker_url) for `glioma-node worker`", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        config = config.model_copy(update={"data_dir": args.data_dir.resolve()})
    try:
        queues = [QueueName(q.strip()) for q in args.queues.split(",") if q.strip()]
    except ValueError:
        print(f"glioma-node: --queues: expected a comma-separated list of {', '.join(q.value for q in QueueName)}, "
              f"got {args.queues!r}", file=sys.stderr)
        return 2
    worker_main(config, queues or [config.execution.queue], args.concurrency)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from glioma_node.cli.replay import replay

    result = replay(args.path, args.to, calling_ae=args.calling_ae, per_series=not args.one_association,
                    progress=not args.quiet)
    print(f"sent {result.sent} instance(s) in {result.associations} association(s); {len(result.failed)} not stored"
          + (f"; {result.not_dicom} file(s) not DICOM, left alone" if result.not_dicom else ""))
    for path, reason in result.failed[:10]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(result.failed) > 10:
        print(f"  ... and {len(result.failed) - 10} more", file=sys.stderr)
    if not result.sent and not result.failed:
        print(f"glioma-node: no DICOM instance under {args.path}", file=sys.stderr)
    return 0 if result.sent and not result.failed else 1


def _cmd_evaluate_radiogenomics(args: argparse.Namespace) -> int:
    from glioma_node.training.radiogenomics.evaluate import evaluate_radiogenomics

    out = args.out or Path(f"external-{args.data.resolve().name}")
    from glioma_node.training.radiogenomics.features import MaskSource

    result = evaluate_radiogenomics(args.model, args.data, out, args.layout, args.workers, args.cache,
                                    args.segmentation_model or args.settings.models.segmentation.path,
                                    progress=not args.quiet, sequence_rules=args.settings.sequences,
                                    masks=MaskSource(args.masks))
    for target, res in result["targets"].items():
        if "variants" in res:
            print(f"{target}: {res['default_variant']}, external AUC {res['variants'][res['default_variant']]['test']['auc']}")
    for key in ("survival", "survival_known"):
        if "test" in result.get(key, {}):
            print(f"{key}: external C-index {result[key]['test']['c_index']}")
    print(f"figures written to {out}")
    return 0


def _cmd_evaluate_pointing(args: argparse.Namespace) -> int:
    from glioma_node.training.radiogenomics.features import MaskSource
    from glioma_node.training.radiogenomics.pointing import measure_pointing

    out = args.out or Path(f"pointing-{args.data.resolve().name}")
    result = measure_pointing(args.model, args.data, out, MaskSource(args.masks),
                              args.segmentation_model or args.settings.models.segmentation.path, args.split,
                              args.limit, layout=args.layout, progress=not args.quiet, mask_cache=args.cache)
    for target, r in result["targets"].items():
        print(f"{target}: pointing median {r['median']:.2f}, minimum {r['min']:.2f} on {r['cases']} cases "
              f"(chance {r['chance_median']:.2f})")
    print(f"figures written to {out}")
    return 0 if result["targets"] else 1


def _cmd_evaluate_repeatability(args: argparse.Namespace) -> int:
    from glioma_node.service.pipeline import load_models
    from glioma_node.training.longitudinal.repeatability import evaluate_repeatability

    models = load_models(args.settings)  # the node's own models, as configured
    out = args.out or Path(f"repeatability-{args.case.resolve().name}")
    report = evaluate_repeatability(args.case, models, out, args.repeats, args.seed)
    for region, s in report["summary"].items():
        print(f"{region}: mean change {s['mean']}, SD {s['sd']}, max |change| {s['max_abs']} "
              f"(goal {s['goal_abs']:.0%}: {'met' if s['met'] else 'not met'})")
    print(f"stable calls: {report['stable_calls']} of {report['repeats']}; report in {out}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from glioma_node.cli.status import render
    from glioma_node.service.state import NodeState

    data_dir = (args.data_dir or args.settings.data_dir).resolve()
    database = data_dir / "state.db"
    if not database.exists():
        print(f"glioma-node: no node state in {data_dir} (has `glioma-node serve` run with this data dir?)",
              file=sys.stderr)
        return 1
    print(render(NodeState(database)))
    return 0


def _cmd_orthanc_config(args: argparse.Namespace) -> int:
    from glioma_node.cli.orthanc_config import write_orthanc_config

    written = write_orthanc_config(args.out, args.settings, args.http_port, args.dicom_port, args.allow or [],
                                   ae_title=args.ae_title)
    for name, path in written.items():
        print(f"{name:8s} {path}")
    print(f"run: Orthanc {written['orthanc']}")
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    """The ``inspect`` command."""
    p = sub.add_parser("inspect", help="list studies and series under PATH with roles, geometry and refusals")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--headers-only", action="store_true", help="skip decoding pixel data (faster, misses corrupt pixels)")
    p.set_defaults(func=_cmd_inspect)


def _add_process(sub: argparse._SubParsersAction) -> None:
    """The ``process`` command."""
    p = sub.add_parser("process", help="segment every study under PATH; results to OUT/<StudyInstanceUID>/")
    p.add_argument("path", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_process)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    """The ``synth`` command."""
    p = sub.add_parser("synth", help="write a synthetic glioma cohort (DICOM + NIfTI + labels.csv)")
    p.add_argument("--cases", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nifti-only", action="store_true", help="skip the DICOM studies (a training cohort, 3x faster)")
    p.add_argument("--longitudinal", action="store_true",
                   help="write patients followed over four studies (pre-operative, post-operative with a resection "
                        "cavity, two follow-ups) with the true volumes and the expected RANO call; --cases counts patients")
    p.set_defaults(func=_cmd_synth)


def _cohort_options(p: argparse.ArgumentParser) -> None:
    """How a radiogenomic command reads a cohort: layout, feature cache, masks, workers."""
    p.add_argument("--layout", default="auto", help="dataset layout (default: detected from the files)")
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: OUT/cache)")
    p.add_argument("--segmentation-model", type=Path, default=None,
                   help="segmentation model for cases without masks (default: the configured one)")
    p.add_argument("--workers", type=int, default=1, help="cases whose features are extracted in parallel")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` command (external validation of a trained model)."""
    p = sub.add_parser("evaluate", help="apply a trained model, unchanged, to another cohort")
    eval_sub = p.add_subparsers(dest="what", required=True)
    p = eval_sub.add_parser("radiogenomics", help="external validation of a radiogenomic model directory")
    p.add_argument("--model", type=Path, required=True, help="the radiogenomic model directory")
    p.add_argument("--data", type=Path, required=True, help="the external cohort (any layout train reads)")
    p.add_argument("--out", type=Path, default=None, help="figures folder (default: ./external-<data folder name>)")
    p.add_argument("--masks", choices=("segmenter", "true"), default="segmenter",
                   help="inside which masks the features are read: the segmentation model's, as the node runs "
                        "(default), or the cohort's own mask files")
    _cohort_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate_radiogenomics)
    p = eval_sub.add_parser("pointing", help="does a radiogenomic model's Grad-CAM point at the tumour? (cases with "
                                             "true masks)")
    p.add_argument("--model", type=Path, required=True, help="the radiogenomic model directory")
    p.add_argument("--data", type=Path, required=True, help="a cohort with true tumour masks (e.g. glioma-node synth)")
    p.add_argument("--out", type=Path, default=None, help="figures folder (default: ./pointing-<data folder name>)")
    p.add_argument("--split", choices=("test", "validation", "train", "all"), default="test",
                   help="the model's split (its split.json) or every case (default: test)")
    p.add_argument("--masks", choices=("segmenter", "true"), default="segmenter",
                   help="inside which masks the model runs (default: the segmenter's, as the node)")
    p.add_argument("--limit", type=int, default=None, help="at most this many cases")
    p.add_argument("--layout", default="auto", help="dataset layout (default: detected from the files)")
    p.add_argument("--segmentation-model", type=Path, default=None, help="default: the configured one")
    p.add_argument("--cache", type=Path, default=None,
                   help="a training feature cache: the segmenter's masks kept there are read, not drawn again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate_pointing)
    p = eval_sub.add_parser("repeatability", help="one real case sent twice (re-sliced, moved, new noise): the "
                                                  "follow-up comparison must call it stable (docs/rano.md)")
    p.add_argument("--case", type=Path, required=True, help="a case folder with the four sequences as NIfTI")
    p.add_argument("--repeats", type=int, default=3, help="re-acquisitions, each with its own motion and noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="report folder (default: ./repeatability-<case folder name>)")
    p.set_defaults(func=_cmd_evaluate_repeatability)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """The ``train seg`` and ``train radiogenomics`` command."""
    p = sub.add_parser("train", help="train a model (segmentation, radiogenomics)")
    train_sub = p.add_subparsers(dest="model", required=True)
    p = train_sub.add_parser("seg", help="train the tumour segmenter with domain randomisation")
    p.add_argument("--data", type=Path, required=True, help="a synth cohort or a BraTS-layout folder")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--patch", type=int, default=80, help="training crop, voxels of 2 mm per side")
    p.add_argument("--validate-every", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak of the one-cycle schedule")
    p.add_argument("--init", type=Path, default=None, help="model directory to fine-tune instead of starting afresh")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoint.pt is in --out (same --iterations)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    p.add_argument("--stop-after", type=int, default=None,
                   help="steps to run in this sitting; then checkpoint and stop (continue with --resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-val", type=Path, action="append", default=[], metavar="DIR",
                   help="real labelled cases (NIfTI, with or without skull): every checkpoint is scored on them and "
                        "the best median whole-tumour Dice is kept (repeatable)")
    p.add_argument("--real-cache", type=Path, default=None,
                   help="where the prepared real cases are kept (default ~/.cache/glioma-node/real-cases)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="validate and keep a moving average of the weights with this decay (e.g. 0.999; 0: off); "
                        "steadier than the weights of one step at a high learning rate")
    p.add_argument("--model-version", default=None,
                   help="the version the manifest and the card give the model (default: the resumed run's, else 1.0.0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_seg)
    p = train_sub.add_parser("site-gain", help="cross-validated: how much fine-tuning the segmenter on 10, 30 or all "
                                               "of a site's own labelled cases gains on the site's other patients")
    p.add_argument("--data", type=Path, required=True,
                   help="the site's labelled case folders (the layouts train seg reads)")
    p.add_argument("--init", type=Path, required=True, help="the model directory a site would fine-tune")
    p.add_argument("--out", type=Path, required=True,
                   help="working folder (fine-tuned weights of the site's patients: keep it with the site's data); "
                        "rerun the same command to continue where it stopped")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--sizes", default="10,30,all", help="site cases per fine-tuning run, comma separated ('all': "
                                                        "every case outside the held-out fold)")
    p.add_argument("--iterations", type=int, default=600, help="steps of each fine-tuning run")
    p.add_argument("--learning-rate", type=float, default=3e-4, help="peak of each run's one-cycle schedule")
    p.add_argument("--validate-every", type=int, default=200, help="steps between checkpoints of each run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seeds the fold split and the runs")
    p.add_argument("--patient-pattern", default=None, metavar="REGEX",
                   help="when a patient has several case folders: a regular expression whose first group names the "
                        "patient in a folder's name (e.g. '^(.+)-\\d+$'), so a patient's folders are held out together")
    p.add_argument("--real-cache", type=Path, default=None,
                   help="where the prepared site cases are kept (default ~/.cache/glioma-node/real-cases)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_site_gain)
    p = train_sub.add_parser("radiogenomics",
                             help="train MGMT/IDH/chemotherapy-benefit fusion classifiers and the Cox risk model")
    p.add_argument("--data", type=Path, required=True,
                   help="dataset folder: synthetic, brats2021, rsna-miccai, ucsf-pdgm, upenn-gbm or tcga layout")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--target", choices=("mgmt", "idh", "chemo-benefit", "survival", "all"), default="all",
                   help="what to train (survival needs mgmt and idh probabilities, so it trains them too; "
                        "chemo-benefit is overall survival >= 24 months)")
    _cohort_options(p)
    p.add_argument("--encoder-steps", type=int, default=300, help="training steps of the deep-feature encoder")
    p.add_argument("--cross-fit-folds", type=int, default=3,
                   help="encoders trained to give the training cases embeddings they did not see")
    p.add_argument("--encoder-variant", choices=("crop", "patch", "box", "box+patch", "slices"), default="crop",
                   help="encoder input: one tumour-centred crop, patches inside the tumour, the tumour's bounding "
                        "box stretched to the crop size, the box and the patches (half weight each), or axial "
                        "slices through the tumour for the survival study's 2D CNN")
    p.add_argument("--medicalnet", type=Path, default=None, help="MedicalNet resnet_18.pth to start the encoder from")
    p.add_argument("--encoder-backbone", choices=("lightweight", "medicalnet", "combined"), default=None,
                   help="the 3D encoder: the quarter-width ResNet-18, the full-width one from --medicalnet, or both "
                        "with their embeddings combined (default: medicalnet when --medicalnet is given)")
    p.add_argument("--cnn", action="append", choices=("mgmt", "idh", "chemo-benefit"), default=[],
                   help="also train the end-to-end 3D EfficientNet for this target (repeatable)")
    p.add_argument("--cnn-weights", type=Path, default=None,
                   help="pretrained EfficientNetBN-3D state_dict (else pretrained on the data's segmentations)")
    p.add_argument("--cnn-model", choices=tuple(f"efficientnet-b{k}" for k in range(8)), default=None,
                   help="the end-to-end CNN's EfficientNet size (default: training.radiogenomics.cnn_model; "
                        "the IDH study used b7; b0 fits a CPU)")
    p.add_argument("--cnn-steps", type=int, default=300)
    p.add_argument("--cnn-crop-size", type=int, default=None,
                   help="the end-to-end CNN's crop side, voxels (default: training.radiogenomics.cnn_crop_size, "
                        "else the encoder's crop; the IDH study: 128)")
    p.add_argument("--cnn-crop-spacing", type=int, default=None,
                   help="its voxel size, whole mm (default: training.radiogenomics.cnn_crop_spacing_mm, else the "
                        "encoder's; the IDH study: 1)")
    p.add_argument("--masks", choices=("segmenter", "true"), default="segmenter",
                   help="inside which masks the cases' features are extracted: the segmentation model's, as the node "
                        "runs (default), or the cohort's own mask files")
    p.add_argument("--compare-masks", action="store_true",
                   help="extract every case in both masks: test figures on both, and the robustness screen")
    p.add_argument("--robust-ccc", type=float, default=0.75,
                   help="with --compare-masks: radiomic features whose true-mask and segmenter-mask values agree "
                        "less than this (concordance correlation, training cases) are read by no model")
    p.add_argument("--context-mm", type=float, default=None,
                   help="the deep encoder and the end-to-end CNN see only the tumour and this many mm around it "
                        "(the rest of their crops is blanked), so they cannot read the brain's outline or position")
    p.add_argument("--crop-size", type=int, default=64, help="the encoder's crop side, voxels")
    p.add_argument("--crop-spacing", type=float, default=2.0, help="the encoder's crop voxel size, mm (whole numbers)")
    p.add_argument("--augment", type=float, default=0.0,
                   help="also compare a PCA-GMM-augmented fit (this many synthetic rows per real one) with the real-only one")
    p.add_argument("--external", type=Path, default=None,
                   help="after training, validate the model on this cohort (figures into OUT/external/)")
    p.add_argument("--model-version", default="1.0.0", help="the version the manifest and the card give the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_radiogenomics)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` command."""
    p = sub.add_parser("serve", help="run the DICOM node: receive, process, send results back")
    p.add_argument("--data-dir", type=Path, default=None, help="spool, state, results and outbox (default: config)")
    p.add_argument("--port", type=int, default=None, help="DICOM port to listen on")
    p.add_argument("--ae-title", default=None, help="our AE title")
    p.add_argument("--allow", action="append", default=None, metavar="AET@HOST[:PORT]",
                   help="allowed calling peer (repeatable; replaces the configured list)")
    p.add_argument("--destination", action="append", default=None, metavar="AET@HOST:PORT",
                   help="where results go by C-STORE (repeatable; replaces the configured list)")
    p.add_argument("--metrics-port", type=int, default=None, help="HTTP port for /health and /metrics (0: off)")
    p.set_defaults(func=_cmd_serve)


def _add_worker(sub: argparse._SubParsersAction) -> None:
    """The ``worker`` command."""
    p = sub.add_parser("worker", help="run process jobs for a node on Celery (execution.engine: celery)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the node's data folder as mounted here (default: config; it must be shared storage)")
    p.add_argument("--queues", default="",
                   help="queues this worker serves, comma-separated: cpu, gpu (default: execution.queue)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="studies at once, in threads, each with its own copy of the models (about 2 GB); "
                        "radiomics workers are the CPUs divided among them")
    p.set_defaults(func=_cmd_worker)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    """The ``replay`` command."""
    p = sub.add_parser("replay", help="send a DICOM folder to a node the way a scanner does")
    p.add_argument("path", type=Path)
    p.add_argument("--to", required=True, metavar="AET@HOST:PORT")
    p.add_argument("--calling-ae", default="GLIOMA_REPLAY")
    p.add_argument("--one-association", action="store_true", help="everything in one association (default: one per series)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_replay)


def _add_status(sub: argparse._SubParsersAction) -> None:
    """The ``status`` command."""
    p = sub.add_parser("status", help="studies and jobs of a node (its data directory)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_status)


def _add_orthanc_config(sub: argparse._SubParsersAction) -> None:
    """The ``orthanc-config`` command."""
    p = sub.add_parser("orthanc-config", help="write an Orthanc configuration that runs the node as a plugin")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--http-port", type=int, required=True, help="Orthanc's HTTP port (loopback only)")
    p.add_argument("--dicom-port", type=int, required=True, help="Orthanc's DICOM port")
    p.add_argument("--allow", action="append", default=None, metavar="AET@HOST[:PORT]",
                   help="a sender allowed to store into Orthanc (repeatable)")
    p.add_argument("--ae-title", default="GLIOMA_ORTHANC", help="Orthanc's AE title")
    p.set_defaults(func=_cmd_orthanc_config)


def _add_nifti2dicom(sub: argparse._SubParsersAction) -> None:
    """The ``nifti2dicom`` command."""
    p = sub.add_parser("nifti2dicom", help="turn a NIfTI case (flair/t1/t1c/t2, BraTS names) into one DICOM study")
    p.add_argument("case_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patient-id", default=None, help="PatientID to write (default: the folder name)")
    p.set_defaults(func=_cmd_nifti2dicom)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global ``--config`` and one subcommand each."""
    parser = argparse.ArgumentParser(prog="glioma-node", description="DICOM node for brain-tumour MRI. Research use only, "
                                     "not for diagnosis.")
    parser.add_argument("--config", type=Path, default=None,
                        help="configuration YAML (default: the embedded glioma_node/conf/glioma-node.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_inspect, _add_process, _add_synth, _add_train, _add_evaluate, _add_serve, _add_worker, _add_replay,
                _add_status, _add_orthanc_config, _add_nifti2dicom):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``glioma-node`` command; its exit status (2 for a configuration or usage error)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from glioma_node.dicom_io.scan import tolerate_nonconformant_values

    tolerate_nonconformant_values()
    try:
        args.settings = load_config(args.config)  # validated at start, whatever the command
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"glioma-node: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"glioma-node: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
