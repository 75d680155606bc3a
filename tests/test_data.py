"""The data sets the build fetches itself (generator/datasets.py, `python -m generator data`), against a
local HTTP server on 127.0.0.1 serving small archives made here: download, checksum, extraction into
place, resume after a cut connection, corrupt archives, members that would land outside the folder,
offline with and without a mirror. Nothing here reaches beyond 127.0.0.1."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import random
import re
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from generator import datasets
from generator.cli import main

WNIDS = ("n00000001", "n00000002")


# ------------------------------------------------------------------------------ the server


class Server:
    """A bounded HTTP server on 127.0.0.1 (ephemeral port) serving ``files`` with Range support.

    ``cut``: paths whose first whole-file answer announces the full length, sends half the body
    and closes the connection. ``ranges=False``: Range headers are ignored (200, whole file).
    ``log``: (path, Range header, body bytes sent) per request. Stops by itself after 60 s."""

    def __init__(self, files: dict[str, bytes], cut=(), ranges: bool = True) -> None:
        self.files, self.cut, self.ranges = dict(files), set(cut), ranges
        self.log: list[tuple[str, str | None, int]] = []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                data = srv.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    srv.log.append((self.path, None, 0))
                    return
                rng = self.headers.get("Range") if srv.ranges else None
                start = 0
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        srv.log.append((self.path, rng, 0))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in srv.cut and not rng:
                    srv.cut.discard(self.path)
                    body = body[: len(body) // 2]  # then the connection closes (HTTP/1.0)
                self.wfile.write(body)
                self.wfile.flush()
                srv.log.append((self.path, self.headers.get("Range"), len(body)))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(60, self.httpd.shutdown)  # bounded: never outlives a stuck test
        self.timer.daemon = True
        self.timer.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(files, **kw) -> Server:
        servers.append(Server(files, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No data root, offline switch or real retry delay from the environment; the user cache in tmp."""
    monkeypatch.delenv("CNNVIS_DATA", raising=False)
    monkeypatch.delenv("CNNVIS_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(datasets, "RETRY_DELAY", 0.0)


# ------------------------------------------------------------------------------ archives


def _blob(seed: int, n: int = 40_000) -> bytes:
    return random.Random(seed).randbytes(n)  # incompressible: a cut lands in the middle of a member


TOY_FILES = {  # a small Imagenette: val/ is extracted, train/ and the csv are not
    "toy-1/val/n00000001/a.JPEG": _blob(1),
    "toy-1/val/n00000001/b.JPEG": _blob(2),
    "toy-1/val/n00000002/c.JPEG": _blob(3),
    "toy-1/val/n00000002/d.JPEG": _blob(4),
    "toy-1/train/n00000001/e.JPEG": _blob(5),
    "toy-1/noisy.csv": b"path,label\n",
}


def make_tar(files: dict[str, bytes], links: dict[str, str] | None = None, gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def toy(url: str, data: bytes | None = None, archive: str = "toy.tar.gz", **kw) -> datasets.DataSet:
    spec = dict(name="toy", title="Toy set", about="four photos", url=url, archive=archive,
                size=len(data or b""), members=(("toy-1/val/", "val"),), photos=4, photo_dir="val",
                classes=WNIDS, md5=hashlib.md5(data).hexdigest() if data is not None else None)
    spec.update(kw)
    return datasets.DataSet(**spec)


def leftovers(root: Path) -> list[str]:
    """Temporary folders and downloads left in the data root."""
    tmp = [p.name for p in root.glob(".tmp-*")] if root.is_dir() else []
    part = root / datasets.PARTIAL
    return tmp + ([p.name for p in part.iterdir() if not p.name.endswith(".lock")] if part.is_dir() else [])


# ------------------------------------------------------------------------------ download and extraction


def test_download_checksum_and_extraction_into_place(tmp_path, serve):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"
    said: list[str] = []
    out = datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False, say=said.append)
    assert out == root / "toy"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.JPEG")) == [
        "val/n00000001/a.JPEG", "val/n00000001/b.JPEG", "val/n00000002/c.JPEG", "val/n00000002/d.JPEG"]
    assert (out / "val/n00000002/c.JPEG").read_bytes() == TOY_FILES["toy-1/val/n00000002/c.JPEG"]
    assert not (out / "train").exists() and not (out / "noisy.csv").exists()  # only val/ is kept
    marker = (out / datasets.MARKER).read_text()
    assert srv.url("/toy.tar.gz") in marker and hashlib.md5(data).hexdigest() in marker
    assert leftovers(root) == []  # the download is deleted once the folder is in place
    assert said == [f"toy: 4 photos in {out}"]
    assert datasets.locate(toy("x"), root=root) == out
    # there: no second request
    assert datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False) == out
    assert len(srv.log) == 1


