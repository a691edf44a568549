"""The report of scripts/gpu-check.sh: OUT/report.json (the record) and OUT/report.md (its rendering).

Standard library only. gpu-check.sh calls it once per step and once per finished stage; every call
re-reads report.json, merges what it was told, re-derives the stage's figures from the steps' logs
and rewrites both files (atomically, under a lock: the correctness stage runs test binaries in
parallel), so a run killed at any point leaves every finished step and stage behind.

    gpu_report.py init OUT --mode gpu|rehearse --budgets env=20,correctness=165,...
    gpu_report.py step OUT STAGE NAME --kind KIND --critical 0|1 --rc RC --seconds S --log LOG
                  [--timeout T] [--clipped] [--data PATH] [--expect-psnr DB --tol DB] [--skip WHY]
    gpu_report.py finish OUT STAGE --seconds S [--rc RC] [--budget B] [--status S --why WHY]
    gpu_report.py render OUT

Statuses: a step is pass, fail, timeout or skipped (each with a why). A stage is fail when a
critical step (one that runs tomodiff) failed, timeout when one timed out (or the stage's own
budget ran out), skipped when every step was skipped, else pass; peers and other non-critical
steps never fail a stage, their problems are listed in the stage's notes.
"""
import argparse
import contextlib
import csv
import datetime
import fcntl
import io
import json
import math
import os
import re
import sys
import tarfile

