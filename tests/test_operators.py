"""Property checks parametrized over every forward operator."""

import pytest
import torch
import torch.nn.functional as F

import dwgf.operators
from dwgf.errors import DWGFError
from dwgf.likelihoods import MeanSquaredError
from dwgf.operators import (
    JPEG,
    BoxInpainting,
    Denoising,
    ForwardOperator,
    FunctionOperator,
    GaussianBlur,
    MatrixOperator,
    MotionBlur,
    PhaseRetrieval,
    PoissonNoise,
    RandomInpainting,
    Saturation,
    SuperResolution,
    repeat_params,
)

MSE = MeanSquaredError()  # the paper's data term: the data fit lives in the data terms
SHAPE = (3, 24, 24)

# Every operator dwgf exports is covered: by these configured examples, or built with its defaults.
EXAMPLES = {
    "box_fixed": lambda: BoxInpainting(size=[300, 200], position=[150, 250], reference_size=512, sigma_y=0.05),
    "box_random": lambda: BoxInpainting(size=[6, 9], sigma_y=0.05),
    "random_pixels": lambda: RandomInpainting(missing=0.7, sigma_y=0.05),
    "sr_box": lambda: SuperResolution(factor=4, kernel="box", sigma_y=0.05),
    "sr_bicubic": lambda: SuperResolution(factor=3, kernel="bicubic", sigma_y=0.05),
    "gaussian_blur": lambda: GaussianBlur(kernel_size=9, sigma=2.0, sigma_y=0.05),
    "motion_blur": lambda: MotionBlur(kernel_size=9, intensity=0.5, sigma_y=0.05),
    "denoise": lambda: Denoising(sigma_y=0.1),
    "matrix": lambda: MatrixOperator(torch.randn(7, 3 * 24 * 24, generator=torch.Generator().manual_seed(0)), image_shape=[3, 24, 24],
                                     sigma_y=0.05),
    "saturation": lambda: Saturation(gain=2.5, level=0.8, sigma_y=0.05),
    "phase_retrieval": lambda: PhaseRetrieval(oversample=2.0, sigma_y=0.05),
    "function": lambda: FunctionOperator(square_law, kwargs={"scale": 0.5}, sigma_y=0.05),
    "jpeg": lambda: JPEG(quality=20, sigma_y=0.05),
    "poisson_blur": lambda: PoissonNoise(GaussianBlur(kernel_size=9, sigma=2.0), rate=50.0),
    "poisson_box": lambda: PoissonNoise(BoxInpainting(size=[6, 9]), rate=50.0),
}


def square_law(x, params, scale=1.0):
    """A user's nonlinear forward function (``FunctionOperator``): a square-law detector."""
    return scale * x.square()


def _exported_operators() -> dict[str, type]:
    import inspect

    classes = {name: obj for name in dwgf.operators.__all__ if inspect.isclass(obj := getattr(dwgf.operators, name))
               and issubclass(obj, ForwardOperator) and obj is not ForwardOperator and not inspect.isabstract(obj)}
    # a shared base of exported operators (Blur) is covered through them
    return {name: cls for name, cls in classes.items() if not any(o is not cls and issubclass(o, cls) for o in classes.values())}


def _operators() -> dict[str, object]:
    ops = dict(EXAMPLES)
    covered = {type(factory()) for factory in EXAMPLES.values()} | {PoissonNoise}  # PoissonNoise(op, rate) is op with Poisson noise
    for name, cls in _exported_operators().items():
        if cls not in covered:
            ops[f"{name}_defaults"] = cls  # a new operator is tested as it comes, with its default arguments
    return ops


OPERATORS = _operators()


def batch_params(op, n=2, seed=0, shape=SHAPE):
    items = [op.sample_params(shape, torch.Generator().manual_seed(seed + i)) for i in range(n)]
    return {k: torch.stack([p[k] for p in items]) for k in items[0]}


@pytest.fixture(params=sorted(OPERATORS))
def op(request):
    return OPERATORS[request.param]()


LINEAR = sorted(name for name, make in OPERATORS.items() if make().linear)


