#!/usr/bin/env python3
"""Part of `make test`: what the documentation tells people to run, run.

* Starts `make run`'s stack (scripts/run-local.sh, release binaries) on a free port, as an
  ordinary user (nobody, when the test runs as root): `make run` needs no root.
* Replays every ```console block of README.md's tour against it: a `$ ` line is a command (run
  by bash, with 8080 replaced by the stack's port), the lines after it are its expected output,
  each of which must appear in order in what the command printed (so headers such as Date may
  be left out of the README, but nothing shown may be wrong). An interactive client
  (`python3 -m websockets`) gets the `> ` lines on its standard input, one at a time, and its
  `< ` lines are expected in order.
* Runs docs/websocket.md's JavaScript recipe in Node against the stack, with the browser's
  WebSocket API, and checks it follows writes, a disconnection with changes missed meanwhile,
  and a deletion.
* Puts every ```nginx snippet of docs/ into the shipped site's server block and runs `nginx -t`
  (a snippet for a location the site has takes the place of the site's block for it).

Usage: scripts/check-docs.py BIN_DIR
"""
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSI = re.compile(r"\x1b(\[[0-9;]*[A-Za-z]|[78])")
failures = []
RUN_FILES = "run"  # where the stack under test keeps its sockets (set in main)


def fail(message):
    failures.append(message)
    print(f"check-docs: FAIL: {message}", file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blocks(path, language):
    """(line number, lines) of every ```language block in a Markdown file."""
    found, current, start = [], None, 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            stripped = line.rstrip("\n")
            if current is None and stripped.strip() == "```" + language:
                current, start = [], number
            elif current is not None and stripped.strip() == "```":
                found.append((start, current))
                current = None
            elif current is not None:
                current.append(stripped)
    return found


def in_order(expected, actual):
    """The first expected line not found, in order, among the actual lines (None: all found)."""
    position = 0
    for line in expected:
        while position < len(actual) and actual[position] != line:
            position += 1
        if position == len(actual):
            return line
        position += 1
    return None


def clean(output):
    lines = []
    for raw in ANSI.sub("", output).replace("\r", "").split("\n"):
        line = raw
        while line.startswith("> "):  # input()'s prompts, printed when stdin is not a terminal
            line = line[2:]
        lines.append(line.rstrip() if line.strip() else "")
    return lines


def debian_user_env():
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tempfile.gettempdir()}


def run_command(command, inputs, expected, port, where):
    # The README speaks from the checkout, where `make run` keeps its files in run/.
    command = command.replace("8080", str(port)).replace(" run/", f" {RUN_FILES}/")
    wanted = [line.replace("8080", str(port)) for line in expected]
    if inputs:
        process = subprocess.Popen(["bash", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=debian_user_env())
        received = bytearray()

        def read_for(seconds, until_expected=False):
            deadline = time.time() + seconds
            while time.time() < deadline:
                ready, _, _ = select.select([process.stdout], [], [], 0.05)
                if ready:
                    chunk = os.read(process.stdout.fileno(), 65536)
                    if not chunk:
                        return
                    received.extend(chunk)
                if until_expected and in_order(wanted, clean(received.decode(errors="replace"))) is None:
                    return

        read_for(1)  # connected before the first line, as a person would be
        for line in inputs:
            process.stdin.write((line.replace("8080", str(port)) + "\n").encode())
            process.stdin.flush()
            read_for(0.3)
        # The expected replies may take a while (an expiry): up to 10 s, then the session ends
        # the way a person ends it, with end of input.
        read_for(10, until_expected=True)
        process.stdin.close()
        read_for(10)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        output = received.decode(errors="replace")
    else:
        done = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=debian_user_env(), text=True, timeout=30)
        output = done.stdout
    missing = in_order(wanted, clean(output))
    if missing is not None:
        fail(f"{where}: `{command}`: expected the line {missing!r}; the command printed:\n{output}")


