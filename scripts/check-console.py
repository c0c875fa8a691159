#!/usr/bin/python3
"""Part of `make test`: the console (console/, docs/console.md) in a real browser, headless
Chromium driven by Selenium, against the real stack (kv-stored, kv-fcgi, kv-ws, nginx with the
shipped site), with an access file: anonymous clients may read and watch, a token may do all.

It loads the console, browses by prefix, edits a value while another client changes it (the
conflict is shown, nothing is overwritten), saves with and without a TTL (the server's error
shown verbatim), is refused without a token and allowed with one, watches a value change from
an HTTP write and a key expire, survives a restart of kv-ws (the page resumes and says so),
and is used with the keyboard and on a narrow screen. Screenshots of each step are saved in
.build/console-screenshots/ (CONSOLE_ARTIFACTS to put them elsewhere).

Usage: scripts/check-console.py BIN_DIR   (Debian's python3, for its python3-selenium package)
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.environ.get("CONSOLE_ARTIFACTS", os.path.join(ROOT, ".build/console-screenshots"))
TOKEN = "kv_console-check-" + os.urandom(12).hex()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The daemons and nginx in a temp folder that nginx's workers (nobody, as root) can read."""

    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="kvconsole-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.group = ["--socket-group", "nogroup"] if os.getuid() == 0 else []
        # The console's files where nobody can read them (this checkout may be in a 0700 folder).
        self.console = os.path.join(self.dir, "console")
        shutil.copytree(os.path.join(ROOT, "console"), self.console)
        for folder, _, files in os.walk(self.console):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        self.access = os.path.join(self.dir, "access.json")
        with open(self.access, "w") as f:
            json.dump({"anonymous": {"read": [""], "subscribe": [""]},
                       "tokens": [{"id": "console-admin", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "rules": {"all": [""]}}]}, f)
        self.log = open(os.path.join(self.dir, "stack.log"), "w+")
        self.processes = {}
        self.start("kv-stored", [f"{self.bin}/kv-stored", "--socket", self.sock("kv-stored"), "--data-dir", os.path.join(self.dir, "data")] + self.group)
        self.start("kv-fcgi", [f"{self.bin}/kv-fcgi", "--socket", self.sock("kv-fcgi"), "--store", self.sock("kv-stored"), "--access-file", self.access] + self.group)
        self.start_ws()
        conf = subprocess.run([os.path.join(ROOT, "scripts/nginx-local-conf.sh"), self.dir, str(self.port)], check=True, capture_output=True, text=True,
                              env={**os.environ, "CONSOLE_DIR": self.console}).stdout
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.start("nginx", [nginx, "-p", os.path.join(self.dir, "nginx"), "-c", os.path.join(self.dir, "nginx.conf"), "-g", "daemon off;"], wait=False)
        until(lambda: http(self.port, "GET", "/healthz")[0] == 200, "the stack to answer")

    def sock(self, name):
        return os.path.join(self.dir, f"{name}.sock")

    def start(self, name, argv, wait=True):
        if wait and os.path.exists(argv[2]):
            os.unlink(argv[2])
        self.processes[name] = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            until(lambda: os.path.exists(argv[2]), f"{name}'s socket")

    def start_ws(self):
        self.start("kv-ws", [f"{self.bin}/kv-ws", "--socket", self.sock("kv-ws"), "--store", self.sock("kv-stored"), "--access-file", self.access] + self.group)

    def stop_ws(self):
        process = self.processes.pop("kv-ws")
        process.terminate()
        process.wait(10)

    def stop(self):
        for process in reversed(list(self.processes.values())):
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.seek(0)
        return self.log.read()