@pytest.fixture(params=LINEAR)
def linear_op(request):
    return OPERATORS[request.param]()


def test_adjointness(linear_op):
    """<A x, y> = <x, A^T y> for random x, y, in float64."""
    op = linear_op
    params = {k: v.double() for k, v in batch_params(op).items()}
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    y = torch.randn(2, *op.measurement_shape(SHAPE), dtype=torch.float64)
    lhs = (op(x, params) * y).sum()
    rhs = (x * op.adjoint(y, params)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10), (lhs, rhs)


def test_adjoint_is_the_matrix_transpose(linear_op):
    """The adjoint equals the transpose of A's explicit matrix on a small image (a matrix operator's own size)."""
    op = linear_op
    shape = op.image_shape if isinstance(op, MatrixOperator) else (1, 12, 12)
    n = shape[0] * shape[1] * shape[2]
    params = {k: v.double() for k, v in batch_params(op, n=1, shape=shape).items()}
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    A = op(basis, repeat_params(params, n)).reshape(n, -1).T  # (m, n)
    m_shape = op.measurement_shape(shape)
    ybasis = torch.eye(A.shape[0], dtype=torch.float64).view(-1, *m_shape)
    At = op.adjoint(ybasis, repeat_params(params, A.shape[0])).reshape(A.shape[0], -1)  # (m, n)
    assert torch.allclose(At, A, atol=1e-12)


SIZED = sorted(name for name in LINEAR if not isinstance(OPERATORS[name](), MatrixOperator))


@pytest.mark.parametrize("shape", [(2, 12, 24), (2, 24, 12)], ids=["wide", "tall"])
@pytest.mark.parametrize("name", SIZED)
def test_non_square_images(name, shape):
    """Operators take non-square images: adjoint = transpose of the explicit matrix, and the box scales with both sides."""
    op = OPERATORS[name]()
    n = shape[0] * shape[1] * shape[2]
    params = {k: v.double() for k, v in batch_params(op, n=1, shape=shape).items()}
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    A = op(basis, repeat_params(params, n)).reshape(n, -1).T
    m_shape = op.measurement_shape(shape)
    assert A.shape[0] == m_shape[0] * m_shape[1] * m_shape[2]
    ybasis = torch.eye(A.shape[0], dtype=torch.float64).view(-1, *m_shape)
    At = op.adjoint(ybasis, repeat_params(params, A.shape[0])).reshape(A.shape[0], -1)
    assert torch.allclose(At, A, atol=1e-12)


def test_box_and_factor_on_non_square_images():
    box = BoxInpainting(size=[300, 200], position=[150, 250], reference_size=512)
    assert box.box(512, 1024) == (150, 500, 300, 400)  # rows scale with the height, columns with the width
    assert box.box(768, 512)[:2] == (225, 250)
    with pytest.raises(DWGFError, match=r"SuperResolution: factor 8 does not divide the 64x100 image size"):
        SuperResolution(factor=8).measurement_shape((3, 64, 100))
    assert SuperResolution(factor=8).measurement_shape((3, 64, 96)) == (3, 8, 12)


def test_shapes_and_determinism(op):
    a, b = batch_params(op, seed=3), batch_params(op, seed=3)
    for k in a:
        assert torch.equal(a[k], b[k])
    x = torch.rand(2, *SHAPE) * 2 - 1
    y = op(x, a)
    assert y.shape == (2, *op.measurement_shape(SHAPE))
    assert op.to_image(y, a).shape == y.shape


def test_simulated_noise_uses_item_generator(op):
    x = torch.rand(1, *SHAPE) * 2 - 1
    p = {k: v[:1] for k, v in batch_params(op).items()}
    y1 = op.simulate(x, p, torch.Generator().manual_seed(5))
    y2 = op.simulate(x, p, torch.Generator().manual_seed(5))
    y3 = op.simulate(x, p, torch.Generator().manual_seed(6))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    residual = y1 - op(x, p)
    mask = op.measured(p)
    observed = residual if mask is None else residual[mask.expand_as(residual) > 0]
    assert 0.5 * op.sigma_y < observed.std() < 1.5 * op.sigma_y


