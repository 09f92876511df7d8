"""Copper from Python inside a headnode or clone.

    import copper
    r = copper.qsub("-N", "sweep", "--", "python3", "sim.py")
    print(r.stdout, r.exit_code)

Every function sends the same request the command-line tools send (POST /v1/cli to gcd at
10.0.2.100:80, see docs/PROTOCOL.md) and returns a Result; nothing is printed. gcd knows who
is calling from the channel the request arrives on, not from anything in the request.
"""
import http.client
import json
import os
import pwd

__all__ = ["Result", "CopperError", "Unreachable", "call", "qsub", "qstat", "qdel",
           "qhold", "qrls", "qalter", "gc", "API_HOST", "API_PORT"]

API_HOST = "10.0.2.100"
API_PORT = 80
MAX_FILE_ROUNDS = 16


class CopperError(Exception):
    """gcd refused the request (4xx/5xx) or answered something that is not the protocol."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Unreachable(CopperError):
    """No answer from gcd: the channel is down or gcd is not running."""


class Result:
    __slots__ = ("stdout", "stderr", "exit_code")

    def __init__(self, stdout, stderr, exit_code):
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code

    def __repr__(self):
        return "Result(exit_code=%r, stdout=%r, stderr=%r)" % (self.exit_code, self.stdout, self.stderr)


def _account():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _post(body):
    # No timeout: a qsub may legitimately wait (e.g. -W block=true).
    conn = http.client.HTTPConnection(API_HOST, API_PORT, timeout=None)
    try:
        data = json.dumps(body).encode("utf-8")
        conn.request("POST", "/v1/cli", body=data, headers={"Content-Type": "application/json"})
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
    path = name if os.path.isabs(name) else os.path.join(cwd, name)
    with open(path, "rb") as f:
        data = f.read()
    return data.decode("utf-8", errors="replace")


def call(tool, argv, cwd=None, env=None):
    """Run one tool (gcqsub, gcqstat, ...) with argv through gcd and return its Result."""
    cwd = cwd if cwd is not None else os.getcwd()
    body = {
        "tool": tool,
        "argv": [str(a) for a in argv],
        "cwd": cwd,
        "env": dict(os.environ if env is None else env),
        "account": _account(),
    }
    files = {}
    missing = []
    for _ in range(MAX_FILE_ROUNDS):
        answer = _post(body)
        need = answer.get("needFile")
        if need is None:
            code = answer.get("exitCode")
            if not isinstance(code, int):
                raise CopperError("gcd's answer has no exitCode")
            return Result(str(answer.get("stdout", "")), str(answer.get("stderr", "")), code)
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
