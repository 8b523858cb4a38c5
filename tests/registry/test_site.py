"""The registry site: what the pages say, that store text stays text, and that a real browser
loading them fetches nothing but the site's own files.

Browser tests run Debian's headless Chromium (``registry/site/browser.py``) against the site
served by a local http.server that records every path asked for. Chromium is pointed at a
recording proxy, so any request for another host (a CDN, an injected image) lands there and
fails the test; requests to 127.0.0.1 bypass the proxy and reach the site server.
"""

from __future__ import annotations

import functools
import json
import socketserver
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from leank_core.mask import LeanKMask
from registry import GatePolicy, MaskRef, MaskRegistry, Report, SignedReport, Signer, generate_key
from registry.card import model_card
from registry.cli import main
from registry.evidence import points
from registry.site import render_site, site_server
from registry.site.browser import INSTALL, chromium, dump_dom

from .conftest import Backend, trusting_policy

requires_chromium = pytest.mark.skipif(chromium() is None,
                                       reason=f"headless Chromium is not installed ({INSTALL}; .ci/run does)")

TITLE_MARK = "PWNED"
SCRIPT = f"<script>document.title='{TITLE_MARK}';document.documentElement.setAttribute('data-pwned','1')</script>"
BREAKOUT = f"\"'><img src=x onerror=\"document.title='{TITLE_MARK}'\"><svg onload=alert(1)>"


# -- a registry with every kind of version ----------------------------------------------------
def make_mask(model_id: str, tag: int, with_importance: bool = False) -> LeanKMask:
    kept = torch.ones(3, 2, 16, dtype=torch.bool)
    kept[tag % 3, 0] = False
    importance = torch.linspace(0, 1, 96).reshape(3, 2, 16) if with_importance else None
    return LeanKMask(kept=kept, sink=4, recent=8, align=16, ratio=0.2, model_id=model_id, model_hash="f" * 64,
                     importance=importance, extra={"tag": tag})


def make_report(reg: MaskRegistry, ref: MaskRef, scores: dict[str, list[float]],
                tasks: tuple[str, ...] = ("passkey", "niah"), settings: dict | None = None) -> Report:
    """A report on ``ref`` over ``tasks`` × (512, 1024) whose run ``r`` scores ``scores[r][i]`` on sample i of every cell."""
    rows = [{"run": run, "task": task, "length": length, "index": i, "score": s, "new_tokens": 2, "seconds": 0.5}
            for run, samples in scores.items() for task in tasks for length in (512, 1024) for i, s in enumerate(samples)]
    m = reg.manifest(ref)
    return Report.build(rows, m.mask_sha256, m.model_id, m.model_hash, GatePolicy(), memory={"k_saving": 0.7, "v_saving": 0.25},
                        settings=settings or {}, version=m.version, manifest_sha256=m.sha256())


@dataclass
class Built:
    registry: MaskRegistry
    statuses: dict[str, dict[int, str]]
    reports: dict[str, Report] = field(default_factory=dict)  # "org/name@N" -> its deciding report


