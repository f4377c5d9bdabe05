"""The networks and the GAN: blocks, the U-Net generator, the discriminators, the DyGAN
train step, the optimizers and precision policies, and the builders from a config.
"""
