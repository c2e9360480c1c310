"""JupyterHub for a class (helpers.hub, hub/jupyterhub_config.py): two students log in and run a
notebook each, cannot read each other's files, and the hub holds when a kernel is killed, a notebook is
opened twice or the hub itself restarts. Everything listens on 127.0.0.1 and is stopped by PID.

The hub tests need root (each student is a Unix user of their own, as on a real class server: CI runs as
root) and npm once (the pinned proxy); as another user they are skipped, and say why.
"""
import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path

import psutil
import pytest

from helpers import hub as hub_module
from helpers.hub import Hub, check_name, course_user, free_port, read_roster, remove_student, seed_workspace
from helpers.hub_client import HubError, Kernel, Student, code_cells
from helpers.hub_load import capacity, capacity_table, resources
from helpers.hub_load import main as load_main

STUDENTS = ["hubtest-ada", "hubtest-bob"]
NOTEBOOK = "03_channel_shuffle.ipynb"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="make hub needs root: one Unix user per student")


# -- without a hub ------------------------------------------------------------------------------------

def test_roster_reads_names_comments_and_rejects_bad_ones(tmp_path):
    roster = tmp_path / "roster.txt"
    roster.write_text("# class A\nada\n\nbob  # late\n")
    assert read_roster(roster) == ["ada", "bob"]
    for text, message in (("ada\nada\n", "listed twice"), ("Ada\n", "line 1"), ("../etc\n", "lower-case"),
                          ("# nobody\n", "no student")):
        roster.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_roster(roster)
    for bad in ("", "root!", "a" * 33, "1ada", None):
        with pytest.raises(ValueError, match="student's name"):
            check_name(bad)


def test_an_account_that_make_hub_did_not_create_is_refused():
    with pytest.raises(ValueError, match="did not create"):
        course_user("root")
    assert course_user("nobody-of-this-course") is None


def test_seeding_adds_what_is_missing_and_never_overwrites_a_students_work(tmp_path):
    course, data = tmp_path / "notebooks", tmp_path / "data"
    for folder in (course, data / "FashionMNIST", data / "models"):
        folder.mkdir(parents=True)
    (course / "00_a.ipynb").write_text("original")
    (data / "models" / "net.pt").write_bytes(b"weights")
    home = tmp_path / "home" / "ada"
    seed_workspace(home, notebooks=course, data=data)
    assert (home / "notebooks" / "00_a.ipynb").read_text() == "original"
    assert (home / "data" / "models" / "net.pt").read_bytes() == b"weights"  # a link to the course's file
    assert (home / "data" / "FashionMNIST").resolve() == (data / "FashionMNIST").resolve()
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    (home / "notebooks" / "00_a.ipynb").write_text("the student's answers")
    (course / "00_a.ipynb").write_text("a newer course version")
    (course / "01_b.ipynb").write_text("a new lesson")
    (home / "data" / "models" / "net.pt").unlink()
    (home / "data" / "models" / "net.pt").write_bytes(b"retrained by the student")
    added = seed_workspace(home, notebooks=course, data=data)
    assert (home / "notebooks" / "00_a.ipynb").read_text() == "the student's answers"
    assert (home / "data" / "models" / "net.pt").read_bytes() == b"retrained by the student"
    assert added == [home / "notebooks" / "01_b.ipynb"]


def test_release_never_overwrites_and_collect_takes_only_the_students_own_files(tmp_path):
    course = tmp_path / "assignments"
    (course / "release" / "05_x").mkdir(parents=True)
    (course / "release" / "05_x" / "05_x.ipynb").write_text("released")
    hub = Hub(tmp_path / "hub", ["hubunit-ada"])
    work = hub.home("hubunit-ada") / "assignments" / "05_x"
    hub.home("hubunit-ada").mkdir(parents=True)
    assert hub.release("05_x", course) == [work / "05_x.ipynb"]
    (work / "05_x.ipynb").write_text("ada's answers")
    assert hub.release("05_x", course) == []
    (tmp_path / "bob.ipynb").write_text("bob's answers")
    (work / "copied.ipynb").symlink_to(tmp_path / "bob.ipynb")  # not collected: a link, not her own file
    assert hub.collect("05_x", course) == {"hubunit-ada": 1}
    assert (course / "submitted" / "hubunit-ada" / "05_x" / "05_x.ipynb").read_text() == "ada's answers"
    assert not (course / "submitted" / "hubunit-ada" / "05_x" / "copied.ipynb").exists()
    with pytest.raises(ValueError, match="named like a notebook"):
        hub.release("../etc", course)
    with pytest.raises(FileNotFoundError, match="generate_assignment 06_y"):
        hub.release("06_y", course)


