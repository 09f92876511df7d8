"""Copper from Python inside a headnode or clone.

    import copper
    r = copper.qsub("-N", "sweep", "--", "python3", "sim.py")
    print(r.stdout, r.exit_code)

    kids = copper.clone(3)        # fork this VM, like os.fork(): returns in the caller AND in each clone
    if not kids:                  # [] in a new clone
        me = copper.whoami()      # {'COPPER_CLONE_ID': '2', 'COPPER_GENERATION': '1', ...}
    else:
        print([(c["name"], c["address"]) for c in kids])
        copper.kill(*[c["id"] for c in kids])

Every function sends the same request the command-line tools send (POST /v1/cli to gcd at
10.0.2.100:80, see docs/PROTOCOL.md); nothing is printed. gcd knows who is calling from the
channel the request arrives on, not from anything in the request.
"""
import base64
import grp
import http.client
import json
import os
import pwd
import select
import sys
import termios
import time
import tty

__all__ = ["Result", "CopperError", "Unreachable", "CommandFailed", "call", "qsub", "qstat", "qdel",
           "qhold", "qrls", "qalter", "gc", "clone", "clones", "kill", "whoami", "API_HOST", "API_PORT",
           "CLONE_ENV"]

API_HOST = "10.0.2.100"
API_PORT = 80
MAX_FILE_ROUNDS = 16
# Longest pause gcd may ask for between the rounds of a continued answer (gcqpeek -f).
MAX_MORE_WAIT_S = 10.0
# Written by gcd into every member of a virtual cluster (the headnode too, with COPPER_CLONE=0).
CLONE_ENV = "/etc/copper/clone.env"
# How often a waiting `gc clone` looks whether it now runs in a new clone.
FORK_POLL_S = 0.2


class CopperError(Exception):
    """gcd refused the request (4xx/5xx) or answered something that is not the protocol."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Unreachable(CopperError):
    """No answer from gcd: the channel is down or gcd is not running."""


class CommandFailed(CopperError):
    """A tool answered with a non-zero exit status (its stderr line is the message)."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class Result:
    __slots__ = ("stdout", "stderr", "exit_code", "clone_env")

    def __init__(self, stdout, stderr, exit_code, clone_env=None):
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        # Set when this is the copy of a `gc clone` call that woke up in a new clone.
        self.clone_env = clone_env

    def __repr__(self):
        return "Result(exit_code=%r, stdout=%r, stderr=%r)" % (self.exit_code, self.stdout, self.stderr)


def _groups():
    """The calling account's group names (gcd checks -W group_list against them)."""
    names = []
    for gid in sorted(set(os.getgroups()) | {os.getgid()}):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return names


def _account():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _read_clone_env(path=CLONE_ENV):
    """clone.env as a dict; {} when missing or not completely written (COPPER_VM is last)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return {}
    if not text.endswith("\n"):
        return {}
    env = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env if "COPPER_VM" in env else {}


class _NowAClone(Exception):
    def __init__(self, env):
        super().__init__("now a clone")
        self.env = env


def _wait_or_fork(conn, vm_before):
    """Wait for gcd's answer; in a new clone (whose copy of this connection is dead) return."""
    while True:
        readable, _, _ = select.select([conn.sock], [], [], FORK_POLL_S)
        if readable:
            return
        env = _read_clone_env()
        if env.get("COPPER_CLONE") == "1" and env.get("COPPER_VM") != vm_before:
            raise _NowAClone(env)


def _post(body, fork=False):
    # No timeout: a qsub may legitimately wait (e.g. -W block=true).
    vm_before = _read_clone_env().get("COPPER_VM") if fork else None
    conn = http.client.HTTPConnection(API_HOST, API_PORT, timeout=None)
    try:
        data = json.dumps(body).encode("utf-8")
        conn.request("POST", "/v1/cli", body=data, headers={"Content-Type": "application/json"})
        if fork:
            _wait_or_fork(conn, vm_before)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise Unreachable(str(e) or type(e).__name__) from e
    finally:
        conn.close()
    try:
        answer = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise CopperError("gcd answered HTTP %d with something that is not JSON" % resp.status, resp.status)
    if resp.status != 200:
        msg = answer.get("error") if isinstance(answer, dict) else None
        raise CopperError(msg or "gcd answered HTTP %d" % resp.status, resp.status)
    if not isinstance(answer, dict):
        raise CopperError("gcd answered a JSON value that is not an object", resp.status)
    return answer