def test_a_cut_connection_resumes_with_a_range_request(tmp_path, serve):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data}, cut={"/toy.tar.gz"})
    root = tmp_path / "data"
    out = datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
    assert datasets.check(toy("x"), out) is None
    (p1, r1, n1), (p2, r2, n2) = srv.log
    assert r1 is None and 0 < n1 < len(data)
    assert r2 == f"bytes={n1}-"  # the second request asks for the rest only
    assert n2 == len(data) - n1 < len(data)
    assert leftovers(root) == []


def test_an_interrupted_download_resumes_in_the_next_run(tmp_path, serve):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"
    (root / datasets.PARTIAL).mkdir(parents=True)
    half = len(data) // 3
    (root / datasets.PARTIAL / "toy.tar.gz").write_bytes(data[:half])  # what a killed run left
    said: list[str] = []
    datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False, say=said.append)
    assert srv.log == [("/toy.tar.gz", f"bytes={half}-", len(data) - half)]
    assert said[0] == f"toy: resuming the download at {half:,} bytes"


def test_a_server_without_range_support_is_read_from_the_start(tmp_path, serve):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data}, ranges=False)
    root = tmp_path / "data"
    (root / datasets.PARTIAL).mkdir(parents=True)
    (root / datasets.PARTIAL / "toy.tar.gz").write_bytes(b"stale bytes of another file")
    out = datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
    assert datasets.check(toy("x"), out) is None and srv.log[0][2] == len(data)


def test_an_interrupted_extraction_leaves_no_folder_and_keeps_the_download(tmp_path, serve):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"

    def interrupted(folder: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        datasets.fetch(toy(srv.url("/toy.tar.gz"), data, finish=interrupted), root=root, progress=False)
    assert not (root / "toy").exists() and leftovers(root) == ["toy.tar.gz"]
    out = datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)  # no new download
    assert datasets.check(toy("x"), out) is None
    assert srv.log[1] == ("/toy.tar.gz", f"bytes={len(data)}-", 0)


def test_a_zip_archive_is_extracted_too(tmp_path, serve):
    data = make_zip(TOY_FILES)
    srv = serve({"/toy.zip": data})
    out = datasets.fetch(toy(srv.url("/toy.zip"), data, archive="toy.zip"), root=tmp_path / "d", progress=False)
    assert datasets.check(toy("x"), out) is None and not (out / "train").exists()


# ------------------------------------------------------------------------------ what is refused


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def _nothing_left(root: Path, name: str = "toy") -> None:
    assert not (root / name).exists(), "a half-extracted data set folder was left"
    assert leftovers(root) == [], "a temporary folder or a corrupt download was left"


def test_a_download_that_fails_its_checksum_is_deleted(tmp_path, serve):
    data = make_tar(TOY_FILES)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    srv = serve({"/toy.tar.gz": bytes(bad)})
    root = tmp_path / "data"
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
    msg = _one_line_error(exc)
    assert "MD5" in msg and hashlib.md5(data).hexdigest() in msg and datasets.FIX in msg
    _nothing_left(root)


def test_a_corrupt_archive_without_a_checksum_leaves_nothing_half_extracted(tmp_path, serve, monkeypatch):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data[: int(len(data) * 0.6)]})  # the server's whole file is truncated
    written: list[Path] = []
    copy = datasets._copy
    monkeypatch.setattr(datasets, "_copy", lambda src, dest: (written.append(dest), copy(src, dest)))
    root = tmp_path / "data"
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy.tar.gz")), root=root, progress=False)
    msg = _one_line_error(exc)
    assert msg.startswith("toy: the archive toy.tar.gz is corrupt (") and "deleted" in msg
    assert written, "the extraction should have begun before the archive ended"
    _nothing_left(root)


def test_bytes_that_are_no_archive_are_a_one_line_error(tmp_path, serve):
    srv = serve({"/toy.tar.gz": b"<html>not found</html>" * 50})
    root = tmp_path / "data"
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy.tar.gz")), root=root, progress=False)
    assert "corrupt" in _one_line_error(exc)
    _nothing_left(root)


