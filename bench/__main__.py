"""`make bench`: throughput of reading, recognising and synthesising (figures, not assertions).

Prints a table and writes bench-results/bench.json. Run on the target machine; the
figures depend on its CPU and disk.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import faults
from glioma_node.dicom_io.nifti import nifti_case_to_dicom
from glioma_node.dicom_io.scan import scan, tolerate_nonconformant_values
from glioma_node.dicom_io.study import survey
from glioma_node.service.config import load_config
from glioma_node.training.synth.cohort import synthesise_case
from tests.helpers import REPO, SHARED


def _timed(label: str, fn, results: list, **extra) -> None:
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    results.append({"benchmark": label, "seconds": round(seconds, 3), **extra, **(value or {})})


def _segmentation(results: list) -> int:
    """The segmentation benchmark of each segmenter in its own child process (each reports
    its own peak RSS); returns the default segmenter's peak RSS in MB."""
    for name in ("default", "captk-deepmedic", "ensemble"):
        child = subprocess.run([sys.executable, "-m", "bench.segmentation", name], capture_output=True,
                               text=True, cwd=REPO, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    return results[-3]["peak_rss_mb"]


def _radiogenomics(results: list) -> None:
    """The radiogenomic-stage benchmark in a child process (it reports its own peak RSS)."""
    child = subprocess.run([sys.executable, "-m", "bench.radiogenomics"], capture_output=True, text=True,
                           cwd=REPO, check=True)
    results.append(json.loads(child.stdout.strip().splitlines()[-1]))


def _write_results(cohort: Path, out: Path, config, results: list) -> None:
    """Writing one study's DICOM results (2 SEG, 3 Parametric Maps, SR, summary image and
    PNG) from findings on a synthetic study's real series; median of three writes."""
    from glioma_node.dicom_io.results.writer import write_results
    from tests.result_fixtures import fabricated_findings

    study = survey(scan(cohort), config.sequences, decode=False)[0]
    findings, sources, reference = fabricated_findings(study)
    times = []
    for n in range(3):
        start = time.perf_counter()
        written = write_results(findings, sources, reference, out / str(n))
        times.append(time.perf_counter() - start)
    size = sum(w.path.stat().st_size for w in written) / 1e6
    shape = "x".join(str(d) for d in findings.masks["T1c"].labels.shape)
    results.append({"benchmark": f"write DICOM results ({len(written)} objects, T1c {shape})",
                    "seconds": round(sorted(times)[1], 3), "megabytes": round(size, 1)})


def _node(results: list) -> None:
    """The node benchmarks (receive vs storescp and Orthanc, turnaround, load, Celery workers) in a child process."""
    child = subprocess.run([sys.executable, "-m", "bench.node"], capture_output=True, text=True, cwd=REPO,
                           check=True)
    results += [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]


def _faults(results: list) -> None:
    """Issue 25's faults against the running node (bench/faults.py) in a child process: bombs,
    idle HTTP connections, a full data folder while processing, a killed receiver."""
    child = subprocess.run([sys.executable, "-m", "bench.faults"], capture_output=True, text=True, cwd=REPO,
                           check=True)
    results += [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]


def _suite(path: str, artifacts: Path) -> tuple[float, int, int]:
    """(seconds, tests run, tests failed) of one pytest file run as CI runs it."""
    import xml.etree.ElementTree as ElementTree

    if not (REPO / path).is_file():
        raise FileNotFoundError(f"benchmark suite {path} does not exist")
    report = artifacts / f"{Path(path).stem}.xml"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path, f"--junitxml={report}"],
                   cwd=REPO, capture_output=True, text=True, env={**os.environ, "GLIOMA_NODE_ARTIFACTS": str(artifacts)})
    seconds = time.perf_counter() - start
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    return seconds, int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))


def _hostile(results: list) -> None:
    """The hostile-input suite and the SIGKILL fault test, run as tests (their figures, not timings of one call)."""
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        seconds, cases, failed = _suite("tests/service/test_hostile.py", artifacts)
        results.append({"benchmark": f"hostile-input suite ({cases} cases against the running node)",
                        "seconds": round(seconds, 1), "cases": cases, "failed": failed})
        seconds, _, failed = _suite("tests/service/test_faults.py", artifacts)
        figures = json.loads((artifacts / "fault-test.json").read_text()) if not failed else {}
        results.append({"benchmark": "fault test: SIGKILL during receive and processing, 2 interleaved studies",
                        "seconds": round(seconds, 1), "failed": failed, "kills": figures.get("kills"),
                        "instances": figures.get("instances_acknowledged"), "studies": figures.get("studies"),
                        "duplicates": figures.get("duplicates_at_pacs"), "seed": figures.get("seed")})


