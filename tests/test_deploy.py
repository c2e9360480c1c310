"""helpers.deploy: export, the runtimes, their int8 forms, serving stats and the packed 4-bit file; bad input."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers import deploy, fit, pipeline, small_vgg
from helpers.compress import freeze, fuse_bn, quantize

DATA = torch.utils.data.TensorDataset(torch.randn(96, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
                                      torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(1)))
X = DATA[0][0][None]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return fuse_bn(small_vgg(width=4).eval())


@pytest.fixture(scope="module")
def onnx_file(net, tmp_path_factory):
    return deploy.export_onnx(net, tmp_path_factory.mktemp("onnx") / "net.onnx", X)


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent control flow
            return 2 * x
        return x


def test_export_lists_the_operators_and_runs_at_any_batch(net, onnx_file):
    assert dict(deploy.onnx_ops(onnx_file)) == {"Conv": 4, "Relu": 5, "MaxPool": 2, "Reshape": 1, "Gemm": 2}
    model = deploy.onnxruntime_model(onnx_file)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        torch.testing.assert_close(model(x), net(x), atol=1e-5, rtol=1e-5)
    assert model.file_bytes() == onnx_file.stat().st_size


def test_an_export_failure_names_the_operator_and_the_line():
    with pytest.raises(deploy.ExportError, match=r"aten\.item.*test_deploy\.py:\d+ \(`if x\.mean\(\) > 0:"):
        deploy.export_program(Gate(), X)
    int8 = quantize(small_vgg(width=4).eval(), DATA)
    with pytest.raises(deploy.ExportError, match=r"operator quantized\.\w*PackedParams.*fp32 model"):
        deploy.export_onnx(int8, "/nonexistent/never.onnx", X)


def test_bad_input_gets_a_clear_error(onnx_file, tmp_path):
    with pytest.raises(TypeError, match="nn.Module"):
        deploy.export_program(lambda x: x, X)
    with pytest.raises(TypeError, match="example input"):
        deploy.export_program(Gate(), [1, 2])
    with pytest.raises(ValueError, match="level must be one of"):
        deploy.onnxruntime_model(onnx_file, level="max")
    with pytest.raises(ValueError, match="threads"):
        deploy.onnxruntime_model(onnx_file, threads=0)
    with pytest.raises(FileNotFoundError):
        deploy.openvino_model(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match=".onnx"):
        deploy.onnxruntime_model(tmp_path / "net.pt")
    with pytest.raises(ValueError, match="unknown runtime"):
        deploy.serve_stats("tflite", onnx_file)
    with pytest.raises(TypeError, match="get_next"):
        deploy.quantize_static_onnx(onnx_file, tmp_path / "q.onnx", reader=[1, 2])
    with pytest.raises(ValueError, match=r"\.xml"):
        deploy.openvino_int8(onnx_file, tmp_path / "q.onnx", DATA)


def test_calibration_reader_gives_each_batch_once_then_none():
    reader = deploy.CalibrationImages(DATA, "x", batches=3, batch_size=40)
    shapes = [reader.get_next()["x"].shape for _ in range(3)]
    assert shapes == [(40, 1, 28, 28), (40, 1, 28, 28), (16, 1, 28, 28)]
    assert reader.get_next() is None and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["x"].dtype == np.float32
    with pytest.raises(ValueError):
        deploy.CalibrationImages(DATA, batches=0)
    with pytest.raises(TypeError):
        deploy.CalibrationImages([], batches=1)


def test_every_runtime_form_agrees_with_pytorch(net, onnx_file):
    forms = deploy.runtime_forms(onnx_file, DATA, batches=2, batch_size=32)
    assert list(forms) == ["ONNX Runtime fp32", "ONNX Runtime int8 dynamic", "ONNX Runtime int8 static",
                           "OpenVINO fp32", "OpenVINO int8"]
    x = DATA.tensors[0][:16]
    for label, model in forms.items():
        tolerance = 1e-4 if "fp32" in label else 0.05 * net(x).abs().max().item()
        assert (model(x) - net(x)).abs().max().item() < tolerance, label
    assert forms["ONNX Runtime int8 static"].file_bytes() < forms["ONNX Runtime fp32"].file_bytes()
    assert forms["OpenVINO int8"].files[1].suffix == ".bin"
    table = deploy.deploy_table({"PyTorch": net, **forms}, net, DATA, repeat=2)
    assert table.loc["ONNX Runtime fp32", "agreement"] == 1.0 and table.loc["PyTorch", "x faster b1"] == 1.0


@pytest.mark.parametrize("runtime, suffix", [("onnxruntime", ".onnx"), ("openvino", ".onnx"), ("torchscript", ".pt")])
def test_serving_in_a_process_of_its_own(runtime, suffix, net, onnx_file, tmp_path):
    path = onnx_file
    if runtime == "torchscript":
        path = tmp_path / "net.pt"
        torch.jit.save(freeze(net, X).script, str(path))
    stats = deploy.serve_stats(runtime, path, batch=2, calls=3)
    assert set(stats) == {"import_s", "load_s", "first_call_ms", "rss_after_import_MB", "peak_rss_MB"}
    assert stats["peak_rss_MB"] >= stats["rss_after_import_MB"] > 0
    if runtime == "onnxruntime":
        assert stats["peak_rss_MB"] < 400, "a process that serves ONNX Runtime does not import torch"


def test_nibbles_round_trip_and_bad_codes():
    codes = torch.randint(0, 16, (7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    packed = deploy.pack_nibbles(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 11
    assert torch.equal(deploy.unpack_nibbles(packed, 21), codes.flatten())
    assert deploy.pack_nibbles(torch.tensor([1, 2], dtype=torch.uint8)).tolist() == [0x21]
    with pytest.raises(ValueError):
        deploy.pack_nibbles(torch.tensor([16], dtype=torch.uint8))
    with pytest.raises(TypeError):
        deploy.pack_nibbles(torch.tensor([1]))
    with pytest.raises(ValueError):
        deploy.unpack_nibbles(packed, 23)


def test_kmeans_codebook_beats_an_even_grid():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    codebook, codes = deploy.kmeans_codebook(w, 4)
    assert codebook.shape == (16,) and codes.dtype == torch.uint8 and codes.shape == w.shape
    grid = torch.linspace(w.min(), w.max(), 16)
    on_grid = grid[(w[..., None] - grid).abs().argmin(-1)]
    assert (codebook[codes.long()] - w).pow(2).mean() < (on_grid - w).pow(2).mean()
    with pytest.raises(ValueError):
        deploy.kmeans_codebook(w, 0)
    with pytest.raises(TypeError):
        deploy.kmeans_codebook(w.long(), 4)


def test_packed_file_reloads(net, tmp_path):
    exact = tmp_path / "net32.cmpk"
    deploy.save_packed(net, exact, bits=None, entropy=False)
    torch.testing.assert_close(deploy.load_packed(exact)(X), net(X))
    small = tmp_path / "net4.cmpk"
    size = deploy.save_packed(net, small)
    assert size == small.stat().st_size < exact.stat().st_size / 5
    assert deploy.load_packed(small)(X).shape == (1, 10)
    with pytest.raises(TypeError, match="fuse_bn"):
        deploy.save_packed(small_vgg(width=4), tmp_path / "bn.cmpk")
    with pytest.raises(ValueError, match="bits"):
        deploy.save_packed(net, tmp_path / "b.cmpk", bits=3)
    (tmp_path / "other.cmpk").write_bytes(b"not a packed file")
    with pytest.raises(ValueError, match="not a file written by save_packed"):
        deploy.load_packed(tmp_path / "other.cmpk")


def test_shared_weights_are_what_the_file_holds_and_they_train(net, tmp_path):
    shared = deploy.share_weights(net)
    layer = next(m for m in shared.modules() if isinstance(m, nn.Conv2d))
    sharing = layer.parametrizations.weight[0]
    assert torch.equal(layer.weight, sharing.codebook[sharing.codes.long()] * sharing.scale.view(-1, 1, 1, 1))
    path = tmp_path / "shared.cmpk"
    deploy.save_packed(shared, path)
    torch.testing.assert_close(deploy.load_packed(path)(X), shared(X))  # float16 values: written exactly
    # a row factor each: closer to the weights than one codebook for the layer
    one = deploy.share_weights(net, per_row=False)
    def error(model):
        layers = lambda m: [layer for layer in m.modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]  # noqa: E731
        return sum((a.weight - b.weight).pow(2).sum() for a, b in zip(layers(model), layers(net)))
    assert error(shared) < error(one)
    # training moves the shared values and the row factors, never the codes; the net it came from is unchanged
    before = {n: t.detach().clone() for n, t in net.state_dict().items()}
    codes, values, factors = sharing.codes.clone(), sharing.codebook.detach().clone(), sharing.scale.detach().clone()
    fit(shared, DATA, epochs=1, lr=1e-2, progress=False)
    assert torch.equal(sharing.codes, codes)
    assert not torch.equal(sharing.codebook, values) and not torch.equal(sharing.scale, factors)
    assert all(torch.equal(before[n], t) for n, t in net.state_dict().items())
    deploy.save_packed(shared, path)
    torch.testing.assert_close(deploy.load_packed(path)(X), shared(X), atol=1e-2, rtol=1e-2)  # trained values rounded to float16
    with pytest.raises(TypeError):
        deploy.share_weights("net")


def test_make_bench_records_the_deployed_forms(tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "DATA_DIR", tmp_path)
    torch.manual_seed(0)
    original = small_vgg(width=4).eval()
    steps = pipeline.compress_steps("vgg", original, DATA, plan={**pipeline.PLANS["vgg"], "rank": 8}, fast=True)
    found = pipeline.measure_deployed("vgg", steps, DATA, DATA, repeat=2, out=tmp_path)
    assert found["TorchScript int8"]["form"] == "TorchScript int8"
    assert found["best runtime"]["form"] in found["all forms"] and found["best runtime"]["form"] != "TorchScript int8"
    assert (tmp_path / "deployed" / "vgg_4bit.cmpk").exists()
    assert found["4-bit file"]["x smaller than the original"] > 10
    json.dumps(found)  # pipeline.json can hold it
    assert "best runtime at batch 1" in pipeline.deployed_markdown({"vgg": found})
    kept = deploy.compressed_model("vgg")  # the mode measure_deployed kept it in: the default, fast or full
    torch.testing.assert_close(kept(X), steps["BN folded"](X))


def test_a_language_model_exports_and_runs_on_its_byte_tokens(tmp_path):
    from helpers import lm
    gpt = lm.GPT(lm.GPTConfig(context=16, width=32, layers=1, heads=4)).eval()
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    path = deploy.export_onnx(gpt, tmp_path / "gpt.onnx", idx[:1])
    runtime = deploy.onnxruntime_model(path)
    with torch.no_grad():
        assert (runtime(idx) - gpt(idx)).abs().max().item() < 1e-4  # a long tensor of bytes in, any batch
    windows = torch.randint(0, 256, (3, 17), generator=torch.Generator().manual_seed(1))
    assert abs(lm.bits_per_byte(runtime, windows) - lm.bits_per_byte(gpt, windows)) < 1e-4