def http(port, method, path, body=None, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body.encode() if body is not None else None,
                                     method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()
    except OSError:
        return 0, {}, ""


def until(condition, what, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Check:
    def __init__(self, driver, port):
        self.driver, self.port = driver, port
        self.shots = 0

    def el(self, id):
        return self.driver.find_element(By.ID, id)

    def wait(self, condition, what, seconds=15):
        try:
            # The list is redrawn on every change: an element found a moment ago may be gone.
            WebDriverWait(self.driver, seconds, poll_frequency=0.05, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]).until(
                lambda d: condition())
        except TimeoutException:
            self.shot("failed")
            raise AssertionError(f"timed out waiting for {what}; page status: {self.el('connection').text!r}, "
                                 f"message: {self.el('message').text!r}, key status: {self.el('key-status').text!r}")

    def shot(self, name):
        self.shots += 1
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.driver.save_screenshot(os.path.join(ARTIFACTS, f"{self.shots:02d}-{name}.png"))

    def listed(self):
        return [b.get_attribute("data-key") for b in self.driver.find_elements(By.CSS_SELECTOR, "#keys button.key")]

    def key_button(self, key):
        return self.driver.find_element(By.CSS_SELECTOR, f'#keys button.key[data-key="{key}"]')

    def message(self):
        return self.el("message").text

    def set_value(self, text):
        area = self.el("value")
        area.clear()
        area.send_keys(text)

    def browse(self, prefix):
        field = self.el("prefix")
        field.clear()
        field.send_keys(prefix, Keys.ENTER)

    def state(self):
        return self.el("connection").get_attribute("data-state")


def run(check, stack):
    port = stack.port
    admin = {"Authorization": f"Bearer {TOKEN}"}
    for key, value in [("app/a", '{"n":1}'), ("app/b", '[1,2,3]'), ("app/big", '{"id":12345678901234567890123}'), ("other/x", '"x"')]:
        status = http(port, "POST", "/storage/" + urllib.request.quote(key, safe=""), f'{{"value":{value}}}', admin)[0]
        assert status == 202, f"seeding {key}: {status}"

    # Load: every key listed, the watch live.
    check.driver.get(f"http://127.0.0.1:{port}/")
    check.wait(lambda: check.state() == "live", "the watch to be live")
    check.wait(lambda: check.listed() == ["app/a", "app/b", "app/big", "other/x"], "every key to be listed")
    check.shot("loaded")

    # Browse by prefix; see a value formatted, with its revision; numbers keep every digit.
    check.browse("app/")
    check.wait(lambda: check.listed() == ["app/a", "app/b", "app/big"], "the keys under app/")
    check.key_button("app/big").click()
    check.wait(lambda: "12345678901234567890123" in check.el("value").get_attribute("value"), "a large integer shown exactly")
    check.key_button("app/a").click()
    check.wait(lambda: check.el("value").get_attribute("value") == '{\n  "n": 1\n}', "app/a's value, formatted")
    rev = int(check.el("key-rev").text)
    check.shot("browsed")

    # Without a token, a save is refused with the server's words.
    check.set_value('{"n": 2}')
    check.el("save").click()
    check.wait(lambda: "clients without a token may not write key" in check.message(), "the refusal to be shown")
    assert http(port, "GET", "/storage/app%2Fa")[2] == '{"value":{"n":1}}', "a refused save changed the value"

    # With the token (kept for this tab only), edit while another client writes: a conflict.
    token = check.el("token")
    token.send_keys(TOKEN, Keys.ENTER)
    check.wait(lambda: check.state() == "live" and "Using the token" in check.message(), "the token to be taken")
    check.key_button("app/a").click()
    check.wait(lambda: check.el("key-rev").text == str(rev), "app/a again")
    check.set_value('{"n": 2}')
    status, headers, _ = http(port, "POST", "/storage/app%2Fa", '{"value":{"n":99}}', admin)
    assert status == 202
    other = int(headers["ETag"].strip('"'))
    check.wait(lambda: "changed on the server" in check.el("key-status").text, "the concurrent change to be shown")
    check.el("save").click()
    check.wait(lambda: f"changed on the server meanwhile (now revision {other})" in check.message(), "the conflict to be shown")
    assert http(port, "GET", "/storage/app%2Fa")[2] == '{"value":{"n":99}}', "the conflicting save overwrote the other write"
    check.shot("conflict")

    # Reload, edit, save; a TTL in the API's syntax, and a bad one refused verbatim.
    check.el("reload").click()
    check.wait(lambda: check.el("value").get_attribute("value") == '{\n  "n": 99\n}', "the server's value after Reload")
    check.set_value('{"n": 100}')
    ttl = check.el("ttl")
    ttl.send_keys("10 parsecs")
    check.el("save").click()
    check.wait(lambda: check.message() == 'ttl: unknown unit "parsecs"', "the server's TTL error, verbatim")
    ttl.clear()
    ttl.send_keys("1h")
    check.el("save").click()
    check.wait(lambda: check.message().startswith("Saved app/a"), "the save")
    assert http(port, "GET", "/storage/app%2Fa")[2] == '{"value":{"n":100}}'
    check.wait(lambda: "T" in check.el("key-expires").text, "the deadline shown")
    check.shot("saved")

    # Watch: a change from an HTTP write appears; a key with a short TTL appears, then expires.
    http(port, "POST", "/storage/app%2Fb", '{"value":[4,5]}', admin)
    check.wait(lambda: "[4,5]" in check.key_button("app/b").text, "app/b's new value in the list")
    http(port, "POST", "/storage/app%2Fbrief", '{"value":"soon gone","ttl":"2s"}', admin)
    check.wait(lambda: "app/brief" in check.listed(), "a new key to appear")
    check.key_button("app/brief").click()
    check.wait(lambda: "in " in check.el("key-expires").text, "its deadline")
    check.wait(lambda: check.key_button("app/brief").get_attribute("data-gone") == "expired", "the key to be shown expired", seconds=10)
    check.wait(lambda: check.el("key-status").text.startswith("expired"), "the editor to say so")
    check.shot("expired")

    # kv-ws restarts: the page says it is reconnecting, then resumes; a change made meanwhile arrives.
    stack.stop_ws()
    check.wait(lambda: check.state() == "reconnecting", "the page to show the lost connection")
    check.shot("reconnecting")
    http(port, "POST", "/storage/app%2Fa", '{"value":{"n":"while away"}}', admin)
    stack.start_ws()
    check.wait(lambda: check.state() == "resumed" and "resumed from revision" in check.el("connection").text, "the resumption to be shown", seconds=30)
    check.key_button("app/a").click()
    check.wait(lambda: '"while away"' in check.el("value").get_attribute("value"), "the change made while away")
    check.shot("resumed")

    # The keyboard alone: Tab to a key, Enter opens it; Delete with the keyboard too.
    check.key_button("app/b").send_keys(Keys.ENTER)
    check.wait(lambda: check.el("key-name").text == "app/b", "app/b opened with Enter")
    check.el("delete").send_keys(Keys.ENTER)
    check.wait(lambda: check.message() == "Deleted app/b.", "the delete")
    check.wait(lambda: check.key_button("app/b").get_attribute("data-gone") == "deleted", "app/b shown deleted")
    assert http(port, "GET", "/storage/app%2Fb")[0] == 204
    for field in ("prefix", "token", "value", "ttl", "new-key"):
        label = check.driver.find_element(By.CSS_SELECTOR, f'label[for="{field}"]')
        assert label.text, f"the {field} field has no label"

    # A narrow screen: the list and the editor stack, nothing wider than the window.
    check.driver.set_window_size(400, 900)
    check.wait(lambda: check.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), "no horizontal scrolling")
    browse = check.driver.find_element(By.CSS_SELECTOR, "section.browse").rect
    detail = check.driver.find_element(By.CSS_SELECTOR, "section.detail").rect
    assert detail["y"] >= browse["y"] + browse["height"] - 1, "the editor is not below the list on a narrow screen"
    check.shot("narrow")


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/release")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    stack = Stack(bin_dir)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    check = Check(driver, stack.port)
    try:
        run(check, stack)
        # Refused requests are the test's own doing (the network log lists them); a script error is not.
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE" and entry["source"] != "network"]
        assert not errors, f"the page logged errors: {errors}"
        print(f"check-console: ok (Chromium {driver.capabilities.get('browserVersion')}: loaded, browsed, a conflict shown, "
              f"TTL errors verbatim, token refusal and grant, live change and expiry, resumed after kv-ws restarted, "
              f"keyboard, narrow screen; {check.shots} screenshots in {ARTIFACTS})")
    except BaseException:
        log = stack.stop()
        print(f"check-console: FAIL; the stack's output:\n{log[-5000:]}", file=sys.stderr)
        raise
    finally:
        driver.quit()
    stack.stop()
    shutil.rmtree(stack.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