def build(url: str, signer: Signer, intruder: Signer) -> Built:
    reg = MaskRegistry(url)
    reg.update_policy(lambda _: trusting_policy(signer))
    reports: dict[str, Report] = {}
    # org/alpha: accepted, rejected, candidate, damaged (a status.json nobody wrote), mask object missing
    for tag, scores, passed in ((1, {"full": [1, 1], "masked": [1, 1], "random": [0, 0.5]}, True),
                                (2, {"full": [1, 1], "masked": [0, 0]}, False)):
        mask = make_mask("org/alpha", tag)
        ref = reg.push(mask, {"training_config": {"lr": 0.02}, "data_recipe": "synthetic-v1"})
        report = make_report(reg, ref, scores)
        assert report.passed == passed
        reg.judge(ref, SignedReport.sign(report, signer))
        reports[str(ref)] = report
    reg.push(make_mask("org/alpha", 3))
    reg.push(make_mask("org/alpha", 4))
    reg.store.create("org/alpha/versions/000004/status.json", json.dumps({"status": SCRIPT}).encode())
    m1 = reg.manifest(reg.resolve(MaskRef("org/alpha", version=1)))
    gone = "0" * 64  # a mask object that was never stored
    reg.store.create("org/alpha/versions/000005/manifest.json",
                     replace(m1, version=5, mask_sha256=gone, mask_key=f"org/alpha/masks/{gone}.safetensors").to_json())
    # org/beta: free text everywhere a store lets it in; a report by a key nobody trusts, hostile to the last field
    mask = make_mask("org/beta", 1, with_importance=True)
    ref = reg.push(mask, {"data_recipe": SCRIPT, SCRIPT: BREAKOUT, "training_config": {"note": BREAKOUT},
                          "notes": "```\nfenced ``` text"})
    hostile = make_report(reg, ref, {"full": [1, 1], "masked": [1, 1]}, tasks=(SCRIPT, "passkey"),
                          settings={"note": SCRIPT, BREAKOUT: [SCRIPT]})
    reg.judge(ref, SignedReport.sign(hostile, signer))
    reports[str(ref)] = hostile
    forged = replace(hostile, model_id=SCRIPT, accuracy={**hostile.accuracy, BREAKOUT: {SCRIPT: BREAKOUT}})
    reg.store.create("org/beta/versions/000001/reports/0002.json", SignedReport.sign(forged, intruder).to_json())
    reg.store.create("org/beta/versions/000002/manifest.json",
                     replace(reg.manifest(ref), version=2, created=SCRIPT, code_version=BREAKOUT,
                             model_hash=BREAKOUT).to_json())
    rejected = reg.push(make_mask("org/beta", 2))  # its reasons name the hostile task
    reg.judge(rejected, SignedReport.sign(make_report(reg, rejected, {"full": [1, 1], "masked": [0, 0]},
                                                      tasks=(SCRIPT,)), signer))
    statuses = {"org/alpha": {1: "accepted", 2: "rejected", 3: "candidate", 4: "damaged", 5: "candidate"},
                "org/beta": {1: "accepted", 2: "candidate", 3: "rejected"}}
    return Built(reg, statuses, reports)


