"""The inference runtime: ModelRunner in process, and the worker process behind WorkerProcess.

The reference for every result is torchvision's own pretrained code path, unchanged:
``torchvision.models.resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)`` with
``weights.transforms()``, one image at a time.  Pretrained weights cannot be
downloaded here, so generated weights (tests/helpers/imagegen.py) are put where
torch.hub looks before downloading.  Agreement means same top-5 classes, same labels,
and probabilities within 1e-4.

Tests marked ``integration`` start real worker processes (each imports torch, a few
seconds).  Everything shares one set of generated weights and images per session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
import trio
import trio.testing
from PIL import Image
from torchvision.transforms import InterpolationMode

from inference import models
from inference.models import (
    INCEPTION_V3,
    RESNET50,
    canonical_model,
    preprocess_spec,
    torchvision_weights,
    weights_sdfs_name,
)
from inference.runtime import ModelRunner
from inference.worker_client import (
    THREADS_ENV,
    RequestError,
    WorkerError,
    WorkerProcess,
    _FrameReader,
    default_threads,
    describe_exit,
    host_cores,
)
from inference.worker_main import FrameError, decode_body, encode_frame, frame_length
from inference.worker_main import error_line as one_line
from tests.helpers.imagegen import CORRUPT, install_in_hub_cache, make_images, make_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
PROB_TOL = 1e-4
# A worker start imports torch (seconds); a hard bound keeps a hung worker from hanging CI.
WORKER_DEADLINE = 90

TopK = tuple[list[int], list[float]]
# The two models served from the start; tests/inference/test_models.py covers the rest.
MODELS = (RESNET50, INCEPTION_V3)


@dataclass(frozen=True)
class Assets:
    images: list[Path]  # includes the corrupt one
    weights: dict[str, Path]
    torch_home: Path  # a torch.hub cache holding the same weights as torchvision's own

    @property
    def inputs(self) -> list[str]:
        return [str(p) for p in self.images]

    @property
    def names(self) -> list[str]:
        return [f"images/{p.name}" for p in self.images]


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    root = tmp_path_factory.mktemp("inference")
    images = make_images(root / "images")
    weights = {m: make_weights(root / weights_sdfs_name(m), m) for m in MODELS}
    home = root / "torch_home"
    for m in MODELS:
        install_in_hub_cache(home, m, weights[m])
    return Assets(images, weights, home)


@pytest.fixture(scope="session")
def reference(assets: Assets) -> dict[str, dict[str, TopK]]:
    """model -> SDFS name -> (top-5 indices, probabilities), by torchvision's own code."""
    torch.set_num_threads(2)
    out: dict[str, dict[str, TopK]] = {}
    for model in MODELS:
        weights = torchvision_weights(model)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TORCH_HOME", str(assets.torch_home))
            net = getattr(torchvision.models, model)(weights=weights).eval()
        transform = weights.transforms()
        rows: dict[str, TopK] = {}
        for path, name in zip(assets.images, assets.names, strict=True):
            if path.name == CORRUPT:
                continue
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            with torch.no_grad():
                probs = torch.softmax(net(x), dim=1)[0]
            top = torch.topk(probs, 5)
            rows[name] = (top.indices.tolist(), top.values.tolist())
        out[model] = rows
    return out


@pytest.fixture(scope="session")
def runner() -> ModelRunner:
    return ModelRunner(device="cpu", threads=2)


def assert_rows_match(
    rows: list[dict[str, Any]], names: list[str], expected: dict[str, TopK]
) -> None:
    labels = torchvision_weights(RESNET50).meta["categories"]
    assert [r["input"] for r in rows] == names
    for row in rows:
        assert row["seconds"] > 0
        if row["input"].endswith(CORRUPT):
            assert "top5" not in row
            assert row["error"].startswith("cannot decode image:")
            assert "\n" not in row["error"]
            continue
        assert "error" not in row
        indices, probs = expected[row["input"]]
        assert [entry[0] for entry in row["top5"]] == indices, row["input"]
        assert [entry[1] for entry in row["top5"]] == [labels[i] for i in indices]
        assert [entry[2] for entry in row["top5"]] == pytest.approx(probs, abs=PROB_TOL)


