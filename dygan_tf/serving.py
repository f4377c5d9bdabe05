"""Requests to a TF Serving model exported by dygan_tf.export: gRPC and REST.

`make_predict_request` builds a `tensorflow_serving.apis.predict_pb2.PredictRequest`
for `PredictionService.Predict`; `make_rest_payload` builds the JSON body of
`POST /v1/models/<name>:predict`; `parse_predict_response` reads either answer back.
"""

import numpy as np

from dygan_tf.export import INPUT_KEYS, OUTPUT_KEY, SIGNATURE
from dygan_tf.tasks import NUM_TASKS


def _check_arrays(image, task):
    image = np.asarray(image, dtype=np.float32)
    task = np.asarray(task, dtype=np.float32)
    if image.ndim == 3:  # one slice (H, W, 1)
        image = image[None]
    if task.ndim == 1:
        task = task[None]
    if image.ndim != 4 or image.shape[-1] != 1:
        raise ValueError(f"`image` must be (B, H, W, 1). Received: image.shape={image.shape}")
    if task.shape != (image.shape[0], NUM_TASKS):
        raise ValueError(
            f"`task` must be (B, {NUM_TASKS}) with B = {image.shape[0]} images. "
            f"Received: task.shape={task.shape}"
        )
    return image, task


def make_predict_request(image, task, model_name="dygan", signature_name=SIGNATURE, version=None):
    """A gRPC PredictRequest for `image` (B, H, W, 1) in [-1, 1] and `task` (B, 12)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    image, task = _check_arrays(image, task)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, array in zip(INPUT_KEYS, (image, task)):
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array, dtype=tf.float32))
    return request


def make_rest_payload(image, task, signature_name=SIGNATURE, row_format=False):
    """The JSON body (a dict) of `POST /v1/models/<name>:predict`.

    Columnar `{"inputs": {"image": ..., "task": ...}}` by default; `row_format=True`
    gives `{"instances": [{"image": ..., "task": ...}, ...]}`, one entry per example.
    """
    image, task = _check_arrays(image, task)
    if row_format:
        rows = [{"image": i.tolist(), "task": t.tolist()} for i, t in zip(image, task)]
        return {"signature_name": signature_name, "instances": rows}
    return {
        "signature_name": signature_name,
        "inputs": {"image": image.tolist(), "task": task.tolist()},
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
