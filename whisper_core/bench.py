"""Speed benchmark: our engine beside openai-whisper and faster-whisper on the same weights and audio, each
engine's batched long-form beside faster-whisper's BatchedInferencePipeline, many users on one service, and
GPU throughput. Prints a markdown table (for the README) and optionally JSON.

    python -m whisper_core.bench FILE... [--runs 2] [--threads 2] [--reference-python PYTHON] [--json PATH]

Every measurement runs in a fresh worker process, so that peak RSS and load time belong to one engine.
Workers run this file as a script (`python -P .../bench.py --worker ...`) rather than as a package module:
importing the package loads torch (about 200 MiB), which would be charged to faster-whisper. Hence only the
standard library and numpy at module level, and whisper_core imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RUNS = 2
THREADS = 2
USERS = 4
DECODES = {"greedy": None, "beam5": 5}  # beam_size; temperature 0 alone (no fallback) for both
DECODE_LABELS = {"greedy": "greedy", "beam5": "beam 5"}
BATCH_SIZE = 8  # speech chunks decoded at once by the batched engines (faster-whisper's own default)
AFTER_LOAD_S = 1.0  # the service's memory is read this long after its last answer
SERVICE_MODES = {"sequential": None, "batched": BATCH_SIZE}  # the service measured in each, batch_size
TASKS = {"transcribe": ("transcribe",), "both": ("transcribe", "translate")}
TASK_LABELS = {"transcribe": "transcribe", "both": "transcribe + translate"}
GPU_BATCHES = (1, 8, 16, 32)
GPU_TOKENS = 100  # tokens decoded per window in the GPU measurement, about a window of speech
GPU_REPEATS = 3
SOT = 50258  # <|startoftranscript|> in every multilingual vocabulary
LARGE_V3_DIMS = {"n_mels": 128, "n_audio_ctx": 1500, "n_audio_state": 1280, "n_audio_head": 20,
                 "n_audio_layer": 32, "n_vocab": 51866, "n_text_ctx": 448, "n_text_state": 1280,
                 "n_text_head": 20, "n_text_layer": 32}
REFERENCE_PACKAGES = ("openai-whisper", "faster-whisper", "ctranslate2", "torch")
CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin in a faster-whisper dir
BENCH_SCRIPT = Path(__file__).resolve()
PROJECT_ROOT = BENCH_SCRIPT.parents[1]


@dataclass(frozen=True)
class Engine:
    """One column of the comparison: which code runs, from which package, at which precision."""

    name: str  # as --engines takes it
    label: str
    family: str  # ours | openai | faster
    package: str | None  # the distribution a reference engine needs
    compute_type: str | None = None
    batched: bool = False  # the speech cut at its pauses by the engine's voice detector, BATCH_SIZE chunks at once


ENGINES = (
    Engine("ours", "ours", "ours", None),
    Engine("ours-int8", "ours int8", "ours", None, "int8"),
    Engine("openai-whisper", "openai-whisper", "openai", "openai-whisper"),
    Engine("faster-whisper-int8", "faster-whisper int8", "faster", "faster-whisper", "int8"),
    Engine("faster-whisper-float32", "faster-whisper float32", "faster", "faster-whisper", "float32"),
    Engine("ours-batched", "ours batched", "ours", None, batched=True),
    Engine("ours-batched-int8", "ours batched int8", "ours", None, "int8", batched=True),
    Engine("faster-whisper-batched-int8", "faster-whisper batched int8", "faster", "faster-whisper", "int8",
           batched=True),
    Engine("faster-whisper-batched-float32", "faster-whisper batched float32", "faster", "faster-whisper",
           "float32", batched=True),
)
ENGINE_BY_NAME = {e.name: e for e in ENGINES}
BASELINES = ("ours", "ours-batched")  # the engine table sets every row's wall time against each that ran


@dataclass(frozen=True)
class BenchConfig:
    """The command line, read once; written into the JSON report beside the numbers it produced."""

    files: tuple[str, ...]
    runs: int
    threads: int
    reference_python: str
    engines: tuple[str, ...]
    decodes: tuple[str, ...]
    tasks: tuple[str, ...]
    users: int
    device: str
    gpu_only: bool
    json_path: str | None


@dataclass(frozen=True)
class Case:
    """One worker's measurement: an engine, decode and task on one file, `runs` times."""

    engine: str
    decode: str
    task: str
    file: str
    audio: str  # .npy of the decoded samples, so that every engine gets the same input, decoded untimed
    model: str  # what the engine loads: "" (our bundled base), an OpenAI .pt file, a CTranslate2 directory
    device: str
    runs: int
    threads: int