# --- model names and preprocessing (no torch needed) ---------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("resnet50", RESNET50),
        ("ResNet50", RESNET50),
        ("RESNET50", RESNET50),
        (" resnet_50 ", RESNET50),
        ("inception_v3", INCEPTION_V3),
        ("InceptionV3", INCEPTION_V3),
        ("inceptionv3", INCEPTION_V3),
        ("Inception-V3", INCEPTION_V3),
    ],
)
def test_canonical_model_accepts_spellings(name: str, canonical: str) -> None:
    assert canonical_model(name) == canonical


@pytest.mark.parametrize("name", ["noop", "resnet", "resnet_5", "inception", "", "vgg17"])
def test_canonical_model_refuses_others_in_one_line(name: str) -> None:
    with pytest.raises(ValueError, match="valid models are the 80 torchvision") as info:
        canonical_model(name)
    assert "\n" not in str(info.value)


def test_weights_sdfs_names() -> None:
    assert weights_sdfs_name("ResNet50") == "models/resnet50.pth"
    assert weights_sdfs_name("InceptionV3") == "models/inception_v3.pth"


def test_models_module_is_importable_without_torch() -> None:
    code = (
        "import sys\n"
        "from inference.models import canonical_model, weights_sdfs_name, preprocess_spec\n"
        "assert canonical_model('InceptionV3') == 'inception_v3'\n"
        "assert preprocess_spec('resnet50').crop == 224\n"
        "heavy = {'torch', 'torchvision', 'numpy', 'PIL'}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("model", MODELS)
def test_preprocess_spec_matches_torchvision_presets(model: str) -> None:
    preset = torchvision_weights(model).transforms()
    spec = preprocess_spec(model)
    assert preset.resize_size == [spec.resize]
    assert preset.crop_size == [spec.crop]
    assert preset.mean == pytest.approx(list(spec.mean))
    assert preset.std == pytest.approx(list(spec.std))
    assert preset.interpolation == InterpolationMode.BILINEAR
    assert preset.antialias is True


def test_labels_are_imagenet_and_offline() -> None:
    labels = models.imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench"
    assert labels == list(torchvision_weights(INCEPTION_V3).meta["categories"])


# --- ModelRunner in this process -------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_runner_matches_torchvision(
    model: str, assets: Assets, reference: dict[str, dict[str, TopK]], runner: ModelRunner
) -> None:
    result = runner.run(model, str(assets.weights[model]), assets.inputs, assets.names)
    assert_rows_match(result.rows, assets.names, reference[model])
    assert set(result.timing) == {"load", "decode", "forward", "total", "cpu"}
    assert result.timing["forward"] > 0
    assert result.timing["total"] >= result.timing["decode"] + result.timing["forward"]


def test_runner_chunks_and_spellings_give_the_same_rows(
    assets: Assets, reference: dict[str, dict[str, TopK]]
) -> None:
    # max_batch=2 cuts the first five inputs into three forward passes, one of them
    # holding the corrupt image; the results must not depend on where the cuts fall.
    small = ModelRunner(device="cpu", threads=2, max_batch=2)
    inputs, names = assets.inputs[:5], assets.names[:5]
    assert any(n.endswith(CORRUPT) for n in names)
    result = small.run("ResNet50", str(assets.weights[RESNET50]), inputs, names)
    assert_rows_match(result.rows, names, reference[RESNET50])


def test_corrupt_only_batch_gives_error_rows(assets: Assets, runner: ModelRunner) -> None:
    bad = [p for p in assets.images if p.name == CORRUPT]
    result = runner.run(RESNET50, str(assets.weights[RESNET50]), [str(bad[0])] * 2, ["a", "b"])
    assert [r["input"] for r in result.rows] == ["a", "b"]
    assert all("error" in r and "top5" not in r for r in result.rows)
    assert result.timing["forward"] == 0.0