@pytest.fixture(scope="session")
def intruder(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A key no test registry trusts."""
    return generate_key(tmp_path_factory.mktemp("intruder") / "intruder.key")


# -- reading pages ------------------------------------------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs, self.children = tag, attrs, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, **attrs: str) -> list["Node"]:
        found = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(c.attrs.get(_attr(k)) == v for k, v in attrs.items()):
                    found.append(c)
                found += c.all(tag, **attrs)
        return found

    def one(self, tag: str | None = None, **attrs: str) -> "Node":
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}> elements"
        return found[0]


def _attr(key: str) -> str:
    return key.rstrip("_").replace("_", "-")  # as registry/site/html.py names attributes


class TreeBuilder(HTMLParser):
    VOID = {"meta", "link", "img", "br", "hr", "input", "source", "base"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    return builder.root


def site_links(root: Path) -> list[tuple[Path, str]]:
    """Every (page, href/src) in the rendered site."""
    return [(page, node.attrs[name]) for page in root.rglob("*.html") for node in parse(page.read_text()).all()
            for name in ("href", "src") if node.attrs.get(name)]


# -- pages on disk (no browser) -----------------------------------------------------------------
def test_the_site_renders_from_either_backend_with_relative_links_to_its_own_files(backend: Backend, signer, intruder,
                                                                                    tmp_path: Path) -> None:
    built = build(backend.url, signer, intruder)
    index = render_site(built.registry, tmp_path / "site")
    root = index.parent
    listed = [row.all("a")[0].text() for row in parse(index.read_text()).all("tr") if row.attrs.get("data-model")]
    assert listed == sorted(built.statuses)
    links = site_links(root)
    assert links and all(":" not in link and not link.startswith("/") for _, link in links), links
    assert all((page.parent / link.split("#")[0]).resolve().is_file() for page, link in links)
    for model_id, versions in built.statuses.items():
        for version in versions:
            assert (root / "models" / model_id / str(version) / "index.html").is_file()


def test_model_ids_are_the_valid_ids_that_have_a_manifest(tmp_path: Path) -> None:
    reg = MaskRegistry(str(tmp_path / "registry"))
    reg.push(make_mask("org/b", 1))
    reg.push(make_mask("org/a", 1))
    reg.store.create("<script>/x/versions/000001/manifest.json", b"{}")  # a folder no push could name
    reg.store.create("org/c/masks/" + "0" * 64 + ".safetensors", b"")  # no version: not a model yet
    assert reg.model_ids() == ["org/a", "org/b"]


def test_a_version_without_its_mask_object_says_why(tmp_path: Path, signer, intruder) -> None:
    index = render_site(build(str(tmp_path / "registry"), signer, intruder).registry, tmp_path / "site")
    page = parse((index.parent / "models/org/alpha/5/index.html").read_text())
    assert "The mask cannot be shown" in page.text() and "missing" in page.text()
    assert not (index.parent / "models/org/alpha/5/kept.png").exists()


def test_an_earlier_site_is_replaced_and_any_other_folder_is_refused_untouched(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    url = str(tmp_path / "registry")
    MaskRegistry(url).push(make_mask("org/a", 1))
    out = tmp_path / "site"
    assert main(["--registry", url, "site", "--out", str(out)]) == 0
    (out / "stale.html").write_text("from an earlier render")
    assert main(["--registry", url, "site", "--out", str(out)]) == 0
    assert not (out / "stale.html").exists() and (out / "models/org/a/1/index.html").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["--registry", url, "site", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "not written by leank registry site" in err and err.count("\n") == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no draft left behind


def test_serve_answers_with_the_rendered_site_and_a_busy_port_is_one_line(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    url = str(tmp_path / "registry")
    MaskRegistry(url).push(make_mask("org/a", 1))
    index = render_site(MaskRegistry(url), tmp_path / "site")
    server = site_server(index.parent, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models/org/a/index.html", timeout=10) as answer:
            assert "org/a" in parse(answer.read().decode()).one("h1").text()
        assert main(["--registry", url, "serve", "--port", str(port)]) == 2
        said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("leank registry:")]
        assert len(said) == 1 and f"cannot listen on 127.0.0.1:{port}" in said[0]  # the rest: the access log
    finally:
        server.shutdown()
        server.server_close()


def test_judge_writes_the_model_card_when_it_accepts_and_only_then(tmp_path: Path, signer, intruder) -> None:
    built = build(str(tmp_path / "registry"), signer, intruder)
    store = built.registry.store
    card = store.get("org/alpha/versions/000001/README.md").decode()
    assert card == model_card(built.registry.show("org/alpha", 1))
    report = built.reports["org/alpha@1"]
    assert f"| **mean** |  | {points(report.mean['full'])} | {points(report.mean['masked'])} |" in card
    assert "leank registry pull org/alpha --version 1 --out mask.safetensors" in card
    assert store.get("org/alpha/versions/000002/README.md") is None  # rejected
    assert store.get("org/alpha/versions/000003/README.md") is None  # candidate


def test_a_report_that_is_no_evidence_is_shown_as_such_and_never_as_a_verdict(tmp_path: Path, signer,
                                                                              intruder) -> None:
    built = build(str(tmp_path / "registry"), signer, intruder)
    index = render_site(built.registry, tmp_path / "site")
    page = parse((index.parent / "models/org/beta/1/index.html").read_text())
    forged = page.one("details", data_report="2")
    verdict = forged.one("span", class_="verdict none")
    assert verdict.text().startswith("not evidence: it is signed by key") and verdict.attrs["data-passed"] == "none"
    assert page.one("details", data_report="1").one("span", class_="verdict pass").text().startswith("ACCEPTED")
    stored = json.loads((index.parent / "models/org/beta/1/report-2.json").read_text())
    assert stored["key"] == intruder.public_key  # the envelope as stored, checkable by anyone
    card = model_card(built.registry.show("org/beta", 1))
    assert "- report 2: not evidence: it is signed by key" in card


def fenced_blocks(markdown: str) -> tuple[str, list[str]]:
    """(the prose outside code fences, the text of each fenced block), fences matched by their backtick run."""
    prose, blocks, fence, block = [], [], None, []
    for line in markdown.splitlines():
        run = line[:len(line) - len(line.lstrip("`"))]
        if fence is None and len(run) >= 3:
            fence, block = run, []
        elif fence is not None and line == fence:
            blocks.append("\n".join(block))
            fence = None
        elif fence is not None:
            block.append(line)
        else:
            prose.append(line)
    assert fence is None, "a code fence is never closed"
    return "\n".join(prose), blocks


def test_the_model_card_keeps_store_text_as_text(tmp_path: Path, signer, intruder) -> None:
    built = build(str(tmp_path / "registry"), signer, intruder)
    record = built.registry.show("org/beta", 1)
    prose, blocks = fenced_blocks(model_card(record))
    assert "<script" not in prose and "<img" not in prose and "<svg" not in prose
    assert "&lt;script&gt;" in prose  # the hostile task name is in the evidence table, as text
    assert json.loads(blocks[-1]) == record.manifest.provenance  # the backticks inside did not end the block


# -- in a real browser --------------------------------------------------------------------------
class RecordingHandler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


class RefusingProxy(socketserver.StreamRequestHandler):
    """Where Chromium sends every request for a host other than 127.0.0.1: recorded and refused."""

    def handle(self) -> None:
        self.server.requests.append(self.rfile.readline(65536).decode(errors="replace").strip())
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@dataclass
class Served:
    built: Built
    site: ThreadingHTTPServer
    proxy: socketserver.ThreadingTCPServer
    files: set[str]

    def load(self, url: str) -> str:
        self.site.requests.clear()
        self.proxy.requests.clear()
        return dump_dom(url, f"--proxy-server=http://127.0.0.1:{self.proxy.server_address[1]}")

    def dom(self, path: str) -> Node:
        """The page's DOM in Chromium, after checking that loading it asked only for the site's own files."""
        html = self.load(f"http://127.0.0.1:{self.site.server_address[1]}/{path}")
        assert self.proxy.requests == [], f"{path} tried to reach other hosts"
        assert set(self.site.requests) <= self.files | {"/favicon.ico"}, self.site.requests
        assert f"/{path}" in self.site.requests
        return parse(html)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, signer: Signer, intruder: Signer) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        env.setenv("XDG_CONFIG_HOME", str(tmp / "config"))
        built = build(str(tmp / "registry"), signer, intruder)
        root = render_site(built.registry, tmp / "site").parent
    site = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(root)))
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), RefusingProxy)
    proxy.daemon_threads = True
    for server in (site, proxy):
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Served(built, site, proxy, {"/" + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()})
    finally:
        for server in (site, proxy):
            server.shutdown()
            server.server_close()


@requires_chromium
def test_the_browser_shows_each_status_and_the_reports_numbers(served: Served) -> None:
    statuses = served.built.statuses["org/alpha"]
    index = served.dom("index.html")
    row = index.one("tr", data_model="org/alpha")
    for status in set(statuses.values()):
        assert f"{status} {list(statuses.values()).count(status)}" in row.text()

    model = served.dom("models/org/alpha/index.html")
    shown = {int(r.attrs["data-version"]): r for r in model.all("tr") if r.attrs.get("data-version")}
    assert {v: r.attrs["data-status"] for v, r in shown.items()} == statuses
    assert all(r.one("span", class_=f"status {statuses[v]}").text() == statuses[v] for v, r in shown.items())
    assert "damaged" in shown[4].text() and "status" in shown[4].text()
    assert "REJECTED" in shown[2].text() and "ACCEPTED" in shown[1].text()
    k_kept = served.built.registry.manifest(MaskRef("org/alpha", version=1)).k_fraction_kept
    assert f"{100 * k_kept:.1f} %" in shown[1].text()

    report = served.built.reports["org/alpha@1"]
    page = served.dom("models/org/alpha/1/index.html")
    table = page.one("table", class_="evidence")
    for run, cells in report.accuracy.items():
        for cell, value in cells.items():
            assert table.one("tr", data_cell=cell).one("td", data_run=run).text() == points(value)
        assert table.one("tr", class_="mean").one("td", data_run=run).text() == points(report.mean[run])
    assert page.one("span", data_passed="true").text().startswith("ACCEPTED")
    assert "leank registry pull org/alpha --version 1" in page.one("pre", data_snippet="cli").text()
    assert served.dom("models/org/alpha/2/index.html").one("span", data_passed="false").text().startswith("REJECTED")


@requires_chromium
def test_markup_in_store_text_stays_text_and_never_runs(served: Served) -> None:
    pages = {"models/org/beta/index.html": "org/beta", "models/org/beta/1/index.html": "org/beta@1",
             "models/org/beta/2/index.html": "org/beta@2", "models/org/alpha/4/index.html": "org/alpha@4"}
    for path, title in pages.items():
        dom = served.dom(path)
        assert dom.one("head").one("title").text() == title  # the injected script would have renamed the page
        html = dom.one("html")
        assert "data-pwned" not in html.attrs
        assert dom.all("script") == []
        assert not [n.tag for n in dom.all() if any(a.startswith("on") for a in n.attrs)]
        assert not dom.all("img", src="x")
        assert "document.title=" in html.text()  # ... and yet the hostile text is on the page, as text
    beta = parse(served.load(f"http://127.0.0.1:{served.site.server_address[1]}/models/org/beta/1/index.html"))
    assert SCRIPT in beta.text() and BREAKOUT in beta.text()


@requires_chromium
def test_the_leak_check_sees_a_request_for_another_host(served: Served, tmp_path: Path) -> None:
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><link rel="stylesheet" href="https://cdn.example/x.css">'
                    '<img src="http://leak.example/pixel.png">')
    served.load(page.as_uri())
    asked = " ".join(served.proxy.requests)
    assert "leak.example" in asked and "cdn.example" in asked