def test_a_wrong_file_count_is_refused(tmp_path, serve):
    files = {k: v for k, v in TOY_FILES.items() if not k.endswith("d.JPEG")}
    data = make_tar(files)
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
    assert "3 photos, expected 4" in _one_line_error(exc)
    _nothing_left(root)


@pytest.mark.parametrize("member", ["../evil.JPEG", "toy-1/val/../../../evil.JPEG", "toy-1/../../evil.JPEG",
                                    "ABSOLUTE"])
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_a_member_that_would_land_outside_the_folder_is_refused(tmp_path, serve, member, kind):
    root = tmp_path / "a" / "data"
    if member == "ABSOLUTE":
        member = str(tmp_path / "a" / "evil.JPEG")  # an absolute path
    files = {**TOY_FILES, member: b"evil"}
    data = make_tar(files) if kind == "tar" else make_zip(files)
    if kind == "tar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert member in tf.getnames()  # the archive really holds the bad name
    srv = serve({"/toy": data})
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy"), data, archive=f"toy.{kind}"), root=root, progress=False)
    msg = _one_line_error(exc)
    assert repr(member) in msg and "outside the target folder: refused" in msg
    assert not any(p.name == "evil.JPEG" for p in tmp_path.rglob("*")), "the member was written"
    _nothing_left(root)


def test_a_link_out_of_the_folder_is_refused(tmp_path, serve):
    data = make_tar(TOY_FILES, links={"toy-1/val/n00000001/x.JPEG": "/etc/passwd"})
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
    assert "'toy-1/val/n00000001/x.JPEG' is a link" in _one_line_error(exc)
    _nothing_left(root)


def test_an_incomplete_folder_in_the_way_is_not_overwritten(tmp_path, serve):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"
    (root / "toy" / "val").mkdir(parents=True)
    (root / "toy" / "val" / "mine.txt").write_text("keep")
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
    assert "exists but is not a complete toy" in _one_line_error(exc)
    assert (root / "toy" / "val" / "mine.txt").read_text() == "keep" and srv.log == []


# ------------------------------------------------------------------------------ the 1,000-class sample