def test_missing_image_is_an_error_row(assets: Assets, runner: ModelRunner) -> None:
    inputs = [assets.inputs[0], str(assets.images[0].parent / "no-such.png")]
    result = runner.run(RESNET50, str(assets.weights[RESNET50]), inputs, ["ok", "missing"])
    assert "top5" in result.rows[0]
    assert "No such file" in result.rows[1]["error"]


def test_runner_keeps_models_warm_and_reloads_changed_weights(
    assets: Assets, tmp_path: Path
) -> None:
    r = ModelRunner(device="cpu", threads=2)
    path = tmp_path / "resnet50.pth"
    path.write_bytes(assets.weights[RESNET50].read_bytes())
    assert r.load(RESNET50, str(path)) > 0
    first = r.warm_model(RESNET50)
    assert r.load("ResNet50", str(path)) == 0.0
    # Fetched again from SDFS: same bytes, new mtime.  Hashed, not reloaded.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert r.load(RESNET50, str(path)) == 0.0
    assert r.warm_model(RESNET50) is first

    state = torch.load(path, weights_only=True)
    state["fc.bias"] += 1.0
    torch.save(state, path)
    assert r.load(RESNET50, str(path)) > 0
    assert r.warm_model(RESNET50) is not first
    assert r.describe()["models"] == [RESNET50]


def test_weights_for_another_model_are_refused_in_one_line(assets: Assets) -> None:
    r = ModelRunner(device="cpu", threads=2)
    with pytest.raises(ValueError, match=r"is not a inception_v3 state_dict: \d+ missing") as info:
        r.load(INCEPTION_V3, str(assets.weights[RESNET50]))
    assert "\n" not in str(info.value)


def test_no_weights_file_needs_permission_to_download(
    assets: Assets, reference: dict[str, dict[str, TopK]], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = ModelRunner(device="cpu", threads=2)
    with pytest.raises(ValueError, match="downloading is not allowed"):
        r.load(RESNET50, None, allow_download=False)
    # Allowed: torchvision's own weights, here found in the hub cache instead of downloaded.
    monkeypatch.setenv("TORCH_HOME", str(assets.torch_home))
    result = r.run(RESNET50, None, assets.inputs[:2], assets.names[:2], allow_download=True)
    assert_rows_match(result.rows, assets.names[:2], reference[RESNET50])


def test_device_and_threads(runner: ModelRunner) -> None:
    info = runner.describe()
    assert info["device"] == "cpu"
    assert info["gpu"] is None
    assert info["threads"] == 2
    assert info["torch"] == torch.__version__
    with pytest.raises(ValueError, match="unsupported device"):
        ModelRunner(device="tpu")
    with pytest.raises(ValueError, match="at least 1"):
        ModelRunner(threads=0)


def test_one_line() -> None:
    assert one_line(RuntimeError("a\n  b\tc")) == "RuntimeError: a b c"
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line(ValueError("x" * 1000))) == 300


# --- framing and the client's pure parts -----------------------------------------------


def test_frames_round_trip_and_bounds() -> None:
    msg = {"op": "run", "id": 7, "inputs": ["a.jpg"], "weights": None}
    frame = encode_frame(msg)
    assert frame_length(frame[:4]) == len(frame) - 4
    assert decode_body(frame[4:]) == msg
    with pytest.raises(FrameError):
        frame_length((2**31).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="must be a map"):
        decode_body(b"\x91\x01")  # the msgpack array [1]
    with pytest.raises(ValueError, match="undecodable"):
        decode_body(b"\xc1")  # a byte msgpack never uses


