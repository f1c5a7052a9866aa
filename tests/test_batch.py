"""The batch command on real speech, run in this process as a user runs it: a folder with a subfolder, a list
with a link served on 127.0.0.1, and a file that is not audio. Its files against the CLI's, and what a rerun
redoes and what it leaves alone."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from media_server import MediaServer

from whisper_core import batch, cli
from whisper_core.media import MSG_NOT_MEDIA
from whisper_core.options import make_options
from whisper_core.speech_model import SpeechModel
from whisper_core.tasks import TaskPlan
from whisper_core.writers import SubtitleLayout

GREEDY = ["--beam_size", "1", "--temperature_increment_on_fallback", "None"]
# Two files named alike, in the folder and in its subfolder: the subfolder is mirrored, nothing is overwritten.
FOLDER = {"talk.wav": "en_librispeech_1272-128104-0000.wav", "sub/talk.wav": "es_arenas_blanquecinas.wav"}
LINKED = "pt_raposa_velha.wav"
TEXT_FORMATS = ("txt", "vtt", "srt", "tsv")


@dataclass(frozen=True)
class Run:
    code: int
    stderr: str


@dataclass(frozen=True)
class Job:
    """The first run of the batch and what the CLI wrote for the same inputs (`reference[input]`: its folder)."""

    args: list[str]
    out: Path
    bad: Path
    link: str
    first: Run
    reference: dict[str, Path]


def run_batch(*args: str) -> Run:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = batch.main(list(args))
    return Run(code, stderr.getvalue())


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines()]


def last_records(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in records(out)}


def mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != batch.MANIFEST}


def close(a, b) -> bool:
    """JSON values equal but for the last digits of floats (a batch of several inputs sums in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(close, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="module")
def job(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    folder = root / "in"
    for name, source in FOLDER.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared / "audio" / source, folder / name)
    bad = folder / "notes.mp3"
    bad.write_text("this is not audio")
    server = MediaServer({LINKED: shared / "audio" / LINKED})
    link = server.url(f"/media/{LINKED}")
    links = root / "links.txt"
    links.write_text(f"# served here\n\n{link}\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WHISPER_ALLOW_PRIVATE_URLS", "1")
        env.setenv("WHISPER_TEMP_DIR", str(root / "url-temp"))
        args = [str(folder), str(links), "--output_dir", str(root / "out"), *GREEDY]
        first = run_batch(*args)
        reference = {str(folder / "talk.wav"): root / "cli-a", link: root / "cli-a",
                     str(folder / "sub" / "talk.wav"): root / "cli-b"}
        assert cli.main([str(folder / "talk.wav"), link, "-o", str(root / "cli-a"), "--verbose", "False",
                         *GREEDY]) == 0
        assert cli.main([str(folder / "sub" / "talk.wav"), "-o", str(root / "cli-b"), "--verbose", "False",
                         *GREEDY]) == 0
        yield Job(args, root / "out", bad, link, first, reference)
    server.close()


def test_outputs_are_the_clis_and_a_bad_file_is_recorded(job):
    assert job.first.code == 1, job.first.stderr
    assert "3 done, 0 skipped (done before), 1 failed" in job.first.stderr
    assert f"failed: {job.bad}: {MSG_NOT_MEDIA}" in job.first.stderr
    assert "[4/4]" in job.first.stderr and "Traceback" not in job.first.stderr
    lines = records(job.out)
    assert len(lines) == 4 and set(last_records(job.out)) == {*job.reference, str(job.bad)}
    failed = last_records(job.out)[str(job.bad)]
    assert (failed["status"], failed["error"], failed["outputs"]) == ("failed", MSG_NOT_MEDIA, [])
    assert failed["hash"] == hashlib.sha256(job.bad.read_bytes()).hexdigest()
    for given, reference in job.reference.items():
        record = last_records(job.out)[given]
        assert record["status"] == "done" and record["duration_s"] > 4 and record["seconds"] > 0
        content = given.encode() if given == job.link else Path(given).read_bytes()
        assert record["hash"] == hashlib.sha256(content).hexdigest()
        assert record["options"]["output_format"] == "all" and record["options"]["beam_size"] is None
        stem = Path(record["stem"]).name
        assert sorted(Path(p).name for p in record["outputs"]) == sorted(f"{stem}.{f}" for f in [*TEXT_FORMATS,
                                                                                                  "json"])
        assert {p.name for p in reference.glob(f"{stem}.*")} == {Path(p).name for p in record["outputs"]}
        for path in map(Path, record["outputs"]):
            mine, theirs = job.out / path, reference / path.name
            if path.suffix == ".json":
                assert close(json.loads(mine.read_text()), json.loads(theirs.read_text())), path
            else:
                assert mine.read_bytes() == theirs.read_bytes(), path
    assert last_records(job.out)[str(job.bad.parent / "sub" / "talk.wav")]["outputs"][0].startswith("sub/talk.")


def test_a_rerun_redoes_only_what_is_missing_failed_or_changed(job):
    before, loads = mtimes(job.out), SpeechModel.loads
    again = run_batch(*job.args)
    assert again.code == 1 and "0 done, 3 skipped (done before), 1 failed" in again.stderr
    assert f"failed before (--retry_failed tries again): {job.bad}" in again.stderr
    assert SpeechModel.loads == loads and mtimes(job.out) == before and len(records(job.out)) == 4

    spanish = str(job.bad.parent / "sub" / "talk.wav")
    (job.out / "sub" / "talk.srt").unlink()
    redo = run_batch(*job.args)
    assert redo.code == 1 and "1 done, 2 skipped (done before), 1 failed" in redo.stderr
    assert [r["input"] for r in records(job.out)[4:]] == [spanish]
    assert (job.out / "sub" / "talk.srt").read_bytes() == (job.reference[spanish] / "talk.srt").read_bytes()
    def outside_sub(times: dict[Path, int]) -> dict[Path, int]:
        return {p: t for p, t in times.items() if p.relative_to(job.out).parts[0] != "sub"}

    assert outside_sub(mtimes(job.out)) == outside_sub(before)

    retry = run_batch(*job.args, "--retry_failed")
    assert retry.code == 1 and "0 done, 3 skipped (done before), 1 failed" in retry.stderr
    assert [(r["input"], r["status"], r["error"]) for r in records(job.out)[5:]] == [
        (str(job.bad), "failed", MSG_NOT_MEDIA)]

    # Other options redo every input; one at a time, the JSON is the CLI's byte for byte.
    changed = run_batch(*job.args, "--output_format", "json", "--parallel", "1")
    assert changed.code == 1 and "3 done, 0 skipped (done before), 1 failed" in changed.stderr
    fresh = records(job.out)[6:]
    assert sorted(r["input"] for r in fresh) == sorted([*job.reference, str(job.bad)])
    for record in (r for r in fresh if r["status"] == "done"):
        [output] = record["outputs"]
        assert output.endswith(".json") and record["options"]["output_format"] == "json"
        reference = job.reference[record["input"]] / Path(output).name
        assert (job.out / output).read_bytes() == reference.read_bytes(), output


def test_stems_that_collide_get_a_suffix_of_their_own(tmp_path):
    for name in ["x.mp3", "x.wav", "a/x.mp3", ".hidden/y.mp3", "readme.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    inputs = batch.collect([str(tmp_path), str(tmp_path / "x.wav")])
    assert [(i.subdir, Path(i.key).name) for i in inputs] == [("a", "x.mp3"), (".", "x.mp3"), (".", "x.wav")]
    names = batch.Names({"x": "an earlier input"})
    stems = [names.claim(i.stem_under("x"), i.key) for i in inputs]
    assert stems[0] == "a/x" and len(set(stems)) == 3 and all(s.startswith("x-") for s in stems[1:])
    assert names.claim("x", inputs[1].key) == stems[1]  # the same answer when asked again


def test_an_engine_fault_fails_that_input_only(shared, tmp_path):
    """The unit of work, with an engine that breaks: a failed record with the fault's type, no files."""

    def broken(audio, plan, options):
        raise RuntimeError("the device fell over")

    settings = batch.Settings(TaskPlan.make("transcribe"), make_options(), SubtitleLayout(), "txt", tmp_path, {})
    item = batch.Input(str(shared / "audio" / LINKED))
    record = batch.process_input(item, "digest", settings, broken, batch.Names({}))
    assert (record.status, record.error, record.outputs) == ("failed", "RuntimeError: the device fell over", ())
    assert record.input == item.key and record.hash == "digest" and not any(tmp_path.iterdir())


def test_a_list_line_that_is_no_link_is_a_bad_argument(tmp_path):
    links = tmp_path / "links.list"
    links.write_text("# talks\nhttps://example.org/a.mp3\nexample.org/b.mp3\n")
    run = run_batch(str(links), "--output_dir", str(tmp_path / "out"))
    assert run.code == 2 and run.stderr.strip() == f"error: {links}, line 3: not a link: example.org/b.mp3"


@pytest.mark.parametrize("args, message", [
    (["{empty}"], "error: no audio or video files or links found in"),
    (["{empty}/missing.mp3"], "no such file or folder"),
    (["{empty}", "--bogus"], "error: unrecognized arguments: --bogus"),
    (["{empty}", "--beam_size", "0"], "error: beam_size must be 1 or more"),
    (["{empty}", "--max_line_width", "20"], "need --word_timestamps True"),
    (["{empty}", "--parallel", "0"], "error: argument --parallel: must be 1 or more"),
])
def test_bad_arguments_are_one_line_and_status_2(tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_batch(*(a.format(empty=empty) for a in args), "--output_dir", str(tmp_path / "out"))
    assert run.code == 2 and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
