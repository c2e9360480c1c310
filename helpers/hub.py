"""JupyterHub for a class on one machine: ``make hub``, ``make hub-stop``, and the hub the tests start.

``make hub`` (as root, on the machine that serves the class):

* reads the class list ``<hub dir>/roster.txt``, one student a line (a trial list is written the
  first time; edit it and run ``make hub`` again);
* makes each student a Unix user of their own, whose private home ``<hub dir>/home/<student>/``
  (mode 0700: no other student can read it) holds their own copy of the student notebooks and their
  data folder, in which the course's dataset and cached models are linked, not copied;
* installs JupyterHub's proxy, pinned (``hub/proxy``), under ``.venv/hub-proxy``;
* runs the hub on http://127.0.0.1:8000 with ``hub/jupyterhub_config.py``: each student's server
  and kernel run as that student, with the course's ``.venv`` (:func:`student_python`), on 127.0.0.1.

A later ``make hub`` only adds what is missing (a new student, a new notebook, a newly cached model):
it never overwrites a file in a student's home. The hub directory is ``data/hub`` unless
``COURSE_HUB_DIR`` names another, the port 8000 unless ``COURSE_HUB_PORT`` names another;
``COURSE_FAST=1 make hub`` gives every student fast mode.
Stopping the hub (Ctrl-C) leaves students' servers running, and a restarted hub finds them again;
``make hub-stop`` stops the hub, its proxy and every student's server and kernel, by PID.
"""
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import psutil

from .env import DATA_DIR

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)                              # the course's .venv: the students' packages
CONFIG = ROOT / "hub" / "jupyterhub_config.py"
PROXY_PACKAGE = ROOT / "hub" / "proxy"        # package.json + package-lock.json: the pinned proxy
PROXY_DIR = VENV / "hub-proxy"
PROXY = PROXY_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
MARKER = "course student (make hub)"                 # the comment of every Unix user that make hub creates
STUDENT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TRIAL_ROSTER = ["student01", "student02", "student03", "student04"]


def default_hub_dir():
    return Path(os.environ.get("COURSE_HUB_DIR", DATA_DIR / "hub")).resolve()


# -- the class list and the students' Unix users ------------------------------------------------

def check_name(name):
    """A student's name as the hub and Unix both take it: lower-case letters, digits, '-' and '_'."""
    if not isinstance(name, str) or not STUDENT_NAME.fullmatch(name):
        raise ValueError(f"a student's name must start with a lower-case letter and hold only a-z, 0-9, '-' "
                         f"or '_' (at most 32 characters), got {name!r}")
    return name


def read_roster(path):
    """The student names in ``path``: one a line, '#' starts a comment, blank lines ignored."""
    names = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        try:
            check_name(name)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
        if name in names:
            raise ValueError(f"{path}, line {number}: {name!r} is listed twice")
        names.append(name)
    if not names:
        raise ValueError(f"{path} lists no student: write one name a line")
    return names


def course_user(name):
    """The Unix user ``name`` if make hub created it (its comment is :data:`MARKER`), else None.

    Raises if ``name`` is an account that make hub did not create (``root``, a system account, a
    person's own login): the hub would run that account's server, so it is refused.
    """
    try:
        entry = pwd.getpwnam(check_name(name))
    except KeyError:
        return None
    if entry.pw_gecos != MARKER or entry.pw_uid < 1000:
        raise ValueError(f"{name!r} is an existing account on this machine that make hub did not create "
                         f"(uid {entry.pw_uid}); rename that student in the roster")
    return entry


def ensure_student(name, home):
    """The Unix user of student ``name`` with home ``home``, created (with its own group) when missing."""
    entry = course_user(name)
    if entry is None:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                        "--comment", MARKER, "--user-group", name], check=True)
        entry = pwd.getpwnam(name)
    return entry


def remove_student(name):
    """Delete the Unix user of student ``name`` (only one that make hub created); its files stay."""
    if course_user(name) is not None:
        subprocess.run(["userdel", name], check=True)


# -- a student's workspace ------------------------------------------------------------------------

