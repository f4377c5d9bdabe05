"""Using a trained generator: loading it, whole-volume synthesis, test-time
augmentation, translating NIfTI files, SavedModel export and serving requests.
"""
