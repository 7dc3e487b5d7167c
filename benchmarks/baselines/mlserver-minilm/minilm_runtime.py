"""An MLServer model class serving examples/sentiment-minilm/model.onnx the way our runtime does:
the tokenizer from the graph's metadata, one onnxruntime session with one intra-op thread per
inference worker, `text` (BYTES) in, `label` and `probabilities` out."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class MiniLMRuntime(MLModel):
    async def load(self) -> bool:
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            await get_model_uri(self._settings), options, providers=["CPUExecutionProvider"]
        )
        metadata = self._session.get_modelmeta().custom_metadata_map
        self._tokenizer = Tokenizer.from_str(metadata["tokenizer"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        labels, probabilities = self._session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                StringCodec.encode_output("label", labels.tolist()),
                NumpyCodec.encode_output("probabilities", probabilities.astype(np.float64)),
            ],
        )