def replay_readme(port):
    count = 0
    for start, lines in blocks(os.path.join(ROOT, "README.md"), "console"):
        command, inputs, expected, command_line = None, [], [], start
        for offset, line in enumerate(lines + ["$ "], 1):
            if line.startswith("$ "):
                if command:
                    run_command(command, inputs, expected, port, f"README.md:{command_line}")
                    count += 1
                command, inputs, expected, command_line = line[2:], [], [], start + offset
            elif line.startswith("> "):
                inputs.append(line[2:])
            elif line.strip():
                expected.append(line.rstrip())
    if count == 0:
        fail("README.md has no ```console block to replay")
    return count


RECIPE_HARNESS = r"""
// The test around docs/websocket.md's recipe: WebSocket is the browser's API (Node's own, or
// the ws package for an older Node), every socket the recipe opens is kept so the test can
// cut the connection, and `fetch` writes over HTTP as another client would.
if (typeof WebSocket !== "function") globalThis.WebSocket = require("ws");
const sockets = [];
globalThis.WebSocket = class extends globalThis.WebSocket {
  constructor(...args) { super(...args); sockets.push(this); }
};
const base = "http://127.0.0.1:PORT/storage/k";
const until = async (what, test) => {
  for (let i = 0; i < 100; i++) { if (test()) return; await new Promise((r) => setTimeout(r, 50)); }
  console.error(`recipe: timed out waiting for ${what}; state.k = ${JSON.stringify(state.k)}`);
  process.exit(1);
};
const post = (value) => fetch(base, { method: "POST", body: JSON.stringify({ value }) });
setTimeout(async () => {
  await post({ n: 1 });
  await until("the first write", () => state.k && state.k.n === 1);
  sockets[sockets.length - 1].close();                 // the connection drops …
  await post({ n: 2 }); await post({ n: 3 });          // … and two changes happen meanwhile
  await until("the changes missed while disconnected", () => state.k && state.k.n === 3);
  if (sockets.length < 2) { console.error("recipe: did not reconnect"); process.exit(1); }
  await fetch(base, { method: "DELETE" });
  await until("the deletion", () => state.k === undefined);
  console.log(`recipe: ok (${sockets.length} connections)`);
  process.exit(0);
}, 500);
"""


def run_recipe(port):
    recipes = [lines for _, lines in blocks(os.path.join(ROOT, "docs/websocket.md"), "js")
               if any("function connect" in l for l in lines)]
    if not recipes:
        return fail("docs/websocket.md: the reliable subscriber recipe (a ```js block) is gone")
    source = "\n".join(recipes[0]).replace("ws://127.0.0.1:8080/ws", f"ws://127.0.0.1:{port}/ws")
    harness = RECIPE_HARNESS.replace("PORT", str(port))
    # The harness's wrapper must be in place before the recipe's first connect(): run the
    # wrapper first, then the recipe, then the checks.
    wrapper_end = harness.index("const base")
    program = harness[:wrapper_end] + "\n" + source + "\n" + harness[wrapper_end:]
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as f:
        f.write(program)
    node = ["node"]
    if subprocess.run(["node", "--experimental-websocket", "-e", "0"], capture_output=True).returncode == 0:
        node.append("--experimental-websocket")
    env = dict(os.environ, NODE_PATH="/usr/share/nodejs:/usr/lib/nodejs", NODE_NO_WARNINGS="1")
    done = subprocess.run(node + [f.name], capture_output=True, text=True, timeout=60, env=env)
    os.unlink(f.name)
    if done.returncode != 0 or "recipe: ok" not in done.stdout:
        fail(f"docs/websocket.md's recipe in Node: {done.stdout}{done.stderr}")


