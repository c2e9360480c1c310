"""The load test of ``make hub-load``: N students press "Run all" at the same moment; what it costs.

For each class size N (1, 4, 8 by default) a hub on 127.0.0.1 gets N simulated students
(:class:`helpers.hub_client.Student`), each a Unix user of its own. At one instant they all log in
through the hub's REST API, start their servers, open the same notebook and run its code cells in
order. A monitor samples, every second, each student's processes (server and kernel: resident memory,
proportional set size, CPU time), the machine's memory in use, and the hub's health (``/hub/health``
answered or not, and how fast). Per class size it records, in ``data/results/hub_load.json`` with the
machine (:func:`helpers.reference.machine`):

* per student: seconds to log in, to a ready server, to a ready kernel, to the first output of "Run all"
  and to its end; peak memory; CPU seconds; the error, if the run failed;
* the hub: probes answered and failed, median and worst latency, its own peak memory.

Every request goes to 127.0.0.1, every wait has a deadline, and at the end every process is stopped by
PID and the students' Unix users are deleted. ``python -m helpers.hub_load --help`` lists the options;
``--report`` prints the capacity table of docs/teaching.md from the recorded figures.
"""
import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request

import psutil

from .hub import ROOT, Hub, course_user, free_port, remove_student
from .hub_client import Student, code_cells

RESULTS_NAME = "hub_load"


class Monitor(threading.Thread):
    """Samples memory, CPU time and the hub's health every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, hub, students, interval=1.0):
        super().__init__(daemon=True)
        self.hub, self.interval = hub, interval
        self.uids = {course_user(s).pw_uid: s for s in students}
        self.peak = {s: {"rss": 0, "pss": 0, "uss": 0} for s in students}
        self.cpu = {s: {} for s in students}   # student -> {pid: CPU seconds last seen}
        self.probes, self.failed_probes = [], 0
        self.baseline = self.machine_used()
        self.machine_peak = self.baseline
        self.hub_peak = 0
        self.load_before = os.getloadavg()[0]  # the machine's load from other work, for the record
        self.load_peak = self.load_before
        self.done = threading.Event()

    def machine_used(self):
        memory = psutil.virtual_memory()
        return memory.total - memory.available

    def probe(self):
        start = time.monotonic()
        try:
            with urllib.request.urlopen(self.hub.url + "/hub/health", timeout=10) as reply:
                ok = reply.status == 200
        except OSError:
            ok = False
        if ok:
            self.probes.append(time.monotonic() - start)
        else:
            self.failed_probes += 1

    def sample(self):
        now = {s: {"rss": 0, "pss": 0, "uss": 0} for s in self.peak}
        for process in psutil.process_iter(["uids"]):
            student = self.uids.get(process.info["uids"].real if process.info["uids"] else None)
            if student is None:
                continue
            with contextlib.suppress(psutil.Error):
                memory = process.memory_full_info()
                times = process.cpu_times()
                for key in now[student]:
                    now[student][key] += getattr(memory, key)
                self.cpu[student][process.pid] = times.user + times.system
        for student, memory in now.items():
            for key, value in memory.items():
                self.peak[student][key] = max(self.peak[student][key], value)
        self.machine_peak = max(self.machine_peak, self.machine_used())
        self.load_peak = max(self.load_peak, os.getloadavg()[0])
        hub = self.hub.hub_process()
        with contextlib.suppress(psutil.Error, AttributeError):
            self.hub_peak = max(self.hub_peak, hub.memory_info().rss)

    def run(self):
        while not self.done.is_set():
            self.sample()
            self.probe()
            self.done.wait(self.interval)

    def stop(self):
        self.sample()  # the last CPU times, before the servers stop
        self.done.set()
        self.join(timeout=30)


async def one_student(hub, name, cells, notebook, start, deadline):
    """Log in, start the server, open the notebook and run all its cells; the times are from ``start``."""
    figures = {"student": name, "error": None}
    first_output = []
    student = Student(hub.url, name, hub.password)
    kernel = None
    try:
        await asyncio.sleep(max(0, start - time.monotonic()))
        await student.login()
        figures["login_s"] = time.monotonic() - start
        await student.start_server(timeout=deadline - time.monotonic())
        figures["server_s"] = time.monotonic() - start
        kernel = await student.open_notebook(f"notebooks/{notebook}", timeout=deadline - time.monotonic())
        figures["kernel_s"] = time.monotonic() - start
        ran, error = await kernel.run_notebook(
            cells, timeout=max(1, deadline - time.monotonic()),
            on_output=lambda t: first_output or first_output.append(t))
        figures.update(cells_run=ran, error=error)
    except Exception as error:  # a failure is a figure of the load test, not the end of it
        figures["error"] = f"{type(error).__name__}: {error}"
    finally:
        if kernel:
            kernel.close()
    figures["done_s"] = time.monotonic() - start
    if first_output:
        figures["first_output_s"] = first_output[0] - start
    figures["student_object"] = student
    return figures


def _summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}


async def _round(hub, students, cells, notebook, limit):
    start = time.monotonic() + 1.0  # every student starts at this instant
    runs = await asyncio.gather(*(one_student(hub, s, cells, notebook, start, start + limit) for s in students))
    return runs


def run_round(hub, students, notebook, *, limit=1800):
    """All ``students`` run ``notebook`` at once on the running ``hub``; returns the round's figures."""
    cells = code_cells(ROOT / "notebooks" / notebook)
    monitor = Monitor(hub, students)
    monitor.start()
    runs = asyncio.run(_round(hub, students, cells, notebook, limit))
    monitor.stop()

    async def stop_servers():
        for run in runs:
            with contextlib.suppress(Exception):
                await run["student_object"].stop_server()
    asyncio.run(stop_servers())
    deadline = time.monotonic() + 60  # wait until the round's processes are gone before the next one
    while hub.student_processes() and time.monotonic() < deadline:
        time.sleep(1)
    mb = 1 / 2**20
    per_student = []
    for run in runs:
        run.pop("student_object")
        peak = monitor.peak[run["student"]]
        run.update({k: round(v, 2) for k, v in run.items() if isinstance(v, float)})
        run.update(peak_rss_mb=round(peak["rss"] * mb), peak_pss_mb=round(peak["pss"] * mb),
                   peak_uss_mb=round(peak["uss"] * mb), cpu_s=round(sum(monitor.cpu[run["student"]].values()), 1))
        per_student.append(run)
    ok = [r for r in per_student if r["error"] is None]
    return {
        "students": len(students), "notebook": notebook, "threads_per_student": hub.threads,
        "failures": len(per_student) - len(ok), "errors": [r["error"] for r in per_student if r["error"]],
        **{key: _summary([r.get(key) for r in ok]) for key in
           ("login_s", "server_s", "kernel_s", "first_output_s", "done_s", "peak_rss_mb", "peak_pss_mb", "cpu_s")},
        "machine_memory_mb_per_student": round((monitor.machine_peak - monitor.baseline) * mb / len(students)),
        "load_average": {"before": round(monitor.load_before, 2), "peak": round(monitor.load_peak, 2),
                         "cores": os.cpu_count()},
        "hub": {"probes_answered": len(monitor.probes), "probes_failed": monitor.failed_probes,
                "health_ms": _summary([p * 1000 for p in monitor.probes]),
                "hub_peak_rss_mb": round(monitor.hub_peak * mb)},
        "per_student": per_student,
    }


