"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium, against `gitkube run` on a copy of
manifests-example/ with the process runtime:

- the page shows the resource tree of the example: each object in git with its
  children, sync and health badges;
- a scale change pushed to git (and announced by a signed webhook) shows its new
  pods without a reload;
- a pod's page shows its log, and new lines arrive while it is open;
- signed in with the API token, Sync now adds a history entry for a commit that
  was pushed without a webhook, and its Diff shows what the sync applied;
- every view passes axe-core (vendored under tests/ui/vendor) with no serious or
  critical violation, and the tree is usable from the keyboard.

Screenshots go to test-artifacts/ui/ (gitignored).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.git import GitRemote
from tests.fixtures.require import missing, require_binary
from tests.operator.helpers import (
    REPO_ROOT,
    SECRET,
    free_port,
    github_push,
    gitkube_env,
    kill_processes_under,
    kill_tree,
    spawn_gitkube,
)

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
TOKEN = "dashboard-token-for-tests"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WAIT = 60.0  # seconds; the machine is shared and busy


def chrome(window: str = "1280,800") -> Any:
    """A fresh headless Chromium with its own profile, or a skip (a failure in CI)."""
    chromium = shutil.which("chromium") or require_binary(
        "chromium", "apt-get install chromium chromium-driver"
    )
    driver_path = require_binary("chromedriver", "apt-get install chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium", "pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="gitkube-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={window}")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver._gitkube_profile = profile  # type: ignore[attr-defined]
    return driver


def quit_chrome(driver: Any) -> None:
    with contextlib.suppress(Exception):
        driver.quit()
    shutil.rmtree(driver._gitkube_profile, ignore_errors=True)


def wait_for(driver: Any, condition: Any, what: str, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # the page re-renders as the cluster changes: an element found a moment
        # ago may be gone, and the condition is tried again on the new one
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(lambda d: condition(d))
    except TimeoutException:
        shot(driver, "failed-" + what.replace(" ", "-")[:40])
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


class Cluster:
    def __init__(self, root: Path) -> None:
        require_binary("git", "install git")
        self.remote = GitRemote(root / "repo")
        shutil.copytree(REPO_ROOT / "manifests-example", self.remote.work / "manifests-example")
        self.revision = self.remote.commit_and_push("the example app")
        self.state = root / "state"
        token_file = root / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / "gitkube.log"
        args = [
            "run", "--repo", self.remote.url, "--path", "manifests-example",
            "--runtime", "process", "--state-dir", str(self.state),
            "--listen", f"127.0.0.1:{self.port}", "--api-token-file", str(token_file),
            "--interval", "10m", "--no-writeback",
            # the example's Service port 8080 may be taken on 127.0.0.1 by another gitkube
            "--proxy-address", f"127.{random.randint(2, 250)}.{random.randint(2, 250)}.1",
        ]  # fmt: skip
        # pushes reach it by webhook or Sync now only (no ref watching)
        env = gitkube_env(GITKUBE_WEBHOOK_SECRET=SECRET, GITKUBE_WATCH="false")
        self.process: subprocess.Popen[bytes] = spawn_gitkube(args, log=self.log, env=env)
        self.wait_listening()

    def wait_listening(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gitkube run exited:\n{self.log.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.base + "/healthz", timeout=2),
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"gitkube run did not listen:\n{self.log.read_text()[-3000:]}")

    def webhook(self, revision: str) -> None:
        body, headers = github_push("main", revision)
        request = urllib.request.Request(
            self.base + "/hooks/github", data=body, headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status in (200, 202), resp.read()

    def stop(self) -> None:
        kill_tree(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(self.process.pid)
            self.process.wait(timeout=10)
        kill_processes_under(self.state)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dashboard"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def browser(cluster: Cluster) -> Iterator[Any]:
    driver = chrome()
    try:
        yield driver
    finally:
        quit_chrome(driver)


def tree_names(driver: Any) -> list[str]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#tree .row .nm')].map(e => e.textContent)"
        )
    )


def open_view(driver: Any, cluster: Cluster, hash_: str) -> None:
    if not driver.current_url.startswith(cluster.base):
        driver.get(cluster.base + "/" + hash_)
    else:
        driver.execute_script("location.hash = arguments[0]", hash_)


def test_the_page_shows_the_tree_of_the_example(cluster: Cluster, browser: Any) -> None:
    open_view(browser, cluster, "#/tree")

    def example_shown(d: Any) -> bool:
        names = tree_names(d)
        # web-<template hash>-<suffix>: the Deployment's pods (its ReplicaSet is web-<hash>)
        web_pods = {n for n in names if re.fullmatch(r"default/web-[a-z0-9]+-[a-z0-9]+", n)}
        return "default/web" in names and len(web_pods) == 3

    wait_for(browser, example_shown, "the example's objects in the tree")

    def rc_row(d: Any) -> str:
        rows = d.execute_script(
            "return [...document.querySelectorAll('#tree .row')]"
            ".map(e => [e.querySelector('.kind').title, e.textContent])"
        )
        return next((text for kind, text in rows if kind == "Deployment"), "")

    # Progressing (with why) until the probes pass, then Healthy, without a reload
    rc = wait_for(browser, lambda d: "Healthy" in rc_row(d) and rc_row(d), "the Deployment Healthy")
    assert "Synced" in rc and "manifests-example/web.yaml" in rc
    kinds = browser.execute_script(
        "return [...document.querySelectorAll('#tree .row .kind')].map(e => e.title)"
    )
    # git's objects with their children: Deployment -> ReplicaSet -> pods,
    # Service -> Endpoints -> pods
    assert {"Deployment", "ReplicaSet", "Service", "Endpoints", "Pod"} <= set(kinds)
    wait_for(
        browser,
        lambda d: (
            "Healthy" in d.execute_script("return document.getElementById('summary').textContent")
        ),
        "the health badge",
    )
    shot(browser, "tree")
    open_view(browser, cluster, "#/overview")
    wait_for(
        browser,
        lambda d: "the example app" in d.find_element("id", "overview").text,
        "the commit message in the overview",
    )
    shot(browser, "overview")
    open_view(browser, cluster, "#/nodes")
    wait_for(browser, lambda d: "CPU" in d.find_element("id", "nodes").text, "the nodes")
    shot(browser, "nodes")


def test_a_scale_change_shows_new_pods_without_a_reload(cluster: Cluster, browser: Any) -> None:
    open_view(browser, cluster, "#/tree")
    wait_for(browser, lambda d: "default/web" in tree_names(d), "the tree")
    browser.execute_script("window.__noReload = 'still here'")
    web = cluster.remote.work / "manifests-example" / "web.yaml"
    web.write_text(web.read_text().replace("replicas: 3", "replicas: 5"))
    revision = cluster.remote.commit_and_push("scale web to 5")
    cluster.webhook(revision)

    def five(d: Any) -> bool:
        return len({n for n in tree_names(d) if n.startswith("default/web-")}) == 5

    wait_for(browser, five, "5 web pods in the tree")
    assert browser.execute_script("return window.__noReload") == "still here"
    wait_for(
        browser,
        lambda d: revision[:12] in d.find_element("id", "summary").text,
        "the new revision in the header",
    )
    shot(browser, "scaled")


def test_a_pod_shows_its_log_lines_as_they_arrive(cluster: Cluster, browser: Any) -> None:
    open_view(browser, cluster, "#/tree")
    wait_for(browser, lambda d: "default/web" in tree_names(d), "the tree")
    clicked: list[str] = []

    def open_pod(d: Any) -> bool:
        # found and clicked in one try: the tree re-renders as pods change
        for link in d.find_elements("css selector", "#tree .row a.nm"):
            if link.text.startswith("default/web-"):
                name = link.text
                link.click()
                clicked.append(name)
                return True
        return False

    wait_for(browser, open_pod, "a web pod's link, opened")
    name = clicked[-1]
    wait_for(browser, lambda d: name in d.find_element("id", "h-pod").text, "the pod's page")
    wait_for(
        browser,
        lambda d: "Running" in d.find_element("id", "pod").text,
        "the container statuses",
    )
    text = browser.find_element("id", "pod").text
    assert "GET / port http every 2s" in text  # the readiness probe
    # http.server logs every request; the readiness probe asks every 2 s
    first = wait_for(
        browser,
        lambda d: d.execute_script("return document.getElementById('log').textContent").count(
            "GET / "
        ),
        "log lines",
    )
    wait_for(
        browser,
        lambda d: (
            d.execute_script("return document.getElementById('log').textContent").count("GET / ")
            > first
        ),
        "a new log line while the page is open",
    )
    shot(browser, "pod")


def test_sync_now_adds_a_history_entry_with_its_diff(cluster: Cluster, browser: Any) -> None:
    open_view(browser, cluster, "#/history")
    wait_for(browser, lambda d: d.find_elements("css selector", "tr.hist"), "the history")
    before = len(browser.find_elements("css selector", "tr.hist"))
    assert browser.find_element("id", "act-sync").get_attribute("disabled") is not None
    browser.find_element("id", "token").send_keys(TOKEN)
    browser.find_element("css selector", "#signin button").click()
    wait_for(
        browser,
        lambda d: d.find_element("id", "act-sync").get_attribute("disabled") is None,
        "Sync now enabled after signing in",
    )
    cluster.remote.write(
        "manifests-example/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: hi\n",
    )
    revision = cluster.remote.commit_and_push("add a ConfigMap")  # no webhook
    browser.find_element("id", "act-sync").click()

    def new_entry(d: Any) -> Any:
        rows = d.find_elements("css selector", "tr.hist")
        return rows[0] if len(rows) > before and revision[:12] in rows[0].text else None

    def open_diff(d: Any) -> bool:
        row = new_entry(d)  # found again: the history re-renders as syncs finish
        if row is None:
            return False
        assert "Succeeded" in row.text and "add a ConfigMap" in row.text
        row.find_element("css selector", "button[data-diff]").click()
        return True

    wait_for(browser, open_diff, "a history entry for the pushed commit, its diff opened")
    wait_for(
        browser,
        lambda d: "create ConfigMap/default/settings" in d.find_element("id", "diff").text,
        "the diff of that sync",
    )
    assert "greeting: hi" in browser.find_element("id", "diff").text
    shot(browser, "history")


def test_the_overview_shows_the_last_error_and_the_webhook_deliveries(
    cluster: Cluster, browser: Any
) -> None:
    cluster.remote.write(
        "manifests-example/broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  containers: 7\n",
    )
    revision = cluster.remote.commit_and_push("a broken pod")
    cluster.webhook(revision)
    open_view(browser, cluster, "#/overview")
    wait_for(
        browser,
        lambda d: "manifests-example/broken.yaml:6" in d.find_element("id", "overview").text,
        "the error with its file and line",
    )
    assert "Failed" in browser.find_element("id", "summary").text
    wait_for(
        browser,
        lambda d: revision[:12] in d.find_element("id", "deliveries").text,
        "the webhook delivery",
    )
    shot(browser, "error")
    cluster.remote.remove("manifests-example/broken.yaml")
    fixed = cluster.remote.commit_and_push("remove the broken pod")
    cluster.webhook(fixed)
    wait_for(
        browser,
        lambda d: (
            "none" in d.find_element("id", "overview").text
            and fixed[:12] in d.find_element("id", "summary").text
        ),
        "the error gone",
    )


def run_axe(driver: Any) -> list[dict[str, Any]]:
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)), e => done(JSON.stringify(String(e))));"
    )
    violations = json.loads(result)
    assert isinstance(violations, list), violations
    return violations