def test_make_hub_says_what_it_needs(monkeypatch, tmp_path):
    monkeypatch.setattr(hub_module.os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match="as root"):
        Hub(tmp_path, ["ada"]).prepare()
    monkeypatch.setattr(hub_module, "PROXY_DIR", tmp_path / "proxy")
    monkeypatch.setattr(hub_module, "PROXY", tmp_path / "proxy" / "missing")
    monkeypatch.setattr(hub_module.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs npm"):
        hub_module.install_proxy()
    with pytest.raises(ValueError, match="this machine only"):
        Student("http://192.0.2.1:8000", "ada", "password")


def test_a_path_is_readable_by_all_only_if_every_folder_above_it_can_be_crossed(monkeypatch):
    with tempfile.TemporaryDirectory() as top:  # in /tmp, not pytest's own folder (0700)
        folder = Path(top) / "course"
        folder.mkdir()
        (folder / "file").write_text("x")
        os.chmod(top, 0o755)
        os.chmod(folder / "file", 0o644)
        assert hub_module.readable_by_all(folder / "file")
        os.chmod(folder, 0o700)  # as /root is, where pyenv installs Python
        assert not hub_module.readable_by_all(folder / "file")
        assert not hub_module.readable_by_all(folder / "missing")
    monkeypatch.setattr(hub_module, "readable_by_all", lambda path: False)
    with pytest.raises(PermissionError, match="students cannot read"):
        hub_module.student_python()


def test_the_load_test_refuses_bad_options(capsys):
    for argv in (["--students", "0"], ["--students", "1", "--threads", "0"], ["--notebook", "99_none.ipynb"]):
        with pytest.raises(SystemExit):
            load_main(argv)
    assert "no notebook 99_none.ipynb" in capsys.readouterr().err


def test_capacity_and_kubernetes_resources_follow_from_the_recorded_figures():
    def round_(students, cpu, pss, rss):
        return {"students": students, "failures": 0, "cpu_s": {"median": cpu, "max": cpu},
                "peak_pss_mb": {"median": pss, "max": pss}, "peak_rss_mb": {"median": rss, "max": rss},
                "machine_memory_mb_per_student": pss, "hub": {"probes_answered": 9, "probes_failed": 0,
                                                              "health_ms": {"median": 5, "max": 9}}}
    figures = {"fast-N1": round_(1, 15.0, 1000, 1300), "fast-N2": round_(2, 12.0, 1100, 1400)}
    assert capacity(figures, "fast") == {"mode": "fast", "cpu_s_per_student": 15.0, "pss_mb_per_student": 1100,
                                         "target_s": 60, "students_per_core": 4.0, "students_per_gb": 0.93}
    # 1100 MB -> 5 x 256; 2 x 1400 = 2800 MB -> 11 x 256; 15 CPU s in 60 s -> a quarter of a core -> 0.3
    assert resources(figures, "fast") == {"memory": {"guarantee": "1280M", "limit": "2816M"},
                                          "cpu": {"guarantee": 0.3, "limit": 1}}
    assert capacity_table(figures).count("\n| fast |") == 2
    with pytest.raises(ValueError, match="HUB_MODE=full"):
        capacity(figures, "full")


# -- a hub with two students ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub():
    if os.geteuid() != 0:
        pytest.skip("make hub needs root: one Unix user per student")
    folder = tempfile.mkdtemp(prefix="course-hub-test-")
    os.chmod(folder, 0o711)  # the students reach their homes through it
    hub = Hub(folder, STUDENTS, port=free_port(), api_port=free_port(), proxy_api_port=free_port(),
              fast=True, threads=1)
    try:
        hub.prepare()
    except PermissionError as error:  # e.g. the course checked out in a folder other users cannot enter
        for name in STUDENTS:
            remove_student(name)
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"the students could not use this checkout: {error}")
    try:
        yield hub.start()
    finally:
        hub.stop()
        left = hub.student_processes()
        for name in STUDENTS:
            remove_student(name)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"processes of the test's students still running: {left}"


def run(coroutine):
    return asyncio.run(coroutine)


async def logged_in(hub, name):
    student = await Student(hub.url, name, hub.password).login()
    await student.start_server()
    return student


def kernel_pid(hub, student, kernel_id):
    """The PID of a student's kernel: the process of that Unix user whose connection file names it."""
    uid = course_user(student).pw_uid
    for process in psutil.process_iter(["uids", "cmdline"]):
        if process.info["uids"] and process.info["uids"].real == uid and any(
                kernel_id in part for part in process.info["cmdline"] or []):
            return process.pid
    return None