def load_test(sizes=(1, 4, 8), notebook="00_measuring_models.ipynb", threads=1, limit=1800, record=True):
    """Run :func:`run_round` for each class size on a fresh hub; record and return the figures."""
    from .env import FAST
    mode = "fast" if FAST else "full"
    names = [f"load{i:02d}" for i in range(1, max(sizes) + 1)]
    folder = tempfile.mkdtemp(prefix="course-hub-load-")
    os.chmod(folder, 0o711)
    hub = Hub(folder, names, port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
              fast=FAST, threads=threads)
    results = {}
    try:
        hub.prepare().start()
        for size in sizes:
            print(f"{size} student(s) run {notebook} at once ({mode} mode) ...", flush=True)
            figures = run_round(hub, names[:size], notebook, limit=limit)
            results[f"{mode}-N{size}"] = figures
            print(capacity_table({f"{mode}-N{size}": figures}), flush=True)
            if record:
                from .reference import record as save
                save(RESULTS_NAME, {f"{mode}-N{size}": figures}, merge=True,
                     how=f"python -m helpers.hub_load: N students log in at once and run {notebook}, "
                         f"{threads} PyTorch thread(s) each (sizes {list(sizes)})")
    finally:
        stopped = hub.stop()
        print(f"stopped PIDs {stopped}" if stopped else "no process was left", flush=True)
        for name in names:
            remove_student(name)
        shutil.rmtree(folder, ignore_errors=True)
    return results


def capacity_table(results):
    """A Markdown table of the recorded rounds: one row per mode and class size."""
    head = ("| mode | students | failures | log in to ready kernel, s (median / max) | first output, s | "
            "whole notebook, s | CPU s per student | peak RSS per student, MB | PSS, MB | machine memory per student, MB | "
            "hub health probes ok / failed, worst ms |\n|" + "---|" * 11)
    rows = []
    for key, r in sorted(results.items(), key=lambda kv: (kv[0].split("-N")[0], kv[1]["students"])):
        def cell(name):
            s = r.get(name)
            return f"{s['median']:g} / {s['max']:g}" if s else "-"
        health = r["hub"]["health_ms"]
        rows.append(f"| {key.split('-N')[0]} | {r['students']} | {r['failures']} | {cell('kernel_s')} | "
                    f"{cell('first_output_s')} | {cell('done_s')} | {cell('cpu_s')} | {cell('peak_rss_mb')} | "
                    f"{cell('peak_pss_mb')} | {r['machine_memory_mb_per_student']} | {r['hub']['probes_answered']} / "
                    f"{r['hub']['probes_failed']}, {health['max'] if health else '-'} |")
    return "\n".join([head, *rows])