def main() -> None:
    tolerate_nonconformant_values()
    config = load_config()
    results: list[dict] = []
    segmentation_peak = _segmentation(results)
    _radiogenomics(results)
    _node(results)
    _hostile(results)
    _faults(results)
    for folder in ("dcm_qa_philips_enh/philips_elition_3dt1_mprage_classic", "dcm_qa_xa30/siemens_xa30_enhanced_t1w",
                   "dcm_qa_ge/ge_pioneer_3dt1_mprage_phantom"):
        path = SHARED / folder

        def read(path=path):
            studies = survey(scan(path), config.sequences, decode=True, keep_volumes=True)
            voxels = sum(int(s.volume.voxels.size) for st in studies for s in st.series if s.volume is not None)
            return {"voxels": voxels}

        _timed(f"scan+decode+recognise {folder.split('/')[-1]}", read, results)
        results[-1]["megavoxels_per_s"] = round(results[-1]["voxels"] / 1e6 / results[-1]["seconds"], 1)
    with tempfile.TemporaryDirectory() as tmp:
        def convert() -> None:
            nifti_case_to_dicom(SHARED / "tcga-lgg_fg-6692" / "native", Path(tmp) / "n")

        def synthesise() -> None:
            synthesise_case(0, 1, Path(tmp) / "s")

        _timed("nifti2dicom tcga-lgg native (4 series)", convert, results)
        _timed("synth one case (DICOM + NIfTI)", synthesise, results)
        _write_results(Path(tmp) / "s", Path(tmp) / "results", config, results)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "python": platform.python_version(), "peak_rss_mb": round(peak_mb),
              "segmentation_peak_rss_mb": segmentation_peak, "results": results}
    (out / "bench.json").write_text(json.dumps(record, indent=2))
    width = max(len(r["benchmark"]) for r in results)
    print(f"{'benchmark':{width}s}  seconds  Mvox/s  peak MB")
    for r in results:
        print(f"{r['benchmark']:{width}s}  {r['seconds']:7.2f}  {r.get('megavoxels_per_s') or '':>6}  "
              f"{r.get('peak_rss_mb') or '':>7}")
    seg, rg = results[0], results[3]
    for r in results[:3]:
        print(f"segmentation ({r['segmenter']}) stages (s): {r['stages_s']} on {r['device']}, peak {r['peak_rss_mb']} MB")
    print(f"budget for the default: brain extraction + segmentation <= 25 s and <= 4096 MB on 2 CPU cores "
          f"(measured {seg['seconds']} s, {seg['peak_rss_mb']} MB)")
    print(f"radiogenomic stages (s): {rg['stages_s']}, first study {rg['first_run_s']} s (starts "
          f"{rg['workers']} radiomics workers); budget 20 s on 2 CPU cores")
    for r in results:
        if "storescp_s" in r:
            print(f"{r['benchmark']}: glioma-node {r['seconds']} s, dcmtk storescp {r['storescp_s']} s "
                  f"({r['node_over_storescp']}x; goal <= 2x), Orthanc {r['orthanc_s']} s ({r['orthanc_over_node']}x slower)"
                  + (f"; node with 2 receiver processes {r['node_2_receivers_s']} s "
                     f"({r['node_2_receivers_over_storescp']}x)" if "node_2_receivers_s" in r else ""))
    for r in results:
        if "processed_twice" in r:
            print(f"load: {r['processed']} of {r['studies_sent']} studies processed, {r['instances_stored']} of "
                  f"{r['instances_expected']} instances stored, {r['processed_twice']} processed twice (goal 0); "
                  f"peak {r['peak_rss_mb_node_and_children']} MB for the node and its children")
        if "runs" in r:
            for run in r["runs"]:
                print(f"celery, {run['workers']} worker(s): {run['studies_per_hour']} studies/h, queue latency "
                      f"median {run['queue_latency_median_s']} s, max {run['queue_latency_max_s']} s"
                      + (f", {run['result_objects_per_study']} result objects per study"
                         if "result_objects_per_study" in run else ""))
            print(f"  ({r['note']})")
        if "cases" in r:
            print(f"hostile-input suite: {r['cases']} cases, {r['failed']} failed, {r['seconds']} s")
        if "kills" in r:
            print(f"fault test (seed {r['seed']}): {r['kills']} kills, {r['instances']} instances acknowledged, "
                  f"{r['studies']} studies, duplicates at the PACS: {r['duplicates']}, failed: {r['failed']}")
    for r in results:
        if "fault" in r:
            for line in faults.summary(r):
                print(line)
    print(f"peak RSS of this process {record['peak_rss_mb']} MB; saved {out / 'bench.json'}")


if __name__ == "__main__":
    main()