SEED = ROOT / "hub" / "seed-home.sh"


def as_student(owner, home, *command):
    """Run ``command`` in ``home`` as the Unix user ``owner`` (a ``pwd`` entry; None: as this process's
    user), so that what it writes in a student's home it writes with that student's rights, never
    root's (a student's own link cannot send it elsewhere). Returns the lines it printed."""
    ids = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if owner else {}
    done = subprocess.run(command, cwd=home, env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, check=True,
                          capture_output=True, text=True, **ids)
    return done.stdout.splitlines()


def seed_workspace(home, owner=None, *, notebooks=ROOT / "notebooks", data=DATA_DIR):
    """Give the workspace ``home`` what it lacks; never overwrite what is there. Returns what was added.

    ``home/notebooks/``: a copy of each student notebook; ``home/data/`` (the student's COURSE_DATA):
    links to the course's dataset and reference figures, and one link per cached model in
    ``data/models`` (a model the student trains again replaces its link, not the teacher's file);
    ``home/.tmp/``: the student's TMPDIR (caches such as torch.compile's stay out of the shared /tmp).
    ``home`` itself is made for ``owner`` (a ``pwd`` entry), readable by them only; the rest is done
    by ``hub/seed-home.sh``, run as ``owner``.
    """
    home = Path(home)
    if not home.is_dir():
        home.mkdir(parents=True)
        if owner is not None:
            os.chown(home, owner.pw_uid, owner.pw_gid)
    os.chmod(home, 0o700)
    return [home / line for line in as_student(owner, home, "sh", str(SEED), str(notebooks), str(data))]


# -- the students' Python ---------------------------------------------------------------------------

def readable_by_all(path):
    """True when any user can reach ``path``: every folder above it searchable and the file itself
    readable by "others" (symbolic links followed)."""
    path = Path(path).resolve()
    if not path.exists() or not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in path.parents)


def student_python():
    """The Python that students' servers and kernels run, with the course's .venv packages.

    Normally the course's own ``.venv/bin/python``. Where other users cannot run that interpreter
    (a Python installed in root's home, as pyenv does: /root is 0700), a small venv of a Python of the
    same version that every user can run, ``.venv/hub-python``, whose only content is a ``.pth`` line
    that adds the course's .venv packages (and links to its ``share`` and ``etc``, where JupyterLab
    and the kernel spec live): the same packages, the same files, another copy of the interpreter.
    """
    needed = [ROOT / "helpers" / "__init__.py", Path(sysconfig.get_paths()["purelib"]) / "jupyterhub"]
    if (DATA_DIR / "FashionMNIST").exists():
        needed.append(DATA_DIR / "FashionMNIST")
    for path in needed:
        if not readable_by_all(path):
            raise PermissionError(f"students cannot read {path}: put the course where every user can read "
                                  f"it (for example /opt/course, mode 755) and run make hub from there")
    python = VENV / "bin" / "python"
    if readable_by_all(python) and os.stat(python.resolve()).st_mode & stat.S_IXOTH:
        return python
    own = VENV / "hub-python"
    if (own / "bin" / "python").exists():
        return own / "bin" / "python"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        if candidate.exists() and readable_by_all(candidate) and os.stat(candidate.resolve()).st_mode & stat.S_IXOTH:
            subprocess.run([str(candidate), "-m", "venv", "--without-pip", str(own)], check=True)
            site = own / "lib" / version / "site-packages"
            (site / "course-venv.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
            for shared in ("share", "etc"):
                (own / shared).symlink_to(VENV / shared)
            return own / "bin" / "python"
    raise PermissionError(f"other users cannot run this course's Python ({python.resolve()}), and no {version} that "
                          f"they can run was found in /usr/bin or /usr/local/bin: make the course's .venv from a "
                          f"Python every user can run (for example Debian's python3) and run make hub again")


# -- the pinned proxy -------------------------------------------------------------------------------

def proxy_version():
    """The version of configurable-http-proxy that hub/proxy pins."""
    return json.loads((PROXY_PACKAGE / "package.json").read_text())["dependencies"]["configurable-http-proxy"]


def install_proxy():
    """Install the pinned configurable-http-proxy into .venv/hub-proxy (npm ci, from the lock file), once."""
    installed = PROXY_DIR / "node_modules" / "configurable-http-proxy" / "package.json"
    if PROXY.exists() and installed.exists() and json.loads(installed.read_text())["version"] == proxy_version():
        return PROXY
    if not shutil.which("npm"):
        raise RuntimeError("make hub needs npm once, to install JupyterHub's proxy (configurable-http-proxy): "
                           "install Node.js (Debian: apt-get install npm)")
    PROXY_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PROXY_PACKAGE / name, PROXY_DIR / name)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROXY_DIR, check=True)
    return PROXY