STAGES = ["env", "correctness", "bench", "recon", "train", "ncu"]
NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan|NaN)"


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fnum(s):
    """A finite float, else None (report.json stays strict JSON: no NaN or Infinity)."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# The record: load, save (atomic), lock.


@contextlib.contextmanager
def locked(out):
    with open(os.path.join(out, ".report.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load(out):
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


def save(out, rep):
    rep["updated"] = now()
    summarize_verdict(rep)
    text = json.dumps(rep, indent=1, allow_nan=False) + "\n"
    write_atomic(os.path.join(out, "report.json"), text)
    md = render(rep)
    write_atomic(os.path.join(out, "report.md"), md)
    mirror = os.environ.get("GPU_CHECK_MIRROR")
    if mirror:
        os.makedirs(mirror, exist_ok=True)
        write_atomic(os.path.join(mirror, "report.json"), text)
        write_atomic(os.path.join(mirror, "report.md"), md)


def pack_logs(out):
    """OUT/logs (and the demo's metrics and picture) as one tarball in $GPU_CHECK_MIRROR: the
    device tool brings back only a few files from its output folder."""
    mirror = os.environ.get("GPU_CHECK_MIRROR")
    if not mirror:
        return
    os.makedirs(mirror, exist_ok=True)
    tmp = os.path.join(mirror, "logs.tar.gz.tmp")
    with tarfile.open(tmp, "w:gz") as t:
        logs = os.path.join(out, "logs")
        if os.path.isdir(logs):
            for name in sorted(os.listdir(logs)):
                p = os.path.join(logs, name)
                if os.path.isfile(p) and not name.startswith("."):
                    t.add(p, arcname="logs/" + name)
        for name in ("metrics.json", "side-by-side.png"):
            p = os.path.join(out, "demo", name)
            if os.path.isfile(p):
                t.add(p, arcname="demo/" + name)
    os.replace(tmp, os.path.join(mirror, "logs.tar.gz"))


def stage_of(rep, name):
    for s in rep["stages"]:
        if s["name"] == name:
            return s
    raise SystemExit(f"gpu_report: unknown stage {name!r}")


# ---------------------------------------------------------------------------------------------
# Parsers: one per kind of step, each from the step's log to a dict of figures.

ROW = re.compile(
    r"^(?P<what>.+?)\s+(?P<device>cpu|emu|cuda:\d+)\s+(?P<ms>" + NUM + r") ms\s+(?P<gflops>" + NUM + r") GFLOP/s\s+"
    r"floor\s+(?P<floor>" + NUM + r" ms|unknown)\s+(?P<pct>" + NUM + r"%|-) of peak \((?P<note>.*)\)\s*$"
)
PROJ = re.compile(
    r"^projector\s+(?P<case>\S+)\s+(?P<dir>forward|adjoint)\s+(?P<device>\S+)\s+(?P<s>" + NUM + r") s\s+"
    r"(?P<mrays>" + NUM + r") M rays/s\s+(?P<mint>" + NUM + r") M intersections/s"
)
TORCH_GEMM = re.compile(r"^torch gemm (?P<n>\d+)\^3 bf16 (?P<gpu>.*): (?P<ms>" + NUM + r") ms\s+(?P<tflops>" + NUM + r") TFLOP/s")
TORCH_NET = re.compile(
    r"^torch (?P<what>unet|train) (?P<batch>\d+)x(?P<patch>\([^)]*\)) (?P<device>\S+?)(?: threads=(?P<threads>\d+))?: "
    r"(?P<ms>" + NUM + r") ms, (?P<pps>" + NUM + r") patches/s"
)
TORCH_CONV = re.compile(
    r"^torch conv3d (?P<dtype>\S+) (?P<device>\S+) (?P<shape>.+?) \(x(?P<count>\d+)\): (?P<ms>" + NUM + r") ms, (?P<gflops>" + NUM + r") GFLOP/s"
)
TORCH_CONV_TOTAL = re.compile(
    r"^torch conv3d total (?P<config>\S+) batch (?P<batch>\d+) (?P<dtype>\S+) (?P<device>\S+): (?P<ms>" + NUM + r") ms over "
    r"(?P<convs>\d+) convs \((?P<shapes>\d+) shapes\), (?P<gflops>" + NUM + r") GFLOP/s"
)
ASTRA = re.compile(r"^astra (?P<case>\S+) (?P<dir>forward|adjoint) (?P<device>\S+)\s+(?P<s>" + NUM + r") s\s+(?P<mrays>" + NUM + r") M rays/s(?P<note>.*)$")
RECON = re.compile(
    r"^recon \[(?P<shape>[\d, ]+)\] (?P<views>\d+) views, (?P<steps>\d+) steps x (?P<rounds>\d+) rounds, (?P<cg_iters>\d+) CG, "
    r"batch (?P<batch>\d+) on (?P<device>\S+): (?P<total_s>" + NUM + r") s, (?P<passes_per_s>" + NUM + r") passes/s "
    r"\((?P<patches_per_pass>\d+) patches per pass\); network (?P<network_s>" + NUM + r") s \((?P<network_gflops>" + NUM + r") GFLOP/s, "
    r"floor (?P<floor>unknown|" + NUM + r" s(?: \([^)]*\))?)\), projector (?P<projector_s>" + NUM + r") s, "
    r"CG vectors (?P<cg_vectors_s>" + NUM + r") s, rest (?P<rest_s>" + NUM + r") s; (?P<graph>[^;]*); (?P<memory>.*)$"
)
# Test threads share stdout/stderr: the tests write each line in one piece on a line of its own
# (tests/common report_line). Binaries built before that could put libtest's "test x ... " in
# front of the line (the optional prefix) or run it on into "ok" (not anchored at the end).
DIFF = re.compile(r"^(?:test \S+ \.\.\. )?(?P<what>[^\n]*?): max \|diff\| (?P<diff>" + NUM + r") at (?P<at>\d+)(?!\d)")
DEVICE_TOKEN = re.compile(r"^(cuda:\d+|emu|cpu)$")


def log_lines(path):
    try:
        with open(path, errors="replace") as f:
            return [l.rstrip("\n") for l in f if not l.startswith(("$ ", "# "))]
    except OSError:
        return []


def first_error(lines):
    """The line that best says why a command failed."""
    for pat in ("panicked at", "Error:", "error:", "==ERROR==", "Traceback", "No such file", "not found"):
        for i, l in enumerate(lines):
            if pat in l:
                # A panic's message is on the next line.
                if pat == "panicked at" and i + 1 < len(lines):
                    return (l.strip() + " " + lines[i + 1].strip())[:300]
                if pat == "Traceback":
                    return (lines[-1].strip() if lines else l)[:300]
                return l.strip()[:300]
    return lines[-1].strip()[:300] if lines else ""


def row_figures(m):
    d = m.groupdict()
    fig = {
        "what": d["what"].strip(),
        "device": d["device"],
        "ms": fnum(d["ms"]),
        "gflops": fnum(d["gflops"]),
        "floor_ms": fnum(d["floor"].split()[0]) if d["floor"] != "unknown" else None,
        "pct_of_peak": fnum(d["pct"].rstrip("%")) if d["pct"] != "-" else None,
        "peak_note": d["note"],
    }
    pp = re.search(r"\((" + NUM + r") patches/s\)", d["what"])
    if pp:
        fig["patches_per_s"] = fnum(pp.group(1))
    return fig


def parse_row(lines, _a):
    rows = [row_figures(m) for m in (ROW.match(l) for l in lines) if m]
    return (rows[0] if len(rows) == 1 else {"rows": rows, **(rows[0] if rows else {})}) if rows else {}


def parse_projector(lines, _a):
    fig = {}
    for m in (PROJ.match(l) for l in lines):
        if m:
            fig[m["dir"]] = {"case": m["case"], "device": m["device"], "s": fnum(m["s"]), "m_rays_per_s": fnum(m["mrays"]), "m_intersections_per_s": fnum(m["mint"])}
    return fig


def parse_torch_gemm(lines, _a):
    for m in (TORCH_GEMM.match(l) for l in lines):
        if m:
            return {"n": int(m["n"]), "gpu": m["gpu"], "ms": fnum(m["ms"]), "tflops": fnum(m["tflops"])}
    return {}


def parse_torch_net(lines, _a):
    for m in (TORCH_NET.match(l) for l in lines):
        if m:
            return {"what": m["what"], "batch": int(m["batch"]), "patch": m["patch"], "device": m["device"], "ms": fnum(m["ms"]), "patches_per_s": fnum(m["pps"])}
    return {}


def parse_torch_conv3d(lines, _a):
    fig = {"shapes": []}
    for l in lines:
        m = TORCH_CONV_TOTAL.match(l)
        if m:
            fig.update({"config": m["config"], "batch": int(m["batch"]), "dtype": m["dtype"], "device": m["device"], "ms": fnum(m["ms"]),
                        "convs": int(m["convs"]), "unique_shapes": int(m["shapes"]), "gflops": fnum(m["gflops"])})
            continue
        m = TORCH_CONV.match(l)
        if m:
            fig["shapes"].append({"shape": m["shape"], "count": int(m["count"]), "ms": fnum(m["ms"]), "gflops": fnum(m["gflops"])})
    return fig if "ms" in fig else {}


def parse_astra(lines, _a):
    fig = {}
    for m in (ASTRA.match(l) for l in lines):
        if m:
            fig[m["dir"]] = {"case": m["case"], "device": m["device"], "s": fnum(m["s"]), "m_rays_per_s": fnum(m["mrays"]), "note": m["note"].strip()}
    return fig


def parse_recon(lines, a):
    fig = {}
    for m in (RECON.match(l) for l in lines):
        if m:
            d = m.groupdict()
            for k, v in d.items():
                fig[k] = v if k in ("shape", "device", "floor", "graph", "memory") else fnum(v)
            mem = d["memory"]
            mm = re.search(r"memory (" + NUM + r") GiB taken \(peak (" + NUM + r") GiB in use\), estimate (" + NUM + r") GiB", mem)
            if mm:
                fig["memory_taken_gib"], fig["memory_peak_gib"], fig["memory_estimate_gib"] = (fnum(x) for x in mm.groups())
            else:
                mm = re.search(r"estimate (" + NUM + r") GiB", mem)
                if mm:
                    fig["memory_estimate_gib"] = fnum(mm.group(1))
            rp = re.match(r"(\d+) of (\d+) network passes replayed", d["graph"])
            fig["replayed_passes"] = int(rp.group(1)) if rp else 0
            break
    samples = []
    if a.data and os.path.isfile(a.data):
        for l in log_lines(a.data):
            v = fnum(l.strip().split(",")[0].split()[0]) if l.strip() else None
            if v is not None:
                samples.append(v)
    if samples:
        fig["nvidia_smi_memory_used_mib"] = {"samples": len(samples), "first": samples[0], "max": max(samples)}
    return fig


def parse_demo(lines, a):
    fig = {}
    if a.data and os.path.isfile(a.data):
        try:
            with open(a.data) as f:
                m = json.load(f)
            for k in ("fdk", "cgls", "diffusion"):
                if k in m:
                    fig[k] = {"psnr": m[k].get("psnr"), "ssim_axial": m[k].get("ssim_axial"), "seconds": m[k].get("seconds")}
            fig["device"] = m.get("device")
        except (OSError, ValueError) as e:
            fig["metrics_error"] = str(e)
    if "diffusion" not in fig:  # the printed table
        for l in lines:
            mm = re.match(r"^diffusion prior\s+(" + NUM + r")", l)
            if mm:
                fig["diffusion"] = {"psnr": fnum(mm.group(1))}
    for l in lines:
        if "network passes in" in l or l.startswith("memory:"):
            fig.setdefault("notes", []).append(l.strip())
    return fig


def parse_nvidia_smi(lines, _a):
    for l in lines:
        parts = [p.strip() for p in l.split(",")]
        if len(parts) >= 3 and re.match(r"^\d+\.\d+", parts[1]):
            fig = {"gpu": parts[0], "driver": parts[1], "memory_total": parts[2]}
            if len(parts) > 3:
                fig["compute_cap"] = parts[3]
            return fig
    return {}


def parse_info(lines, _a):
    fig = {}
    in_devices = False
    for l in lines:
        if l.startswith("tomodiff ") and "version" not in fig:
            fig["version"] = l.strip()
        elif l.startswith("build:"):
            fig["build"] = l[len("build:"):].strip()
        elif l.startswith("devices:"):
            in_devices = True
        elif l.startswith("kernels ("):
            in_devices = False
            fig["kernels"] = l.strip().rstrip(":")
        elif in_devices and l.strip().startswith("CUDA driver"):
            fig["cuda_driver"] = l.strip()
        elif in_devices and l.strip().startswith("NVRTC"):
            fig["nvrtc"] = l.strip()
        elif in_devices and l.startswith("  ") and l.strip().startswith("cuda"):
            fig["devices_cuda"] = (fig.get("devices_cuda", "") + "; " if "devices_cuda" in fig else "") + l.strip()
    return fig


def parse_versions(lines, _a):
    fig = {}
    for l in lines:
        if "=" in l and re.match(r"^[a-z_]+=", l):
            k, v = l.split("=", 1)
            fig[k] = v.strip()
    return fig


def classify(what):
    """(kernel, device, detail) of an assert_close label: the device is the first token that is a
    device name (cuda:N, emu; cpu unless it follows 'vs')."""
    toks = what.split()
    for i, t in enumerate(toks):
        if DEVICE_TOKEN.match(t) and not (t == "cpu" and i > 0 and toks[i - 1] == "vs"):
            return " ".join(toks[:i]) or what, t, " ".join(toks[i + 1:])
    return what, "unknown", ""


def parse_test(lines, _a):
    fig = {"passed": 0, "failed": 0, "ignored": 0, "diffs": [], "failed_tests": [], "cuda_notes": [], "cuda_skipped": 0}
    for l in lines:
        m = re.match(r"^test result: \S+\. (\d+) passed; (\d+) failed; (\d+) ignored", l)
        if m:
            fig["passed"] += int(m.group(1))
            fig["failed"] += int(m.group(2))
            fig["ignored"] += int(m.group(3))
            continue
        m = re.match(r"^test (\S+) \.\.\. FAILED", l)
        if m:
            fig["failed_tests"].append(m.group(1))
            continue
        m = DIFF.search(l)
        if m:
            kernel, dev, detail = classify(m["what"].strip())
            fig["diffs"].append({"what": m["what"].strip(), "kernel": kernel, "device": dev, "detail": detail, "max_diff": fnum(m["diff"]), "max_diff_text": m["diff"], "at": int(m["at"])})
            continue
        if "cuda skipped" in l:
            fig["cuda_skipped"] += 1
        elif re.search(r"\bcuda:\d+\b", l) and len(fig["cuda_notes"]) < 100:
            fig["cuda_notes"].append(l.strip()[:300])
    panics = [i for i, l in enumerate(lines) if "panicked at" in l]
    fig["panics"] = [(lines[i].strip() + " " + (lines[i + 1].strip() if i + 1 < len(lines) else ""))[:400] for i in panics[:10]]
    return fig


def parse_ncu(lines, _a):
    """ncu --csv (--page details): one row per metric. Falls back to the plain table."""
    fig = {"metrics": {}}
    text = "\n".join(l for l in lines if l.startswith('"'))
    if text:
        for r in csv.DictReader(io.StringIO(text)):
            name, value = r.get("Metric Name"), r.get("Metric Value")
            if name and value is not None:
                fig["metrics"][name] = {"value": fnum(value.replace(",", "")) if fnum(value.replace(",", "")) is not None else value, "unit": r.get("Metric Unit", "")}
                fig.setdefault("kernel", r.get("Kernel Name"))
                fig.setdefault("grid", r.get("Grid Size"))
                fig.setdefault("block", r.get("Block Size"))
    if not fig["metrics"]:
        for l in lines:
            m = re.match(r"^\s+([a-z_]+__\S+)\s+(\S+)?\s+(" + NUM + r")\s*$", l)
            if m:
                fig["metrics"][m.group(1)] = {"value": fnum(m.group(3)), "unit": m.group(2) or ""}
            m = re.match(r"^\s+(conv3d\S*)\(", l)
            if m:
                fig.setdefault("kernel", m.group(1))
    errs = [l.strip() for l in lines if "==ERROR==" in l or "==WARNING==" in l]
    if errs:
        fig["ncu_messages"] = errs[:10]
    return fig if fig["metrics"] or errs else {}


PARSERS = {
    "row": parse_row, "projector": parse_projector, "torch_gemm": parse_torch_gemm, "torch_net": parse_torch_net,
    "torch_conv3d": parse_torch_conv3d, "astra": parse_astra, "recon": parse_recon, "demo": parse_demo,
    "nvidia_smi": parse_nvidia_smi, "info": parse_info, "versions": parse_versions, "test": parse_test, "ncu": parse_ncu,
    "plain": lambda lines, a: {},
}


# ---------------------------------------------------------------------------------------------
# Steps and stages.


def step_status(a, fig, lines):
    """(status, why) of a step that ran, from its exit code and what it printed."""
    if a.not_started:
        return "timeout", "not started: the stage's budget was spent"
    if a.rc in (124, 137):
        why = f"killed after {a.timeout} s" + (" (the stage's budget ran out)" if a.clipped else " (its own timeout)")
        return "timeout", why
    if a.rc != 0:
        why = "command not found (exit 127)" if a.rc == 127 else f"exit {a.rc}"
        if a.kind == "test" and fig.get("failed_tests"):
            why += ": failed " + ", ".join(fig["failed_tests"][:8])
        err = first_error(lines)
        return "fail", why + (f": {err}" if err else "")
    if a.kind in ("row", "projector", "recon", "torch_gemm", "torch_net", "torch_conv3d", "astra") and not fig:
        return "fail", "exit 0 but no result line understood (see the log)"
    if a.kind == "test" and fig.get("failed", 0):
        return "fail", f"{fig['failed']} tests failed"
    if a.kind == "ncu" and not fig.get("metrics"):
        msg = "; ".join(fig.get("ncu_messages", [])[:2]) or "no metrics in the output"
        return "skipped", f"ncu gave no metrics: {msg}"
    if a.kind == "demo" and a.expect_psnr is not None:
        got = (fig.get("diffusion") or {}).get("psnr")
        if got is None:
            return "fail", "no PSNR of the prior in the output"
        d = got - a.expect_psnr
        fig["psnr_expected"], fig["psnr_tolerance"], fig["psnr_delta"] = a.expect_psnr, a.tol, d
        if abs(d) > a.tol:
            return "fail", f"prior PSNR {got:.2f} dB, expected {a.expect_psnr:.2f} +- {a.tol} dB (CPU figure)"
        return "pass", f"prior PSNR {got:.2f} dB, within {a.tol} dB of the CPU's {a.expect_psnr:.2f}"
    return "pass", ""


def ratio(peer_ms, td_ms):
    if peer_ms and td_ms:
        return peer_ms / td_ms
    return None


def derive_stage(st, mode):
    """The stage's figures from its steps."""
    steps = {s["name"]: s for s in st["steps"]}
    fig = lambda n: steps.get(n, {}).get("figures") or {}  # noqa: E731
    out = {}
    name = st["name"]
    if name == "env":
        for n in ("nvidia-smi", "info", "versions"):
            out.update(fig(n))
    elif name == "correctness":
        bins, diffs, notes = [], [], []
        for s in st["steps"]:
            f = s.get("figures") or {}
            bins.append({"name": s["name"], "status": s["status"], "why": s.get("why", ""), "seconds": s.get("seconds"),
                         "passed": f.get("passed"), "failed": f.get("failed"), "failed_tests": f.get("failed_tests", []),
                         "cuda_skipped": f.get("cuda_skipped", 0), "panics": f.get("panics", [])[:3]})
            diffs += [dict(d, binary=s["name"]) for d in f.get("diffs", [])]
            notes += [f"{s['name']}: {n}" for n in f.get("cuda_notes", [])]
        out["binaries"] = bins
        out["binaries_passed"] = sum(b["status"] == "pass" for b in bins)
        out["binaries_failed"] = [b["name"] for b in bins if b["status"] != "pass"]
        out["diffs"] = diffs
        for dev in ("cuda", "emu"):
            by = {}
            for d in diffs:
                if d["device"].split(":")[0] != dev:
                    continue
                k = by.setdefault(d["kernel"], {"kernel": d["kernel"], "lines": 0, "worst_max_diff": -1.0, "worst": ""})
                k["lines"] += 1
                if d["max_diff"] is not None and d["max_diff"] > k["worst_max_diff"]:
                    k["worst_max_diff"], k["worst"] = d["max_diff"], f"{d['binary']}: {d['what']}"
            out[f"{dev}_by_kernel"] = sorted(by.values(), key=lambda k: k["kernel"])
        out["cuda_lines"] = sum(d["device"].startswith("cuda") for d in diffs)
        out["emu_lines"] = sum(d["device"] == "emu" for d in diffs)
        out["cuda_notes"] = notes[:200]
    elif name in ("bench", "train"):
        pairs = [("gemm", "gemm", "gemm-peer"), ("unet", "unet", "unet-peer"), ("conv3d", "conv3d", "conv3d-peer"), ("train", "train", "train-peer")]
        for key, td, peer in pairs:
            if td not in steps and peer not in steps:
                continue
            t, p = fig(td), fig(peer)
            e = {"tomodiff": t or None, "tomodiff_status": status_line(steps.get(td)), "peer": p or None, "peer_status": status_line(steps.get(peer))}
            e["ratio_peer_over_tomodiff"] = ratio(p.get("ms"), t.get("ms"))
            out[key] = e
        if "projector" in steps or "astra-peer" in steps:
            t, p = fig("projector"), fig("astra-peer")
            e = {"tomodiff": t or None, "tomodiff_status": status_line(steps.get("projector")), "peer": p or None, "peer_status": status_line(steps.get("astra-peer"))}
            for d in ("forward", "adjoint"):
                e[f"ratio_{d}_peer_over_tomodiff"] = ratio((p.get(d) or {}).get("s"), (t.get(d) or {}).get("s"))
            out["projector"] = e
    elif name == "recon":
        out["demo"] = fig("demo") or None
        out["demo_status"] = status_line(steps.get("demo"))
        out["graph"] = fig("bench-recon") or None
        out["no_graph"] = fig("bench-recon-no-graph") or None
        g, n = out["graph"] or {}, out["no_graph"] or {}
        if g.get("total_s") and n.get("total_s"):
            out["graph_speedup"] = n["total_s"] / g["total_s"]
    elif name == "ncu":
        out.update(fig("ncu-profile"))
    return out


def status_line(step):
    if not step:
        return "not run"
    return step["status"] + (f": {step['why']}" if step.get("why") else "")


def stage_status(st, killed, budget):
    steps = st["steps"]
    crit = [s for s in steps if s.get("critical")]
    notes = [f"{s['name']} {s['status']}: {s.get('why', '')}" for s in steps if not s.get("critical") and s["status"] in ("fail", "timeout")]
    failed = [s for s in crit if s["status"] == "fail"]
    timed = [s for s in crit if s["status"] == "timeout"]
    if failed:
        status, why = "fail", "; ".join(f"{s['name']}: {s.get('why', '')}" for s in failed)
    elif timed or killed:
        status = "timeout"
        why = "; ".join(f"{s['name']}: {s.get('why', '')}" for s in timed)
        if killed:
            why = (why + "; " if why else "") + f"the stage was killed at its budget of {budget} s"
    elif steps and all(s["status"] == "skipped" for s in steps):
        status, why = "skipped", "; ".join(f"{s.get('why', '')}" for s in steps if s.get("why"))
    elif not steps:
        status, why = "skipped", "nothing to run"
    else:
        status, why = "pass", ""
    return status, why, notes


def cmd_init(a):
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    budgets = {}
    for kv in (a.budgets or "").split(","):
        if "=" in kv:
            k, v = kv.split("=", 1)
            budgets[k] = fnum(v)
    rep = {
        "schema": 1,
        "tool": "scripts/gpu-check.sh",
        "mode": a.mode,
        "started": now(),
        "updated": now(),
        "out": os.path.abspath(a.out),
        "stages": [{"name": n, "status": "pending", "why": "not started", "seconds": None, "budget_s": budgets.get(n), "figures": {}, "notes": [], "steps": []} for n in STAGES],
    }
    with locked(a.out):
        save(a.out, rep)


def cmd_step(a):
    with locked(a.out):
        rep = load(a.out)
        st = stage_of(rep, a.stage)
        if st["status"] == "pending":
            st["status"], st["why"] = "running", "running (or killed mid-stage)"
        rec = {"name": a.name, "kind": a.kind, "critical": bool(a.critical), "rc": a.rc, "seconds": a.seconds, "timeout_s": a.timeout, "log": os.path.relpath(a.log, a.out) if a.log else None}
        if a.skip is not None:
            rec.update(status="skipped", why=a.skip, figures={})
        else:
            lines = log_lines(a.log)
            fig = PARSERS[a.kind](lines, a)
            rec["status"], rec["why"] = step_status(a, fig, lines)
            rec["figures"] = fig
        st["steps"] = [s for s in st["steps"] if s["name"] != a.name] + [rec]
        st["figures"] = derive_stage(st, rep["mode"])
        save(a.out, rep)


def cmd_finish(a):
    with locked(a.out):
        rep = load(a.out)
        st = stage_of(rep, a.stage)
        killed = a.rc in (124, 137)
        st["status"], st["why"], st["notes"] = stage_status(st, killed, a.budget)
        if a.rc not in (0, 124, 137) and st["status"] == "pass":
            st["status"], st["why"] = "fail", f"the stage's script exited {a.rc}"
        if a.status:
            st["status"], st["why"] = a.status, a.why or ""
        elif a.why:
            st["why"] = (st["why"] + "; " if st["why"] else "") + a.why
        st["seconds"] = a.seconds
        st["budget_s"] = a.budget
        st["figures"] = derive_stage(st, rep["mode"])
        save(a.out, rep)
    pack_logs(a.out)


def summarize_verdict(rep):
    sts = rep["stages"]
    rep["verdict"] = {
        "passed": [s["name"] for s in sts if s["status"] == "pass"],
        "failed": [s["name"] for s in sts if s["status"] == "fail"],
        "timed_out": [s["name"] for s in sts if s["status"] == "timeout"],
        "skipped": [s["name"] for s in sts if s["status"] == "skipped"],
        "unfinished": [s["name"] for s in sts if s["status"] in ("pending", "running")],
    }
    rep["verdict"]["ok"] = not (rep["verdict"]["failed"] or rep["verdict"]["timed_out"] or rep["verdict"]["unfinished"])


# ---------------------------------------------------------------------------------------------
# report.md


def g(x, fmt="{:.3f}", none="-"):
    if x is None:
        return none
    try:
        return fmt.format(x)
    except (ValueError, TypeError):
        return str(x)


def esc(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def render(rep):
    st = {s["name"]: s for s in rep["stages"]}
    env = st["env"]["figures"]
    v = rep.get("verdict", {})
    L = []
    L.append(f"# tomodiff GPU check ({rep['mode']})")
    L.append("")
    L.append(f"Started {rep['started']}, updated {rep['updated']}. "
             f"Commit {env.get('commit') or env.get('commit_git') or env.get('commit_bundle') or 'unknown'}; "
             f"GPU {env.get('gpu', 'none seen')}, driver {env.get('driver', '-')}; "
             f"{env.get('version', 'tomodiff ?')}, build: {env.get('build', '?')}.")
    L.append("")
    verdict = "all stages that ran passed" if v.get("ok") else "NOT OK"
    parts = [f"{k}: {', '.join(v[k])}" for k in ("passed", "failed", "timed_out", "skipped", "unfinished") if v.get(k)]
    L.append(f"**Verdict: {verdict}** ({'; '.join(parts)}).")
    L.append("")
    L.append("| stage | status | seconds | budget s | why |")
    L.append("| --- | --- | --- | --- | --- |")
    for s in rep["stages"]:
        why = s.get("why", "")
        why = why if len(why) <= 300 else why[:300] + "... (see its section)"
        L.append(f"| {s['name']} | {s['status']} | {g(s['seconds'], '{:.1f}')} | {g(s.get('budget_s'), '{:.0f}')} | {esc(why)} |")
    L.append("")
    for s in rep["stages"]:
        L.append(f"## {s['name']}")
        L.append("")
        L.append(f"Status **{s['status']}**" + (f": {esc(s['why'])}" if s.get("why") else "") + (f" ({g(s['seconds'], '{:.1f}')} s)" if s.get("seconds") is not None else ""))
        L.append("")
        f = s.get("figures") or {}
        body = RENDER.get(s["name"], lambda f, s: [])(f, s)
        L += body
        if s.get("notes"):
            L.append("Notes (non-critical steps): " + "; ".join(esc(n) for n in s["notes"]))
            L.append("")
        if s["steps"]:
            L.append("| step | status | seconds | log |")
            L.append("| --- | --- | --- | --- |")
            for p in s["steps"]:
                L.append(f"| {p['name']} | {p['status']}{': ' + esc(p['why']) if p.get('why') else ''} | {g(p.get('seconds'), '{:.1f}')} | {p.get('log') or '-'} |")
            L.append("")
    return "\n".join(L) + "\n"


def render_env(f, s):
    keys = ["gpu", "driver", "memory_total", "compute_cap", "version", "build", "cuda_driver", "nvrtc", "devices_cuda", "kernels", "commit", "commit_git", "commit_git_dirty", "commit_bundle",
            "date_utc", "host", "python", "torch", "torch_cuda", "torch_cuda_available", "ncu", "astra"]
    rows = [f"| {k} | {esc(f[k])} |" for k in keys if f.get(k)]
    return (["| what | value |", "| --- | --- |"] + rows + [""]) if rows else []


def render_correctness(f, s):
    L = []
    bins = f.get("binaries") or []
    if bins:
        L.append(f"{f.get('binaries_passed', 0)} of {len(bins)} test binaries passed"
                 + (f"; not passed: {', '.join(f['binaries_failed'])}" if f.get("binaries_failed") else "") + ".")
        L.append("")
        L.append("| binary | status | passed | failed | seconds | first panic |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for b in bins:
            L.append(f"| {b['name']} | {b['status']} | {g(b.get('passed'), '{}')} | {g(b.get('failed'), '{}')} | {g(b.get('seconds'), '{:.1f}')} | {esc((b.get('panics') or [''])[0])[:200]} |")
        L.append("")
    L.append(f"CUDA against the CPU reference ({f.get('cuda_lines', 0)} max-|diff| lines; the verdict's figures):")
    L.append("")
    if f.get("cuda_by_kernel"):
        L.append("| kernel | lines | worst max abs diff | worst case |")
        L.append("| --- | --- | --- | --- |")
        for k in f["cuda_by_kernel"]:
            L.append(f"| {esc(k['kernel'])} | {k['lines']} | {g(k['worst_max_diff'], '{:.3e}')} | {esc(k['worst'])} |")
    else:
        L.append("(no cuda lines)")
    L.append("")
    if f.get("emu_by_kernel"):
        L.append(f"Emulated (emu) lines, kept apart ({f.get('emu_lines', 0)} lines):")
        L.append("")
        L.append("| kernel | lines | worst max abs diff |")
        L.append("| --- | --- | --- |")
        for k in f["emu_by_kernel"]:
            L.append(f"| {esc(k['kernel'])} | {k['lines']} | {g(k['worst_max_diff'], '{:.3e}')} |")
        L.append("")
    other = [d for d in f.get("diffs", []) if d["device"] not in ("emu",) and not d["device"].startswith("cuda")]
    if other:
        L.append(f"Lines without a device in their label ({len(other)}): " + "; ".join(esc(f"{d['binary']}: {d['what']} {d['max_diff_text']}") for d in other[:10]))
        L.append("")
    if f.get("cuda_notes"):
        L.append("Other lines naming a CUDA device:")
        L.append("")
        L += [f"- {esc(n)}" for n in f["cuda_notes"][:40]]
        L.append("")
    return L


def render_bench(f, s):
    L = ["| benchmark | tomodiff | peer | peer time / tomodiff time |", "| --- | --- | --- | --- |"]
    any_row = False
    for key in ("gemm", "unet", "conv3d", "train"):
        e = f.get(key)
        if not e:
            continue
        any_row = True
        t, p = e.get("tomodiff") or {}, e.get("peer") or {}
        ts = (f"{g(t.get('ms'))} ms, {g(t.get('gflops'), '{:.1f}')} GFLOP/s, floor {g(t.get('floor_ms'))} ms, {g(t.get('pct_of_peak'), '{:.1f}')}% of peak"
              + (f", {g(t.get('patches_per_s'), '{:.2f}')} patches/s" if t.get("patches_per_s") is not None else "") + f" ({t.get('what', '')}, {t.get('device', '')})") if t else esc(e["tomodiff_status"])
        if p:
            extra = f", {g(p.get('tflops'), '{:.1f}')} TFLOP/s" if p.get("tflops") is not None else (f", {g(p.get('patches_per_s'), '{:.2f}')} patches/s" if p.get("patches_per_s") is not None else "")
            if p.get("gflops") is not None:
                extra = f", {g(p.get('gflops'), '{:.1f}')} GFLOP/s over {p.get('convs')} convs ({p.get('unique_shapes')} shapes)"
            ps = f"{g(p.get('ms'))} ms{extra}"
        else:
            ps = esc(e["peer_status"])
        L.append(f"| {key} | {esc(ts)} | {esc(ps)} | {g(e.get('ratio_peer_over_tomodiff'), '{:.2f}x')} |")
    e = f.get("projector")
    if e:
        any_row = True
        t, p = e.get("tomodiff") or {}, e.get("peer") or {}
        for d in ("forward", "adjoint"):
            td, pd = t.get(d) or {}, p.get(d) or {}
            ts = f"{g(td.get('s'))} s, {g(td.get('m_rays_per_s'), '{:.2f}')} M rays/s ({td.get('case')}, {td.get('device')})" if td else esc(e["tomodiff_status"])
            ps = f"{g(pd.get('s'))} s, {g(pd.get('m_rays_per_s'), '{:.2f}')} M rays/s {pd.get('note', '')}" if pd else esc(e["peer_status"])
            L.append(f"| projector {d} | {esc(ts)} | {esc(ps)} | {g(e.get(f'ratio_{d}_peer_over_tomodiff'), '{:.2f}x')} |")
    L.append("")
    return L if any_row else []


def render_recon(f, s):
    L = []
    d = f.get("demo")
    if d and d.get("diffusion"):
        diff = d.get("diffusion") or {}
        L.append(f"Demo{' (' + str(d['device']) + ')' if d.get('device') else ''}: prior PSNR {g(diff.get('psnr'), '{:.2f}')} dB"
                 + (f" (CPU figure {d['psnr_expected']:.2f} dB, delta {d['psnr_delta']:+.2f} dB, tolerance {d['psnr_tolerance']})" if d.get("psnr_expected") is not None else "")
                 + f", FDK {g((d.get('fdk') or {}).get('psnr'), '{:.2f}')} dB, CGLS {g((d.get('cgls') or {}).get('psnr'), '{:.2f}')} dB; prior {g(diff.get('seconds'), '{:.1f}')} s. "
                 + " ".join(esc(n) for n in d.get("notes", [])))
    else:
        L.append(f"Demo: {esc(f.get('demo_status', 'not run'))}")
    L.append("")
    rows = [(k, f.get(k)) for k in ("graph", "no_graph") if f.get(k)]
    if rows:
        L.append("| run | total s | passes/s | network s | network GFLOP/s | floor | projector s | CG vectors s | rest s | graph | memory | nvidia-smi max MiB |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, r in rows:
            smi = (r.get("nvidia_smi_memory_used_mib") or {}).get("max")
            L.append(f"| {k} {esc(r.get('shape', ''))} b{g(r.get('batch'), '{:.0f}')} | {g(r.get('total_s'), '{:.2f}')} | {g(r.get('passes_per_s'))} | {g(r.get('network_s'), '{:.2f}')} | "
                     f"{g(r.get('network_gflops'), '{:.1f}')} | {esc(r.get('floor', ''))} | {g(r.get('projector_s'), '{:.2f}')} | {g(r.get('cg_vectors_s'), '{:.2f}')} | "
                     f"{g(r.get('rest_s'), '{:.2f}')} | {esc(r.get('graph', ''))} | {esc(r.get('memory', ''))} | {g(smi, '{:.0f}')} |")
        if f.get("graph_speedup"):
            L.append("")
            L.append(f"Graph replay: no-graph time / graph time = {f['graph_speedup']:.2f}x.")
        L.append("")
    return L


def render_ncu(f, s):
    if not f.get("metrics"):
        return [f"ncu: {esc(m)}" for m in f.get("ncu_messages", [])] + ([""] if f.get("ncu_messages") else [])
    L = [f"Kernel {esc(f.get('kernel', '?'))}, grid {esc(f.get('grid', '?'))}, block {esc(f.get('block', '?'))}:", "", "| metric | value | unit |", "| --- | --- | --- |"]
    for k, m in f["metrics"].items():
        L.append(f"| {k} | {g(m['value'], '{:.2f}') if isinstance(m['value'], float) else esc(m['value'])} | {esc(m.get('unit', ''))} |")
    L.append("")
    return L


RENDER = {"env": render_env, "correctness": render_correctness, "bench": render_bench, "train": render_bench, "recon": render_recon, "ncu": render_ncu}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("out")
    i.add_argument("--mode", required=True)
    i.add_argument("--budgets", default="")
    s = sub.add_parser("step")
    s.add_argument("out")
    s.add_argument("stage", choices=STAGES)
    s.add_argument("name")
    s.add_argument("--kind", default="plain", choices=sorted(PARSERS))
    s.add_argument("--critical", type=int, default=0)
    s.add_argument("--rc", type=int, default=0)
    s.add_argument("--seconds", type=float, default=None)
    s.add_argument("--timeout", type=float, default=None)
    s.add_argument("--clipped", action="store_true")
    s.add_argument("--not-started", action="store_true")
    s.add_argument("--log", default=None)
    s.add_argument("--data", default=None)
    s.add_argument("--expect-psnr", type=float, default=None)
    s.add_argument("--tol", type=float, default=0.3)
    s.add_argument("--skip", default=None)
    f = sub.add_parser("finish")
    f.add_argument("out")
    f.add_argument("stage", choices=STAGES)
    f.add_argument("--seconds", type=float, default=None)
    f.add_argument("--rc", type=int, default=0)
    f.add_argument("--budget", type=float, default=None)
    f.add_argument("--status", default=None, choices=["pass", "fail", "timeout", "skipped"])
    f.add_argument("--why", default=None)
    r = sub.add_parser("render")
    r.add_argument("out")
    a = p.parse_args()
    if a.cmd == "init":
        cmd_init(a)
    elif a.cmd == "step":
        cmd_step(a)
    elif a.cmd == "finish":
        cmd_finish(a)
    elif a.cmd == "render":
        with locked(a.out):
            save(a.out, load(a.out))


if __name__ == "__main__":
    sys.exit(main())