def test_data_grad_matches_finite_differences(op):
    if getattr(op, "surrogate_gradient", False):  # JPEG: checked on its smooth surrogate (test_jpeg_...)
        op.smooth = True
    torch.manual_seed(0)
    params = {k: v.double() for k, v in batch_params(op).items()}
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    y = op(torch.randn(2, *SHAPE, dtype=torch.float64), params)
    grad, loss = MSE.grad(op, x, y, params)
    assert loss.shape == (2,)
    d = torch.randn_like(x)
    h = 1e-6
    fd = (MSE.loss(op, x + h * d, y, params).sum() - MSE.loss(op, x - h * d, y, params).sum()) / (2 * h)
    assert torch.allclose((grad * d).sum(), fd, rtol=1e-6, atol=1e-9)


def test_data_loss_averages_over_measured_entries_only():
    op = BoxInpainting(size=[2, 2], position=[0, 0])
    params = batch_params(op, n=1, shape=(1, 4, 4))
    y = torch.zeros(1, 1, 4, 4)
    x = torch.ones(1, 1, 4, 4)
    x[..., :2, :2] = 100.0  # inside the box: unobserved, must not count
    assert torch.allclose(MSE.loss(op, x, y, params), torch.tensor([0.5]))


def test_paper_box_scales_with_the_image():
    op = BoxInpainting(size=[300, 200], position=[150, 250], reference_size=512)
    assert op.box(512, 512) == (150, 250, 300, 200)
    assert op.box(64, 64) == (19, 31, 38, 25)
    mask = op.sample_params((3, 64, 64), torch.Generator())["mask"]
    assert mask.shape == (1, 64, 64) and int((mask == 0).sum()) == 38 * 25


def test_random_box_lies_inside_and_varies():
    op = BoxInpainting(size=[12, 12])
    tops = set()
    for s in range(20):
        top, left, h, w = op.box(32, 32, torch.Generator().manual_seed(s))
        assert 0 <= top <= 20 and 0 <= left <= 20 and (h, w) == (12, 12)
        tops.add(top)
    assert len(tops) > 3


def test_random_inpainting_ratio():
    mask = RandomInpainting(missing=0.7).sample_params((3, 64, 64), torch.Generator().manual_seed(0))["mask"]
    assert abs(1 - mask.mean().item() - 0.7) < 0.03


def test_box_sr_is_block_average_and_bicubic_matches_torch_interior():
    x = torch.randn(1, 2, 32, 32)
    assert torch.allclose(SuperResolution(4)(x, {}), F.avg_pool2d(x, 4))
    for f in (2, 4):
        ours = SuperResolution(f, "bicubic")(x, {})
        ref = F.interpolate(x, scale_factor=1 / f, mode="bicubic", antialias=True, align_corners=False)
        assert torch.allclose(ours[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3], atol=1e-5)
        ones = SuperResolution(f, "bicubic")(torch.ones(1, 1, 16, 16), {})
        assert torch.allclose(ones, torch.ones_like(ones), atol=1e-6)  # renormalised at the borders


