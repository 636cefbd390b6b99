"""The `gpu` backend: unavailable here (no CUDA), and the GEMMs it would time compute each layer's
accumulator exactly (run under Triton's CPU interpreter)."""

import pytest
import torch

from flexiq_search.cli import main
from flexiq_search.latency import BackendUnavailable, create_backend
from flexiq_search.latency.gpu import layer_gemm_operands, pack_layer_gemm
from flexiq_search.models import create_model
from flexiq_search.quant.convert import capture_layer_inputs, convert_model, mixed_layers, set_ratio
from flexiq_search.selection import apply_selection, create_strategy

triton_gemm = pytest.importorskip("kernels.triton_gemm", reason="triton is not installed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_backend_is_unavailable_without_cuda(capsys):
    with pytest.raises(BackendUnavailable, match="cannot run here"):
        create_backend("gpu")
    assert main(["latency", "--backend", "gpu", "--model", "resnet20", "--image-size", "32", "--in-chans", "1"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gpu" in err


@pytest.mark.parametrize("name, layers_checked", [("resnet20", 4), ("mobilenetv2_100", 6)])
def test_triton_gemms_reproduce_the_layer_accumulators(name, layers_checked, sample_photos):
    torch.manual_seed(0)
    in_chans = 1 if name == "resnet20" else 3
    images = sample_photos[:2, :in_chans, :32, :32]
    qmodel = convert_model(create_model(name, in_chans=in_chans).eval(), [images])
    apply_selection(qmodel, create_strategy("random", seed=0).select(qmodel, [0.5]))
    set_ratio(qmodel, 0.5)
    with torch.no_grad():
        inputs = capture_layer_inputs(qmodel, images[:1])
        for layer_name, layer in list(mixed_layers(qmodel, eligible_only=True).items())[:layers_checked]:
            expected = layer.integer_accumulator(inputs[layer_name])
            expected = expected.movedim(1, -1).reshape(-1, layer.out_channels) if expected.dim() == 4 else expected
            for rows, out_slice, in_slice in layer_gemm_operands(layer, inputs[layer_name]):
                packed = pack_layer_gemm(layer, rows, out_slice, in_slice)
                ours = triton_gemm.mixed_gemm(rows, packed, bool(layer.act_signed), block_m=64, block_n=16)
                assert torch.equal(ours.double(), expected[:, out_slice].double()), layer_name