@needs_root
def test_two_students_run_a_notebook_each_and_cannot_read_each_others_files(hub):
    cells = code_cells(hub_module.ROOT / "notebooks" / NOTEBOOK)

    async def student_runs(name):
        student = await logged_in(hub, name)
        kernel = await student.open_notebook(f"notebooks/{NOTEBOOK}")
        ran, error = await kernel.run_notebook(cells, timeout=600)
        return student, kernel, ran, error

    async def class_runs():
        return await asyncio.gather(*(student_runs(name) for name in STUDENTS))

    (ada, ada_kernel, ran, error), (bob, bob_kernel, ran_bob, error_bob) = run(class_runs())
    assert (ran, error) == (len(cells), None) and (ran_bob, error_bob) == (len(cells), None)

    async def checks():
        await ada_kernel.connect()
        bob_home = hub.home("hubtest-bob")
        probe = (f"import os, helpers\n"
                 f"print(os.getuid(), os.environ['COURSE_FAST'], helpers.DATA_DIR)\n"
                 f"for path in [{str(bob_home / 'notebooks' / NOTEBOOK)!r}, {str(hub.state / 'password')!r}]:\n"
                 f"    try:\n        open(path).read(); print('READ', path)\n"
                 f"    except PermissionError:\n        print('refused')\n"
                 f"try:\n    os.listdir({str(hub.homes)!r}); print('LISTED')\nexcept PermissionError:\n    print('refused')\n")
        result = await ada_kernel.execute(probe)
        # bob's server does not take ada's token
        refused = await ada.request("GET", "/user/hubtest-bob/api/contents/notebooks", ok=(403, 404))
        return result, refused

    result, _ = run(checks())
    lines = result["outputs"][0]["text"].split("\n")
    uid, fast, data = lines[0].split()
    assert int(uid) == course_user("hubtest-ada").pw_uid and fast == "1"
    assert data == str(hub.home("hubtest-ada") / "data")
    assert lines[1:4] == ["refused", "refused", "refused"], result


@needs_root
def test_the_trial_login_lets_anyone_with_the_class_password_be_anyone(hub):
    # why docs/teaching.md says to use another authenticator on a network: this must stay true of the trial one
    bob_by_ada = run(Student(hub.url, "hubtest-bob", hub.password).login())
    assert bob_by_ada.token
    with pytest.raises(HubError, match="403"):
        run(Student(hub.url, "hubtest-bob", "a wrong password").login())
    with pytest.raises(HubError, match="403"):
        run(Student(hub.url, "not-on-the-roster", hub.password).login())


@needs_root
def test_nothing_listens_beyond_loopback(hub):
    pids = {hub.hub_process().pid, hub.proxy_process().pid} | {p.pid for p in hub.student_processes()}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "no listening socket found for the hub's processes"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening


@needs_root
def test_a_kernel_killed_mid_run_restarts_and_the_other_students_are_unaffected(hub):
    async def scenario():
        ada, bob = await logged_in(hub, "hubtest-ada"), await logged_in(hub, "hubtest-bob")
        ada_kernel = await ada.open_notebook("notebooks/long.ipynb")
        bob_kernel = await bob.open_notebook("notebooks/long.ipynb")
        old_pid = kernel_pid(hub, "hubtest-ada", ada_kernel.id)
        killed = []

        def kill_once(_):
            if not killed:
                os.kill(old_pid, signal.SIGKILL)
                killed.append(old_pid)

        loop = "import time\nfor i in range(40):\n    print(i, flush=True); time.sleep(0.25)\n"
        ada_result, bob_result = await asyncio.gather(ada_kernel.execute(loop, timeout=120, on_output=kill_once),
                                                      bob_kernel.execute(loop, timeout=120))
        ada_kernel.close()
        again = await Kernel(ada, ada_kernel.id).connect()  # the same kernel, restarted by the server
        after = await again.execute("print(6 * 7)")
        return old_pid, ada_result, bob_result, after, kernel_pid(hub, "hubtest-ada", ada_kernel.id)

    old_pid, ada_result, bob_result, after, new_pid = run(scenario())
    assert ada_result["status"] == "died"
    assert bob_result["status"] == "ok" and len(bob_result["outputs"]) == 40
    assert after["outputs"][0]["text"] == "42\n" and new_pid not in (None, old_pid)


@needs_root
def test_the_same_notebook_opened_twice_shares_one_kernel(hub):
    async def scenario():
        ada = await logged_in(hub, "hubtest-ada")
        first = await ada.open_notebook(f"notebooks/{NOTEBOOK}")
        second = await ada.open_notebook(f"notebooks/{NOTEBOOK}")
        await first.execute("x = 41")
        result = await second.execute("print(x + 1)")
        return first.id, second.id, result

    first, second, result = run(scenario())
    assert first == second and result["outputs"][0]["text"] == "42\n"


@needs_root
def test_a_restarted_hub_finds_the_students_servers_kernels_and_files(hub):
    async def before():
        ada = await logged_in(hub, "hubtest-ada")
        await ada.api("PUT", "contents/notebooks/notes.txt", {"type": "file", "format": "text", "content": "mine"})
        kernel = await ada.open_notebook(f"notebooks/{NOTEBOOK}")
        await kernel.execute("kept = 7")
        kernel.close()
        return ada, kernel.id

    ada, kernel_id = run(before())
    servers = hub.server_pids()
    hub.stop_hub()
    assert not hub.healthy() and all(psutil.pid_exists(pid) for pid in servers.values())
    hub.start()

    async def after():
        ada_again = Student(hub.url, "hubtest-ada", hub.password)
        ada_again.token = ada.token  # the token issued before the restart still works
        assert (await ada_again.request("GET", "/hub/api/users/hubtest-ada"))["servers"][""]["ready"]
        note = await ada_again.api("GET", "contents/notebooks/notes.txt")
        kernel = await Kernel(ada_again, kernel_id).connect()
        kept = await kernel.execute("print(kept)")
        return note["content"], kept["outputs"][0]["text"]

    assert run(after()) == ("mine", "7\n")
    assert hub.server_pids() == servers
