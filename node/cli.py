"""The `glioma-node` command line.

Subcommands load and validate the configuration first, so a bad key stops the
command before any work with a message naming it. `synth` and `train` are training
entry points; they are imported only when called (node/ runs no model internals).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node.config import ConfigError, load_config


def _cmd_inspect(args: argparse.Namespace) -> int:
    from node.inspect_report import inspect_path, render_text

    report = inspect_path(args.path, args.settings, decode=not args.headers_only)
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return 0


def _cmd_nifti2dicom(args: argparse.Namespace) -> int:
    from dicom_io.nifti import nifti_case_to_dicom

    written = nifti_case_to_dicom(Path(args.case_dir), Path(args.out), patient_id=args.patient_id)
    for role, folder in written.series_dirs.items():
        print(f"{role:5s} -> {folder}")
    print(f"study {written.study_instance_uid}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from training.synth.cohort import write_cohort

    write_cohort(Path(args.out), cases=args.cases, seed=args.seed, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glioma-node", description="DICOM node for brain-tumour MRI. Research use only, not for diagnosis.")
    parser.add_argument("--config", type=Path, default=None, help="configuration YAML (default: conf/glioma-node.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="list studies and series under PATH with roles, geometry and refusals")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--headers-only", action="store_true", help="skip decoding pixel data (faster, misses corrupt pixels)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("synth", help="write a synthetic glioma cohort (DICOM + NIfTI + labels.csv)")
    p.add_argument("--cases", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("nifti2dicom", help="turn a NIfTI case (flair/t1/t1c/t2, BraTS names) into one DICOM study")
    p.add_argument("case_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patient-id", default=None, help="PatientID to write (default: the folder name)")
    p.set_defaults(func=_cmd_nifti2dicom)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dicom_io.scan import tolerate_nonconformant_values

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
