"""An onnxruntime session per model, checked against its manifest when it loads.

A model that does not match its manifest is refused at start-up with one clear line, never discovered at
3 a.m. on the first epoch: input and output names, ranks and the window length must agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edged.errors import ModelError
from edged.scoring.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)


class OnnxModel:
    """A loaded model. ``run`` takes one array per manifest input, each ``(batch, 1, window)`` (or
    ``(batch, context_epochs, n_features)`` for a feature input), plus the
    recurrent state arrays if the manifest declares any, and returns ``(probabilities, new_state)``."""

    def __init__(self, manifest: Manifest, *, threads: int = 1):
        self.manifest = manifest
        options = ort.SessionOptions()
        # One thread by default: a Pi runs several devices, and one epoch every 30 s per device is tiny work.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(manifest.onnx), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt graphs
            raise ModelError(f"{manifest.onnx}: onnxruntime cannot load it: {exc}") from None
        self._check_against_manifest()

    @classmethod
    def load(cls, manifest_path: str | Path, *, threads: int = 1) -> "OnnxModel":
        return cls(load_manifest(manifest_path), threads=threads)

    def _check_against_manifest(self) -> None:
        m = self.manifest
        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        graph_outputs = {o.name: o for o in self.session.get_outputs()}
        expected_inputs = {i.name for i in m.inputs} | {s.input for s in m.state}
        problems = []
        if set(graph_inputs) != expected_inputs:
            problems.append(f"graph inputs {sorted(graph_inputs)} != manifest {sorted(expected_inputs)}")
        for spec in m.inputs:
            node = graph_inputs.get(spec.name)
            if node is None:
                continue
            shape = node.shape
            want = m.input_shape(spec)
            # A signal input's length is what matters (its channel axis is 1 by contract); a feature input's
            # context and feature count both are.
            pairs = list(zip(shape[1:], want)) if spec.n_features is not None else [(shape[-1], want[-1])]
            if len(shape) != 1 + len(want) or any(isinstance(d, int) and d != w for d, w in pairs):
                problems.append(f"input {spec.name!r} has shape {shape}, manifest implies (batch, "
                                + ", ".join(map(str, want)) + ")")
        if m.output not in graph_outputs:
            problems.append(f"no output named {m.output!r} (graph has {sorted(graph_outputs)})")
        else:
            shape = graph_outputs[m.output].shape
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(m.classes)):
                problems.append(f"output {m.output!r} has shape {shape}, manifest lists {len(m.classes)} classes")
        for s in m.state:
            if s.output not in graph_outputs:
                problems.append(f"state output {s.output!r} missing from the graph")
        if problems:
            raise ModelError(f"{m.onnx} does not match its manifest {m.path.name}: " + "; ".join(problems))
        self._output_names = [m.output, *(s.output for s in m.state)]

    def initial_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {s.input: np.zeros((batch, *s.shape[1:]), dtype=np.float32) for s in self.manifest.state}

    def run(
        self, windows: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feeds = {name: np.asarray(x, dtype=np.float32) for name, x in windows.items()}
        if self.manifest.state:
            feeds.update(state or self.initial_state(next(iter(feeds.values())).shape[0]))
        outputs = self.session.run(self._output_names, feeds)
        new_state = {s.input: out for s, out in zip(self.manifest.state, outputs[1:])}
        return outputs[0], new_state
