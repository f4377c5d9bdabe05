"""Training runs: one resumable run, its callbacks, the fit library (demo, pix2pix3),
tf.distribute strategies and the multi-worker loop.
"""