def _read_file(cwd, name):
    if name == "-":
        # gcqsub with no script operand reads the script from stdin, unless stdin is a terminal.
        if sys.stdin is None or sys.stdin.isatty():
            raise FileNotFoundError(name)
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    path = name if os.path.isabs(name) else os.path.join(cwd, name)
    with open(path, "rb") as f:
        data = f.read()
    return data.decode("utf-8", errors="replace")


class _Keys:
    """The caller's terminal in raw mode during a terminal session (gcqexec ID alone)."""

    def __init__(self):
        self.saved = termios.tcgetattr(0)
        tty.setraw(0)

    def wait(self, seconds):
        """Keystrokes typed within `seconds` (returns at the first ones), base64; None if none."""
        ready, _, _ = select.select([0], [], [], seconds)
        if not ready:
            return None
        data = os.read(0, 65536)
        return base64.b64encode(data).decode("ascii") if data else None

    def restore(self):
        termios.tcsetattr(0, termios.TCSADRAIN, self.saved)


def terminal_size():
    """{"rows", "cols"} when stdin and stdout are a terminal (a shell can be opened), else None."""
    if not (os.isatty(0) and os.isatty(1)):
        return None
    try:
        size = os.get_terminal_size(1)
    except OSError:
        return {"rows": 24, "cols": 80}
    return {"rows": size.lines, "cols": size.columns}


def call(tool, argv, cwd=None, env=None, on_output=None, terminal=None):
    """Run one tool (gcqsub, gcqstat, ...) with argv through gcd and return its Result.

    An answer may come in rounds (gcqpeek -f follows a running job: gcd answers with
    "more": {"cursor": ..., "waitMs": ...} and is asked again with that cursor). With
    on_output(stdout, stderr), each round's text is handed over as it comes and the Result
    carries only the exit status; without it, the rounds are joined into the Result.
    terminal: the caller's terminal size (terminal_size()); gcqexec ID alone then opens a shell
    and the rounds carry keystrokes (the terminal is in raw mode until it ends).
    """
    raw = []  # the terminal in raw mode, once a session starts: restored however this ends
    try:
        return _call(tool, argv, cwd, env, on_output, terminal, raw)
    finally:
        for keys in raw:
            keys.restore()


def _call(tool, argv, cwd, env, on_output, terminal, raw):
    cwd = cwd if cwd is not None else os.getcwd()
    body = {
        "tool": tool,
        "argv": [str(a) for a in argv],
        "cwd": cwd,
        "env": dict(os.environ if env is None else env),
        "account": _account(),
        "groups": _groups(),
    }
    files = {}
    missing = []
    fork = tool == "gc" and bool(body["argv"]) and body["argv"][0] == "clone"
    if terminal is not None:
        body["terminal"] = terminal
    outs, errs = [], []
    file_rounds = 0
    interruptible = False  # the last answer allows Ctrl-C to be sent as a round (gcqsub -I waiting)
    while file_rounds <= MAX_FILE_ROUNDS:
        try:
            answer = _post(body, fork)
            body.pop("interrupt", None)
            interruptible = answer.get("interruptible") is True
        except KeyboardInterrupt:
            if not interruptible or body.get("interrupt"):
                raise
            body["interrupt"] = True
            continue
        except _NowAClone as child:
            # fork() semantics: this copy of the call returns in the new clone.
            env = child.env
            note = "gc clone: continuing in clone %s (id %s, generation %s) of %s\n" % (
                env.get("COPPER_CLUSTER_NAME", "?"), env.get("COPPER_CLONE_ID", "?"),
                env.get("COPPER_GENERATION", "?"), env.get("COPPER_HEADNODE", "?"))
            return Result("[]\n" if "--json" in body["argv"] else "", note, 0, env)
        need = answer.get("needFile")
        if need is None:
            code = answer.get("exitCode")
            if not isinstance(code, int):
                raise CopperError("gcd's answer has no exitCode")
            out, err = str(answer.get("stdout", "")), str(answer.get("stderr", ""))
            more = answer.get("more")
            if raw and not (isinstance(more, dict) and isinstance(more.get("cursor"), str)):
                # The session is over: the terminal leaves raw mode before the last lines.
                raw.pop().restore()
            if on_output is not None:
                on_output(out, err)
                out, err = "", ""
            if isinstance(more, dict) and isinstance(more.get("cursor"), str):
                outs.append(out)
                errs.append(err)
                body["cursor"] = more["cursor"]
                body.pop("input", None)
                wait = more.get("waitMs")
                wait = min(wait / 1000.0, MAX_MORE_WAIT_S) if isinstance(wait, (int, float)) and wait > 0 else 0
                if answer.get("terminal") is True and terminal is not None:
                    if not raw:
                        raw.append(_Keys())
                    typed = raw[0].wait(wait)
                    if typed:
                        body["input"] = typed
                elif interruptible:
                    # gcqsub -I waiting for its job: Ctrl-C asks gcd (which deletes the job) at once.
                    try:
                        if wait:
                            time.sleep(wait)
                    except KeyboardInterrupt:
                        body["interrupt"] = True
                elif wait:
                    time.sleep(wait)
                continue
            return Result("".join(outs) + out, "".join(errs) + err, code)
        file_rounds += 1
        if not isinstance(need, str) or need in files or need in missing:
            raise CopperError("gcd asked for file %r again" % (need,))
        try:
            files[need] = _read_file(cwd, need)
        except FileNotFoundError:
            # gcd decides: `gcqsub python3 prog.py` names a command, not a script file.
            missing.append(need)
            body["missing"] = missing
            continue
        except OSError as e:
            raise CopperError("cannot read %s: %s" % (need, e.strerror or e)) from e
        body["files"] = files
    raise CopperError("gcd asked for more than %d files" % MAX_FILE_ROUNDS)