# -- processes, by PID ------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(pid, word):
    """The running process ``pid`` if ``word`` is in its command line (so a reused PID is never hit)."""
    try:
        process = psutil.Process(pid)
        return process if any(word in part for part in process.cmdline()) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def stop_processes(processes, timeout=10, *, children=True):
    """SIGTERM each process (and its children, found first, unless ``children=False``), then SIGKILL
    what is left after ``timeout``. Returns the PIDs that were running."""
    everyone = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            everyone += [process, *(process.children(recursive=True) if children else [])]
    for process in everyone:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(everyone, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return sorted({p.pid for p in everyone})


# -- the hub ----------------------------------------------------------------------------------------

class Hub:
    """One hub: its folder, class list, ports and processes. ``make hub`` runs :meth:`serve`; the tests
    and the load test :meth:`start` it in the background and :meth:`stop` everything by PID.

    The folder holds ``roster.txt``, ``home/<student>/`` (0711: a student can reach their own home,
    not list the others) and ``state/`` (0700, root only: the class password, the hub's database,
    cookie secret, PID files and log).
    """

    def __init__(self, folder=None, students=None, *, port=8000, api_port=8081, proxy_api_port=8001,
                 fast=None, threads=None):
        self.dir = Path(folder).resolve() if folder else default_hub_dir()
        self.state, self.homes, self.roster = self.dir / "state", self.dir / "home", self.dir / "roster.txt"
        self.students = [check_name(s) for s in students] if students is not None else None
        self.port, self.api_port, self.proxy_api_port = port, api_port, proxy_api_port
        self.fast = fast if fast is not None else os.environ.get("COURSE_FAST", "0") not in ("", "0")
        self.threads = threads
        self.python = None  # set by prepare(): student_python()
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def password(self):
        return (self.state / "password").read_text().strip()

    def home(self, student):
        return self.homes / check_name(student)

    def prepare(self):
        """Everything :meth:`start` needs: the proxy, the folders, the class password, each student's
        Unix user and workspace. Needs root (one Unix user per student)."""
        if os.geteuid() != 0:
            raise PermissionError("make hub must run as root (sudo make hub): it creates one Unix user per "
                                  "student, so that no student can read another's files")
        try:
            import jupyterhub  # noqa: F401
        except ImportError:
            raise RuntimeError("JupyterHub is not installed in .venv: run make install (pyproject.toml pins it)") from None
        install_proxy()
        self.python = student_python()
        for folder, mode in ((self.dir, 0o711), (self.state, 0o700), (self.homes, 0o711)):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, mode)
        if self.students is None:
            if not self.roster.exists():
                self.roster.write_text("# one student a line: the name they log in with (a-z, 0-9, - and _)\n"
                                       + "\n".join(TRIAL_ROSTER) + "\n")
            self.students = read_roster(self.roster)
        password = self.state / "password"
        if not password.exists():
            password.write_text(secrets.token_urlsafe(12) + "\n")
        os.chmod(password, 0o600)
        for student in self.students:
            seed_workspace(self.home(student), ensure_student(student, self.home(student)))
        if self.threads is None:
            self.threads = max(1, (os.cpu_count() or 1) // len(self.students))
        return self

    def environment(self):
        """The hub's environment: the COURSE_HUB_* settings hub/jupyterhub_config.py reads."""
        return {**os.environ, "COURSE_HUB_DIR": str(self.dir), "COURSE_HUB_PYTHON": str(self.python),
                "COURSE_HUB_STUDENTS": " ".join(self.students), "COURSE_HUB_PORT": str(self.port),
                "COURSE_HUB_API_PORT": str(self.api_port), "COURSE_HUB_PROXY_API_PORT": str(self.proxy_api_port),
                "COURSE_HUB_PROXY": str(PROXY), "COURSE_HUB_THREADS": str(self.threads),
                "COURSE_FAST": "1" if self.fast else "0"}

    def command(self):
        return [str(VENV / "bin" / "jupyterhub"), "-f", str(CONFIG), "--JupyterHub.pid_file=" + str(self.state / "jupyterhub.pid")]

    def serve(self):
        """Run the hub in the foreground (``make hub``): this process becomes the hub."""
        print(f"JupyterHub for {len(self.students)} students on {self.url} (this machine only), "
              f"{'fast' if self.fast else 'full'} mode, {self.threads} PyTorch thread(s) per student\n"
              f"  class list: {self.roster}\n  workspaces: {self.homes}/<student>/\n"
              f"  class password: in {self.state / 'password'} (readable by root only)\n"
              "  Ctrl-C stops the hub; students' servers keep running. make hub-stop stops everything.", flush=True)
        os.chdir(self.state)
        os.execve(self.command()[0], self.command(), self.environment())

    def start(self, timeout=180):
        """Start the hub in the background (log in state/jupyterhub.log) and wait until it answers."""
        log = open(self.state / "jupyterhub.log", "ab")
        self.process = subprocess.Popen(self.command(), cwd=self.state, env=self.environment(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub stopped at start (exit {self.process.returncode}):\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        raise TimeoutError(f"the hub did not answer within {timeout} s:\n{self.log_tail()}")

    def healthy(self):
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(self.url + "/hub/health", timeout=5) as reply:
                return reply.status == 200
        return False

    def log_tail(self, lines=30):
        path = self.state / "jupyterhub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _pid_file_process(self, name, word):
        path = self.state / name
        with contextlib.suppress(OSError, ValueError):
            return _process(int(path.read_text().strip()), word)
        return None

    def hub_process(self):
        return self._pid_file_process("jupyterhub.pid", "jupyterhub")

    def proxy_process(self):
        return self._pid_file_process("jupyterhub-proxy.pid", "configurable-http-proxy")

    def server_pids(self):
        """{student: PID of their running server}, from the hub's database (what a restarted hub reads)."""
        database = self.state / "jupyterhub.sqlite"
        if not database.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT users.name, spawners.state FROM spawners "
                              "JOIN users ON users.id = spawners.user_id").fetchall()
        states = {name: json.loads(state or "{}") for name, state in rows}
        return {name: state["pid"] for name, state in states.items() if state.get("pid")}

    def student_processes(self):
        """Every process running as one of this hub's students (their servers and kernels)."""
        uids = {entry.pw_uid for entry in map(course_user, self.students or []) if entry}
        return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]

    def stop_hub(self):
        """Stop the hub (which stops its proxy), by PID; students' servers keep running."""
        hubs = {p.pid: p for p in (self.hub_process(), self.process and _process(self.process.pid, "jupyterhub")) if p}
        stopped = stop_processes(hubs.values(), timeout=30, children=False)  # its children: the servers
        if self.process is not None:  # started by this object: collect its exit status
            self.process.wait(timeout=5)
            self.process = None
        proxy = self.proxy_process()  # the hub stops it; this only catches a hub that was killed
        return stopped + (stop_processes([proxy]) if proxy else [])

    def stop(self):
        """Stop the hub, its proxy, every student's server and kernel, by PID. Returns the PIDs stopped."""
        stopped = self.stop_hub()
        if self.students is None and self.roster.exists():
            self.students = read_roster(self.roster)
        servers = []
        for student, pid in self.server_pids().items():
            process = _process(pid, "jupyterhub-singleuser")
            entry = course_user(student) if student in (self.students or []) else None
            if process and entry and process.uids().real == entry.pw_uid:
                servers.append(process)
        stopped += stop_processes(servers)
        stopped += stop_processes(self.student_processes())  # e.g. a kernel whose server was killed
        return stopped


    # -- nbgrader without its exchange: the teacher (root) hands out and collects through the homes --

    def _assignment(self, assignment):
        if not isinstance(assignment, str) or not re.fullmatch(r"\d\d_[a-z0-9_]+", assignment):
            raise ValueError(f"an assignment is named like a notebook, e.g. '05_pruning', got {assignment!r}")
        if self.students is None:
            self.students = read_roster(self.roster)
        return assignment

    def release(self, assignment, course=ROOT / "build" / "assignments"):
        """Copy nbgrader's student version, ``<course>/release/<assignment>/``, into each student's
        ``assignments/<assignment>/``; a student's own copy is never overwritten. Returns the copies made."""
        source = Path(course) / "release" / self._assignment(assignment)
        if not source.is_dir():
            raise FileNotFoundError(f"{source} does not exist: make assignments, then in build/assignments "
                                    f"nbgrader generate_assignment {assignment}")
        copy = ('set -eu; mkdir -p "assignments/$1"; for f in "$2"/*; do t="assignments/$1/${f##*/}"; '
                'if [ -f "$f" ] && [ ! -e "$t" ] && [ ! -L "$t" ]; then cp "$f" "$t" && echo "$t"; fi; done')
        made = []
        for student in self.students:
            home = self.home(student)
            made += [home / line for line in as_student(course_user(student), home, "sh", "-c", copy, "release",
                                                        assignment, str(source))]
        return made

    def collect(self, assignment, course=ROOT / "build" / "assignments"):
        """Copy each student's ``assignments/<assignment>/*.ipynb`` to nbgrader's
        ``<course>/submitted/<student>/<assignment>/`` (replacing an earlier collection), ready for
        ``nbgrader autograde``. Returns {student: number of notebooks collected}."""
        self._assignment(assignment)
        counts = {}
        for student in self.students:
            owner = course_user(student)
            uid = owner.pw_uid if owner else os.geteuid()
            notebooks = sorted((self.home(student) / "assignments" / assignment).glob("*.ipynb"))
            target = Path(course) / "submitted" / student / assignment
            counts[student] = 0
            for notebook in notebooks:
                # only a regular file that the student owns: not a link to someone else's work
                try:
                    handle = os.open(notebook, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                with os.fdopen(handle, "rb") as file:
                    info = os.fstat(file.fileno())
                    if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
                        continue
                    target.mkdir(parents=True, exist_ok=True)
                    (target / notebook.name).write_bytes(file.read())
                counts[student] += 1
        return counts


USAGE = """usage: python -m helpers.hub start | stop | release NN_topic | collect NN_topic
  start    run the hub (make hub)               stop     stop everything by PID (make hub-stop)
  release  give each student nbgrader's version of an assignment (build/assignments/release/NN_topic)
  collect  copy the students' work to build/assignments/submitted/<student>/NN_topic for nbgrader autograde"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not (argv in (["start"], ["stop"]) or (len(argv) == 2 and argv[0] in ("release", "collect"))):
        sys.exit(USAGE)
    hub = Hub(port=int(os.environ.get("COURSE_HUB_PORT", 8000)))
    try:
        if argv == ["start"]:
            if hub.hub_process():
                sys.exit(f"a hub is already running from {hub.dir} (make hub-stop stops it)")
            hub.prepare().serve()
        elif argv == ["stop"]:
            print(f"stopped PIDs: {hub.stop() or 'none were running'}")
        elif argv[0] == "release":
            print(f"{len(hub.release(argv[1]))} notebook(s) handed out to {len(hub.students)} students")
        else:
            print("collected (notebooks per student):", hub.collect(argv[1]))
    except (PermissionError, RuntimeError, ValueError, FileNotFoundError) as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