async def test_frame_reader_survives_cancellation_and_split_frames() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = _FrameReader(receive)
    data = encode_frame({"id": 1}) + encode_frame({"id": 2, "pad": "x" * 1000})
    # Nothing to read yet: the cancelled read must leave the reader usable.
    with trio.move_on_after(0.05):
        await reader.read()
    for i in range(0, len(data), 7):  # frames split across many small writes
        await send.send_all(data[i : i + 7])
    assert await reader.read() == {"id": 1}
    assert (await reader.read() or {})["id"] == 2
    await send.aclose()
    assert await reader.read() is None


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    cores = host_cores()
    assert default_threads() == cores
    assert default_threads(nodes_per_host=cores) == 1
    assert default_threads(nodes_per_host=10 * cores) == 1  # never 0
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_threads(nodes_per_host=100) == 3
    assert WorkerProcess(nodes_per_host=100).threads == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        default_threads()


async def test_worker_that_cannot_be_spawned_is_a_worker_error(tmp_path: Path) -> None:
    worker = WorkerProcess(threads=1, python=str(tmp_path / "no-python"))
    with pytest.raises(WorkerError, match="cannot start the inference worker"):
        await worker.hello()
    assert worker.pid is None


def test_describe_exit() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


# --- the worker process ----------------------------------------------------------------

CLIENT_SCRIPT = """
import json, sys
import trio
from inference.models import canonical_model
from inference.worker_client import WorkerProcess

args = json.loads(sys.argv[1])

async def main():
    async with WorkerProcess(threads=2, log_path=args["log"]) as worker:
        hello = await worker.hello()
        runs = {}
        for model, weights in args["weights"].items():
            runs[model] = await worker.run(model, weights, args["inputs"], args["names"])
    heavy = {"torch", "torchvision", "numpy", "PIL"}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    print(json.dumps({"hello": hello, "runs": runs, "heavy": loaded}))

trio.run(main)
"""


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


@pytest.mark.integration
def test_worker_process_matches_torchvision_and_client_never_imports_torch(
    assets: Assets, reference: dict[str, dict[str, TopK]], tmp_path: Path
) -> None:
    """The node side (models + worker_client) in a fresh interpreter, as a node runs it."""
    log = tmp_path / "worker.log"
    args = {
        "log": str(log),
        # Spelled as users may type them.
        "weights": {
            "ResNet50": str(assets.weights[RESNET50]),
            "InceptionV3": str(assets.weights[INCEPTION_V3]),
        },
        "inputs": assets.inputs,
        "names": assets.names,
    }
    out = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, json.dumps(args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=WORKER_DEADLINE,
    )
    assert out.returncode == 0, f"{out.stderr[-3000:]}\nworker log:\n{_log_tail(log)}"
    got = json.loads(out.stdout)
    assert got["heavy"] == [], "the node side imported heavy modules"
    hello = got["hello"]
    assert hello["ok"] is True
    assert hello["device"] in ("cpu", "cuda:0")
    assert hello["threads"] == 2 or hello["device"] != "cpu"
    assert hello["torch"] == torch.__version__
    for spelled, model in (("ResNet50", RESNET50), ("InceptionV3", INCEPTION_V3)):
        run = got["runs"][spelled]
        assert run["ok"] is True
        assert_rows_match(run["results"], assets.names, reference[model])
        assert set(run["timing"]) == {"load", "decode", "forward", "total", "cpu"}
    assert "ready: device" in log.read_text()