def qsub(*argv, **kw):
    return call("gcqsub", argv, **kw)


def qstat(*argv, **kw):
    return call("gcqstat", argv, **kw)


def qdel(*argv, **kw):
    return call("gcqdel", argv, **kw)


def qhold(*argv, **kw):
    return call("gcqhold", argv, **kw)


def qrls(*argv, **kw):
    return call("gcqrls", argv, **kw)


def qalter(*argv, **kw):
    return call("gcqalter", argv, **kw)


def gc(*argv, **kw):
    return call("gc", argv, **kw)


def _checked(argv):
    r = call("gc", argv)
    if r.exit_code != 0:
        raise CommandFailed(r.stderr.strip() or "gc %s failed with status %d" % (argv[0], r.exit_code), r.exit_code)
    return r


def clone(n, ttl=None):
    """Fork this VM into n running clones, like os.fork().

    In the caller: the list of new clones (dicts: id, name, generation, address, ...).
    In each new clone the same call returns [] (whoami() says which clone it is).
    ttl: seconds (or "15m", "2h", "HH:MM:SS") after which gcd destroys them.
    Raises CommandFailed (e.g. over the quota: nothing was created).
    """
    argv = ["clone", str(n), "--json"]
    if ttl is not None:
        argv += ["--ttl", str(ttl)]
    r = _checked(argv)
    if r.clone_env is not None:
        return []
    return json.loads(r.stdout)


def clones():
    """The clones of this VM's cluster (dicts: id, name, generation, parent, state, address, ...)."""
    return json.loads(_checked(["clones", "--json"]).stdout)


def kill(*ids, generation=None, all=False):
    """Destroy clones by id, or every clone of a generation, or all; returns the killed ones."""
    if all:
        argv = ["kill", "--all"]
    elif generation is not None:
        argv = ["kill", "--generation", str(generation)]
    else:
        argv = ["kill"] + [str(i) for i in ids]
    return json.loads(_checked(argv + ["--json"]).stdout)


def whoami():
    """This VM in its cluster: clone.env as a dict, or gcd's answer when the file is not there."""
    env = _read_clone_env()
    if env:
        return env
    w = json.loads(_checked(["whoami", "--json"]).stdout)
    return {
        "COPPER_CLONE": "1" if w["kind"] == "clone" else "0",
        "COPPER_CLONE_ID": str(w["id"]),
        "COPPER_GENERATION": str(w["generation"]),
        "COPPER_HEADNODE": w["headnode"],
        "COPPER_CLUSTER_NAME": w["name"],
        "COPPER_CLUSTER_IP": w.get("address", ""),
    }