@dataclass(frozen=True)
class ServiceSpec:
    audio: list[str]  # one .npy per request
    device: str
    threads: int
    batch_size: int | None  # None: sequential decoding; else batched long-form, this many chunks at once


@dataclass(frozen=True)
class GpuSpec:
    audio: str  # the first file, whose first window compares fp16 logits with fp32's
    device: str


@dataclass(frozen=True)
class ProbeSpec:
    packages: list[str]


# ---------------------------------------------------------------- worker side


def _timed(fn: Callable, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def _current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _load_ours(case: Case):
    import torch

    from whisper_core.speech_model import load_model

    torch.set_num_threads(case.threads)
    return load_model(device=case.device, int8=ENGINE_BY_NAME[case.engine].compute_type == "int8")


def _run_ours(model, audio: np.ndarray, case: Case) -> dict[str, str]:
    """Both tasks through transcribe_and_translate, which shares windows and batches between them;
    batch_size alone turns on the voice detector and the chunked decode."""
    options = {"temperature": 0.0, "beam_size": DECODES[case.decode], "condition_on_previous_text": True}
    if ENGINE_BY_NAME[case.engine].batched:
        options["batch_size"] = BATCH_SIZE
    if case.task == "both":
        return {task: r["text"] for task, r in model.transcribe_and_translate(audio, **options).items()}
    return {"transcribe": model.transcribe(audio, **options)["text"]}


def _load_openai(case: Case):
    import torch
    import whisper

    torch.set_num_threads(case.threads)
    return whisper.load_model(case.model, device=case.device)


def _run_openai(model, audio: np.ndarray, case: Case) -> dict[str, str]:
    return {
        task: model.transcribe(audio, task=task, temperature=0.0, beam_size=DECODES[case.decode],
                               condition_on_previous_text=True, fp16=case.device.startswith("cuda"),
                               verbose=None)["text"]
        for task in TASKS[case.task]
    }


def _load_faster(case: Case):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    engine = ENGINE_BY_NAME[case.engine]
    model = WhisperModel(case.model, device=case.device, compute_type=engine.compute_type,
                         cpu_threads=case.threads, num_workers=1)
    return BatchedInferencePipeline(model) if engine.batched else model


def _run_faster(model, audio: np.ndarray, case: Case) -> dict[str, str]:
    """Sequential without the voice detector, like the other engines; batched with the pipeline's defaults
    (its own Silero VAD) but for the decode settings every engine shares."""
    if ENGINE_BY_NAME[case.engine].batched:
        options = {"batch_size": BATCH_SIZE}
    else:
        options = {"condition_on_previous_text": True, "vad_filter": False}
    texts = {}
    for task in TASKS[case.task]:
        segments, _ = model.transcribe(audio, task=task, beam_size=DECODES[case.decode] or 1, temperature=0.0,
                                       **options)
        texts[task] = "".join(s.text for s in segments)  # segments is lazy: this runs the decode
    return texts


ADAPTERS = {"ours": (_load_ours, _run_ours), "openai": (_load_openai, _run_openai),
            "faster": (_load_faster, _run_faster)}


def case_worker(case: Case) -> dict:
    """Load twice and time the second load (files in the page cache, one-time initialisation done), then
    transcribe `runs` times."""
    audio = np.load(case.audio)
    load, run = ADAPTERS[ENGINE_BY_NAME[case.engine].family]
    first, load_first_s = _timed(load, case)
    del first
    gc.collect()
    model, load_s = _timed(load, case)
    walls = []
    for _ in range(case.runs):
        texts, wall = _timed(run, model, audio, case)
        walls.append(wall)
    return {"load_first_s": load_first_s, "load_s": load_s, "walls_s": walls, "texts": texts,
            "peak_rss_mib": _peak_rss_mib()}


def service_worker(spec: ServiceSpec) -> dict:
    """The same requests one after another, then all at once, on one TranscriptionService; its memory when
    idle (warmed up), at its peak, and once the load has ended (what traffic left behind)."""
    import torch

    from whisper_core.options import make_options
    from whisper_core.service import ServiceStats, TranscriptionService
    from whisper_core.speech_model import SpeechModel, load_model

    torch.set_num_threads(spec.threads)
    audios = [np.load(p) for p in spec.audio]
    service = TranscriptionService(load_model(device=spec.device))
    service.warm_up()
    gc.collect()
    time.sleep(AFTER_LOAD_S)  # as after the load: the worker hands back what the warm-up freed
    idle_rss = _current_rss_mib()
    plan, options = service.model.plan("both"), make_options(temperature=0.0, batch_size=spec.batch_size)

    def request(audio: np.ndarray) -> float:
        return _timed(lambda: service.submit(audio, plan, options))[1]

    sequential, sequential_s = _timed(lambda: [request(a) for a in audios])
    sequential_stats = asdict(service.stats)
    service.stats = ServiceStats()
    with ThreadPoolExecutor(max_workers=len(audios)) as pool:
        concurrent, concurrent_s = _timed(lambda: list(pool.map(request, audios)))
    gc.collect()
    time.sleep(AFTER_LOAD_S)  # the worker, idle again, hands the heap's free memory back
    return {"sequential": {"total_s": sequential_s, "latencies_s": sequential, "stats": sequential_stats},
            "concurrent": {"total_s": concurrent_s, "latencies_s": concurrent, "stats": asdict(service.stats)},
            "model_loads": SpeechModel.loads, "peak_rss_mib": _peak_rss_mib(), "idle_rss_mib": idle_rss,
            "after_rss_mib": _current_rss_mib()}


def _random_network(dims: dict, device: str):
    """A network of the given shape with random fp16 weights: speed does not depend on the values."""
    import torch

    from whisper_core.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    with torch.device(device):
        net = Whisper(ModelDimensions(**dims)).half().eval()
    with torch.no_grad():  # the positional tables are allocated, not initialised
        net.encoder.positional_embedding.normal_(0, 0.02)
        net.decoder.positional_embedding.normal_(0, 0.02)
    return net


def _greedy_windows(net, mel, tokens: int):
    """Encode a batch of windows and decode `tokens` tokens greedily for each: one window's work."""
    import torch

    batch = mel.shape[0]
    state = net.decoder.start(net.encoder(mel), batch, torch.zeros(batch, dtype=torch.long, device=mel.device), tokens)
    next_tokens = torch.full((batch, 1), SOT, device=mel.device)
    out = []
    for _ in range(tokens):
        next_tokens = net.decoder.logits(net.decoder(next_tokens, state)[:, -1]).argmax(-1, keepdim=True)
        out.append(next_tokens)
    return torch.cat(out, dim=1)


def _windows_per_second(net, batch: int) -> dict:
    import torch

    mel = torch.randn(batch, net.dims.n_mels, 3000, device=net.device, dtype=net.dtype)
    _greedy_windows(net, mel, GPU_TOKENS)  # kernels chosen, allocator warmed
    torch.cuda.synchronize(net.device)
    torch.cuda.reset_peak_memory_stats(net.device)
    start = time.perf_counter()
    for _ in range(GPU_REPEATS):
        _greedy_windows(net, mel, GPU_TOKENS)
    torch.cuda.synchronize(net.device)
    elapsed = time.perf_counter() - start
    return {"batch": batch, "windows_per_s": batch * GPU_REPEATS / elapsed,
            "peak_gpu_mib": torch.cuda.max_memory_allocated(net.device) / 2**20}


def _teacher_forced_logits(net, mel, tokens):
    import torch

    state = net.decoder.start(net.encoder(mel), 1, torch.zeros(1, dtype=torch.long, device=mel.device),
                              tokens.shape[1])
    return net.decoder.logits(net.decoder(tokens, state))[0].float()


def _fp16_parity(audio: np.ndarray, device: str) -> dict:
    """fp16 against fp32 logits on the same real weights, along fp32's own greedy path over the first window."""
    import torch

    from whisper_core.audio import N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper_core.loading import load_network

    net16 = load_network(device=device)[0]
    net32 = copy.deepcopy(net16).float()  # the same float16 values, widened
    mel = log_mel_spectrogram(pad_or_trim(audio, N_SAMPLES), net32.dims.n_mels, device=device)[None]
    sot = torch.full((1, 1), SOT, device=device)
    tokens = torch.cat([sot, _greedy_windows(net32, mel, GPU_TOKENS)[:, :-1]], dim=1)
    logits32 = _teacher_forced_logits(net32, mel, tokens)
    logits16 = _teacher_forced_logits(net16, mel.half(), tokens)
    return {"positions": tokens.shape[1], "max_abs_diff": (logits16 - logits32).abs().max().item(),
            "top1_agreement": (logits16.argmax(-1) == logits32.argmax(-1)).float().mean().item()}


def gpu_worker(spec: GpuSpec) -> dict:
    """Windows per second at each batch size for base (real weights) and large-v3 (random weights, same
    shape), and the fp16-against-fp32 check."""
    import torch

    from whisper_core.loading import load_network

    networks = (("base", "bundled", lambda: load_network(device=spec.device)[0]),
                ("large-v3", "random", lambda: _random_network(LARGE_V3_DIMS, spec.device)))
    throughput = []
    with torch.inference_mode():
        for name, weights, make in networks:
            net = make()
            throughput += [{"model": name, "weights": weights, **_windows_per_second(net, b)} for b in GPU_BATCHES]
            del net
            torch.cuda.empty_cache()
        try:
            parity = _fp16_parity(np.load(spec.audio), spec.device)
        except Exception as e:  # the throughput table stands without it
            parity = {"error": f"{type(e).__name__}: {e}"}
    return {"device_name": torch.cuda.get_device_name(spec.device), "throughput": throughput, "parity": parity}


def probe_worker(spec: ProbeSpec) -> dict:
    """The versions of the reference packages in this interpreter (None: not installed)."""
    from importlib import metadata

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{p: version(p) for p in spec.packages}}