@pytest.mark.integration
async def test_worker_killed_mid_run_fails_clearly_then_restarts(
    assets: Assets, reference: dict[str, dict[str, TopK]], tmp_path: Path
) -> None:
    weights = assets.weights[RESNET50]
    worker = WorkerProcess(threads=2, log_path=tmp_path / "worker.log")
    with trio.fail_after(WORKER_DEADLINE):
        async with worker:
            await worker.load(RESNET50, weights)
            first_pid = worker.pid
            assert first_pid is not None
            failure: list[BaseException] = []

            async def doomed() -> None:
                try:
                    await worker.run(RESNET50, weights, assets.inputs * 4)
                except WorkerError as exc:
                    failure.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(doomed)
                # Every task blocked: the request is written and its caller awaits the
                # reply; 32 images keep the worker busy for a while yet.
                await trio.testing.wait_all_tasks_blocked()
                assert worker.busy
                os.kill(first_pid, signal.SIGKILL)
            assert len(failure) == 1, "the in-flight request should have failed"
            message = str(failure[0])
            assert f"pid {first_pid}" in message
            assert "killed by SIGKILL" in message
            assert f"run resnet50 on {4 * len(assets.inputs)} images" in message
            assert "new worker starts on the next request" in message

            # The next request starts a fresh worker and succeeds.
            reply = await worker.run(RESNET50, weights, assets.inputs, assets.names)
            assert worker.pid != first_pid
            assert worker.starts == 2
            assert_rows_match(reply["results"], assets.names, reference[RESNET50])
    assert worker.pid is None


@pytest.mark.integration
async def test_worker_cancelled_request_and_refusals(assets: Assets, tmp_path: Path) -> None:
    weights = assets.weights[RESNET50]
    worker = WorkerProcess(threads=2, log_path=tmp_path / "worker.log")
    with trio.fail_after(WORKER_DEADLINE):
        async with worker:
            hello = await worker.hello()
            pid = worker.pid
            assert hello["threads"] == 2
            # The caller gives up while the worker computes; the worker is kept (warm), and
            # the late reply must not be mistaken for the next request's.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run, RESNET50, weights, assets.inputs)
                # Every task blocked: the request is written and its caller awaits the reply.
                await trio.testing.wait_all_tasks_blocked()
                assert worker.busy
                nursery.cancel_scope.cancel()
            assert worker.busy  # the reply is still owed
            reply = await worker.run(RESNET50, weights, assets.inputs[:2], ["x", "y"])
            assert [r["input"] for r in reply["results"]] == ["x", "y"]
            assert worker.pid == pid and worker.starts == 1

            # Refusals are RequestErrors with the worker's one-line reason; it keeps serving.
            with pytest.raises(RequestError, match="unknown model 'vgg17'"):
                await worker.run("vgg17", weights, assets.inputs[:1])
            with pytest.raises(RequestError, match="No such file"):
                await worker.load(RESNET50, tmp_path / "missing.pth")
            with pytest.raises(RequestError, match="unknown op 'dance'"):
                await worker.request({"op": "dance"})
            with pytest.raises(RequestError, match="'inputs' must be a list of strings"):
                await worker.request({"op": "run", "model": RESNET50, "inputs": "a.jpg"})
            loaded = await worker.load(RESNET50, weights)
            assert loaded["seconds"] == 0.0  # still warm
            assert worker.pid == pid and worker.starts == 1

            # aclose() during a request: EOF on stdin lets the worker finish the request
            # in hand and exit by itself; the caller gets its answer.
            finished: list[dict[str, Any]] = []

            async def last() -> None:
                finished.append(await worker.run(RESNET50, weights, assets.inputs[:4]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(last)
                await trio.testing.wait_all_tasks_blocked()
                assert worker.busy
                await worker.aclose()
            assert len(finished[0]["results"]) == 4
            assert worker.pid is None
    assert "stdin closed; exiting" in (tmp_path / "worker.log").read_text()


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without a GPU")
async def test_worker_that_cannot_start_says_why(tmp_path: Path) -> None:
    worker = WorkerProcess(threads=1, device="cuda", log_path=tmp_path / "worker.log")
    with trio.fail_after(WORKER_DEADLINE):
        with pytest.raises(
            WorkerError, match=r"cannot serve: worker start-up failed: .*no CUDA GPU"
        ):
            await worker.hello()
        assert worker.pid is None
        await worker.aclose()


@pytest.fixture(autouse=True)
def _no_threads_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # An operator's $IDUNNO_THREADS must not change what the tests expect.
    monkeypatch.delenv(THREADS_ENV, raising=False)
    yield