TARGET_S = {"fast": 60, "full": 600}  # how long "Run all" may take when the whole class runs it at once


def _rounds(figures, mode):
    rounds = [r for key, r in figures.items() if key.startswith(f"{mode}-N") and r.get("cpu_s") and r.get("peak_pss_mb")]
    if not rounds:
        known = sorted({key.split("-N")[0] for key in figures})
        raise ValueError(f"no {mode}-mode round with figures was recorded (recorded modes: {known}); "
                         f"run make hub-load HUB_MODE={mode}")
    return rounds


def capacity(figures, mode):
    """Students per core and per GB in ``mode``, from the recorded rounds (the most demanding of them).

    Per core: ``TARGET_S[mode] / CPU seconds per student``, the students one core serves if all press
    "Run all" at once and each may wait ``TARGET_S[mode]`` seconds. Per GB: ``1024 / peak PSS per
    student`` (PSS: the student's processes' memory, pages shared with other students counted in part).
    """
    rounds = _rounds(figures, mode)
    cpu = max(r["cpu_s"]["median"] for r in rounds)
    memory = max(r["peak_pss_mb"]["max"] for r in rounds)
    return {"mode": mode, "cpu_s_per_student": cpu, "pss_mb_per_student": memory, "target_s": TARGET_S[mode],
            "students_per_core": round(TARGET_S[mode] / cpu, 1), "students_per_gb": round(1024 / memory, 2)}


def resources(figures, mode, *, open_notebooks=2, threads=1):
    """Kubernetes requests and limits per student (Zero to JupyterHub's ``singleuser.cpu``/``memory``).

    memory guarantee: the peak PSS of one student (server + one kernel), rounded up to 256 MiB;
    memory limit: the peak RSS times ``open_notebooks`` (each open notebook is a kernel), rounded up;
    CPU guarantee: CPU seconds per run / ``TARGET_S[mode]`` (so that a whole class's "Run all" ends in
    about that time), rounded up to a tenth of a core; CPU limit: the PyTorch threads per student.
    """
    rounds = _rounds(figures, mode)
    up = lambda mb: -(-mb // 256) * 256  # noqa: E731
    pss = max(r["peak_pss_mb"]["max"] for r in rounds)
    rss = max(r["peak_rss_mb"]["max"] for r in rounds)
    cpu = max(r["cpu_s"]["median"] for r in rounds)
    return {"memory": {"guarantee": f"{up(pss):.0f}M", "limit": f"{up(rss * open_notebooks):.0f}M"},
            "cpu": {"guarantee": -(-cpu * 10 // TARGET_S[mode]) / 10, "limit": threads}}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.hub_load", description=__doc__.split("\n")[0])
    parser.add_argument("--students", default="1,4,8", help="class sizes, comma-separated (default 1,4,8)")
    parser.add_argument("--notebook", default="00_measuring_models.ipynb", help="the notebook every student runs")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads per student (default 1)")
    parser.add_argument("--limit", type=int, default=1800, help="seconds a round may take at most (default 1800)")
    parser.add_argument("--report", action="store_true", help="only print the table of data/results/hub_load.json")
    args = parser.parse_args(argv)
    if args.report:  # your own figures (data/results/), else the course's reference machine's (data/reference/)
        import json
        from .reference import REFERENCE, RESULTS
        path = next((p for p in (RESULTS / f"{RESULTS_NAME}.json", REFERENCE / f"{RESULTS_NAME}.json") if p.exists()), None)
        if path is None:
            parser.error("no figures yet: run make hub-load first")
        data = json.loads(path.read_text())
        m = data["machine"]
        print(f"from {path.relative_to(ROOT)}")
        print(f"measured on {m['cores']} cores ({m['cpu']} {m['flags']}), torch {m['torch']}, {m['date']}: {data['how']}")
        print(capacity_table(data["figures"]))
        for mode in TARGET_S:
            try:
                c = capacity(data["figures"], mode)
            except ValueError as error:
                print(f"{mode} mode: {error}")
                continue
            print(f"{mode} mode: {c['cpu_s_per_student']} CPU s and {c['pss_mb_per_student']} MB (PSS) per student: "
                  f"{c['students_per_core']} students per core (all pressing Run all, each done within "
                  f"{c['target_s']} s), {c['students_per_gb']} students per GB; Zero to JupyterHub singleuser "
                  f"resources: {resources(data['figures'], mode)}")
        return
    sizes = [int(n) for n in args.students.split(",")]
    if not sizes or min(sizes) < 1 or args.threads < 1 or args.limit < 1:
        parser.error("class sizes, threads and the limit must be whole numbers >= 1")
    if not (ROOT / "notebooks" / args.notebook).exists():
        parser.error(f"no notebook {args.notebook} in notebooks/")
    load_test(sizes, args.notebook, args.threads, args.limit)


if __name__ == "__main__":
    main()