def test_the_sample_gets_a_classes_table_from_its_file_names(tmp_path, serve):
    from generator import imagenet

    ids, names = imagenet.wnids(), imagenet.labels()
    files = {f"repo-0123abc/{w}_{names[i].replace(' ', '_')}.JPEG": bytes([i % 251]) for i, w in enumerate(ids)}
    files["repo-0123abc/README.md"] = b"# sample\n"
    data = make_tar(files)
    base = datasets.REGISTRY["imagenet-1k-sample"]
    srv = serve({"/s.tar.gz": data})
    staged = tmp_path / "staged"
    datasets.extract(_write(tmp_path / "s.tar.gz", data), (("*/", ""),), staged, progress=False)
    spec = dataclasses.replace(base, url=srv.url("/s.tar.gz"), archive="s.tar.gz", git_tree=datasets.git_tree_hash(staged))
    out = datasets.fetch(spec, root=tmp_path / "data", progress=False)
    assert out == tmp_path / "data" / "imagenet-1k-sample"
    lines = (out / "classes.tsv").read_text().splitlines()
    assert lines[0] == "file\timagenet_index\twnid\tlabel" and len(lines) == 1001
    assert lines[1] == "n01440764_tench.JPEG\t0\tn01440764\ttench"
    rows = imagenet.sample_1k(out)  # the one reader of the table accepts it
    assert [r.index for r in rows] == list(range(1000)) and rows[217].wnid == "n02102040"
    # another tree hash (a changed archive): refused, nothing left
    srv2 = serve({"/s.tar.gz": data})
    wrong = dataclasses.replace(spec, url=srv2.url("/s.tar.gz"), git_tree="0" * 40)
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(wrong, root=tmp_path / "data2", progress=False)
    assert "git tree" in _one_line_error(exc)
    _nothing_left(tmp_path / "data2", "imagenet-1k-sample")
    # a photo that names no ImageNet class: refused
    bad = {**files, "repo-0123abc/n99999999_nothing.JPEG": b"x"}
    bad_data = make_tar(bad)
    srv3 = serve({"/s.tar.gz": bad_data})
    with pytest.raises(datasets.DataError) as exc:
        datasets.fetch(dataclasses.replace(base, url=srv3.url("/s.tar.gz"), archive="s.tar.gz", git_tree=None),
                       root=tmp_path / "data3", progress=False)
    assert "n99999999_nothing.JPEG" in _one_line_error(exc)
    _nothing_left(tmp_path / "data3", "imagenet-1k-sample")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_git_tree_hash_is_gits():
    """The files' git tree hash, as `git add . && git write-tree` gives it (computed with git 2.x):
    nested folders, an empty file, and 'sub' sorted as 'sub/' after 'sub.txt'."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "sub").mkdir()
        (d / "hello.txt").write_bytes(b"hello\n")
        (d / "sub" / "a.JPEG").write_bytes(b"x")
        (d / "b-c.txt").write_bytes(b"")
        (d / "sub.txt").write_bytes(b"y")
        assert datasets.git_tree_hash(d) == "d3d0f8e021a5a644aa8374e437d1c717a1fc676c"


# ------------------------------------------------------------------------------ registry and where


def test_the_registry_uses_torchvisions_imagenette_archive_and_a_pinned_sample():
    from torchvision.datasets import Imagenette

    ds = datasets.REGISTRY["imagenette"]
    assert (ds.url, ds.md5) == Imagenette._ARCHIVES["320px"]
    assert ds.members == ((Path(ds.url).stem + "/val/", "val"),)  # torchvision's layout: <stem>/val/<wnid>/
    assert set(ds.classes) == set(Imagenette._WNID_TO_CLASS) and ds.photos == 3925
    sample = datasets.REGISTRY["imagenet-1k-sample"]
    assert re.fullmatch(r"[0-9a-f]{40}", datasets.SAMPLE_COMMIT) and datasets.SAMPLE_COMMIT in sample.url
    assert re.fullmatch(r"[0-9a-f]{40}", sample.git_tree) and sample.photos == 1000 and sample.table == "classes.tsv"
    credits = datasets.credits_markdown()
    assert credits.count("ImageNet's terms of access") == 2 and "fast.ai" in credits and "Eli Schwartz" in credits


def test_data_root_is_cnnvis_data_or_the_user_cache(tmp_path, monkeypatch):
    assert datasets.data_root() == tmp_path / "xdg-cache" / "cnnvis" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.data_root() == tmp_path / "home" / ".cache" / "cnnvis" / "data"
    monkeypatch.setenv("CNNVIS_DATA", str(tmp_path / "mine"))
    assert datasets.data_root() == tmp_path / "mine"


def test_other_config_paths_resolve_as_before(tmp_path):
    resolve = lambda v: tmp_path / v
    assert datasets.resolve_data_path("../shared/imagenette/val", resolve) == tmp_path / "../shared/imagenette/val"
    assert datasets.resolve_data_path("", resolve) == tmp_path
    for bad in ("data:nothing", "data:imagenette/../../etc"):
        with pytest.raises(datasets.DataError):
            datasets.resolve_data_path(bad, resolve)


def _mirror(root: Path) -> Path:
    """A mirror with the layout of ../shared: imagenette/val/<wnid>/ (3,925 photos) and
    imagenet-1k-sample/ (1,000 photos + classes.tsv); empty files stand for the photos."""
    ids = datasets.IMAGENETTE_WNIDS
    for k in range(3925):
        d = root / "imagenette" / "val" / ids[k % 10]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"ILSVRC2012_val_{k:08d}.JPEG").touch()
    s = root / "imagenet-1k-sample"
    s.mkdir(parents=True)
    for i in range(1000):
        (s / f"{i:03d}_n{i:08d}.jpg").touch()
    (s / "classes.tsv").write_text("file\timagenet_index\twnid\tlabel\n")
    return root


def _no_network(*args, **kwargs):
    raise AssertionError("the network was used")


def test_offline_with_a_mirror_everything_is_found_without_the_network(tmp_path, monkeypatch, capsys):
    mirror = _mirror(tmp_path / "shared")
    monkeypatch.setenv("CNNVIS_DATA", str(mirror))
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    assert datasets.locate("imagenette") == mirror / "imagenette"
    assert datasets.fetch("imagenet-1k-sample", progress=False) == mirror / "imagenet-1k-sample"
    resolve = lambda v: tmp_path / "repo" / v
    assert datasets.resolve_data_path("data:imagenette/val", resolve) == mirror / "imagenette" / "val"
    assert datasets.resolve_data_path("data:imagenet-1k-sample", resolve) == mirror / "imagenet-1k-sample"
    assert [(s["name"], s["found"]) for s in datasets.status()] == [("imagenette", True), ("imagenet-1k-sample", True)]
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert f"found in {mirror / 'imagenette'}" in out and f"found in {mirror / 'imagenet-1k-sample'}" in out
    assert main(["data", "--if-missing"]) == 0 and capsys.readouterr() == ("", "")
    # one photo missing: incomplete, said how
    next((mirror / "imagenette" / "val" / "n01440764").iterdir()).unlink()
    assert datasets.locate("imagenette") is None
    assert datasets.check("imagenette", mirror / "imagenette") == "3,924 photos, expected 3,925"


def test_offline_without_data_the_message_names_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNVIS_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    with pytest.raises(datasets.Offline) as exc:
        datasets.fetch("imagenette", progress=False)
    assert "python -m generator data" in _one_line_error(exc)
    path = datasets.resolve_data_path("data:imagenette/val", lambda v: Path(v))
    assert path == tmp_path / "empty" / "imagenette" / "val" and not path.exists()  # the stages' "not found"
    assert "`python -m generator data`" in datasets.missing_note("imagenet-1k-sample")
    assert main(["data", "--check"]) == 1
    assert "python -m generator data" in capsys.readouterr().out
    assert main(["data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: offline (CNNVIS_OFFLINE is set)") and datasets.FIX in err[0]
    assert main(["data", "--if-missing"]) == 0  # make site goes on
    err = capsys.readouterr().err
    assert err.startswith("note: offline") and "curated photos" in err
    assert not (tmp_path / "empty").exists()  # nothing written


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_host_is_offline_in_one_line(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/toy.tar.gz"
    root = tmp_path / "data"
    with pytest.raises(datasets.Offline) as exc:
        datasets.fetch(toy(url, b""), root=root, progress=False)
    msg = _one_line_error(exc)
    assert msg.startswith("toy: cannot reach 127.0.0.1:") and datasets.FIX in msg
    _nothing_left(root)
    monkeypatch.setattr(datasets, "REGISTRY", {"toy": toy(url, b"")})
    assert main(["data", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: toy: cannot reach 127.0.0.1:")


def test_the_data_command_fetches_what_is_missing(tmp_path, serve, monkeypatch, capsys):
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data})
    monkeypatch.setattr(datasets, "REGISTRY", {"toy": toy(srv.url("/toy.tar.gz"), data)})
    monkeypatch.setenv("CNNVIS_DATA", str(tmp_path / "data"))
    assert main(["data", "--check"]) == 1 and srv.log == []
    assert "toy: missing (not found); about 0 MB to download from http://127.0.0.1:" in capsys.readouterr().out
    assert main(["data"]) == 0
    assert datasets.locate("toy") == tmp_path / "data" / "toy"
    assert main(["data", "--only", "toy"]) == 0 and len(srv.log) == 1
    assert main(["data", "--only", "nothing"]) == 2


def test_a_second_fetch_of_the_same_data_set_waits_for_none(tmp_path, serve):
    fcntl = pytest.importorskip("fcntl")
    data = make_tar(TOY_FILES)
    srv = serve({"/toy.tar.gz": data})
    root = tmp_path / "data"
    lock = root / datasets.PARTIAL / "toy.tar.gz.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(datasets.DataError) as exc:
            datasets.fetch(toy(srv.url("/toy.tar.gz"), data), root=root, progress=False)
        assert "another process is fetching" in _one_line_error(exc) and srv.log == []
    finally:
        os.close(fd)


def test_pages_name_a_data_set_and_its_source_not_a_folder_of_the_machine():
    """A generator checkpoint records its trainer's folders (e.g. a local mirror beside the checkout); the
    DGN-AM page shows them through the `data_sets` filter: each folder named by the data set it is."""
    from generator.datasets import describe_folders
    from generator.site import make_env

    text = "../shared/imagenette/train + /home/u/.cache/cnnvis/data/imagenet-1k-sample (minus 50) + ../shared/images"
    said = describe_folders(text)
    assert said == ("Imagenette (fast.ai), training photos + the 1,000-class ImageNet sample "
                    "(github.com/EliSchwartz/imagenet-sample-images) (minus 50) + the site's curated photos (data/images)")
    assert "/" not in said.replace("github.com/EliSchwartz/imagenet-sample-images", "").replace("data/images", "")
    assert describe_folders("/tmp/x/my-photos") == "x/my-photos" and describe_folders("no path here") == "no path here"
    assert make_env().from_string("{{ d | data_sets }}").render(d=text) == said
