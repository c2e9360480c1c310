# JupyterHub for a class on one machine (make hub). Read by `jupyterhub -f hub/jupyterhub_config.py`,
# which helpers.hub starts with the settings below in its environment (COURSE_HUB_*): run `make hub`,
# not jupyterhub by hand. This file imports nothing from helpers, so that the hub process stays small
# (importing helpers imports PyTorch).
#
#   * everything listens on 127.0.0.1 only: the hub, its proxy, every student's server and kernel;
#   * each student is a Unix user of their own (created by helpers.hub), whose home
#     <hub dir>/home/<student>/ (mode 0700) holds their copy of the notebooks and their data folder;
#   * the kernel is the course's .venv, in fast mode when the hub was started with COURSE_FAST=1;
#   * the trial login is one class password (SharedPasswordAuthenticator): fine on 127.0.0.1 for a
#     trial, NOT on a network, where any student could log in as any other (docs/teaching.md says
#     what to use instead).
import os
from pathlib import Path

c = get_config()  # noqa: F821 (defined by JupyterHub when it loads this file)

hub_dir = Path(os.environ["COURSE_HUB_DIR"])
state = hub_dir / "state"  # root only (0700): password, database, cookie secret, PID files
# the students' Python: the course's .venv, or a venv that loads its packages (helpers.hub.student_python)
python = Path(os.environ["COURSE_HUB_PYTHON"])
students = os.environ["COURSE_HUB_STUDENTS"].split()

# Loopback only. The hub's own API port and the proxy's API port stay fixed across restarts, so that
# students' servers (started with the hub's API address) find the hub again after it restarts.
c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ['COURSE_HUB_PORT']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ['COURSE_HUB_API_PORT']}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['COURSE_HUB_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.command = [os.environ["COURSE_HUB_PROXY"]]  # pinned, under .venv/hub-proxy
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
c.Spawner.ip = "127.0.0.1"

# State (users, tokens, the PIDs of running servers) survives a restart of the hub.
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
# Stopping or restarting the hub leaves students' servers (and kernels) running: the new hub finds
# them again by PID. `make hub-stop` stops everything.
c.JupyterHub.cleanup_servers = False

# Who may log in: the class list (roster.txt), with the class password.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = (state / "password").read_text().strip()
c.Authenticator.allowed_users = set(students)

# One local process per student, run as that student's Unix user, with the course's .venv packages.
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(python), "-m", "jupyterhub.singleuser"]
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/notebooks"
c.Spawner.environment = {
    "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
    "VIRTUAL_ENV": str(python.parent.parent),
    "COURSE_FAST": os.environ.get("COURSE_FAST", "0"),
    # a student's own data folder: the shared dataset and cached models are linked into it
    "COURSE_DATA": lambda spawner: str(hub_dir / "home" / spawner.user.name / "data"),
    # temporary files (torch.compile's cache among them) in the student's home, not the shared /tmp
    "TMPDIR": lambda spawner: str(hub_dir / "home" / spawner.user.name / ".tmp"),
    # PyTorch threads per student: cores / students by default, so that a class pressing "Run all"
    # together does not start (students x cores) threads
    "OMP_NUM_THREADS": os.environ["COURSE_HUB_THREADS"],
    "MKL_NUM_THREADS": os.environ["COURSE_HUB_THREADS"],
}
# A server that starts while the whole class logs in on a small machine can take a while.
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