WORKERS = {"case": (Case, case_worker), "service": (ServiceSpec, service_worker), "gpu": (GpuSpec, gpu_worker),
           "probe": (ProbeSpec, probe_worker)}


def run_worker(spec_json: str, out_path: str) -> None:
    spec = json.loads(spec_json)
    spec_type, work = WORKERS[spec.pop("kind")]
    Path(out_path).write_text(json.dumps(work(spec_type(**spec))))


# ---------------------------------------------------------------- parent side


def spawn(python: str, kind: str, spec, threads: int, workdir: Path) -> dict:
    """Run one worker in a fresh process with `python`; its result, or {"error": its last line of stderr}."""
    fd, out = tempfile.mkstemp(suffix=".json", dir=workdir)
    os.close(fd)
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads)}
    command = [python, "-P", str(BENCH_SCRIPT), "--worker", json.dumps({"kind": kind, **asdict(spec)}),
               "--worker-out", out]
    try:
        proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        return {"error": f"cannot run {python}: {e.strerror}"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1]}
    return json.loads(Path(out).read_text())


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(config: BenchConfig, reference: dict) -> dict:
    import torch

    return {"cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "torch": torch.__version__, "threads": config.threads,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "reference": reference}


def decode_files(files: tuple[str, ...], workdir: Path) -> dict[str, tuple[str, float]]:
    """Each file decoded once, before any timing, to a .npy every worker reads: {file: (npy, seconds)}."""
    from whisper_core.audio import SAMPLE_RATE, load_audio

    decoded = {}
    for i, file in enumerate(dict.fromkeys(files)):
        samples = load_audio(file)
        target = workdir / f"audio{i}.npy"
        np.save(target, samples)
        decoded[file] = (str(target), len(samples) / SAMPLE_RATE)
    return decoded


def _write_openai_checkpoint(target: Path, state_dict: dict, dims) -> Path:
    import torch

    from whisper_core.openai_checkpoint import split_attention

    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        torch.save({"dims": asdict(dims), "model_state_dict": split_attention(state_dict, dims)}, partial)
        partial.replace(target)
    return target


def _write_ct2_dir(target: Path, model_dir: Path, parts: list[Path]) -> Path:
    """A faster-whisper model directory: the bundled model.bin halves joined, beside its vocabulary."""
    if not target.is_dir():
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        partial.mkdir(parents=True, exist_ok=True)
        with open(partial / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        for name in CT2_FILES:
            shutil.copy(model_dir / name, partial / name)
        partial.rename(target)
    return target


def prepare_models(families: set[str]) -> dict[str, str]:
    """What each engine family loads: our bundled base (its conversion cache built now, not in a timed
    load) and the same weights in the reference engines' formats, written once into our cache folder."""
    from whisper_core.loading import _fingerprint, bundled_base, cache_dir, load_checkpoint

    model_dir, parts = bundled_base()
    state_dict, dims, _, _ = load_checkpoint()
    root = cache_dir() / "bench" / _fingerprint(parts)
    models = {"ours": ""}
    if "openai" in families:
        models["openai"] = str(_write_openai_checkpoint(root / "base.pt", state_dict, dims))
    if "faster" in families:
        models["faster"] = str(_write_ct2_dir(root / "ct2", model_dir, parts))
    return models


def select_engines(config: BenchConfig, reference: dict) -> tuple[list[Engine], list[str]]:
    """The engines asked for that can run, and a note for each that cannot."""
    engines, notes = [], []
    for engine in (ENGINE_BY_NAME[name] for name in config.engines):
        if engine.package is None or reference.get(engine.package):
            engines.append(engine)
        elif "error" in reference:
            notes.append(f"{engine.label}: {reference['error']}")
        else:
            notes.append(f"{engine.label}: not installed for {config.reference_python} "
                         "(pip install -r requirements-bench.txt)")
    return engines, notes


def run_cases(config: BenchConfig, engines: list[Engine], audio: dict, models: dict, workdir: Path) -> list[dict]:
    """Engines interleaved within each file, decode and task, so that a noisy neighbour hits them alike."""
    combos = [(f, d, t, e) for f in config.files for d in config.decodes for t in config.tasks for e in engines]
    records = []
    for i, (file, decode, task, engine) in enumerate(combos, start=1):
        _progress(f"[{i}/{len(combos)}] {engine.label}, {DECODE_LABELS[decode]}, {TASK_LABELS[task]}: {file}")
        case = Case(engine.name, decode, task, file, audio[file][0], models[engine.family], config.device,
                    config.runs, config.threads)
        python = sys.executable if engine.family == "ours" else config.reference_python
        records.append({"case": asdict(case), "audio_s": audio[file][1],
                        **spawn(python, "case", case, config.threads, workdir)})
    return records


def run_service(config: BenchConfig, audio: dict, workdir: Path) -> dict:
    files = [config.files[i % len(config.files)] for i in range(config.users)]
    modes = {}
    for label, batch_size in SERVICE_MODES.items():
        _progress(f"service, {label}: {config.users} requests one after another, then at once")
        spec = ServiceSpec([audio[f][0] for f in files], config.device, config.threads, batch_size)
        modes[label] = spawn(sys.executable, "service", spec, config.threads, workdir)
    return {"files": files, "modes": modes}


def run_gpu(config: BenchConfig, audio: dict, workdir: Path) -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    device = config.device if config.device.startswith("cuda") else "cuda"
    _progress(f"GPU: {device}")
    return spawn(sys.executable, "gpu", GpuSpec(audio[config.files[0]][0], device), config.threads, workdir)


def run_bench(config: BenchConfig) -> dict:
    report: dict = {"config": {**asdict(config), "batch_size": BATCH_SIZE}, "not_run": [], "cases": [],
                    "service": None}
    with tempfile.TemporaryDirectory(prefix="whisper-bench-") as tmp:
        workdir = Path(tmp)
        audio = decode_files(config.files, workdir)
        reference = {}
        if not config.gpu_only:
            reference = spawn(config.reference_python, "probe", ProbeSpec(list(REFERENCE_PACKAGES)),
                              config.threads, workdir)
            engines, report["not_run"] = select_engines(config, reference)
            models = prepare_models({e.family for e in engines})
            report["cases"] = run_cases(config, engines, audio, models, workdir)
            if config.users > 0:
                report["service"] = run_service(config, audio, workdir)
        report["machine"] = machine(config, reference)
        report["gpu"] = run_gpu(config, audio, workdir)
    return report


# ---------------------------------------------------------------- the report


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _key(record: dict) -> tuple[str, str, str]:
    case = record["case"]
    return case["file"], case["decode"], case["task"]


def _by_key(records: list[dict], engine: str) -> dict[tuple[str, str, str], dict]:
    return {_key(r): r for r in records if r["case"]["engine"] == engine and "error" not in r}


def _ratio(ours: dict | None, record: dict | None) -> str:
    """Our best wall time over the other's: below 1, ours is faster."""
    if ours is None or record is None or "error" in record:
        return "—"
    return f"{min(ours['walls_s']) / min(record['walls_s']):.2f}"


def _wer(ours: dict | None, record: dict) -> str:
    from whisper_core.metrics import error_rate

    if ours is None or record is ours:
        return "—"
    return " / ".join(f"{error_rate(ours['texts'][t], record['texts'][t]):.1%}" for t in TASKS[record["case"]["task"]])


def machine_line(m: dict) -> str:
    line = (f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, "
            f"{m['threads']} threads per engine")
    if m["gpu"]:
        line += f", GPU {m['gpu']}"
    ref = m["reference"]
    engines = [f"{p} {ref[p]}" for p in REFERENCE_PACKAGES[:3] if ref.get(p)]
    if engines:
        line += f"; reference engines: {', '.join(engines)} (Python {ref['python']}, torch {ref.get('torch')})"
    return line + "."


def engine_table(records: list[dict]) -> str:
    """A row per measurement, its wall time set against ours and ours batched: batched engines are read
    against the batched baseline, and ours batched against ours."""
    run = {r["case"]["engine"] for r in records}
    baselines = {name: _by_key(records, name) for name in BASELINES if name in run}
    ours = _by_key(records, "ours")
    rows = []
    for r in records:
        c = r["case"]
        head = [Path(c["file"]).name, f"{r['audio_s']:.1f}", ENGINE_BY_NAME[c["engine"]].label,
                DECODE_LABELS[c["decode"]], TASK_LABELS[c["task"]]]
        if "error" in r:
            rows.append(head + ["—", f"failed: {r['error']}", "—", "—"] + ["—"] * len(baselines) + ["—"])
            continue
        rows.append(head + [f"{r['load_s']:.2f}", ", ".join(f"{w:.2f}" for w in r["walls_s"]),
                            f"{min(r['walls_s']) / r['audio_s']:.3f}", f"{r['peak_rss_mib']:.0f}"]
                    + [_ratio(base.get(_key(r)), r) for base in baselines.values()]
                    + [_wer(ours.get(_key(r)), r)])
    headers = (["file", "audio s", "engine", "decode", "task", "load s", "wall s, each run", "RTF", "peak RSS MiB"]
               + [f"{ENGINE_BY_NAME[name].label} ÷ this" for name in baselines] + ["WER vs ours"])
    return _table(headers, rows)


def ratio_table(records: list[dict]) -> str | None:
    """Each of our engines over each reference engine, per file, decode and task: absolute times vary
    between machines, ratios much less."""
    present = [e for e in ENGINES if any(r["case"]["engine"] == e.name for r in records)]
    ours = [e for e in present if e.family == "ours"]
    others = [e for e in present if e.family != "ours"]
    if not ours or not others:
        return None
    by_engine = {(r["case"]["engine"], *_key(r)): r for r in records if "error" not in r}
    rows = [[Path(file).name, DECODE_LABELS[decode], TASK_LABELS[task], engine.label]
            + [_ratio(by_engine[(engine.name, file, decode, task)], by_engine.get((e.name, file, decode, task)))
               for e in others]
            for engine in ours
            for (name, file, decode, task) in by_engine if name == engine.name]
    return _table(["file", "decode", "task", "our engine"] + [f"÷ {e.label}" for e in others], rows)


def service_section(service: dict) -> str:
    """A row per decoding mode and way of arriving: time, latency, batching, memory."""
    n = len(service["files"])
    rows, failed = [], []
    for label, m in service["modes"].items():
        if "error" in m:
            failed.append(f"Service, {label}: failed: {m['error']}.")
            continue
        memory = [f"{m['idle_rss_mib']:.0f}", f"{m['peak_rss_mib']:.0f}", f"{m['after_rss_mib']:.0f}"]
        rows += [[label, f"{n} one after another" if way == "sequential" else f"{n} at once",
                  f"{m[way]['total_s']:.2f}", f"{60 * n / m[way]['total_s']:.1f}",
                  ", ".join(f"{x:.2f}" for x in m[way]["latencies_s"]), str(m[way]["stats"]["largest_step"])]
                 + (memory if way == "concurrent" else ["", "", ""])
                 for way in ("sequential", "concurrent")]
    table = _table(["decoding", "requests", "total s", "requests per minute", "latency s, each request",
                    "largest step", "idle RSS MiB", "peak RSS MiB", "RSS after MiB"], rows)
    loads = {m["model_loads"] for m in service["modes"].values() if "error" not in m}
    files = ", ".join(Path(f).name for f in service["files"])
    return "\n\n".join([table, f"Requests: {files}. A fresh process per decoding mode; model loads in each: "
                         f"{', '.join(map(str, sorted(loads)))}. RSS after: a second after the last answer.",
                         *failed])


def gpu_section(gpu: dict | None) -> str:
    if gpu is None:
        return "GPU: skipped (no CUDA device)."
    if "error" in gpu:
        return f"GPU: failed: {gpu['error']}"
    rows = [[t["model"], t["weights"], str(t["batch"]), f"{t['windows_per_s']:.1f}", f"{t['peak_gpu_mib']:.0f}"]
            for t in gpu["throughput"]]
    table = _table(["model", "weights", "batch", "windows per s", "peak GPU MiB"], rows)
    p = gpu["parity"]
    parity = (f"failed: {p['error']}" if "error" in p else f"{p['positions']} positions of the first window: "
              f"max |Δ logit| {p['max_abs_diff']:.3f}, top-1 agreement {p['top1_agreement']:.1%}")
    return (f"{gpu['device_name']}, fp16; a window is the encoder and {GPU_TOKENS} greedy tokens.\n\n{table}\n\n"
            f"fp16 against fp32 on the bundled base, {parity}.")


def render(report: dict) -> str:
    config = report["config"]
    parts = [machine_line(report["machine"])]
    if not config["gpu_only"]:
        notes = ("Load: the second load in a fresh process (files cached). RTF: the fastest run ÷ audio "
                 "length. WER vs ours: transcript (/ translation).")
        if any(ENGINE_BY_NAME[r["case"]["engine"]].batched for r in report["cases"]):
            notes += (f" Batched: the speech cut at its pauses by the engine's own voice detector, "
                      f"{config['batch_size']} chunks at once, no previous-text prompt between chunks.")
        parts += [f"### Engines ({config['device']}, runs per measurement: {config['runs']})", notes,
                  engine_table(report["cases"])]
        parts += [f"Not run: {note}." for note in report["not_run"]]
        if ratios := ratio_table(report["cases"]):
            parts += ["### Ratios: our wall time ÷ the reference's (below 1: ours is faster)", ratios]
        if report["service"] is not None:
            parts += ["### Users at once: one TranscriptionService, greedy", service_section(report["service"])]
    parts += ["### GPU", gpu_section(report["gpu"])]
    return "\n\n".join(parts)


def failed(report: dict) -> bool:
    sections = [*report["cases"], *(report["service"] or {"modes": {}})["modes"].values(), report["gpu"] or {}]
    return any("error" in s for s in sections)


# ---------------------------------------------------------------- command line


def _names(allowed) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return names

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m whisper_core.bench",
                                description="Speed of our engine beside openai-whisper and faster-whisper.")
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files, each measured on its own")
    p.add_argument("--runs", type=int, default=RUNS, help="transcriptions per measurement, each reported")
    p.add_argument("--threads", type=int, default=THREADS, help="CPU threads for every engine")
    p.add_argument("--reference-python", default=sys.executable,
                   help="interpreter with requirements.txt and requirements-bench.txt, for the reference engines")
    p.add_argument("--engines", type=_names(ENGINE_BY_NAME), default=tuple(ENGINE_BY_NAME),
                   help=f"comma-separated, of {', '.join(ENGINE_BY_NAME)}")
    p.add_argument("--decodes", type=_names(DECODES), default=tuple(DECODES), help="greedy,beam5")
    p.add_argument("--tasks", type=_names(TASKS), default=tuple(TASKS), help="transcribe,both")
    p.add_argument("--users", type=int, default=USERS, help="requests on one service at once; 0 skips")
    p.add_argument("--device", default="cpu", help="where the engines and the service run (cpu, cuda)")
    p.add_argument("--gpu-only", action="store_true", help="only the GPU section")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="write every raw number here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and not args.files:
        p.error("give at least one audio file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        run_worker(args.worker, args.worker_out)
        return 0
    config = BenchConfig(tuple(args.files), args.runs, args.threads, args.reference_python, args.engines,
                         args.decodes, args.tasks, args.users, args.device, args.gpu_only, args.json_path)
    report = run_bench(config)
    print(render(report))
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(report, indent=2))
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
