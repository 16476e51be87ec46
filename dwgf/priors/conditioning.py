"""The conditioner of a text-conditioned prior: its prompt table and classifier-free guidance, written once.

Prompts live in a table: row 0 is the prior's own ``prompt``, further rows are added by
:meth:`PromptConditioner.prompt_ids` for per-item prompts. Each distinct prompt is encoded once; the
text encoders are loaded from the folder for that, one at a time, and released right after, so they
hold no memory during the flow. How a family turns text into embeddings is its :class:`TextEncoding`
(SD, SDXL, SD3 and FLUX follow their diffusers pipelines' ``encode_prompt`` term by term).

With a guidance scale ``g != 1`` every network call is classifier-free guided:
``out = out(negative) + g (out(prompt) - out(negative))`` on the network's output (noise, ``v`` or
velocity), the two rows of each latent batched into one call.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from dwgf.errors import DWGFError, argument_error, argument_warning


class TextEncoding:
    """How a family encodes prompts: its ``(tokenizer, text encoder)`` folders and the pipeline's ``encode_prompt``.

    Attributes:
        components: the ``(tokenizer, encoder)`` subfolders, in the order :meth:`encode` reads them.
        optional: encoders a folder may lack (SD3's T5): they are ``None`` in the pairs.
    """

    components: tuple[tuple[str, str], ...] = (("tokenizer", "text_encoder"),)
    optional: tuple[str, ...] = ()

    def encode(self, encoders: Any, texts: list[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """``{"embeds": P x L x D, ...}`` for ``texts`` (``encoders[i]``: the ``i``-th pair, loaded on demand)."""
        raise NotImplementedError

    def negative(self, conditioner: "PromptConditioner", encoders: Any) -> dict[str, torch.Tensor]:
        """The negative prompt's row (the pipelines' empty prompt when none is given)."""
        return self.encode(encoders, [conditioner.negative_prompt or ""])


class LazyEncoders:
    """``(tokenizer, encoder)`` pairs loaded on demand by ``load(i)``; loading one releases the previous."""

    def __init__(self, load: Callable[[int], Any], count: int):
        self._load, self._count, self._index, self._pair = load, count, None, None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int):
        if self._index != i:
            self._pair = None  # release the previous encoder before loading the next
            self._pair, self._index = self._load(i), i
        return self._pair

    def __iter__(self):
        for i in range(self._count):
            yield self[i]

    def clear(self) -> None:
        self._pair, self._index = None, None


def rows_of(table: torch.Tensor, rows: Optional[torch.Tensor], count: int) -> torch.Tensor:
    """``count`` rows of a prompt table: row 0 for all (``rows`` ``None``, no copy), else the given ones."""
    return table[:1].expand(count, *table.shape[1:]) if rows is None else table.index_select(0, rows)


def check_guidance(owner: str, option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise argument_error(owner, option, f" must be a finite number >= 0 (1: no guidance), got {value!r}")
    return float(value)


class PromptConditioner(nn.Module):
    """A prompt table (buffers ``prompt_<name>``, ``negative_<name>`` per embedding name) and classifier-free guidance.

    Args:
        encoding: the family's :class:`TextEncoding`; ``None``: a table given as tensors (no encoder:
            no new prompts).
        prompt: the prior's own prompt (row 0).
        negative_prompt: the prompt guidance steers away from.
        guidance_scale: ``g`` (1: no guidance, one network row).
        folder: the prior's :class:`~dwgf.priors.folders.Folder` (text encoders are loaded from it).
        cfg_option: the option that sets ``g`` (``"guidance_scale"``; FLUX: ``"true_cfg_scale"``), for messages.
    """

    def __init__(self, encoding: Optional[TextEncoding], prompt: str = "", negative_prompt: Optional[str] = None,
                 guidance_scale: float = 1.0, folder: Any = None, owner: str = "StableDiffusionPrior", cfg_option: str = "guidance_scale",
                 tables: Optional[dict[str, torch.Tensor]] = None):
        super().__init__()
        self.check_arguments(prompt, negative_prompt, guidance_scale, owner, cfg_option)
        self.encoding, self.folder, self.owner, self.cfg_option = encoding, folder, owner, cfg_option
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.guidance_scale = float(guidance_scale)
        if negative_prompt is not None and not self.guided:
            warnings.warn(argument_warning(owner, "negative_prompt", f" has no effect without guidance (<{cfg_option}> 1): "
                                           "it is only used by guided calls", also=(cfg_option,)), stacklevel=3)
        self._rows: dict[str, int] = {prompt: 0}
        if tables is not None:  # networks in memory: the table as given
            for name, value in tables.items():
                self.register_buffer(name, value, persistent=False)
            if self.guided and "negative_embeds" not in tables:
                raise argument_error(owner, cfg_option, f" {self.guidance_scale:g} needs negative_embeds")
            return
        with self.text_encoders() as encoders:
            for name, value in encoding.encode(encoders, [prompt]).items():
                self.register_buffer(f"prompt_{name}", value, persistent=False)
            if self.guided:
                for name, value in encoding.negative(self, encoders).items():
                    self.register_buffer(f"negative_{name}", value, persistent=False)

    @staticmethod
    def check_arguments(prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: float = 1.0,
                        owner: str = "StableDiffusionPrior", cfg_option: str = "guidance_scale") -> None:
        """Raises a one-line error for a prompt that is not text or a guidance scale that is not a number >= 0."""
        if not isinstance(prompt, str):
            raise argument_error(owner, "prompt", f" must be text, got {type(prompt).__name__}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise argument_error(owner, "negative_prompt", f" must be text or null, got {type(negative_prompt).__name__}")
        check_guidance(owner, cfg_option, guidance_scale)

    @property
    def guided(self) -> bool:
        """Whether network calls are classifier-free guided (``guidance_scale != 1``): two rows per latent."""
        return self.guidance_scale != 1.0

    @contextlib.contextmanager
    def text_encoders(self) -> Iterator[LazyEncoders]:
        """The folder's ``(tokenizer, text encoder)`` pairs for a ``with`` block: each loaded when first
        asked for, the previous one released first (SD3's and FLUX's T5-XXL is 19 GB in float32), and
        none left after. An absent optional encoder is ``None``."""
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

        if self.folder is None or self.encoding is None:
            raise DWGFError(f"{self.owner} was built in memory without text encoders: it knows only the prompts given to from_modules")
        folder, encoding = self.folder, self.encoding
        classes = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection, "T5EncoderModel": T5EncoderModel}

        def load(i: int):
            tok_name, enc_name = encoding.components[i]
            if enc_name in encoding.optional and not (folder.root / enc_name).is_dir():
                return None
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder.root, subfolder=tok_name, trust_remote_code=False)
            except Exception as err:  # noqa: BLE001 - includes a tokenizer that asks for remote code (never run)
                raise folder.error(f": could not load {tok_name}/ ({str(err).splitlines()[0][:200]})") from None
            arch = (folder.read(f"{enc_name}/config.json").get("architectures") or ["CLIPTextModel"])[0]
            if arch not in classes:
                raise folder.error(f": {enc_name}/ is a {arch}; expected one of {', '.join(sorted(classes))}")
            return tokenizer, _quiet_load(folder, classes[arch], enc_name)

        encoders = LazyEncoders(load, len(encoding.components))
        try:
            yield encoders
        finally:
            encoders.clear()  # the last encoder goes with its last reference

    def prompt_ids(self, prompts: Sequence[Optional[str]]) -> torch.Tensor:
        """Rows of the prompt table for ``prompts`` (``None``: the prior's own prompt, row 0).

        Prompts not in the table yet are encoded together (the text encoders are loaded from the
        folder for it and released after) and appended.
        """
        rows = self._rows
        new = [p for p in dict.fromkeys(prompts) if p is not None and p not in rows]
        if any(not isinstance(p, str) for p in new):
            raise DWGFError(f"{self.owner}: prompts must be text, got {[type(p).__name__ for p in new if not isinstance(p, str)][0]}")
        if new:
            with self.text_encoders() as encoders:
                table = self.encoding.encode(encoders, new)
            for name, value in table.items():
                old = getattr(self, f"prompt_{name}")
                self.register_buffer(f"prompt_{name}", torch.cat([old, value.to(old.device, old.dtype)]), persistent=False)
            for p in new:
                rows[p] = len(rows)
        # on the CPU: callers move the rows to the particles' device (InverseSolver.prompt_rows)
        return torch.tensor([0 if p is None else rows[p] for p in prompts], dtype=torch.long)

    @property
    def prompts(self) -> list[str]:
        """The prompts in the table, in row order (row 0 is :attr:`prompt`)."""
        return sorted(self._rows, key=self._rows.get)

    def text(self, rows: Optional[torch.Tensor], count: int, negative: bool = False) -> dict[str, torch.Tensor]:
        """Each embedding (``embeds``, ``pooled``, ...) for ``count`` latents whose prompts are table ``rows``
        (``None``: row 0 for all); ``negative``: the negative row for all."""
        prefix = "negative_" if negative else "prompt_"
        return {name[len(prefix):]: rows_of(value, None if negative else rows, count)
                for name, value in self._buffers.items() if name.startswith(prefix)}

    def guide(self, network: Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor], latent: torch.Tensor,
              timestep: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
        """The network's output (float32) for ``latent`` at ``timestep`` conditioned on the table ``rows``:
        ``network(latent, timestep, text)`` once, or, guided, once on both rows batched and blended."""
        cond = self.text(rows, latent.shape[0])
        if not self.guided:
            return network(latent, timestep, cond).float()
        uncond = self.text(None, latent.shape[0], negative=True)
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        out_uncond, out_cond = network(torch.cat([latent, latent]), torch.cat([timestep, timestep]), both).float().chunk(2)
        return out_uncond + self.guidance_scale * (out_cond - out_uncond)

    def extra_repr(self) -> str:
        text = f"prompts={len(self._rows)}"
        if self.prompt:
            text += f", prompt={self.prompt!r}"
        if self.guided:
            text += f", {self.cfg_option}={self.guidance_scale:g}"
        return text


def check_text_folder(folder: Any, encoding: TextEncoding) -> None:
    """The folder has the text components ``encoding`` reads (a folder without them fails at load, not at the first prompt)."""
    for tokenizer, encoder in encoding.components:
        if encoder in encoding.optional and not (folder.root / encoder).is_dir():
            continue
        folder.config((encoder,), encoder)
        if not (folder.root / tokenizer).is_dir():
            raise folder.error(f": the folder lacks the {tokenizer} component (expected {tokenizer}/)")


def _quiet_load(folder: Any, cls: Any, subfolder: str) -> Any:
    """Loads a transformers component without its progress bar (a one-second load needs none)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return folder.load(cls, subfolder, dtype=None)
    finally:
        if bar:
            hf_logging.enable_progress_bar()