def test_every_view_passes_axe_and_the_tree_works_from_the_keyboard(
    cluster: Cluster, browser: Any
) -> None:
    from selenium.webdriver.common.keys import Keys

    assert AXE.is_file(), "tests/ui/vendor/axe-core/axe.min.js is missing"
    pod = (
        next(n for n in tree_names(browser) if n.startswith("default/web-"))
        if (tree_names(browser))
        else "default/hello"
    )
    views = ["#/overview", "#/tree", "#/nodes", "#/history", "#/drift", f"#/pod/{pod}"]
    problems = []
    for view in views:
        open_view(browser, cluster, view)
        name = view.split("/")[1]
        wait_for(
            browser,
            lambda d, name=name: not d.find_element("id", f"view-{name}").get_attribute("hidden"),
            f"the {name} view",
        )
        if name == "tree":
            wait_for(browser, lambda d: tree_names(d), "tree rows")
        for v in run_axe(browser):
            if v.get("impact") in ("serious", "critical"):
                problems.append(f"{view}: {v['id']} ({v['impact']}): {v['help']}")
    assert not problems, "\n".join(problems)

    # the keyboard: Tab reaches the views, arrows walk the tree, Enter opens a pod
    open_view(browser, cluster, "#/tree")
    wait_for(browser, lambda d: tree_names(d), "tree rows")
    browser.find_element("id", "tree").send_keys(Keys.ARROW_DOWN)
    first = browser.execute_script(
        "return document.activeElement.closest('.row') && "
        "document.activeElement.closest('.row')._index"
    )
    assert first == 0
    for _ in range(3):
        browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    assert browser.execute_script("return document.activeElement.closest('.row')._index") == 3
    # walk to a pod link and open it with Enter
    for _ in range(20):
        if browser.execute_script("return document.activeElement.matches('a.nm')"):
            break
        browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: "#/pod/" in d.current_url, "a pod opened from the keyboard")
    # Tab from the top of the page reaches the view links
    browser.get(cluster.base + "/#/overview")
    seen = []
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    for _ in range(15):
        seen.append(browser.execute_script("return document.activeElement.textContent.trim()"))
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert any(s.startswith("Resources") for s in seen), seen