def check_nginx_snippets():
    site = open(os.path.join(ROOT, "nginx/kvserver.conf"), encoding="utf-8").read()
    work = tempfile.mkdtemp(prefix="kvdocs-nginx-")
    # The TLS snippet names Let's Encrypt's files: a throwaway certificate stands in for them.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kv.example.org",
                    "-keyout", f"{work}/privkey.pem", "-out", f"{work}/fullchain.pem", "-days", "1"],
                   check=True, capture_output=True)
    count = 0
    for name in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        if not name.endswith(".md"):
            continue
        for start, lines in blocks(os.path.join(ROOT, "docs", name), "nginx"):
            snippet = "\n".join(lines).replace("/etc/letsencrypt/live/kv.example.org", work)
            marker = "server_name _;"
            conf = site
            # A snippet for a location the site has replaces the site's block (as the docs say).
            first = snippet.strip().split("{", 1)[0].strip()
            if first.startswith("location ") and f"\n    {first} {{\n" in conf:
                start = conf.index(f"\n    {first} {{\n")
                end = conf.index("\n    }\n", start) + len("\n    }\n")
                conf = conf[:start] + "\n" + conf[end:]
            conf = conf.replace(marker, marker + "\n" + snippet, 1)
            with open(f"{work}/kvserver.conf", "w") as f:
                f.write(conf)
            done = subprocess.run([os.path.join(ROOT, "scripts/nginx-check-site.sh"), f"{work}/kvserver.conf"],
                                  capture_output=True, text=True)
            count += 1
            if done.returncode != 0:
                fail(f"docs/{name}:{start}: the nginx snippet fails nginx -t in the site's server block: {done.stderr}")
    shutil.rmtree(work, ignore_errors=True)
    return count


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/release")
    snippets = check_nginx_snippets()

    port = free_port()
    run_dir = tempfile.mkdtemp(prefix="kvdocs-")
    as_user = {}
    who = pwd.getpwuid(os.getuid()).pw_name
    run_script = os.path.join(ROOT, "scripts/run-local.sh")
    if os.getuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(run_dir, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        who = "nobody"
        # nobody may not be able to reach this checkout (a clone under /root, or in a 0700
        # temp dir): it gets its own copy of what `make run` uses, as a user's checkout would be.
        tree = os.path.join(run_dir, "checkout")
        for part in ("scripts/run-local.sh", "scripts/nginx-local-conf.sh", "nginx/kvserver.conf"):
            os.makedirs(os.path.dirname(os.path.join(tree, part)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, part), os.path.join(tree, part))
        shutil.copytree(os.path.join(ROOT, "console"), os.path.join(tree, "console"))
        os.makedirs(os.path.join(tree, "bin"))
        for daemon in ("kv-stored", "kv-fcgi", "kv-ws"):
            shutil.copy2(os.path.join(bin_dir, daemon), os.path.join(tree, "bin", daemon))
        for directory, _, _ in os.walk(tree):
            os.chmod(directory, 0o755)
        run_script, bin_dir = os.path.join(tree, "scripts/run-local.sh"), os.path.join(tree, "bin")
    global RUN_FILES
    RUN_FILES = f"{run_dir}/run"
    log = open(os.path.join(tempfile.gettempdir(), f"kvdocs-stack-{port}.log"), "w+")
    stack = subprocess.Popen([run_script, f"{run_dir}/run", str(port), "", "", bin_dir],
                             stdout=log, stderr=subprocess.STDOUT, env=debian_user_env(), **as_user)
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if stack.poll() is not None:
                break
            time.sleep(0.1)
        else:
            fail("make run's stack did not answer /healthz within 30 s")
        if stack.poll() is not None:
            fail(f"make run's stack (as {who}) exited with {stack.returncode}")
        else:
            commands = replay_readme(port)
            run_recipe(port)
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stack.kill()
        log.seek(0)
        stack_output = log.read()
        log.close()
        os.unlink(log.name)
        shutil.rmtree(run_dir, ignore_errors=True)
    if failures:
        print(f"check-docs: the stack's output:\n{stack_output[-4000:]}", file=sys.stderr)
        sys.exit(1)
    print(f"check-docs: ok (make run's stack as {who}; README: {commands} commands replayed; "
          f"the JavaScript recipe followed writes, a reconnection and a deletion; {snippets} nginx snippets passed nginx -t)")


if __name__ == "__main__":
    main()
