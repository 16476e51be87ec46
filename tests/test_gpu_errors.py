"""GPU failures a user meets, as one line and exit 2: out of memory (finished items kept) and no GPU."""

import pytest
import torch

from dwgf.cli import main, out_of_memory_message
from dwgf.solver import DWGF, tf32_on
from tests.runs import LDM_CONFIG, NAMES, item_files, predict, state


def test_cuda_out_of_memory_is_one_line_and_keeps_finished_items(ldm_path, five_images, tmp_path, capsys, monkeypatch):
    """A stub raises CUDA's out-of-memory error in the second batch: the first batch's items stay complete,
    the message names what to lower, and running the same command again resumes to the full result."""
    real = DWGF.solve
    calls = {"n": 0}

    def solve(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DWGF, "solve", solve)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        predict(ldm_path, five_images, out, "--model.num_steps", 2)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dwgf: error: out of GPU memory (tried to allocate 20.00 GiB); finished items are kept.")
    for option in ("--model.num_particles", "--data.batch_size", "--model.decoder_chunk", "--model.prior.flow_decoder",
                   "--model.prior.torch_dtype"):
        assert option in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert [state(out, n) for n in NAMES[:2]] == ["complete", "complete"]  # batch size 2: the first batch was written
    assert not any((out / n / "particle_0.png").exists() for n in NAMES[2:4])
    kept = item_files(out, "img0")
    monkeypatch.setattr(DWGF, "solve", real)
    predict(ldm_path, five_images, out, "--model.num_steps", 2)  # the same command resumes
    assert all(state(out, n) == "complete" for n in NAMES)
    assert item_files(out, "img0") == kept


def test_out_of_memory_messages():
    wrapped = RuntimeError("predict failed")
    wrapped.__cause__ = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")
    assert out_of_memory_message(wrapped).startswith("out of GPU memory (tried to allocate 512.00 MiB)")
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                       "21474836480 bytes. Error code 12 (Cannot allocate memory)")
    assert out_of_memory_message(cpu).startswith("out of CPU memory (tried to allocate 20.00 GiB)")
    assert out_of_memory_message(ValueError("something else")) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_asked_for_where_there_is_none_is_one_line(ldm_path, five_images, tmp_path, capsys, accelerator):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(five_images),
              "--output", str(tmp_path / "o"), "--trainer.accelerator", accelerator])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dwgf: error: --trainer.accelerator {accelerator}: no GPU is available here"), err
    assert not (tmp_path / "o" / "img0").exists()


def test_tf32_is_set_on_cuda_only_and_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    assert tf32_on(torch.device("cpu"), True) is None
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    try:
        assert tf32_on(torch.device("cuda", 0), True) == before  # setting the flags needs no device
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        tf32_on(torch.device("cuda"), False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_the_device_options_and_the_resume_key(monkeypatch, capsys):
    """Options that do not change results (decoder_chunk, tf32) leave the resume key alone; so do the new options at
    the defaults that reproduce earlier versions' results (a folder written before them still resumes: the quickstart's
    key is the one dwgf 0.1 computed before this change); a generator on the device changes it."""
    import io
    from contextlib import redirect_stdout
    from pathlib import Path

    import yaml

    from dwgf.outputs import fingerprint

    monkeypatch.chdir(Path(__file__).resolve().parents[1])

    def key(*extra):
        buf = io.StringIO()
        with redirect_stdout(buf), pytest.raises(SystemExit):
            main(["predict", "--config", "configs/quickstart.yaml", "--print_config", *extra])
        return fingerprint(yaml.safe_load(buf.getvalue()))

    base = key()
    assert base == "46b999288ea5d463"
    # the baselines gained --model.likelihood later: at its default their keys are those of before (dwgf 0.1)
    assert [key("--config", f"configs/methods/{m}.yaml") for m in ("dps", "psld", "inversion")] == [
        "408589acedf12489", "065250382ffdb878", "402867ee8ccd36c1"]
    assert key("--config", "configs/methods/dps.yaml", "--model.likelihood", "GaussianLikelihood") != key("--config", "configs/methods/dps.yaml")
    assert key("--model.decoder_chunk", "2", "--model.tf32", "false") == base
    assert key("--model.generator", "device") != base
    assert key("--model.prior.torch_dtype", "bfloat16") != base
    assert key("--model.float32_autoencoder", "true") != base