def test_blur_kernels_are_normalised():
    gk = GaussianBlur(9, 2.0).sample_params(SHAPE, torch.Generator())["kernel"]
    assert gk.shape == (9, 9) and abs(gk.sum().item() - 1) < 1e-6 and torch.allclose(gk, gk.flip(0, 1))
    mk = MotionBlur(9, 0.5).sample_params(SHAPE, torch.Generator().manual_seed(1))["kernel"]
    mk2 = MotionBlur(9, 0.5).sample_params(SHAPE, torch.Generator().manual_seed(2))["kernel"]
    assert abs(mk.sum().item() - 1) < 1e-6 and (mk >= 0).all() and not torch.allclose(mk, mk2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SuperResolution(factor=4, sigma_y=-0.1), "sigma_y must be >= 0"),
        (lambda: BoxInpainting(size=[600, 10], reference_size=512), "does not fit"),
        (lambda: RandomInpainting(missing=1.0), "missing must be in"),
        (lambda: GaussianBlur(kernel_size=8), "odd"),
        (lambda: SuperResolution(factor=0), "positive integer"),
        (lambda: Saturation(gain=0), "gain must be a finite number > 0, got 0"),
        (lambda: Saturation(level=1.5), r"level must be in \(0, 1\], got 1.5"),
        (lambda: PhaseRetrieval(oversample=0.5), "oversample must be a finite number >= 1, got 0.5"),
        (lambda: JPEG(quality=0), "quality must be an integer in 1..100, got 0"),
        (lambda: JPEG(quality=101), "quality must be an integer in 1..100, got 101"),
    ],
)
def test_bad_operator_settings_fail_with_one_line(make, match):
    with pytest.raises(DWGFError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_box_larger_than_image_and_indivisible_factor():
    with pytest.raises(DWGFError, match="larger than the 8x8 image"):
        BoxInpainting(size=[12, 12]).sample_params((1, 8, 8), torch.Generator())
    with pytest.raises(DWGFError, match="does not divide the 30x30"):
        SuperResolution(4).measurement_shape((3, 30, 30))


def test_matrix_operator_reads_files_and_names_bad_matrices(tmp_path):
    import numpy as np

    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", m)
    op = MatrixOperator(str(tmp_path / "a.npy"), image_shape=[1, 2, 2])
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert op(x, {}).flatten().tolist() == (m @ np.arange(4.0)).tolist()
    assert op.measurement_shape((1, 2, 2)) == (3, 1, 1) and repr(op) == "MatrixOperator(matrix=<3x4>, image_shape=[1, 2, 2], sigma_y=0.0)"
    with pytest.raises(DWGFError, match=r"^MatrixOperator: image_shape \[1, 3, 2\]: expected \[C, H, W\] with C\*H\*W = 4"):
        MatrixOperator(m.tolist(), image_shape=[1, 3, 2])
    with pytest.raises(DWGFError, match="^MatrixOperator: matrix 'nope.npy': no such file"):
        MatrixOperator("nope.npy")
    with pytest.raises(DWGFError, match="expected an m x n matrix, got shape \\(3,\\)"):
        MatrixOperator([1.0, 2.0, 3.0])
    with pytest.raises(DWGFError, match="^MatrixOperator: matrix has 4 columns; images of shape \\(1, 3, 3\\) have 9 pixels"):
        op.measurement_shape((1, 3, 3))


def test_matrix_projection_is_exact_and_idempotent():
    """MatrixOperator.project lands on {x : A x = y} for any A (its pseudo-inverse), and leaves such x alone."""
    g = torch.Generator().manual_seed(3)
    op = MatrixOperator(torch.randn(5, 12, generator=g, dtype=torch.float64), image_shape=[3, 2, 2])
    x, y = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(4, 5, 1, 1, generator=g, dtype=torch.float64)
    p = op.project(x, y, {})
    assert torch.allclose(op.forward(p, {}), y, atol=1e-10)
    assert torch.allclose(op.project(p, y, {}), p, atol=1e-10)
    # the step is orthogonal to the null space: the smallest move onto the set
    free = op.project(x, torch.zeros_like(y), {})
    assert torch.allclose(op.forward(free, {}), torch.zeros_like(y), atol=1e-10)
    assert torch.allclose(((p - x) * free).flatten(1).sum(1), torch.zeros(4, dtype=torch.float64), atol=1e-10)


def test_saturation_clips_and_says_nothing_where_clipped():
    op = Saturation(gain=2.0, level=0.8)
    x = torch.tensor([[[[-0.9, -0.2, 0.1, 0.5]]]], dtype=torch.float64)
    assert torch.allclose(op(x, {}), torch.tensor([[[[-0.8, -0.4, 0.2, 0.8]]]], dtype=torch.float64))
    grad, _ = MSE.grad(op, x, torch.zeros(1, 1, 1, 4, dtype=torch.float64), {})
    assert grad[0, 0, 0, 0] == 0 and grad[0, 0, 0, 3] == 0 and grad[0, 0, 0, 1] != 0 and grad[0, 0, 0, 2] != 0
    assert not op.linear


def test_phase_retrieval_is_parseval_and_blind_to_shifts_and_the_twin():
    """|F| of the padded image keeps its energy, and cannot tell a shifted or 180-degree-rotated image (the twin)."""
    op = PhaseRetrieval(oversample=2.0)
    u = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    u[..., 2:5, 1:4] = torch.rand(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = 2 * u - 1
    y = op(x, {})
    assert y.shape == (1, 1, 16, 16) == (1, *op.measurement_shape((1, 8, 8)))
    assert torch.allclose(y.square().sum(), u.square().sum())
    shifted = 2 * torch.roll(u, shifts=(2, 3), dims=(-2, -1)) - 1
    twin = 2 * torch.flip(u, dims=(-2, -1)) - 1
    assert torch.allclose(op(shifted, {}), y) and torch.allclose(op(twin, {}), y)
    assert torch.allclose(op.from_image(op.to_image(y, {}), {}), y)
    assert op.to_image(y, {}).min() >= -1 and op.to_image(y, {}).max() <= 1


def _brute_force_alignment(op: PhaseRetrieval, estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Every circular shift of the padded estimate and of its flip, cropped back; the closest to the truth."""
    h, w = estimate.shape[-2:]
    canvas = op._pad((estimate + 1) / 2)
    ph, pw = canvas.shape[-2:]
    top, left = (ph - h) // 2, (pw - w) // 2
    best = None
    for candidate in (canvas, canvas.flip(-2, -1)):
        for dy in range(ph):
            for dx in range(pw):
                moved = 2 * candidate.roll((dy, dx), (-2, -1))[..., top : top + h, left : left + w] - 1
                err = float((moved - truth).square().sum())
                if best is None or err < best[0]:
                    best = (err, moved)
    return best[1]


def test_phase_retrieval_aligns_estimates_by_shift_and_twin_for_the_metrics():
    """align() undoes a shift of the twin exactly (its measurement is the truth's), equals a brute-force search on
    arbitrary estimates, and is the identity for operators without symmetries."""
    gen = torch.Generator().manual_seed(1)
    op = PhaseRetrieval(oversample=2.0)
    truth = -torch.ones(2, 8, 8, dtype=torch.float64)
    truth[:, 2:6, 1:5] = torch.rand(2, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    canvas = op._pad((truth[None] + 1) / 2)
    twin = 2 * canvas.flip(-2, -1).roll((1, -1), (-2, -1))[..., 4:12, 4:12] - 1  # the twin, moved, still inside the window
    assert torch.allclose(op(twin, {}), op(truth[None], {}))
    assert not torch.allclose(twin, truth[None])
    assert torch.equal(op.align(torch.cat([twin, truth[None]]), truth), torch.cat([truth[None]] * 2))
    estimates = torch.rand(3, 2, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    aligned = op.align(estimates, truth)
    for e, a in zip(estimates, aligned):
        assert torch.allclose(a, _brute_force_alignment(op, e, truth))
    assert torch.equal(Saturation().align(estimates, truth), estimates)


def test_phase_retrieval_metrics_are_taken_up_to_its_symmetries():
    """An item whose particles are the truth's shifted twin scores as the truth would; the saved particle is as found."""
    import io

    from PIL import Image

    from dwgf.rendering import render_item

    op = PhaseRetrieval(oversample=2.0)
    truth = -torch.ones(1, 16, 16)
    truth[:, 3:11, 4:12] = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    twin = 2 * op._pad((truth[None] + 1) / 2).flip(-2, -1).roll((2, 1), (-2, -1))[..., 8:24, 8:24] - 1
    measurement = op.to_image(op(truth[None], {}), {})[0]
    files, plain = render_item("a", twin, measurement, truth, 0.0)
    _, aligned = render_item("a", twin, measurement, truth, 0.0, align=op.align)
    assert plain["psnr_mean"] < 20 and aligned["psnr_mean"] > 40
    saved = torch.tensor(list(Image.open(io.BytesIO(files["particle_0.png"])).getdata()), dtype=torch.float32).view(16, 16)
    assert torch.allclose(saved / 255, ((twin[0, 0] + 1) / 2), atol=1 / 255)


def test_function_operator_from_a_dotted_path_and_its_errors():
    op = FunctionOperator("test_operators.square_law", kwargs={"scale": 2.0}, sigma_y=0.01)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.allclose(op(x, {}), 2 * x.square()) and op.measurement_shape((3, 8, 8)) == (3, 8, 8)
    with pytest.raises(DWGFError, match="function.*cannot import module 'no_such_module'"):
        FunctionOperator("no_such_module.f")
    with pytest.raises(DWGFError, match="function.*has no 'nope'"):
        FunctionOperator("test_operators.nope")
    with pytest.raises(DWGFError, match="function.*'module.name'"):
        FunctionOperator("square_law")
    with pytest.raises(DWGFError, match="one row per image"):
        FunctionOperator(lambda x, params: x.sum())(x, {})


def test_psld_refuses_nonlinear_operators():
    """The check lives in PSLD's settings (PSLDConfig.check_operator), which the PSLD solver and psld() both ask."""
    from dwgf.methods import PSLDConfig

    for op in (Saturation(), PhaseRetrieval(), FunctionOperator(square_law)):
        with pytest.raises(DWGFError, match="PSLD needs a linear operator"):
            PSLDConfig().check_operator(op)


def test_jpeg_matches_libjpeg_and_its_loss_is_the_exact_one():
    """Our decoded JPEG is within a gray level of Pillow's libjpeg (4:4:4) at quality 10, where compression costs ~10."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:56]
    img = np.stack([128 + 90 * np.sin(xx / 5 + c) * np.cos(yy / 7) for c in range(3)], -1) + rng.integers(-20, 20, (40, 56, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for pixels in (img, img.mean(-1).astype(np.uint8)):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=10, subsampling=0)
        theirs = torch.tensor(np.array(Image.open(io.BytesIO(buf.getvalue()))), dtype=torch.float64)
        x = torch.tensor(pixels, dtype=torch.float64)
        theirs, x = [(v.permute(2, 0, 1) if v.dim() == 3 else v[None])[None] / 127.5 - 1 for v in (theirs, x)]
        ours = JPEG(quality=10)(x, {})
        assert ours.shape == x.shape
        assert float((ours - theirs).abs().mean()) * 127.5 < 1.0 < 5.0 < float((ours - x).abs().mean()) * 127.5
    # the measurement uses exact rounding: compressing twice changes nothing (up to the clipping)
    assert torch.allclose(JPEG(quality=10)(ours, {}), ours, atol=1e-6)


def test_jpeg_gradient_is_the_smooth_surrogates_and_nonzero():
    op = JPEG(quality=30)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 1.6 - 0.8
    y = op(torch.rand(1, 3, 16, 16, dtype=torch.float64) * 1.6 - 0.8, {})
    grad, loss = MSE.grad(op, x, y, {})
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(loss, MSE.loss(op, x, y, {}))  # the loss is the exact one
    with pytest.raises(DWGFError, match="quality.*1..100"):
        JPEG(quality=0)


def test_poisson_noise_has_poisson_moments_and_is_the_wrapped_operator_otherwise():
    """Mean A x and variance 2 (A x + 1) / rate on measured entries; unmeasured entries noiseless; shapes,
    parameters, mask, linearity, adjoint and measurement image are the wrapped operator's."""
    inner = BoxInpainting(size=[6, 9])
    op = PoissonNoise(inner, rate=20.0)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen = torch.Generator().manual_seed(3)
    p = {k: v[None] for k, v in op.sample_params((1, 16, 16), torch.Generator().manual_seed(4)).items()}
    assert torch.equal(p["mask"][0], inner.sample_params((1, 16, 16), torch.Generator().manual_seed(4))["mask"])
    ys = torch.stack([op.simulate(x, p, gen) for _ in range(4000)])
    clean, mask = inner(x, p), p["mask"].bool()
    assert torch.allclose(ys.mean(0)[mask], clean[mask], atol=0.03)
    assert torch.allclose(ys.var(0)[mask], 2 * (clean[mask] + 1) / 20, rtol=0.15, atol=2e-3)
    assert torch.equal(ys[:, ~mask], clean[~mask].expand(4000, -1))
    assert op.linear and op.measurement_shape((1, 16, 16)) == (1, 16, 16) and op.sigma_y == (2 / 20) ** 0.5
    assert torch.equal(op.adjoint(clean, p), inner.adjoint(clean, p)) and torch.equal(op.to_image(clean, p), inner.to_image(clean, p))
    assert not PoissonNoise(Saturation(sigma_y=0.0), rate=5.0).linear
    for make, match in [
        (lambda: PoissonNoise(GaussianBlur(sigma_y=0.05), rate=10), "operator has sigma_y 0.05: give it sigma_y: 0"),
        (lambda: PoissonNoise(GaussianBlur(), rate=0), "rate must be a finite number > 0, got 0"),
        (lambda: PoissonNoise(PoissonNoise(GaussianBlur(), rate=5), rate=5), "already a PoissonNoise"),
    ]:
        with pytest.raises(DWGFError, match=match):
            make()


def test_the_noise_model_is_one_object_that_simulation_and_data_terms_read():
    """PoissonNoise(op, rate) is op itself (no wrapper) with a PoissonCounts noise model; the Gaussian data
    term reads the model's sigma, the Poisson one its rate; the Poisson distance is 0 where A x = y."""
    from dwgf.likelihoods import GaussianLikelihood, PoissonLikelihood
    from dwgf.operators import GaussianNoise, PoissonCounts

    blur = GaussianBlur(kernel_size=5, sigma=1.0, sigma_y=0.1)
    assert isinstance(blur.noise, GaussianNoise) and blur.noise.sigma == 0.1 and blur.noise.rate is None
    poisson = PoissonNoise(GaussianBlur(kernel_size=5, sigma=1.0), rate=30.0)
    assert type(poisson) is GaussianBlur and isinstance(poisson.noise, PoissonCounts) and poisson.noise.rate == 30.0
    assert "PoissonCounts(rate=30.0)" in repr(poisson)
    assert GaussianLikelihood().noise_sigma(blur) == 0.1 and GaussianLikelihood().noise_sigma(poisson) == (2 / 30) ** 0.5
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y, params = poisson.measure(x, seeds=[0, 1])
    clean = poisson(x, params)
    assert torch.allclose(PoissonLikelihood().distance(poisson, x, clean, params), torch.zeros(2), atol=1e-3)
    assert (PoissonLikelihood().distance(poisson, x, y, params) > 0.1).all()
    # simulate is the noise model's draw around A x, nothing else
    one = {k: v[:1] for k, v in params.items()}
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(blur.simulate(x[:1], one, gen_a), blur.noise.simulate(blur(x[:1], one), None, gen_b))


def test_the_poisson_likelihood_reads_the_operators_rate():
    from dwgf.likelihoods import PoissonLikelihood

    op = PoissonNoise(GaussianBlur(kernel_size=5, sigma=1.0), rate=30.0)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y, params = op.measure(x, seeds=[0, 1])
    PoissonLikelihood().check_operator(op)
    assert torch.equal(PoissonLikelihood().loss(op, x, y, params), PoissonLikelihood(rate=30.0).loss(op, x, y, params))
    assert not torch.equal(PoissonLikelihood().loss(op, x, y, params), PoissonLikelihood(rate=60.0).loss(op, x, y, params))
    with pytest.raises(DWGFError, match=r"rate 60.0 differs from the operator's \(--data.operator.init_args.rate 30.0\)"):
        PoissonLikelihood(rate=60.0).check_operator(op)
    with pytest.raises(DWGFError, match="rate is needed: GaussianBlur simulates no Poisson noise"):
        PoissonLikelihood().check_operator(GaussianBlur())
