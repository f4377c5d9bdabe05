"""Requests to a TF Serving model exported by dygan_tf.export: gRPC and REST.

`make_predict_request` builds a `tensorflow_serving.apis.predict_pb2.PredictRequest`
for `PredictionService.Predict`; `make_rest_payload` builds the JSON body of
`POST /v1/models/<name>:predict`; `parse_predict_response` reads either answer back.
"""

import numpy as np

from dygan_tf.config.tasks import MODALITIES, NUM_TASKS
from dygan_tf.inference.savedmodel import OUTPUT_KEY, SIGNATURE


def _check_arrays(image, task=None, available=None, target=None):
    """{input key: float32 array}: `image` (B, H, W, 1) and `task` (B, 12), or for a
    multi-source model `image` (B, H, W, 4), `available` and `target` (B, 4)."""
    multi = task is None
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:  # one slice (H, W, C)
        image = image[None]
    channels = len(MODALITIES) if multi else 1
    if image.ndim != 4 or image.shape[-1] != channels:
        raise ValueError(
            f"`image` must be (B, H, W, {channels}). Received: image.shape={image.shape}"
        )
    vectors = {"available": available, "target": target} if multi else {"task": task}
    arrays = {"image": image}
    for key, value in vectors.items():
        if value is None:
            raise ValueError(f"`{key}` is required with a {channels}-channel image")
        value = np.asarray(value, dtype=np.float32)
        value = value[None] if value.ndim == 1 else value
        size = len(MODALITIES) if multi else NUM_TASKS
        if value.shape != (image.shape[0], size):
            raise ValueError(
                f"`{key}` must be (B, {size}) with B = {image.shape[0]} images. "
                f"Received: {key}.shape={value.shape}"
            )
        arrays[key] = value
    return arrays


def make_predict_request(
    image,
    task=None,
    model_name="dygan",
    signature_name=SIGNATURE,
    version=None,
    available=None,
    target=None,
):
    """A gRPC PredictRequest: `image` (B, H, W, 1) in [-1, 1] and `task` (B, 12), or
    (multi-source) `image` (B, H, W, 4), `available` and `target` (B, 4)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    arrays = _check_arrays(image, task, available, target)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, array in arrays.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array, dtype=tf.float32))
    return request


def make_rest_payload(
    image, task=None, signature_name=SIGNATURE, row_format=False, available=None, target=None
):
    """The JSON body (a dict) of `POST /v1/models/<name>:predict`.

    Columnar `{"inputs": {"image": ..., "task": ...}}` by default; `row_format=True`
    gives `{"instances": [{"image": ..., "task": ...}, ...]}`, one entry per example.
    A multi-source model takes `available` and `target` in place of `task`.
    """
    arrays = _check_arrays(image, task, available, target)
    if row_format:
        rows = [
            {key: arrays[key][i].tolist() for key in arrays} for i in range(len(arrays["image"]))
        ]
        return {"signature_name": signature_name, "instances": rows}
    return {
        "signature_name": signature_name,
        "inputs": {key: array.tolist() for key, array in arrays.items()},
    }


def parse_predict_response(response):
    """The synthesised images (B, H, W, 1) from a gRPC PredictResponse or REST JSON."""
    if isinstance(response, dict):
        if "outputs" in response:  # answer to a columnar request
            outputs = response["outputs"]
            outputs = outputs[OUTPUT_KEY] if isinstance(outputs, dict) else outputs
        else:  # answer to a row request: one output per instance
            outputs = [p[OUTPUT_KEY] if isinstance(p, dict) else p for p in response["predictions"]]
        return np.asarray(outputs, dtype=np.float32)
    import tensorflow as tf

    return tf.make_ndarray(response.outputs[OUTPUT_KEY])
